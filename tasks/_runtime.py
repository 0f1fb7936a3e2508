"""What every task needs: the target it acts on, and the retry policy."""

from __future__ import annotations

import logging
from typing import Any

from prefect import get_run_logger
from pydantic import BaseModel, ConfigDict

from restorekit.errors import is_retryable
from restorekit.runtime import TargetRuntime, target_runtime


class TargetRef(BaseModel):
    """Which target a task acts on, and where its config is. Holds no secret."""

    model_config = ConfigDict(frozen=True)
    target: str
    config: str | None = None


def runtime(ref: TargetRef) -> TargetRuntime:
    return target_runtime(ref.target, ref.config)


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: retry only errors the taxonomy marks retryable (timeouts,
    5xx, a server still starting), never bad input or a failed verification."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we classify, not handle
        return is_retryable(exc)
    return False


def logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run (unit tests) fall back to logging
        return logging.getLogger("restorekit.tasks")


#: Backoff for transient failures: 2 s, 10 s, 30 s.
RETRY_DELAYS = [2, 10, 30]

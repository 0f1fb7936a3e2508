"""What every task needs: the target it acts on, and the retry policy; and, for every flow run
in a process that imports the tasks, flow-run heartbeats that stop at once at the end of a run."""

from __future__ import annotations

import logging
import os
from typing import Any

from prefect import get_run_logger
from pydantic import BaseModel, ConfigDict

from restorekit.errors import ConfigError, is_retryable
from restorekit.runtime import TargetRuntime, target_runtime
from tasks._prefect_shim import install_prompt_heartbeats


class TargetRef(BaseModel):
    """Which target a task acts on, and where its config is. Holds no secret."""

    model_config = ConfigDict(frozen=True)
    target: str
    config: str | None = None


def runtime(ref: TargetRef) -> TargetRuntime:
    return target_runtime(ref.target, ref.config)


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: retry only errors the taxonomy marks retryable (timeouts,
    5xx, a server still starting), never bad input or a failed verification; and never an HTTP
    failure the adapter's own retry policy already covered (``retry_spent``: see
    restorekit/providers/_http.py for which layer retries what), so attempts do not multiply."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we classify, not handle
        return is_retryable(exc) and not getattr(exc, "retry_spent", False)
    return False


def logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run (unit tests) fall back to logging
        return logging.getLogger("restorekit.tasks")


def retry_delays(raw: str | None = None) -> list[float]:
    """Seconds between the retries of a transient failure: 2, 10, 30 unless
    ``RESTOREKIT_RETRY_DELAYS`` says otherwise (e.g. ``"5,30,120"`` for a slow-to-recover cloud,
    or short ones in tests); the last one repeats when a task retries more often."""
    raw = os.environ.get("RESTOREKIT_RETRY_DELAYS") if raw is None else raw
    if not raw:
        return [2, 10, 30]
    try:
        delays = [float(part) for part in raw.split(",")]
    except ValueError:
        delays = []
    if not delays or any(not 0 <= d <= 3600 for d in delays):
        raise ConfigError(f"RESTOREKIT_RETRY_DELAYS={raw!r}: expected seconds between 0 and "
                          "3600 separated by commas, e.g. 2,10,30")
    return delays


#: Backoff for transient failures (see :func:`retry_delays`), fixed when tasks are defined.
RETRY_DELAYS = retry_delays()


# Flow-run heartbeats that stop at once at the end of a run (Prefect's own join each run's
# heartbeat thread, which sleeps in 1 s steps: ~0.9 s of a ~1 s fixed cost per flow run). The
# replacement touches Prefect's private engine, so it lives in tasks/_prefect_shim.py with every
# other private use; installing it here makes every process that imports the tasks use it.
install_prompt_heartbeats()

"""What every task needs: the target it acts on, and the retry policy; and, for every flow run
in a process that imports the tasks, flow-run heartbeats that stop at once at the end of a run."""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger
from pydantic import BaseModel, ConfigDict

from restorekit.errors import ConfigError, is_retryable
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


# -- flow-run heartbeats that stop at once -------------------------------------------------------
#
# Prefect 3.8 (prefect.flow_engine._send_heartbeats) sends a flow run's heartbeat events from a
# thread that sleeps in 1 s steps, and the end of every sync flow run joins that thread: each run
# waits up to 1 s (about 1 s for a short run) for a sleep to end. bench/prefect_bench.py measured
# it as ~0.9 s of a ~1 s fixed cost per flow run; the heartbeat frequency does not change it
# (the steps are 1 s whatever the period). The replacement below is the same context manager
# (same setting, PREFECT_FLOWS_HEARTBEAT_FREQUENCY; same minimum; same event, built by the
# engine itself; same "no heartbeat once the run is final") except that the thread waits on the
# stop event, so the join returns as soon as the run ends. The "unresponsive runs" automation
# (deployments/deploy.py) sees exactly the heartbeats it saw before.

#: Prefect's own context manager, kept for the benchmark's comparison (None if it moved).
PREFECT_SEND_HEARTBEATS: Any = None


@contextmanager
def prompt_heartbeats(engine: Any, join_on_exit: bool = True) -> Iterator[None]:
    """``prefect.flow_engine._send_heartbeats`` with a stop that does not wait for a sleep.

    Args:
        engine: the flow run engine (it builds and emits the heartbeat event).
        join_on_exit: join the thread at the end (sync engines); async engines pass False.
    """
    from prefect import flow_engine

    seconds = engine.heartbeat_seconds
    if seconds is None:
        yield
        return
    seconds = max(seconds, flow_engine.MINIMUM_HEARTBEAT_INTERVAL)
    resource, related = engine._build_heartbeat_event_template()
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            run = engine.flow_run
            if run is not None and run.state is not None and run.state.is_final():
                return  # a heartbeat after the final state would re-arm the zombie trigger
            try:
                engine._emit_flow_run_heartbeat(resource, related)
            except Exception:  # noqa: BLE001 - a lost heartbeat must not fail the run
                engine.logger.debug("Failed to emit heartbeat", exc_info=True)
            if stop.wait(seconds):
                return

    # The thread runs in a copy of this context, as Prefect's does: it must see the run's
    # settings (PREFECT_API_URL), not the process-wide defaults.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(beat,), daemon=True,
                              name="restorekit-flow-heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        if join_on_exit:
            thread.join(timeout=2)


def install_prompt_heartbeats() -> bool:
    """Make Prefect's flow engine use :func:`prompt_heartbeats`; True when it does.

    Idempotent. Leaves Prefect alone (False, logged) when its engine no longer has the private
    pieces this relies on, so a Prefect upgrade falls back to Prefect's own heartbeats (correct,
    only slower) instead of breaking runs; tests/unit/test_heartbeats.py fails in that case.
    """
    global PREFECT_SEND_HEARTBEATS
    from prefect import flow_engine

    current = getattr(flow_engine, "_send_heartbeats", None)
    if current is prompt_heartbeats:
        return True
    engine = getattr(flow_engine, "BaseFlowRunEngine", None)
    needed = ("_build_heartbeat_event_template", "_emit_flow_run_heartbeat", "heartbeat_seconds")
    if (current is None or engine is None or not hasattr(flow_engine, "MINIMUM_HEARTBEAT_INTERVAL")
            or not all(hasattr(engine, name) for name in needed)):
        logging.getLogger("restorekit.tasks").warning(
            "prefect.flow_engine has changed: flow runs keep Prefect's own heartbeats (each run "
            "may wait up to 1 s at its end)")
        return False
    PREFECT_SEND_HEARTBEATS = current
    flow_engine._send_heartbeats = prompt_heartbeats  # type: ignore[attr-defined]
    return True


install_prompt_heartbeats()

"""Every use of Prefect's private API in restorekit, in one place, pinned and tested.

Checked against Prefect 3.8.8 (``PREFECT_VERSION_CHECKED``; pyproject.toml pins ``prefect==3.8.8``).
Nothing else in the project imports a ``prefect`` module or attribute whose name starts with an
underscore; tests/unit/test_prefect_shim.py checks that, and that every name in
:data:`PRIVATE_NAMES` still exists, so a Prefect upgrade that moves one fails that test by name
instead of failing a restore at run time. Each use says why there is no public equivalent.

1. **Concurrency lease with its id** (:func:`hold_concurrency_slot`). The public
   ``prefect.concurrency.sync.concurrency()`` is the same two calls (acquire with a lease, keep
   the lease renewed, release) but yields nothing: restorekit needs the lease id, which the
   host lock records so that the next run on this machine can release a dead run's slot at once
   (flows/_common.py, ``one_run_per_target``). Private names:
   ``prefect.concurrency._sync.acquire_concurrency_slots_with_lease`` (the wait with retries on
   423, in Prefect's own client code) and ``prefect.concurrency._leases.maintain_concurrency_lease``
   (the renewal thread and what happens when renewal fails).

2. **Flow-run heartbeats that stop at once** (:func:`prompt_heartbeats`). Prefect 3.8
   (``prefect.flow_engine._send_heartbeats``) sends a flow run's heartbeat events from a thread
   that sleeps in 1 s steps, and the end of every sync flow run joins that thread: each run waits
   up to 1 s (about 1 s for a short run) for a sleep to end. bench/prefect_bench.py measured it
   as ~0.9 s of a ~1 s fixed cost per flow run; the heartbeat frequency does not change it (the
   steps are 1 s whatever the period). There is no setting or hook for it. The replacement is
   the same context manager (same setting, PREFECT_FLOWS_HEARTBEAT_FREQUENCY; same minimum; same
   event, built by the engine itself; same "no heartbeat once the run is final") except that the
   thread waits on the stop event, so the join returns as soon as the run ends. The
   "unresponsive runs" automation (deployments/deploy.py) sees exactly the heartbeats it saw
   before. Private names: ``flow_engine._send_heartbeats`` (replaced),
   ``flow_engine.MINIMUM_HEARTBEAT_INTERVAL``, and the engine's
   ``_build_heartbeat_event_template`` / ``_emit_flow_run_heartbeat`` / ``heartbeat_seconds``.
"""

from __future__ import annotations

import contextvars
import importlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

#: The Prefect release these private names were read in.
PREFECT_VERSION_CHECKED = "3.8.8"

#: ``(module, attribute)`` for every private name used below (attributes of a class as
#: ``Class.attr``). tests/unit/test_prefect_shim.py asserts that each one resolves.
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("prefect.concurrency._sync", "acquire_concurrency_slots_with_lease"),
    ("prefect.concurrency._leases", "maintain_concurrency_lease"),
    ("prefect.flow_engine", "_send_heartbeats"),
    ("prefect.flow_engine", "MINIMUM_HEARTBEAT_INTERVAL"),
    ("prefect.flow_engine", "BaseFlowRunEngine._build_heartbeat_event_template"),
    ("prefect.flow_engine", "BaseFlowRunEngine._emit_flow_run_heartbeat"),
    ("prefect.flow_engine", "BaseFlowRunEngine.heartbeat_seconds"),
)

log = logging.getLogger("restorekit.tasks")


def missing_private_names(names: tuple[tuple[str, str], ...] = PRIVATE_NAMES) -> list[str]:
    """The ``names`` (default: all of :data:`PRIVATE_NAMES`) this Prefect no longer has."""
    missing = []
    for module_name, dotted in names:
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError:
            missing.append(f"{module_name} (module)")
            continue
        for part in dotted.split("."):
            if not hasattr(obj, part):
                missing.append(f"{module_name}.{dotted}")
                break
            obj = getattr(obj, part)
    return missing


# -- 1. a concurrency slot whose lease id is known ----------------------------------------------


def acquire_slot_lease(
    name: str,
    *,
    timeout_seconds: float,
    lease_seconds: float,
    holder: Any = None,
) -> UUID:
    """Take one slot of the global concurrency limit ``name`` under a lease; its lease id.

    With :func:`keep_lease` and ``client.release_concurrency_slots_with_lease``, what
    ``prefect.concurrency.sync.concurrency(name, strict=True, lease_duration=...,
    raise_on_lease_renewal_failure=True)`` does, except that the lease id comes out.

    Raises:
        TimeoutError: No slot within ``timeout_seconds``.
    """
    from prefect.concurrency._sync import acquire_concurrency_slots_with_lease

    lease = acquire_concurrency_slots_with_lease(
        [name], 1, timeout_seconds=timeout_seconds, strict=True, lease_duration=lease_seconds,
        holder=holder)
    return lease.lease_id


@contextmanager
def keep_lease(lease_id: UUID, lease_seconds: float) -> Iterator[None]:
    """Renew the lease in the background while the block runs; a failed renewal ends the run
    (``raise_on_lease_renewal_failure=True``), as Prefect's own concurrency() with strict."""
    from prefect.concurrency._leases import maintain_concurrency_lease

    with maintain_concurrency_lease(lease_id, lease_seconds, raise_on_lease_renewal_failure=True):
        yield


# -- 2. flow-run heartbeats that stop at once -----------------------------------------------------

#: Prefect's own context manager, kept for the benchmark's comparison (None until installed).
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
    only slower) instead of breaking runs; tests/unit/test_prefect_shim.py fails in that case.
    """
    global PREFECT_SEND_HEARTBEATS
    from prefect import flow_engine

    current = getattr(flow_engine, "_send_heartbeats", None)
    if current is prompt_heartbeats:
        return True
    if missing_private_names(tuple(n for n in PRIVATE_NAMES if n[0] == "prefect.flow_engine")):
        log.warning("prefect.flow_engine has changed: flow runs keep Prefect's own heartbeats "
                    "(each run may wait up to 1 s at its end)")
        return False
    PREFECT_SEND_HEARTBEATS = current
    flow_engine._send_heartbeats = prompt_heartbeats
    return True


def restore_prefect_heartbeats() -> None:
    """Put Prefect's own heartbeats back (the benchmark's comparison); undone by
    :func:`install_prompt_heartbeats`."""
    from prefect import flow_engine

    if PREFECT_SEND_HEARTBEATS is not None:
        flow_engine._send_heartbeats = PREFECT_SEND_HEARTBEATS

"""Flow-run heartbeats that stop at once (tasks._prefect_shim.prompt_heartbeats): installed into
Prefect's flow engine, the same events as Prefect's, none once the run is final."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from prefect import flow_engine

import tasks._runtime  # noqa: F401 - importing the tasks installs the heartbeats
from tasks import _prefect_shim as shim


class FakeEngine:
    """What prompt_heartbeats uses of a flow run engine."""

    def __init__(self, seconds: int | None, final: bool = False) -> None:
        self.heartbeat_seconds = seconds
        self.flow_run = SimpleNamespace(state=SimpleNamespace(is_final=lambda: final))
        self.logger = SimpleNamespace(debug=lambda *a, **k: None)
        self.emitted: list[tuple[Any, Any]] = []
        self.first = threading.Event()

    def _build_heartbeat_event_template(self) -> tuple[dict[str, str], list[Any]]:
        return {"prefect.resource.id": "prefect.flow-run.x"}, ["tag"]

    def _emit_flow_run_heartbeat(self, resource: Any, related: Any) -> None:
        self.emitted.append((resource, related))
        self.first.set()


def _heartbeat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "restorekit-flow-heartbeat"]


def test_prefects_engine_uses_the_prompt_heartbeats() -> None:
    # Installed by importing the tasks (every flow does). Fails when a Prefect upgrade moved the
    # pieces: flow runs would then wait up to 1 s at their end again.
    assert flow_engine._send_heartbeats is shim.prompt_heartbeats
    assert shim.install_prompt_heartbeats()  # idempotent
    assert shim.PREFECT_SEND_HEARTBEATS is not None
    assert shim.PREFECT_SEND_HEARTBEATS is not shim.prompt_heartbeats


def test_a_heartbeat_is_sent_with_the_engines_event_and_the_thread_ends_with_the_run() -> None:
    engine = FakeEngine(seconds=30)
    with shim.prompt_heartbeats(engine):
        assert engine.first.wait(timeout=30)
    assert engine.emitted == [({"prefect.resource.id": "prefect.flow-run.x"}, ["tag"])]
    assert not _heartbeat_threads()  # joined: nothing beats for a finished run


def test_a_final_run_sends_no_heartbeat() -> None:
    # A heartbeat after the final state would re-arm the unresponsive-runs automation.
    engine = FakeEngine(seconds=30, final=True)
    with shim.prompt_heartbeats(engine):
        pass
    assert engine.emitted == []


def test_heartbeats_off_start_no_thread() -> None:
    engine = FakeEngine(seconds=None)  # PREFECT_FLOWS_HEARTBEAT_FREQUENCY unset
    with shim.prompt_heartbeats(engine):
        assert not _heartbeat_threads()
    assert engine.emitted == []

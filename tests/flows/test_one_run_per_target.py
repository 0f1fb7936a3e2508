"""One restore per target at a time: a second run waits, then is refused with a clear message,
having changed nothing."""

from __future__ import annotations

import threading
import time

import pytest

from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
from restorekit.errors import SafetyError

pytestmark = pytest.mark.slow


def paused_runs(client):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    return client.read_flow_runs(
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=5)


def test_a_second_run_on_the_same_target_is_refused(prefect_server: str, world) -> None:
    from prefect import get_client
    from prefect.flow_runs import resume_flow_run

    import psycopg

    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM users WHERE id = (SELECT min(id) FROM users)")
    world.wait_archived()
    first: dict[str, object] = {}

    def hold() -> None:
        try:
            first["report"] = accidental_deletion(AccidentalDeletionParams(
                target="production", config=str(world.config), require_approval=True,
                incident_id="holder"))
        except BaseException as exc:  # noqa: BLE001
            first["error"] = exc

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    paused = None
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 60
        while paused is None and time.monotonic() < deadline:
            runs = paused_runs(client)
            paused = runs[0] if runs else None
            time.sleep(0.5)
    assert paused is not None, first

    with pytest.raises(SafetyError, match="another restorekit run is working on target 'production'"):
        accidental_deletion(AccidentalDeletionParams(
            target="production", config=str(world.config), require_approval=False,
            incident_id="second", lock_wait_seconds=2))
    assert world.runtime().provider.list_scratch() == []

    # The holder is refused by its approver: nothing changed, and the target is free again.
    resume_flow_run(paused.id, run_input={"approve": False, "approved_by": "on-call"})
    thread.join(60)
    assert isinstance(first.get("error"), SafetyError)
    report = accidental_deletion(AccidentalDeletionParams(
        target="production", config=str(world.config), require_approval=False,
        incident_id="third", lock_wait_seconds=5))
    assert report.outcome == "succeeded"

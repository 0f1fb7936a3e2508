"""One restore per target at a time: a second run waits, then is refused with a clear message,
having changed nothing."""

from __future__ import annotations

import pytest
from fixtures.approval import PausedFlow

from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
from restorekit.errors import SafetyError

pytestmark = pytest.mark.slow


def test_a_second_run_on_the_same_target_is_refused(prefect_server: str, world) -> None:
    import psycopg

    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM users WHERE id = (SELECT min(id) FROM users)")
    world.wait_archived()
    holder = PausedFlow(lambda: accidental_deletion(AccidentalDeletionParams(
        target="production", config=str(world.config), require_approval=True,
        incident_id="holder"))).wait_until_paused(60)

    with pytest.raises(SafetyError,
                       match="another restorekit run is working on target 'production'"):
        accidental_deletion(AccidentalDeletionParams(
            target="production", config=str(world.config), require_approval=False,
            incident_id="second", lock_wait_seconds=2))
    assert world.runtime().provider.list_scratch() == []

    # The holder is refused by its approver: nothing changed, and the target is free again.
    first = holder.answer(approve=False, join=60)
    assert isinstance(first.get("error"), SafetyError)
    report = accidental_deletion(AccidentalDeletionParams(
        target="production", config=str(world.config), require_approval=False,
        incident_id="third", lock_wait_seconds=5))
    assert report.outcome == "succeeded"

"""Scenario 3 against real clusters and a real Prefect server: deleted users come back with the
clients and appointments their cascade removed, byte for byte; later rows are untouched."""

from __future__ import annotations

import time

import psycopg
import pytest
from fixtures.approval import PausedFlow
from fixtures.cascade import cascade_rows

from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
from restorekit.pg.checksum import database_checksums

pytestmark = pytest.mark.slow

# Rows written after the accident, which the recovery must leave as they are.
LATER_USER = "SELECT u::text FROM users u WHERE email = 'after@example.com'"
CHANGED_CLIENT = "SELECT c::text FROM clients c WHERE phone = 'changed-after'"


def put_back(dsn: str, rows: dict[str, list[str]]) -> None:
    """Insert ``rows`` (:func:`cascade_rows` of deleted users) again as they were, parents
    first, in one transaction."""
    with psycopg.connect(dsn) as conn:
        for table in ("users", "clients", "appointments"):
            for row in rows[table]:
                conn.execute(f"INSERT INTO {table} SELECT (%s::{table}).*", (row,))


def test_deleted_users_and_their_cascades_come_back_and_later_rows_stay(
    prefect_server: str, world
) -> None:
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        victims = [r[0] for r in conn.execute(
            "SELECT id FROM users WHERE id IN (SELECT user_id FROM appointments) "
            "ORDER BY id LIMIT 5")]
        before = cascade_rows(conn, victims)
        assert before["clients"] and before["appointments"]
        time.sleep(0.1)
        conn.execute("DELETE FROM users WHERE id = ANY(%s)", (victims,))
        assert cascade_rows(conn, victims) == {"users": [], "clients": [], "appointments": []}
        # Life goes on after the accident: these rows must survive the recovery untouched.
        conn.execute("INSERT INTO users (name, email) VALUES ('after', 'after@example.com')")
        conn.execute("UPDATE clients SET phone = 'changed-after' WHERE id = "
                     "(SELECT min(id) FROM clients)")
        later = conn.execute(LATER_USER).fetchone()[0]
        changed = conn.execute(CHANGED_CLIENT).fetchone()[0]
    world.wait_archived()

    params = AccidentalDeletionParams(target="production", config=str(world.config),
                                      require_approval=False, incident_id="inc-ad-1")
    report = accidental_deletion(params)

    assert report.outcome == "succeeded"
    with psycopg.connect(world.app_dsn) as conn:
        assert cascade_rows(conn, victims) == before  # byte for byte
        assert conn.execute(LATER_USER).fetchone()[0] == later
        assert conn.execute(CHANGED_CLIENT).fetchone()[0] == changed
        checksums = database_checksums(conn)
    inserted = {c.table: c.inserted for c in report.changes}
    assert inserted["public.users"] == len(victims)
    assert inserted["public.clients"] == len(before["clients"])
    assert inserted["public.appointments"] == len(before["appointments"])
    assert all(c.ok for c in report.checks if c.critical)
    assert world.runtime().provider.list_scratch() == []  # scratch copy dropped
    # Production changed: the watch would start (no post-restore-watch deployment here).
    assert any(n.startswith("post-restore watch not started: no deployment") for n in report.notes)

    # Idempotent: the same incident again inserts nothing and changes nothing.
    again = accidental_deletion(params.model_copy(update={"incident_id": "inc-ad-2"}))
    assert sum(c.inserted for c in again.changes) == 0
    assert not any("post-restore watch" in n for n in again.notes)  # nothing changed
    with psycopg.connect(world.app_dsn) as conn:
        assert database_checksums(conn) == checksums


def test_dry_run_touches_nothing(prefect_server: str, world) -> None:
    # Run at once, without waiting for the archive (no archive_timeout here): the deletion's
    # commit sits in a segment that has not filled, and the preflight archives it itself.
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        (victim,) = conn.execute(
            "SELECT max(id) FROM users WHERE name <> 'after'").fetchone()
        rows = cascade_rows(conn, [victim])
        conn.execute("DELETE FROM users WHERE id = %s", (victim,))
        before = database_checksums(conn)
    try:
        report = accidental_deletion(AccidentalDeletionParams(
            target="production", config=str(world.config), dry_run=True, deleted_since=None))
        assert report.outcome == "dry-run"
        assert report.plan and "Re-insert" in " ".join(report.plan)
        with psycopg.connect(world.app_dsn) as conn:
            assert database_checksums(conn) == before
        assert world.runtime().provider.list_scratch() == []
    finally:
        # The dry run brought nothing back: put the user and its cascade back by hand, so that
        # no later recovery in this module finds this deletion's rows missing.
        put_back(world.app_dsn, rows)


def test_require_approval_pauses_until_someone_approves(prefect_server: str, world) -> None:
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:  # this test's own deletion
        (victim,) = conn.execute("SELECT max(user_id) FROM appointments").fetchone()
        before = cascade_rows(conn, [victim])
        assert before["clients"] and before["appointments"]
        conn.execute("DELETE FROM users WHERE id = %s", (victim,))
    world.wait_archived()
    flow = PausedFlow(lambda: accidental_deletion(AccidentalDeletionParams(
        target="production", config=str(world.config), require_approval=True,
        incident_id="inc-ad-approval"))).wait_until_paused(60)
    assert world.runtime().provider.list_scratch() == []  # nothing restored before approval
    result = flow.answer(approve=True)
    assert "error" not in result, result.get("error")
    report = result["report"]
    approval = next(s for s in report.steps if s.name == "approval")
    assert approval.ok and "on-call" in approval.detail
    with psycopg.connect(world.app_dsn) as conn:
        assert cascade_rows(conn, [victim]) == before  # approved: the deletion is undone

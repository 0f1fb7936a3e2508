"""Scenario 2 against real clusters and a real Prefect server: corrupted rows are repaired from
a copy restored before the corruption, newer rows are kept, a verified snapshot comes first."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from fixtures.corruption import corrupt

from flows.partial_corruption import PartialCorruptionParams, partial_corruption
from restorekit.errors import ConfigError
from restorekit.repository import open_repository
from restorekit.snapshot import list_snapshots

pytestmark = pytest.mark.slow


def test_corrupted_rows_are_repaired_and_newer_rows_kept(prefect_server: str, world) -> None:
    damage = corrupt(world, every=50, users="SELECT id FROM users ORDER BY id LIMIT 3",
                     pause=0.1, newer_email="newer@example.com")
    point, good_clients, orphaned_users = damage.point, damage.good_clients, damage.gone

    report = partial_corruption(PartialCorruptionParams(
        target="production", config=str(world.config), restore_point=point.isoformat(),
        require_approval=False, incident_id="inc-pc-1"))

    assert report.outcome == "succeeded"
    with psycopg.connect(world.app_dsn) as conn:
        assert dict(conn.execute(
            "SELECT id, c::text FROM clients c WHERE id % 50 = 0").fetchall()) == good_clients
        assert {r[0] for r in conn.execute(
            "SELECT u::text FROM users u WHERE id = ANY(%s)", (orphaned_users,)
        )} == damage.gone_rows
        assert conn.execute(
            "SELECT count(*) FROM users WHERE email = 'newer@example.com'").fetchone() == (1,)
    # The integrity findings named the broken tables, and the repair is in the report.
    assert any("fk_orphans" in n for n in report.notes[0].split(", "))
    changes = {c.table: c for c in report.changes}
    assert changes["public.users"].inserted == 3
    assert changes["public.clients"].updated == len(good_clients)
    assert all(c.ok for c in report.checks if c.critical)
    # A verified snapshot of the affected tables was taken before the repair.
    names = [s.name for s in report.steps]
    assert names.index("snapshot affected tables") < names.index("repair rows")
    assert names[-1] == "start post-restore watch"  # production changed: watch it
    assert any(n.startswith("post-restore watch not started") for n in report.notes)
    repo = open_repository(world.runtime().config.repository)
    assert any(s.label.startswith("before-repair-inc-pc-1") and s.verified
               for s in list_snapshots(repo))
    assert world.runtime().provider.list_scratch() == []


def test_latest_is_refused_before_anything_happens(prefect_server: str, world) -> None:
    with pytest.raises(ConfigError, match="BEFORE the corruption"):
        partial_corruption(PartialCorruptionParams(
            target="production", config=str(world.config), restore_point="latest",
            require_approval=False))
    assert world.runtime().provider.list_scratch() == []


def test_the_plan_says_what_happens_to_changed_rows(prefect_server: str, world) -> None:
    """The default (no columns, no keep time) reverts every changed row, and the plan says so;
    the options change the plan's words; bad options stop the flow before any side effect."""
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        point = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        conn.execute("UPDATE clients SET name = name WHERE id = 1")  # something to archive
        ended = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    world.wait_archived()
    common = dict(target="production", config=str(world.config), require_approval=False,
                  restore_point=point.isoformat(), dry_run=True, tables=["clients"])
    default = partial_corruption(PartialCorruptionParams(**common, incident_id="inc-pc-plan"))
    assert default.outcome == "dry-run"
    assert any("legitimate ones included, are reverted" in line for line in default.plan)

    kept = partial_corruption(PartialCorruptionParams(
        **common, incident_id="inc-pc-plan-2", columns=["phone"],
        keep_rows_written_after=ended))
    repair = next(line for line in kept.plan if line.startswith("Repair in one transaction"))
    assert "reverted" not in repair
    assert "corrupted columns only (public.clients.phone" in repair
    assert f"committed after {ended.isoformat()} are left alone" in repair

    for extra, message in [({"columns": ["clients.phnoe"]}, "no column.* phnoe"),
                           ({"columns": ["users.email"]}, "not being repaired: public.users"),
                           ({"columns": ["id"]}, "primary key"),
                           ({"keep_rows_written_after": point}, "not after the restore point"),
                           ({"keep_rows_written_after": datetime(2999, 1, 1, tzinfo=UTC)},
                            "in the future")]:
        with pytest.raises(ConfigError, match=message):
            partial_corruption(PartialCorruptionParams(**common, incident_id="inc-pc-bad",
                                                       **extra))
    assert world.runtime().provider.list_scratch() == []

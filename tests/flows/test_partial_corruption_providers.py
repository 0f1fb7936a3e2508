"""Scenario 2 on every cloud provider: RDS and Neon repair from a copy restored at the point
(a moto instance / a Neon branch, each backed by a real cluster); Supabase, which can only
restore in place, repairs from a snapshot-backed copy and only re-inserts MISSING rows (its copy
is older than the point, so changed rows are reported, never overwritten)."""

from __future__ import annotations

import psycopg
import pytest
from fakes.neon_server import neon_world  # noqa: F401 - fixture
from fakes.rds_backed import rds_world_fixture  # noqa: F401 - fixture `rds_world`
from fixtures.corruption import corrupt

from flows.backup import BackupParams, backup
from flows.partial_corruption import PartialCorruptionParams, partial_corruption

pytestmark = pytest.mark.slow


def damage(world) -> tuple[object, dict, set[int]]:
    """Take the point, then damage: emails overwritten, users deleted behind the FKs' back,
    and one legitimate new user (whole seconds around the point: providers restore to them)."""
    done = corrupt(world, every=60, users="SELECT id FROM users ORDER BY id DESC LIMIT 2",
                   pause=1.1, newer_email="newer-pc@example.com")
    return done.point, done.good_clients, set(done.gone)


def users_present(world, ids: set[int]) -> int:
    with psycopg.connect(world.app_dsn) as conn:
        return conn.execute(
            "SELECT count(*) FROM users WHERE id = ANY(%s)", (list(ids),)).fetchone()[0]


@pytest.mark.parametrize("world_fixture", ["rds_world", "neon_world"])
def test_partial_corruption_on_providers_with_new_target_restores(
    prefect_server: str, world_fixture: str, request
) -> None:
    world = request.getfixturevalue(world_fixture)
    point, good, gone = damage(world)
    report = partial_corruption(PartialCorruptionParams(
        target="production", config=str(world.config), restore_point=point.isoformat(),
        require_approval=False, incident_id=f"pc-{world_fixture}"))
    assert report.outcome == "succeeded", report.error
    with psycopg.connect(world.app_dsn) as conn:
        assert dict(conn.execute(
            "SELECT id, c::text FROM clients c WHERE id % 60 = 0").fetchall()) == good
        assert conn.execute(
            "SELECT count(*) FROM users WHERE email = 'newer-pc@example.com'").fetchone() == (1,)
    assert users_present(world, gone) == len(gone)
    assert world.runtime().provider.list_scratch() == []


def test_partial_corruption_on_supabase_inserts_missing_rows_from_a_snapshot(
    prefect_server: str, supabase_world
) -> None:
    world = supabase_world
    backup(BackupParams(target="production", config=str(world.config), label="before"))
    point, good, gone = damage(world)
    report = partial_corruption(PartialCorruptionParams(
        target="production", config=str(world.config), restore_point=point.isoformat(),
        require_approval=False, incident_id="pc-supabase"))
    assert report.outcome == "succeeded", report.error
    assert "snapshot" in " ".join(report.plan)
    assert users_present(world, gone) == len(gone)  # missing rows are back
    with psycopg.connect(world.app_dsn) as conn:  # changed rows were left for review
        assert conn.execute(
            "SELECT count(*) FROM clients WHERE email = 'corrupted'").fetchone()[0] == len(good)
    assert any("NOT overwritten" in n for n in report.notes)
    assert not any(c.updated for c in report.changes)

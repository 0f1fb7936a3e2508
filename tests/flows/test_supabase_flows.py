"""The scenario flows and the drill on Supabase (in-place restores only), against the fake
Management API backed by a real cluster and a real Prefect server. The flows must take their
in-place / snapshot paths, never restore in place silently. Scenario 1 runs on an
ACTIVE_UNHEALTHY project, the incident case (the database is down), and refuses a paused one."""

from __future__ import annotations

import time

import psycopg
import pytest

from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
from flows.backup import BackupParams, backup
from flows.complete_failure import CompleteFailureParams, complete_failure
from flows.restore_drill import RestoreDrillParams, restore_drill
from restorekit.errors import ProviderError, SafetyError
from restorekit.health import check_health
from restorekit.sinks.envfile import EnvFileStore

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def clean_fake(supabase_world):
    supabase_world.fake.reset()
    yield
    supabase_world.fake.reset()


def test_accidental_deletion_takes_rows_from_a_snapshot_never_in_place(
    prefect_server: str, supabase_world
) -> None:
    world = supabase_world
    taken = backup(BackupParams(target="production", config=str(world.config), label="nightly"))
    assert taken["kind"] == "logical"
    time.sleep(0.1)
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        victims = [r[0] for r in conn.execute("SELECT id FROM users ORDER BY id LIMIT 4")]
        before = [r[0] for r in conn.execute(
            "SELECT c::text FROM clients c WHERE user_id = ANY(%s) ORDER BY id", (victims,))]
        conn.execute("DELETE FROM users WHERE id = ANY(%s)", (victims,))
    restores_before = len(world.fake.calls("POST"))

    report = accidental_deletion(AccidentalDeletionParams(
        target="production", config=str(world.config), require_approval=False,
        incident_id="sb-ad"))

    assert report.outcome == "succeeded"
    assert "logical snapshot" in " ".join(report.plan)
    assert any(s.name == "scratch copy from snapshot" for s in report.steps)
    with psycopg.connect(world.app_dsn) as conn:
        assert [r[0] for r in conn.execute(
            "SELECT c::text FROM clients c WHERE user_id = ANY(%s) ORDER BY id", (victims,)
        )] == before
        assert conn.execute(
            "SELECT count(*) FROM users WHERE id = ANY(%s)", (victims,)).fetchone() == (4,)
    assert len(world.fake.calls("POST")) == restores_before  # no restore was asked of Supabase


def test_drill_restores_the_newest_snapshot_and_tears_it_down(
    prefect_server: str, supabase_world
) -> None:
    # Its own snapshot: the test must not lean on one an earlier test happened to take.
    taken = backup(BackupParams(target="production", config=str(supabase_world.config),
                                label="before the drill"))
    (result,) = restore_drill(RestoreDrillParams(config=str(supabase_world.config)))
    assert result.passed, result.failures
    assert "logical snapshot" in result.point and result.torn_down
    assert taken["snapshot_id"] in result.point, (taken, result.point)


def test_complete_failure_on_an_unhealthy_project_snapshots_then_restores_in_place(
    prefect_server: str, supabase_world
) -> None:
    world = supabase_world
    fake = world.fake
    dsn_before = EnvFileStore(world.config.parent / "app.env").read().get_secret_value() \
        if (world.config.parent / "app.env").exists() else None
    time.sleep(1.1)  # Supabase restores to whole seconds
    point = world.clock()
    time.sleep(1.1)
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO users (name, email) "
                     "VALUES ('after point', 'after-point@example.com')")
    world.wait_archived()
    time.sleep(1.1)
    fake.status = "ACTIVE_UNHEALTHY"  # the incident: Supabase sees the database as down
    posts = len(fake.calls("POST"))

    report = complete_failure(CompleteFailureParams(
        target="production", config=str(world.config), require_approval=False,
        restore_point=point.isoformat(), incident_id="sb-cf"))

    assert report.outcome == "succeeded"
    names = [s.name for s in report.steps]
    assert names.index("snapshot current state") < names.index("restore in place")
    assert "IN PLACE" in " ".join(report.plan)
    assert report.snapshots and "verified" in report.snapshots[0]
    (post,) = fake.calls("POST")[posts:]
    assert post.path.endswith("/database/backups/restore-pitr") and post.status == 201
    assert fake.restores[-1].error is None and fake.status == "ACTIVE_HEALTHY"
    with psycopg.connect(world.app_dsn) as conn:  # same connection string: restored in place
        assert conn.execute("SELECT count(*) FROM users "
                            "WHERE email = 'after-point@example.com'").fetchone() == (0,)
    if dsn_before is not None:
        assert EnvFileStore(world.config.parent / "app.env").read().get_secret_value() == dsn_before


def test_in_place_without_a_snapshot_is_refused(
    prefect_server: str, supabase_world, monkeypatch
) -> None:
    world = supabase_world
    # A repository nobody can write: the snapshot cannot be taken, so nothing may be overwritten.
    text = world.config.read_text()
    import re

    broken = world.config.parent / "no-repo.toml"
    broken.write_text(re.sub(r'repository = ".*"',
                             'repository = "file:///proc/restorekit-no-repo"', text))
    posts = len(world.fake.calls("POST"))
    with pytest.raises(SafetyError, match="no verified snapshot"):
        complete_failure(CompleteFailureParams(target="production", config=str(broken),
                                               require_approval=False, incident_id="sb-refuse"))
    assert len(world.fake.calls("POST")) == posts


def test_complete_failure_on_a_paused_project_is_refused_with_what_to_do(
    prefect_server: str, supabase_world
) -> None:
    world = supabase_world
    world.fake.status = "INACTIVE"
    with psycopg.connect(world.app_dsn) as conn:
        users = conn.execute("SELECT count(*) FROM users").fetchone()
    with pytest.raises(ProviderError, match="is INACTIVE: not starting.*un-pause") as info:
        complete_failure(CompleteFailureParams(target="production", config=str(world.config),
                                               require_approval=False, incident_id="sb-paused"))
    assert info.value.code == "INACTIVE" and world.fake.token not in str(info.value)
    assert world.fake.calls("POST") == []  # nothing was asked of Supabase
    with psycopg.connect(world.app_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == users
    # Nothing changed, so the application was put back as it was, and the report says so.
    assert any("application was started again" in note for note in info.value.__notes__)
    rt = world.runtime()
    assert check_health(rt.health_url(), attempts=5).ok

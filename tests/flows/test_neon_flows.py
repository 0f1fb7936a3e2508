"""The runbook's flows on a Neon target: the fake Neon API (tests/fakes/neon_server.py) in front of
real clusters, the real demo app and a real Prefect server. The flows are the same ones the
self-hosted tests run; only restorekit.toml says provider = "neon".

Complete failure runs last: it moves production onto a new branch.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import quote

import psycopg
import pytest
from fakes.neon_server import NeonWorld, neon_world  # noqa: F401 - fixture
from restorekit import production

from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
from flows.complete_failure import CompleteFailureParams, complete_failure
from flows.restore_drill import RestoreDrillParams, restore_drill
from restorekit.demo import APP_URL_OPTIONS
from restorekit.health import check_health
from restorekit.pg.dsn import libpq_dsn
from restorekit.sinks.envfile import EnvFileStore

pytestmark = pytest.mark.slow

ROWS = {
    "users": "SELECT u::text FROM users u WHERE id = ANY(%s) ORDER BY id",
    "clients": "SELECT c::text FROM clients c WHERE user_id = ANY(%s) ORDER BY id",
    "appointments": "SELECT a::text FROM appointments a WHERE user_id = ANY(%s) "
                    "OR client_id IN (SELECT id FROM clients WHERE user_id = ANY(%s)) ORDER BY id",
}


def snapshot_rows(conn: psycopg.Connection, victims: list[int]) -> dict[str, list[str]]:
    return {t: [r[0] for r in conn.execute(q, (victims, victims) if t == "appointments"
                                           else (victims,))]
            for t, q in ROWS.items()}


def scratch_branches(world: NeonWorld) -> list[str]:
    return [b.data["name"] for b in world.fake.branches.values()
            if b.data["name"].startswith("restorekit-")
            and not b.data["name"].startswith("restorekit-backup-")]


def accepting(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_accidental_deletion_brings_rows_back_from_a_branch_before_the_deletion(
    prefect_server: str, neon_world: NeonWorld  # noqa: F811
) -> None:
    world = neon_world
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        victims = [r[0] for r in conn.execute(
            "SELECT id FROM users WHERE id IN (SELECT user_id FROM appointments) "
            "ORDER BY id LIMIT 5")]
        before = snapshot_rows(conn, victims)
        assert before["clients"] and before["appointments"]
        time.sleep(0.1)
        conn.execute("DELETE FROM users WHERE id = ANY(%s)", (victims,))
        conn.execute("INSERT INTO users (name, email) VALUES ('after', 'after@example.com')")
        later = conn.execute(
            "SELECT u::text FROM users u WHERE email = 'after@example.com'").fetchone()[0]
    world.fake.requests.clear()

    report = accidental_deletion(AccidentalDeletionParams(
        target="production", config=str(world.config), require_approval=False,
        incident_id="neon-ad-1"))

    assert report.outcome == "succeeded", report.error
    with psycopg.connect(world.app_dsn) as conn:
        assert snapshot_rows(conn, victims) == before  # byte for byte
        assert conn.execute("SELECT u::text FROM users u WHERE email = 'after@example.com'"
                            ).fetchone()[0] == later
    assert {c.table: c.inserted for c in report.changes}["public.users"] == len(victims)
    (post,) = world.fake.calls("POST", rf"/projects/{world.fake.project_id}/branches")
    assert post.body["branch"]["name"] == "restorekit-ad-neon-ad-1"
    assert post.body["branch"]["parent_timestamp"].endswith("Z")
    assert report.restore_point is not None
    assert len(world.fake.calls("DELETE", r".*")) == 1  # the scratch branch was dropped
    assert scratch_branches(world) == []
    assert world.fake.violations == []


def test_restore_drill_passes_on_a_branch_and_deletes_it(
    prefect_server: str, neon_world: NeonWorld  # noqa: F811
) -> None:
    world = neon_world
    world.fake.requests.clear()

    (result,) = restore_drill(RestoreDrillParams(config=str(world.config)))

    assert result.passed, result.failures
    assert result.torn_down
    assert result.row_counts["public.users"]["production"] == \
        result.row_counts["public.users"]["restored"]
    (post,) = world.fake.calls("POST", rf"/projects/{world.fake.project_id}/branches")
    assert post.body["branch"]["name"].startswith("restorekit-drill-")
    assert "parent_timestamp" not in post.body["branch"]  # latest = the branch's head
    (delete,) = world.fake.calls("DELETE", r".*")
    assert world.fake.deleted[delete.path.rsplit("/", 1)[-1]] == post.body["branch"]["name"]
    world.fake.wait_idle()
    assert scratch_branches(world) == []
    assert world.fake.violations == []


def test_complete_failure_branches_swaps_the_env_file_and_the_app_is_healthy(
    prefect_server: str, neon_world: NeonWorld  # noqa: F811
) -> None:
    world = neon_world
    rt = world.runtime()
    with psycopg.connect(world.app_dsn) as conn:
        users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
    world.wait_archived()
    old_dsn = EnvFileStore(world.env_file).read().get_secret_value()
    world.production.stop(mode="immediate")  # production's compute is gone
    assert not check_health(rt.health_url(), attempts=1).ok

    report = complete_failure(CompleteFailureParams(
        target="production", config=str(world.config), require_approval=False,
        incident_id="neon-cf-1"))

    assert report.outcome == "succeeded", report.error
    new_dsn = EnvFileStore(world.env_file).read().get_secret_value()
    assert new_dsn != old_dsn
    branch = world.fake.branch_named("cf-neon-cf-1")  # adopted: the scratch prefix is gone
    assert branch is not None
    assert branch["default"]  # and promoted: the project's default branch is production now
    assert not world.fake.branches[world.fake.production_branch_id].data["default"]
    assert len(world.fake.calls("POST", rf".*/branches/{branch['id']}/set_as_default")) == 1
    # Nothing to change by hand: the adopted branch is recorded as the target's production
    # (restorekit.toml untouched), and every later command uses it.
    assert not any("branch_id" in n for n in report.notes)
    record = production.load(rt.settings.state_dir, "production")
    assert record is not None and record.branch_id == branch["id"]
    assert world.fake.production_branch_id in world.config.read_text()
    later = world.runtime()
    assert later.provider.branch_id == branch["id"]
    world.fake.requests.clear()
    later.provider.restore_window()
    assert world.fake.calls("GET", rf".*/branches/{branch['id']}$")
    assert report.protection.startswith("Protected again: yes"), report.protection
    # The application keeps its own role and password (a branch keeps its parent's roles);
    # only the address moves to the branch's endpoint.
    password = quote(world.installation.app_password or "", safe="")
    port = world.fake.branch_port(branch["id"])
    query = APP_URL_OPTIONS["DATABASE_URL"]  # Prisma's options stay as they were
    assert old_dsn == f"postgresql://app:{password}@127.0.0.1:{world.production.port}/app{query}"
    assert new_dsn == f"postgresql://app:{password}@127.0.0.1:{port}/app{query}"
    health = check_health(rt.health_url(), attempts=5)
    assert health.ok and health.connected
    with psycopg.connect(libpq_dsn(new_dsn)) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == users
    names = [s.name for s in report.steps]
    assert names.index("stop application") < names.index("restore to point in time") < \
        names.index("swap connection string") < names.index("check health") < \
        names.index("adopt restored database")
    assert rt.provider.list_scratch() == []
    assert world.fake.violations == []

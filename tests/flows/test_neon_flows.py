"""The runbook's flows on a Neon target: the fake Neon API (tests/fakes/neon_server.py) in front of
real clusters, the real demo app and a real Prefect server. The flows are the same ones the
self-hosted tests run; only restorekit.toml says provider = "neon".

Complete failure stops production and moves it onto a new branch, which leaves no production for
another test to run on: it has a world of its own (``lost_world``, about 1 s to build). The other
two tests share the module's ``neon_world``; neither changes what the other checks, so the file
passes in any order and each test alone.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from fakes.neon_server import (  # noqa: F401 - fixture
    NeonWorld,
    neon_world,
    neon_world_in,
)
from fixtures.cascade import assert_back_and_later_kept, delete_users_then_write
from fixtures.lost_production import (
    assert_healthy_with_every_user,
    lose_production,
    switched_dsn,
)

from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
from flows.complete_failure import CompleteFailureParams, complete_failure
from flows.restore_drill import RestoreDrillParams, restore_drill
from restorekit import production
from restorekit.demo import APP_URL_OPTIONS

pytestmark = pytest.mark.slow


@pytest.fixture
def lost_world(pg_base_dir: Path) -> Iterator[NeonWorld]:
    """A Neon world of the test's own, for a test that loses its production."""
    with neon_world_in(pg_base_dir, "neon-lost") as world:
        yield world


def accepting(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def one_scratch_branch_made_and_dropped(world: NeonWorld) -> dict:
    """The flow created one branch and deleted that same branch again, left no scratch branch
    behind and sent nothing the API forbids; the branch part of the creation request."""
    (post,) = world.fake.calls("POST", rf"/projects/{world.fake.project_id}/branches")
    (delete,) = world.fake.calls("DELETE", r".*")
    assert world.fake.deleted[delete.path.rsplit("/", 1)[-1]] == post.body["branch"]["name"]
    world.fake.wait_idle()
    assert world.scratch_branches() == []
    assert world.fake.violations == []
    return post.body["branch"]


def test_accidental_deletion_brings_rows_back_from_a_branch_before_the_deletion(
    prefect_server: str, neon_world: NeonWorld  # noqa: F811
) -> None:
    world = neon_world
    victims, before, later = delete_users_then_write(world.app_dsn)
    world.fake.requests.clear()

    report = accidental_deletion(AccidentalDeletionParams(
        target="production", config=str(world.config), require_approval=False,
        incident_id="neon-ad-1"))

    assert report.outcome == "succeeded", report.error
    with psycopg.connect(world.app_dsn) as conn:
        assert_back_and_later_kept(conn, victims, before, later)
    assert {c.table: c.inserted for c in report.changes}["public.users"] == len(victims)
    branch = one_scratch_branch_made_and_dropped(world)
    assert branch["name"] == "restorekit-ad-neon-ad-1"
    assert branch["parent_timestamp"].endswith("Z")
    assert report.restore_point is not None


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
    branch = one_scratch_branch_made_and_dropped(world)
    assert branch["name"].startswith("restorekit-drill-")
    assert "parent_timestamp" not in branch  # latest = the branch's head


def test_complete_failure_branches_swaps_the_env_file_and_the_app_is_healthy(
    prefect_server: str, lost_world: NeonWorld
) -> None:
    world = lost_world
    rt = world.runtime()
    users, old_dsn = lose_production(world, rt)  # production's compute is gone

    report = complete_failure(CompleteFailureParams(
        target="production", config=str(world.config), require_approval=False,
        incident_id="neon-cf-1"))

    assert report.outcome == "succeeded", report.error
    new_dsn = switched_dsn(world, old_dsn)
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
    assert_healthy_with_every_user(rt, new_dsn, users)
    names = [s.name for s in report.steps]
    assert names.index("stop application") < names.index("restore to point in time") < \
        names.index("swap connection string") < names.index("check health") < \
        names.index("adopt restored database")
    assert rt.provider.list_scratch() == []
    assert world.fake.violations == []

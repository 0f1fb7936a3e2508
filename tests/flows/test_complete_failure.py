"""Scenario 1 against real clusters, the real demo app and a real Prefect server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.lost_production import recover_lost_production
from fixtures.module_world import ModuleWorld
from fixtures.world import app_installation

from flows.complete_failure import CompleteFailureParams, complete_failure
from restorekit.demo import APP_URL_OPTIONS
from restorekit.errors import ConfigError
from restorekit.health import check_health

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def _worlds(pg_base_dir: Path) -> Iterator[ModuleWorld]:
    with ModuleWorld(lambda: app_installation(pg_base_dir)) as worlds:
        yield worlds


@pytest.fixture
def world(_worlds: ModuleWorld):
    """The module's installation (fixtures.world's, shared), untouched by any earlier test."""
    return _worlds.get()


@pytest.fixture
def spent_world(_worlds: ModuleWorld):
    """The installation for a test that loses its production: a later test gets a new one."""
    with _worlds.spent() as world:
        yield world


def test_without_an_application_connection_string_nothing_is_stopped_or_restored(
    prefect_server: str, world
) -> None:
    """restorekit re-points the app's own URL; with none to re-point it refuses at preflight
    rather than hand the app its own (superuser) role after the restore."""
    rt = world.runtime()
    original = world.env_file.read_text()
    world.env_file.write_text("# the app's settings, its URLs not written yet\nOTHER=1\n")
    try:
        with pytest.raises(ConfigError, match="never hands the application restorekit's own"):
            complete_failure(CompleteFailureParams(
                target="production", config=str(world.config), require_approval=False,
                incident_id="inc-cf-no-url"))
    finally:
        world.env_file.write_text(original)
    assert rt.provider.find_restored("cf-inc-cf-no-url") is None
    assert not (rt.provider.restore_root.exists() and any(rt.provider.restore_root.iterdir()))
    assert check_health(rt.health_url(), attempts=3).ok  # the app was never stopped


def test_complete_failure_restores_into_a_new_database_and_the_app_is_healthy(
    prefect_server: str, spent_world
) -> None:
    world = spent_world
    rt = world.runtime()

    report, new_dsn = recover_lost_production(world, "inc-cf-1")

    assert new_dsn.startswith("postgresql://app:")  # the app's own role, never restorekit's
    assert new_dsn.endswith(APP_URL_OPTIONS["DATABASE_URL"])  # Prisma's options kept
    names = [s.name for s in report.steps]
    assert names.index("stop application") < names.index("restore to point in time") < names.index(
        "swap connection string") < names.index("check health")
    assert any(c.name.startswith("fk_orphans") for c in report.checks)
    assert names[-1] == "start post-restore watch"
    assert any(n.startswith("post-restore watch not started: no deployment "
                            "post-restore-watch/production") for n in report.notes)
    # The restored database is production now: cleanup must not see it as scratch.
    assert rt.provider.list_scratch() == []

"""Issue 11, part 2, against the real embedded installation: the application's connection strings
are Prisma-style URLs (``?schema=public&connection_limit=5&pool_timeout=10``) in two keys,
``DATABASE_URL`` and ``DIRECT_URL``, swapped together by scenario 1.

Done when: after scenario 1, an env file that held a ``postgresql://`` URL with query parameters
holds a ``postgresql://`` URL with the same parameters, pointing at the restored database; a store
with DATABASE_URL and DIRECT_URL has both swapped, and both rolled back on a failed health check.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import psycopg
import pytest
from fixtures.world import build_world, teardown_world

from flows.complete_failure import CompleteFailureParams, complete_failure
from restorekit.errors import ProviderError
from restorekit.health import check_health
from restorekit.pg.cluster import free_port
from restorekit.pg.dsn import libpq_dsn, location_of
from restorekit.sinks.envfile import EnvFileStore, quote_value

pytestmark = pytest.mark.slow

QUERY = {"DATABASE_URL": "?schema=public&connection_limit=5&pool_timeout=10",
         "DIRECT_URL": "?schema=public&connection_limit=1&pool_timeout=10&connect_timeout=10"}


@pytest.fixture(scope="module")
def prisma_world(pg_base_dir: Path):
    # The health URL answers nothing at first: the first run's health check fails.
    world = build_world(pg_base_dir / f"forms-{time.monotonic_ns()}",
                        health_url=f"http://127.0.0.1:{free_port()}/api/health")
    text = world.config.read_text()
    text = text.replace("[targets.production.connection]",
                        "health_attempts = 3\n\n[targets.production.connection]")
    assert 'keys = ["DATABASE_URL", "DIRECT_URL"]' in text  # the world's own, as Prisma's
    world.config.write_text(text)
    world.env_file.write_text(
        "# the demo app's settings (Prisma style)\n"
        + "".join(f"{key}={quote_value(world.app_url + query)}\n" for key, query in QUERY.items()))
    world.runtime().app.start()
    yield world
    teardown_world(world)


def values(world) -> dict[str, str]:
    return {key: EnvFileStore(world.env_file, key=key).read().get_secret_value() for key in QUERY}


def test_both_keys_roll_back_on_a_failed_health_check_then_swap_in_their_own_form(
    prefect_server: str, prisma_world
) -> None:
    world = prisma_world
    rt = world.runtime()
    world.wait_archived()
    original = world.env_file.read_bytes()
    old = values(world)
    with psycopg.connect(world.app_dsn) as conn:
        users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
    params = CompleteFailureParams(target="production", config=str(world.config),
                                   require_approval=False, incident_id="INC-forms")

    with pytest.raises(ProviderError, match="health check failed"):
        complete_failure(params)

    # Both keys are back, byte for byte, and the app runs on them again.
    assert world.env_file.read_bytes() == original
    assert check_health(rt.app.health_url(), attempts=5).ok

    # Health URL fixed: the same incident again (the restore is reused) swaps both keys.
    text = world.config.read_text()
    world.config.write_text(re.sub(r'health_url = ".*"', f'health_url = "{rt.app.health_url()}"',
                                   text))
    report = complete_failure(params)
    assert report.outcome == "succeeded"

    new = values(world)
    restored_at = location_of(new["DATABASE_URL"])
    assert restored_at != location_of(old["DATABASE_URL"])
    for key, query in QUERY.items():
        # A postgresql:// URL with the same user, password and parameters, in the same order,
        # pointing at the restored database.
        assert new[key].startswith("postgresql://")
        assert new[key] == old[key].replace(
            old[key].split("@", 1)[1].split("/", 1)[0],
            new[key].split("@", 1)[1].split("/", 1)[0])
        assert new[key].endswith(f"/app{query}")
        assert new[key].split("@", 1)[0] == old[key].split("@", 1)[0]
        assert location_of(new[key]) == restored_at
    health = check_health(world.runtime().health_url(), attempts=5)
    assert health.ok and health.connected
    # The application's own role reaches the restored copy with its own password.
    with psycopg.connect(libpq_dsn(new["DIRECT_URL"])) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "app"
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == users
    # Cleanup never takes what either key points at for scratch.
    assert world.runtime().provider.list_scratch() == []
    assert len(world.runtime().connection_in_use()) == 2

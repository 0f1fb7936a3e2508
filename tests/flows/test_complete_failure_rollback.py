"""Scenario 1 failure paths: a failed health check after the swap puts the old connection string
back; a re-run of the same incident reuses the finished restore instead of restoring again."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fixtures.world import build_world, rolled_back_run, teardown_world

from flows.complete_failure import CompleteFailureParams, complete_failure
from restorekit.errors import ProviderError
from restorekit.pg.cluster import free_port
from restorekit.sinks.envfile import EnvFileStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def broken_health_world(pg_base_dir: Path):
    # The health URL answers nothing: every health check after a swap fails.
    world = build_world(pg_base_dir / f"rollback-{time.monotonic_ns()}",
                        health_url=f"http://127.0.0.1:{free_port()}/api/health")
    world.config.write_text(world.config.read_text().replace(
        "[targets.production.connection]",
        "health_attempts = 3\n\n[targets.production.connection]"))
    world.runtime().app.start()
    yield world
    teardown_world(world)


def test_failed_health_check_rolls_back_the_swap_then_a_rerun_reuses_the_restore(
    prefect_server: str, broken_health_world
) -> None:
    world = broken_health_world
    rt = world.runtime()
    world.wait_archived()
    old_dsn = EnvFileStore(world.env_file).read().get_secret_value()
    params = CompleteFailureParams(target="production", config=str(world.config),
                                   require_approval=False, incident_id="INC-rollback")

    # The old connection string is back and the app runs on it again.
    failed = rolled_back_run(world, params, ProviderError, "health check failed")
    assert "health check failed" in failed["error"]
    # The restored database is kept for forensics (still scratch, not adopted).
    kept = rt.provider.list_scratch()
    assert len(kept) == 1
    marker = json.loads((Path(kept[0].handle) / "restorekit-scratch.json").read_text())
    created_at = marker["created_at"]

    # Fix the health URL and run the same incident again: the finished restore is reused.
    text = world.config.read_text()
    import re

    world.config.write_text(
        re.sub(r'health_url = ".*"', f'health_url = "{rt.app.health_url()}"', text)
    )
    report = complete_failure(params)
    assert report.outcome == "succeeded"
    restore_step = next(s for s in report.steps if s.name == "restore to point in time")
    assert restore_step.seconds < 5
    home = Path(kept[0].handle)
    assert json.loads((home / "restorekit-scratch.json").read_text())["created_at"] == created_at
    assert EnvFileStore(world.env_file).read().get_secret_value() != old_dsn
    assert world.runtime().provider.list_scratch() == []

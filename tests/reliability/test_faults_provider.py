"""Provider API faults injected for real (issue #7): a Neon API whose operations never finish,
that answers 503/429 for a while, or that keeps answering 500; a Supabase Management API that
rate-limits or keeps failing. The fakes (tests/fakes/) follow shared/provider-apis.md and sit in
front of real clusters; the scenario flows run against a real Prefect server.

For every fault the production database's table checksums are compared before and after: the
flow either leaves it exactly as it was (failure) or as it meant to (success). Then the fault is
removed and the same incident is run again and completes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fakes.neon_server import NeonWorld, neon_world  # noqa: F401 - fixture
from fakes.supabase_server import supabase_world  # noqa: F401 - fixture
from reliability._faults import assert_no_secret, checksums, delete_users, without_audit

from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
from flows.backup import BackupParams, backup
from restorekit.errors import OperationTimedOut, ProviderError

pytestmark = pytest.mark.slow


def _delete_two_users(world, incident_id: str, *, config: Path | None = None
                      ) -> tuple[dict[str, str], dict[str, str], AccidentalDeletionParams]:
    """Checksums before, two users deleted (and archived), checksums after, and the
    accidental-deletion parameters that bring them back (``config``: the world's)."""
    intact = checksums(world.app_dsn)
    _, since = delete_users(world.app_dsn, 2)
    world.wait_archived()
    broken = checksums(world.app_dsn)
    params = AccidentalDeletionParams(target="production", config=str(config or world.config),
                                      require_approval=False, incident_id=incident_id,
                                      deleted_since=since)
    return intact, broken, params


@pytest.fixture
def neon(neon_world: NeonWorld):  # noqa: F811 - the fixture above
    neon_world.fake.reset_controls()
    yield neon_world
    neon_world.fake.reset_controls()
    neon_world.fake.wait_idle()


def _assert_back_and_clean(world: NeonWorld, intact: dict[str, str]) -> None:
    """The deleted rows are back (the audit log aside) and no scratch branch is left."""
    assert without_audit(checksums(world.app_dsn)) == without_audit(intact)
    world.fake.wait_idle()
    assert world.scratch_branches() == []


def test_neon_operations_that_never_finish_time_out_the_flow_and_a_rerun_completes(
    prefect_server: str, neon: NeonWorld, tmp_path: Path,
) -> None:
    world = neon
    impatient = tmp_path / "neon-impatient.toml"
    impatient.write_text(world.config.read_text().replace("timeout_seconds = 300",
                                                          "timeout_seconds = 0.5"))
    intact, broken, params = _delete_two_users(world, "neon-stuck", config=impatient)
    world.fake.slow_operations(10**6)  # every operation stays "running"

    with pytest.raises(OperationTimedOut) as failed:
        accidental_deletion(params)

    message = str(failed.value)
    assert "create_branch" in message or "branch" in message  # what it was doing
    assert failed.value.operation  # the Neon operation id, for the runbook
    assert "may still finish" in message  # state: unknown, maybe running
    assert not failed.value.is_retryable  # never retried blindly
    assert_no_secret(message, world.api_key)
    assert checksums(world.app_dsn) == broken  # production untouched

    world.fake.reset_controls()
    report = accidental_deletion(params.model_copy(update={"config": str(world.config)}))

    assert report.outcome == "succeeded", report.error
    assert len(world.fake.calls("POST", rf"/projects/{world.fake.project_id}/branches")) >= 1
    _assert_back_and_clean(world, intact)


def test_neon_503_and_429_for_a_while_are_retried_and_the_flow_succeeds(
    prefect_server: str, neon: NeonWorld,
) -> None:
    world = neon
    intact, _, params = _delete_two_users(world, "neon-flaky")
    world.fake.requests.clear()
    # Retry-After 0: the retries are what is tested, not the policy's default backoff (1+2 s).
    world.fake.inject(503, method="POST", path=r"/branches$", times=2, retry_after=0)
    world.fake.inject(429, method="GET", times=2, retry_after=0)

    report = accidental_deletion(params)

    assert report.outcome == "succeeded", report.error
    statuses = [r.status for r in world.fake.requests]
    assert statuses.count(503) == 2 and statuses.count(429) == 2  # they happened, and passed
    _assert_back_and_clean(world, intact)


def test_neon_answering_500_to_every_branch_creation_fails_the_flow_and_a_rerun_completes(
    prefect_server: str, neon: NeonWorld,
) -> None:
    world = neon
    intact, broken, params = _delete_two_users(world, "neon-500")
    world.fake.inject(500, method="POST", path=r"/branches$", times=1000)

    with pytest.raises(ProviderError) as failed:
        accidental_deletion(params)

    message = str(failed.value)
    assert failed.value.provider == "neon" and failed.value.status_code == 500
    assert "500" in message and "internal server error" in message  # what Neon said
    assert failed.value.operation  # what restorekit was doing
    assert_no_secret(message, world.api_key)
    assert checksums(world.app_dsn) == broken
    assert world.scratch_branches() == []  # a 500 on a POST is not repeated blindly

    world.fake.reset_controls()
    report = accidental_deletion(params)
    assert report.outcome == "succeeded", report.error
    _assert_back_and_clean(world, intact)


def test_supabase_rate_limits_are_waited_out_and_persistent_5xx_fail_before_any_change(
    prefect_server: str, supabase_world,  # noqa: F811 - the fixture above
) -> None:
    world = supabase_world
    world.fake.reset()
    backup(BackupParams(target="production", config=str(world.config), label="nightly"))
    time.sleep(0.1)
    intact = checksums(world.app_dsn)
    _, since = delete_users(world.app_dsn, 2)
    broken = checksums(world.app_dsn)
    params = AccidentalDeletionParams(target="production", config=str(world.config),
                                      require_approval=False, incident_id="sb-faults",
                                      deleted_since=since)
    # Retry-After 0: the attempts are counted, the policy's backoff (1+2+4+8 s) need not pass.
    world.fake.fail(503, times=1000, headers={"Retry-After": "0"})

    with pytest.raises(ProviderError) as failed:
        accidental_deletion(params)

    message = str(failed.value)
    assert failed.value.provider == "supabase" and "503" in message
    assert failed.value.operation
    assert_no_secret(message, world.fake.token)
    assert checksums(world.app_dsn) == broken  # nothing ran past preflight
    # One layer retried: the HTTP policy's 5 attempts, and the task did not start them over
    # (preflight has retries=2: 15 before the retry layers were split, providers/_http.py).
    assert sum(1 for r in world.fake.calls() if r.status == 503) == 5

    world.fake.reset()
    world.fake.rate_limit(times=2, reset=1)
    report = accidental_deletion(params)
    assert report.outcome == "succeeded", report.error
    assert sum(1 for r in world.fake.calls() if r.status == 429) == 2
    assert without_audit(checksums(world.app_dsn)) == without_audit(intact)

"""Scenario 1 with smoke checks: a failing critical login check after the swap rolls the swap back
(inside the transaction, like a failed health check); with the right password the same incident
succeeds and the report's checks table shows the login and the data page passing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
from fixtures.world import build_world, rolled_back_run, teardown_world

from flows.complete_failure import CompleteFailureParams, complete_failure
from restorekit.demo import LOGIN_PASSWORD_ENV
from restorekit.errors import VerificationFailed
from restorekit.sample import SMOKE_TEST_EMAIL
from restorekit.sinks.envfile import EnvFileStore

pytestmark = pytest.mark.slow

WRONG_ENV = "RESTOREKIT_TEST_WRONG_LOGIN_PASSWORD"


@pytest.fixture(scope="module")
def smoke_world(pg_base_dir: Path):
    world = build_world(pg_base_dir / f"smoke-{time.monotonic_ns()}")
    world.runtime().app.start()
    yield world
    teardown_world(world)


def test_the_demo_app_logs_in_and_shows_data(smoke_world) -> None:
    base = smoke_world.runtime().app.health_url().rsplit("/api/", 1)[0]
    good = httpx.post(f"{base}/api/login", json={"email": SMOKE_TEST_EMAIL,
                                                  "password": os.environ[LOGIN_PASSWORD_ENV]})
    assert good.status_code == 200 and good.json() == {"ok": True, "user": SMOKE_TEST_EMAIL}
    form = httpx.post(f"{base}/api/login", data={"email": SMOKE_TEST_EMAIL, "password": "nope"})
    assert form.status_code == 401
    page = httpx.get(f"{base}/api/users", params={"limit": 5})
    assert page.status_code == 200 and len(page.json()["users"]) == 5
    assert httpx.get(f"{base}/api/users", params={"limit": 0}).status_code == 400


def test_a_failing_login_check_rolls_the_swap_back_then_the_right_one_passes(
    prefect_server: str, smoke_world, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = smoke_world
    world.wait_archived()
    old_dsn = EnvFileStore(world.env_file).read().get_secret_value()
    good_config = world.config.read_text()
    reference = "${" + LOGIN_PASSWORD_ENV + "}"
    assert reference in good_config
    monkeypatch.setenv(WRONG_ENV, "not-the-password-0123")
    world.config.write_text(good_config.replace(reference, "${" + WRONG_ENV + "}"))
    params = CompleteFailureParams(target="production", config=str(world.config),
                                   require_approval=False, incident_id="INC-smoke")

    # The swap is rolled back: the old connection string, and the app healthy on it.
    failed = rolled_back_run(world, params, VerificationFailed, "smoke:login")
    checks = {c["name"]: c for c in failed["checks"]}
    assert checks["smoke:login"]["ok"] is False and checks["smoke:login"]["critical"] is True
    assert "HTTP 401" in checks["smoke:login"]["detail"]
    assert checks["smoke:users page"]["ok"] is True
    text = sorted(world.runtime().reports_dir().glob("*-complete-failure.json"))[-1].read_text()
    assert "not-the-password-0123" not in text and os.environ[LOGIN_PASSWORD_ENV] not in text

    # The right password: the same incident reuses the restore and goes through.
    world.config.write_text(good_config)
    report = complete_failure(params)
    assert report.outcome == "succeeded"
    checks = {c.name: c for c in report.checks}
    assert checks["smoke:login"].ok and checks["smoke:users page"].ok
    assert "HTTP 200" in checks["smoke:login"].detail
    assert EnvFileStore(world.env_file).read().get_secret_value() != old_dsn
    steps = [s.name for s in report.steps]
    assert steps.index("check health") < steps.index("smoke checks") < steps.index(
        "adopt restored database")
    assert os.environ[LOGIN_PASSWORD_ENV] not in report.to_markdown()

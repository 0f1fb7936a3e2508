"""Scenario 1 with the application on Vercel: DATABASE_URL lives in a Vercel env var, the app
is stopped by serving a maintenance deployment and redeployed by a new production build. The
fake Vercel API is backed by the local demo app (each production deployment rewrites its env
file and restarts it), so the health check after the redeploy is real.

The fake behaves as Vercel does (provider-apis.md §5.1): the env list never decrypts, so the
store reads DATABASE_URL (type ``encrypted``, the common case) by id.

Each test has an installation of its own (``world`` here is function-scoped, about 1 s to build):
complete failure stops production, and the rollback test needs it running, so neither may run on
what the other left."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fakes.vercel_server import FakeVercel, backed_by
from fixtures.world import World, build_world, teardown_world

from flows.complete_failure import CompleteFailureParams, complete_failure
from restorekit.errors import ProviderError
from restorekit.health import check_health
from restorekit.sinks.envfile import EnvFileStore

pytestmark = pytest.mark.slow

TOKEN_ENV = "RESTOREKIT_TEST_VERCEL_TOKEN"


@dataclass
class OnVercel:
    fake: FakeVercel
    config: Path
    original: str  # DATABASE_URL before the run
    broken: list[bool] = field(default_factory=lambda: [False])  # builds off `original` fail


@pytest.fixture
def world(pg_base_dir: Path) -> Iterator[World]:
    """An installation of the test's own (instead of fixtures.world's, shared by the module)."""
    inst = build_world(pg_base_dir / f"vercel-world-{time.monotonic_ns()}")
    try:
        rt = inst.runtime()
        assert rt.app is not None
        rt.app.start()  # type: ignore[attr-defined]
        yield inst
    finally:
        teardown_world(inst)


@pytest.fixture
def vercel(world, monkeypatch) -> Iterator[OnVercel]:
    fake = FakeVercel().start()
    monkeypatch.setenv(TOKEN_ENV, fake.token)
    local_app = world.runtime().app
    dsn = EnvFileStore(world.env_file).read().get_secret_value()
    fake.add_env("DATABASE_URL", dsn)  # encrypted
    maintenance = fake.add_deployment(target=None, serve=False)
    fake.add_deployment()  # what serves production now
    serve_app = backed_by(world.env_file, lambda: local_app.redeploy(reason="vercel"))
    setup = OnVercel(fake=fake, config=world.config.parent / "vercel.toml", original=dsn)

    def production_changed(deployment: dict, env: dict) -> None:
        # The maintenance page needs no database: while it serves, the real app is down. A
        # "broken" build (one on another database) is down too: its health check fails.
        if "DATABASE_URL" not in env or (setup.broken[0] and env["DATABASE_URL"] != dsn):
            local_app.stop(reason="maintenance page or broken build")
        else:
            serve_app(deployment, env)

    fake.on_production.append(production_changed)
    text = world.config.read_text()
    section = (
        '[targets.production.app]\nkind = "vercel"\nhealth_attempts = 3\n'
        f'vercel = {{ project = "{fake.project_name}", team_id = "{fake.team_id}", '
        f'base_url = "{fake.url}", token_env = "{TOKEN_ENV}", '
        f'health_url = "{local_app.health_url()}", maintenance_deployment_id = "{maintenance}", '
        'poll_interval_seconds = 0.2, timeout_seconds = 60 }\n\n'
        '[targets.production.connection]\nkind = "vercel"\n'
        f'options = {{ project = "{fake.project_name}", team_id = "{fake.team_id}", '
        f'base_url = "{fake.url}", token_env = "{TOKEN_ENV}" }}\n\n'
    )
    text = re.sub(r"\[targets\.production\.app\].*?(?=\[targets\.production\.verify\])",
                  section, text, flags=re.S)
    setup.config.write_text(text)
    yield setup
    fake.stop()


def test_a_failed_health_check_on_vercel_puts_the_encrypted_database_url_back(
    prefect_server: str, world, vercel: OnVercel
) -> None:
    fake = vercel.fake
    world.wait_archived()
    vercel.broken[0] = True  # the build on the restored database will not come up

    with pytest.raises(ProviderError, match="health check failed"):
        complete_failure(CompleteFailureParams(
            target="production", config=str(vercel.config), require_approval=False,
            incident_id="vercel-rollback"))

    # The env var holds the original value again, byte for byte and still encrypted, and a
    # new production build serves it.
    (entry,) = fake.envs
    assert entry["value"].encode() == vercel.original.encode()
    assert entry["type"] == "encrypted"
    assert [c.body["value"] == vercel.original for c in fake.calls("PATCH")] == [False, True]
    assert fake.production_env()["DATABASE_URL"] == vercel.original
    assert EnvFileStore(world.env_file).read().get_secret_value() == vercel.original
    assert check_health(world.runtime().app.health_url(), attempts=5).ok
    # Values were read by id: the list (which never decrypts) was only used to find the entry.
    assert fake.calls("GET", rf"^/v1/projects/[^/]+/env/{entry['id']}$")
    assert all("decrypt" not in c.query for c in fake.calls("GET", r"/env$"))
    assert fake.problems == []
    reports = sorted(world.runtime().reports_dir().glob("*-complete-failure.json"))
    failed = json.loads(reports[-1].read_text())
    assert failed["outcome"] == "failed" and "health check failed" in failed["error"]
    assert fake.token not in reports[-1].read_text()


def test_complete_failure_on_vercel_swaps_the_env_var_and_redeploys(
    prefect_server: str, world, vercel: OnVercel
) -> None:
    fake = vercel.fake
    old = fake.env_value("DATABASE_URL")
    world.wait_archived()
    world.production.stop(mode="immediate")  # the database is gone

    report = complete_failure(CompleteFailureParams(
        target="production", config=str(vercel.config), require_approval=False,
        incident_id="vercel-cf"))

    assert report.outcome == "succeeded", report.error
    new = fake.env_value("DATABASE_URL")
    assert new and new != old
    assert EnvFileStore(world.env_file).read().get_secret_value() == new  # served by production
    assert check_health(world.runtime().app.health_url(), attempts=5).ok
    assert fake.problems == []  # every request had the token, teamId and the documented body
    redeploys = fake.calls("POST", r"/v13/deployments")
    assert redeploys and fake.token not in str(report.to_json_dict())

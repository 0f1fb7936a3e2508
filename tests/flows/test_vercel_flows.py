"""Scenario 1 with the application on Vercel: DATABASE_URL lives in a Vercel env var, the app
is stopped by serving a maintenance deployment and redeployed by a new production build. The
fake Vercel API is backed by the local demo app (each production deployment rewrites its env
file and restarts it), so the health check after the redeploy is real."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from fakes.vercel_server import FakeVercel, backed_by
from flows.complete_failure import CompleteFailureParams, complete_failure
from restorekit.errors import ProviderError
from restorekit.health import check_health
from restorekit.sinks.envfile import EnvFileStore

pytestmark = pytest.mark.slow

TOKEN_ENV = "RESTOREKIT_TEST_VERCEL_TOKEN"


@pytest.fixture
def vercel(world, monkeypatch) -> Iterator[tuple[FakeVercel, object]]:
    fake = FakeVercel().start()
    monkeypatch.setenv(TOKEN_ENV, fake.token)
    local_app = world.runtime().app
    dsn = EnvFileStore(world.env_file).read().get_secret_value()
    fake.add_env("DATABASE_URL", dsn)
    maintenance = fake.add_deployment(target=None, serve=False)
    fake.add_deployment()  # what serves production now
    serve_app = backed_by(world.env_file, lambda: local_app.redeploy(reason="vercel"))

    def production_changed(deployment: dict, env: dict) -> None:
        # The maintenance page needs no database: while it serves, the real app is down.
        if "DATABASE_URL" not in env:
            local_app.stop(reason="maintenance page")
        else:
            serve_app(deployment, env)

    fake.on_production.append(production_changed)
    text = world.config.read_text()
    section = (
        '[targets.production.app]\nkind = "vercel"\n'
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
    config = world.config.parent / "vercel.toml"
    config.write_text(text)
    yield fake, config
    fake.stop()


def test_complete_failure_on_vercel_swaps_the_env_var_and_redeploys(
    prefect_server: str, world, vercel
) -> None:
    fake, config = vercel
    old = fake.env_value("DATABASE_URL")
    world.wait_archived()
    world.production.stop(mode="immediate")  # the database is gone

    report = complete_failure(CompleteFailureParams(
        target="production", config=str(config), require_approval=False, incident_id="vercel-cf"))

    assert report.outcome == "succeeded", report.error
    new = fake.env_value("DATABASE_URL")
    assert new and new != old
    assert EnvFileStore(world.env_file).read().get_secret_value() == new  # served by production
    assert check_health(world.runtime().app.health_url(), attempts=5).ok
    assert fake.problems == []  # every request had the token, teamId and the documented body
    redeploys = fake.calls("POST", r"/v13/deployments")
    assert redeploys and fake.token not in str(report.to_json_dict())

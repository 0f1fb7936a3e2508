"""Contract tests for the Vercel app platform and env store, against the local fake Vercel API.

The fake (tests/fakes/vercel_server.py) is a real HTTP server that rejects calls without the
token or the team scope and records every problem; each test ends by asserting it saw none.
"""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.vercel_server import FakeVercel, backed_by, running
from fixtures.clock import FakeClock
from pydantic import SecretStr

from restorekit.apps import base as apps_base
from restorekit.apps.base import AppPlatform, AppState
from restorekit.apps.vercel import VercelApp
from restorekit.errors import ConfigError, OperationTimedOut, ProviderError
from restorekit.sinks import base as sinks_base
from restorekit.sinks.base import ConnectionStore, Revision
from restorekit.sinks.vercel import VercelEnvStore

OLD = "postgresql://app:old-pass-1@db-old.internal:5432/shop"
NEW = "postgresql://app:new-pass-2@db-restored.internal:5432/shop"


@pytest.fixture
def fake() -> Iterator[FakeVercel]:
    for started in running():
        yield started
        assert started.problems == [], "the fake Vercel API saw calls Vercel would reject"


@pytest.fixture
def token(fake: FakeVercel, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("VERCEL_TOKEN", fake.token)
    return fake.token


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _closing_factory(cls: Any, defaults: dict[str, Any]) -> Iterator[Any]:
    """``make(**options)`` building ``cls`` from ``defaults`` and ``options``; every object it
    made is closed afterwards."""
    made: list[Any] = []

    def make(**options: Any) -> Any:
        obj = cls(**{**defaults, **options})
        made.append(obj)
        return obj

    yield make
    for obj in made:
        obj.close()


@pytest.fixture
def make_app(fake: FakeVercel, token: str, clock: FakeClock) -> Iterator[Any]:
    yield from _closing_factory(VercelApp, {
        "project": fake.project_name, "team_id": fake.team_id, "base_url": fake.url,
        "health_url": "https://shop.example.com/api/health", "sleep": clock.sleep,
        "clock": clock.monotonic})


@pytest.fixture
def make_store(fake: FakeVercel, token: str, clock: FakeClock, tmp_path: Path) -> Iterator[Any]:
    yield from _closing_factory(VercelEnvStore, {
        "project": fake.project_name, "team_id": fake.team_id, "base_url": fake.url,
        "state_dir": tmp_path / "state", "sleep": clock.sleep})


@pytest.fixture
def registries() -> Iterator[None]:
    saved_apps, saved_stores = dict(apps_base._REGISTRY), dict(sinks_base._REGISTRY)
    yield
    apps_base._REGISTRY.clear()
    apps_base._REGISTRY.update(saved_apps)
    sinks_base._REGISTRY.clear()
    sinks_base._REGISTRY.update(saved_stores)


# -- registry and construction -----------------------------------------------------------------


def test_registry_builds_both_from_config_options(fake: FakeVercel, token: str, tmp_path: Path,
                                                  registries: None) -> None:
    apps_base.register("vercel", "restorekit.apps.vercel:VercelApp")
    sinks_base.register("vercel", "restorekit.sinks.vercel:VercelEnvStore")
    fake.add_env("DATABASE_URL", OLD)
    # As restorekit.runtime calls them: the [app.vercel] dict, and key= plus the options dict.
    app = apps_base.get_app_platform("vercel", project=fake.project_name, team_id=fake.team_id,
                                     base_url=fake.url)
    store = sinks_base.get_store("vercel", key="DATABASE_URL", project=fake.project_name,
                                 team_id=fake.team_id, base_url=fake.url,
                                 state_dir=str(tmp_path))
    assert isinstance(app, AppPlatform) and isinstance(store, ConnectionStore)
    assert store.read().get_secret_value() == OLD


@pytest.mark.parametrize("options, message", [
    ({"team_id": "team_a", "team_slug": "a"}, "not both"),
    ({"token_env": "not a name"}, "token_env"),
    ({"base_url": "ftp://x"}, "base_url"),
    ({"poll_interval_seconds": 0}, "poll_interval_seconds"),
])
def test_app_rejects_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        VercelApp(project="shop", **options)


def test_store_needs_a_state_dir_and_valid_targets() -> None:
    with pytest.raises(ConfigError, match="state_dir is required"):
        VercelEnvStore(project="shop")
    with pytest.raises(ConfigError, match="targets"):
        VercelEnvStore(project="shop", state_dir="/tmp/x", targets=["prod"])


def test_missing_token_is_a_config_error_naming_the_variable(
        fake: FakeVercel, make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VERCEL_TOKEN")
    with pytest.raises(ConfigError, match=r"VERCEL_TOKEN is not set"):
        make_app().redeploy(reason="x")
    assert fake.requests == []


# -- stop / resume -----------------------------------------------------------------------------


def test_stop_without_a_maintenance_deployment_refuses_before_any_call(
        fake: FakeVercel, make_app: Any) -> None:
    fake.add_deployment()
    with pytest.raises(ConfigError) as caught:
        make_app().stop(reason="INC-1")
    assert "Vercel has no 'stop'" in str(caught.value)
    assert "maintenance_deployment_id" in str(caught.value)
    assert fake.requests == []


@pytest.mark.parametrize("maintenance_served_production", [True, False])
def test_stop_serves_the_maintenance_deployment_and_resume_brings_the_app_back(
        fake: FakeVercel, make_app: Any, maintenance_served_production: bool) -> None:
    if maintenance_served_production:
        maintenance = fake.add_deployment()  # an old production build of the maintenance page
    else:
        maintenance = fake.add_deployment(target=None, serve=False)  # a preview build
    serving = fake.add_deployment()
    app = make_app(maintenance_deployment_id=maintenance)

    before = app.stop(reason="INC-1: restore to 13:05Z")

    assert before == AppState(platform="vercel", running=True, deployment=serving,
                              location=app.describe(), recorded_at=before.recorded_at)
    assert fake.production == maintenance
    switch = "rollback" if maintenance_served_production else "promote"
    (call,) = fake.calls("POST", rf"/{switch}/")
    assert call.path.endswith(f"/projects/{fake.project_id}/{switch}/{maintenance}")

    app.resume(before)

    assert fake.production == serving
    assert fake.calls("POST", "/rollback/")[-1].path.endswith(f"/rollback/{serving}")


def test_stop_is_repeatable_and_resume_of_nothing_does_nothing(
        fake: FakeVercel, make_app: Any) -> None:
    maintenance = fake.add_deployment()
    serving = fake.add_deployment()
    app = make_app(maintenance_deployment_id=maintenance)
    first = app.stop(reason="x")
    again = app.stop(reason="retried task")
    assert first.deployment == again.deployment == serving  # the maintenance page is skipped
    assert fake.production == maintenance
    calls = len(fake.requests)
    app.resume(AppState(platform="vercel", running=False, location=app.describe()))
    assert len(fake.requests) == calls


def test_stop_refuses_a_maintenance_deployment_of_another_project(
        fake: FakeVercel, make_app: Any) -> None:
    other = fake.add_deployment(name="blog")
    fake.deployments[other].project_id = "prj_other"
    with pytest.raises(ConfigError, match="belongs to project blog"):
        make_app(maintenance_deployment_id=other).stop(reason="x")
    assert fake.calls("POST") == []


def test_resume_refuses_a_state_of_another_application(make_app: Any) -> None:
    state = AppState(platform="vercel", running=True, deployment="dpl_x",
                     location="Vercel project blog (team team_rk)")
    with pytest.raises(ConfigError, match="cannot be resumed"):
        make_app().resume(state)


# -- redeploy ----------------------------------------------------------------------------------


def test_redeploy_builds_production_again_with_the_current_env_and_waits(
        fake: FakeVercel, make_app: Any, clock: FakeClock) -> None:
    fake.add_env("DATABASE_URL", OLD)
    serving = fake.add_deployment()
    seen: list[tuple[str, str]] = []
    fake.on_production.append(lambda dep, env: seen.append((dep["id"], env["DATABASE_URL"])))
    fake.envs[0]["value"] = NEW  # the connection string was swapped
    fake.build_polls = 3

    before = make_app().redeploy(reason="INC-42: restored database")

    assert before.deployment == serving and before.running
    (post,) = fake.calls("POST", r"^/v13/deployments$")
    assert post.query == {"forceNew": "1", "teamId": fake.team_id}
    assert post.body["name"] == fake.project_name
    assert post.body["deploymentId"] == serving
    assert post.body["target"] == "production"
    assert post.body["meta"] == {"reason": "INC-42: restored database"}
    new_id = fake.production
    assert new_id != serving
    assert seen == [(new_id, NEW)]  # the new build read the new value; nothing else switched
    assert len(fake.calls("GET", rf"/v13/deployments/{new_id}")) == 4  # 3 x BUILDING, READY
    assert clock.sleeps == [3.0] * 4


def test_redeploy_promotes_a_build_left_staged(fake: FakeVercel, make_app: Any) -> None:
    serving = fake.add_deployment()
    fake.stage_production_builds = True
    make_app().redeploy(reason="x")
    (promote,) = fake.calls("POST", "/promote/")
    new_id = promote.path.rsplit("/", 1)[1]
    assert promote.path == f"/v10/projects/{fake.project_id}/promote/{new_id}"
    assert fake.production == new_id != serving


def test_redeploy_after_a_stop_is_promoted_when_rollback_paused_auto_assignment(
        fake: FakeVercel, make_app: Any) -> None:
    # The [UNCONFIRMED] Vercel behaviour (provider-apis.md §5.5): after an instant rollback new
    # production builds are not assigned the domains until a promote.
    fake.add_env("DATABASE_URL", OLD)
    maintenance = fake.add_deployment()
    serving = fake.add_deployment()
    app = make_app(maintenance_deployment_id=maintenance)
    app.stop(reason="x")
    fake.envs[0]["value"] = NEW
    before = app.redeploy(reason="restored")
    assert before.deployment == serving  # built from the app, not from the maintenance page
    assert fake.calls("POST", r"^/v13/deployments$")[0].body["deploymentId"] == serving
    assert fake.calls("POST", "/promote/")
    assert fake.production not in (maintenance, serving)
    assert fake.production_env()["DATABASE_URL"] == NEW


def test_redeploy_waits_for_an_accepted_promote(fake: FakeVercel, make_app: Any,
                                                clock: FakeClock) -> None:
    fake.add_deployment()
    fake.stage_production_builds = True
    fake.promote_status, fake.promote_polls = 202, 2
    make_app().redeploy(reason="x")
    new_id = fake.calls("POST", "/promote/")[0].path.rsplit("/", 1)[1]
    assert fake.production == new_id
    assert fake.deployments[new_id].ready_substate == "PROMOTED"


@pytest.mark.parametrize("outcome, detail", [
    ("ERROR", 'ended ERROR (BUILD_FAILED): Command "npm run build" exited with 1'),
    ("CANCELED", "ended CANCELED: Canceled by a newer deployment"),
])
def test_a_failed_build_is_a_provider_error_and_production_is_untouched(
        fake: FakeVercel, make_app: Any, outcome: str, detail: str) -> None:
    serving = fake.add_deployment()
    fake.outcomes.append(outcome)
    with pytest.raises(ProviderError) as caught:
        make_app().redeploy(reason="x")
    assert detail in str(caught.value)
    assert "inspect it at https://vercel.com/" in str(caught.value)
    assert not caught.value.is_retryable
    assert fake.production == serving


def test_a_build_past_the_deadline_times_out_with_the_deployment_id(
        fake: FakeVercel, make_app: Any, clock: FakeClock) -> None:
    fake.add_deployment()
    fake.build_polls = 10_000
    with pytest.raises(OperationTimedOut) as caught:
        make_app(timeout_seconds=30, poll_interval_seconds=3).redeploy(reason="x")
    (new_id,) = (d for d in fake.deployments.values() if d.source_id)
    assert f"deployment {new_id.id} still BUILDING after 30 s" in str(caught.value)
    assert len(clock.sleeps) <= 10 and sum(clock.sleeps) <= 30


def test_redeploy_without_a_production_deployment_says_so(
        fake: FakeVercel, make_app: Any) -> None:
    with pytest.raises(ProviderError, match="no READY production deployment"):
        make_app().redeploy(reason="x")
    assert fake.calls("POST") == []


def test_team_slug_is_sent_on_every_call(fake: FakeVercel, make_app: Any) -> None:
    maintenance = fake.add_deployment()
    fake.add_deployment()
    app = make_app(team_id=None, team_slug=fake.team_slug, maintenance_deployment_id=maintenance)
    app.resume(app.stop(reason="x"))
    app.redeploy(reason="y")
    assert fake.requests and all(r.query.get("slug") == fake.team_slug and "teamId" not in r.query
                                 for r in fake.requests)


# -- retries and errors ------------------------------------------------------------------------


def test_429_is_retried_after_the_retry_after_it_names(fake: FakeVercel, make_app: Any,
                                                       clock: FakeClock) -> None:
    fake.add_deployment()
    fake.fail("GET", r"^/v7/deployments$", 429, retry_after=7)
    fake.fail("POST", r"^/v13/deployments$", 429, retry_after="2")
    make_app().redeploy(reason="x")
    assert clock.sleeps[:2] == [7.0, 2.0]
    assert len(fake.calls("GET", r"^/v7/deployments$")) == 2
    assert len(fake.calls("POST", r"^/v13/deployments$")) == 2


def test_5xx_is_retried_with_backoff(fake: FakeVercel, make_app: Any, clock: FakeClock) -> None:
    fake.add_deployment()
    fake.fail("GET", r"^/v13/deployments/", 500, times=2)
    make_app().redeploy(reason="x")
    assert clock.sleeps == [3.0, 1.0, 2.0]  # poll pause, then two retries


def test_a_persistent_5xx_ends_as_a_retryable_error(fake: FakeVercel, make_app: Any,
                                                    clock: FakeClock) -> None:
    fake.add_deployment()
    fake.fail("GET", r"^/v7/deployments$", 503, times=99)
    with pytest.raises(ProviderError) as caught:
        make_app(max_retries=2).redeploy(reason="x")
    assert caught.value.is_retryable and caught.value.status_code == 503
    assert len(fake.calls("GET", r"^/v7/deployments$")) == 3
    assert clock.sleeps == [1.0, 2.0]


def test_a_retry_after_beyond_the_bound_is_raised_not_slept(
        fake: FakeVercel, make_app: Any, clock: FakeClock) -> None:
    fake.add_deployment()
    fake.fail("GET", r"^/v7/deployments$", 429, retry_after=3600)
    with pytest.raises(ProviderError) as caught:
        make_app(max_retry_after_seconds=60).redeploy(reason="x")
    assert caught.value.is_retryable and caught.value.retry_after == 3600
    assert clock.sleeps == []


def test_a_4xx_is_not_retried_and_carries_vercels_message(fake: FakeVercel,
                                                          make_app: Any) -> None:
    fake.add_deployment()
    fake.fail("POST", r"^/v13/deployments$", 400, body={"error": {
        "code": "bad_request", "message": "Invalid request: `gitSource` is required"}})
    with pytest.raises(ProviderError) as caught:
        make_app().redeploy(reason="x")
    assert "answered 400: Invalid request: `gitSource` is required (bad_request)" in str(
        caught.value)
    assert not caught.value.is_retryable
    assert len(fake.calls("POST", r"^/v13/deployments$")) == 1


def test_transport_errors_are_retried_then_reported_retryable(
        token: str, clock: FakeClock) -> None:
    app = VercelApp(project="shop", base_url="http://127.0.0.1:9", max_retries=1,
                    sleep=clock.sleep, clock=clock.monotonic, request_timeout_seconds=2)
    with pytest.raises(ProviderError) as caught:
        app.redeploy(reason="x")
    assert caught.value.is_retryable and "ConnectError" in str(caught.value)
    assert clock.sleeps == [1.0]
    assert token not in str(caught.value)


def test_a_rejected_token_fails_without_showing_it(
        fake: FakeVercel, make_app: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-token-d41d8cd98f00b204"
    monkeypatch.setenv("VERCEL_TOKEN", wrong)
    with pytest.raises(ProviderError) as caught:
        make_app().redeploy(reason="x")
    assert caught.value.status_code == 403 and not caught.value.is_retryable
    assert "$VERCEL_TOKEN" in str(caught.value)
    assert wrong not in str(caught.value) and wrong not in caplog.text
    fake.problems.clear()  # the fake noted the bad token, as intended here


def test_the_token_never_reaches_messages_or_logs(
        fake: FakeVercel, make_app: Any, make_store: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.add_env("DATABASE_URL", OLD)
    maintenance = fake.add_deployment()
    fake.add_deployment()
    fake.fail("GET", r"^/v7/deployments$", 500)
    fake.fail("PATCH", r"/env/", 429, retry_after=1)
    app = make_app(maintenance_deployment_id=maintenance)
    store = make_store()
    app.resume(app.stop(reason="x"))
    revision = store.write(SecretStr(NEW))
    app.redeploy(reason="y")
    store.restore(revision)
    fake.outcomes.append("ERROR")
    with pytest.raises(ProviderError) as caught:
        app.redeploy(reason="z")
    everything = caplog.text + str(caught.value) + repr(app) + repr(store) + app.describe()
    assert fake.token not in everything
    assert "new-pass-2" not in caplog.text and "old-pass-1" not in caplog.text


# -- the fake is Vercel: the list never decrypts (provider-apis.md §5.1, §5.1a) -----------------


def _get(fake: FakeVercel, path: str, **params: str) -> Any:
    response = httpx.get(fake.url + path, params={"teamId": fake.team_id or "", **params},
                         headers={"Authorization": f"Bearer {fake.token}"})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("sensitive_list_value", ["absent", "ciphertext"])
def test_the_list_never_decrypts_and_only_the_per_id_read_does(
        fake: FakeVercel, sensitive_list_value: str) -> None:
    # What Vercel answers whatever `decrypt` says (vercel/sdk#118, vercel/vercel#9072): an
    # adapter that takes values from the list gets ciphertext, or nothing.
    fake.sensitive_list_value = sensitive_list_value
    ids = {kind: fake.add_env(f"URL_{kind.upper()}", OLD, type=kind)
           for kind in ("plain", "encrypted", "sensitive")}
    for decrypt in ("true", "false"):
        listed = {e["type"]: e for e in _get(fake, f"/v10/projects/{fake.project_name}/env",
                                             decrypt=decrypt)["envs"]}
        assert listed["plain"]["value"] == OLD  # stored as is
        assert listed["encrypted"]["decrypted"] is False
        hidden = {k: v for k, v in listed.items() if k != "plain"}
        assert listed["encrypted"]["value"] != OLD and "old-pass-1" not in json.dumps(hidden)
        assert listed["sensitive"]["decrypted"] is False
        assert ("value" in listed["sensitive"]) is (sensitive_list_value == "ciphertext")

    path = f"/v1/projects/{fake.project_name}/env/"
    for kind in ("plain", "encrypted"):
        fetched = _get(fake, path + ids[kind])
        assert (fetched["value"], fetched["decrypted"]) == (OLD, True)
    fetched = _get(fake, path + ids["sensitive"])
    assert fetched["decrypted"] is False and "value" not in fetched
    assert fake.env_value("URL_SENSITIVE") == OLD  # a build still gets it


# -- the env store: reading --------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["pagination", "hidden", "single"])
def test_read_understands_every_response_shape(fake: FakeVercel, make_store: Any,
                                               shape: str) -> None:
    fake.env_list_shape = shape
    env_id = fake.add_env("DATABASE_URL", OLD, target="production")  # target as a string, too
    assert make_store().read().get_secret_value() == OLD
    (listing,) = fake.calls("GET", r"^/v10/projects/[^/]+/env$")
    assert listing.path == f"/v10/projects/{fake.project_name}/env"
    assert listing.query == {"teamId": fake.team_id}  # no `decrypt`: it does nothing (§5.1)
    (by_id,) = fake.calls("GET", r"^/v1/projects/")
    assert by_id.path == f"/v1/projects/{fake.project_name}/env/{env_id}"
    assert by_id.query == {"teamId": fake.team_id}


@pytest.mark.parametrize("env_type", ["plain", "encrypted"])
def test_read_takes_the_value_from_the_per_id_endpoint_not_from_the_list(
        fake: FakeVercel, make_store: Any, env_type: str) -> None:
    env_id = fake.add_env("DATABASE_URL", OLD, type=env_type)
    store = make_store()
    assert store.read().get_secret_value() == OLD
    assert [c.path for c in fake.calls("GET", r"^/v1/projects/")] == [
        f"/v1/projects/{fake.project_name}/env/{env_id}"]
    assert store.describe() == store.location  # nothing to say about a readable variable


def test_an_undecrypted_per_id_answer_is_an_error_never_a_value(
        fake: FakeVercel, make_store: Any) -> None:
    # As sdk#25 saw it: the per-id read may still withhold the value (token permissions).
    env_id = fake.add_env("DATABASE_URL", OLD)
    ciphertext = "zBVLLQi9gyWcZ38Yh44FV3DVhJb6HrQLVaZBtlg6xRLe+gsFvw=="
    fake.fail("GET", r"^/v1/projects/", 200, times=2, body={
        "id": env_id, "key": "DATABASE_URL", "type": "encrypted", "decrypted": False,
        "value": ciphertext, "target": ["production"]})
    store = make_store()
    with pytest.raises(ProviderError, match="did not return the decrypted value") as caught:
        store.read()
    assert ciphertext not in str(caught.value)
    with pytest.raises(ProviderError, match="did not return the decrypted value"):
        store.write(SecretStr(NEW))
    assert fake.calls("PATCH") == [] and fake.env_value("DATABASE_URL") == OLD


def test_read_picks_the_production_entry_among_others(fake: FakeVercel,
                                                      make_store: Any) -> None:
    fake.add_env("DATABASE_URL", "postgresql://preview", target=["preview", "development"])
    fake.add_env("DATABASE_URL", "postgresql://branch", target=["preview"], gitBranch="feat")
    fake.add_env("REDIS_URL", "redis://x")
    fake.add_env("DATABASE_URL", OLD, target=["production"])
    assert make_store().read().get_secret_value() == OLD


@pytest.mark.parametrize("sensitive_list_value", ["absent", "ciphertext"])
def test_a_sensitive_variable_is_never_read_from_the_api_and_without_current_value_env_nothing_changes(  # noqa: E501
        fake: FakeVercel, make_store: Any, sensitive_list_value: str) -> None:
    fake.sensitive_list_value = sensitive_list_value
    fake.add_env("DATABASE_URL", OLD, type="sensitive")
    store = make_store()
    with pytest.raises(ConfigError) as caught:
        store.read()
    message = str(caught.value)
    assert "'sensitive'" in message and "never returns its value" in message
    assert "Set current_value_env in [targets.NAME.connection.options]" in message
    assert "old-pass-1" not in message
    # The plan says it before any swap; and the swap refuses before changing anything.
    assert store.describe().endswith("(sensitive: not readable back; no rollback is possible "
                                     "until current_value_env is set)")
    with pytest.raises(ConfigError, match="current_value_env"):
        store.write(SecretStr(NEW))
    assert fake.calls("PATCH") == [] and fake.env_value("DATABASE_URL") == OLD


def test_a_sensitive_variable_reads_as_the_value_of_current_value_env(
        fake: FakeVercel, make_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.add_env("DATABASE_URL", OLD, type="sensitive")
    store = make_store(current_value_env="APP_DATABASE_URL")
    # Before anything is read, the plan already shows where a rollback's value comes from.
    note = ("(sensitive: not readable back; rollback writes the value of $APP_DATABASE_URL, "
            "or the one restorekit last wrote)")
    assert store.describe() == f"{store.location} {note}"
    monkeypatch.delenv("APP_DATABASE_URL", raising=False)
    with pytest.raises(ConfigError, match=r"APP_DATABASE_URL \(current_value_env\) is not set"):
        store.read()
    monkeypatch.setenv("APP_DATABASE_URL", OLD + "\n")
    with pytest.raises(ConfigError, match="control characters"):
        store.read()
    monkeypatch.setenv("APP_DATABASE_URL", OLD)
    assert store.read().get_secret_value() == OLD
    assert fake.calls("GET", r"^/v1/projects/") == []  # it would only say "decrypted: false"
    assert "old-pass-1" not in store.describe() + repr(store)


def test_read_of_a_missing_variable_mentions_hidden_production_vars(
        fake: FakeVercel, make_store: Any) -> None:
    fake.env_list_shape, fake.hidden_production_envs = "hidden", 2
    with pytest.raises(ConfigError, match="no such variable; 2 production variable"):
        make_store().read()


def test_a_value_split_over_entries_is_refused(fake: FakeVercel, make_store: Any) -> None:
    fake.add_env("DATABASE_URL", OLD, target=["production"])
    fake.add_env("DATABASE_URL", "postgresql://preview", target=["preview"])
    with pytest.raises(ConfigError, match="split over several entries"):
        make_store(targets=["production", "preview"]).read()


def test_store_rejects_bad_sensitive_options() -> None:
    with pytest.raises(ConfigError, match="current_value_env must name"):
        VercelEnvStore(project="shop", state_dir="/tmp/x", current_value_env="not a name")
    with pytest.raises(ConfigError, match="no sensitive variables for the development"):
        VercelEnvStore(project="shop", state_dir="/tmp/x", env_type="sensitive",
                       targets=["production", "development"])


# -- the env store: writing and rolling back ---------------------------------------------------

# An original value a sloppy round trip would change: escapes, a space, non-ASCII, parameters.
ORIGINAL = ("postgresql://app:p%40ss%20w0rd-é@db-old.internal:5432/shop"
            "?sslmode=require&application_name=shop web&options=-c%20search_path%3Dapp")


@pytest.mark.parametrize("env_type", ["plain", "encrypted", "sensitive"])
def test_swap_then_rollback_puts_the_original_back_byte_for_byte(
        fake: FakeVercel, make_store: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, env_type: str) -> None:
    caplog.set_level(logging.DEBUG)
    env_id = fake.add_env("DATABASE_URL", ORIGINAL, type=env_type)
    monkeypatch.setenv("APP_DATABASE_URL", ORIGINAL)  # used for the sensitive one only
    store = make_store(current_value_env="APP_DATABASE_URL")

    revision = store.write(SecretStr(NEW))

    (entry,) = fake.envs
    assert (entry["id"], entry["type"], entry["value"]) == (env_id, env_type, NEW)
    assert store.read().get_secret_value() == NEW  # also for sensitive: restorekit wrote it
    assert "p%40ss" not in revision.model_dump_json() and "old-pass" not in revision.location

    store.restore(revision)

    assert fake.env_value("DATABASE_URL").encode() == ORIGINAL.encode()
    assert entry["type"] == env_type
    assert store.read().get_secret_value() == ORIGINAL
    patches = len(fake.calls("PATCH"))
    store.restore(revision)  # idempotent: the value is known to be back, nothing is written
    assert len(fake.calls("PATCH")) == patches == 2
    if env_type == "sensitive":
        assert [c.body.get("type") for c in fake.calls("PATCH")] == ["sensitive"] * 2
        assert fake.calls("GET", r"^/v1/projects/") == []
    else:
        assert all(c.body == {"value": c.body["value"]} for c in fake.calls("PATCH"))
        assert fake.calls("GET", r"^/v1/projects/")  # values read by id, never from the list
    assert "p%40ss" not in caplog.text and "new-pass-2" not in caplog.text


def test_a_swapped_sensitive_value_is_not_read_as_the_stale_configured_one(
        fake: FakeVercel, make_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # $APP_DATABASE_URL still says OLD after a successful swap; the app now runs on NEW.
    fake.add_env("DATABASE_URL", OLD, type="sensitive")
    monkeypatch.setenv("APP_DATABASE_URL", OLD)
    store = make_store(current_value_env="APP_DATABASE_URL")
    store.write(SecretStr(NEW))
    again = make_store(current_value_env="APP_DATABASE_URL")  # a later run, a new process
    assert again.read().get_secret_value() == NEW
    tracked = again.backup_dir / "shop.DATABASE_URL.current"
    assert stat.S_IMODE(tracked.stat().st_mode) == 0o600 and b"new-pass" not in tracked.read_bytes()
    # Changed in the dashboard since: restorekit no longer knows it; the configured value rules.
    fake.envs[0].update(value="postgresql://by-hand", updatedAt=fake.envs[0]["updatedAt"] + 1)
    assert again.read().get_secret_value() == OLD


def test_write_patches_reads_back_by_id_and_keeps_the_previous_value_encrypted(
        fake: FakeVercel, make_store: Any, tmp_path: Path) -> None:
    env_id = fake.add_env("DATABASE_URL", OLD)
    store = make_store()

    revision = store.write(SecretStr(NEW))

    assert fake.env_value("DATABASE_URL") == NEW
    (patch,) = fake.calls("PATCH")
    assert patch.path == f"/v9/projects/{fake.project_name}/env/{env_id}"
    assert patch.body == {"value": NEW}
    assert len(fake.calls("GET", r"^/v10/projects/[^/]+/env$")) == 2  # before, and read-back
    assert len(fake.calls("GET", rf"^/v1/projects/[^/]+/env/{env_id}$")) == 2
    # The revision names a file; the file is 0600 in a 0700 directory, and encrypted.
    assert "pass" not in revision.model_dump_json()
    backup = Path(revision.ref or "")
    assert backup.parent == tmp_path / "state" / "vercel-env"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(backup.parent.stat().st_mode) == 0o700
    assert b"old-pass-1" not in backup.read_bytes() and b"db-old" not in backup.read_bytes()

    store.restore(revision)
    assert fake.env_value("DATABASE_URL") == OLD
    store.restore(revision)  # idempotent: the value is already back, nothing is written
    assert len(fake.calls("PATCH")) == 2


def test_write_of_a_missing_variable_upserts_it_and_restore_removes_it(
        fake: FakeVercel, make_store: Any) -> None:
    store = make_store(targets=["production", "preview"])
    revision = store.write(SecretStr(NEW))
    (post,) = fake.calls("POST", "/env")
    assert post.query == {"upsert": "true", "teamId": fake.team_id}
    assert post.body == {"key": "DATABASE_URL", "value": NEW, "type": "encrypted",
                         "target": ["production", "preview"]}
    assert store.read().get_secret_value() == NEW
    store.restore(revision)
    assert fake.envs == []
    assert len(fake.calls("DELETE")) == 1
    store.restore(revision)  # idempotent
    assert len(fake.calls("DELETE")) == 1


def test_a_sensitive_variable_written_from_scratch_is_known_and_removed_on_rollback(
        fake: FakeVercel, make_store: Any) -> None:
    store = make_store(env_type="sensitive")  # no current_value_env: restorekit wrote it
    revision = store.write(SecretStr(NEW))
    assert fake.envs[0]["type"] == "sensitive"
    assert store.read().get_secret_value() == NEW
    store.restore(revision)
    assert fake.envs == []


def test_a_read_back_that_differs_puts_the_old_value_back(fake: FakeVercel,
                                                          make_store: Any) -> None:
    fake.add_env("DATABASE_URL", OLD)
    fake.tamper = lambda value: "postgresql://app:x@elsewhere/shop" if value == NEW else value
    with pytest.raises(ProviderError) as caught:
        make_store().write(SecretStr(NEW))
    assert "differs from the value written; the previous value was put back" in str(caught.value)
    assert fake.env_value("DATABASE_URL") == OLD
    assert "new-pass-2" not in str(caught.value) and "old-pass-1" not in str(caught.value)


def test_a_failed_patch_after_retries_puts_the_old_value_back(
        fake: FakeVercel, make_store: Any) -> None:
    fake.add_env("DATABASE_URL", OLD)
    fake.fail("PATCH", "/env/", 502, times=3)  # max_retries=2: the write gives up
    with pytest.raises(ProviderError, match="previous value was put back"):
        make_store(max_retries=2).write(SecretStr(NEW))
    assert fake.env_value("DATABASE_URL") == OLD


def test_vercel_error_messages_are_scrubbed_of_values(fake: FakeVercel,
                                                      make_store: Any) -> None:
    fake.add_env("DATABASE_URL", OLD)
    fake.fail("PATCH", "/env/", 400, times=2, body={"error": {
        "code": "bad_request", "message": f"Invalid value {NEW} for DATABASE_URL"}})
    with pytest.raises(ProviderError) as caught:
        make_store().write(SecretStr(NEW))
    assert NEW not in str(caught.value) and "new-pass-2" not in str(caught.value)
    assert "Invalid value *** for DATABASE_URL" in str(caught.value)


def test_a_sensitive_write_that_does_not_advance_updated_at_fails_and_puts_the_old_back(
        fake: FakeVercel, make_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.add_env("DATABASE_URL", OLD, type="sensitive")
    monkeypatch.setenv("APP_DATABASE_URL", OLD)
    fake.freeze_updated_at = True
    with pytest.raises(ProviderError, match="updatedAt did not advance.*previous value was put "
                                            "back"):
        make_store(current_value_env="APP_DATABASE_URL").write(SecretStr(NEW))
    assert fake.env_value("DATABASE_URL") == OLD and fake.envs[0]["type"] == "sensitive"


def test_a_backup_without_a_value_cannot_be_restored_and_says_so(
        fake: FakeVercel, make_store: Any) -> None:
    # Written by an earlier restorekit, which could not know a sensitive value.
    env_id = fake.add_env("DATABASE_URL", NEW, type="sensitive")
    store = make_store()
    backup = store._save_backup(store._cipher(), {
        "existed": True, "env_id": env_id, "value": None, "type": "sensitive",
        "target": ["production"], "updated_at": 1})
    with pytest.raises(ProviderError) as caught:
        store.restore(Revision(store="vercel", location=store.location, ref=str(backup)))
    assert "set it by hand" in str(caught.value) and not caught.value.is_retryable
    assert fake.calls("PATCH") == [] and fake.env_value("DATABASE_URL") == NEW


def test_restore_refuses_foreign_revisions_and_paths(fake: FakeVercel, make_store: Any,
                                                     tmp_path: Path) -> None:
    fake.add_env("DATABASE_URL", OLD)
    store = make_store()
    with pytest.raises(ConfigError, match="cannot be restored into"):
        store.restore(Revision(store="envfile", location=store.describe(), ref="/x"))
    for ref in ("/etc/passwd", str(tmp_path / "state" / "vercel-env" / "other.bak")):
        with pytest.raises(ConfigError, match="is not a restorekit backup"):
            store.restore(Revision(store="vercel", location=store.describe(), ref=ref))
    assert fake.calls("PATCH") == []


def test_a_dedicated_backup_key_is_used_and_required_before_writing(
        fake: FakeVercel, make_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.fernet import Fernet

    fake.add_env("DATABASE_URL", OLD)
    store = make_store(backup_key_env="RESTOREKIT_BACKUP_KEY")
    monkeypatch.delenv("RESTOREKIT_BACKUP_KEY", raising=False)
    with pytest.raises(ConfigError, match="RESTOREKIT_BACKUP_KEY .* is not set"):
        store.write(SecretStr(NEW))
    assert fake.calls("PATCH") == []  # nothing changed

    key = Fernet.generate_key()
    monkeypatch.setenv("RESTOREKIT_BACKUP_KEY", key.decode())
    revision = store.write(SecretStr(NEW))
    record = json.loads(Fernet(key).decrypt(Path(revision.ref or "").read_bytes()))
    assert record["value"] == OLD and record["env_id"] == fake.envs[0]["id"]
    monkeypatch.setenv("VERCEL_TOKEN", fake.token)  # the token plays no part in this key
    store.restore(revision)
    assert fake.env_value("DATABASE_URL") == OLD


def test_a_backup_made_with_another_token_cannot_be_decrypted(
        fake: FakeVercel, make_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.add_env("DATABASE_URL", OLD)
    store = make_store()
    revision = store.write(SecretStr(NEW))
    fake.token = "rotated-token-7b3e"
    monkeypatch.setenv("VERCEL_TOKEN", fake.token)
    with pytest.raises(ConfigError, match="cannot be decrypted.*token changed"):
        store.restore(revision)


# -- store and app together: the runbook's swap -> redeploy -> rollback ------------------------


def test_swap_redeploy_and_roll_back_through_the_backed_deployments(
        fake: FakeVercel, make_app: Any, make_store: Any) -> None:
    fake.add_env("DATABASE_URL", OLD)
    maintenance = fake.add_deployment()
    fake.add_deployment()
    served: list[str] = []  # what a backed app would connect to after each switch
    fake.on_production.append(lambda dep, env: served.append(env.get("DATABASE_URL", "")))
    app, store = make_app(maintenance_deployment_id=maintenance), make_store()

    stopped = app.stop(reason="INC-7")
    revision = store.write(SecretStr(NEW))
    app.redeploy(reason="INC-7: restored")
    assert fake.production_env()["DATABASE_URL"] == NEW

    # Verification failed: the rollback hook restores the env and redeploys (a new build).
    store.restore(revision)
    app.redeploy(reason="rollback")
    assert fake.production_env()["DATABASE_URL"] == OLD
    # An instant rollback to the stopped-from deployment also serves the old env (§5.5).
    app.resume(stopped)
    assert fake.production == stopped.deployment
    assert served == [OLD, NEW, OLD, OLD]


def test_backed_by_makes_a_local_app_serve_what_production_serves(
        fake: FakeVercel, make_app: Any, make_store: Any, tmp_path: Path) -> None:
    env_file, restarts = tmp_path / "app.env", []
    fake.on_production.append(backed_by(env_file, lambda: restarts.append(env_file.read_text())))
    fake.add_env("DATABASE_URL", OLD)
    fake.add_deployment()
    make_store().write(SecretStr(NEW))
    assert restarts == [f"DATABASE_URL={OLD}\n"]  # the old build still serves the old env
    make_app().redeploy(reason="x")
    assert restarts[-1] == f"DATABASE_URL={NEW}\n"

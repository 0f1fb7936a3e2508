"""SupabaseProvider against a strict fake Management API whose project is a real local cluster.

The fake (tests/fakes/supabase_server.py) checks method, path, token and body shapes from
provider-apis.md §4; restores are real point-in-time restores that replace the production
cluster in place on the same port, so "the data is back" is asserted through the unchanged DSN.

The project's status moves on the fake's clock. The tests about statuses and waiting share one
:class:`FakeTime` between the fake and the provider, and mostly use a fake without a database
(StaticBackend), so an hour of polling takes milliseconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from restorekit.config import Settings, TargetConfig
from restorekit.errors import (
    CapabilityNotSupported,
    ConfigError,
    OperationFailed,
    OperationTimedOut,
    ProviderError,
    RestoreNotStarted,
    RestorePointError,
    SafetyError,
)
from restorekit.models import RestoredDatabase, RestorePoint
from restorekit.providers._http import HttpPlumbing
from restorekit.providers.base import Capability, provider_class
from restorekit.providers.supabase import STATUS_RULES, SupabaseProvider

if TYPE_CHECKING:
    from fakes.supabase_server import FakeSupabase, StaticBackend, SupabaseWorld

# The supabase_world fixture. Imported as a plugin, not by name: a plain import would load the
# module before pytest can rewrite its asserts (and ruff would see each use as a redefinition).

REF = "abcdefghijklmnopqrst"


@pytest.fixture(autouse=True)
def clean_fake(supabase_world: SupabaseWorld):
    supabase_world.fake.reset()
    yield
    supabase_world.fake.reset()


class FakeTime:
    """An injected clock: sleep() records the wait and moves the clock on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def make_provider(world: SupabaseWorld, **options) -> SupabaseProvider:
    settings = {"project_ref": world.project_ref, "token": world.fake.token,
                "base_url": world.fake.url, "poll_interval": 0.2, "timeout": 300,
                "token_env": world.token_env}
    return SupabaseProvider(**{**settings, **options})


def raw(world: SupabaseWorld, method: str, path: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {world.fake.token}"}
    return httpx.request(method, world.fake.url + path, headers=headers, **kwargs)


def epoch(conn: psycopg.Connection) -> float:
    return float(conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])


# -- configuration --------------------------------------------------------------------------------


def test_from_config_builds_the_provider_from_restorekit_toml(supabase_world) -> None:
    provider = supabase_world.runtime().provider
    assert isinstance(provider, SupabaseProvider)
    assert provider_class("supabase") is SupabaseProvider
    assert (provider.project_ref, provider.base_url) == (REF, supabase_world.fake.url)
    assert (provider.poll_interval, provider.timeout) == (0.2, 600)
    assert (provider.start_timeout, provider.busy_timeout) == (600, 600)  # the defaults
    assert supabase_world.fake.token not in repr(provider)


def _target(**supabase) -> TargetConfig:
    return TargetConfig(name="production", provider="supabase",
                        dsn="host=127.0.0.1 user=postgres dbname=app", supabase=supabase)


@pytest.mark.parametrize(("options", "expected"), [
    ({"project_ref": "ABCDEFGHIJKLMNOPQRST", "token_env": "T"}, "20 lower-case letters"),
    ({"project_ref": "abc", "token_env": "T"}, "20 lower-case letters"),
    ({"project_ref": REF}, "token_env"),
    ({"project_ref": REF, "token_env": "T", "region": "x"}, "region"),
    ({"project_ref": REF, "token_env": "sbp_0123 4567"}, "NAME of an environment variable"),
    ({"project_ref": REF, "token_env": "T", "poll_interval_seconds": 0}, "poll_interval"),
    ({"project_ref": REF, "token_env": "T", "start_timeout_seconds": 0}, "start_timeout"),
    ({"project_ref": REF, "token_env": "RESTOREKIT_TEST_UNSET_TOKEN"},
     "RESTOREKIT_TEST_UNSET_TOKEN (token_env) is not set"),
])
def test_from_config_validates_the_supabase_section(options, expected, monkeypatch) -> None:
    monkeypatch.setenv("T", "sbp_x")
    monkeypatch.delenv("RESTOREKIT_TEST_UNSET_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="targets.production.supabase") as info:
        SupabaseProvider.from_config(_target(**options), Settings())
    assert expected in str(info.value)


# -- request shapes -------------------------------------------------------------------------------


def test_reads_use_the_documented_paths_and_bearer_token(supabase_world) -> None:
    fake = supabase_world.fake
    provider = make_provider(supabase_world)
    provider.restore_window()
    backups = provider.list_backups()
    assert provider.project_status() == "ACTIVE_HEALTHY"
    assert [(r.method, r.path) for r in fake.requests] == [
        ("GET", f"/v1/projects/{REF}/database/backups"),
        ("GET", f"/v1/projects/{REF}/database/backups"),
        ("GET", f"/v1/projects/{REF}"),
    ]
    assert {r.headers["authorization"] for r in fake.requests} == {f"Bearer {fake.token}"}
    assert all(r.status == 200 for r in fake.requests)
    # integer ids in the API, strings in BackupInfo
    ids = [item["id"] for item in raw(supabase_world, "GET",
                                      f"/v1/projects/{REF}/database/backups").json()["backups"]]
    assert all(isinstance(i, int) for i in ids)
    assert [b.backup_id for b in backups] == [str(i) for i in ids]


def test_restore_window_comes_from_physical_backup_data(supabase_world) -> None:
    body = raw(supabase_world, "GET", f"/v1/projects/{REF}/database/backups").json()
    physical = body["physical_backup_data"]
    earliest = physical["earliest_physical_backup_date_unix"]
    latest = physical["latest_physical_backup_date_unix"]
    assert isinstance(earliest, int) and isinstance(latest, int) and body["pitr_enabled"]
    window = make_provider(supabase_world).restore_window()
    assert window.earliest == datetime.fromtimestamp(earliest, UTC)
    assert window.latest == datetime.fromtimestamp(latest, UTC)
    assert window.earliest.tzinfo is not None and window.latest.tzinfo is not None
    real = supabase_world.backend.window()  # the installation's own window
    assert real.earliest <= window.earliest <= window.latest <= real.latest


def test_backups_keep_only_completed_ones_oldest_first() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={
            "region": "us-east-1", "walg_enabled": True, "pitr_enabled": False,
            "backups": [
                {"id": 125, "is_physical_backup": False, "status": "COMPLETED",
                 "inserted_at": "2026-01-03T00:00:00Z"},
                {"id": 124, "is_physical_backup": False, "status": "FAILED",
                 "inserted_at": "2026-01-02T12:00:00Z"},
                {"id": 123, "is_physical_backup": False, "status": "COMPLETED",
                 "inserted_at": "2026-01-01T00:00:00Z"},
                {"id": 126, "is_physical_backup": False, "status": "PENDING",
                 "inserted_at": "2026-01-04T00:00:00Z"},
            ],
            "physical_backup_data": {}})

    provider = SupabaseProvider(project_ref=REF, token="sbp_t",
                                http=HttpPlumbing(transport=httpx.MockTransport(handler)))
    assert [b.backup_id for b in provider.list_backups()] == ["123", "125"]
    window = provider.restore_window()
    assert (window.earliest, window.latest) == (datetime(2026, 1, 1, tzinfo=UTC),
                                                datetime(2026, 1, 3, tzinfo=UTC))
    assert provider.capabilities == {Capability.IN_PLACE_RESTORE}


def test_a_string_recovery_time_is_refused_by_the_fake_as_by_the_spec(supabase_world) -> None:
    """The docs' curl example sends a string; the spec says integer, and so does the fake."""
    latest = raw(supabase_world, "GET", f"/v1/projects/{REF}/database/backups").json()[
        "physical_backup_data"]["latest_physical_backup_date_unix"]
    response = raw(supabase_world, "POST", f"/v1/projects/{REF}/database/backups/restore-pitr",
                   json={"recovery_time_target_unix": str(latest)})
    assert response.status_code == 400
    assert "integer" in response.json()["message"]
    assert supabase_world.fake.restores == []


# -- retries and errors ---------------------------------------------------------------------------


def test_429_is_retried_after_the_reset_delay(supabase_world) -> None:
    fake = supabase_world.fake
    fake.rate_limit(times=2, reset=7)
    clock = FakeTime()
    window = make_provider(supabase_world, http=HttpPlumbing(sleep=clock.sleep)).restore_window()
    assert window.earliest is not None
    assert clock.sleeps == [7.0, 7.0]
    assert [r.status for r in fake.calls("GET")] == [429, 429, 200]


def test_429_gives_up_after_a_bounded_number_of_attempts(supabase_world) -> None:
    supabase_world.fake.rate_limit(times=10, reset=90)
    clock = FakeTime()
    provider = make_provider(supabase_world, http=HttpPlumbing(sleep=clock.sleep, max_attempts=3))
    with pytest.raises(ProviderError, match="429") as info:
        provider.restore_window()
    assert info.value.is_retryable and info.value.status_code == 429
    assert clock.sleeps == [60.0, 60.0]  # capped at the one-minute window
    assert len(supabase_world.fake.requests) == 3
    # The HTTP layer spent the budget: the task's retry condition does not start it over.
    assert info.value.retry_spent and not task_would_retry(info.value)


def task_would_retry(exc: Exception) -> bool:
    """What the tasks' retry_condition_fn decides for a task run that raised ``exc``."""
    from tasks._runtime import retry_if_transient

    class Failed:
        def result(self) -> None:
            raise exc

    return retry_if_transient(None, None, Failed())


def test_5xx_on_a_read_is_retried(supabase_world) -> None:
    supabase_world.fake.fail(500, times=2, method="GET")
    clock = FakeTime()
    provider = make_provider(supabase_world, http=HttpPlumbing(sleep=clock.sleep))
    assert provider.project_status() == "ACTIVE_HEALTHY"
    assert clock.sleeps == [1.0, 2.0]


def test_5xx_on_a_restore_call_is_not_retried(supabase_world) -> None:
    fake = supabase_world.fake
    fake.fail(500, method="POST")
    clock = FakeTime()
    with pytest.raises(ProviderError, match="may or may not have started") as info:
        make_provider(supabase_world, http=HttpPlumbing(sleep=clock.sleep)).restore_in_place(
            RestorePoint.latest())
    assert not info.value.is_retryable
    assert len(fake.calls("POST")) == 1 and fake.restores == []


def test_network_errors_are_retried_only_where_nothing_can_have_happened_twice() -> None:
    """A failed connect is retried for any call (nothing was sent); a failure after sending is
    retried on reads only: a restore POST that may have started is never sent twice."""
    token = "sbp_network_" + "x" * 20
    seen: list[str] = []
    failures: dict[str, list[Exception]] = {"GET": [], "POST": []}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if failures[request.method]:
            raise failures[request.method].pop(0)
        if request.url.path.endswith("/database/backups"):
            return httpx.Response(200, json={"region": "us-east-1", "pitr_enabled": False,
                                             "walg_enabled": True, "physical_backup_data": {},
                                             "backups": [{"id": 7, "is_physical_backup": False,
                                                          "status": "COMPLETED",
                                                          "inserted_at": "2026-01-01T00:00:00Z"}]})
        return httpx.Response(200, json={"ref": REF, "status": "ACTIVE_HEALTHY"})

    clock = FakeTime()
    provider = SupabaseProvider(
        project_ref=REF, token=token,
        http=HttpPlumbing(sleep=clock.sleep, max_attempts=3,
                          transport=httpx.MockTransport(handler)))
    failures["GET"] = [httpx.ReadError("reset"), httpx.ConnectError("refused")]
    assert provider.project_status() == "ACTIVE_HEALTHY"
    assert seen == ["GET"] * 3 and clock.sleeps == [1.0, 2.0]

    seen.clear()
    failures["POST"] = [httpx.ReadTimeout("no answer")]
    with pytest.raises(ProviderError, match="may or may not have started") as info:
        provider.restore_in_place(RestorePoint.parse("backup:7"))
    assert seen.count("POST") == 1 and not info.value.is_retryable
    assert token not in str(info.value)

    seen.clear()
    failures["GET"] = [httpx.ConnectError("refused")] * 3
    with pytest.raises(ProviderError, match="cannot reach") as info:
        provider.project_status()
    assert seen == ["GET"] * 3 and info.value.is_retryable and token not in str(info.value)
    provider.close()


def test_401_fails_at_once_with_the_servers_message(supabase_world) -> None:
    clock = FakeTime()
    provider = make_provider(supabase_world, token="sbp_not_the_token",
                             http=HttpPlumbing(sleep=clock.sleep))
    with pytest.raises(ProviderError) as info:
        provider.restore_window()
    message = str(info.value)
    assert "401" in message and "Unauthorized: invalid or missing access token" in message
    assert "$RESTOREKIT_TEST_SUPABASE_TOKEN" in message and "sbp_not_the_token" not in message
    assert not info.value.is_retryable
    assert clock.sleeps == [] and len(supabase_world.fake.requests) == 1


def test_403_names_the_missing_permission(supabase_world) -> None:
    supabase_world.fake.fail(403, message="Missing permission: backups_read")
    with pytest.raises(ProviderError, match="Missing permission: backups_read.*database:read"):
        make_provider(supabase_world).restore_window()


# -- what is checked before any restore call ------------------------------------------------------


def _assert_no_post(world: SupabaseWorld) -> None:
    assert world.fake.calls("POST") == [] and world.fake.restores == []


def test_a_point_outside_the_window_is_refused_before_any_post(supabase_world) -> None:
    provider = make_provider(supabase_world)
    window = provider.restore_window()
    for when in (window.earliest - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1)):
        with pytest.raises(RestorePointError) as info:
            provider.restore_in_place(RestorePoint.at(when))
        assert str(window) in str(info.value) and info.value.window == window
    _assert_no_post(supabase_world)


def test_targets_supabase_cannot_restore_to_are_refused(supabase_world) -> None:
    provider = make_provider(supabase_world)
    with pytest.raises(CapabilityNotSupported, match="self-hosted only"):
        provider.restore_in_place(RestorePoint.parse("lsn:0/3000060"))
    with pytest.raises(RestorePointError, match="no completed backup '999999'"):
        provider.restore_in_place(RestorePoint.parse("backup:999999"))
    _assert_no_post(supabase_world)


def test_without_pitr_only_backups_can_be_restored(supabase_world) -> None:
    fake = supabase_world.fake
    fake.pitr_enabled = False
    provider = make_provider(supabase_world)
    assert provider.capabilities == {Capability.IN_PLACE_RESTORE}
    backups = provider.list_backups()
    window = provider.restore_window()
    assert (window.earliest, window.latest) == (backups[0].stop_time, backups[-1].stop_time)
    with pytest.raises(RestorePointError) as info:
        provider.restore_in_place(RestorePoint.at(window.latest))
    assert "PITR" in str(info.value) and f"backup:{backups[0].backup_id}" in str(info.value)
    _assert_no_post(supabase_world)


def test_restore_to_a_new_target_is_not_offered(supabase_world) -> None:
    provider = make_provider(supabase_world)
    assert Capability.NEW_TARGET_RESTORE not in SupabaseProvider.capabilities
    assert provider.capabilities == {Capability.IN_PLACE_RESTORE, Capability.POINT_IN_TIME}
    with pytest.raises(CapabilityNotSupported) as info:
        provider.restore(RestorePoint.latest(), name="copy")
    assert "Restore to a New Project" in str(info.value) and "dashboard" in str(info.value)
    assert "in place" in str(info.value)
    assert provider.find_restored("copy") is None and provider.list_scratch() == []
    stray = RestoredDatabase(provider="supabase", handle=REF, dsn=SecretStr(""))
    with pytest.raises(SafetyError):
        provider.discard(stray)
    with pytest.raises(CapabilityNotSupported):
        provider.adopt(stray)
    with pytest.raises(CapabilityNotSupported, match="on demand"):
        provider.create_backup("before")
    _assert_no_post(supabase_world)


# -- the project's status: before and during a restore ------------------------------------------


class Project:
    """A fake project without a database, on a FakeTime shared with its provider."""

    def __init__(self, fake: FakeSupabase, backend: StaticBackend, time: FakeTime) -> None:
        self.fake, self.backend, self.time = fake, backend, time
        self.phases: list[str] = []

    def provider(self, **options) -> SupabaseProvider:
        settings = {"project_ref": self.fake.project_ref, "token": self.fake.token,
                    "base_url": self.fake.url, "poll_interval": 5, "timeout": 3600,
                    "start_timeout": 300, "busy_timeout": 120,
                    "http": HttpPlumbing(sleep=self.time.sleep, clock=self.time.clock)}
        return SupabaseProvider(**{**settings, **options})

    def restore(self, point: RestorePoint | None = None, **options) -> None:
        """restore_in_place to an hour ago (or ``point``), recording the progress phases."""
        provider = self.provider(**options)
        try:
            provider.restore_in_place(
                point or RestorePoint.at(datetime.now(UTC) - timedelta(hours=1)),
                progress=lambda phase, done, total: self.phases.append(phase))
        finally:
            provider.close()
            self.fake.wait_idle()

    def statuses(self) -> list[str]:
        """The distinct statuses polled after the restore call, in order."""
        seen: list[str] = []
        for phase in self.phases:
            status = phase.removeprefix("supabase ")
            if "(" not in status and (not seen or seen[-1] != status):
                seen.append(status)
        return seen

    def posts(self) -> int:
        return len(self.fake.calls("POST"))


@pytest.fixture
def project() -> Iterator[Project]:
    from fakes.supabase_server import FakeSupabase, StaticBackend

    now = datetime.now(UTC)
    backend = StaticBackend(earliest=now - timedelta(days=1), latest=now - timedelta(minutes=2),
                            backup_times=[now - timedelta(days=1), now - timedelta(hours=12)])
    clock = FakeTime()
    with FakeSupabase(backend, clock=clock.clock) as fake:
        # Steps longer than the 5 s poll interval, so every one of them is seen.
        fake.accept_lag = 2
        fake.restore_timeline = [("RESTORING", 30), ("COMING_UP", 10), ("ACTIVE_HEALTHY", None)]
        yield Project(fake, backend, clock)


def test_the_status_table_covers_every_documented_status() -> None:
    from fakes.supabase_server import PROJECT_STATUSES

    assert set(STATUS_RULES) == PROJECT_STATUSES
    refused = {s for s, rule in STATUS_RULES.items() if rule.before == "refuse"}
    assert all(STATUS_RULES[s].advice for s in refused)  # every refusal says what to do


def test_the_fake_moves_on_its_own_clock_not_per_request(project) -> None:
    """Statuses change with the fake's clock only: the same instant gives the same answer to
    every request, and a restore request answers 201 with no body, as documented."""
    fake, ref = project.fake, project.fake.project_ref
    fake.accept_lag = 10
    fake.restore_timeline = [("RESTORING", 60), ("COMING_UP", 20), ("ACTIVE_HEALTHY", None)]
    client = httpx.Client(base_url=fake.url, headers={"Authorization": f"Bearer {fake.token}"})

    def status() -> str:
        return client.get(f"/v1/projects/{ref}").json()["status"]

    latest = client.get(f"/v1/projects/{ref}/database/backups").json()[
        "physical_backup_data"]["latest_physical_backup_date_unix"]
    posted = client.post(f"/v1/projects/{ref}/database/backups/restore-pitr",
                         json={"recovery_time_target_unix": latest})
    assert (posted.status_code, posted.content) == (201, b"")
    assert "content-type" not in posted.headers
    seen, again = [], None
    for at in (0, 5, 10, 30, 69.9, 70, 89, 90, 500):
        project.time.now = at
        seen.append((status(), status()))
        if at == 30:  # a second restore while one runs is refused
            again = client.post(f"/v1/projects/{ref}/database/backups/restore-pitr",
                                json={"recovery_time_target_unix": latest})
    assert seen == [("ACTIVE_HEALTHY",) * 2] * 2 + [("RESTORING",) * 2] * 3 + [
        ("COMING_UP",) * 2] * 2 + [("ACTIVE_HEALTHY",) * 2] * 2
    assert again is not None and again.status_code == 400
    assert "RESTORING" in again.json()["message"] and len(fake.restores) == 1
    client.close()


def test_an_unhealthy_project_is_restored_in_place(project) -> None:
    """The incident case: the database is down, the project ACTIVE_UNHEALTHY."""
    fake = project.fake
    fake.status = "ACTIVE_UNHEALTHY"
    fake.accept_lag = 10
    fake.restore_timeline = [("RESTORING", 60), ("COMING_UP", 20), ("ACTIVE_HEALTHY", None)]
    target = datetime.now(UTC) - timedelta(hours=3)
    project.restore(RestorePoint.at(target))
    assert project.statuses() == ["ACTIVE_UNHEALTHY", "RESTORING", "COMING_UP", "ACTIVE_HEALTHY"]
    (post,) = fake.calls("POST")
    assert post.body == {"recovery_time_target_unix": math.floor(target.timestamp())}
    assert project.backend.restored == [RestorePoint.at(datetime.fromtimestamp(
        math.floor(target.timestamp()), UTC))]
    assert 90 <= project.time.now <= 95 and set(project.time.sleeps) == {5}


def test_the_old_healthy_status_right_after_the_call_is_not_taken_for_done(project) -> None:
    project.fake.accept_lag = 30
    project.fake.restore_timeline = [("RESTORING", 60), ("ACTIVE_HEALTHY", None)]
    project.restore()
    assert project.statuses() == ["ACTIVE_HEALTHY", "RESTORING", "ACTIVE_HEALTHY"]
    assert project.time.now >= 90 and len(project.backend.restored) == 1


def test_going_down_and_coming_up_also_show_a_restore_started(project, caplog) -> None:
    project.fake.restore_timeline = [("GOING_DOWN", 20), ("COMING_UP", 20),
                                     ("ACTIVE_HEALTHY", None)]
    with caplog.at_level("WARNING", logger="restorekit.providers.supabase"):
        project.restore()
    assert project.statuses()[-1] == "ACTIVE_HEALTHY" and project.time.now >= 40
    assert "never showed RESTORING" in caplog.text


@pytest.mark.parametrize("before", ["ACTIVE_HEALTHY", "ACTIVE_UNHEALTHY"])
def test_a_restore_that_never_starts_fails_and_is_never_reported_done(project, before) -> None:
    project.fake.status = before
    project.fake.restore_timeline = []  # fakes.supabase_server.NEVER_STARTS
    with pytest.raises(OperationTimedOut) as info:
        project.restore(start_timeout=300)
    message = str(info.value)
    assert "no sign of it starting within 300s" in message and "NOT done" in message
    assert f"{before} x61" in message  # what was seen: 61 polls, 5 s apart
    assert info.value.code == before and not info.value.is_retryable
    assert project.time.now == 300 and project.posts() == 1
    assert project.fake.token not in message


def test_an_unhealthy_project_that_merely_recovers_was_not_restored(project) -> None:
    """ACTIVE_UNHEALTHY -> ACTIVE_HEALTHY without RESTORING (the project healed on its own, the
    restore never ran) is not a restore."""
    project.fake.status = "ACTIVE_UNHEALTHY"
    project.fake.restore_timeline = [("ACTIVE_HEALTHY", None)]
    with pytest.raises(OperationTimedOut, match="no sign of it starting") as info:
        project.restore(start_timeout=60)
    assert "ACTIVE_UNHEALTHY" in str(info.value) and "ACTIVE_HEALTHY x" in str(info.value)
    assert project.backend.restored == []


def test_restore_failed_fails_fast_and_tells_to_contact_support(project) -> None:
    from fakes.supabase_server import fails

    project.fake.restore_timeline = fails(restoring=30)
    with pytest.raises(OperationFailed, match="RESTORE_FAILED.*Supabase support") as info:
        project.restore()
    assert info.value.code == "RESTORE_FAILED" and not info.value.is_retryable
    assert "RESTORING" in str(info.value)  # what was seen
    assert 30 <= project.time.now <= 35  # at once, not at the one-hour deadline
    assert project.backend.restored == []


@pytest.mark.parametrize("end", ["INACTIVE", "PAUSE_FAILED", "INIT_FAILED", "REMOVED"])
def test_states_a_project_does_not_leave_fail_fast_while_waiting(project, end) -> None:
    project.fake.restore_timeline = [("RESTORING", 20), (end, None)]
    with pytest.raises(OperationFailed) as info:
        project.restore()
    message = str(info.value)
    assert f"is {end} after the restore" in message and "statuses seen:" in message
    assert info.value.code == end and 20 <= project.time.now <= 25


def test_stuck_in_restoring_ends_at_the_deadline(project) -> None:
    from fakes.supabase_server import stuck

    project.fake.restore_timeline = stuck()
    with pytest.raises(OperationTimedOut, match="still RESTORING.*may still be running") as info:
        project.restore(timeout=600)
    assert project.time.now == 600 and project.posts() == 1
    assert "RESTORING x" in str(info.value)


@pytest.mark.parametrize(("status", "says"), [
    ("INACTIVE", ["paused", "un-pause", f"POST /v1/projects/{REF}/restore", "90 days"]),
    ("PAUSE_FAILED", ["Supabase support", "supabase.com/dashboard/support"]),
    ("RESTORE_FAILED", ["Supabase support"]),
    ("INIT_FAILED", ["Supabase support"]),
    ("REMOVED", ["deleted", "snapshot"]),
    ("RESTORING", ["already running", "do not start another"]),
])
def test_states_a_restore_cannot_start_from_are_refused_with_what_to_do(project, status,
                                                                         says) -> None:
    project.fake.status = status
    with pytest.raises(ProviderError) as info:
        project.restore()
    message = str(info.value)
    # Refused before the request: RestoreNotStarted (a ProviderError) lets scenario 1 put the
    # application back, since nothing changed.
    assert type(info.value) is RestoreNotStarted and info.value.code == status
    assert f"is {status}: not starting a restore" in message and "nothing was sent" in message
    assert all(phrase in message for phrase in says), message
    assert not info.value.is_retryable and project.fake.token not in message
    assert project.posts() == 0 and project.time.sleeps == []


@pytest.mark.parametrize("passing", ["COMING_UP", "RESTARTING", "RESIZING", "UPGRADING",
                                     "GOING_DOWN", "UNKNOWN", "PAUSING"])
def test_passing_states_are_waited_out_then_decided(project, passing) -> None:
    project.fake.schedule((passing, 40), ("ACTIVE_UNHEALTHY", None))
    project.restore()
    assert f"supabase {passing} (waiting to restore)" in project.phases
    assert project.statuses()[-1] == "ACTIVE_HEALTHY" and project.posts() == 1
    assert len(project.backend.restored) == 1


def test_a_project_that_settles_into_a_paused_state_is_refused(project) -> None:
    project.fake.schedule(("PAUSING", 30), ("INACTIVE", None))
    with pytest.raises(ProviderError, match="is INACTIVE: not starting.*un-pause"):
        project.restore()
    assert project.posts() == 0 and project.time.now == 30


def test_a_passing_state_that_does_not_settle_gives_up_before_sending(project) -> None:
    project.fake.status = "RESTARTING"
    with pytest.raises(ProviderError, match="did not settle within 120s") as info:
        project.restore(busy_timeout=120)
    assert info.value.is_retryable and info.value.code == "RESTARTING"  # nothing was sent
    assert type(info.value) is RestoreNotStarted and project.posts() == 0
    assert project.time.now == 120


def test_an_unhealthy_project_gets_no_backup_restore(project) -> None:
    """The dashboard offers backup restores only on ACTIVE_HEALTHY projects; PITR it does not
    gate on the status."""
    project.fake.pitr_enabled = False
    project.fake.status = "ACTIVE_UNHEALTHY"
    provider = project.provider()
    backups = provider.list_backups()
    provider.close()
    with pytest.raises(ProviderError, match="backup restore only on an ACTIVE_HEALTHY") as info:
        project.restore(RestorePoint.parse(f"backup:{backups[-1].backup_id}"))
    assert info.value.code == "ACTIVE_UNHEALTHY" and project.posts() == 0


def test_polling_reports_each_status_and_survives_a_5xx(project) -> None:
    fake = project.fake
    fake.restore_timeline = [("RESTORING", 30), ("COMING_UP", 10), ("ACTIVE_HEALTHY", None)]
    fake.fail(503, path=f"/v1/projects/{fake.project_ref}", method="GET", times=1)
    project.restore()
    # the 503 hit the status check before the POST and was retried; then the polls
    assert project.phases[0] == "supabase ACTIVE_HEALTHY" and "supabase RESTORING" in project.phases
    assert project.phases[-1] == "supabase ACTIVE_HEALTHY"
    assert project.time.sleeps[0] == 1.0  # the retry's backoff, then 5 s polls


def test_restore_failed_leaves_the_data_alone(supabase_world) -> None:
    """On a real project: RESTORE_FAILED after a 429 on the restore call (which did not act, so
    it was repeated once); the database is as before."""
    from fakes.supabase_server import fails

    fake = supabase_world.fake
    clock = FakeTime()
    fake.clock = clock.clock
    fake.restore_timeline = fails(restoring=20)
    fake.rate_limit(method="POST", reset=3)
    with psycopg.connect(supabase_world.app_dsn) as conn:
        before = conn.execute("SELECT count(*) FROM users").fetchone()
    provider = make_provider(supabase_world, poll_interval=5,
                             http=HttpPlumbing(sleep=clock.sleep, clock=clock.clock))
    with pytest.raises(OperationFailed, match="RESTORE_FAILED.*Supabase support"):
        provider.restore_in_place(RestorePoint.latest())
    assert [r.status for r in fake.calls("POST")] == [429, 201]
    assert clock.sleeps[0] == 3.0
    with psycopg.connect(supabase_world.app_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == before


# -- real in-place restores -----------------------------------------------------------------------


def test_restore_in_place_brings_the_data_back_as_at_the_point(supabase_world) -> None:
    world = supabase_world
    fake = world.fake
    dsn = world.app_dsn
    live_before = world.runtime().live_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE sb_items (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO sb_items SELECT g, 'before' FROM generate_series(1, 20) g")
        target = math.floor(epoch(conn)) + 1  # a whole second after those commits
        while epoch(conn) < target + 0.3:
            time.sleep(0.05)
        conn.execute("DELETE FROM sb_items WHERE id <= 5")
        conn.execute("INSERT INTO sb_items SELECT g, 'after' FROM generate_series(100, 109) g")
    world.wait_archived()
    provider = world.runtime().provider
    seen: list[str] = []
    provider.restore_in_place(RestorePoint.at(datetime.fromtimestamp(target, UTC)),
                              progress=lambda phase, done, total: seen.append(phase))

    (post,) = fake.calls("POST")
    assert post.path == f"/v1/projects/{REF}/database/backups/restore-pitr"
    assert post.body == {"recovery_time_target_unix": target}
    assert type(post.body["recovery_time_target_unix"]) is int
    assert post.headers["content-type"] == "application/json"
    assert "supabase RESTORING" in seen and seen[-1] == "supabase ACTIVE_HEALTHY"
    assert fake.restores[-1].error is None
    # Through the SAME connection string: deleted rows are back, later rows are gone.
    assert world.app_dsn == dsn and world.runtime().live_dsn() == live_before
    with psycopg.connect(dsn) as conn:
        rows = dict(conn.execute("SELECT id, note FROM sb_items").fetchall())
        assert rows == {i: "before" for i in range(1, 21)}
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    # The replaced data directory is kept, like Supabase's own copy.
    assert world.backend.replaced and Path(world.backend.replaced[-1], "PG_VERSION").exists()
    # Production archives WAL again, so the project can be restored again.
    world.wait_archived()


def test_restore_of_a_backup_by_id_in_place(supabase_world) -> None:
    world = supabase_world
    fake = world.fake
    fake.pitr_enabled = False
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE sb_after_backup (id int)")
    provider = make_provider(world)
    (first, *_) = provider.list_backups()
    provider.restore_in_place(RestorePoint.parse(f"backup:{first.backup_id}"))
    (post,) = fake.calls("POST")
    assert post.path == f"/v1/projects/{REF}/database/backups/restore"
    assert post.body == {"id": int(first.backup_id)}
    with psycopg.connect(world.app_dsn) as conn:
        assert conn.execute("SELECT to_regclass('sb_after_backup')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] > 0

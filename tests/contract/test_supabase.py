"""SupabaseProvider against a strict fake Management API whose project is a real local cluster.

The fake (tests/fakes/supabase_server.py) checks method, path, token and body shapes from
provider-apis.md §4; restores are real point-in-time restores that replace the production
cluster in place on the same port, so "the data is back" is asserted through the unchanged DSN.
"""

from __future__ import annotations

import math
import time
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
    OperationTimedOut,
    ProviderError,
    RestorePointError,
    SafetyError,
)
from restorekit.models import RestoredDatabase, RestorePoint
from restorekit.providers.base import Capability, provider_class
from restorekit.providers.supabase import SupabaseProvider

if TYPE_CHECKING:
    from fakes.supabase_server import SupabaseWorld

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
                                transport=httpx.MockTransport(handler))
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
    window = make_provider(supabase_world, sleep=clock.sleep).restore_window()
    assert window.earliest is not None
    assert clock.sleeps == [7.0, 7.0]
    assert [r.status for r in fake.calls("GET")] == [429, 429, 200]


def test_429_gives_up_after_a_bounded_number_of_attempts(supabase_world) -> None:
    supabase_world.fake.rate_limit(times=10, reset=90)
    clock = FakeTime()
    provider = make_provider(supabase_world, sleep=clock.sleep, max_attempts=3)
    with pytest.raises(ProviderError, match="429") as info:
        provider.restore_window()
    assert info.value.is_retryable and info.value.status_code == 429
    assert clock.sleeps == [60.0, 60.0]  # capped at the one-minute window
    assert len(supabase_world.fake.requests) == 3


def test_5xx_on_a_read_is_retried(supabase_world) -> None:
    supabase_world.fake.fail(500, times=2, method="GET")
    clock = FakeTime()
    assert make_provider(supabase_world, sleep=clock.sleep).project_status() == "ACTIVE_HEALTHY"
    assert clock.sleeps == [1.0, 2.0]


def test_5xx_on_a_restore_call_is_not_retried(supabase_world) -> None:
    fake = supabase_world.fake
    fake.fail(500, method="POST")
    clock = FakeTime()
    with pytest.raises(ProviderError, match="may or may not have started") as info:
        make_provider(supabase_world, sleep=clock.sleep).restore_in_place(RestorePoint.latest())
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
    provider = SupabaseProvider(project_ref=REF, token=token, sleep=clock.sleep, max_attempts=3,
                                transport=httpx.MockTransport(handler))
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
    provider = make_provider(supabase_world, token="sbp_not_the_token", sleep=clock.sleep)
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


def test_a_project_that_is_not_healthy_is_not_restored(supabase_world) -> None:
    supabase_world.fake.status = "RESTORING"
    with pytest.raises(ProviderError, match="is RESTORING, not ACTIVE_HEALTHY"):
        make_provider(supabase_world).restore_in_place(RestorePoint.latest())
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


# -- waiting for the restore ----------------------------------------------------------------------


def test_restore_failed_raises_and_tells_to_contact_support(supabase_world) -> None:
    fake = supabase_world.fake
    fake.fail_restores = True
    fake.restoring_polls = 2
    fake.rate_limit(method="POST", reset=3)  # a 429 on the restore call did not act: retried
    clock = FakeTime()
    with psycopg.connect(supabase_world.app_dsn) as conn:
        before = conn.execute("SELECT count(*) FROM users").fetchone()
    with pytest.raises(ProviderError, match="RESTORE_FAILED.*Supabase support") as info:
        make_provider(supabase_world, sleep=clock.sleep).restore_in_place(RestorePoint.latest())
    assert not info.value.is_retryable
    assert [r.status for r in fake.calls("POST")] == [429, 201]
    assert clock.sleeps[0] == 3.0
    with psycopg.connect(supabase_world.app_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == before


def test_the_deadline_raises_operation_timed_out(supabase_world) -> None:
    supabase_world.fake.hold_restores = True
    clock = FakeTime()
    provider = make_provider(supabase_world, timeout=10, poll_interval=1, sleep=clock.sleep,
                             clock=clock.clock)
    with pytest.raises(OperationTimedOut, match="still RESTORING.*may still be running"):
        provider.restore_in_place(RestorePoint.latest())
    assert clock.now == 10 and len(supabase_world.fake.calls("POST")) == 1


def test_polling_reports_each_status_and_survives_a_5xx() -> None:
    from fakes.supabase_server import FakeSupabase, StaticBackend

    now = datetime.now(UTC)
    backend = StaticBackend(earliest=now - timedelta(days=1), latest=now - timedelta(minutes=2))
    with FakeSupabase(backend) as fake:
        fake.restoring_polls = 3
        clock = FakeTime()
        provider = SupabaseProvider(project_ref=fake.project_ref, token=fake.token,
                                    base_url=fake.url, poll_interval=5, sleep=clock.sleep,
                                    clock=clock.clock)
        seen: list[str] = []
        fake.fail(503, path=f"/v1/projects/{fake.project_ref}", method="GET", times=1)
        target = now - timedelta(hours=3)
        provider.restore_in_place(RestorePoint.at(target),
                                  progress=lambda phase, done, total: seen.append(phase))
        fake.wait_idle()
    # the 503 hit the status check before the POST and was retried; then the polls
    assert seen[:3] == ["supabase RESTORING"] * 3 and seen[-1] == "supabase ACTIVE_HEALTHY"
    assert backend.restored == [RestorePoint.at(datetime.fromtimestamp(
        math.floor(target.timestamp()), UTC))]


def test_a_status_that_never_shows_restoring_settles_before_counting() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.url.path.endswith("/database/backups"):
            return httpx.Response(200, json={
                "region": "r", "walg_enabled": True, "pitr_enabled": True, "backups": [],
                "physical_backup_data": {"earliest_physical_backup_date_unix": 1767225600,
                                         "latest_physical_backup_date_unix": 1767830400}})
        if request.method == "POST":
            return httpx.Response(201)
        return httpx.Response(200, json={"ref": REF, "status": "ACTIVE_HEALTHY"})

    clock = FakeTime()
    provider = SupabaseProvider(project_ref=REF, token="sbp_t", poll_interval=10,
                                settle_seconds=30, sleep=clock.sleep, clock=clock.clock,
                                transport=httpx.MockTransport(handler))
    provider.restore_in_place(RestorePoint.at(datetime.fromtimestamp(1767500000, UTC)))
    assert clock.now == 30  # kept polling until ACTIVE_HEALTHY had lasted settle_seconds


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
    fake.restoring_polls = 2
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

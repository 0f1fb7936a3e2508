"""NeonProvider against the fake Neon API (tests/fakes/neon_server.py), which checks every request
against provider-apis.md §3 and does the restores for real on local clusters.

The tests share one world per module (for speed) but not its data: each test that checks what a
branch holds writes its own marker table (``marker()``), each starts with a clean request log
(``world``), and what may be left over from other tests (scratch branches, operations) is
compared against what was there when the test began. So any test passes alone or in any order.
The in-place restore has a world of its own (``own_world``): the fake swaps production's
database (DROP DATABASE app, then RENAME), and a branch of the shared world made after it
replays that WAL, during which restorekit's recovery poll (run_recovery, connected to "app" in
hot standby) can meet 'database "app" does not exist' and fail the restore: 2 of 10 reversed
runs did so while the in-place restore shared the world.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from fakes.neon_server import (  # noqa: F401 - fixture
    API_KEY_ENV,
    NeonWorld,
    neon_world,
    neon_world_in,
)
from fixtures.clock import FakeClock
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from restorekit.errors import (
    CapabilityNotSupported,
    ConfigError,
    OperationTimedOut,
    ProviderError,
    RestorePointError,
    SafetyError,
)
from restorekit.models import PointKind, RestoredDatabase, RestorePoint
from restorekit.providers._http import HttpPlumbing
from restorekit.providers.base import Capability, DatabaseProvider, provider_from_config
from restorekit.providers.neon import BACKUP_PREFIX, PRESERVE_PREFIX, NeonProvider, rfc3339


def task_would_retry(exc: Exception) -> bool:
    """What the tasks' retry_condition_fn decides for a task run that raised ``exc``: an error
    the HTTP layer already retried (retry_spent) is not retried again by the task."""
    from tasks._runtime import retry_if_transient

    class Failed:
        def result(self) -> None:
            raise exc

    return retry_if_transient(None, None, Failed())


class Sleeps:
    """An injectable sleep: records every wait, really sleeps at most ``cap`` seconds."""

    def __init__(self, cap: float = 0.02) -> None:
        self.calls: list[float] = []
        self.cap = cap

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        time.sleep(min(seconds, self.cap))


def checked(world: NeonWorld) -> Iterator[NeonWorld]:
    """``world`` with a clean request log; no request may break the spec."""
    fake = world.fake
    fake.reset_controls()
    fake.requests.clear()
    fake.violations.clear()
    yield world
    fake.reset_controls()
    violations, fake.violations[:] = list(fake.violations), []
    assert violations == []


@pytest.fixture
def world(neon_world: NeonWorld) -> Iterator[NeonWorld]:  # noqa: F811
    """The module's world, checked (see :func:`checked`)."""
    yield from checked(neon_world)


@pytest.fixture
def own_world(pg_base_dir: Path) -> Iterator[NeonWorld]:
    """A world of the test's own (no application; about 1.5 s to build and remove), checked."""
    with neon_world_in(pg_base_dir, "neon-own", start_app=False) as world:
        yield from checked(world)


def marked_around_a_point(world: NeonWorld, table: str, before: str, after: str) -> datetime:
    """A time with ``table`` holding row 1 (``before``) and, 0.2 s later, row 2 (``after``)."""
    marker(world, table, before)
    time.sleep(0.2)
    point = world.clock()
    time.sleep(0.2)
    write(world, f"INSERT INTO {table} VALUES (2, '{after}')")
    return point


def paths(world: NeonWorld) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in world.fake.requests]


def pid(world: NeonWorld) -> str:
    return world.fake.project_id


def bid(world: NeonWorld) -> str:
    return world.fake.production_branch_id


def write(world: NeonWorld, *statements: str) -> None:
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def marker(world: NeonWorld, table: str, *rows: str) -> None:
    """Create the test's own marker table ``table`` on production, holding ``rows`` (ids 1..)."""
    write(world, f"CREATE TABLE {table} (id int PRIMARY KEY, note text)",
          *(f"INSERT INTO {table} VALUES ({i}, '{note}')" for i, note in enumerate(rows, 1)))


def notes(dsn: str, table: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(f"SELECT note FROM {table} ORDER BY id")]


def scratch(provider: NeonProvider) -> list[str]:
    """The handles of the scratch branches the provider lists, sorted."""
    return sorted(s.handle for s in provider.list_scratch())


def accepting(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def assert_well_formed(world: NeonWorld) -> None:
    """What every request must carry (§3: Bearer auth, JSON both ways)."""
    for r in world.fake.requests:
        assert r.headers["authorization"] == f"Bearer {world.api_key}", r
        assert r.headers["accept"] == "application/json", r
        if r.body is not None:
            assert r.headers["content-type"].startswith("application/json"), r


# -- configuration ------------------------------------------------------------------------------


def test_from_config_builds_the_provider_and_never_holds_the_key_in_config(
    world: NeonWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = world.runtime()
    provider = provider_from_config(rt.config, rt.settings)
    assert isinstance(provider, NeonProvider) and isinstance(provider, DatabaseProvider)
    assert provider.kind == "neon"
    assert provider.capabilities == {
        Capability.NEW_TARGET_RESTORE, Capability.IN_PLACE_RESTORE, Capability.POINT_IN_TIME,
        Capability.LSN_TARGET, Capability.NAMED_BACKUPS, Capability.FIND_POINT}
    assert world.api_key not in repr(provider)

    neon = dict(rt.config.neon or {})
    for broken, problem in [
        ({**neon, "api_key": "secret"}, "api_key"),                 # extra="forbid"
        ({k: v for k, v in neon.items() if k != "project_id"}, "project_id"),
        ({**neon, "api_key_env": "napi_0123456789abcdef-xyz"}, "NAME of an environment"),
        ({**neon, "branch_id": "main"}, "branch_id"),
        ({**neon, "base_url": "console.neon.tech"}, "base_url"),
    ]:
        with pytest.raises(ConfigError, match=problem):
            NeonProvider.from_config(rt.config.model_copy(update={"neon": broken}), rt.settings)
    monkeypatch.delenv(API_KEY_ENV)
    with pytest.raises(ConfigError, match=API_KEY_ENV):
        NeonProvider.from_config(rt.config, rt.settings)
    assert world.fake.requests == []  # construction never calls the API


# -- reads, retries and errors -------------------------------------------------------------------


def test_restore_window_is_the_history_retention_but_not_before_the_branch_existed(
    world: NeonWorld,
) -> None:
    provider = world.provider()
    window = provider.restore_window()

    assert paths(world) == [("GET", f"/projects/{pid(world)}"),
                            ("GET", f"/projects/{pid(world)}/branches/{bid(world)}")]
    assert_well_formed(world)
    created = world.fake.branches[bid(world)].data["created_at"]
    assert window.earliest is not None and window.latest is not None
    assert window.earliest.isoformat().replace("+00:00", "Z") == created  # retention is 1 day
    assert abs(time.time() - window.latest.timestamp()) < 5  # the head: Neon keeps all WAL

    world.fake.project["history_retention_seconds"] = 2
    try:
        short = provider.restore_window()
        assert short.earliest is not None and short.latest is not None
        assert short.earliest == max(short.latest - timedelta(seconds=2), window.earliest)
    finally:
        world.fake.project["history_retention_seconds"] = 86400


def test_429_with_retry_after_is_waited_out_then_retried(world: NeonWorld) -> None:
    unlimited = world.provider().list_scratch()  # what the listing says without a 429
    world.fake.requests.clear()
    world.fake.inject(429, method="GET", path=r"/branches$", retry_after=3)
    sleeps = Sleeps()
    assert world.provider(http=HttpPlumbing(sleep=sleeps)).list_scratch() == unlimited
    assert sleeps.calls == [3.0]
    listed = world.fake.calls("GET", rf"/projects/{pid(world)}/branches")
    assert [r.status for r in listed] == [429, 200]


def test_429_on_a_post_is_retried_too_because_the_rate_limiter_ran_nothing(
    world: NeonWorld,
) -> None:
    world.fake.inject(429, method="POST", path=r"/branches$", retry_after="1")
    sleeps = Sleeps()
    backup = world.provider(http=HttpPlumbing(sleep=sleeps)).create_backup("rate limited")
    posts = world.fake.calls("POST", rf"/projects/{pid(world)}/branches")
    assert [r.status for r in posts] == [429, 201]
    assert sleeps.calls[0] == 1.0
    assert backup.label == "rate limited"


def test_503_and_423_are_retried_with_backoff_even_for_a_post(world: NeonWorld) -> None:
    world.fake.inject(503, method="POST", path=r"/branches$")
    world.fake.inject(423, method="POST", path=r"/branches$")
    sleeps = Sleeps()
    provider = world.provider(http=HttpPlumbing(sleep=sleeps, backoff_seconds=0.5))
    backup = provider.create_backup("after 503")
    posts = world.fake.calls("POST", rf"/projects/{pid(world)}/branches")
    assert [r.status for r in posts] == [503, 423, 201]
    assert sleeps.calls[:2] == [0.5, 1.0]  # exponential, no Retry-After given
    names = [b["name"] for b in (x.data for x in world.fake.branches.values())]
    assert names.count(backup.extra["name"]) == 1  # created once


def test_a_500_on_a_post_is_not_repeated_blindly(world: NeonWorld) -> None:
    world.fake.inject(500, method="POST", path=r"/branches$", message="database is on fire")
    sleeps = Sleeps()
    with pytest.raises(ProviderError, match="database is on fire") as err:
        world.provider(http=HttpPlumbing(sleep=sleeps)).create_backup("x")
    assert err.value.status_code == 500 and err.value.is_retryable  # the task may retry
    assert not err.value.retry_spent and task_would_retry(err.value)
    assert len(world.fake.calls("POST", rf"/projects/{pid(world)}/branches")) == 1
    assert sleeps.calls == []


def test_a_500_on_a_get_is_retried(world: NeonWorld) -> None:
    world.fake.inject(500, method="GET", path=r"^/projects/[^/]+$", times=2)
    sleeps = Sleeps()
    world.provider(http=HttpPlumbing(sleep=sleeps)).restore_window()
    assert len(sleeps.calls) == 2


def test_401_fails_at_once_with_the_servers_message_and_request_id(
    world: NeonWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_KEY_ENV, "napi_wrong")
    sleeps = Sleeps()
    with pytest.raises(ProviderError) as err:
        world.provider(http=HttpPlumbing(sleep=sleeps)).restore_window()
    (request,) = world.fake.requests
    assert err.value.status_code == 401 and not err.value.is_retryable
    assert not task_would_retry(err.value)
    assert "authentication required" in str(err.value)
    assert request.headers["x-request-id"] in str(err.value)
    assert err.value.request_id == request.headers["x-request-id"]  # type: ignore[attr-defined]
    assert "napi_wrong" not in str(err.value)
    assert sleeps.calls == []
    world.fake.violations.clear()  # the wrong key was the point


def test_retry_after_beyond_the_bound_is_not_waited_here(world: NeonWorld) -> None:
    world.fake.inject(429, path=r"/branches$", retry_after=600)
    sleeps = Sleeps()
    with pytest.raises(ProviderError) as err:
        world.provider(http=HttpPlumbing(sleep=sleeps)).list_backups()
    assert err.value.is_retryable and err.value.retry_after == 600
    assert sleeps.calls == []
    # Left to no one: the task's own delays (seconds) would not honour 600 s either.
    assert err.value.retry_spent and not task_would_retry(err.value)


def test_a_get_that_keeps_failing_is_retried_by_one_layer_only(world: NeonWorld) -> None:
    world.fake.inject(503, method="GET", path=r"^/projects/[^/]+$", times=10)
    sleeps = Sleeps()
    with pytest.raises(ProviderError) as err:
        world.provider(
            http=HttpPlumbing(sleep=sleeps, max_attempts=3, backoff_seconds=0.5)).restore_window()
    assert len(world.fake.calls("GET", rf"^/projects/{pid(world)}$")) == 3
    assert sleeps.calls == [0.5, 1.0]
    assert err.value.status_code == 503 and err.value.is_retryable
    assert err.value.retry_spent and not task_would_retry(err.value)  # 3 attempts, not 3 x 3


def test_network_errors_are_retried_only_where_nothing_can_have_happened_twice() -> None:
    """A failed connect is retried for any method (nothing was sent); a later failure only for
    a GET. What gives up is a retryable ProviderError naming the request id, never the key."""
    key = "napi_network_" + "x" * 20
    seen: list[tuple[str, str]] = []
    failures: dict[str, list[Exception]] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.headers["X-Request-ID"]))
        pending = failures.get(request.method) or []
        if pending:
            raise pending.pop(0)
        body = {"branch": {"id": "br-x-1", "name": "restorekit-backup-x", "created_at":
                           "2026-01-01T00:00:00Z"}, "operations": []}
        return httpx.Response(201 if request.method == "POST" else 200, json=body)

    sleeps = Sleeps(cap=0)
    provider = NeonProvider(project_id="p-1", branch_id="br-prod-1", api_key=SecretStr(key),
                            database="app", role="postgres",
                            http=HttpPlumbing(sleep=sleeps, max_attempts=3,
                                              transport=httpx.MockTransport(handler)))

    failures["POST"] = [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow")]
    provider.create_backup("x")  # connect failures: the POST never left, so it is sent again
    assert [m for m, _ in seen].count("POST") == 3 and sleeps.calls[:2] == [1.0, 2.0]

    seen.clear()
    failures["POST"] = [httpx.ReadTimeout("no answer")]
    with pytest.raises(ProviderError, match="ReadTimeout") as err:
        provider.create_backup("y")  # sent: Neon may have acted, so not here
    assert [m for m, _ in seen] == ["POST"]
    assert err.value.is_retryable  # the task-level retry finds the branch by name first
    assert not err.value.retry_spent and task_would_retry(err.value)
    assert err.value.request_id == seen[0][1]  # type: ignore[attr-defined]
    assert key not in str(err.value)

    seen.clear()
    failures["GET"] = [httpx.ReadError("reset")] * 3
    with pytest.raises(ProviderError, match="ReadError") as err:
        provider.list_backups()
    assert [m for m, _ in seen] == ["GET"] * 3  # max_attempts
    assert len({rid for _, rid in seen}) == 3  # a fresh X-Request-ID per attempt
    assert err.value.is_retryable and key not in str(err.value)
    assert err.value.retry_spent and not task_would_retry(err.value)
    provider.close()


# -- operations ----------------------------------------------------------------------------------


def test_slow_operations_are_polled_until_finished(world: NeonWorld) -> None:
    world.fake.slow_operations(5)
    sleeps = Sleeps()
    seen: list[tuple[str, int, int | None]] = []
    backup = world.provider(http=HttpPlumbing(sleep=sleeps)).create_backup(
        "slow", progress=lambda phase, done, total: seen.append((phase, done, total)))
    (op,) = [o for o in world.fake.ops.values() if o.data["branch_id"] == backup.backup_id]
    assert op.data["status"] == "finished"
    assert op.polls == 6  # five "running", then "finished"
    assert set(sleeps.calls) == {0.05}  # poll_interval_seconds from restorekit.toml
    assert seen[-1] == ("neon operations", 1, 1)


def test_an_operation_in_error_is_neon_retrying_so_it_is_polled_on(world: NeonWorld) -> None:
    world.fake.erroring_operations(2)
    backup = world.provider(http=HttpPlumbing(sleep=Sleeps())).create_backup("flaky")
    (op,) = [o for o in world.fake.ops.values() if o.data["branch_id"] == backup.backup_id]
    assert op.data["status"] == "finished" and op.data["failures_count"] == 2


def test_a_failed_operation_raises_naming_it(world: NeonWorld) -> None:
    world.fake.fail_next_operation("timeline creation failed: disk quota exceeded")
    ops_before = set(world.fake.ops)
    with pytest.raises(ProviderError, match="disk quota exceeded") as err:
        world.provider(http=HttpPlumbing(sleep=Sleeps())).create_backup("doomed")
    (op_id,) = [o for o, op in world.fake.ops.items()
                if o not in ops_before and op.data["status"] == "failed"]
    assert op_id in str(err.value) and err.value.operation == op_id
    assert not err.value.is_retryable


def test_the_deadline_raises_operation_timed_out_naming_the_operation(world: NeonWorld) -> None:
    world.fake.slow_operations(10**6)
    clock = FakeClock()
    with pytest.raises(OperationTimedOut) as err:
        world.provider(http=HttpPlumbing(sleep=clock.sleep, clock=clock), timeout_seconds=1,
                       poll_interval_seconds=0.25).create_backup("stuck")
    (stuck,) = [b.data["id"] for b in world.fake.branches.values()
                if b.data["name"].endswith("-stuck")]
    (op_id,) = [o for o, op in world.fake.ops.items() if op.data["branch_id"] == stuck]
    assert op_id in str(err.value) and "create_branch" in str(err.value)
    assert err.value.operation == op_id and not err.value.is_retryable
    assert sum(clock.sleeps) == pytest.approx(1.0)


# -- restores ------------------------------------------------------------------------------------


def test_points_are_checked_before_any_request(world: NeonWorld) -> None:
    provider = world.provider()
    for point in ("xid:1234", "name:before-migration", "immediate"):
        with pytest.raises(CapabilityNotSupported):
            provider.restore(RestorePoint.parse(point), name="ct-bad")
    with pytest.raises(RestorePointError, match="future"):
        provider.restore(RestorePoint.parse("2999-01-01T00:00:00Z"), name="ct-bad")
    for name in ("Not Valid", "backup-x", "pre-restore-x"):  # the last two collide with ours
        with pytest.raises(ConfigError):
            provider.restore(RestorePoint.latest(), name=name)
    with pytest.raises(CapabilityNotSupported):
        provider.restore_in_place(RestorePoint.latest())
    assert world.fake.requests == []

    with pytest.raises(RestorePointError, match="outside the restore window"):
        provider.restore(RestorePoint.parse("2001-01-01T00:00:00Z"), name="ct-old")
    assert {m for m, _ in paths(world)} == {"GET"}  # the window was read; nothing was created


def test_a_branch_at_a_time_is_created_as_documented_and_holds_that_times_data(
    world: NeonWorld,
) -> None:
    point = marked_around_a_point(world, "marker_ct_time", "before", "after")
    provider = world.provider(http=HttpPlumbing(sleep=Sleeps(cap=0.05)))
    others = scratch(provider)  # other tests' scratch branches (none when they all passed)
    world.fake.requests.clear()

    restored = provider.restore(RestorePoint.at(point), name="ct-time")

    (post,) = world.fake.calls("POST", rf"/projects/{pid(world)}/branches")
    assert post.body == {
        "branch": {"parent_id": bid(world), "name": "restorekit-ct-time",
                   "parent_timestamp": rfc3339(point)},
        "endpoints": [{"type": "read_write"}],
    }
    assert post.body["branch"]["parent_timestamp"].endswith("Z")
    created_ops = [o for o in world.fake.ops.values() if o.data["branch_id"] == restored.handle]
    assert len(created_ops) == 2 and all(o.data["status"] == "finished" for o in created_ops)
    (uri,) = world.fake.calls("GET", rf"/projects/{pid(world)}/connection_uri")
    assert uri.query == {"database_name": ["app"], "role_name": ["postgres"],
                         "branch_id": [restored.handle]}
    assert_well_formed(world)
    assert restored.scratch and restored.recovered_to_time == point
    assert {"branch create", "operations"} <= set(restored.phases)
    # Neon's connection URI carries the role's password (§3.3; a branch keeps its parent's
    # roles and passwords): production authenticates with scram, so the copy needs it.
    dsn = conninfo_to_dict(restored.dsn.get_secret_value())
    assert (dsn["user"], dsn["password"]) == ("postgres", world.production.password)
    assert notes(restored.dsn.get_secret_value(), "marker_ct_time") == ["before"]

    # Idempotent: the same name again reuses the branch and creates nothing.
    again = provider.restore(RestorePoint.at(point), name="ct-time")
    assert again.handle == restored.handle
    assert len(world.fake.calls("POST", rf"/projects/{pid(world)}/branches")) == 1
    found = provider.find_restored("ct-time")
    assert found is not None and found.handle == restored.handle and found.scratch
    assert scratch(provider) == sorted([*others, restored.handle])
    # Same name, another point (100 ms later: inside the window however young the world is, which
    # a second before the point is not when this test runs first).
    with pytest.raises(ConfigError, match="already exists"):
        provider.restore(RestorePoint.at(point + timedelta(milliseconds=100)), name="ct-time")

    port = world.fake.branch_port(restored.handle)
    provider.discard(restored)
    (delete,) = world.fake.calls("DELETE", rf"/projects/{pid(world)}/branches/{restored.handle}")
    assert delete.status == 200 and delete.body is None
    world.fake.wait_idle()
    assert port is not None and not accepting(port)  # its compute is gone
    assert scratch(provider) == others and provider.find_restored("ct-time") is None
    provider.discard(restored)  # already gone: fine, and no second DELETE
    assert len(world.fake.calls("DELETE", r".*")) == 1


def test_a_branch_at_an_lsn_then_adopted_leaves_cleanup(world: NeonWorld) -> None:
    marker(world, "marker_ct_lsn", "at lsn")
    with psycopg.connect(world.app_dsn) as conn:
        lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    write(world, "INSERT INTO marker_ct_lsn VALUES (2, 'after lsn')")
    provider = world.provider(http=HttpPlumbing(sleep=Sleeps(cap=0.05)))
    others = scratch(provider)
    world.fake.requests.clear()

    restored = provider.restore(RestorePoint(PointKind.LSN, value=lsn), name="ct-lsn")

    (post,) = world.fake.calls("POST", rf"/projects/{pid(world)}/branches")
    assert post.body["branch"] == {"parent_id": bid(world), "name": "restorekit-ct-lsn",
                                   "parent_lsn": lsn}
    assert notes(restored.dsn.get_secret_value(), "marker_ct_lsn") == ["at lsn"]

    provider.adopt(restored)
    (patch,) = world.fake.calls("PATCH", rf"/projects/{pid(world)}/branches/{restored.handle}")
    assert patch.body == {"branch": {"name": "ct-lsn"}}
    provider.adopt(restored)  # twice: nothing more
    assert len(world.fake.calls("PATCH", r".*")) == 1
    assert scratch(provider) == others  # adopted: no longer scratch
    adopted = provider.find_restored("ct-lsn")
    assert adopted is not None and not adopted.scratch
    with pytest.raises(SafetyError, match="scratch prefix"):
        provider.discard(adopted)
    assert world.fake.calls("DELETE", r".*") == []


def test_adopt_makes_the_branch_the_projects_default_once(world: NeonWorld) -> None:
    provider = world.provider(http=HttpPlumbing(sleep=Sleeps(cap=0.05)))
    restored = provider.restore(RestorePoint.latest(), name="ct-adopt")
    previous = world.fake.default_branch_id  # production, or a branch an earlier test adopted
    assert previous != restored.handle
    # What cleanup asks before it removes a scratch branch: does this DSN lead to it?
    assert provider.reaches(restored, restored.dsn.get_secret_value())
    assert not provider.reaches(restored, world.app_dsn)
    gone = RestoredDatabase(provider="neon", handle="br-long-gone-000000", dsn=SecretStr(""))
    assert not provider.reaches(gone, restored.dsn.get_secret_value())
    world.fake.requests.clear()

    note = provider.adopt(restored)

    branch_path = f"/projects/{pid(world)}/branches/{restored.handle}"
    (promote,) = world.fake.calls("POST", rf"{branch_path}/set_as_default")
    (rename,) = world.fake.calls("PATCH", branch_path)
    assert promote.status == 200 and promote.body is None  # §3.6: no body
    assert rename.body == {"branch": {"name": "ct-adopt"}}
    requests = world.fake.requests
    assert requests.index(promote) < requests.index(rename)  # promoted first, renamed second
    promoted = [op for op in world.fake.ops.values()
                if op.data["branch_id"] == restored.handle and op.data["action"] == "apply_config"]
    assert promoted and all(op.data["status"] == "finished" for op in promoted)  # waited for
    assert_well_formed(world)
    adopted = world.fake.branches[restored.handle].data
    assert adopted["default"] and adopted["name"] == "ct-adopt"
    assert world.fake.default_branch_id == restored.handle
    assert not world.fake.branches[previous].data["default"]
    assert not world.fake.branches[bid(world)].data["default"]  # the old production
    # Nothing to edit by hand: the branch id is what restorekit.production records.
    assert note is None
    assert provider.adopted_location(restored) == {"branch_id": restored.handle}

    # Twice: a no-op (read, nothing sent).
    world.fake.requests.clear()
    assert provider.adopt(restored) == note
    assert {m for m, _ in paths(world)} == {"GET"}
    assert world.fake.calls("POST", r".*/set_as_default") == []

    # The default branch is production now: never swept, never deleted.
    assert restored.handle not in [s.handle for s in provider.list_scratch()]
    with pytest.raises(SafetyError, match="adopted as production"):
        provider.discard(restored)
    with httpx.Client(base_url=world.fake.base_url) as client:
        refused = client.delete(branch_path, headers={"Authorization": f"Bearer {world.api_key}",
                                                      "Accept": "application/json"})
    assert refused.status_code == 400 and "default" in refused.json()["message"]
    assert world.fake.branches[restored.handle].data["default"]


def test_an_adopt_killed_after_promoting_is_finished_by_the_next_without_promoting_again(
    world: NeonWorld,
) -> None:
    headers = {"Authorization": f"Bearer {world.api_key}", "Accept": "application/json"}
    with httpx.Client(base_url=world.fake.base_url, headers=headers) as client:
        # A scratch branch (no compute needed here) that an earlier adopt promoted, then died.
        created = client.post(f"/projects/{pid(world)}/branches",
                              json={"branch": {"parent_id": bid(world),
                                               "name": "restorekit-ct-half"}})
        assert created.status_code == 201
        half = created.json()["branch"]["id"]
        promoted = client.post(f"/projects/{pid(world)}/branches/{half}/set_as_default")
        assert promoted.status_code == 200
        assert set(promoted.json()) == {"branch", "operations"}
        assert promoted.json()["branch"]["default"] is True
        assert promoted.json()["operations"][0]["status"] == "running"
        unknown = client.post(f"/projects/{pid(world)}/branches/br-nope-000000/set_as_default")
        assert unknown.status_code == 404
        assert set(unknown.json()) == {"code", "message", "request_id"}
    assert [b for b in world.fake.branches.values() if b.data["default"]] == [
        world.fake.branches[half]]
    provider = world.provider(http=HttpPlumbing(sleep=Sleeps()))
    restored = RestoredDatabase(provider="neon", handle=half, dsn=SecretStr(""))
    assert half not in [s.handle for s in provider.list_scratch()]  # default: not swept
    assert not provider.reaches(restored, world.app_dsn)  # no compute: nothing connects to it
    with pytest.raises(SafetyError, match="default branch"):
        provider.discard(restored)
    world.fake.requests.clear()

    note = provider.adopt(restored)

    assert world.fake.calls("POST", r".*/set_as_default") == []  # already default: no call
    (rename,) = world.fake.calls("PATCH", r".*")
    assert rename.body == {"branch": {"name": "ct-half"}}
    assert world.fake.branches[half].data["name"] == "ct-half"
    assert note is None
    world.fake.requests.clear()
    provider.adopt(restored)
    assert {m for m, _ in paths(world)} == {"GET"}


def test_a_restore_that_timed_out_is_picked_up_by_the_next_attempt(world: NeonWorld) -> None:
    marker(world, "marker_ct_retry", "first", "second")
    world.fake.slow_operations(10**6)  # the first attempt's operations never report finished
    clock = FakeClock()
    with pytest.raises(OperationTimedOut):
        world.provider(http=HttpPlumbing(sleep=clock.sleep, clock=clock),
                       timeout_seconds=1).restore(RestorePoint.latest(), name="ct-retry")
    world.fake.reset_controls()
    provider = world.provider(http=HttpPlumbing(sleep=Sleeps(cap=0.05)))

    restored = provider.restore(RestorePoint.latest(), name="ct-retry")  # the task's retry

    assert len(world.fake.calls("POST", rf"/projects/{pid(world)}/branches")) == 1
    assert restored.phases.keys() == {"reuse"}
    assert notes(restored.dsn.get_secret_value(), "marker_ct_retry") == ["first", "second"]
    provider.discard(restored)


def test_discard_refuses_production_and_backups(world: NeonWorld) -> None:
    provider = world.provider(http=HttpPlumbing(sleep=Sleeps()))
    with pytest.raises(SafetyError, match="production branch"):
        provider.discard(RestoredDatabase(provider="neon", handle=bid(world), dsn=SecretStr("")))
    backup = provider.create_backup("keep me")
    with pytest.raises(SafetyError, match="scratch prefix"):
        provider.discard(RestoredDatabase(provider="neon", handle=backup.backup_id,
                                          dsn=SecretStr("")))
    provider.discard(RestoredDatabase(provider="neon", handle="br-long-gone-000000",
                                      dsn=SecretStr("")))
    assert world.fake.calls("DELETE", r".*") == []


def test_a_backup_is_a_branch_without_compute_and_restores_by_id(world: NeonWorld) -> None:
    marker(world, "marker_ct_backup", "before backup")
    provider = world.provider(http=HttpPlumbing(sleep=Sleeps(cap=0.05)))
    backup = provider.create_backup("before migration 42")
    (post,) = world.fake.calls("POST", rf"/projects/{pid(world)}/branches")
    assert set(post.body) == {"branch"}  # no endpoints: no compute
    assert post.body["branch"]["parent_id"] == bid(world)
    assert post.body["branch"]["protected"] is False
    assert post.body["branch"]["name"].startswith(BACKUP_PREFIX)
    assert post.body["branch"]["name"].endswith("-before-migration-42")
    assert backup.label == "before migration 42" and backup.engine == "neon"
    assert backup.backup_id in [b.backup_id for b in provider.list_backups()]
    assert backup.backup_id not in [s.handle for s in provider.list_scratch()]
    write(world, "INSERT INTO marker_ct_backup VALUES (2, 'after backup')")

    restored = provider.restore(RestorePoint(PointKind.BACKUP, value=backup.backup_id),
                                name="ct-backup")

    post = world.fake.calls("POST", rf"/projects/{pid(world)}/branches")[-1]
    assert post.body == {"branch": {"parent_id": backup.backup_id,
                                    "name": "restorekit-ct-backup"},
                         "endpoints": [{"type": "read_write"}]}
    assert notes(restored.dsn.get_secret_value(), "marker_ct_backup") == ["before backup"]
    provider.discard(restored)


def test_the_fake_refuses_what_the_spec_forbids(world: NeonWorld) -> None:
    base, key = world.fake.base_url, world.api_key
    json_headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    with httpx.Client(base_url=base) as client:
        no_auth = client.get(f"/projects/{pid(world)}", headers={"Accept": "application/json"})
        assert no_auth.status_code == 401 and set(no_auth.json()) == {"code", "message",
                                                                        "request_id"}
        no_role = client.get(f"/projects/{pid(world)}/connection_uri",
                             params={"database_name": "app"}, headers=json_headers)
        assert no_role.status_code == 400 and "role_name" in no_role.json()["message"]
        same_branch = client.post(f"/projects/{pid(world)}/branches/{bid(world)}/restore",
                                  json={"source_branch_id": bid(world),
                                        "source_timestamp": "2026-01-01T00:00:00Z"},
                                  headers=json_headers)
        assert same_branch.status_code == 400
        assert "preserve_under_name" in same_branch.json()["message"]
        bad_time = client.post(f"/projects/{pid(world)}/branches", headers=json_headers,
                               json={"branch": {"parent_timestamp": "2026-01-01 10:00"}})
        assert bad_time.status_code == 400
    assert len(world.fake.violations) == 4
    world.fake.violations.clear()


def test_in_place_restore_sends_preserve_under_name_and_a_timestamp(own_world: NeonWorld) -> None:
    world = own_world
    point = marked_around_a_point(world, "marker_in_place", "kept", "undone")
    provider = world.provider(http=HttpPlumbing(sleep=Sleeps(cap=0.05)))
    dsn_before = world.app_dsn

    provider.restore_in_place(RestorePoint.at(point))

    (post,) = world.fake.calls("POST", rf"/projects/{pid(world)}/branches/{bid(world)}/restore")
    assert set(post.body) == {"source_branch_id", "source_timestamp", "preserve_under_name"}
    assert post.body["source_branch_id"] == bid(world)
    assert post.body["source_timestamp"] == rfc3339(point)
    assert post.body["preserve_under_name"].startswith(PRESERVE_PREFIX)
    assert post.body["preserve_under_name"].endswith("Z")
    assert_well_formed(world)
    # The same endpoint (DSN) now serves the state at the point.
    assert notes(dsn_before, "marker_in_place") == ["kept"]
    preserved = world.fake.branch_named(post.body["preserve_under_name"])
    assert preserved is not None
    assert world.fake.branches[bid(world)].data["parent_id"] == preserved["id"]
    assert preserved["id"] not in [s.handle for s in provider.list_scratch()]
    with pytest.raises(SafetyError):
        provider.discard(RestoredDatabase(provider="neon", handle=preserved["id"],
                                          dsn=SecretStr("")))

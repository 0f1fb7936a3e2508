"""A local Supabase Management API for the tests, backed by a real PostgreSQL cluster.

:class:`FakeSupabase` is a threaded stdlib HTTP server implementing the calls restorekit makes
(provider-apis.md §4), with the documented shapes, and it is strict: wrong method, path, project
ref, ``Authorization`` header or body get the error a careful server would give (a string
``recovery_time_target_unix``, as in the docs' curl example, gets 400: the spec says integer).
Every request is recorded (:attr:`FakeSupabase.requests`) so tests can assert on shapes.

The project's status moves over time, on the fake's own clock (:attr:`FakeSupabase.clock`,
``time.monotonic`` unless a test hands in a controllable one, so nothing has to sleep), never
within one request. After a restore request (201, no body) the project keeps its pre-restore
status for :attr:`~FakeSupabase.accept_lag` seconds (the real API lags the call too), then
follows :attr:`~FakeSupabase.restore_timeline`: by default RESTORING, COMING_UP, then
ACTIVE_HEALTHY (:func:`completes`). Other timelines: :func:`fails` (ends RESTORE_FAILED),
:func:`stuck` (RESTORING forever), :data:`NEVER_STARTS` (accepted, nothing ever happens), or
any list of ``(status, seconds)`` steps ending with ``(status, None)``. The resting status is
set with ``fake.status = "ACTIVE_UNHEALTHY"`` (or INACTIVE, PAUSE_FAILED, ...) or a timeline of
its own with :meth:`~FakeSupabase.schedule`. A restore request is accepted only from
ACTIVE_HEALTHY or ACTIVE_UNHEALTHY (400 otherwise: the documented API says nothing about other
states, and a server that restored a paused or failed project would hide adapter bugs).

The project's database is a self-hosted installation (:func:`restorekit.demo.build_installation`:
a production cluster archiving WAL, a base backup). A restore that ends ACTIVE_HEALTHY after
RESTORING is real (:class:`InstallationBackend`): production is stopped (the project is
unavailable), the installation's self-hosted provider does a point-in-time restore into a new
local cluster, production's data directory is moved aside (kept, like Supabase's own copy) and
the restored one takes its place on the SAME port, with WAL archiving on again; RESTORING lasts
at least until that is done, and a backend failure ends RESTORE_FAILED. Timelines that do not end
ACTIVE_HEALTHY leave the data alone. The connection string never changes, as on Supabase.
:class:`StaticBackend` stands in when no cluster is needed.

Other faults: :meth:`FakeSupabase.fail` (any status, e.g. 429 with ``X-RateLimit-Reset`` or
500, for the next N matching requests; an injected 429/5xx never acts).

The ``supabase_world`` fixture (module scope) builds it all and writes a restorekit.toml with
target "production" on provider "supabase". Use it from a test module with
``from fakes.supabase_server import supabase_world  # noqa: F401`` (or list
``fakes.supabase_server`` in ``pytest_plugins``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest

from fakes._http import JsonHandler, ServedFake
from fakes._world import InstallationWorld
from restorekit.demo import CONFIG, Installation, build_installation, teardown_installation
from restorekit.engines.recovery import apply_overrides
from restorekit.models import BackupInfo, PointKind, RestorePoint, RestoreWindow
from restorekit.pg.cluster import LocalCluster
from restorekit.pg.dsn import parse
from restorekit.pg.tools import make_dir
from restorekit.providers.selfhosted import SelfHostedProvider
from restorekit.wal import push_wal

PROJECT_REF = "abcdefghijklmnopqrst"
TOKEN_ENV = "RESTOREKIT_TEST_SUPABASE_TOKEN"
RATE_LIMIT = 120

_PROJECT = re.compile(r"^/v1/projects/(?P<ref>[^/]+)$")
_BACKUPS = re.compile(r"^/v1/projects/(?P<ref>[^/]+)/database/backups$")
_RESTORE_PITR = re.compile(r"^/v1/projects/(?P<ref>[^/]+)/database/backups/restore-pitr$")
_RESTORE = re.compile(r"^/v1/projects/(?P<ref>[^/]+)/database/backups/restore$")

#: ``status`` of ``GET /v1/projects/{ref}`` (provider-apis.md §4.4).
PROJECT_STATUSES = frozenset({
    "INACTIVE", "ACTIVE_HEALTHY", "ACTIVE_UNHEALTHY", "COMING_UP", "UNKNOWN", "GOING_DOWN",
    "INIT_FAILED", "REMOVED", "RESTORING", "UPGRADING", "PAUSING", "RESTORE_FAILED",
    "RESTARTING", "PAUSE_FAILED", "RESIZING"})
#: Where a restore request is accepted from.
RESTORABLE = frozenset({"ACTIVE_HEALTHY", "ACTIVE_UNHEALTHY"})

#: One step of a status timeline: the status and how many seconds (of the fake's clock) it
#: lasts; ``None`` (last step only) for "from then on".
Step = tuple[str, float | None]


def completes(restoring: float = 0.5, coming_up: float = 0.3) -> list[Step]:
    """A restore that works: RESTORING (at least until the data is back), COMING_UP, healthy."""
    return [("RESTORING", restoring), ("COMING_UP", coming_up), ("ACTIVE_HEALTHY", None)]


def fails(restoring: float = 0.5) -> list[Step]:
    """A restore that ends RESTORE_FAILED, data untouched (Supabase support must step in)."""
    return [("RESTORING", restoring), ("RESTORE_FAILED", None)]


def stuck() -> list[Step]:
    """A restore that stays RESTORING forever (projects have, for days)."""
    return [("RESTORING", None)]


#: A restore request answered 201 after which nothing ever happens.
NEVER_STARTS: list[Step] = []

#: Seconds a restore request leaves the pre-restore status showing, by default.
ACCEPT_LAG = 0.3


# -- what the project's database is --------------------------------------------------------------


class ProjectBackend(Protocol):
    """The database behind the fake project."""

    def window(self) -> RestoreWindow: ...
    def backups(self) -> list[BackupInfo]: ...
    def restore(self, point: RestorePoint) -> None:
        """Restore the project's database in place (blocking); raise on failure."""
        ...
    def database_info(self) -> dict[str, str]: ...


@dataclass
class StaticBackend:
    """A backend without a database: a fixed window and backups; restores only take time."""

    earliest: datetime
    latest: datetime
    backup_times: list[datetime] = field(default_factory=list)
    restore_seconds: float = 0.0
    restored: list[RestorePoint] = field(default_factory=list)

    def window(self) -> RestoreWindow:
        return RestoreWindow(earliest=self.earliest, latest=self.latest)

    def backups(self) -> list[BackupInfo]:
        return [BackupInfo(backup_id=f"static-{i}", engine="static", start_time=t, stop_time=t,
                           start_lsn="0/0", stop_lsn="0/0")
                for i, t in enumerate(self.backup_times)]

    def restore(self, point: RestorePoint) -> None:
        time.sleep(self.restore_seconds)
        self.restored.append(point)

    def database_info(self) -> dict[str, str]:
        return {"host": f"db.{PROJECT_REF}.supabase.co", "version": "15.8.1.085"}


class InstallationBackend:
    """The installation's production cluster is the project's database; restores are real."""

    def __init__(self, inst: Installation, platform_root: Path) -> None:
        rt = inst.runtime()
        source: SelfHostedProvider = rt.provider  # type: ignore[assignment]
        self.production = inst.production
        self.os_user = source.source.os_user
        make_dir(platform_root, self.os_user, mode=0o755)
        # Supabase's side of the restore, with its own restore root (never the target's).
        self.platform = SelfHostedProvider(
            engine=source.engine, source=source.source, restore_root=platform_root / "restores",
            database=source.database, target_name="supabase-platform")
        self.kept = make_dir(platform_root / "replaced", self.os_user, mode=0o755)
        self.replaced: list[Path] = []
        self._count = 0

    def window(self) -> RestoreWindow:
        return self.platform.restore_window()

    def backups(self) -> list[BackupInfo]:
        return self.platform.list_backups()

    def database_info(self) -> dict[str, str]:
        return {"host": self.production.host, "version": "local"}

    def restore(self, point: RestorePoint) -> None:
        self._count += 1
        name = f"in-place-{self._count}"
        self.production.stop(mode="fast")  # the project is unavailable while it restores
        try:
            restored = self.platform.restore(point, name=name)
        except BaseException:
            self.production.start()
            raise
        home = Path(restored.handle)
        port = int(parse(restored.dsn.get_secret_value())["port"])
        LocalCluster(data_dir=home / "data", port=port, bin_dir=self.production.bin_dir,
                     os_user=self.os_user).stop(mode="fast")
        aside = self.kept / f"production-before-{name}"
        self.production.data_dir.rename(aside)
        self.replaced.append(aside)
        (home / "data").rename(self.production.data_dir)
        data = self.production.data_dir
        # Same port as before (the connection string stays), archiving on again as production.
        # hba_file/ident_file may be pinned to the restored copy's old directory: re-pin them.
        apply_overrides(data, {"port": self.production.port, "listen_addresses": "127.0.0.1",
                               "hba_file": str(data / "pg_hba.conf"),
                               "ident_file": str(data / "pg_ident.conf"),
                               **self.platform.engine.archive_settings()}, self.os_user)
        # The new timeline's history file was made while archiving was off: archive it, so a
        # later restore picks a fresh timeline instead of colliding with this one's WAL.
        repo = getattr(self.platform.engine, "repo", None)
        if repo is not None:
            for history in sorted((data / "pg_wal").glob("*.history")):
                push_wal(repo, history, history.name)
        self.production.start()
        shutil.rmtree(home, ignore_errors=True)


# -- the HTTP server ----------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text when it is not JSON, or None
    status: int = 0


@dataclass
class _Fault:
    status: int
    times: int
    method: str | None
    path: str | None
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class _Restore:
    target: str
    point: RestorePoint
    runs_backend: bool  # the timeline passes RESTORING and ends ACTIVE_HEALTHY
    done: bool = False
    finished_at: float | None = None  # on the fake's clock
    error: str | None = None


class _Handler(JsonHandler):
    fake: FakeSupabase

    def headers_for(self, status: int) -> dict[str, str]:
        remaining = 0 if status == 429 else RATE_LIMIT - 1
        return {"X-RateLimit-Limit": str(RATE_LIMIT), "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": "60"}


class FakeSupabase(ServedFake):
    """The Management API of one project (``project_ref``) on 127.0.0.1.

    Args:
        backend: the project's database.
        project_ref: the project's ref.
        token: the only access token accepted (``Authorization: Bearer <token>``).
        pitr_enabled: with PITR, ``physical_backup_data`` carries the backend's window and
            restore-pitr is accepted; without, only restores of backups by id are.
        status: the project's status to begin with.
        clock: the fake's clock in seconds (monotonic); tests share theirs with the provider.
    """

    handler = _Handler
    thread_name = "fake-supabase"

    def __init__(self, backend: ProjectBackend, *, project_ref: str = PROJECT_REF,
                 token: str | None = None, pitr_enabled: bool = True,
                 status: str = "ACTIVE_HEALTHY",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self.project_ref = project_ref
        self.token = token or f"sbp_{secrets.token_hex(20)}"
        self.pitr_enabled = pitr_enabled
        self.clock = clock
        self.accept_lag = ACCEPT_LAG
        self.restore_timeline: list[Step] = completes()
        self.requests: list[Recorded] = []
        self.restores: list[_Restore] = []
        self._faults: list[_Fault] = []
        self._current: _Restore | None = None
        self._ids: dict[str, int] = {}
        self._lock = threading.RLock()
        self._steps: list[Step] = []
        self._since = 0.0
        self.schedule((status, None))
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        self.wait_idle()
        super().stop()

    def reset(self) -> None:
        """Back to a healthy project on the real clock, with the default restore timeline, no
        faults, no recorded requests and no recorded restores (a restore still running in the
        background is waited for first). The database is left as it is."""
        self.wait_idle()
        with self._lock:
            self.clock = time.monotonic
            self.accept_lag = ACCEPT_LAG
            self.restore_timeline = completes()
            self.pitr_enabled = True
            self.requests.clear()
            self.restores.clear()
            self._faults.clear()
            self._current = None
            self.schedule(("ACTIVE_HEALTHY", None))

    def wait_idle(self, timeout: float = 300) -> None:
        """Wait for background restores to finish."""
        for thread in list(self._threads):
            thread.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]

    # -- the project's status over time ---------------------------------------------------

    @property
    def status(self) -> str:
        """The project's status now (on :attr:`clock`)."""
        with self._lock:
            return self._status_now()

    @status.setter
    def status(self, value: str) -> None:
        self.schedule((value, None))

    def schedule(self, *steps: Step) -> None:
        """From now on the project goes through ``steps``: ``(status, seconds)`` each, the last
        one ``(status, None)``; e.g. ``("COMING_UP", 30), ("ACTIVE_UNHEALTHY", None)``."""
        unknown = [status for status, _ in steps if status not in PROJECT_STATUSES]
        if not steps or steps[-1][1] is not None or any(t is None for _, t in steps[:-1]):
            raise ValueError(f"a timeline ends with one (status, None) step: {steps!r}")
        if unknown:
            raise ValueError(f"not a documented project status: {unknown}")
        with self._lock:
            self._steps = list(steps)
            self._since = self.clock()

    def _status_now(self) -> str:
        """Walk the timeline up to the clock's now; a RESTORING step of a restore that runs the
        backend lasts until the backend is done, and a backend failure ends RESTORE_FAILED."""
        now = self.clock()
        start = self._since
        for index, (status, seconds) in enumerate(self._steps):
            current = self._current
            end = None if seconds is None else start + seconds
            if status == "RESTORING" and current is not None and current.runs_backend:
                if not current.done:
                    return status
                if current.error is not None:
                    self._steps, self._since = [("RESTORE_FAILED", None)], now
                    return "RESTORE_FAILED"
                if end is not None and current.finished_at is not None:
                    end = max(end, current.finished_at)
            if end is None or now < end:
                self._steps, self._since = self._steps[index:], start
                return status
            start = end
        raise AssertionError("a timeline always ends with a (status, None) step")

    # -- faults and inspection ---------------------------------------------------------------

    def fail(self, status: int, *, times: int = 1, method: str | None = None,
             path: str | None = None, headers: dict[str, str] | None = None,
             message: str | None = None) -> None:
        """Answer the next ``times`` requests matching ``method``/``path`` (a suffix) with
        ``status``; such a request does nothing else (a 429 "did not act")."""
        with self._lock:
            self._faults.append(_Fault(status, times, method, path, dict(headers or {}),
                                       {"message": message or _REASONS.get(status, "error")}))

    def rate_limit(self, *, times: int = 1, reset: int = 7, method: str | None = None,
                   path: str | None = None) -> None:
        """The next ``times`` matching requests get 429 with ``X-RateLimit-Reset: reset``."""
        self.fail(429, times=times, method=method, path=path,
                  headers={"X-RateLimit-Reset": str(reset), "X-RateLimit-Remaining": "0"},
                  message="Too many requests")

    def calls(self, method: str | None = None, suffix: str = "") -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and r.path.endswith(suffix)]

    def backup_id(self, backend_id: str) -> int:
        """The integer id the API shows for one of the backend's backups."""
        with self._lock:
            if backend_id not in self._ids:
                self._ids[backend_id] = 101 + len(self._ids)
            return self._ids[backend_id]

    # -- responses -----------------------------------------------------------------------------

    def _project(self) -> dict[str, Any]:
        status = self.status
        info = self.backend.database_info()
        return {
            "id": self.project_ref, "ref": self.project_ref,
            "organization_id": "fakeorg", "organization_slug": "fakeorg",
            "name": "restorekit test project", "region": "us-east-1",
            "created_at": "2026-01-01T00:00:00Z", "status": status,
            "database": {"host": info["host"], "version": info["version"],
                         "postgres_engine": "15", "release_channel": "ga"},
        }

    def _backups(self) -> dict[str, Any]:
        items = [{"id": self.backup_id(b.backup_id), "is_physical_backup": True,
                  "status": "COMPLETED",
                  "inserted_at": b.stop_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
                 for b in self.backend.backups()]
        physical: dict[str, int] = {}
        if self.pitr_enabled:
            window = self.backend.window()
            if window.earliest is not None and window.latest is not None:
                # Whole seconds inside the real window, so every one of them is restorable;
                # until the window spans a whole second (a fresh, idle database) there is none,
                # and the object stays empty, as Supabase's does without physical backups.
                low = math.ceil(window.earliest.timestamp())
                high = math.floor(window.latest.timestamp())
                if low <= high:
                    physical = {"earliest_physical_backup_date_unix": low,
                                "latest_physical_backup_date_unix": high}
        return {"region": "us-east-1", "walg_enabled": True, "pitr_enabled": self.pitr_enabled,
                "backups": items, "physical_backup_data": physical}

    def _start_restore(self, point: RestorePoint, target: str) -> tuple[int, dict[str, Any] | None]:
        with self._lock:
            status = self._status_now()
            if status not in RESTORABLE:
                return 400, {"message": f"Project is {status}; cannot restore now"}
            timeline = list(self.restore_timeline)
            runs_backend = bool(timeline) and timeline[-1][0] == "ACTIVE_HEALTHY" and any(
                step == "RESTORING" for step, _ in timeline)
            restore = _Restore(target=target, point=point, runs_backend=runs_backend)
            self.restores.append(restore)
            self._current = restore
            # Accepted: the old status shows a little longer, then the timeline plays out.
            lag: list[Step] = [(status, self.accept_lag)] if self.accept_lag > 0 else []
            steps = lag + timeline if timeline else [(status, None)]
            self.schedule(*steps)
        if runs_backend:
            thread = threading.Thread(target=self._run_restore, args=(restore,),
                                      name="fake-supabase-restore", daemon=True)
            self._threads.append(thread)
            thread.start()
        return 201, None

    def _run_restore(self, restore: _Restore) -> None:
        try:
            self.backend.restore(restore.point)
        except BaseException:  # noqa: BLE001 - the project ends RESTORE_FAILED, like Supabase
            restore.error = traceback.format_exc()
        finally:
            with self._lock:
                restore.finished_at = self.clock()
                restore.done = True

    def handle(self, method: str, raw_path: str, headers: dict[str, str],
               raw_body: bytes) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        path, _, query = raw_path.partition("?")
        body: Any = None
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError:
                body = raw_body.decode(errors="replace")
        record = Recorded(method, path, query, dict(headers), body)
        with self._lock:
            self.requests.append(record)
        status, extra, payload = self._respond(method, path, headers, body, raw_body)
        record.status = status
        return status, extra, payload

    def _respond(self, method: str, path: str, headers: dict[str, str], body: Any,
                 raw_body: bytes) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and (fault.method in (None, method)) and (
                        fault.path is None or path.endswith(fault.path)):
                    fault.times -= 1
                    return fault.status, dict(fault.headers), dict(fault.body)
        auth = headers.get("authorization", "")
        if auth != f"Bearer {self.token}":
            return 401, {}, {"message": "Unauthorized: invalid or missing access token"}
        route = None
        for pattern, name, allowed in ((_PROJECT, "project", "GET"), (_BACKUPS, "backups", "GET"),
                                       (_RESTORE_PITR, "pitr", "POST"),
                                       (_RESTORE, "restore", "POST")):
            match = pattern.match(path)
            if match:
                route = (name, allowed, match.group("ref"))
                break
        if route is None:
            return 404, {}, {"message": f"Cannot {method} {path}"}
        name, allowed, ref = route
        if method != allowed:
            return 405, {"Allow": allowed}, {"message": f"Method {method} not allowed"}
        if not re.fullmatch(r"[a-z]{20}", ref):
            return 400, {}, {"message": "ref must be 20 lower-case letters"}
        if ref != self.project_ref:
            return 404, {}, {"message": f"Project {ref} not found"}
        if name == "project":
            return 200, {}, self._project()
        if name == "backups":
            return 200, {}, self._backups()
        if "json" not in headers.get("content-type", ""):
            return 400, {}, {"message": "body must be application/json"}
        if not isinstance(body, dict):
            return 400, {}, {"message": "body must be a JSON object"}
        if name == "pitr":
            return self._pitr(body)
        return self._restore_backup(body)

    def _pitr(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        if set(body) != {"recovery_time_target_unix"}:
            return 400, {}, {"message": "body must be exactly {recovery_time_target_unix}"}
        value = body["recovery_time_target_unix"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return 400, {}, {"message": "recovery_time_target_unix must be an integer >= 0 "
                                        f"(got {type(value).__name__} {value!r})"}
        if not self.pitr_enabled:
            return 400, {}, {"message": "Point in time recovery is not enabled for this project"}
        physical = self._backups()["physical_backup_data"]
        low = physical.get("earliest_physical_backup_date_unix")
        high = physical.get("latest_physical_backup_date_unix")
        if low is None or high is None or not low <= value <= high:
            return 400, {}, {"message": f"recovery_time_target_unix {value} is outside the "
                                        f"recovery window [{low}, {high}]"}
        point = RestorePoint.at(datetime.fromtimestamp(value, UTC))
        status, payload = self._start_restore(point, f"unix {value}")
        return status, {}, payload

    def _restore_backup(self, body: dict[str, Any]) -> tuple[int, dict[str, str],
                                                              dict[str, Any] | None]:
        if set(body) != {"id"}:
            return 400, {}, {"message": "body must be exactly {id}"}
        value = body["id"]
        if not isinstance(value, int) or isinstance(value, bool):
            return 400, {}, {"message": f"id must be an integer (got {type(value).__name__})"}
        for backup in self.backend.backups():
            if self.backup_id(backup.backup_id) == value:
                point = RestorePoint(PointKind.BACKUP, value=backup.backup_id)
                status, payload = self._start_restore(point, f"backup {value}")
                return status, {}, payload
        return 404, {}, {"message": f"Backup {value} not found"}


_REASONS = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
            429: "Too many requests", 500: "Internal server error",
            503: "Service unavailable"}


# -- the world: installation + fake + restorekit.toml ----------------------------------------


SUPABASE_SECTION = """
[targets.production.supabase]
project_ref = "{ref}"
token_env = "{token_env}"
base_url = "{url}"
poll_interval_seconds = {poll}
timeout_seconds = {timeout}
"""


def write_supabase_config(inst: Installation, fake: FakeSupabase, path: Path, *,
                          token_env: str = TOKEN_ENV, poll_interval: float = 0.2,
                          timeout: float = 600) -> Path:
    """A restorekit.toml like the demo's (same state dir, app, connection and verify), but with
    target "production" on provider "supabase" talking to ``fake``."""
    app = inst.runtime().config.app
    text = CONFIG.format(
        state=inst.root / "state", dsn_line=inst.dsn_line, repo=inst.root / "repo",
        env_file=inst.env_file, app_port=app.port,
        health_line=f'health_url = "{app.health_url}"' if app.health_url else "",
    )
    selfhosted = 'provider = "selfhosted"\nengine = "native"\n'
    assert selfhosted in text, "restorekit.demo.CONFIG changed shape"
    text = text.replace(selfhosted, 'provider = "supabase"\n')
    text += SUPABASE_SECTION.format(ref=fake.project_ref, token_env=token_env, url=fake.url,
                                    poll=poll_interval, timeout=timeout)
    path.write_text(text)
    return path


@dataclass
class SupabaseWorld(InstallationWorld):
    """What ``supabase_world`` yields: the installation behind a fake Supabase project (target
    "production" of ``config`` on provider "supabase")."""

    fake: FakeSupabase
    backend: InstallationBackend
    token_env: str = TOKEN_ENV

    @property
    def project_ref(self) -> str:
        return self.fake.project_ref


def tick(inst: Installation) -> None:
    """Commit (in the ``postgres`` database, leaving the app's data alone) a little over a
    second after the base backup and archive it, so the PITR window spans whole seconds from the
    start, like a project that has been running for a while."""
    with psycopg.connect(inst.production.dsn(), autocommit=True) as conn:
        start = time.time()
        time.sleep(max(0.0, math.floor(start) + 1.2 - start))
        conn.execute("SELECT txid_current()")
    inst.wait_archived()


@contextlib.contextmanager
def supabase_world_at(root: Path, *, start_app: bool = True) -> Iterator[SupabaseWorld]:
    """Build an installation in ``root`` behind a started fake; the token env var is set while
    the world lives."""
    inst = build_installation(root)
    tick(inst)
    backend = InstallationBackend(inst, root / "platform")
    fake = FakeSupabase(backend).start()
    previous = os.environ.get(TOKEN_ENV)
    os.environ[TOKEN_ENV] = fake.token
    try:
        config = write_supabase_config(inst, fake, root / "supabase.toml")
        world = SupabaseWorld(installation=inst, fake=fake, backend=backend, config=config)
        if start_app:
            app = world.runtime().app
            assert app is not None
            app.start()  # type: ignore[attr-defined]
        yield world
    finally:
        fake.stop()
        if previous is None:
            os.environ.pop(TOKEN_ENV, None)
        else:
            os.environ[TOKEN_ENV] = previous
        teardown_installation(inst)
        restores = backend.platform.restore_root
        if restores.exists():
            for home in restores.iterdir():
                LocalCluster(data_dir=home / "data", port=0, bin_dir=inst.production.bin_dir,
                             os_user=backend.os_user).destroy()


@pytest.fixture(scope="module")
def supabase_world(pg_base_dir: Path) -> Iterator[SupabaseWorld]:
    """A fake Supabase project whose database is a real local installation (module scope).

    Yields a :class:`SupabaseWorld`: ``.config`` (restorekit.toml, target "production", provider
    "supabase"), ``.app_dsn`` (the project's unchanging connection string), ``.wait_archived()``,
    ``.runtime()``, ``.clock()`` and ``.fake`` (call ``.fake.reset()`` between tests that
    inject faults).
    """
    with supabase_world_at(pg_base_dir / f"supabase-{time.monotonic_ns()}") as world:
        yield world

"""A local Neon API v2 (shared/provider-apis.md §3) backed by real PostgreSQL clusters.

The project's production branch is a self-hosted installation (``restorekit.demo``: a production
cluster archiving WAL into a repository, plus a base backup). The fake keeps Neon's shapes and
rules and does the work for real:

* ``POST /projects/{id}/branches`` at ``parent_timestamp`` / ``parent_lsn`` / the head, with a
  read-write endpoint, runs a real point-in-time restore of the installation (its
  SelfHostedProvider) into a new local cluster in a worker thread; the create operations stay
  ``running`` until that cluster is up. ``connection_uri`` then answers
  ``postgresql://<role>:<password>@127.0.0.1:<port>/<db>`` (the role's password, as Neon does).
* A branch without endpoints (a backup) only records its point; a compute added later
  (``POST /endpoints``) restores it then.
* ``DELETE`` of a branch destroys its cluster; the root (production) and default branches
  cannot be deleted.
* ``POST .../branches/{id}/set_as_default`` makes the branch the project's default (the previous
  default loses ``default: true``); branches created without ``parent_id`` and
  ``connection_uri`` without ``branch_id`` then use it, as on Neon. The installation behind the
  original production branch stays where it is: only the flag moves.
* ``POST .../branches/{id}/restore`` on production restores a scratch cluster at the point and
  swaps each branch database into the production cluster (restore into ``<db>__restoring``, then
  DROP + RENAME), so the production endpoint (host, port) does not change, as on Neon. The
  pre-restore state is kept as the ``preserve_under_name`` branch (production's head LSN at that
  moment, which stays restorable from the archive) and becomes production's parent.

It CHECKS what a client sends (method and path, ``Authorization: Bearer``, ``Accept`` and
``Content-Type``, required query parameters, body fields) and answers 400/401 with Neon's error
body ``{"code", "message", "request_id"}`` when something is wrong; every such refusal is also
kept in :attr:`FakeNeon.violations`. Tests can inject 429 (with ``Retry-After``), 423 and 503
responses, slow operations (``running`` for N polls), operations that report ``error`` for a
while, and operations that fail.

Fake-only choices (not confirmed against Neon): branch names are unique (409 on a duplicate);
deleting a branch with an operation in progress answers 423; ``connection_uri`` for a compute that
is still starting answers 423.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import psycopg
import pytest
from psycopg import sql

from fakes._http import JsonHandler, ServedFake
from fakes._world import InstallationWorld
from restorekit.demo import Installation, build_installation, teardown_installation
from restorekit.errors import RestoreKitError
from restorekit.models import PointKind, RestoredDatabase, RestorePoint, RestoreWindow, parse_lsn
from restorekit.pg.dsn import merge, parse, password_env
from restorekit.pg.tools import default_os_user, make_dir

API_PREFIX = "/api/v2"
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
_WORDS = ("quiet", "wispy", "bold", "frosty", "misty", "lively", "silent", "autumn")
_NOUNS = ("fog", "meadow", "river", "sky", "leaf", "stone", "pine", "brook")

BRANCH_KEYS = {"parent_id", "name", "parent_lsn", "parent_timestamp", "protected", "archived",
               "init_source", "expires_at"}
ENDPOINT_KEYS = {"type", "autoscaling_limit_min_cu", "autoscaling_limit_max_cu",
                 "suspend_timeout_seconds", "provisioner", "settings", "pooler_enabled",
                 "pooler_mode", "disabled", "name", "region_id", "branch_id"}
RESTORE_KEYS = {"source_branch_id", "source_lsn", "source_timestamp", "preserve_under_name"}


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _matching(body: dict[str, Any], key: str, pattern: re.Pattern[str], what: str) -> str:
    """``body[key]`` when it is a string ``pattern`` matches; else Neon's 400."""
    text = body[key]
    if not isinstance(text, str) or not pattern.match(text):
        raise ApiError(400, f"{key} {text!r} is not {what}")
    return text


def _production_only(branch: _Branch, key: str) -> None:
    """The fake replays history on the production branch only (a 400 that is not a violation)."""
    if not branch.production:
        raise ApiError(400, f"the fake supports {key} on the production branch only",
                       violation=False)


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str = "",
                 headers: dict[str, str] | None = None, violation: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.violation = violation


@dataclass
class Recorded:
    """One request as the fake received it (path without the /api/v2 prefix)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int = 0


@dataclass
class Injection:
    status: int
    method: str | None
    path: re.Pattern[str] | None
    times: int
    retry_after: str | None
    message: str
    code: str


@dataclass
class _Op:
    data: dict[str, Any]
    ready: threading.Event
    polls_left: int = 0
    error_polls: int = 0
    fail: str | None = None
    polls: int = 0


@dataclass
class _Branch:
    data: dict[str, Any]
    point: RestorePoint  # the production state this branch holds
    production: bool = False
    restored: RestoredDatabase | None = None  # the cluster behind its compute
    port: int | None = None
    busy: int = 0  # workers in progress


class _Handler(JsonHandler):
    fake: FakeNeon
    timeout = 60


class FakeNeon(ServedFake):
    """The fake API. ``start()`` it, use :attr:`base_url`, ``stop()`` it.

    Args:
        installation: The self-hosted installation behind the production branch.
        api_key: The only key accepted.
        history_retention_seconds: The project's retention (§3.7).
        database, role: The database and role every branch has.
    """

    handler = _Handler
    thread_name = "fake-neon"

    def __init__(self, installation: Installation, *, api_key: str,
                 history_retention_seconds: int = 86400, database: str = "app",
                 role: str = "postgres") -> None:
        self.inst = installation
        self.api_key = api_key
        self.database = database
        self.role = role
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        self._injections: list[Injection] = []
        self._slow_polls = 0
        self._error_polls = 0
        self._fail_next: list[str] = []
        self._lock = threading.RLock()
        self._pg_lock = threading.Lock()  # one real restore / swap at a time
        self._workers: list[threading.Thread] = []
        self._counter = itertools.count(1)
        self._rng = random.Random(7)
        self.ops: dict[str, _Op] = {}
        self.branches: dict[str, _Branch] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.deleted: dict[str, str] = {}  # branch id -> name, of every deleted branch
        self._sh = installation.runtime().provider
        created = self._sh.restore_window().earliest or datetime.now(UTC)
        self.project_id = (f"{self._rng.choice(_WORDS)}-{self._rng.choice(_NOUNS)}-"
                           f"{self._rng.randrange(10**5, 10**6)}")
        now = iso(datetime.now(UTC))
        self.project = {
            "id": self.project_id, "platform_id": "aws", "region_id": "aws-us-east-2",
            "name": "restorekit-fake", "provisioner": "k8s-neonvm", "pg_version": 15,
            "history_retention_seconds": history_retention_seconds,
            "created_at": iso(created), "updated_at": now, "proxy_host": "127.0.0.1",
            # Neon keeps the roles' passwords, so connection_uri can hand them out.
            "owner_id": "fake", "creation_source": "console", "store_passwords": True,
        }
        prod = self._new_branch("main", parent_id=None, point=RestorePoint.latest(),
                                created_at=created, production=True)
        prod.data.update(default=True, current_state="ready", parent_lsn=None)
        prod.port = installation.production.port
        self.production_branch_id = prod.data["id"]
        self._new_endpoint(prod, state="active")
        self.scratch_dir = make_dir(installation.root / "neon-fake", default_os_user(), mode=0o755)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.url + API_PREFIX

    def stop(self) -> None:
        """Stop serving, wait for the restores under way and drop the scratch branches' data."""
        super().stop()
        for worker in list(self._workers):
            worker.join(timeout=120)
        with self._lock:
            for branch in self.branches.values():
                if branch.restored is not None and not branch.production:
                    with contextlib.suppress(RestoreKitError, OSError):
                        self._sh.discard(branch.restored)
                    branch.restored = None
        shutil.rmtree(self.scratch_dir, ignore_errors=True)

    # -- test controls -----------------------------------------------------------------------

    def inject(self, status: int, *, method: str | None = None, path: str | None = None,
               times: int = 1, retry_after: float | str | None = None,
               message: str | None = None, code: str = "") -> None:
        """Answer the next ``times`` matching requests with ``status`` (path: a regex searched
        in the path without /api/v2)."""
        default = {423: "project already has running conflicting operations, scheduling of "
                        "new ones is prohibited",
                   429: "rate limit exceeded", 503: "service temporarily unavailable",
                   500: "internal server error"}.get(status, f"injected {status}")
        with self._lock:
            self._injections.append(Injection(
                status=status, method=method, path=re.compile(path) if path else None,
                times=times, retry_after=None if retry_after is None else str(retry_after),
                message=message or default, code=code))

    def slow_operations(self, polls: int) -> None:
        """Operations created from now on report ``running`` for their first ``polls`` polls."""
        self._slow_polls = polls

    def erroring_operations(self, polls: int) -> None:
        """Operations created from now on report ``error`` (Neon retrying) for ``polls`` polls
        before they finish."""
        self._error_polls = polls

    def fail_next_operation(self, error: str = "timeline creation failed: injected") -> None:
        """The next operation created ends ``failed`` with ``error``."""
        self._fail_next.append(error)

    def reset_controls(self) -> None:
        with self._lock:
            self._injections.clear()
            self._fail_next.clear()
            self._slow_polls = 0
            self._error_polls = 0

    def calls(self, method: str, pattern: str = "") -> list[Recorded]:
        """Recorded requests with ``method`` whose path matches ``pattern`` (regex, full)."""
        rx = re.compile(pattern) if pattern else None
        return [r for r in self.requests
                if r.method == method and (rx is None or rx.fullmatch(r.path))]

    def branch_named(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return next((b.data for b in self.branches.values() if b.data["name"] == name), None)

    @property
    def default_branch_id(self) -> str:
        """The project's default branch: production until ``set_as_default`` moves it (§3.6)."""
        with self._lock:
            return next((b.data["id"] for b in self.branches.values() if b.data.get("default")),
                        self.production_branch_id)

    def branch_port(self, branch_id: str) -> int | None:
        return self.branches[branch_id].port if branch_id in self.branches else None

    def wait_idle(self, timeout: float = 120) -> None:
        """Wait for every worker (restores, swaps) to finish."""
        deadline = time.monotonic() + timeout
        for worker in list(self._workers):
            worker.join(timeout=max(deadline - time.monotonic(), 0))

    # -- objects -----------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        return (f"{prefix}-{self._rng.choice(_WORDS)}-{self._rng.choice(_NOUNS)}-"
                f"{next(self._counter):02d}{self._rng.randrange(1000, 10000)}")

    def _new_branch(self, name: str, *, parent_id: str | None, point: RestorePoint,
                    created_at: datetime | None = None, production: bool = False,
                    parent_lsn: str | None = None, parent_timestamp: str | None = None,
                    protected: bool = False) -> _Branch:
        now = iso(created_at or datetime.now(UTC))
        data: dict[str, Any] = {
            "id": self._id("br"), "project_id": self.project_id, "name": name,
            "current_state": "init", "state_changed_at": now, "creation_source": "console",
            "default": False, "protected": protected, "created_at": now, "updated_at": now,
            "cpu_used_sec": 0, "compute_time_seconds": 0, "active_time_seconds": 0,
            "written_data_bytes": 0, "data_transfer_bytes": 0, "logical_size": 0,
        }
        parents = {"parent_id": parent_id, "parent_lsn": parent_lsn,
                   "parent_timestamp": parent_timestamp}
        data.update({key: value for key, value in parents.items() if value})  # absent when unset
        branch = _Branch(data=data, point=point, production=production)
        self.branches[data["id"]] = branch
        return branch

    def _new_endpoint(self, branch: _Branch, *, state: str = "init",
                      kind: str = "read_write") -> dict[str, Any]:
        now = iso(datetime.now(UTC))
        ep_id = self._id("ep")
        endpoint = {
            "id": ep_id, "host": "127.0.0.1", "branch_id": branch.data["id"],
            "project_id": self.project_id, "type": kind, "current_state": state,
            "pooler_enabled": False, "pooler_mode": "transaction", "disabled": False,
            "passwordless_access": True, "suspend_timeout_seconds": 0,
            "autoscaling_limit_min_cu": 0.25, "autoscaling_limit_max_cu": 1,
            "region_id": "aws-us-east-2", "created_at": now, "updated_at": now,
            "settings": {}, "provisioner": "k8s-neonvm",
        }
        self.endpoints[ep_id] = endpoint
        return endpoint

    def _new_op(self, action: str, branch_id: str, *, endpoint_id: str | None = None,
                ready: bool = True) -> _Op:
        now = iso(datetime.now(UTC))
        data = {"id": str(uuid.uuid4()), "project_id": self.project_id, "branch_id": branch_id,
                "action": action, "status": "running", "failures_count": 0,
                "created_at": now, "updated_at": now, "total_duration_ms": 0}
        if endpoint_id:
            data["endpoint_id"] = endpoint_id
        event = threading.Event()
        if ready:
            event.set()
        op = _Op(data=data, ready=event, polls_left=self._slow_polls,
                 error_polls=self._error_polls,
                 fail=self._fail_next.pop(0) if self._fail_next else None)
        self.ops[data["id"]] = op
        return op

    def _poll(self, op: _Op) -> dict[str, Any]:
        data = op.data
        op.polls += 1
        if data["status"] in ("finished", "failed", "skipped", "cancelled"):
            return dict(data)
        data["updated_at"] = iso(datetime.now(UTC))
        if op.polls_left > 0:
            op.polls_left -= 1
            data["status"] = "running"
        elif not op.ready.is_set():
            data["status"] = "running"
        elif op.error_polls > 0:
            op.error_polls -= 1
            data["status"] = "error"
            data["failures_count"] += 1
            data["error"] = "compute did not start in time; retrying"
            data["retry_at"] = iso(datetime.now(UTC) + timedelta(seconds=1))
        elif op.fail:
            data["status"] = "failed"
            data["error"] = op.fail
        else:
            data["status"] = "finished"
            data.pop("error", None)
            data.pop("retry_at", None)
            data["total_duration_ms"] = int(
                (datetime.now(UTC) - _parse_ts(data["created_at"])).total_seconds() * 1000)
        return dict(data)

    def _branch_public(self, branch: _Branch) -> dict[str, Any]:
        return dict(branch.data)

    # -- real work ---------------------------------------------------------------------------

    def _production(self) -> _Branch:
        return self.branches[self.production_branch_id]

    def _head_lsn(self) -> str | None:
        """The production cluster's current WAL position, or None when its compute is down."""
        try:
            dsn = self.inst.production.dsn(self.database)
            with psycopg.connect(dsn, connect_timeout=3) as conn:
                row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        except psycopg.OperationalError:
            return None
        return str(row[0]) if row else None

    def _ensure_archived(self) -> None:
        """Neon never loses committed WAL: make the archive hold all of it before branching."""
        if self._head_lsn() is not None:
            self.inst.wait_archived()

    def _effective(self, point: RestorePoint, window: RestoreWindow) -> RestorePoint:
        """Past the last archived commit the state is the end of the archive (everything was
        archived first), which PostgreSQL reaches by replaying all of it."""
        if (point.kind is PointKind.TIME and window.latest and point.time
                and point.time > window.latest):
            return RestorePoint.latest()
        if (point.kind is PointKind.LSN and window.latest_lsn and point.value
                and parse_lsn(point.value) > parse_lsn(window.latest_lsn)):
            return RestorePoint.latest()
        return point

    def _materialize(self, branch: _Branch, ops: list[_Op], endpoint: dict[str, Any]) -> None:
        """Restore ``branch.point`` into a new local cluster: the branch's compute."""
        def work() -> None:
            with self._pg_lock:
                self._ensure_archived()
                window = self._sh.restore_window()
                point = self._effective(branch.point, window)
                restored = self._sh.restore(point, name=f"neon-{branch.data['id']}", window=window)
            with self._lock:
                branch.restored = restored
                branch.port = int(parse(restored.dsn.get_secret_value())["port"])
                branch.data["current_state"] = "ready"
                branch.data["state_changed_at"] = iso(datetime.now(UTC))
                if not branch.data.get("parent_lsn") and restored.recovered_to_lsn:
                    branch.data["parent_lsn"] = restored.recovered_to_lsn
                endpoint["current_state"] = "active"

        self._run(work, ops, branch)

    def _run(self, work: Callable[[], None], ops: list[_Op], branch: _Branch) -> None:
        def target() -> None:
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - reported through the operations
                for op in ops:
                    op.fail = f"{type(exc).__name__}: {exc}"[:500]
            finally:
                with self._lock:
                    branch.busy -= 1
                for op in ops:
                    op.ready.set()

        branch.busy += 1
        worker = threading.Thread(target=target, name=f"fake-neon-{branch.data['id']}",
                                  daemon=True)
        self._workers.append(worker)
        worker.start()

    def _restore_production(self, point: RestorePoint, ops: list[_Op]) -> None:
        prod = self._production()
        n = next(self._counter)

        def work() -> None:
            with self._pg_lock:
                self._ensure_archived()
                window = self._sh.restore_window()
                source = self._sh.restore(self._effective(point, window),
                                          name=f"neon-inplace-{n}", window=window)
                try:
                    self._swap_databases(source, n)
                finally:
                    self._sh.discard(source)
            with self._lock:
                prod.data["current_state"] = "ready"
                prod.data["last_reset_at"] = iso(datetime.now(UTC))

        self._run(work, ops, prod)

    def _swap_databases(self, source: RestoredDatabase, n: int) -> None:
        """Replace each branch database in production with the restored cluster's copy."""
        prod = self.inst.production
        tool = prod.tool
        for db in (self.database,):
            dump = self.scratch_dir / f"inplace-{n}-{db}.dump"
            tmp = f"{db}__restoring"
            # The copy keeps production's roles and passwords; pg_* tools get them through
            # PGPASSWORD, never argv.
            src_dsn, src_env = password_env(merge(source.dsn.get_secret_value(), dbname=db))
            tool.run("pg_dump", "-Fc", "-f", str(dump), "-d", src_dsn, env=src_env, timeout=300)
            with psycopg.connect(prod.dsn(), autocommit=True) as conn:
                row = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database "
                                   "WHERE datname = %s", (db,)).fetchone()
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(tmp)))
                # Same owner as before (the app's role owns its database, as on Neon).
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 OWNER {}").format(
                    sql.Identifier(tmp), sql.Identifier(row[0] if row else "postgres")))
            dst_dsn, dst_env = password_env(prod.dsn(tmp))
            tool.run("pg_restore", "--exit-on-error", "-d", dst_dsn, str(dump), env=dst_env,
                     timeout=300)
            with psycopg.connect(prod.dsn(), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))
                conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(tmp), sql.Identifier(db)))
            dump.unlink(missing_ok=True)

    # -- request handling --------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str],
               raw_body: bytes) -> tuple[int, dict[str, str], Any]:
        split = urlsplit(raw_path)
        path = split.path
        query = parse_qs(split.query, keep_blank_values=True)
        body: Any = None
        request_id = headers.get("x-request-id") or str(uuid.uuid4())
        record = Recorded(method=method, path=path.removeprefix(API_PREFIX), query=query,
                          headers=dict(headers), body=None)
        with self._lock:
            self.requests.append(record)
        try:
            if raw_body:
                try:
                    body = json.loads(raw_body)
                except ValueError:
                    raise ApiError(400, "request body is not valid JSON") from None
                record.body = body
            status, payload = self._dispatch(method, path, query, headers, body)
            record.status = status
            return status, {"X-Request-ID": request_id}, payload
        except ApiError as exc:
            record.status = exc.status
            if exc.violation:
                with self._lock:
                    self.violations.append(f"{method} {record.path}: {exc.status} {exc.message}")
            return exc.status, {"X-Request-ID": request_id, **exc.headers}, {
                "code": exc.code, "message": exc.message, "request_id": request_id}

    def _dispatch(self, method: str, path: str, query: dict[str, list[str]],
                  headers: dict[str, str], body: Any) -> tuple[int, Any]:
        if headers.get("authorization") != f"Bearer {self.api_key}":
            raise ApiError(401, "authentication required: the API key is missing or invalid")
        if "application/json" not in headers.get("accept", ""):
            raise ApiError(400, "Accept: application/json is required")
        if body is not None and not headers.get("content-type", "").startswith("application/json"):
            raise ApiError(400, "Content-Type: application/json is required for a body")
        with self._lock:
            for inj in self._injections:
                if inj.times > 0 and (inj.method is None or inj.method == method) and (
                        inj.path is None or inj.path.search(path.removeprefix(API_PREFIX))):
                    inj.times -= 1
                    extra = {"Retry-After": inj.retry_after} if inj.retry_after else {}
                    raise ApiError(inj.status, inj.message, code=inj.code, headers=extra,
                                   violation=False)
        if not path.startswith(API_PREFIX + "/"):
            raise ApiError(404, f"no route {path}")
        parts = path.removeprefix(API_PREFIX).strip("/").split("/")
        if len(parts) < 2 or parts[0] != "projects":
            raise ApiError(404, f"no route {path}")
        if parts[1] != self.project_id:
            raise ApiError(404, f"project {parts[1]} not found", violation=False)
        rest = parts[2:]
        route = (method, tuple("*" if i % 2 else p for i, p in enumerate(rest)))
        handlers: dict[tuple[str, tuple[str, ...]], Callable[..., tuple[int, Any]]] = {
            ("GET", ()): self._get_project,
            ("GET", ("branches",)): self._list_branches,
            ("POST", ("branches",)): self._create_branch,
            ("GET", ("branches", "*")): self._get_branch,
            ("PATCH", ("branches", "*")): self._patch_branch,
            ("DELETE", ("branches", "*")): self._delete_branch,
            ("POST", ("branches", "*", "restore")): self._restore_branch,
            ("POST", ("branches", "*", "set_as_default")): self._set_as_default,
            ("GET", ("branches", "*", "endpoints")): self._branch_endpoints,
            ("GET", ("branches", "*", "roles")): self._branch_roles,
            ("GET", ("branches", "*", "databases")): self._branch_databases,
            ("POST", ("endpoints",)): self._create_endpoint,
            ("GET", ("operations",)): self._list_operations,
            ("GET", ("operations", "*")): self._get_operation,
            ("GET", ("connection_uri",)): self._connection_uri,
        }
        handler = handlers.get(route)
        if handler is None:
            known = {m for (m, r) in handlers if r == route[1]}
            if known:
                raise ApiError(405, f"method {method} not allowed on {path}")
            raise ApiError(404, f"no route {method} {path}")
        ids = [p for i, p in enumerate(rest) if i % 2]
        with self._lock:
            return handler(*ids, query=query, body=body)

    # -- endpoints of the API ----------------------------------------------------------------

    def _require_no_body(self, body: Any) -> None:
        if body is not None:
            raise ApiError(400, "this method takes no request body")

    def _get_project(self, *, query: Any, body: Any) -> tuple[int, Any]:
        self._require_no_body(body)
        return 200, {"project": dict(self.project)}

    def _branch(self, branch_id: str) -> _Branch:
        branch = self.branches.get(branch_id)
        if branch is None:
            raise ApiError(404, f"branch {branch_id} not found", code="", violation=False)
        return branch

    def _list_branches(self, *, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        self._require_no_body(body)
        unknown = set(query) - {"search", "sort_by", "cursor", "sort_order", "limit",
                                "include_deleted"}
        if unknown:
            raise ApiError(400, f"unknown query parameter(s): {', '.join(sorted(unknown))}")
        limit = 10000
        if "limit" in query:
            try:
                limit = int(query["limit"][0])
            except ValueError:
                raise ApiError(400, "limit must be an integer") from None
            if not 1 <= limit <= 10000:
                raise ApiError(400, "limit must be between 1 and 10000")
        search = (query.get("search") or [""])[0]
        found = [self._branch_public(b) for b in self.branches.values()
                 if not search or search in b.data["name"] or search in b.data["id"]]
        found.sort(key=lambda b: b["updated_at"], reverse=True)
        return 200, {"branches": found[:limit], "annotations": {}}

    def _get_branch(self, branch_id: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self._require_no_body(body)
        return 200, {"branch": self._branch_public(self._branch(branch_id))}

    def _create_branch(self, *, query: Any, body: Any) -> tuple[int, Any]:
        body = {} if body is None else body
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        unknown = set(body) - {"branch", "endpoints", "annotation_value"}
        if unknown:
            raise ApiError(400, f"unknown field(s) {', '.join(sorted(unknown))}")
        spec = body.get("branch") or {}
        if not isinstance(spec, dict):
            raise ApiError(400, "branch must be an object")
        unknown = set(spec) - BRANCH_KEYS
        if unknown:
            raise ApiError(400, f"unknown branch field(s) {', '.join(sorted(unknown))}")
        endpoints = body.get("endpoints") or []
        if not isinstance(endpoints, list) or not all(isinstance(e, dict) for e in endpoints):
            raise ApiError(400, "endpoints must be an array of objects")
        for ep in endpoints:
            if ep.get("type") not in ("read_write", "read_only"):
                raise ApiError(400, "endpoints[].type must be read_write or read_only")
            if set(ep) - ENDPOINT_KEYS:
                raise ApiError(400, f"unknown endpoint field(s) {sorted(set(ep) - ENDPOINT_KEYS)}")
        if sum(e["type"] == "read_write" for e in endpoints) > 1:
            raise ApiError(400, "a branch can have only one read_write endpoint")
        if "protected" in spec and not isinstance(spec["protected"], bool):
            raise ApiError(400, "protected must be a boolean")
        if "parent_lsn" in spec and "parent_timestamp" in spec:
            raise ApiError(400, "specify parent_lsn or parent_timestamp, not both")
        parent = self._branch(spec.get("parent_id") or self.default_branch_id)
        name = spec.get("name") or self._id("br")
        if not isinstance(name, str) or not 0 < len(name) <= 256:
            raise ApiError(400, "name must be a string of 1-256 characters")
        if any(b.data["name"] == name for b in self.branches.values()):
            raise ApiError(409, f"branch with name {name!r} already exists", violation=False)
        now = datetime.now(UTC)
        parent_lsn = parent_ts = None
        if "parent_timestamp" in spec:
            text = _matching(spec, "parent_timestamp", _RFC3339,
                             "an RFC 3339 timestamp with a time zone")
            when = _parse_ts(text)
            earliest = max(now - timedelta(seconds=self.project["history_retention_seconds"]),
                           _parse_ts(parent.data["created_at"]))
            if when > now or when < earliest:
                raise ApiError(400, f"parent_timestamp {text} is outside the history retention "
                                    f"window [{iso(earliest)} .. {iso(now)}]", violation=False)
            _production_only(parent, "parent_timestamp")
            point = RestorePoint.at(when)
            parent_ts = text
        elif "parent_lsn" in spec:
            text = _matching(spec, "parent_lsn", _LSN, "an LSN")
            _production_only(parent, "parent_lsn")
            point = RestorePoint(PointKind.LSN, value=text)
            parent_lsn = text
        elif parent.production:
            head = self._head_lsn()
            point = RestorePoint(PointKind.LSN, value=head) if head else RestorePoint.latest()
            parent_lsn = head
            parent_ts = iso(now)
        else:
            point = parent.point  # the head of a branch nobody writes to: its own point
            parent_lsn = parent.data.get("parent_lsn")
            parent_ts = parent.data.get("parent_timestamp")
        branch = self._new_branch(name, parent_id=parent.data["id"], point=point,
                                  parent_lsn=parent_lsn, parent_timestamp=parent_ts,
                                  protected=bool(spec.get("protected", False)))
        branch.data["creation_source"] = "api"
        ops = [self._new_op("create_branch", branch.data["id"])]
        created_eps = []
        rw = next((e for e in endpoints if e["type"] == "read_write"), None)
        if rw is not None:
            endpoint = self._new_endpoint(branch)
            created_eps.append(endpoint)
            start = self._new_op("start_compute", branch.data["id"], endpoint_id=endpoint["id"],
                                 ready=False)
            ops.append(start)
            self._materialize(branch, [start], endpoint)
        else:
            branch.data["current_state"] = "ready"
        return 201, {
            "branch": self._branch_public(branch),
            "endpoints": [dict(e) for e in created_eps],
            "operations": [dict(op.data) for op in ops],
            "roles": [self._role()],
            "databases": [self._database(branch)],
            "connection_uris": [],
        }

    def _patch_branch(self, branch_id: str, *, query: Any, body: Any) -> tuple[int, Any]:
        branch = self._branch(branch_id)
        if (not isinstance(body, dict) or set(body) != {"branch"}
                or not isinstance(body["branch"], dict)):
            raise ApiError(400, 'body must be {"branch": {...}}')
        spec = body["branch"]
        unknown = set(spec) - {"name", "protected", "expires_at"}
        if unknown:
            raise ApiError(400, f"unknown branch field(s) {', '.join(sorted(unknown))}")
        if "name" in spec:
            if not isinstance(spec["name"], str) or not spec["name"]:
                raise ApiError(400, "name must be a non-empty string")
            if any(b.data["name"] == spec["name"] and b is not branch
                   for b in self.branches.values()):
                raise ApiError(409, f"branch with name {spec['name']!r} already exists",
                               violation=False)
            branch.data["name"] = spec["name"]
        if "protected" in spec:
            branch.data["protected"] = bool(spec["protected"])
        branch.data["updated_at"] = iso(datetime.now(UTC))
        return 200, {"branch": self._branch_public(branch), "operations": []}

    def _delete_branch(self, branch_id: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self._require_no_body(body)
        branch = self.branches.get(branch_id)
        if branch is None:
            return 204, None
        if branch.production or branch.data.get("default"):
            raise ApiError(400, "cannot delete the project's root or default branch",
                           violation=False)
        if any(b.data.get("parent_id") == branch_id for b in self.branches.values()):
            raise ApiError(400, "cannot delete a branch that has children", violation=False)
        if branch.busy:
            raise ApiError(423, "branch is locked by an operation in progress", violation=False)
        restored, branch.restored = branch.restored, None
        for ep_id in [e for e, ep in self.endpoints.items() if ep["branch_id"] == branch_id]:
            del self.endpoints[ep_id]
        del self.branches[branch_id]
        self.deleted[branch_id] = branch.data["name"]
        ops = [self._new_op("suspend_compute", branch_id),
               self._new_op("delete_timeline", branch_id, ready=False)]

        def work() -> None:  # storage goes after the response, as on Neon (§3.6)
            if restored is not None:
                with self._pg_lock:
                    self._sh.discard(restored)

        self._run(work, ops[1:], branch)
        data = self._branch_public(branch)
        data["current_state"] = "archived"
        return 200, {"branch": data, "operations": [dict(op.data) for op in ops]}

    def _restore_branch(self, branch_id: str, *, query: Any, body: Any) -> tuple[int, Any]:
        target = self._branch(branch_id)
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object (BranchRestoreRequest)")
        unknown = set(body) - RESTORE_KEYS
        if unknown:
            raise ApiError(400, f"unknown field(s) {', '.join(sorted(unknown))}")
        source_id = body.get("source_branch_id")
        if not source_id:
            raise ApiError(400, "source_branch_id is required")
        source = self._branch(source_id)
        has_ts, has_lsn = "source_timestamp" in body, "source_lsn" in body
        if has_ts and has_lsn:
            raise ApiError(400, "specify source_lsn or source_timestamp, not both")
        children = [b for b in self.branches.values() if b.data.get("parent_id") == branch_id]
        preserve = body.get("preserve_under_name")
        if source_id == branch_id and not (has_ts or has_lsn):
            raise ApiError(400, "restoring a branch onto itself needs source_timestamp or "
                                "source_lsn")
        if (source_id == branch_id or children) and not preserve:
            raise ApiError(400, "preserve_under_name is required when restoring a branch onto "
                                "itself or when it has children")
        if not target.production:
            raise ApiError(400, "the fake restores the production branch only", violation=False)
        if target.busy:
            raise ApiError(423, "branch is locked by an operation in progress", violation=False)
        if has_ts:
            text = _matching(body, "source_timestamp", _RFC3339, "an RFC 3339 timestamp")
            _production_only(source, "source_timestamp")
            point = RestorePoint.at(_parse_ts(text))
        elif has_lsn:
            point = RestorePoint(PointKind.LSN, value=_matching(body, "source_lsn", _LSN, "an LSN"))
        else:
            point = source.point
        if any(b.data["name"] == preserve for b in self.branches.values()):
            raise ApiError(409, f"branch with name {preserve!r} already exists", violation=False)
        head = self._head_lsn()
        if head is None:
            raise ApiError(423, "the branch's compute is not running", violation=False)
        now = datetime.now(UTC)
        preserved = self._new_branch(
            preserve, parent_id=target.data.get("parent_id"),
            point=RestorePoint(PointKind.LSN, value=head), parent_lsn=head,
            parent_timestamp=iso(now))
        preserved.data.update(current_state="ready", creation_source="restore")
        for child in children:
            child.data["parent_id"] = preserved.data["id"]
        target.data.update(parent_id=preserved.data["id"], current_state="resetting",
                           restore_status="restored",
                           restored_from=source_id, restored_as=preserved.data["id"])
        ops = [self._new_op("create_branch", preserved.data["id"]),
               self._new_op("reset_branch", branch_id, ready=False)]
        self._restore_production(point, ops[1:])
        return 200, {"branch": self._branch_public(target),
                     "operations": [dict(op.data) for op in ops]}

    def _set_as_default(self, branch_id: str, *, query: Any, body: Any) -> tuple[int, Any]:
        """§3.6: the branch becomes the project's default; the previous default stops being
        one. 200 -> BranchOperations, like the other branch calls (an operation that runs, then
        finishes; the test controls apply to it)."""
        self._require_no_body(body)
        branch = self._branch(branch_id)
        now = iso(datetime.now(UTC))
        for other in self.branches.values():
            if other is not branch and other.data.get("default"):
                other.data.update(default=False, updated_at=now)
        if not branch.data.get("default"):
            branch.data.update(default=True, updated_at=now)
        op = self._new_op("apply_config", branch_id)
        return 200, {"branch": self._branch_public(branch), "operations": [dict(op.data)]}

    def _branch_endpoints(self, branch_id: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self._require_no_body(body)
        self._branch(branch_id)
        return 200, {"endpoints": [dict(e) for e in self.endpoints.values()
                                   if e["branch_id"] == branch_id]}

    def _role(self) -> dict[str, Any]:
        return {"branch_id": self.production_branch_id, "name": self.role, "protected": False,
                "created_at": self.project["created_at"], "updated_at": self.project["created_at"]}

    def _database(self, branch: _Branch) -> dict[str, Any]:
        return {"id": 1, "branch_id": branch.data["id"], "name": self.database,
                "owner_name": self.role, "created_at": branch.data["created_at"],
                "updated_at": branch.data["created_at"]}

    def _branch_roles(self, branch_id: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self._branch(branch_id)
        return 200, {"roles": [{**self._role(), "branch_id": branch_id}]}

    def _branch_databases(self, branch_id: str, *, query: Any, body: Any) -> tuple[int, Any]:
        return 200, {"databases": [self._database(self._branch(branch_id))]}

    def _create_endpoint(self, *, query: Any, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("endpoint"), dict):
            raise ApiError(400, 'body must be {"endpoint": {...}}')
        spec = body["endpoint"]
        if not spec.get("branch_id") or spec.get("type") not in ("read_write", "read_only"):
            raise ApiError(400, "endpoint.branch_id and endpoint.type are required")
        if set(spec) - ENDPOINT_KEYS:
            raise ApiError(400, f"unknown endpoint field(s) {sorted(set(spec) - ENDPOINT_KEYS)}")
        branch = self._branch(spec["branch_id"])
        if spec["type"] == "read_write" and any(
                e["branch_id"] == branch.data["id"] and e["type"] == "read_write"
                for e in self.endpoints.values()):
            raise ApiError(400, "the branch already has a read_write endpoint", violation=False)
        endpoint = self._new_endpoint(branch, kind=spec["type"])
        op = self._new_op("start_compute", branch.data["id"], endpoint_id=endpoint["id"],
                          ready=False)
        self._materialize(branch, [op], endpoint)
        return 201, {"endpoint": dict(endpoint), "operations": [dict(op.data)]}

    def _list_operations(self, *, query: Any, body: Any) -> tuple[int, Any]:
        return 200, {"operations": [dict(op.data) for op in self.ops.values()],
                     "pagination": {"cursor": ""}}

    def _get_operation(self, op_id: str, *, query: Any, body: Any) -> tuple[int, Any]:
        self._require_no_body(body)
        try:
            uuid.UUID(op_id)
        except ValueError:
            raise ApiError(400, f"operation_id {op_id!r} is not a UUID") from None
        op = self.ops.get(op_id)
        if op is None:
            raise ApiError(404, f"operation {op_id} not found", violation=False)
        return 200, {"operation": self._poll(op)}

    def _connection_uri(self, *, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        self._require_no_body(body)
        missing = [k for k in ("database_name", "role_name") if not (query.get(k) or [""])[0]]
        if missing:
            raise ApiError(400, f"missing required query parameter(s): {', '.join(missing)}")
        unknown = set(query) - {"database_name", "role_name", "branch_id", "endpoint_id", "pooled"}
        if unknown:
            raise ApiError(400, f"unknown query parameter(s): {', '.join(sorted(unknown))}")
        branch = self._branch((query.get("branch_id") or [self.default_branch_id])[0])
        db, role = query["database_name"][0], query["role_name"][0]
        if db != self.database:
            raise ApiError(404, f"database {db!r} not found on branch", violation=False)
        if role != self.role:
            raise ApiError(404, f"role {role!r} not found on branch", violation=False)
        endpoint = next((e for e in self.endpoints.values() if e["type"] == "read_write"
                         and e["branch_id"] == branch.data["id"]), None)
        if endpoint is None:
            raise ApiError(404, "the branch has no read_write endpoint", violation=False)
        if branch.port is None:
            raise ApiError(423, "the endpoint is still starting", violation=False)
        # As on Neon, the URI carries the role's password (a branch keeps its parent's roles
        # and passwords).
        password = self.inst.production.password
        auth = f"{quote(role, safe='')}:{quote(password, safe='')}" if password else role
        return 200, {"uri": f"postgresql://{auth}@127.0.0.1:{branch.port}/{db}"}


# -- a whole world: installation + fake + restorekit.toml with a neon target -------------------

API_KEY_ENV = "RESTOREKIT_TEST_NEON_API_KEY"

NEON_TARGET = """\
# Written by tests/fakes/neon_server.py: target "production" on the fake Neon API.
[restorekit]
state_dir = "{state}"

[targets.production]
provider = "neon"
{dsn_line}
repository = "file://{repo}"   # for the logical snapshots taken before a repair
tier = "critical"

[targets.production.neon]
project_id = "{project_id}"
branch_id = "{branch_id}"
api_key_env = "{api_key_env}"
database = "app"
role = "postgres"
base_url = "{base_url}"
poll_interval_seconds = 0.05
timeout_seconds = 300

"""


@dataclass
class NeonWorld(InstallationWorld):
    """A self-hosted installation serving as Neon's production branch, the fake API in front,
    and a restorekit.toml (``config``) whose target "production" is provider "neon"."""

    fake: FakeNeon
    api_key: str
    _env_before: str | None = field(default=None, repr=False)

    def scratch_branches(self) -> list[str]:
        """Names of the scratch branches restorekit created and has not deleted (its backup
        branches aside)."""
        return [b.data["name"] for b in self.fake.branches.values()
                if b.data["name"].startswith("restorekit-")
                and not b.data["name"].startswith("restorekit-backup-")]

    def provider(self, **overrides: Any) -> Any:
        from restorekit.providers.neon import NeonProvider

        rt = self.runtime()
        return NeonProvider.from_config(rt.config, rt.settings, **overrides)


def build_neon_world(root: Path, *, start_app: bool = True) -> NeonWorld:
    inst = build_installation(root)
    api_key = "neon-test-" + uuid.uuid4().hex
    fake = FakeNeon(inst, api_key=api_key).start()
    text = inst.config.read_text()
    tail = text[text.index("[targets.production.app]"):]
    state = root / "neon-state"
    config = root / "neon.toml"
    config.write_text(NEON_TARGET.format(
        state=state, dsn_line=inst.dsn_line, repo=inst.root / "repo",
        project_id=fake.project_id,
        branch_id=fake.production_branch_id, api_key_env=API_KEY_ENV, base_url=fake.base_url,
    ) + tail)
    # What the restore is verified against: the installation's baseline.
    src = inst.runtime().settings.state_dir.absolute() / "baselines" / "production.json"
    dst = state.absolute() / "baselines" / "production.json"
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    world = NeonWorld(installation=inst, fake=fake, config=config, api_key=api_key,
                      _env_before=os.environ.get(API_KEY_ENV))
    os.environ[API_KEY_ENV] = api_key
    if start_app:
        rt = world.runtime()
        assert rt.app is not None
        rt.app.start()  # type: ignore[attr-defined]
    return world


def teardown_neon_world(world: NeonWorld) -> None:
    with contextlib.suppress(RestoreKitError, OSError):
        rt = world.runtime()
        if rt.app is not None:
            rt.app.stop(reason="teardown")
    world.fake.stop()
    teardown_installation(world.installation)
    if world._env_before is None:
        os.environ.pop(API_KEY_ENV, None)
    else:
        os.environ[API_KEY_ENV] = world._env_before


@contextlib.contextmanager
def neon_world_in(base: Path, name: str = "neon-world", *,
                  start_app: bool = True) -> Iterator[NeonWorld]:
    """A Neon world under ``base`` (see :class:`NeonWorld`), torn down on the way out."""
    world = build_neon_world(base / f"{name}-{time.monotonic_ns()}", start_app=start_app)
    try:
        yield world
    finally:
        teardown_neon_world(world)


@pytest.fixture(scope="module")
def neon_world(pg_base_dir: Path) -> Iterator[NeonWorld]:
    """A module's Neon world; everything is torn down afterwards."""
    with neon_world_in(pg_base_dir) as world:
        yield world

"""Neon (API v2): branches are restores.

* A restore to a NEW target is a branch of the production branch at a timestamp or an LSN (or
  at its head), with a read-write compute; its DSN comes from ``GET .../connection_uri``.
* An in-place restore is ``POST .../branches/{id}/restore`` from the branch itself, which Neon
  only accepts with a timestamp/LSN AND ``preserve_under_name``: the pre-restore state stays
  behind as a branch named ``restorekit-pre-restore-<UTC time>``.
* A named backup is a branch of the head without a compute, named ``restorekit-backup-...``.
* ``find_point`` bisects over scratch branches at timestamps (:mod:`restorekit.bisect`), each
  deleted as soon as it was read.

Bookkeeping lives in branch names, so nothing but the Neon project is needed: a scratch restore
is named ``<scratch_prefix><restore name>``; adopting it as production makes it the project's
default branch and renames it to drop the prefix, after which neither cleanup nor
:meth:`NeonProvider.discard` will touch it, and restorekit records its id as the target's
production branch (restorekit.production), so every later command uses it.

Every call goes through :meth:`NeonProvider._call`, the one place HTTP errors are translated
(``provider_apis.md`` §3), on the retry loop shared with the other HTTP adapters
(:mod:`restorekit.providers._http`): 423, 429 and 503 are retried for every method with a
bounded backoff that honours ``Retry-After``; other 5xx and network errors are retried for GETs
only (a failed connect for every method: nothing was sent), because a POST/PATCH/DELETE is not
safe to repeat blindly. 401/403 are never retried. What that loop gave up on is not retried
again by the Prefect task (``retry_spent``), so attempts do not multiply.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from restorekit.bisect import find_by_bisection
from restorekit.config import Settings, TargetConfig
from restorekit.damage import Damage, FoundPoint
from restorekit.errors import (
    CapabilityNotSupported,
    ConfigError,
    OperationTimedOut,
    ProviderError,
    RestoreKitError,
    RestorePointError,
    SafetyError,
)
from restorekit.models import (
    BackupInfo,
    PointKind,
    RestoredDatabase,
    RestorePoint,
    RestoreWindow,
    parse_lsn,
)
from restorekit.pg.dsn import Location, location_of, parse, repoint
from restorekit.providers._cloud import (
    ApiRoot,
    EnvVarName,
    load_section,
    section_name,
    token_from_env,
)
from restorekit.providers._http import (
    RetryPolicy,
    api_client,
    header_seconds,
    send,
    sent_request_id,
)
from restorekit.providers.base import Capability, Progress, no_progress

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://console.neon.tech/api/v2"
BACKUP_PREFIX = "restorekit-backup-"
PRESERVE_PREFIX = "restorekit-pre-restore-"

#: Operation statuses (provider_apis.md §3.5). "error" is not terminal: Neon retries the
#: operation itself (failures_count, retry_at), so we keep polling until our deadline.
DONE = frozenset({"finished", "skipped"})
FAILED = frozenset({"failed", "cancelled"})

#: Statuses any method may retry: 423 (locked by another operation), 429 (rejected by the rate
#: limiter before anything happened), 503 (the spec: "always safe to retry").
_RETRY_ANY = frozenset({423, 429, 503})
#: Statuses only an idempotent GET retries.
_RETRY_GET = frozenset({500, 502, 504})

_RESTORE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class NeonSettings(BaseModel):
    """``[targets.NAME.neon]`` in restorekit.toml. Holds the NAME of the API key's variable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project_id: str = Field(min_length=1)
    branch_id: str = Field(pattern=r"^br-[A-Za-z0-9-]+$", description="The production branch.")
    api_key_env: EnvVarName = Field(description="Environment variable holding the API key.")
    database: str = Field(min_length=1)
    role: str = Field(min_length=1)
    base_url: ApiRoot = DEFAULT_BASE_URL
    poll_interval_seconds: float = Field(default=2.0, gt=0, le=300)
    timeout_seconds: float = Field(default=1800.0, gt=0)
    scratch_prefix: str = Field(default="restorekit-", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    find_point_budget: int = Field(default=12, ge=2, le=64,
                                   description="Branches one find_point may make, in all.")
    find_point_precision_seconds: float = Field(default=1.0, gt=0)


class NeonApiError(ProviderError):
    """A Neon API call failed; carries Neon's ``code`` and ``request_id`` (§3 GeneralError)."""

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        retryable: bool,
        status_code: int | None = None,
        retry_after: float | None = None,
        code: str = "",
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, provider="neon", operation=operation, retryable=retryable,
                         status_code=status_code, retry_after=retry_after)
        self.code = code
        self.request_id = request_id


class NeonOperationFailed(ProviderError):
    """A Neon operation ended ``failed`` or ``cancelled``. Not retryable as such: the caller
    decides (a restore re-run finds the branch by name)."""

    def __init__(self, message: str, *, operation: str, action: str, status: str,
                 detail: str) -> None:
        super().__init__(message, provider="neon", operation=operation, retryable=False)
        self.action = action
        self.status = status
        self.detail = detail


class NeonProvider:
    """A Neon project whose production branch restorekit protects.

    Args:
        project_id: The Neon project.
        branch_id: The production branch (``br-...``).
        api_key: The API key (resolved from the environment by :meth:`from_config`).
        database: The application database on every branch.
        role: The role the connection URI is issued for.
        base_url: The API root.
        poll_interval_seconds: Pause between operation polls.
        timeout_seconds: Deadline for one wait on Neon operations.
        scratch_prefix: Branch-name prefix marking restorekit's scratch restores.
        transport: An httpx transport (tests), else httpx's default.
        sleep, clock, now: Injected for tests (time.sleep, time.monotonic, UTC wall clock).
        max_attempts: Attempts per HTTP call, first one included.
        max_retry_wait: The longest single wait between attempts; a ``Retry-After`` asking for
            more is not waited out here: the call fails with a retryable error instead.
        backoff_seconds: The first backoff when no ``Retry-After`` is given (then doubled).
        target_name: The restorekit.toml target, named in the note :meth:`adopt` returns.
        find_point_budget: Branches one :meth:`find_point` may make, the two ends included.
        find_point_precision_seconds: Where :meth:`find_point` stops halving.
    """

    kind: ClassVar[str] = "neon"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.NEW_TARGET_RESTORE,
            Capability.IN_PLACE_RESTORE,
            Capability.POINT_IN_TIME,
            Capability.LSN_TARGET,
            Capability.NAMED_BACKUPS,
            Capability.FIND_POINT,
        }
    )

    def __init__(
        self,
        *,
        project_id: str,
        branch_id: str,
        api_key: SecretStr,
        database: str,
        role: str,
        base_url: str = DEFAULT_BASE_URL,
        poll_interval_seconds: float = 2.0,
        timeout_seconds: float = 1800.0,
        scratch_prefix: str = "restorekit-",
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_attempts: int = 5,
        max_retry_wait: float = 60.0,
        backoff_seconds: float = 1.0,
        http_timeout: float = 30.0,
        target_name: str = "",
        find_point_budget: int = 12,
        find_point_precision_seconds: float = 1.0,
    ) -> None:
        if not api_key.get_secret_value():
            raise ConfigError("the Neon API key is empty")
        if scratch_prefix.startswith(BACKUP_PREFIX) or scratch_prefix.startswith(PRESERVE_PREFIX):
            raise ConfigError(f"scratch_prefix {scratch_prefix!r} overlaps restorekit's backup "
                              "or pre-restore branch names")
        self.project_id = project_id
        self.branch_id = branch_id
        self.database = database
        self.role = role
        self.base_url = base_url.rstrip("/")
        self.poll_interval = poll_interval_seconds
        self.timeout = timeout_seconds
        self.scratch_prefix = scratch_prefix
        self.target_name = target_name
        self.find_point_budget = find_point_budget
        self.find_point_precision = timedelta(seconds=find_point_precision_seconds)
        self.max_attempts = max(1, max_attempts)
        self.max_retry_wait = max_retry_wait
        self.backoff_seconds = backoff_seconds
        self._sleep = sleep
        self._clock = clock
        self._now = now
        self._client = api_client(self.base_url, api_key, transport=transport,
                                  timeout=http_timeout,
                                  headers={"Content-Type": "application/json"})

    def __repr__(self) -> str:
        return f"NeonProvider(project={self.project_id!r}, branch={self.branch_id!r})"

    def close(self) -> None:
        self._client.close()

    # -- construction from restorekit.toml -----------------------------------------------------

    @classmethod
    def from_config(
        cls, target: TargetConfig, settings: Settings, **overrides: Any
    ) -> NeonProvider:
        """Build from ``[targets.NAME.neon]``; the key is read from ``api_key_env`` here, so a
        missing key fails now, not in the middle of a restore. ``overrides`` (transport, sleep,
        clock, timeouts, ...) replace constructor arguments; they are for tests."""
        section = section_name(target.name, "neon")
        cfg = load_section(NeonSettings, target.neon, section)
        key = token_from_env(cfg.api_key_env, "api_key_env", section, "a Neon API key")
        options: dict[str, Any] = {
            "project_id": cfg.project_id, "branch_id": cfg.branch_id, "api_key": key,
            "database": cfg.database, "role": cfg.role, "base_url": cfg.base_url,
            "poll_interval_seconds": cfg.poll_interval_seconds,
            "timeout_seconds": cfg.timeout_seconds, "scratch_prefix": cfg.scratch_prefix,
            "target_name": target.name, "find_point_budget": cfg.find_point_budget,
            "find_point_precision_seconds": cfg.find_point_precision_seconds,
        }
        return cls(**{**options, **overrides})

    # -- DatabaseProvider ----------------------------------------------------------------------

    def restore_window(self) -> RestoreWindow:
        """From ``now - history_retention_seconds`` (not before the production branch existed)
        to now.

        Neon keeps the branch's WAL continuously (safekeepers, no archiving lag), so the head of
        the branch, i.e. "now", is restorable; the Branch schema exposes no head LSN or commit
        time, so there is nothing more precise to report.
        """
        project = _need(self._call("GET", self._p(""), operation="restore_window"), "project")
        branch = self._branch(self.branch_id, operation="restore_window")
        if branch is None:
            raise ConfigError(f"Neon project {self.project_id}: production branch "
                              f"{self.branch_id} does not exist")
        now = self._now()
        retention = int(project.get("history_retention_seconds") or 0)
        earliest = now - timedelta(seconds=retention)
        created = _ts(branch.get("created_at"))
        if created is not None and created > earliest:
            earliest = created
        return RestoreWindow(earliest=earliest, latest=now)

    def list_backups(self) -> list[BackupInfo]:
        backups = [
            _backup_info(b) for b in self._branches(operation="list_backups", search=BACKUP_PREFIX)
            if str(b.get("name", "")).startswith(BACKUP_PREFIX)
        ]
        return sorted(backups, key=lambda b: b.start_time)

    def create_backup(self, label: str = "", *, progress: Progress = no_progress) -> BackupInfo:
        """A branch of the production head without a compute (cheap; nothing runs)."""
        stamp = self._now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        slug = _slug(label)
        name = f"{BACKUP_PREFIX}{stamp}" + (f"-{slug}" if slug else "")
        body = {"branch": {"parent_id": self.branch_id, "name": name, "protected": False}}
        created = self._call("POST", self._p("/branches"), operation="create_backup",
                             json=body, expect=(201,))
        self._wait(created.get("operations") or [], what=f"backup {name}", progress=progress)
        new = _need(created, "branch")
        branch = self._branch(str(_need(new, "id")), operation="create_backup") or new
        info = _backup_info(branch)
        log.info("Neon backup branch %s (%s) at %s", name, info.backup_id, info.stop_lsn)
        return replace(info, label=label or info.label)

    def restore(
        self,
        point: RestorePoint,
        *,
        name: str,
        progress: Progress = no_progress,
        window: RestoreWindow | None = None,
    ) -> RestoredDatabase:
        """Branch production at ``point`` into ``<scratch_prefix><name>`` with a read-write
        compute, wait for every operation, and return the branch's connection URI.

        Idempotent by name: an existing branch of that name (from an earlier attempt) is reused
        and waited for. Everything about ``point`` that can be checked locally is checked
        before the first request, the window before anything is created.

        Raises:
            ConfigError: bad ``name``, or a branch of that name exists at another point.
            CapabilityNotSupported: an xid / restore-point-name / immediate target.
            RestorePointError: the point is in the future or outside the retention window.
            ProviderError: the API refused or an operation failed (``OperationTimedOut`` when
                our deadline passed; the branch may still appear).
        """
        if not _RESTORE_NAME.match(name):
            raise ConfigError(
                f"restore name {name!r} must be 1-63 lower-case letters, digits, '.', '_' or '-'"
            )
        branch_name = self.scratch_prefix + name
        if not self._is_scratch_name(branch_name):
            raise ConfigError(f"restore name {name!r} collides with restorekit's backup or "
                              "pre-restore branch names")
        self._check_point_locally(point, allow=(PointKind.TIME, PointKind.LSN, PointKind.LATEST,
                                                PointKind.BACKUP))
        parent_id = self.branch_id
        if point.kind is PointKind.BACKUP:
            parent_id = self._backup_branch_id(str(point.value))
        else:
            (window or self.restore_window()).check(point, now=self._now())

        started = self._clock()
        existing = self._find_branch(branch_name)
        if existing is not None:
            self._check_same_point(existing, point, parent_id, name)
            log.info("reusing Neon branch %s (%s) from an earlier attempt", branch_name,
                     existing["id"])
            branch = self._wait_branch_ready(existing, progress=progress)
            return self._restored(branch, point, phases={"reuse": self._clock() - started})

        spec: dict[str, Any] = {"parent_id": parent_id, "name": branch_name}
        if point.kind is PointKind.TIME:
            assert point.time is not None
            spec["parent_timestamp"] = rfc3339(point.time)
        elif point.kind is PointKind.LSN:
            spec["parent_lsn"] = str(point.value).upper()
        body = {"branch": spec, "endpoints": [{"type": "read_write"}]}
        created = self._call("POST", self._p("/branches"), operation="restore", json=body,
                             expect=(201,))
        requested = self._clock()
        self._wait(created.get("operations") or [], what=f"branch {branch_name}",
                   progress=progress)
        done = self._clock()
        new = _need(created, "branch")
        branch = self._branch(str(_need(new, "id")), operation="restore") or new
        restored = self._restored(branch, point, phases={"branch create": requested - started,
                                                         "operations": done - requested})
        log.info("Neon branch %s (%s) restored at %s", branch_name, branch["id"], point)
        return restored

    def find_restored(self, name: str) -> RestoredDatabase | None:
        """The ready branch restored as ``name`` (scratch, or adopted under the bare name)."""
        for candidate, scratch in ((self.scratch_prefix + name, True), (name, False)):
            branch = self._find_branch(candidate)
            if branch is None:
                continue
            if branch.get("id") == self.branch_id:
                return None
            if branch.get("current_state") != "ready":
                return None  # still being created: restore() finds and waits for it
            if not self._rw_endpoint(branch["id"]):
                return None
            restored = self._restored(branch, None, phases={})
            return replace(restored, scratch=scratch)
        return None

    def discard(self, restored: RestoredDatabase) -> None:
        """Delete a scratch branch. Refuses production, the project's default branch, protected
        branches and anything not named as a restorekit scratch restore (e.g. adopted)."""
        branch = self._branch(restored.handle, operation="discard")
        if branch is None:
            return  # already gone
        self._refuse_unless_scratch(branch, "delete")
        result = self._call("DELETE", self._p(f"/branches/{branch['id']}"), operation="discard",
                            expect=(200, 204), missing_ok=True)
        if result:
            self._wait(result.get("operations") or [], what=f"delete {branch['name']}",
                       progress=no_progress)
        log.info("deleted Neon branch %s (%s)", branch["name"], branch["id"])

    def adopt(self, restored: RestoredDatabase) -> str | None:
        """Make the restored branch production: the project's default branch
        (``POST .../set_as_default``, §3.6), renamed to drop the scratch prefix so cleanup and
        discard leave it alone.

        It is promoted first and renamed second, so a run killed in between leaves a default
        branch (which discard refuses to delete) that the next adopt only renames. A branch
        already renamed is adopted: adopting twice makes no call.

        Returns:
            None: the new branch id is recorded as the target's production by
            restorekit.production (see :meth:`adopted_location`), nothing is edited by hand.

        Raises:
            ProviderError: the branch does not exist (404), or the API refused.
            SafetyError: the branch is one of restorekit's backups.
        """
        branch = self._branch(restored.handle, operation="adopt")
        if branch is None:
            raise ProviderError(f"Neon branch {restored.handle} does not exist; nothing to adopt",
                                provider=self.kind, operation="adopt", status_code=404)
        branch_id, name = str(branch["id"]), str(branch.get("name", ""))
        if self._is_scratch_name(name):
            if not branch.get("default"):
                result = self._call("POST", self._p(f"/branches/{branch_id}/set_as_default"),
                                    operation="adopt")
                self._wait(result.get("operations") or [], what=f"set {name} as default",
                           progress=no_progress)
                log.info("Neon branch %s (%s) is now the default branch of project %s",
                         name, branch_id, self.project_id)
            new_name = name[len(self.scratch_prefix):]
            result = self._call("PATCH", self._p(f"/branches/{branch_id}"), operation="adopt",
                                json={"branch": {"name": new_name}})
            self._wait(result.get("operations") or [], what=f"rename {name}",
                       progress=no_progress)
            log.info("adopted Neon branch %s as %s", branch_id, new_name)
            name = new_name
        elif name.startswith((BACKUP_PREFIX, PRESERVE_PREFIX)):
            raise SafetyError(f"refusing to adopt Neon branch {name!r}: it is a backup")
        if branch_id != self.branch_id:
            log.info("Neon branch %s (%s) is now production of project %s (was %s)",
                     branch_id, name, self.project_id, self.branch_id)
        return None

    def resume_protection(self) -> Any:
        """Neon protects every branch by itself (history kept by the safekeepers): the adopted
        production branch is protected as long as the project keeps history; returns a
        restorekit.production.Protection saying for how long."""
        from restorekit.production import Protection

        project = _need(self._call("GET", self._p(""), operation="resume_protection"), "project")
        if self._branch(self.branch_id, operation="resume_protection") is None:
            raise ConfigError(f"Neon project {self.project_id}: production branch "
                              f"{self.branch_id} does not exist")
        retention = int(project.get("history_retention_seconds") or 0)
        if retention <= 0:
            return Protection(
                protected=False,
                detail=f"Neon project {self.project_id} keeps no history "
                       "(history_retention_seconds = 0), so no point in time can be restored",
                action="raise the project's history retention (Neon console: Settings, "
                       "Instant restore)")
        return Protection(
            protected=True, first_backup_at=self._now(), backup_id=self.branch_id,
            detail=f"Neon keeps branch {self.branch_id}'s history for "
                   f"{retention / 3600:g} h (point-in-time restore from now on)")

    def adopted_location(self, restored: RestoredDatabase) -> dict[str, object]:
        """What restorekit.production records for an adopted branch: its id, which later
        commands use as ``branch_id`` (restorekit.toml is not edited)."""
        return {"branch_id": restored.handle}

    def list_scratch(self) -> list[RestoredDatabase]:
        """Scratch branches (named with the scratch prefix, not adopted), oldest first."""
        found = [b for b in self._branches(operation="list_scratch", search=self.scratch_prefix)
                 if self._is_scratch_name(str(b.get("name", ""))) and b.get("id") != self.branch_id
                 and not b.get("default")]  # promoted by an adopt that did not get to rename it
        found.sort(key=lambda b: str(b.get("created_at", "")))
        return [
            RestoredDatabase(provider=self.kind, handle=b["id"], dsn=SecretStr(""),
                             point=_branch_point(b))
            for b in found
        ]

    def reaches(self, restored: RestoredDatabase, dsn: str) -> bool:
        """True when ``dsn`` connects to the branch ``restored``: the host and port of its
        connection URI (the pooled ``-pooler`` host counts too), so cleanup keeps what the
        application points at. A branch that is gone or has no compute is reached by nothing."""
        params = {"database_name": self.database, "role_name": self.role,
                  "branch_id": restored.handle}
        found = self._call("GET", self._p("/connection_uri"), operation="reaches",
                           params=params, missing_ok=True)
        return bool(found.get("uri")) and _address(dsn) == _address(str(found["uri"]))

    def restore_in_place(self, point: RestorePoint, *, progress: Progress = no_progress) -> None:
        """Restore the production branch onto itself at ``point`` (a time or an LSN).

        Neon needs both a timestamp/LSN and ``preserve_under_name`` for a same-branch restore
        (§3.4); the pre-restore state is kept as ``restorekit-pre-restore-<UTC time>``, which
        becomes the parent of the restored branch. The branch id and its endpoint stay the same.
        """
        self._check_point_locally(point, allow=(PointKind.TIME, PointKind.LSN))
        self.restore_window().check(point, now=self._now())
        preserve = PRESERVE_PREFIX + self._now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        body: dict[str, Any] = {"source_branch_id": self.branch_id,
                                "preserve_under_name": preserve}
        if point.kind is PointKind.TIME:
            assert point.time is not None
            body["source_timestamp"] = rfc3339(point.time)
        else:
            body["source_lsn"] = str(point.value).upper()
        result = self._call("POST", self._p(f"/branches/{self.branch_id}/restore"),
                            operation="restore_in_place", json=body)
        self._wait(result.get("operations") or [], what=f"restore {self.branch_id} in place",
                   progress=progress)
        log.info("restored Neon branch %s in place at %s; the previous state is branch %r",
                 self.branch_id, point, preserve)

    def find_point(self, damage: Damage, *, progress: Progress = no_progress) -> FoundPoint:
        """Find the last time before ``damage`` by bisection over branches
        (:func:`restorekit.bisect.find_by_bisection`): from ``damage.good_point`` (else just
        inside the start of the window) to now, one scratch branch per probe, each deleted
        right after it was read. At most ``find_point_budget`` branches; halving stops at
        ``find_point_precision_seconds``.

        Probe branches are named ``<scratch_prefix>find-point-<run>-<n>``: a leftover (a run
        killed mid-probe) is a scratch restore that cleanup removes.

        Raises:
            ConfigError: wrong table/keys/predicate, damage before the good point, or none
                found at the head (see find_by_bisection).
            ProviderError: a branch could not be created or deleted.
        """
        window = self.restore_window()
        assert window.earliest is not None and window.latest is not None
        if damage.good_point is None:
            # A little inside the window: created_at has whole seconds (the branch may begin
            # up to 1 s after it), and the retention bound moves forward while we work.
            margin = max(timedelta(seconds=1),
                         min(timedelta(seconds=60), (window.latest - window.earliest) / 10))
            damage = replace(damage, good_point=RestorePoint.at(window.earliest + margin))
        run = uuid.uuid4().hex[:8]
        probes = itertools.count(1)

        @contextmanager
        def copy_at(when: datetime) -> Iterator[str]:
            name = f"find-point-{run}-{next(probes)}"
            restored: RestoredDatabase | None = None
            try:
                restored = self.restore(RestorePoint.at(when), name=name, window=window)
                yield restored.dsn.get_secret_value()
            except BaseException:
                self._drop_probe(name, restored)  # best effort: never hides the error
                raise
            self.discard(restored)

        return find_by_bisection(
            damage, copy_at=copy_at, earliest=window.earliest, latest=window.latest,
            precision=self.find_point_precision, budget=self.find_point_budget,
            progress=progress, noun="branches")

    def _drop_probe(self, name: str, restored: RestoredDatabase | None) -> None:
        """Delete a probe branch after a failure (one whose creation failed half-way is found
        by name); a failure here is logged: the branch is scratch, cleanup removes it."""
        try:
            if restored is None:
                branch = self._find_branch(self.scratch_prefix + name)
                restored = None if branch is None else RestoredDatabase(
                    provider=self.kind, handle=str(branch["id"]), dsn=SecretStr(""), point="")
            if restored is not None:
                self.discard(restored)
        except RestoreKitError as exc:
            log.warning("could not delete probe branch %s%s (cleanup will): %s",
                        self.scratch_prefix, name, exc)

    # -- branch helpers ------------------------------------------------------------------------

    def _is_scratch_name(self, name: str) -> bool:
        return (name.startswith(self.scratch_prefix) and len(name) > len(self.scratch_prefix)
                and not name.startswith((BACKUP_PREFIX, PRESERVE_PREFIX)))

    def _refuse_unless_scratch(self, branch: dict[str, Any], verb: str) -> None:
        name = str(branch.get("name", ""))
        why = None
        if branch.get("id") == self.branch_id:
            why = "it is the production branch"
        elif not self._is_scratch_name(name):
            why = (f"its name does not start with the scratch prefix {self.scratch_prefix!r} "
                   "(not a restorekit scratch restore, or adopted as production)")
        elif branch.get("default"):  # e.g. promoted by an adopt that died before the rename
            why = "it is the project's default branch"
        elif branch.get("protected"):
            why = "it is protected"
        if why:
            raise SafetyError(
                f"refusing to {verb} Neon branch {name!r} ({branch.get('id')}): {why}")

    def _check_point_locally(self, point: RestorePoint, *, allow: tuple[PointKind, ...]) -> None:
        if point.kind not in allow:
            raise CapabilityNotSupported(
                f"Neon cannot restore to a {point.kind.value} target; use "
                + ", ".join(k.value for k in allow)
            )
        if point.kind is PointKind.TIME:
            assert point.time is not None
            if point.time > self._now():
                raise RestorePointError(f"restore time {point} is in the future")
        if point.kind is PointKind.LSN:
            parse_lsn(str(point.value))

    def _check_same_point(self, branch: dict[str, Any], point: RestorePoint, parent_id: str,
                          name: str) -> None:
        problem = None
        if branch.get("parent_id") and branch["parent_id"] != parent_id:
            problem = f"it was branched from {branch['parent_id']}, not {parent_id}"
        elif point.kind is PointKind.TIME and branch.get("parent_timestamp"):
            have = _ts(branch["parent_timestamp"])
            if have is not None and point.time is not None and abs(
                    (have - point.time).total_seconds()) > 0.001:
                problem = f"it is at {have.isoformat()}, not {point}"
        elif point.kind is PointKind.LSN and branch.get("parent_lsn"):
            if parse_lsn(branch["parent_lsn"]) != parse_lsn(str(point.value)):
                problem = f"it is at LSN {branch['parent_lsn']}, not {point.value}"
        if problem:
            raise ConfigError(f"a restore named {name!r} already exists (branch {branch['id']}) "
                              f"but {problem}; discard it or pick a new name")

    def _backup_branch_id(self, value: str) -> str:
        for backup in self.list_backups():
            if value in (backup.backup_id, backup.extra.get("name"), backup.label):
                return backup.backup_id
        raise RestorePointError(f"no Neon backup branch {value!r}; "
                                "list them with restorekit backups")

    def _wait_branch_ready(self, branch: dict[str, Any], *, progress: Progress) -> dict[str, Any]:
        deadline = self._clock() + self.timeout
        while branch.get("current_state") != "ready":
            if self._clock() >= deadline:
                raise OperationTimedOut(
                    f"Neon branch {branch['name']} ({branch['id']}) still "
                    f"{branch.get('current_state')} after {self.timeout:.0f} s",
                    provider=self.kind, operation=str(branch["id"]))
            progress("neon branch", 0, 1)
            self._sleep(self.poll_interval)
            found = self._branch(branch["id"], operation="restore")
            if found is None:
                raise ProviderError(f"Neon branch {branch['name']} ({branch['id']}) disappeared "
                                    "while it was being created", provider=self.kind,
                                    operation="restore", retryable=True, status_code=404)
            branch = found
        if not self._rw_endpoint(branch["id"]):
            # An earlier attempt died between the branch and its compute: add the compute.
            body = {"endpoint": {"branch_id": branch["id"], "type": "read_write"}}
            created = self._call("POST", self._p("/endpoints"), operation="restore",
                                 json=body, expect=(201,))
            self._wait(created.get("operations") or [], what=f"compute of {branch['name']}",
                       progress=progress)
        progress("neon branch", 1, 1)
        return branch

    def _rw_endpoint(self, branch_id: str) -> dict[str, Any] | None:
        endpoints = self._call("GET", self._p(f"/branches/{branch_id}/endpoints"),
                               operation="endpoints").get("endpoints") or []
        return next((e for e in endpoints if e.get("type") == "read_write"), None)

    def _restored(self, branch: dict[str, Any], point: RestorePoint | None,
                  *, phases: dict[str, float]) -> RestoredDatabase:
        params = {"database_name": self.database, "role_name": self.role,
                  "branch_id": branch["id"]}
        uri = _need(self._call("GET", self._p("/connection_uri"), operation="connection_uri",
                               params=params), "uri")
        when = _ts(branch.get("parent_timestamp"))
        if when is None and point is not None and point.kind is PointKind.TIME:
            when = point.time
        return RestoredDatabase(
            provider=self.kind,
            handle=str(branch["id"]),
            dsn=SecretStr(str(uri)),
            pooled_dsn=_pooled(str(uri)),
            point=str(point) if point is not None else _branch_point(branch),
            backup_id=str(branch.get("parent_id") or "") if (
                point is not None and point.kind is PointKind.BACKUP) else "",
            scratch=self._is_scratch_name(str(branch.get("name", ""))),
            phases=phases,
            recovered_to_time=when,
            recovered_to_lsn=branch.get("parent_lsn"),
        )

    def _branch(self, branch_id: str, *, operation: str) -> dict[str, Any] | None:
        if not branch_id:
            return None
        found = self._call("GET", self._p(f"/branches/{branch_id}"), operation=operation,
                           missing_ok=True)
        return found.get("branch") if found else None

    def _find_branch(self, name: str) -> dict[str, Any] | None:
        matches = [b for b in self._branches(operation="find_branch", search=name)
                   if b.get("name") == name]
        if len(matches) > 1:
            ids = ", ".join(str(b["id"]) for b in matches)
            raise SafetyError(f"several Neon branches are named {name!r} ({ids}); "
                              "delete or rename the extra ones")
        return matches[0] if matches else None

    def _branches(self, *, operation: str, search: str | None = None) -> list[dict[str, Any]]:
        """Every branch (``search`` narrows by partial name server-side), following cursors."""
        limit = 10000
        params: dict[str, Any] = {"limit": limit}
        if search:
            params["search"] = search
        found: list[dict[str, Any]] = []
        seen: set[str] = set()
        while True:
            page = self._call("GET", self._p("/branches"), operation=operation, params=params)
            batch = page.get("branches") or []
            found.extend(batch)
            cursor = (page.get("pagination") or {}).get("next")
            if len(batch) < limit or not cursor or cursor in seen:
                return found
            seen.add(cursor)
            params = {**params, "cursor": cursor}

    # -- operations ----------------------------------------------------------------------------

    def _wait(self, operations: Iterable[dict[str, Any]], *, what: str,
              progress: Progress) -> None:
        """Poll every operation until it is finished/skipped (§3.5).

        ``failed``/``cancelled`` raise NeonOperationFailed; ``error`` is Neon retrying, so it
        is polled like ``running``; past ``timeout_seconds`` OperationTimedOut names the
        operation that is still pending.
        """
        ops = list(operations)
        total = len(ops)
        pending: dict[str, dict[str, Any]] = {}
        for op in ops:
            self._check_op(op, what)
            if op.get("status") not in DONE:
                pending[str(op["id"])] = op
        deadline = self._clock() + self.timeout
        while pending:
            progress("neon operations", total - len(pending), total)
            remaining = deadline - self._clock()
            if remaining <= 0:
                op = next(iter(pending.values()))
                raise OperationTimedOut(
                    f"Neon operation {op['id']} ({op.get('action', '?')}) for {what} was still "
                    f"{op.get('status', '?')} after {self.timeout:.0f} s; it may still finish: "
                    f"check project {self.project_id} in the Neon console before re-running",
                    provider=self.kind, operation=str(op["id"]),
                )
            self._sleep(min(self.poll_interval, remaining))
            for op_id in list(pending):
                op = _need(self._call("GET", self._p(f"/operations/{op_id}"),
                                      operation=f"operation {op_id}"), "operation")
                self._check_op(op, what)
                if op.get("status") in DONE:
                    del pending[op_id]
                else:
                    if op.get("status") == "error":
                        log.warning("Neon operation %s (%s) reports an error and is being "
                                    "retried by Neon (failures: %s): %s", op_id, op.get("action"),
                                    op.get("failures_count"), op.get("error"))
                    pending[op_id] = op
        progress("neon operations", total, total)

    def _check_op(self, op: dict[str, Any], what: str) -> None:
        status = op.get("status")
        if status in FAILED:
            detail = str(op.get("error") or "no detail")
            raise NeonOperationFailed(
                f"Neon operation {op.get('id')} ({op.get('action', '?')}) for {what} {status}: "
                f"{detail}",
                operation=str(op.get("id")), action=str(op.get("action", "")),
                status=str(status), detail=detail,
            )

    # -- HTTP ----------------------------------------------------------------------------------

    def _p(self, suffix: str) -> str:
        return f"/projects/{self.project_id}{suffix}"

    def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        expect: tuple[int, ...] = (200,),
        missing_ok: bool = False,
    ) -> dict[str, Any]:
        """One API call, retried where that is safe (module docstring); returns the JSON body
        ({} for none, and for 404 when ``missing_ok``)."""

        def network_error(exc: httpx.RequestError, repeatable: bool) -> NeonApiError:
            # Retryable even after a POST was sent: the task-level retry looks before it acts.
            return NeonApiError(
                f"Neon API {method} {path} ({operation}) failed: {type(exc).__name__}: {exc}",
                operation=operation, retryable=True, request_id=sent_request_id(exc),
            )

        def give_up(response: httpx.Response, attempt: int, wait: float) -> NeonApiError:
            return _api_error(response, method=method, path=path, operation=operation,
                              now=self._now)

        response = send(
            self._client, method, path, params=params, json=json,
            headers=lambda: {"X-Request-ID": str(uuid.uuid4())},
            policy=self._retry_policy, network_error=network_error,
            give_up=give_up, sleep=self._sleep, log=log, now=self._now,
        )
        status = response.status_code
        if status in expect:
            return _json(response)
        if missing_ok and status in (404, 204):
            return {}
        raise _api_error(response, method=method, path=path, operation=operation, now=self._now)

    @property
    def _retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.max_attempts, retry_any=_RETRY_ANY,
                           retry_get=_RETRY_GET, backoff_seconds=self.backoff_seconds,
                           max_wait=self.max_retry_wait)


# -- module helpers ----------------------------------------------------------------------------


def rfc3339(when: datetime) -> str:
    """UTC RFC 3339 with a ``Z`` (microseconds kept when there are any)."""
    when = when.astimezone(UTC)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if when.microsecond:
        text += f".{when.microsecond:06d}"
    return text + "Z"


def _ts(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _need(data: dict[str, Any], key: str) -> Any:
    """``data[key]``, or a ProviderError when Neon's answer lacks it (never a KeyError)."""
    if not isinstance(data, dict) or data.get(key) is None:
        raise NeonApiError(f"Neon API answer without {key!r}: {str(data)[:200]}",
                           operation="decode", retryable=False)
    return data[key]


def _json(response: httpx.Response) -> dict[str, Any]:
    if response.status_code == 204 or not response.content:
        return {}
    try:
        data = response.json()
    except ValueError:
        raise NeonApiError(
            f"Neon API {response.request.method} {response.request.url.path} answered "
            f"{response.status_code} with a body that is not JSON",
            operation="decode", retryable=False, status_code=response.status_code,
        ) from None
    return data if isinstance(data, dict) else {"items": data}


def _api_error(response: httpx.Response, *, method: str, path: str, operation: str,
               now: Callable[[], datetime]) -> NeonApiError:
    status = response.status_code
    code, message, rid = "", "", None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("code") or "")
        message = str(body.get("message") or "")
        rid = body.get("request_id")
    if not message:
        message = response.text.strip()[:300] or response.reason_phrase
    # Neon echoes the X-Request-ID we sent (§3); without a body or header, ours still names it.
    rid = rid or response.headers.get("X-Request-ID") or response.request.headers.get(
        "X-Request-ID")
    retryable = status in _RETRY_ANY or status >= 500
    hint = ""
    if status in (401, 403):
        retryable = False
        hint = " (check the API key in the variable named by api_key_env)"
    return NeonApiError(
        f"Neon API {method} {path} ({operation}) answered {status}"
        + (f" {code}" if code else "") + f": {message}{hint} [request_id {rid}]",
        operation=operation, retryable=retryable, status_code=status,
        retry_after=header_seconds(response.headers.get("Retry-After"), now=now), code=code,
        request_id=str(rid),
    )


def _address(dsn: str) -> tuple[str, int]:
    """(host, port) a DSN connects to, the pooler host folded onto its endpoint's (§3.3)."""
    params = parse(dsn)
    host = str(params.get("host") or "").lower().replace("-pooler.", ".", 1)
    return host, int(str(params.get("port") or 5432))


def _pooled(uri: str) -> SecretStr | None:
    """The pooled variant of an endpoint's connection URI: ``-pooler`` appended to the endpoint
    id in the host (``ep-x-123456.us-east-2.aws.neon.tech`` ->
    ``ep-x-123456-pooler.us-east-2.aws.neon.tech``, §3.3; the same as ``pooled=true``, without
    another call). None when the host is not an endpoint host."""
    where = location_of(uri)
    if len(where.hosts) != 1:
        return None
    label, dot, rest = where.hosts[0].partition(".")
    if not label.startswith("ep-") or label.endswith("-pooler") or not dot:
        return None
    pooled = Location(hosts=(f"{label}-pooler.{rest}",), ports=where.ports, dbname=where.dbname)
    return SecretStr(repoint(uri, pooled))


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:60].rstrip("-")


def _branch_point(branch: dict[str, Any]) -> str:
    if branch.get("parent_timestamp"):
        when = _ts(branch["parent_timestamp"])
        return when.isoformat() if when else str(branch["parent_timestamp"])
    if branch.get("parent_lsn"):
        return f"lsn:{branch['parent_lsn']}"
    return ""


def _backup_info(branch: dict[str, Any]) -> BackupInfo:
    created = _ts(branch.get("created_at")) or datetime.now(UTC)
    at = _ts(branch.get("parent_timestamp")) or created
    lsn = str(branch.get("parent_lsn") or "")
    name = str(branch.get("name", ""))
    return BackupInfo(
        backup_id=str(branch["id"]), engine="neon", start_time=at, stop_time=at,
        start_lsn=lsn, stop_lsn=lsn, label=name.removeprefix(BACKUP_PREFIX),
        extra={"name": name, "parent_id": branch.get("parent_id")},
    )

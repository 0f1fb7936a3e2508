"""Supabase: in-place restores through the Management API (provider-apis.md §4).

A Supabase project can only be restored *in place*: ``POST .../backups/restore-pitr`` (a time,
PITR add-on) or ``POST .../backups/restore`` (a daily/physical backup by integer id). The
project keeps its ref and connection string and is unavailable while it restores. The v1 API
has no "restore to a new project" (the dashboard does), so :meth:`SupabaseProvider.restore`
refuses and a flow takes the in-place path: verified snapshot first, then
:meth:`~SupabaseProvider.restore_in_place`.

Quirks handled here (each from provider-apis.md §4 / §8):

* ``recovery_time_target_unix`` is an integer of Unix seconds. The docs' curl example sends a
  string; the spec says integer, so an integer is sent. A sub-second time is rounded *down*.
* Both restore calls answer 201 with no body and nothing to poll but the project:
  ``GET /v1/projects/{ref}`` until ``ACTIVE_HEALTHY``; ``RESTORE_FAILED``/``INIT_FAILED`` need
  Supabase support (projects have stayed there for days), so they fail at once, and every wait
  has a deadline.
* Rate limit: 120 requests/minute (60 in older docs), 429 for the rest of the window with
  ``X-RateLimit-Reset`` = seconds until the reset. A 429 did not act, so it is retried (bounded)
  for every call, the POSTs included; a 5xx is retried on GETs only: a POST that may have
  started a restore is never repeated blindly. The loop itself is the one the HTTP adapters
  share (:mod:`restorekit.providers._http`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, NoReturn

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from restorekit.config import Settings, TargetConfig
from restorekit.errors import (
    CapabilityNotSupported,
    ConfigError,
    OperationTimedOut,
    ProviderError,
    RestorePointError,
    SafetyError,
)
from restorekit.models import BackupInfo, PointKind, RestoredDatabase, RestorePoint, RestoreWindow
from restorekit.providers._http import RetryPolicy, header_seconds, send
from restorekit.providers.base import Capability, Progress, no_progress

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.supabase.com"
SUPPORT_URL = "https://supabase.com/dashboard/support/new"
_REF = re.compile(r"^[a-z]{20}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: Project status -> what a restore waiting on it does (§4.4). Anything not listed (RESTORING,
#: COMING_UP, RESTARTING, UNKNOWN, GOING_DOWN, ...) means "keep polling until the deadline".
DONE, FAILED = "done", "failed"
STATUS_OUTCOME: dict[str, str] = {
    "ACTIVE_HEALTHY": DONE,
    "RESTORE_FAILED": FAILED,
    "INIT_FAILED": FAILED,
    "REMOVED": FAILED,
}
#: Statuses that mean "a restore (or something like it) is under way".
_BUSY = frozenset({"RESTORING", "COMING_UP", "RESTARTING", "GOING_DOWN", "UPGRADING", "RESIZING"})

#: The OAuth scope each call needs, named in 401/403 messages.
_SCOPES = {"backups": "database:read", "restore": "database:write", "project": "projects:read"}

_POSSIBLE = frozenset({Capability.IN_PLACE_RESTORE, Capability.POINT_IN_TIME})

_NO_NEW_TARGET = (
    "Supabase cannot restore into a new database through its API: the Management API (v1) "
    "restores a project only in place (POST /v1/projects/{{ref}}/database/backups/restore-pitr "
    "or .../restore, which overwrite project {ref}). \"Restore to a New Project\" exists only in "
    "the Supabase dashboard (Database > Backups; paid plans with physical backups). Use the "
    "in-place path instead (restorekit snapshots the current state first), or restore to a new "
    "project in the dashboard by hand and configure it as its own target."
)


class SupabaseSettings(BaseModel):
    """``[targets.NAME.supabase]`` in restorekit.toml. Holds no secret: ``token_env`` names the
    environment variable with the access token (a ``sbp_...`` personal access token or an
    OAuth token with database:read, database:write and projects:read)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project_ref: str
    token_env: str
    base_url: str = DEFAULT_BASE_URL
    poll_interval_seconds: float = Field(default=5.0, gt=0)
    timeout_seconds: float = Field(default=3600.0, gt=0)

    @field_validator("project_ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        if not _REF.match(value):
            raise ValueError(
                f"project_ref {value!r} must be the project's 20 lower-case letters "
                "(Project Settings > General, or the db.<ref>.supabase.co host)"
            )
        return value

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError(
                f"token_env {value!r} must be the NAME of an environment variable "
                "(e.g. SUPABASE_ACCESS_TOKEN), not the token itself"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"base_url {value!r} must start with https://")
        return value.rstrip("/")


class _ProjectCapabilities:
    """``capabilities``: on the class, what a Supabase project can offer at most; on an instance,
    what THIS project offers (POINT_IN_TIME only with the PITR add-on). The first instance access
    reads the backups list (one GET); later ones reuse what the last read found."""

    def __get__(self, obj: SupabaseProvider | None, owner: type) -> frozenset[Capability]:
        if obj is None:
            return _POSSIBLE
        return obj._project_capabilities()


class SupabaseProvider:
    """One Supabase project, restored in place through the Management API.

    Args:
        project_ref: the project's ref (20 lower-case letters).
        token: the access token (kept as a SecretStr, never logged).
        base_url: the API root, ``https://api.supabase.com`` unless testing.
        poll_interval: seconds between project status polls during a restore.
        timeout: seconds a restore may take before :class:`OperationTimedOut`.
        transport: an httpx transport (tests: ``httpx.MockTransport``); default: the network.
        sleep, clock, now: injected time (``clock`` is monotonic; ``now`` is wall-clock UTC).
        max_attempts: attempts per call on 429 (every call) and on 5xx/network errors (GETs).
        max_retry_wait: cap on one wait between attempts (the rate-limit window is a minute).
        settle_seconds: how long ACTIVE_HEALTHY must persist after a restore call when the
            project was never seen RESTORING (the status may lag the call) before it counts.
        token_env: the variable the token came from, named in auth errors.
    """

    kind: ClassVar[str] = "supabase"
    capabilities = _ProjectCapabilities()

    def __init__(
        self,
        *,
        project_ref: str,
        token: SecretStr | str,
        base_url: str = DEFAULT_BASE_URL,
        poll_interval: float = 5.0,
        timeout: float = 3600.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_attempts: int = 5,
        max_retry_wait: float = 60.0,
        request_timeout: float = 30.0,
        settle_seconds: float = 60.0,
        token_env: str = "",
        target_name: str = "",
    ) -> None:
        if not _REF.match(project_ref):
            raise ConfigError(f"Supabase project_ref {project_ref!r} must be 20 lower-case letters")
        secret = token if isinstance(token, SecretStr) else SecretStr(token)
        if not secret.get_secret_value():
            raise ConfigError("the Supabase access token is empty")
        if max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        self.project_ref = project_ref
        self.base_url = base_url.rstrip("/")
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_retry_wait = max_retry_wait
        self.settle_seconds = settle_seconds
        self.token_env = token_env
        self.target_name = target_name
        self._sleep = sleep
        self._clock = clock
        self._now = now
        self._pitr_enabled: bool | None = None
        self._client = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            timeout=request_timeout,
            headers={
                "Authorization": f"Bearer {secret.get_secret_value()}",
                "Accept": "application/json",
                "User-Agent": "restorekit",
            },
        )

    def __repr__(self) -> str:
        return f"SupabaseProvider(project_ref={self.project_ref!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        self._client.close()

    # -- construction from restorekit.toml -----------------------------------------------------

    @classmethod
    def from_config(cls, target: TargetConfig, settings: Settings) -> SupabaseProvider:
        """Build from ``[targets.NAME.supabase]``; the token is read from ``token_env`` now, so a
        missing variable fails before any step runs."""
        section = f"[targets.{target.name}.supabase]"
        if target.supabase is None:
            raise ConfigError(f"provider 'supabase' needs a {section} section")
        try:
            options = SupabaseSettings(**target.supabase)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"{section}: {problems}") from None
        token = os.environ.get(options.token_env, "")
        if not token:
            raise ConfigError(
                f"{section}: environment variable {options.token_env} (token_env) is not set; "
                "put a Supabase access token in it"
            )
        return cls(
            project_ref=options.project_ref,
            token=SecretStr(token),
            base_url=options.base_url,
            poll_interval=options.poll_interval_seconds,
            timeout=options.timeout_seconds,
            token_env=options.token_env,
            target_name=target.name,
        )

    # -- DatabaseProvider ----------------------------------------------------------------------

    def restore_window(self) -> RestoreWindow:
        """With PITR: ``physical_backup_data``'s earliest/latest (Unix seconds). Without: the
        oldest and newest COMPLETED backup (only those instants can be restored)."""
        return self._window(self._backups())

    def list_backups(self) -> list[BackupInfo]:
        """COMPLETED backups, oldest first; ``backup_id`` is Supabase's integer id as text."""
        return _completed(self._backups())

    def create_backup(self, label: str = "", *, progress: Progress = no_progress) -> BackupInfo:
        """Never: Supabase takes its daily/physical backups itself; the API has no on-demand
        backup."""
        raise CapabilityNotSupported(
            f"Supabase project {self.project_ref}: backups are taken by Supabase itself (daily, "
            "or continuously with PITR); the Management API cannot take one on demand. Take a "
            "logical snapshot instead (restorekit snapshots the current state before a restore)."
        )

    def restore(
        self,
        point: RestorePoint,
        *,
        name: str,
        progress: Progress = no_progress,
        window: RestoreWindow | None = None,
    ) -> RestoredDatabase:
        """Never: see the module docstring (no restore-to-new-project in the API)."""
        raise CapabilityNotSupported(_NO_NEW_TARGET.format(ref=self.project_ref))

    def find_restored(self, name: str) -> RestoredDatabase | None:
        """Always None: this provider never creates a database."""
        return None

    def list_scratch(self) -> list[RestoredDatabase]:
        """Always empty: this provider never creates a database, so nothing is left behind."""
        return []

    def discard(self, restored: RestoredDatabase) -> None:
        """Refuses: restorekit never creates Supabase projects, so anything handed in here is
        not restorekit's scratch (it may be the production project); deleting projects is left
        to people."""
        raise SafetyError(
            f"refusing to remove {restored.handle!r}: the Supabase provider never creates a "
            f"database, so this is not a restorekit scratch restore (project {self.project_ref} "
            "is restored in place and is production)"
        )

    def adopt(self, restored: RestoredDatabase) -> None:
        """Refuses: an in-place restore keeps the same project, there is nothing to adopt."""
        raise CapabilityNotSupported(
            f"Supabase project {self.project_ref} is restored in place and stays production; "
            "there is no restored copy to adopt"
        )

    def reaches(self, restored: RestoredDatabase, dsn: str) -> bool:
        """Always True: this provider never creates a database, so it cannot tell; cleanup
        keeps what it cannot tell about."""
        return True

    def restore_in_place(self, point: RestorePoint, *, progress: Progress = no_progress) -> None:
        """Overwrite the project with its state at ``point`` and wait until it is healthy.

        ``point``: a time (PITR projects; rounded down to whole seconds), ``latest`` (PITR: the
        latest recovery point; otherwise the newest backup) or ``backup:<id>``. Checked against
        the window and the project status (must be ACTIVE_HEALTHY) before anything is sent.
        Blocks up to ``timeout`` seconds; ``progress`` gets ``("supabase <STATUS>", elapsed s,
        timeout s)`` on every poll.

        Raises:
            RestorePointError: the point is outside the window, or a time without PITR.
            CapabilityNotSupported: an lsn/xid/name/immediate target.
            ProviderError: the API refused, the project is not ACTIVE_HEALTHY to start with, or
                it ended RESTORE_FAILED/INIT_FAILED (Supabase support must step in).
            OperationTimedOut: the deadline passed; the restore may still be running.
        """
        path, body, description = self._restore_request(point)
        status = self.project_status()
        if status != "ACTIVE_HEALTHY":
            raise ProviderError(
                f"Supabase project {self.project_ref} is {status}, not ACTIVE_HEALTHY: not "
                f"starting a restore to {description}. If a restore is already running (an "
                "earlier attempt), wait for it to finish; if it stays failed, contact Supabase "
                f"support ({SUPPORT_URL}).",
                provider=self.kind, operation="restore_in_place",
            )
        log.info("Supabase project %s: restoring in place to %s", self.project_ref, description)
        self._call("POST", path, operation="restore", body=body)
        self._wait_until_restored(description, progress)

    # -- extras ----------------------------------------------------------------------------------

    def project_status(self) -> str:
        """The project's status (``GET /v1/projects/{ref}``), e.g. ACTIVE_HEALTHY or RESTORING."""
        data = self._json(self._call("GET", f"/v1/projects/{self.project_ref}",
                                     operation="project"))
        return str(data.get("status", "UNKNOWN"))

    # -- internals -------------------------------------------------------------------------------

    def _project_capabilities(self) -> frozenset[Capability]:
        if self._pitr_enabled is None:
            self._backups()
        if self._pitr_enabled:
            return _POSSIBLE
        return frozenset({Capability.IN_PLACE_RESTORE})

    def _backups(self) -> dict[str, Any]:
        data = self._json(self._call(
            "GET", f"/v1/projects/{self.project_ref}/database/backups", operation="backups"))
        self._pitr_enabled = bool(data.get("pitr_enabled"))
        return data

    def _window(self, data: dict[str, Any]) -> RestoreWindow:
        if data.get("pitr_enabled"):
            physical = data.get("physical_backup_data") or {}
            earliest = physical.get("earliest_physical_backup_date_unix")
            latest = physical.get("latest_physical_backup_date_unix")
            return RestoreWindow(
                earliest=_from_unix(earliest) if earliest is not None else None,
                latest=_from_unix(latest) if latest is not None else None,
            )
        backups = _completed(data)
        if not backups:
            return RestoreWindow(earliest=None, latest=None)
        return RestoreWindow(earliest=backups[0].stop_time, latest=backups[-1].stop_time)

    def _restore_request(self, point: RestorePoint) -> tuple[str, dict[str, int], str]:
        """(path, body, description) for ``point``, validated against the backups list."""
        data = self._backups()
        window = self._window(data)
        pitr = bool(data.get("pitr_enabled"))
        backups = _completed(data)
        base = f"/v1/projects/{self.project_ref}/database/backups"
        ids = ", ".join(f"backup:{b.backup_id}" for b in backups) or "none"
        if point.kind is PointKind.BACKUP:
            assert point.value is not None
            if not point.value.isdigit() or point.value not in {b.backup_id for b in backups}:
                raise RestorePointError(
                    f"Supabase project {self.project_ref} has no completed backup {point.value!r}; "
                    f"available: {ids}", window=window)
            return f"{base}/restore", {"id": int(point.value)}, f"backup {point.value}"
        if point.kind not in (PointKind.TIME, PointKind.LATEST):
            raise CapabilityNotSupported(
                f"Supabase restores to a time (PITR) or to a backup (backup:<id>), not to "
                f"{point.kind.value} target {point}; lsn, xid, name and immediate targets are "
                "self-hosted only"
            )
        if not pitr:
            if point.kind is PointKind.LATEST and backups:
                newest = backups[-1]
                return (f"{base}/restore", {"id": int(newest.backup_id)},
                        f"backup {newest.backup_id} (the newest)")
            raise RestorePointError(
                f"point-in-time recovery (the PITR add-on) is off for Supabase project "
                f"{self.project_ref}, so it cannot be restored to {point}; only whole backups can "
                f"be restored, as backup:<id> (available: {ids}, window {window})", window=window)
        if window.earliest is None or window.latest is None:
            raise RestorePointError(
                f"Supabase project {self.project_ref} reports no physical backups yet "
                "(physical_backup_data is empty): nothing to restore from", window=window)
        if point.kind is PointKind.LATEST:
            target = int(window.latest.timestamp())
        else:
            assert point.time is not None
            exact = point.time.timestamp()
            target = math.floor(exact)
            if target != exact:
                log.warning("Supabase restores to whole seconds: %s is rounded down to %s", point,
                            _from_unix(target).isoformat())
            if point.time > self._now():
                raise RestorePointError(
                    f"restore time {point} is in the future; the restore window of Supabase "
                    f"project {self.project_ref} is {window}", window=window)
            if not window.earliest.timestamp() <= target <= window.latest.timestamp():
                raise RestorePointError(
                    f"restore time {point} is outside the restore window of Supabase project "
                    f"{self.project_ref}: {window}", window=window)
        return (f"{base}/restore-pitr", {"recovery_time_target_unix": target},
                f"{_from_unix(target).isoformat()} (unix {target})")

    def _wait_until_restored(self, description: str, progress: Progress) -> None:
        started = self._clock()
        deadline = started + self.timeout
        seen_busy = False
        healthy_since: float | None = None
        status = "UNKNOWN"
        while True:
            try:
                previous, status = status, self.project_status()
            except ProviderError as exc:
                if not exc.is_retryable:
                    raise
                log.warning("Supabase status poll failed (%s); polling on", exc)
            else:
                elapsed = self._clock() - started
                progress(f"supabase {status}", int(elapsed), int(self.timeout))
                if status != previous:
                    log.info("Supabase project %s: %s", self.project_ref, status)
                outcome = STATUS_OUTCOME.get(status)
                if outcome == FAILED:
                    self._failed(status, description)
                if outcome == DONE:
                    if seen_busy:
                        return
                    # The status may not have left ACTIVE_HEALTHY yet right after the call.
                    healthy_since = healthy_since if healthy_since is not None else self._clock()
                    if self._clock() - healthy_since >= self.settle_seconds:
                        log.warning("Supabase project %s never showed RESTORING; ACTIVE_HEALTHY "
                                    "for %.0fs, taking the restore as done (verify the data)",
                                    self.project_ref, self.settle_seconds)
                        return
                else:
                    seen_busy = True
                    healthy_since = None
            if self._clock() >= deadline:
                raise OperationTimedOut(
                    f"Supabase project {self.project_ref} was still {status} {self.timeout:.0f}s "
                    f"after the restore to {description} started. The restore may still be "
                    "running: do not start another one; watch the project in the dashboard and "
                    f"contact Supabase support ({SUPPORT_URL}) if it does not come back.",
                    provider=self.kind, operation="restore_in_place",
                )
            self._sleep(self.poll_interval)

    def _failed(self, status: str, description: str) -> NoReturn:
        raise ProviderError(
            f"Supabase project {self.project_ref} ended {status} after the restore to "
            f"{description}. A project in {status} stays unavailable until Supabase support "
            f"repairs it: open a ticket at {SUPPORT_URL} with the project ref and the restore "
            "target. The snapshot taken before the restore holds the data as it was.",
            provider=self.kind, operation="restore_in_place",
        )

    # -- HTTP --------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, operation: str,
              body: dict[str, Any] | None = None) -> httpx.Response:
        """One API call with the retry policy in the module docstring; errors become
        ProviderError (``retryable`` set per case)."""

        def network_error(exc: httpx.RequestError, repeatable: bool) -> ProviderError:
            if repeatable:
                return ProviderError(
                    f"cannot reach the Supabase Management API at {self.base_url} "
                    f"({type(exc).__name__}: {exc})",
                    provider=self.kind, operation=operation, retryable=True)
            return ProviderError(
                f"{method} {path} failed after it was sent ({type(exc).__name__}: {exc}); "
                "Supabase may or may not have started the restore: check the project status "
                "before trying again", provider=self.kind, operation=operation)

        def give_up(response: httpx.Response, attempt: int, wait: float) -> ProviderError:
            if response.status_code == 429:
                return ProviderError(
                    f"Supabase kept answering 429 (rate limited) to {method} {path} after "
                    f"{attempt} attempts: {_message(response)}",
                    provider=self.kind, operation=operation, retryable=True, status_code=429,
                    retry_after=wait)
            return self._error_for(response, method, path, operation)

        response = send(self._client, method, path, json=body, policy=self._retry_policy,
                        delay=self._retry_delay, network_error=network_error, give_up=give_up,
                        sleep=self._sleep, log=log)
        if response.status_code >= 400:
            raise self._error_for(response, method, path, operation)
        return response

    @property
    def _retry_policy(self) -> RetryPolicy:
        # A 429 did not act: every method waits it out. A 5xx may have: GETs only.
        return RetryPolicy(max_attempts=self.max_attempts, retry_any=frozenset({429}),
                           retry_get=frozenset(range(500, 600)), max_wait=self.max_retry_wait)

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float:
        """429: until the rate-limit window resets (``X-RateLimit-Reset``, else
        ``Retry-After``, else the backoff), at least 1 s. 5xx: ``Retry-After``, else the
        backoff. Both capped at ``max_retry_wait``, so they are always waited out."""
        policy = self._retry_policy
        if response.status_code == 429:
            wait = self._header_seconds(response, "X-RateLimit-Reset")
            if wait is None:
                wait = self._header_seconds(response, "Retry-After")
            if wait is None:
                wait = policy.backoff(attempt)
            return min(max(wait, 1.0), self.max_retry_wait)
        hinted = self._header_seconds(response, "Retry-After")
        if hinted is not None:
            return min(hinted, self.max_retry_wait)
        return policy.backoff(attempt)

    def _header_seconds(self, response: httpx.Response, name: str) -> float | None:
        # Supabase documents seconds; an epoch (other APIs' habit) or an HTTP date also works.
        return header_seconds(response.headers.get(name), now=self._now, epochs=True)

    def _error_for(self, response: httpx.Response, method: str, path: str,
                   operation: str) -> ProviderError:
        status = response.status_code
        where = f"Supabase answered {status} to {method} {path}"
        detail = _message(response)
        if status in (401, 403):
            source = f" in ${self.token_env}" if self.token_env else ""
            return ProviderError(
                f"{where}: {detail}. The access token{source} is invalid, expired or lacks "
                f"the {_SCOPES.get(operation, 'needed')} permission for project "
                f"{self.project_ref}.",
                provider=self.kind, operation=operation, status_code=status)
        if status == 404:
            return ProviderError(
                f"{where}: {detail} (is project_ref {self.project_ref} right, and can this token "
                "see it?)", provider=self.kind, operation=operation, status_code=status)
        if status >= 500:
            retry = method == "GET"
            hint = "" if retry else (
                "; the restore may or may not have started: check the project status before "
                "trying again")
            return ProviderError(f"{where}: {detail}{hint}", provider=self.kind,
                                 operation=operation, retryable=retry, status_code=status)
        return ProviderError(f"{where}: {detail}", provider=self.kind, operation=operation,
                             status_code=status)

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError as exc:
            raise ProviderError(
                f"Supabase answered {response.request.method} {response.request.url.path} with "
                f"something that is not JSON: {response.text[:200]!r}",
                provider=self.kind, retryable=True) from exc
        if not isinstance(data, dict):
            raise ProviderError(
                f"Supabase answered {response.request.url.path} with {type(data).__name__}, "
                "expected an object", provider=self.kind)
        return data


def _completed(data: dict[str, Any]) -> list[BackupInfo]:
    found = []
    for item in data.get("backups") or []:
        if item.get("status") != "COMPLETED":
            continue
        at = datetime.fromisoformat(str(item["inserted_at"]).replace("Z", "+00:00"))
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        found.append(BackupInfo(
            backup_id=str(int(item["id"])), engine="supabase", start_time=at, stop_time=at,
            start_lsn="", stop_lsn="",
            extra={"is_physical_backup": bool(item.get("is_physical_backup")),
                   "status": item["status"]},
        ))
    return sorted(found, key=lambda b: (b.stop_time, int(b.backup_id)))


def _from_unix(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value), UTC)


def _message(response: httpx.Response) -> str:
    """The server's own words: ``message`` (Supabase's error shape) or ``error``, else text."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(data, dict):
        for key in ("message", "error", "msg"):
            if data.get(key):
                return str(data[key])
    return str(data)[:300]

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
* Both restore calls answer 201 with no body and nothing to poll but the project's ``status``
  (``GET /v1/projects/{ref}``). What each status means before and during a restore is one
  table, :data:`STATUS_RULES`. Before: ACTIVE_HEALTHY starts; ACTIVE_UNHEALTHY (the incident
  case: the database is down) starts a PITR restore, as the dashboard's PITR page does (it has
  no status gate), but not a backup restore, which the dashboard only offers on an
  ACTIVE_HEALTHY project; passing states (COMING_UP, RESTARTING, ...) are waited out, within
  ``busy_timeout``; the rest are refused with what the operator must do.
* After the call the status still shows the pre-restore value for a while (Supabase's own
  dashboard was fixed for exactly that: supabase/supabase#48948), so ACTIVE_HEALTHY only counts
  as done once the restore was seen to start (RESTORING, or the database going down/coming
  up). No start within ``start_timeout`` is an error, never a success. States a project does not
  leave on its own (RESTORE_FAILED, INIT_FAILED, PAUSE_FAILED, INACTIVE, REMOVED) fail at once:
  projects have stayed RESTORE_FAILED for days until Supabase support stepped in.
* Rate limit: 120 requests/minute (60 in older docs), 429 for the rest of the window with
  ``X-RateLimit-Reset`` = seconds until the reset. A 429 did not act, so it is retried (bounded)
  for every call, the POSTs included; a 5xx is retried on GETs only: a POST that may have
  started a restore is never repeated blindly. The loop itself is the one the HTTP adapters
  share (:mod:`restorekit.providers._http`); what it gave up on is not retried again by the
  Prefect task (``retry_spent``), so attempts do not multiply.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, NamedTuple, NoReturn

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

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
from restorekit.models import BackupInfo, PointKind, RestoredDatabase, RestorePoint, RestoreWindow
from restorekit.providers._cloud import (
    ApiRoot,
    EnvVarName,
    load_section,
    section_name,
    token_from_env,
)
from restorekit.providers._http import RetryPolicy, api_client, header_seconds, send
from restorekit.providers.base import Capability, Progress, no_progress

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.supabase.com"
SUPPORT_URL = "https://supabase.com/dashboard/support/new"
_REF = re.compile(r"^[a-z]{20}$")

# What restore_in_place does with a project status, before the restore call (``before``) and
# while it waits for the restore (``during``); ``advice`` is what the operator must do when the
# status stops the restore. Values: provider-apis.md §4.4.
START, START_PITR, WAIT, REFUSE = "start", "start_pitr", "wait", "refuse"
DONE, UP, RESTORING, SIGN, PASSING, FAILED = "done", "up", "restoring", "sign", "passing", "failed"

_SUPPORT = (f"Only Supabase support can repair a project in this state: open a ticket at "
            f"{SUPPORT_URL} with the project ref.")


class StatusRule(NamedTuple):
    """``before``: START, START_PITR (a PITR restore starts, a backup restore is refused), WAIT
    (passing: poll until it settles) or REFUSE. ``during``: DONE (finished, once a start was
    seen), UP (up but unhealthy: keep polling), RESTORING (the restore runs), SIGN (the
    database goes down or comes up: a restore has started), PASSING (keep polling, not a sign of
    a restore) or FAILED (the project will not leave this state on its own)."""

    before: str
    during: str
    advice: str = ""


STATUS_RULES: dict[str, StatusRule] = {
    "ACTIVE_HEALTHY": StatusRule(START, DONE),
    "ACTIVE_UNHEALTHY": StatusRule(START_PITR, UP, (
        "The Supabase dashboard offers a backup restore only on an ACTIVE_HEALTHY project. "
        "Restart the project (dashboard: Project Settings > General > Restart project) and run "
        "again once it is ACTIVE_HEALTHY, or restore to a time if the project has PITR.")),
    "RESTORING": StatusRule(REFUSE, RESTORING, (
        "A restore is already running (an earlier attempt, or one started in the dashboard): do "
        "not start another. Wait until the project is ACTIVE_HEALTHY, then check its data; "
        f"contact Supabase support ({SUPPORT_URL}) if it stays RESTORING.")),
    "COMING_UP": StatusRule(WAIT, SIGN),
    "GOING_DOWN": StatusRule(WAIT, SIGN),
    "RESTARTING": StatusRule(WAIT, PASSING),
    "RESIZING": StatusRule(WAIT, PASSING),
    "UPGRADING": StatusRule(WAIT, PASSING),
    "PAUSING": StatusRule(WAIT, PASSING),
    "UNKNOWN": StatusRule(WAIT, PASSING),
    "INACTIVE": StatusRule(REFUSE, FAILED, (
        "The project is paused. A paused project cannot be restored from a backup: un-pause it "
        "first (dashboard: Restore project; or POST /v1/projects/{ref}/restore, the un-pause "
        "call, not a backup restore), wait until it is ACTIVE_HEALTHY, then run again. A "
        "project paused for more than 90 days can no longer be un-paused: download its backup "
        "from the dashboard instead.")),
    "PAUSE_FAILED": StatusRule(REFUSE, FAILED, f"A pause failed. {_SUPPORT}"),
    "RESTORE_FAILED": StatusRule(REFUSE, FAILED, (
        f"A restore (or an un-pause) failed and the project stays unavailable. {_SUPPORT}")),
    "INIT_FAILED": StatusRule(REFUSE, FAILED, (
        f"The project never finished setting up. {_SUPPORT}")),
    "REMOVED": StatusRule(REFUSE, FAILED, (
        "The project was deleted; Supabase deletes its backups with it, so nothing can be "
        "restored in place. Restore restorekit's own snapshot into a new project.")),
}
#: A status missing from the table (a newer API value): polled like UNKNOWN until the deadline.
_UNLISTED = StatusRule(WAIT, PASSING)
_warned: set[str] = set()

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
    token_env: EnvVarName
    base_url: ApiRoot = DEFAULT_BASE_URL
    poll_interval_seconds: float = Field(default=5.0, gt=0)
    timeout_seconds: float = Field(default=3600.0, gt=0)
    start_timeout_seconds: float = Field(default=600.0, gt=0)
    busy_timeout_seconds: float = Field(default=600.0, gt=0)

    @field_validator("project_ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        if not _REF.match(value):
            raise ValueError(
                f"project_ref {value!r} must be the project's 20 lower-case letters "
                "(Project Settings > General, or the db.<ref>.supabase.co host)"
            )
        return value


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
        start_timeout: seconds after the restore call within which the restore must be seen to
            start (RESTORING, or the database going down/coming up); then OperationTimedOut.
        busy_timeout: seconds a project in a passing state (COMING_UP, RESTARTING, ...) is
            waited for before the restore call; then a retryable ProviderError (nothing sent).
        transport: an httpx transport (tests: ``httpx.MockTransport``); default: the network.
        sleep, clock, now: injected time (``clock`` is monotonic; ``now`` is wall-clock UTC).
        max_attempts: attempts per call on 429 (every call) and on 5xx/network errors (GETs).
        max_retry_wait: cap on one wait between attempts (the rate-limit window is a minute).
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
        start_timeout: float = 600.0,
        busy_timeout: float = 600.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_attempts: int = 5,
        max_retry_wait: float = 60.0,
        request_timeout: float = 30.0,
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
        if min(poll_interval, timeout, start_timeout, busy_timeout) <= 0:
            raise ConfigError("poll_interval and the Supabase timeouts must be positive")
        self.project_ref = project_ref
        self.base_url = base_url.rstrip("/")
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_retry_wait = max_retry_wait
        self.start_timeout = start_timeout
        self.busy_timeout = busy_timeout
        self.token_env = token_env
        self.target_name = target_name
        self._sleep = sleep
        self._clock = clock
        self._now = now
        self._pitr_enabled: bool | None = None
        self._client = api_client(self.base_url, secret, transport=transport,
                                  timeout=request_timeout)

    def __repr__(self) -> str:
        return f"SupabaseProvider(project_ref={self.project_ref!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        self._client.close()

    # -- construction from restorekit.toml -----------------------------------------------------

    @classmethod
    def from_config(cls, target: TargetConfig, settings: Settings) -> SupabaseProvider:
        """Build from ``[targets.NAME.supabase]``; the token is read from ``token_env`` now, so a
        missing variable fails before any step runs."""
        section = section_name(target.name, "supabase")
        options = load_section(SupabaseSettings, target.supabase, section)
        token = token_from_env(options.token_env, "token_env", section,
                               "a Supabase access token")
        return cls(
            project_ref=options.project_ref,
            token=token,
            base_url=options.base_url,
            poll_interval=options.poll_interval_seconds,
            timeout=options.timeout_seconds,
            start_timeout=options.start_timeout_seconds,
            busy_timeout=options.busy_timeout_seconds,
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
        """Overwrite the project with its state at ``point`` and wait until it is healthy again.

        ``point``: a time (PITR projects; rounded down to whole seconds), ``latest`` (PITR: the
        latest recovery point; otherwise the newest backup) or ``backup:<id>``, checked against
        the window before anything is sent. Then the project status decides
        (:data:`STATUS_RULES`): ACTIVE_HEALTHY starts; ACTIVE_UNHEALTHY starts a PITR restore;
        a passing state is waited out for up to ``busy_timeout``; the rest are refused. After
        the call, blocks until the restore was seen to start (within ``start_timeout``) and the
        project is ACTIVE_HEALTHY again (within ``timeout``). ``progress`` gets
        ``("supabase <STATUS>", elapsed s, limit s)`` on every poll.

        Raises:
            RestorePointError: the point is outside the window, or a time without PITR.
            CapabilityNotSupported: an lsn/xid/name/immediate target.
            ProviderError: the API refused; the status forbids a restore (``code`` is the
                status, the message says what to do); or the project stayed in a passing state
                past ``busy_timeout`` (retryable: nothing was sent).
            OperationFailed: the project reached a state it does not leave on its own
                (RESTORE_FAILED, INIT_FAILED, PAUSE_FAILED, INACTIVE, REMOVED).
            OperationTimedOut: no start was seen within ``start_timeout`` (the restore may not
                have started), or the project was not ACTIVE_HEALTHY within ``timeout``.
        """
        path, body, description = self._restore_request(point)
        before = self._status_allowing_restore(
            description, pitr=path.endswith("/restore-pitr"), progress=progress)
        log.info("Supabase project %s (%s): restoring in place to %s", self.project_ref, before,
                 description)
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

    def _status_allowing_restore(self, description: str, *, pitr: bool,
                                 progress: Progress) -> str:
        """Poll until the status lets a restore start (returned), waiting out passing states for
        up to ``busy_timeout``; raise when it forbids one. Nothing has been sent yet."""
        started = self._clock()
        seen = _Seen()
        while True:
            status = self.project_status()
            seen.add(status)
            rule = _rule(status)
            if rule.before == START or (rule.before == START_PITR and pitr):
                if status != "ACTIVE_HEALTHY":
                    log.warning("Supabase project %s is %s: starting the restore to %s anyway "
                                "(a point-in-time restore is what an unhealthy project needs)",
                                self.project_ref, status, description)
                return status
            if rule.before != WAIT:
                raise RestoreNotStarted(
                    f"Supabase project {self.project_ref} is {status}: not starting a restore "
                    f"to {description}; nothing was sent. "
                    + rule.advice.format(ref=self.project_ref),
                    provider=self.kind, operation="restore_in_place", code=status)
            elapsed = self._clock() - started
            progress(f"supabase {status} (waiting to restore)", int(elapsed),
                     int(self.busy_timeout))
            if elapsed >= self.busy_timeout:
                raise RestoreNotStarted(
                    f"Supabase project {self.project_ref} did not settle within "
                    f"{self.busy_timeout:.0f}s (busy_timeout): statuses seen {seen}. Not starting "
                    f"a restore to {description}; nothing was sent. Run again once the project "
                    "is ACTIVE_HEALTHY or ACTIVE_UNHEALTHY (or raise busy_timeout_seconds).",
                    provider=self.kind, operation="restore_in_place", retryable=True,
                    code=status)
            self._sleep(self.poll_interval)

    def _wait_until_restored(self, description: str, progress: Progress) -> None:
        """Poll after the restore call until the restore was seen to start and then ended
        ACTIVE_HEALTHY. Right after the call the status may still be the old one, so
        ACTIVE_HEALTHY before any sign of a start is not success (supabase/supabase#48948)."""
        started = self._clock()
        seen = _Seen()
        sign: str | None = None  # the status that showed the restore had started
        status = "UNKNOWN"
        while True:
            try:
                status = self.project_status()
            except ProviderError as exc:
                if not exc.is_retryable:
                    raise
                log.warning("Supabase status poll failed (%s); polling on", exc)
            else:
                elapsed = self._clock() - started
                progress(f"supabase {status}", int(elapsed), int(self.timeout))
                if seen.add(status):
                    log.info("Supabase project %s: %s", self.project_ref, status)
                rule = _rule(status)
                if rule.during == FAILED:
                    self._failed(status, description, seen)
                if rule.during == RESTORING or (rule.during == SIGN and sign is None):
                    sign = status
                if rule.during == DONE and sign is not None:
                    if sign != "RESTORING":
                        log.warning("Supabase project %s never showed RESTORING, only %s, before "
                                    "ACTIVE_HEALTHY: taking the restore as done (verify the "
                                    "data)", self.project_ref, sign)
                    return
            elapsed = self._clock() - started
            if sign is None and elapsed >= min(self.start_timeout, self.timeout):
                raise OperationTimedOut(
                    f"Supabase accepted the restore of project {self.project_ref} to "
                    f"{description}, but showed no sign of it starting within {elapsed:.0f}s "
                    f"(statuses seen: {seen}; a restore shows RESTORING). The restore may not "
                    "have started, or may still start late: it is NOT done. Check the project in "
                    "the dashboard before starting another one; if nothing is happening, "
                    f"contact Supabase support ({SUPPORT_URL}).",
                    provider=self.kind, operation="restore_in_place", code=status)
            if elapsed >= self.timeout:
                raise OperationTimedOut(
                    f"Supabase project {self.project_ref} was still {status} {self.timeout:.0f}s "
                    f"after the restore to {description} was requested (statuses seen: {seen}). "
                    "The restore may still be running: do not start another one; watch the "
                    "project in the dashboard and contact Supabase support "
                    f"({SUPPORT_URL}) if it does not come back.",
                    provider=self.kind, operation="restore_in_place", code=status)
            self._sleep(self.poll_interval)

    def _failed(self, status: str, description: str, seen: _Seen) -> NoReturn:
        raise OperationFailed(
            f"Supabase project {self.project_ref} is {status} after the restore to "
            f"{description} was requested (statuses seen: {seen}). "
            + _rule(status).advice.format(ref=self.project_ref)
            + " The snapshot taken before the restore holds the data as it was.",
            provider=self.kind, operation="restore_in_place", code=status,
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
                        sleep=self._sleep, log=log, now=self._now)
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


def _rule(status: str) -> StatusRule:
    rule = STATUS_RULES.get(status)
    if rule is None:
        level = logging.DEBUG if status in _warned else logging.WARNING
        _warned.add(status)
        log.log(level, "Supabase project status %r is not in the documented list; treated as "
                "UNKNOWN", status)
        return _UNLISTED
    return rule


class _Seen:
    """The statuses polled, in order, repeats counted: ``ACTIVE_HEALTHY x3, RESTORING x2``."""

    def __init__(self) -> None:
        self.runs: list[list[Any]] = []

    def add(self, status: str) -> bool:
        """Record one poll; True when the status changed."""
        if self.runs and self.runs[-1][0] == status:
            self.runs[-1][1] += 1
            return False
        self.runs.append([status, 1])
        return True

    def __str__(self) -> str:
        shown = [f"{status} x{count}" if count > 1 else str(status)
                 for status, count in self.runs[-8:]]
        return ", ".join((["..."] if len(self.runs) > 8 else []) + shown) or "none"


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

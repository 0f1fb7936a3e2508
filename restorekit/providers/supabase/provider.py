"""SupabaseProvider: restores in place, its capabilities, and waiting for a restore."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any, ClassVar, NoReturn

from restorekit.config import Settings, TargetConfig
from restorekit.errors import (
    CapabilityNotSupported,
    OperationFailed,
    OperationTimedOut,
    ProviderError,
    RestoreNotStarted,
    RestorePointError,
    SafetyError,
)
from restorekit.models import BackupInfo, PointKind, RestoredDatabase, RestorePoint, RestoreWindow
from restorekit.providers._cloud import (
    load_section,
    section_name,
    token_from_env,
)
from restorekit.providers.base import Capability, Progress, ProviderDefaults, no_progress
from restorekit.providers.supabase.client import SupabaseClient
from restorekit.providers.supabase.settings import SUPPORT_URL, SupabaseSettings
from restorekit.providers.supabase.statuses import (
    DONE,
    FAILED,
    RESTORING,
    SIGN,
    START,
    START_PITR,
    WAIT,
    _rule,
    _Seen,
)

log = logging.getLogger(__name__)

_POSSIBLE = frozenset({Capability.IN_PLACE_RESTORE, Capability.POINT_IN_TIME})

_NO_NEW_TARGET = (
    "Supabase cannot restore into a new database through its API: the Management API (v1) "
    "restores a project only in place (POST /v1/projects/{{ref}}/database/backups/restore-pitr "
    "or .../restore, which overwrite project {provider.project_ref}). \"Restore to a New "
    "Project\" exists only in the Supabase dashboard (Database > Backups; paid plans with "
    "physical backups). Use the in-place path instead (restorekit snapshots the current state "
    "first), or restore to a new project in the dashboard by hand and configure it as its own "
    "target."
)




class _ProjectCapabilities:
    """``capabilities``: on the class, what a Supabase project can offer at most; on an instance,
    what THIS project offers (POINT_IN_TIME only with the PITR add-on). The first instance access
    reads the backups list (one GET); later ones reuse what the last read found."""

    def __get__(self, obj: SupabaseProvider | None, owner: type) -> frozenset[Capability]:
        if obj is None:
            return _POSSIBLE
        return obj._project_capabilities()


class SupabaseProvider(SupabaseClient, ProviderDefaults):
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
        http: the transport, injected time and retry budget (tests replace them): its
            ``max_attempts`` count per call on 429 (every call) and on 5xx/network errors
            (GETs); its ``max_retry_wait`` caps one wait (the rate-limit window is a minute).
        token_env: the variable the token came from, named in auth errors.
    """

    kind: ClassVar[str] = "supabase"
    capabilities = _ProjectCapabilities()
    why_not = {Capability.NEW_TARGET_RESTORE: _NO_NEW_TARGET}  # restore() refuses with it

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
            if point.time > self.http.now():
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
        started = self.http.clock()
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
            elapsed = self.http.clock() - started
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
            self.http.sleep(self.poll_interval)

    def _wait_until_restored(self, description: str, progress: Progress) -> None:
        """Poll after the restore call until the restore was seen to start and then ended
        ACTIVE_HEALTHY. Right after the call the status may still be the old one, so
        ACTIVE_HEALTHY before any sign of a start is not success (supabase/supabase#48948)."""
        started = self.http.clock()
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
                elapsed = self.http.clock() - started
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
            elapsed = self.http.clock() - started
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
            self.http.sleep(self.poll_interval)

    def _failed(self, status: str, description: str, seen: _Seen) -> NoReturn:
        raise OperationFailed(
            f"Supabase project {self.project_ref} is {status} after the restore to "
            f"{description} was requested (statuses seen: {seen}). "
            + _rule(status).advice.format(ref=self.project_ref)
            + " The snapshot taken before the restore holds the data as it was.",
            provider=self.kind, operation="restore_in_place", code=status,
        )


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

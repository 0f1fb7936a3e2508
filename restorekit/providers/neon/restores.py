"""Restores: branches at a time, an LSN, a backup or the head, in place, and backup branches."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, timedelta
from typing import Any

from pydantic import SecretStr

from restorekit.errors import (
    CapabilityNotSupported,
    ConfigError,
    OperationTimedOut,
    ProviderError,
    RestorePointError,
)
from restorekit.models import (
    BackupInfo,
    PointKind,
    RestoredDatabase,
    RestorePoint,
    RestoreWindow,
    parse_lsn,
)
from restorekit.providers.base import Progress, check_restore_name, no_progress
from restorekit.providers.neon.client import NeonClient
from restorekit.providers.neon.errors import _need
from restorekit.providers.neon.formats import (
    _backup_info,
    _branch_point,
    _pooled,
    _slug,
    _ts,
    rfc3339,
)
from restorekit.providers.neon.settings import BACKUP_PREFIX, PRESERVE_PREFIX

log = logging.getLogger(__name__)


class NeonRestores(NeonClient):
    """The restore side of :class:`NeonProvider`."""

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
        now = self.http.now()
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
        stamp = self.http.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
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
        check_restore_name(name)
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
            (window or self.restore_window()).check(point, now=self.http.now())

        started = self.http.clock()
        existing = self._find_branch(branch_name)
        if existing is not None:
            self._check_same_point(existing, point, parent_id, name)
            log.info("reusing Neon branch %s (%s) from an earlier attempt", branch_name,
                     existing["id"])
            branch = self._wait_branch_ready(existing, progress=progress)
            return self._restored(branch, point, phases={"reuse": self.http.clock() - started})

        spec: dict[str, Any] = {"parent_id": parent_id, "name": branch_name}
        if point.kind is PointKind.TIME:
            assert point.time is not None
            spec["parent_timestamp"] = rfc3339(point.time)
        elif point.kind is PointKind.LSN:
            spec["parent_lsn"] = str(point.value).upper()
        body = {"branch": spec, "endpoints": [{"type": "read_write"}]}
        created = self._call("POST", self._p("/branches"), operation="restore", json=body,
                             expect=(201,))
        requested = self.http.clock()
        self._wait(created.get("operations") or [], what=f"branch {branch_name}",
                   progress=progress)
        done = self.http.clock()
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

    def restore_in_place(self, point: RestorePoint, *, progress: Progress = no_progress) -> None:
        """Restore the production branch onto itself at ``point`` (a time or an LSN).

        Neon needs both a timestamp/LSN and ``preserve_under_name`` for a same-branch restore
        (§3.4); the pre-restore state is kept as ``restorekit-pre-restore-<UTC time>``, which
        becomes the parent of the restored branch. The branch id and its endpoint stay the same.
        """
        self._check_point_locally(point, allow=(PointKind.TIME, PointKind.LSN))
        self.restore_window().check(point, now=self.http.now())
        preserve = PRESERVE_PREFIX + self.http.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
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

    def _check_point_locally(self, point: RestorePoint, *, allow: tuple[PointKind, ...]) -> None:
        if point.kind not in allow:
            raise CapabilityNotSupported(
                f"Neon cannot restore to a {point.kind.value} target; use "
                + ", ".join(k.value for k in allow)
            )
        if point.kind is PointKind.TIME:
            assert point.time is not None
            if point.time > self.http.now():
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
        deadline = self.http.clock() + self.timeout
        while branch.get("current_state") != "ready":
            if self.http.clock() >= deadline:
                raise OperationTimedOut(
                    f"Neon branch {branch['name']} ({branch['id']}) still "
                    f"{branch.get('current_state')} after {self.timeout:.0f} s",
                    provider=self.kind, operation=str(branch["id"]))
            progress("neon branch", 0, 1)
            self.http.sleep(self.poll_interval)
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

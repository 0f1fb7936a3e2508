"""RDS restores: a point-in-time or snapshot restore into a new instance or Aurora cluster."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any, ClassVar

from restorekit.errors import (
    CapabilityNotSupported,
    OperationTimedOut,
    ProviderError,
    SafetyError,
)
from restorekit.models import PointKind, RestoredDatabase, RestorePoint, RestoreWindow
from restorekit.providers.base import Progress, no_progress
from restorekit.providers.rds.errors import (
    PROVIDER,
    aws_error_code,
)
from restorekit.providers.rds.settings import (
    FAILED_STATES,
    TAG_ADOPTED,
    TAG_BACKUP,
    TAG_NAME,
    TAG_POINT,
    TAG_RECOVERED_TO,
    TAG_SOURCE,
    TAG_TARGET,
    _tag_value,
    _tags,
    _utc,
)
from restorekit.providers.rds.snapshots import RdsSnapshots

log = logging.getLogger(__name__)


class RdsRestores(RdsSnapshots):
    """Point-in-time and snapshot restores into a NEW instance (or Aurora cluster), reusing one
    an earlier attempt left, and waiting for it with our own deadline (§1.5)."""

    def restore(
        self,
        point: RestorePoint,
        *,
        name: str,
        progress: Progress = no_progress,
        window: RestoreWindow | None = None,
    ) -> RestoredDatabase:
        """Restore the source at ``point`` into a NEW instance named after ``name``.

        The point is validated (kind, window or snapshot) before any request that changes
        anything. A re-run with the same name reuses a finished restore, resumes waiting for
        one still being created, and refuses an instance that is not restorekit's scratch
        restore of this source.

        Raises:
            CapabilityNotSupported: LSN, XID, named-restore-point or ``immediate`` targets.
            RestorePointError: outside the window, in the future, or an unknown snapshot.
            SafetyError: the identifier is taken by something restorekit did not create.
            OperationTimedOut: not available after the configured attempts (still running).
            ProviderError: an RDS call failed, or the instance ended in a failed state.
        """
        if point.kind not in (PointKind.LATEST, PointKind.TIME, PointKind.BACKUP):
            raise CapabilityNotSupported(
                f"RDS restores to a time, 'latest' or backup:<snapshot id>, not to "
                f"{point.kind.value} targets ({point})"
            )
        snapshot = None
        if point.kind is PointKind.BACKUP:
            assert point.value is not None
            snapshot = self._snapshot(point.value)  # the snapshot is the "window" of this point
            recovered_to = (_utc(snapshot.get("SnapshotDatabaseTime"))
                            or _utc(snapshot.get("SnapshotCreateTime")))
        else:
            window = window or self.restore_window()
            window.check(point)
            recovered_to = point.time if point.kind is PointKind.TIME else window.latest
        ident = self.instance_id_for(name)
        tags = self._restore_tags(name, point, snapshot, recovered_to)
        started = time.monotonic()
        if self._aurora:
            instance = self._restore_aurora(ident, name, point, snapshot, tags, progress)
        else:
            instance = self._restore_instance(ident, name, point, snapshot, tags, progress)
        restored = self._restored(instance, phases={"restore": time.monotonic() - started})
        log.info("restored RDS %s at %s into instance %s", self.source_id, point, ident)
        return restored

    def _restore_tags(self, name: str, point: RestorePoint, snapshot: dict[str, Any] | None,
                      recovered_to: datetime | None) -> list[dict[str, str]]:
        tags = {
            self.settings.scratch_tag_key: "true",
            TAG_NAME: _tag_value(name),
            TAG_SOURCE: self.source_id,
            TAG_POINT: _tag_value(str(point)),
        }
        if self.target_name:
            tags[TAG_TARGET] = self.target_name
        if snapshot is not None:
            tags[TAG_BACKUP] = _tag_value(str(point.value))
        if recovered_to is not None:
            tags[TAG_RECOVERED_TO] = recovered_to.astimezone(UTC).isoformat()
        return [{"Key": k, "Value": v} for k, v in tags.items()]

    def _check_reusable(self, resource: dict[str, Any], ident: str, name: str,
                        point: RestorePoint) -> None:
        tags = _tags(resource)
        ours = tags.get(TAG_NAME) == _tag_value(name) and tags.get(TAG_SOURCE) == self.source_id
        if ours and TAG_ADOPTED in tags:
            raise SafetyError(f"RDS {ident} was adopted as the production database; it is not "
                              "reused as a restore")
        if not ours or self.settings.scratch_tag_key not in tags:
            raise SafetyError(
                f"RDS {ident} already exists and is not restorekit's scratch restore {name!r} "
                f"of {self.source_id}; restorekit will not reuse or touch it. Pick another "
                "restore name (incident id)"
            )
        if tags.get(TAG_POINT) != _tag_value(str(point)):
            raise SafetyError(
                f"RDS {ident} (restore {name!r}) was restored at {tags.get(TAG_POINT)!r}, not at "
                f"{str(point)!r}; discard it first or use another restore name (incident id)"
            )

    def _common_instance_params(self, source: dict[str, Any]) -> dict[str, Any]:
        """What a restored instance must copy from the source explicitly (§1.1)."""
        params: dict[str, Any] = {
            "DBInstanceClass": self.settings.db_instance_class or source.get("DBInstanceClass"),
            "PubliclyAccessible": bool(source.get("PubliclyAccessible", False)),
            "MultiAZ": bool(source.get("MultiAZ", False)),
            "DeletionProtection": False,
            "CopyTagsToSnapshot": bool(source.get("CopyTagsToSnapshot", False)),
            "EnableIAMDatabaseAuthentication": bool(
                source.get("IAMDatabaseAuthenticationEnabled", False)),
        }
        subnet_group = (source.get("DBSubnetGroup") or {}).get("DBSubnetGroupName")
        if subnet_group:
            params["DBSubnetGroupName"] = subnet_group
        groups = [g["VpcSecurityGroupId"] for g in source.get("VpcSecurityGroups") or []
                  if g.get("VpcSecurityGroupId")]
        if groups:
            params["VpcSecurityGroupIds"] = groups
        parameter_groups = source.get("DBParameterGroups") or []
        if parameter_groups and parameter_groups[0].get("DBParameterGroupName"):
            params["DBParameterGroupName"] = parameter_groups[0]["DBParameterGroupName"]
        for key in ("StorageType", "BackupRetentionPeriod"):
            if source.get(key) is not None:
                params[key] = source[key]
        return params

    def _restore_instance(self, ident: str, name: str, point: RestorePoint,
                          snapshot: dict[str, Any] | None, tags: list[dict[str, str]],
                          progress: Progress) -> dict[str, Any]:
        existing = self._describe_instance(ident)
        if existing is not None:
            self._check_reusable(existing, ident, name, point)
            log.info("RDS instance %s exists from an earlier attempt (%s): reusing it", ident,
                     existing.get("DBInstanceStatus"))
        else:
            params = {**self._common_instance_params(self._source_instance()), "Tags": tags}
            try:
                if snapshot is not None:
                    self._call("restore_db_instance_from_db_snapshot", resource=ident,
                               DBInstanceIdentifier=ident,
                               DBSnapshotIdentifier=snapshot["DBSnapshotIdentifier"], **params)
                elif point.kind is PointKind.TIME:
                    assert point.time is not None
                    self._call("restore_db_instance_to_point_in_time", resource=ident,
                               SourceDBInstanceIdentifier=self.settings.instance_id,
                               TargetDBInstanceIdentifier=ident,
                               RestoreTime=point.time.astimezone(UTC), **params)
                else:
                    self._call("restore_db_instance_to_point_in_time", resource=ident,
                               SourceDBInstanceIdentifier=self.settings.instance_id,
                               TargetDBInstanceIdentifier=ident,
                               UseLatestRestorableTime=True, **params)
            except ProviderError as exc:
                self._reuse_or_raise(exc, "instance", ident, name, point)
        return self._wait_available("instance", ident, progress, phase="restore")

    def _cleanup_command(self) -> str:
        target = f" --target {self.target_name}" if self.target_name else ""
        return f"`restorekit cleanup{target}`"

    _ALREADY_EXISTS: ClassVar[dict[str, str]] = {
        "instance": "DBInstanceAlreadyExists", "cluster": "DBClusterAlreadyExistsFault"}

    def _reuse_or_raise(self, exc: ProviderError, what: str, ident: str, name: str,
                        point: RestorePoint) -> None:
        """After a request creating ``ident`` failed: when it failed because ``ident`` exists
        (a concurrent attempt created it, or botocore retried a request RDS had accepted and
        the first answer was lost), check it is ours to reuse and go on to wait for it;
        otherwise raise, saying what the failure left behind."""
        found = None
        if aws_error_code(exc) == self._ALREADY_EXISTS[what]:
            found = self._describe(what, ident)
        if found is None:
            raise self._start_failed(exc, what, ident) from exc.__cause__
        self._check_reusable(found, ident, name, point)

    def _start_failed(self, exc: ProviderError, what: str, ident: str) -> ProviderError:
        """``exc`` from a request that creates ``ident``, plus what it left behind and what to
        do next. An error answer does not prove RDS did nothing (the request may have been
        accepted and only the answer lost), so this asks RDS."""
        cleanup = self._cleanup_command()
        try:
            found = self._describe(what, ident)
        except ProviderError:
            state = (f"whether RDS created {what} {ident} is unknown (describing it failed "
                     f"too); if it exists it is tagged {self.settings.scratch_tag_key} and "
                     f"{cleanup} removes it")
        else:
            if found is None:
                state = f"no {what} {ident} was created"
            else:
                status = found.get("DBInstanceStatus" if what == "instance" else "Status")
                state = (f"RDS did create {what} {ident} (status {status}, tagged "
                         f"{self.settings.scratch_tag_key}): a re-run with the same restore "
                         f"name (incident id) reuses it, {cleanup} removes it")
        if exc.is_retryable:
            step = ("re-run with the same incident id once RDS answers again (AWS Health "
                    "Dashboard for RDS in " + self.settings.region + ")")
        else:
            step = "fix the cause above, then re-run with the same incident id"
        return ProviderError(
            f"{exc}. State: {state}; the source {self.source_id} was not changed. Next: {step}",
            provider=PROVIDER, operation=exc.operation, retryable=exc.is_retryable,
            status_code=exc.status_code, code=exc.code, request_id=exc.request_id,
        )

    def _restore_aurora(self, ident: str, name: str, point: RestorePoint,
                        snapshot: dict[str, Any] | None, tags: list[dict[str, str]],
                        progress: Progress) -> dict[str, Any]:
        """Aurora (§1.8): restore a new cluster, then create its one instance."""
        cluster = self._describe_cluster(ident)
        source = self._source_cluster()
        if cluster is not None:
            self._check_reusable(cluster, ident, name, point)
        else:
            params: dict[str, Any] = {
                "DBClusterIdentifier": ident,
                "DeletionProtection": False,
                "CopyTagsToSnapshot": bool(source.get("CopyTagsToSnapshot", False)),
                "EnableIAMDatabaseAuthentication": bool(
                    source.get("IAMDatabaseAuthenticationEnabled", False)),
                "Tags": tags,
            }
            if source.get("DBSubnetGroup"):  # a plain name on DBCluster
                params["DBSubnetGroupName"] = source["DBSubnetGroup"]
            groups = [g["VpcSecurityGroupId"] for g in source.get("VpcSecurityGroups") or []
                      if g.get("VpcSecurityGroupId")]
            if groups:
                params["VpcSecurityGroupIds"] = groups
            if source.get("DBClusterParameterGroup"):
                params["DBClusterParameterGroupName"] = source["DBClusterParameterGroup"]
            if source.get("BackupRetentionPeriod"):
                params["BackupRetentionPeriod"] = source["BackupRetentionPeriod"]
            try:
                if snapshot is not None:
                    self._call("restore_db_cluster_from_snapshot", resource=ident,
                               SnapshotIdentifier=snapshot["DBClusterSnapshotIdentifier"],
                               Engine=source["Engine"], **params)
                elif point.kind is PointKind.TIME:
                    assert point.time is not None
                    self._call("restore_db_cluster_to_point_in_time", resource=ident,
                               SourceDBClusterIdentifier=self.settings.aurora_cluster_id,
                               RestoreType="full-copy",
                               RestoreToTime=point.time.astimezone(UTC), **params)
                else:
                    self._call("restore_db_cluster_to_point_in_time", resource=ident,
                               SourceDBClusterIdentifier=self.settings.aurora_cluster_id,
                               RestoreType="full-copy", UseLatestRestorableTime=True, **params)
            except ProviderError as exc:
                self._reuse_or_raise(exc, "cluster", ident, name, point)
        self._wait_available("cluster", ident, progress, phase="restore cluster")
        instance = self._describe_instance(ident)
        if instance is None:
            writer = self._source_instance()
            params = {
                "DBInstanceIdentifier": ident,
                "DBClusterIdentifier": ident,
                "Engine": source["Engine"],
                "DBInstanceClass": self.settings.db_instance_class or writer.get("DBInstanceClass"),
                "PubliclyAccessible": bool(writer.get("PubliclyAccessible", False)),
                "Tags": tags,
            }
            parameter_groups = writer.get("DBParameterGroups") or []
            if parameter_groups and parameter_groups[0].get("DBParameterGroupName"):
                params["DBParameterGroupName"] = parameter_groups[0]["DBParameterGroupName"]
            try:
                self._call("create_db_instance", resource=ident, **params)
            except ProviderError as exc:
                self._reuse_or_raise(exc, "instance", ident, name, point)
        else:
            self._check_reusable(instance, ident, name, point)
        return self._wait_available("instance", ident, progress, phase="create instance")

    def _wait_available(self, what: str, ident: str, progress: Progress,
                        *, phase: str) -> dict[str, Any]:
        """Poll until ``available`` (and, for an instance, an endpoint), with our own deadline.

        A describe that does not find it yet (eventual consistency right after the create) or
        fails transiently counts as "not yet", unlike the botocore waiter (§1.5).
        """
        attempts = self.settings.wait_max_attempts
        status = "unknown"
        for attempt in range(1, attempts + 1):
            try:
                found = self._describe(what, ident)
            except ProviderError as exc:
                if not exc.is_retryable:
                    raise
                log.warning("describing %s %s failed transiently (%s); still waiting", what,
                            ident, exc)
                found = None
            status = "not found yet" if found is None else str(
                found.get("DBInstanceStatus") if what == "instance" else found.get("Status"))
            progress(phase, attempt, attempts)
            if found is not None and status == "available" and (
                    what == "cluster" or found.get("Endpoint")):
                return found
            if status in FAILED_STATES:
                raise ProviderError(
                    f"RDS {what} {ident} is {status!r}; it will not become available. Discard "
                    "it (restorekit cleanup) and restore again",
                    provider=PROVIDER, operation="restore",
                )
            if attempt < attempts:
                self._sleep(self.settings.wait_delay_seconds)
        cleanup = self._cleanup_command()
        raise OperationTimedOut(
            f"RDS {what} {ident} was not available after {attempts} checks "
            f"{self.settings.wait_delay_seconds:g} s apart (last status: {status}); the restore "
            "may still be running: re-run with the same incident id to resume waiting, or "
            f"remove it with {cleanup} (it is tagged {self.settings.scratch_tag_key}); the "
            f"source {self.source_id} was not changed",
            provider=PROVIDER, operation="restore",
        )


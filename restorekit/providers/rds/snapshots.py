"""RDS restore window and snapshots: what a restore can reach, and manual snapshots."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from restorekit.errors import (
    ProviderError,
    RestorePointError,
)
from restorekit.models import BackupInfo, RestoreWindow
from restorekit.providers.base import Progress, no_progress
from restorekit.providers.rds.base import RdsBase
from restorekit.providers.rds.errors import (
    _is_not_found,
    map_rds_errors,
)
from restorekit.providers.rds.settings import (
    TAG_LABEL,
    TAG_TARGET,
    _tag_value,
    _tags,
    _utc,
)

log = logging.getLogger(__name__)


class RdsSnapshots(RdsBase):
    """The restore window (automated backups) and snapshots (``backup:<id>`` points)."""

    def restore_window(self) -> RestoreWindow:
        """From the earliest restorable time to ``LatestRestorableTime`` (the real latest).

        For an instance, RDS reports no earliest time: it is the oldest automated snapshot (or
        the instance's creation), and never more than BackupRetentionPeriod days back.

        Raises:
            RestorePointError: automated backups are off (BackupRetentionPeriod 0): no PITR.
        """
        source = self._source_cluster() if self._aurora else self._source_instance()
        retention = int(source.get("BackupRetentionPeriod") or 0)
        if retention == 0:
            raise RestorePointError(
                f"point-in-time restore is off for RDS {self.source_id}: BackupRetentionPeriod "
                "is 0 (automated backups disabled). Enable automated backups, or restore a "
                "snapshot with backup:<snapshot id>"
            )
        latest = _utc(source.get("LatestRestorableTime"))
        earliest = _utc(source.get("EarliestRestorableTime"))
        if earliest is None and not self._aurora:
            automated = self._paginate(
                "describe_db_snapshots", "DBSnapshots", resource=self.source_id,
                DBInstanceIdentifier=self.settings.instance_id, SnapshotType="automated")
            times = [t for t in (_utc(s.get("SnapshotCreateTime")) for s in automated
                                 if s.get("Status") == "available") if t is not None]
            earliest = min(times) if times else _utc(source.get("InstanceCreateTime"))
        if earliest is not None and latest is not None:
            earliest = min(max(earliest, latest - timedelta(days=retention)), latest)
        return RestoreWindow(earliest=earliest, latest=latest, latest_commit=latest)

    def list_backups(self) -> list[BackupInfo]:
        """Manual and automated snapshots of the source, oldest first."""
        if self._aurora:
            snaps = self._paginate("describe_db_cluster_snapshots", "DBClusterSnapshots",
                                   resource=self.source_id,
                                   DBClusterIdentifier=self.settings.aurora_cluster_id)
        else:
            snaps = self._paginate("describe_db_snapshots", "DBSnapshots",
                                   resource=self.source_id,
                                   DBInstanceIdentifier=self.settings.instance_id)
        return sorted((self._backup_info(s) for s in snaps), key=lambda b: b.start_time)

    def _backup_info(self, snap: dict[str, Any]) -> BackupInfo:
        ident = snap.get("DBClusterSnapshotIdentifier") or snap["DBSnapshotIdentifier"]
        taken = (_utc(snap.get("SnapshotCreateTime"))
                 or _utc(snap.get("OriginalSnapshotCreateTime")) or datetime.now(UTC))
        return BackupInfo(
            backup_id=ident,
            engine="aurora-snapshot" if self._aurora else "rds-snapshot",
            start_time=taken,
            stop_time=_utc(snap.get("SnapshotDatabaseTime")) or taken,
            start_lsn="",
            stop_lsn="",
            label=_tags(snap).get(TAG_LABEL, ""),
            extra={
                "type": snap.get("SnapshotType", ""),
                "status": snap.get("Status", ""),
                "arn": snap.get("DBClusterSnapshotArn") or snap.get("DBSnapshotArn", ""),
                "allocated_storage_gib": snap.get("AllocatedStorage"),
            },
        )

    def create_backup(self, label: str = "", *, progress: Progress = no_progress) -> BackupInfo:
        """A manual snapshot of the source, tagged with ``label``; returns once available."""
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:60]
        ident = "-".join(p for p in (f"rk-{self.source_id}", stamp, slug) if p)
        ident = re.sub(r"-{2,}", "-", ident)[:255].rstrip("-")
        tags = [{"Key": TAG_LABEL, "Value": _tag_value(label)}]
        if self.target_name:
            tags.append({"Key": TAG_TARGET, "Value": self.target_name})
        wait = {"Delay": self.settings.wait_delay_seconds,
                "MaxAttempts": self.settings.wait_max_attempts}
        log.info("creating RDS snapshot %s of %s", ident, self.source_id)
        progress("snapshot", 0, 1)
        # The same create, wait and describe for a cluster or an instance, each in its own
        # vocabulary (create_db_cluster_snapshot / DBClusterSnapshotIdentifier, ...).
        if self._aurora:
            api, key, what = "db_cluster", "DBCluster", "cluster snapshot"
            source = {"DBClusterIdentifier": self.settings.aurora_cluster_id}
        else:
            api, key, what = "db", "DB", "snapshot"
            source = {"DBInstanceIdentifier": self.settings.instance_id}
        named = {f"{key}SnapshotIdentifier": ident}
        self._call(f"create_{api}_snapshot", resource=ident, **named, **source, Tags=tags)
        with map_rds_errors("create_backup", resource=f"{what} {ident}"):
            self.client.get_waiter(f"{api}_snapshot_available").wait(**named, WaiterConfig=wait)
        snap = self._call(f"describe_{api}_snapshots", resource=ident,
                          **named)[f"{key}Snapshots"][0]
        progress("snapshot", 1, 1)
        info = self._backup_info(snap)
        return replace(info, label=label or info.label)

    def _snapshot(self, snapshot_id: str) -> dict[str, Any]:
        """The snapshot a ``backup:<id>`` point names, checked to belong to the source."""
        try:
            if self._aurora:
                snaps = self._call("describe_db_cluster_snapshots", resource=snapshot_id,
                                   DBClusterSnapshotIdentifier=snapshot_id)["DBClusterSnapshots"]
            else:
                snaps = self._call("describe_db_snapshots", resource=snapshot_id,
                                   DBSnapshotIdentifier=snapshot_id)["DBSnapshots"]
        except ProviderError as exc:
            if not _is_not_found(exc):
                raise
            snaps = []
        if not snaps:
            raise RestorePointError(
                f"no RDS snapshot {snapshot_id!r}; list the snapshots with `restorekit backups`")
        snap: dict[str, Any] = snaps[0]
        owner = snap.get("DBClusterIdentifier" if self._aurora else "DBInstanceIdentifier")
        if owner != self.source_id:
            raise RestorePointError(
                f"snapshot {snapshot_id!r} is of {owner!r}, not of {self.source_id!r}")
        if snap.get("Status") != "available":
            raise RestorePointError(
                f"snapshot {snapshot_id!r} is {snap.get('Status')!r}, not available")
        return snap


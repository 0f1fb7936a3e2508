"""RDS restored instances after the restore: finding, adopting, protecting, discarding."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from restorekit.errors import (
    OperationTimedOut,
    ProviderError,
    SafetyError,
)
from restorekit.models import RestoredDatabase
from restorekit.pg.dsn import parse
from restorekit.providers.rds.base import RdsBase
from restorekit.providers.rds.errors import (
    PROVIDER,
    _is_not_found,
)
from restorekit.providers.rds.settings import (
    _BACKUP_SETTINGS,
    TAG_ADOPTED,
    TAG_BACKUP,
    TAG_NAME,
    TAG_POINT,
    TAG_SOURCE,
    _tag_value,
    _tags,
    _utc,
)

log = logging.getLogger(__name__)


class RdsLifecycle(RdsBase):
    """What happens to a restored instance afterwards: found again, adopted as production,
    checked for backups, discarded (scratch ones only), listed for cleanup."""

    def _is_ours(self, tags: dict[str, str]) -> bool:
        return ((self.settings.scratch_tag_key in tags or TAG_ADOPTED in tags)
                and tags.get(TAG_SOURCE) == self.source_id)

    def find_restored(self, name: str) -> RestoredDatabase | None:
        """The available instance restore ``name`` created (adopted or not), or None."""
        ident = self.instance_id_for(name)
        instance = self._describe_instance(ident)
        if instance is None:
            return None
        tags = _tags(instance)
        if not self._is_ours(tags) or tags.get(TAG_NAME) != _tag_value(name):
            return None
        if instance.get("DBInstanceStatus") != "available" or not instance.get("Endpoint"):
            return None  # restore() resumes waiting for it
        return self._restored(instance)

    def adopt(self, restored: RestoredDatabase) -> None:
        """Mark the instance (and its Aurora cluster) as production: tag ``restorekit:adopted``
        first, then remove the scratch tag, so no crash in between leaves it deletable."""
        ident = restored.handle
        instance = self._describe_instance(ident)
        if instance is None:
            raise ProviderError(f"RDS instance {ident} not found; cannot adopt it",
                                provider=PROVIDER, operation="adopt", status_code=404)
        if not self._is_ours(_tags(instance)):
            raise SafetyError(f"RDS instance {ident} is not a restore restorekit made of "
                              f"{self.source_id}; not adopting it")
        arns = [instance["DBInstanceArn"]]
        if self._aurora and instance.get("DBClusterIdentifier"):
            cluster = self._describe_cluster(instance["DBClusterIdentifier"])
            if cluster is not None:
                arns.append(cluster["DBClusterArn"])
        stamp = datetime.now(UTC).isoformat()
        for arn in arns:
            self._call("add_tags_to_resource", resource=ident, ResourceName=arn,
                       Tags=[{"Key": TAG_ADOPTED, "Value": stamp}])
            self._call("remove_tags_from_resource", resource=ident, ResourceName=arn,
                       TagKeys=[self.settings.scratch_tag_key])
        log.info("adopted RDS instance %s as the production database", ident)

    def current_location(self) -> dict[str, object]:
        """The production instance this provider acts on (what an adoption replaces)."""
        return {"instance_id": self.settings.instance_id}

    def adopted_location(self, restored: RestoredDatabase) -> dict[str, object]:
        """What restorekit.production records for an adopted instance: its identifier, which
        later commands use as ``instance_id`` (restorekit.toml is not edited)."""
        return {"instance_id": restored.handle}

    def resume_protection(self, replaced: dict[str, Any] | None = None) -> Any:
        """Check the adopted production instance's automated backups: a restored instance can
        come up with other settings than the one it replaces. Returns a
        restorekit.production.Protection: not protected when BackupRetentionPeriod is 0 (no
        automated backups, no point-in-time restore); ``differences`` names every backup
        setting that differs from the replaced instance (when that one can still be read)."""
        from restorekit.production import Protection

        ident = self.settings.instance_id
        instance = self._describe_instance(ident)
        if instance is None:
            raise ProviderError(f"RDS instance {ident} not found; cannot check its backups",
                                provider=PROVIDER, operation="resume_protection",
                                status_code=404)
        old_id = str((replaced or {}).get("instance_id") or "")
        old = self._describe_instance(old_id) if old_id and old_id != ident else None
        differences = []
        for key, what in _BACKUP_SETTINGS:
            if old is not None and old.get(key) != instance.get(key):
                differences.append(f"{what} {old.get(key)} on {old_id}, {instance.get(key)} on "
                                   f"{ident}")
        retention = int(instance.get("BackupRetentionPeriod") or 0)
        if retention <= 0:
            wanted = int((old or {}).get("BackupRetentionPeriod") or 0) or 7
            return Protection(
                protected=False, differences=tuple(differences),
                detail=f"automated backups are off on RDS instance {ident} (BackupRetentionPeriod "
                       "0): no point-in-time restore",
                action=f"`aws rds modify-db-instance --db-instance-identifier {ident} "
                       f"--backup-retention-period {wanted} --apply-immediately`")
        latest = _utc(instance.get("LatestRestorableTime"))
        return Protection(
            protected=True, first_backup_at=latest, differences=tuple(differences),
            detail=f"RDS automated backups of {ident}, retention {retention} day(s)"
                   + ("" if latest else "; its first automated backup is still pending"))

    def _refuse_unless_scratch(self, resource: dict[str, Any], what: str, ident: str) -> None:
        tags = _tags(resource)
        if TAG_ADOPTED in tags:
            raise SafetyError(f"refusing to delete RDS {what} {ident}: it was adopted as the "
                              "production database")
        if self.settings.scratch_tag_key not in tags:
            raise SafetyError(f"refusing to delete RDS {what} {ident}: it has no "
                              f"{self.settings.scratch_tag_key!r} tag, so restorekit did not "
                              "create it as a scratch restore")

    def discard(self, restored: RestoredDatabase) -> None:
        """Delete a scratch restore (instance, then its Aurora cluster) and wait until gone.

        Only resources tagged as scratch and not adopted are deleted, with
        ``SkipFinalSnapshot=True`` and ``DeleteAutomatedBackups=True``; one already gone is
        success.

        Raises:
            SafetyError: not a scratch restore, adopted, or the source itself.
        """
        ident = restored.handle
        if ident in (self.settings.instance_id, self.settings.aurora_cluster_id):
            raise SafetyError(f"refusing to delete {ident}: it is the source database")
        instance = self._describe_instance(ident)
        cluster = self._describe_cluster(ident) if self._aurora else None
        if instance is not None:
            self._refuse_unless_scratch(instance, "instance", ident)
        if cluster is not None:
            self._refuse_unless_scratch(cluster, "cluster", ident)
        if instance is not None:
            if instance.get("DBInstanceStatus") != "deleting":
                self._delete("delete_db_instance", ident, DBInstanceIdentifier=ident,
                             SkipFinalSnapshot=True, DeleteAutomatedBackups=True)
            self._wait_gone("instance", ident)
        if cluster is not None:
            if cluster.get("Status") != "deleting":
                self._delete("delete_db_cluster", ident, DBClusterIdentifier=ident,
                             SkipFinalSnapshot=True, DeleteAutomatedBackups=True)
            self._wait_gone("cluster", ident)
        log.info("discarded the scratch RDS restore %s", ident)

    def _delete(self, method: str, ident: str, **params: Any) -> None:
        try:
            self._call(method, resource=ident, **params)
        except ProviderError as exc:
            if not _is_not_found(exc):  # already gone: that is what we wanted
                raise

    def _wait_gone(self, what: str, ident: str) -> None:
        attempts = self.settings.wait_max_attempts
        for attempt in range(1, attempts + 1):
            found = self._describe(what, ident)
            if found is None:
                return
            if attempt < attempts:
                self._sleep(self.settings.wait_delay_seconds)
        raise OperationTimedOut(
            f"RDS {what} {ident} was still there after {attempts} checks "
            f"{self.settings.wait_delay_seconds:g} s apart; its deletion may still be running",
            provider=PROVIDER, operation="discard",
        )

    def list_scratch(self) -> list[RestoredDatabase]:
        """Scratch restores of this source (tagged scratch, not adopted, not being deleted)."""
        found: list[RestoredDatabase] = []
        for instance in self._paginate("describe_db_instances", "DBInstances"):
            tags = _tags(instance)
            if (self.settings.scratch_tag_key not in tags or TAG_ADOPTED in tags
                    or tags.get(TAG_SOURCE) != self.source_id
                    or instance.get("DBInstanceStatus") in ("deleting", "deleted")):
                continue
            found.append(RestoredDatabase(
                provider=self.kind, handle=str(instance["DBInstanceIdentifier"]),
                dsn=SecretStr(""), point=tags.get(TAG_POINT, ""),
                backup_id=tags.get(TAG_BACKUP, ""),
            ))
        return sorted(found, key=lambda r: r.handle)

    def reaches(self, restored: RestoredDatabase, dsn: str) -> bool:
        """True when ``dsn`` connects to the restore ``restored`` (its endpoint, or where
        :meth:`_connect_address` maps it), so cleanup keeps what the application points at.
        An instance without an endpoint (still ``creating``) is reached by nothing."""
        instance = self._describe_instance(restored.handle)
        if instance is None or not (instance.get("Endpoint") or {}).get("Address"):
            return False
        address, port = self._endpoint(instance)
        mapped_host, mapped_port = self._connect_address(address, port)
        params = parse(dsn)
        host = str(params.get("host") or "").lower()
        dsn_port = int(str(params.get("port") or 5432))
        return (host, dsn_port) in {(address.lower(), port), (mapped_host.lower(), mapped_port)}

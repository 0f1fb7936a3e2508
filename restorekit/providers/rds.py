"""Amazon RDS for PostgreSQL (and Aurora PostgreSQL): every restore goes into a NEW instance.

RDS restores never overwrite: point-in-time and snapshot restores create a new DB instance (for
Aurora a new cluster plus one instance in it). The adapter follows provider-apis.md §1:

* the restore copies the source's network and configuration EXPLICITLY (subnet group, security
  groups, parameter group, class, public access, Multi-AZ, storage type, backup retention, IAM
  auth, tags); left out, RDS falls back to the default VPC security group, subnet group and
  parameter group (§1.1);
* ``RestoreTime`` is a tz-aware UTC datetime, or ``UseLatestRestorableTime`` — never both;
* the adapter polls ``describe_db_instances`` itself with the configured delay and attempts
  instead of the botocore waiter, which fails at once on ``DBInstanceNotFound`` (§1.5);
* every restore is tagged (``scratch_tag_key``, ``restorekit:target``, ``restorekit:name``,
  ``restorekit:source``, ...). Only instances with the scratch tag and without
  ``restorekit:adopted`` are ever deleted, with ``SkipFinalSnapshot=True`` (§1.6);
* a re-run with the same restore name finds the instance by its deterministic identifier and
  reuses it (or resumes waiting for it) instead of restoring again.

The restored DSN is the target's DSN (RDS keeps roles and passwords as of the restore point,
§1.1) with only host and port replaced. Credentials for AWS come from the AWS credential chain
only; the config names an instance, a region and optionally an endpoint URL. Every SDK call runs
inside :func:`map_rds_errors`, so only restorekit errors leave this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
    WaiterError,
)
from psycopg.conninfo import make_conninfo
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
from restorekit.pg.dsn import parse
from restorekit.providers.base import Capability, Progress, no_progress

log = logging.getLogger(__name__)

PROVIDER = "rds"

TAG_TARGET = "restorekit:target"
TAG_NAME = "restorekit:name"
TAG_SOURCE = "restorekit:source"
TAG_POINT = "restorekit:point"
TAG_BACKUP = "restorekit:backup"
TAG_RECOVERED_TO = "restorekit:recovered-to"
TAG_ADOPTED = "restorekit:adopted"
TAG_LABEL = "restorekit:label"

#: DBInstanceStatus / DBCluster Status values after which waiting is pointless (§1.5 plus the
#: other terminal states AWS documents).
FAILED_STATES = frozenset({
    "failed", "incompatible-restore", "incompatible-parameters", "incompatible-network",
    "incompatible-option-group", "restore-error", "inaccessible-encryption-credentials",
    "deleting", "deleted",
})

_IDENTIFIER = re.compile(r"^[a-z](?:[a-z0-9]|-(?!-))*$")  # letter first, no "--"
_NOT_TAG_VALUE = re.compile(r"[^\w .:/=+\-@]")  # RDS tag values: letters, digits, _.:/=+-@ space

# -- error translation --------------------------------------------------------------------------

_THROTTLING = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "SlowDown", "PriorRequestNotComplete", "BandwidthLimitExceeded",
})
_TRANSIENT = frozenset({
    "InternalFailure", "InternalError", "InternalServerError", "InternalServiceError",
    "ServiceUnavailable", "ServiceUnavailableException", "ServiceUnavailableError",
    "RequestTimeout", "RequestTimeoutException",
})
_NOT_FOUND = frozenset({
    "DBInstanceNotFound", "DBInstanceNotFoundFault", "DBSnapshotNotFound",
    "DBSnapshotNotFoundFault", "DBClusterNotFoundFault", "DBClusterSnapshotNotFoundFault",
})
_HINTS = {
    "DBInstanceNotFound": "the DB instance does not exist (check instance_id and region)",
    "DBClusterNotFoundFault": "the DB cluster does not exist (check aurora_cluster_id and region)",
    "DBSnapshotNotFound": "the snapshot does not exist",
    "PointInTimeRestoreNotEnabled": "point-in-time restore is not enabled for the source: "
    "automated backups are off (BackupRetentionPeriod 0)",
    "InvalidRestoreFault": "RDS cannot restore to that point (outside the restorable window, "
    "or the backups cannot reach it)",
    "DBInstanceAlreadyExists": "an instance with that identifier already exists",
    "InvalidDBInstanceState": "the instance is busy (creating, modifying, deleting) or in a "
    "state that does not allow this",
    "InsufficientDBInstanceCapacity": "no capacity for that instance class in this AZ; set "
    "db_instance_class to another class",
    "DBSubnetGroupNotFoundFault": "the source's DB subnet group no longer exists",
    "AccessDenied": "the AWS credentials lack the permission",
    "AccessDeniedException": "the AWS credentials lack the permission",
    "UnauthorizedOperation": "the AWS credentials lack the permission",
    "InvalidClientTokenId": "the AWS credentials are not valid",
    "SignatureDoesNotMatch": "the AWS credentials are not valid",
    "ExpiredToken": "the AWS session token has expired",
    "ExpiredTokenException": "the AWS session token has expired",
}


def _client_error_retryable(code: str, status: int | None) -> bool:
    return (code in _THROTTLING or code.startswith("Throttl") or code in _TRANSIENT
            or (status is not None and status >= 500))


def _on(resource: str) -> str:
    return f" ({resource})" if resource else ""


def _from_client_error(exc: ClientError, operation: str, resource: str) -> ProviderError:
    error = exc.response.get("Error", {}) or {}
    meta = exc.response.get("ResponseMetadata", {}) or {}
    code = str(error.get("Code") or "Unknown")
    message = str(error.get("Message") or "").strip()
    status = meta.get("HTTPStatusCode")
    status = int(status) if status is not None else None
    retryable = _client_error_retryable(code, status)
    hint = _HINTS.get(code) or _HINTS.get(code.removesuffix("Fault"))
    attempts = int(meta.get("RetryAttempts") or 0) + 1  # botocore's own retries included
    text = f"RDS {operation}{_on(resource)} failed: {code}: {message or '(no message)'}"
    if hint:
        text += f" — {hint}"
    if retryable:
        text += (f" (transient; still failing after {attempts} attempts)" if attempts > 1
                 else " (transient; retrying may help)")
    if meta.get("RequestId"):
        text += f" [request id {meta['RequestId']}]"
    return ProviderError(text, provider=PROVIDER, operation=operation, retryable=retryable,
                         status_code=status, code=code, request_id=meta.get("RequestId"))


@contextlib.contextmanager
def map_rds_errors(operation: str, *, resource: str = "") -> Iterator[None]:
    """Translate botocore errors raised inside the block into restorekit errors.

    * ``ClientError`` → :class:`ProviderError` with the AWS code and message; retryable for
      throttling, 5xx, ``InternalFailure`` and ``ServiceUnavailable``; not for 4xx faults such
      as ``DBInstanceNotFound``, ``InvalidRestoreFault`` or ``PointInTimeRestoreNotEnabled``.
      ``status_code`` is the HTTP status (404 for the not-found faults).
    * connection failures and timeouts talking to the API → retryable :class:`ProviderError`.
    * a waiter that ran out of attempts → :class:`OperationTimedOut` naming ``resource``.
    * missing credentials → non-retryable :class:`ProviderError`; invalid request parameters →
      :class:`ConfigError`.

    The original exception is chained (``raise ... from exc``).
    """
    try:
        yield
    except ClientError as exc:
        raise _from_client_error(exc, operation, resource) from exc
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
            ConnectionClosedError) as exc:
        raise ProviderError(
            f"RDS {operation}{_on(resource)}: the RDS API did not answer ({exc}); "
            "retrying may help",
            provider=PROVIDER, operation=operation, retryable=True,
        ) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise ProviderError(
            f"RDS {operation}: no usable AWS credentials in the AWS credential chain "
            "(environment, shared config/profile, container or instance role)",
            provider=PROVIDER, operation=operation,
        ) from exc
    except ParamValidationError as exc:
        raise ConfigError(f"RDS {operation}{_on(resource)}: invalid request: {exc}") from exc
    except WaiterError as exc:
        reason = str(getattr(exc, "kwargs", {}).get("reason", exc))
        if "max attempts exceeded" in reason.lower():
            raise OperationTimedOut(
                f"RDS {operation}: {resource or 'the resource'} did not become available in "
                f"time ({reason}); it may still be in progress",
                provider=PROVIDER, operation=operation,
            ) from exc
        raise ProviderError(f"RDS {operation}{_on(resource)}: {reason}", provider=PROVIDER,
                            operation=operation) from exc
    except BotoCoreError as exc:
        raise ProviderError(f"RDS {operation}{_on(resource)}: {exc}", provider=PROVIDER,
                            operation=operation) from exc


def aws_error_code(exc: BaseException) -> str | None:
    """The AWS error code behind a translated error (``DBInstanceNotFound``), if any."""
    cause = exc.__cause__
    if isinstance(cause, ClientError):
        return str(cause.response.get("Error", {}).get("Code") or "") or None
    return None


def _is_not_found(exc: ProviderError) -> bool:
    return aws_error_code(exc) in _NOT_FOUND


# -- configuration ------------------------------------------------------------------------------


def _check_identifier(value: str, what: str) -> str:
    value = value.strip().lower()  # RDS stores identifiers in lower case
    if not (1 <= len(value) <= 63) or not _IDENTIFIER.match(value) or value.endswith("-"):
        raise ValueError(
            f"{what} {value!r} is not an RDS identifier: 1-63 letters, digits or hyphens, "
            "starting with a letter, no '--', no trailing hyphen"
        )
    return value


class RdsSettings(BaseModel):
    """The ``[targets.NAME.rds]`` section of restorekit.toml.

    Credentials are never configured here: boto3 reads them from the AWS credential chain.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    instance_id: str = Field(description="The source DB instance (for Aurora: its writer).")
    region: str = Field(min_length=1)
    endpoint_url: str | None = Field(default=None, description="Override the RDS endpoint.")
    aurora_cluster_id: str | None = Field(
        default=None, description="Restore this Aurora cluster (a new cluster + one instance).")
    db_instance_class: str | None = Field(
        default=None, description="Class of the restored instance (default: the source's).")
    wait_delay_seconds: float = Field(default=30, ge=0)
    wait_max_attempts: int = Field(default=60, ge=1)
    scratch_tag_key: str = Field(default="restorekit:scratch", min_length=1, max_length=128)

    @field_validator("instance_id")
    @classmethod
    def _instance_id(cls, value: str) -> str:
        return _check_identifier(value, "instance_id")

    @field_validator("aurora_cluster_id")
    @classmethod
    def _cluster_id(cls, value: str | None) -> str | None:
        return None if value is None else _check_identifier(value, "aurora_cluster_id")

    @field_validator("scratch_tag_key")
    @classmethod
    def _tag_key(cls, value: str) -> str:
        if value.lower().startswith("aws:"):
            raise ValueError("tag keys starting with 'aws:' are reserved by AWS")
        return value


def restore_identifier(target: str, name: str) -> str:
    """The DB instance identifier for restore ``name`` of ``target``: deterministic (a re-run
    finds the same instance), valid for RDS (1-63 characters, letter first, no ``--``, no
    trailing hyphen); long names are cut and end in a hash of the full name."""
    raw = f"{target}-{name}" if target else name
    slug = re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    if not slug:  # nothing usable in the name: its hash keeps it deterministic
        return f"rk-{digest}"
    ident = f"rk-{slug}"
    if len(ident) > 63:
        ident = f"{ident[:54].rstrip('-')}-{digest}"
    return ident


#: Backup settings a restored instance may not share with the one it replaces (RDS applies
#: some of them from the restore request, others from defaults).
_BACKUP_SETTINGS = (
    ("BackupRetentionPeriod", "backup retention (days):"),
    ("PreferredBackupWindow", "backup window:"),
    ("CopyTagsToSnapshot", "copy tags to snapshots:"),
    ("DeletionProtection", "deletion protection:"),
)


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in resource.get("TagList") or []}


def _tag_value(text: str) -> str:
    return _NOT_TAG_VALUE.sub("_", text)[:256]


# -- the provider -------------------------------------------------------------------------------


class RdsProvider:
    """An RDS for PostgreSQL instance (or Aurora PostgreSQL cluster) restored into new instances.

    Args:
        settings: the validated ``[targets.NAME.rds]`` section.
        source_dsn: how the application reaches the source database, with its credentials; the
            restored DSN is this one with host and port replaced. Never logged.
        target_name: the config target, part of restore identifiers and tags.
        database: database name for restored DSNs (default: the DSN's dbname).
        client: a boto3 RDS client to use (default: built from the AWS credential chain).
        sleep: how to wait between polls (injected by tests).
    """

    kind: ClassVar[str] = "rds"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({
        Capability.NEW_TARGET_RESTORE, Capability.POINT_IN_TIME, Capability.NAMED_BACKUPS,
    })

    def __init__(
        self,
        settings: RdsSettings,
        *,
        source_dsn: str | SecretStr,
        target_name: str = "",
        database: str | None = None,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        if not isinstance(source_dsn, SecretStr):
            source_dsn = SecretStr(source_dsn)
        self._source_dsn = source_dsn
        parse(self._source_dsn.get_secret_value())  # ConfigError (redacted) when malformed
        self.target_name = target_name
        self.database = database
        self._client = client
        self._sleep = sleep

    @classmethod
    def from_config(cls, target: TargetConfig, settings: Settings) -> RdsProvider:
        """Validate ``[targets.NAME.rds]`` and read the source DSN (``dsn`` / ``dsn_env``)."""
        if target.rds is None:
            raise ConfigError(f"target {target.name!r}: provider 'rds' needs a "
                              f"[targets.{target.name}.rds] section")
        try:
            options = RdsSettings(**target.rds)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"target {target.name!r}: [targets.{target.name}.rds]: "
                              f"{problems}") from None
        return cls(options, source_dsn=target.resolve_dsn(), target_name=target.name,
                   database=target.database)

    @property
    def client(self) -> Any:
        """The boto3 RDS client (built on first use; tests hook its event system)."""
        if self._client is None:
            core = botocore.session.get_session()  # one per provider: not thread-safe
            session = boto3.session.Session(botocore_session=core)
            # Throttling, 5xx and dropped connections are retried by botocore (standard mode,
            # also for the restore calls: a retried restore that RDS already accepted answers
            # DBInstanceAlreadyExists, which _restore_instance turns into "wait for it").
            # AWS_MAX_ATTEMPTS / AWS_RETRY_MODE (or the profile's max_attempts / retry_mode)
            # win over our defaults, as for the S3 repository.
            retries: dict[str, Any] = {"mode": "standard"}
            if core.get_config_variable("retry_mode") == "adaptive":
                retries["mode"] = "adaptive"
            if core.get_config_variable("max_attempts") is None:
                retries["total_max_attempts"] = 5
            self._client = session.client(
                "rds", region_name=self.settings.region, endpoint_url=self.settings.endpoint_url,
                config=Config(retries=retries, connect_timeout=10, read_timeout=60),
            )
        return self._client

    @property
    def source_id(self) -> str:
        """What restores are made from: the Aurora cluster, else the instance."""
        return self.settings.aurora_cluster_id or self.settings.instance_id

    @property
    def _aurora(self) -> bool:
        return self.settings.aurora_cluster_id is not None

    def instance_id_for(self, name: str) -> str:
        """The identifier restore ``name`` gets (and is found by on a re-run)."""
        if not name or not name.strip():
            raise ConfigError("a restore needs a name")
        return restore_identifier(self.target_name, name)

    def _connect_address(self, address: str, port: int) -> tuple[str, int]:
        """Where clients reach an endpoint. The identity in production.

        This is the seam for a tunnel (an SSH or SSM port forward to a private instance) and for
        tests, where moto's endpoint hostnames do not resolve: a subclass maps them to a real
        PostgreSQL server. Every DSN this provider hands out goes through it.
        """
        return address, port

    # -- SDK plumbing ------------------------------------------------------------------------

    def _call(self, method: str, *, resource: str = "", **params: Any) -> Any:
        with map_rds_errors(method, resource=resource):
            return getattr(self.client, method)(**params)

    def _paginate(self, method: str, key: str, *, resource: str = "",
                  **params: Any) -> list[dict[str, Any]]:
        with map_rds_errors(method, resource=resource):
            items: list[dict[str, Any]] = []
            for page in self.client.get_paginator(method).paginate(**params):
                items.extend(page.get(key) or [])
            return items

    def _describe_instance(self, ident: str) -> dict[str, Any] | None:
        try:
            found = self._call("describe_db_instances", resource=ident,
                               DBInstanceIdentifier=ident)["DBInstances"]
        except ProviderError as exc:
            if _is_not_found(exc):
                return None
            raise
        return found[0] if found else None

    def _describe_cluster(self, ident: str) -> dict[str, Any] | None:
        try:
            found = self._call("describe_db_clusters", resource=ident,
                               DBClusterIdentifier=ident)["DBClusters"]
        except ProviderError as exc:
            if _is_not_found(exc):
                return None
            raise
        return found[0] if found else None

    def _source_instance(self) -> dict[str, Any]:
        found = self._describe_instance(self.settings.instance_id)
        if found is None:
            raise ProviderError(
                f"RDS instance {self.settings.instance_id} ({self.settings.region}) not found: "
                "check instance_id and region in [targets.NAME.rds]",
                provider=PROVIDER, operation="describe_db_instances", status_code=404,
            )
        return found

    def _source_cluster(self) -> dict[str, Any]:
        assert self.settings.aurora_cluster_id is not None
        found = self._describe_cluster(self.settings.aurora_cluster_id)
        if found is None:
            raise ProviderError(
                f"Aurora cluster {self.settings.aurora_cluster_id} ({self.settings.region}) not "
                "found: check aurora_cluster_id and region in [targets.NAME.rds]",
                provider=PROVIDER, operation="describe_db_clusters", status_code=404,
            )
        return found

    # -- window and backups ------------------------------------------------------------------

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
        if self._aurora:
            self._call("create_db_cluster_snapshot", resource=ident,
                       DBClusterSnapshotIdentifier=ident,
                       DBClusterIdentifier=self.settings.aurora_cluster_id, Tags=tags)
            with map_rds_errors("create_backup", resource=f"cluster snapshot {ident}"):
                self.client.get_waiter("db_cluster_snapshot_available").wait(
                    DBClusterSnapshotIdentifier=ident, WaiterConfig=wait)
            snap = self._call("describe_db_cluster_snapshots", resource=ident,
                              DBClusterSnapshotIdentifier=ident)["DBClusterSnapshots"][0]
        else:
            self._call("create_db_snapshot", resource=ident, DBSnapshotIdentifier=ident,
                       DBInstanceIdentifier=self.settings.instance_id, Tags=tags)
            with map_rds_errors("create_backup", resource=f"snapshot {ident}"):
                self.client.get_waiter("db_snapshot_available").wait(
                    DBSnapshotIdentifier=ident, WaiterConfig=wait)
            snap = self._call("describe_db_snapshots", resource=ident,
                              DBSnapshotIdentifier=ident)["DBSnapshots"][0]
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

    # -- restore -----------------------------------------------------------------------------

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
            found = (self._describe_instance(ident) if what == "instance"
                     else self._describe_cluster(ident))
        if found is None:
            raise self._start_failed(exc, what, ident) from exc.__cause__
        self._check_reusable(found, ident, name, point)

    def _start_failed(self, exc: ProviderError, what: str, ident: str) -> ProviderError:
        """``exc`` from a request that creates ``ident``, plus what it left behind and what to
        do next. An error answer does not prove RDS did nothing (the request may have been
        accepted and only the answer lost), so this asks RDS."""
        cleanup = self._cleanup_command()
        try:
            found = (self._describe_instance(ident) if what == "instance"
                     else self._describe_cluster(ident))
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
                found = (self._describe_instance(ident) if what == "instance"
                         else self._describe_cluster(ident))
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

    def _endpoint(self, instance: dict[str, Any]) -> tuple[str, int]:
        cluster_id = instance.get("DBClusterIdentifier")
        if self._aurora and cluster_id:
            cluster = self._describe_cluster(cluster_id)
            if cluster is not None and cluster.get("Endpoint"):
                # DBCluster.Endpoint is the writer's DNS name (a string), §1.8.
                return str(cluster["Endpoint"]), int(cluster.get("Port") or 5432)
        endpoint = instance.get("Endpoint") or {}
        if not endpoint.get("Address"):
            raise ProviderError(
                f"RDS instance {instance.get('DBInstanceIdentifier')} has no endpoint yet "
                f"(status {instance.get('DBInstanceStatus')})",
                provider=PROVIDER, operation="describe_db_instances", retryable=True,
            )
        return str(endpoint["Address"]), int(endpoint.get("Port") or 5432)

    def _dsn(self, address: str, port: int) -> SecretStr:
        host, real_port = self._connect_address(address, port)
        params = parse(self._source_dsn.get_secret_value())
        params.pop("hostaddr", None)  # it would win over the new host
        params.update(host=host, port=str(real_port))
        if self.database:
            params["dbname"] = self.database
        return SecretStr(make_conninfo("", **params))

    def _restored(self, instance: dict[str, Any], *,
                  phases: dict[str, float] | None = None) -> RestoredDatabase:
        tags = _tags(instance)
        recovered = tags.get(TAG_RECOVERED_TO)
        return RestoredDatabase(
            provider=self.kind,
            handle=str(instance["DBInstanceIdentifier"]),
            dsn=self._dsn(*self._endpoint(instance)),
            point=tags.get(TAG_POINT, ""),
            backup_id=tags.get(TAG_BACKUP, ""),
            scratch=self.settings.scratch_tag_key in tags and TAG_ADOPTED not in tags,
            phases=dict(phases or {}),
            recovered_to_time=datetime.fromisoformat(recovered) if recovered else None,
        )

    # -- finding, adopting, discarding ---------------------------------------------------------

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
            found = (self._describe_instance(ident) if what == "instance"
                     else self._describe_cluster(ident))
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

    def restore_in_place(self, point: RestorePoint, *, progress: Progress = no_progress) -> None:
        """Never: RDS restores always create a new instance (then the connection swap)."""
        raise CapabilityNotSupported(
            "RDS cannot restore in place: restores create a NEW instance; use a new-target "
            "restore and swap the connection string"
        )

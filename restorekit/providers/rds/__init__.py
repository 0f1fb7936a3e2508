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
inside :func:`map_rds_errors`, so only restorekit errors leave this package.
"""

from __future__ import annotations

from typing import ClassVar

from restorekit.providers.base import Capability, ProviderDefaults
from restorekit.providers.rds.errors import PROVIDER, aws_error_code, map_rds_errors
from restorekit.providers.rds.lifecycle import RdsLifecycle
from restorekit.providers.rds.restores import RdsRestores
from restorekit.providers.rds.settings import (
    FAILED_STATES,
    TAG_ADOPTED,
    TAG_BACKUP,
    TAG_LABEL,
    TAG_NAME,
    TAG_POINT,
    TAG_RECOVERED_TO,
    TAG_SOURCE,
    TAG_TARGET,
    RdsSettings,
    restore_identifier,
)

__all__ = [
    "FAILED_STATES", "PROVIDER", "TAG_ADOPTED", "TAG_BACKUP", "TAG_LABEL", "TAG_NAME",
    "TAG_POINT", "TAG_RECOVERED_TO", "TAG_SOURCE", "TAG_TARGET", "RdsProvider", "RdsSettings",
    "aws_error_code", "map_rds_errors", "restore_identifier",
]


class RdsProvider(RdsRestores, RdsLifecycle, ProviderDefaults):
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
    why_not = {
        Capability.IN_PLACE_RESTORE: "RDS cannot restore in place: restores create a NEW "
        "instance; use a new-target restore and swap the connection string",
    }

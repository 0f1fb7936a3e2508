"""The ``[targets.NAME.rds]`` settings, restore identifiers and the tags restorekit puts on
what it creates."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


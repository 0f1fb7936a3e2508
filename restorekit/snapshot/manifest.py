"""The snapshot record (:class:`SnapshotInfo`), written as ``snapshots/<snapshot_id>/snapshot.json``
once every object was read back: the manifest is the marker of a complete snapshot, so one
interrupted before it is never listed or loaded.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from restorekit.errors import (
    ConfigError,
)

SNAPSHOT_ROOT = "snapshots/"
MANIFEST_NAME = "snapshot.json"
MANIFEST_VERSION = 1
APPLICATION_NAME = "restorekit-snapshot"

_ID_RE = re.compile(r"^\d{8}T\d{6}\.\d{3}Z(?:-[a-z0-9]+(?:-[a-z0-9]+)*)?$")


@dataclass(frozen=True)
class SnapshotInfo:
    """A complete logical snapshot in a repository. Holds no secret.

    ``objects`` are ``(key, size, sha256)`` of every dump file (the manifest itself excluded);
    ``verified`` is True when every object was read back after upload (always True for a
    snapshot loaded from its manifest, because the manifest is written only after that).
    """

    snapshot_id: str
    label: str
    database: str
    tables: tuple[str, ...]
    created_at: datetime
    size_bytes: int
    objects: tuple[tuple[str, int, str], ...]
    location: str
    verified: bool = False

    @property
    def prefix(self) -> str:
        return snapshot_prefix(self.snapshot_id)

    @property
    def manifest_key(self) -> str:
        return self.prefix + MANIFEST_NAME

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest_version": MANIFEST_VERSION,
            "snapshot_id": self.snapshot_id,
            "label": self.label,
            "database": self.database,
            "tables": list(self.tables),
            "created_at": self.created_at.isoformat(),
            "size_bytes": self.size_bytes,
            "objects": [{"key": k, "size": s, "sha256": h} for k, s, h in self.objects],
            "location": self.location,
            "verified": self.verified,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SnapshotInfo:
        try:
            version = int(data.get("manifest_version", MANIFEST_VERSION))
            if version > MANIFEST_VERSION:
                raise ConfigError(
                    f"snapshot manifest version {version} is newer than this restorekit "
                    f"understands ({MANIFEST_VERSION}); upgrade restorekit"
                )
            created_at = datetime.fromisoformat(data["created_at"])
            if created_at.tzinfo is None:
                created_at = created_at.replace(tzinfo=UTC)
            objects = tuple(
                (str(o["key"]), int(o["size"]), str(o["sha256"])) if isinstance(o, dict)
                else (str(o[0]), int(o[1]), str(o[2]))
                for o in data["objects"]
            )
            return cls(
                snapshot_id=str(data["snapshot_id"]),
                label=str(data.get("label", "")),
                database=str(data.get("database", "")),
                tables=tuple(str(t) for t in data.get("tables", ())),
                created_at=created_at,
                size_bytes=int(data["size_bytes"]),
                objects=objects,
                location=str(data.get("location", "")),
                verified=bool(data.get("verified", False)),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigError(f"not a valid snapshot manifest: {exc!r}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def snapshot_prefix(snapshot_id: str) -> str:
    return f"{SNAPSHOT_ROOT}{snapshot_id}/"


def new_snapshot_id(label: str = "", *, now: datetime | None = None) -> str:
    """A sortable id: UTC time to the millisecond, then a slug of the label."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    stamp = f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z"
    slug = slugify(label)
    return f"{stamp}-{slug}" if slug else stamp


def slugify(label: str, max_length: int = 40) -> str:
    ascii_text = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_length].rstrip("-")


def _check_snapshot_id(snapshot_id: str) -> None:
    if not _ID_RE.match(snapshot_id):
        raise ConfigError(
            f"not a snapshot id: {snapshot_id!r} (expected e.g. "
            "20261125T131019.482Z-before-restore; see `list_snapshots`)"
        )

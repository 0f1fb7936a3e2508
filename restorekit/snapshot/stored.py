"""Snapshots already in a repository: listed, loaded, verified again, deleted.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from restorekit.errors import (
    ConfigError,
    ObjectNotFound,
    RepositoryError,
)
from restorekit.pg.dsn import redact
from restorekit.snapshot.manifest import (
    _ID_RE,
    MANIFEST_NAME,
    SNAPSHOT_ROOT,
    SnapshotInfo,
    _check_snapshot_id,
    snapshot_prefix,
)
from restorekit.snapshot.take import _read_back

if TYPE_CHECKING:
    from restorekit.repository import Repository

log = logging.getLogger(__name__)


def list_snapshots(repo: Repository) -> list[SnapshotInfo]:
    """Complete snapshots (those with a manifest), oldest first. Unreadable manifests are
    skipped with a warning."""
    found: list[SnapshotInfo] = []
    for obj in repo.list(SNAPSHOT_ROOT):
        rest = obj.key[len(SNAPSHOT_ROOT):] if obj.key.startswith(SNAPSHOT_ROOT) else ""
        snapshot_id, _, name = rest.partition("/")
        if name != MANIFEST_NAME or not _ID_RE.match(snapshot_id):
            continue
        try:
            found.append(load_snapshot(repo, snapshot_id))
        except (RepositoryError, ConfigError) as exc:
            log.warning("skipping snapshot %s: %s", snapshot_id, exc)
    return sorted(found, key=lambda s: s.snapshot_id)


def load_snapshot(repo: Repository, snapshot_id: str) -> SnapshotInfo:
    """The snapshot ``snapshot_id``.

    Raises:
        ConfigError: malformed id or manifest.
        ObjectNotFound: no complete snapshot with that id (an unfinished one has no manifest).
    """
    _check_snapshot_id(snapshot_id)
    key = snapshot_prefix(snapshot_id) + MANIFEST_NAME
    try:
        raw = repo.get_bytes(key)
    except ObjectNotFound:
        raise ObjectNotFound(
            f"no complete snapshot {snapshot_id} in {redact(repo.url)} (no {MANIFEST_NAME}; "
            "an interrupted snapshot is never usable)"
        ) from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"snapshot {snapshot_id}: manifest is not JSON: {exc}") from exc
    info = SnapshotInfo.from_dict(data)
    if info.snapshot_id != snapshot_id:
        raise ConfigError(f"snapshot {snapshot_id}: manifest names {info.snapshot_id!r}")
    return info


def verify_snapshot(info: SnapshotInfo, repo: Repository) -> SnapshotInfo:
    """Re-read every object of ``info`` (size + SHA-256). For drills and before relying on an
    old snapshot. Raises SafetyError when an object is missing or differs."""
    _read_back(repo, info.objects)
    return info


def delete_snapshot(repo: Repository, snapshot_id: str) -> None:
    """Remove a snapshot: the manifest first (so it stops being a snapshot at once), then its
    objects. Deleting one that is already gone is not an error."""
    _check_snapshot_id(snapshot_id)
    prefix = snapshot_prefix(snapshot_id)
    repo.delete(prefix + MANIFEST_NAME)
    for obj in repo.list(prefix):
        repo.delete(obj.key)

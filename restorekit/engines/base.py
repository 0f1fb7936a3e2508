"""The interface of a self-hosted backup engine.

An engine knows how to archive WAL, take base backups, list them, compute the restore window and
lay down a data directory for a restore. Starting the restored cluster, following WAL replay and
detecting an unreachable target is shared by every engine (:mod:`restorekit.engines.recovery`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from restorekit.models import BackupInfo, RestorePoint, RestoreWindow
from restorekit.providers.base import Progress


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """The cluster being protected.

    ``dsn`` reaches it as a superuser or replication-capable role; it holds no password (give one
    through PGPASSWORD/PGPASSFILE). ``data_dir`` is required by engines that read files directly
    (pgBackRest's pg1-path); ``socket_dir`` is the Unix socket directory pgBackRest connects to.
    """

    dsn: str
    data_dir: Path | None = None
    socket_dir: Path | None = None
    port: int = 5432
    os_user: str | None = None
    bin_dir: Path | None = None
    extra: dict[str, object] = field(default_factory=dict)


class BackupEngine(Protocol):
    name: ClassVar[str]
    #: Local scratch space the engine owns: a backup in flight, WAL staged for pg_waldump.
    work_dir: Path

    def archive_settings(self) -> dict[str, object]:
        """postgresql.conf settings the SOURCE cluster needs so its WAL reaches this engine's
        archive (wal_level, archive_mode, archive_command)."""
        ...

    def check(self) -> None:
        """Preflight: raise ConfigError / PgToolFailed when the engine cannot work."""
        ...

    def backup(self, *, label: str, progress: Progress) -> BackupInfo:
        """Take a full base backup of the source."""
        ...

    def list_backups(self) -> list[BackupInfo]:
        """Base backups, oldest first."""
        ...

    def restore_window(self) -> RestoreWindow:
        """From the oldest backup's consistent end to the last archived commit."""
        ...

    def wal_segments(self) -> list[str]:
        """Names of the archived WAL segments (24 hex digits), sorted."""
        ...

    def fetch_wal(self, name: str, dest: Path) -> None:
        """Copy one archived segment to ``dest``, verified and uncompressed (for pg_waldump)."""
        ...

    def prepare_restore(
        self, point: RestorePoint, backup: BackupInfo, data_dir: Path, *, progress: Progress
    ) -> dict[str, object]:
        """Fill the empty ``data_dir`` from ``backup`` (verified) and return the recovery
        settings (restore_command, recovery_target_*) for :func:`recovery.run_recovery`."""
        ...

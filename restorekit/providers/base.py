"""The DatabaseProvider interface every provider implements.

A flow never knows which provider it runs on: it asks for capabilities and calls these methods.
Contract for implementers:

* ``restore_window()`` is the real window: the earliest consistent point and the last restorable
  commit, not "now".
* ``restore(point, name=...)`` restores into a NEW database (cluster, instance, branch) and never
  touches the source; the point is checked against the window before anything is created.
* ``discard(restored)`` removes what ``restore`` created; removing something already gone is not
  an error.
* Only :class:`restorekit.errors.RestoreKitError` subclasses escape; SDK and HTTP errors are
  translated inside the adapter.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, runtime_checkable

from restorekit.errors import ConfigError
from restorekit.models import BackupInfo, RestoredDatabase, RestorePoint, RestoreWindow

#: progress(phase, done, total): e.g. ("base restore", bytes_done, bytes_total) or
#: ("wal replay", replayed_lsn, target_lsn); total is None when unknown.
Progress = Callable[[str, int, int | None], None]


def no_progress(phase: str, done: int, total: int | None) -> None:
    """A Progress callback that ignores everything."""


class Capability(enum.StrEnum):
    NEW_TARGET_RESTORE = "new_target_restore"  # restore into a new database/instance/branch
    IN_PLACE_RESTORE = "in_place_restore"  # only overwrite the current one (Supabase)
    POINT_IN_TIME = "point_in_time"  # restore to any time inside the window
    LSN_TARGET = "lsn_target"  # restore to an LSN
    XID_TARGET = "xid_target"
    NAMED_RESTORE_POINT = "named_restore_point"
    NAMED_BACKUPS = "named_backups"  # create_backup(label) and restore a backup by id


@runtime_checkable
class DatabaseProvider(Protocol):
    """Where a database lives and how it is backed up and restored."""

    kind: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]

    def restore_window(self) -> RestoreWindow:
        """The earliest and latest restorable points."""
        ...

    def list_backups(self) -> list[BackupInfo]:
        """Backups in the repository, oldest first."""
        ...

    def create_backup(self, label: str = "", *, progress: Progress = no_progress) -> BackupInfo:
        """Take a backup now (the runbook's manual pre-deployment backup)."""
        ...

    def restore(
        self, point: RestorePoint, *, name: str, progress: Progress = no_progress
    ) -> RestoredDatabase:
        """Restore into a NEW database named after ``name`` and return how to reach it."""
        ...

    def discard(self, restored: RestoredDatabase) -> None:
        """Remove a database that :meth:`restore` created."""
        ...


_REGISTRY: dict[str, str] = {
    "selfhosted": "restorekit.providers.selfhosted:SelfHostedProvider",
}


def register(kind: str, path: str) -> None:
    """Register a provider class by import path (tests register fakes this way)."""
    _REGISTRY[kind] = path


def get_provider(kind: str, **options: Any) -> DatabaseProvider:
    """Build the provider ``kind`` with its options; SDKs are imported only here, lazily."""
    try:
        path = _REGISTRY[kind]
    except KeyError:
        raise ConfigError(
            f"unknown provider {kind!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None
    module_name, _, class_name = path.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    provider: DatabaseProvider = cls(**options)
    return provider

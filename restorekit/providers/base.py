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
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from restorekit.errors import CapabilityNotSupported, ConfigError
from restorekit.models import BackupInfo, RestoredDatabase, RestorePoint, RestoreWindow
from restorekit.registry import Registry

if TYPE_CHECKING:
    from restorekit.damage import Damage, FoundPoint, Loss

#: progress(phase, done, total): e.g. ("base restore", bytes_done, bytes_total) or
#: ("wal replay", replayed_lsn, target_lsn); total is None when unknown.
Progress = Callable[[str, int, int | None], None]


def no_progress(phase: str, done: int, total: int | None) -> None:
    """A Progress callback that ignores everything."""


# A restore name becomes part of a Neon branch name or a self-hosted restore directory; one
# rule for both, so an incident id that works on one provider works on the other.
_RESTORE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def check_restore_name(name: str) -> None:
    """Refuse a restore name before anything is created.

    Raises:
        ConfigError: ``name`` is not 1-63 lower-case letters, digits, '.', '_' or '-'.
    """
    if not _RESTORE_NAME.match(name):
        raise ConfigError(
            f"restore name {name!r} must be 1-63 lower-case letters, digits, '.', '_' or '-'"
        )


class Capability(enum.StrEnum):
    NEW_TARGET_RESTORE = "new_target_restore"  # restore into a new database/instance/branch
    IN_PLACE_RESTORE = "in_place_restore"  # only overwrite the current one (Supabase)
    POINT_IN_TIME = "point_in_time"  # restore to any time inside the window
    LSN_TARGET = "lsn_target"  # restore to an LSN
    XID_TARGET = "xid_target"
    NAMED_RESTORE_POINT = "named_restore_point"
    NAMED_BACKUPS = "named_backups"  # create_backup(label) and restore a backup by id
    #: find_point(damage) -> FoundPoint: the provider can find where a damage began
    #: (self-hosted: a WAL scan; Neon: bisection over branches).
    FIND_POINT = "find_point"
    #: loss_after(point) -> Loss: what was committed after a point (self-hosted: the WAL).
    LOSS_REPORT = "loss_report"


@runtime_checkable
class DatabaseProvider(Protocol):
    """Where a database lives and how it is backed up and restored.

    Built from restorekit.toml with ``from_config(target, settings)``. Capabilities are
    declared, never guessed: a flow checks them and picks its path (restore into a new target,
    or snapshot + in-place restore, or refuse with an explanation).
    """

    kind: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]

    def restore_window(self) -> RestoreWindow:
        """The earliest and latest restorable points (the real latest, not "now")."""
        ...

    def list_backups(self) -> list[BackupInfo]:
        """Backups, oldest first."""
        ...

    def create_backup(self, label: str = "", *, progress: Progress = no_progress) -> BackupInfo:
        """Take a backup now (the runbook's manual pre-deployment backup)."""
        ...

    def restore(
        self, point: RestorePoint, *, name: str, progress: Progress = no_progress,
        window: RestoreWindow | None = None,
    ) -> RestoredDatabase:
        """Restore into a NEW database (cluster, instance, branch) named after ``name``, tagged
        as restorekit scratch, and return how to reach it. Needs NEW_TARGET_RESTORE."""
        ...

    def find_restored(self, name: str) -> RestoredDatabase | None:
        """A completed restore named ``name`` (so a re-run reuses it), or None."""
        ...

    def discard(self, restored: RestoredDatabase) -> None:
        """Remove a scratch restore; refuses anything not tagged as restorekit scratch or
        adopted as production; removing what is already gone is not an error."""
        ...

    def adopt(self, restored: RestoredDatabase) -> str | None:
        """Mark a restore as the new production: cleanup never removes it afterwards.
        Returns a note for the operator when something must be done by hand, else None.

        Optional companions, used by :func:`restorekit.production.adopt` and
        :func:`restorekit.production.protect` where a provider has them:
        ``adopted_location(restored) -> dict`` (secret-free fields recorded as the target's
        production: host/port/data_dir, instance_id, branch_id), ``current_location() -> dict``
        (what an adoption replaces), and ``resume_protection() -> Protection`` (called on the
        provider rebuilt from the record: backups and archiving of the new production)."""
        ...

    def list_scratch(self) -> list[RestoredDatabase]:
        """Scratch restores left behind (by failed runs), for cleanup."""
        ...

    def restore_in_place(self, point: RestorePoint, *, progress: Progress = no_progress) -> None:
        """Overwrite the CURRENT database with its state at ``point`` (IN_PLACE_RESTORE only;
        the caller must hold a verified snapshot of the current state first)."""
        ...

    def reaches(self, restored: RestoredDatabase, dsn: str) -> bool:
        """Whether ``dsn`` connects to ``restored`` (cleanup keeps what the app points at)."""
        ...

    # Optional, declared by capability: PointFinder (FIND_POINT), LossReporter (LOSS_REPORT).


@runtime_checkable
class PointFinder(Protocol):
    """A provider that declares FIND_POINT; :func:`point_finder` gives it typed."""

    def find_point(self, damage: Damage, *, progress: Progress = no_progress) -> FoundPoint:
        """The transaction that did ``damage`` and the point just before it.

        Scratch copies or branches it makes are removed before it returns; wrong input (a table
        that never existed, keys never damaged) is a ConfigError, not a guess."""
        ...


@runtime_checkable
class LossReporter(Protocol):
    """A provider that declares LOSS_REPORT; :func:`loss_reporter` gives it typed."""

    def loss_after(self, point: RestorePoint, *, progress: Progress = no_progress) -> Loss:
        """What was committed after ``point`` up to the end of what the provider holds."""
        ...


def point_finder(provider: DatabaseProvider) -> PointFinder | None:
    """``provider`` when it declares FIND_POINT (and has the method), else None."""
    if Capability.FIND_POINT in provider.capabilities and isinstance(provider, PointFinder):
        return provider
    return None


def loss_reporter(provider: DatabaseProvider) -> LossReporter | None:
    """``provider`` when it declares LOSS_REPORT (and has the method), else None."""
    if Capability.LOSS_REPORT in provider.capabilities and isinstance(provider, LossReporter):
        return provider
    return None


class ProviderDefaults:
    """A base for providers that lack one of the restore capabilities: the method it gates
    refuses with the provider's own reason, so no provider writes a stub for it.

    A flow checks ``capabilities`` before it calls; a command such as ``restorekit restore
    --to-new`` calls directly, and the error then says why and what to do instead.
    """

    kind: ClassVar[str]
    #: Why a capability is not offered and what to use instead, formatted with
    #: ``provider=self`` (e.g. ``{provider.project_ref}``).
    why_not: ClassVar[Mapping[Capability, str]] = {}

    def restore(
        self, point: RestorePoint, *, name: str, progress: Progress = no_progress,
        window: RestoreWindow | None = None,
    ) -> RestoredDatabase:
        """Refuses: NEW_TARGET_RESTORE is not offered."""
        raise self._not_offered(Capability.NEW_TARGET_RESTORE)

    def restore_in_place(self, point: RestorePoint, *, progress: Progress = no_progress) -> None:
        """Refuses: IN_PLACE_RESTORE is not offered."""
        raise self._not_offered(Capability.IN_PLACE_RESTORE)

    def _not_offered(self, capability: Capability) -> CapabilityNotSupported:
        reason = self.why_not.get(capability)
        return CapabilityNotSupported(
            reason.format(provider=self) if reason
            else f"the {self.kind} provider does not offer {capability.value}")


def reaches(provider: DatabaseProvider, restored: RestoredDatabase, dsn: str) -> bool:
    """``provider.reaches``, for providers that can tell; one that cannot is answered "yes",
    so cleanup keeps a scratch restore rather than risk removing what the app runs on."""
    method = getattr(provider, "reaches", None)
    return True if method is None else bool(method(restored, dsn))


_REGISTRY = Registry("provider", {
    "selfhosted": "restorekit.providers.selfhosted:SelfHostedProvider",
    "rds": "restorekit.providers.rds:RdsProvider",
    "neon": "restorekit.providers.neon:NeonProvider",
    "supabase": "restorekit.providers.supabase:SupabaseProvider",
})
register = _REGISTRY.register


def provider_class(kind: str) -> Any:
    """The provider class registered for ``kind``; SDKs are imported only here, lazily."""
    return _REGISTRY.load(kind)


def get_provider(kind: str, **options: Any) -> DatabaseProvider:
    """Build the provider ``kind`` from keyword options."""
    provider: DatabaseProvider = provider_class(kind)(**options)
    return provider


def provider_from_config(target: Any, settings: Any) -> DatabaseProvider:
    """Build the provider a target in restorekit.toml names (``cls.from_config``)."""
    provider: DatabaseProvider = provider_class(target.provider).from_config(target, settings)
    return provider

"""What a recovery was asked to do (:class:`RecoveryPlan`) and what it did, per table
(:class:`TableOutcome`) and in all (:class:`RecoveryResult`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from restorekit.pg.catalog import TableRef

Operation = Literal["recover_deleted_rows", "repair_rows"]
KeySource = Literal["given", "anti-diff"]


@dataclass(frozen=True, slots=True)
class TableOutcome:
    """What happened (or, in a dry run, would happen) to one table.

    ``staged`` rows were read from the copy. Of those, ``inserted`` were written and
    ``skipped_existing`` were not, because a row with the same key is already live (rows written
    after the restore point, or recovered by an earlier run). ``missing``, ``changed`` and
    ``extra`` are the diff counts :func:`repair_rows` found before it acted; ``extra_kept`` are
    rows written after the restore point that were left alone.

    With ``keep_rows_written_after``: ``kept_newer`` live rows (changed, or extra under
    ``delete_extra``) were left alone because their current version committed after that time,
    and ``kept_deleted`` missing rows were not re-inserted because the audit log records their
    deletion as committed after it. ``skipped_changed`` rows were planned for an update but
    changed while the repair ran, so they were left alone. ``fingerprint`` names the rows the
    repair writes (counts and a digest of keys and current values); :func:`repair_rows` refuses
    when it differs from the approved one.
    """

    table: TableRef
    primary_key: tuple[str, ...]
    staged: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    skipped_existing: int = 0
    missing: int = 0
    changed: int = 0
    extra: int = 0
    extra_kept: int = 0
    kept_newer: int = 0
    kept_deleted: int = 0
    skipped_changed: int = 0
    fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": str(self.table),
            "primary_key": list(self.primary_key),
            "staged": self.staged,
            "inserted": self.inserted,
            "updated": self.updated,
            "deleted": self.deleted,
            "skipped_existing": self.skipped_existing,
            "missing": self.missing,
            "changed": self.changed,
            "extra": self.extra,
            "extra_kept": self.extra_kept,
            "kept_newer": self.kept_newer,
            "kept_deleted": self.kept_deleted,
            "skipped_changed": self.skipped_changed,
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True, slots=True)
class RecoveryPlan:
    """What a recovery is asked to do, decided before anything is read or written.

    ``tables`` are in the order rows are inserted (parents first); deletes run in reverse.
    """

    operation: Operation
    tables: tuple[TableRef, ...]
    root: TableRef | None = None
    key_source: KeySource | None = None
    keys_given: int | None = None
    include_cascade: bool = True
    insert_missing: bool = True
    update_changed: bool = False
    delete_extra: bool = False
    columns: tuple[str, ...] = ()  # "schema.table.column" compared and rewritten; () = all
    keep_rows_written_after: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "tables": [str(t) for t in self.tables],
            "root": str(self.root) if self.root is not None else None,
            "key_source": self.key_source,
            "keys_given": self.keys_given,
            "include_cascade": self.include_cascade,
            "insert_missing": self.insert_missing,
            "update_changed": self.update_changed,
            "delete_extra": self.delete_extra,
            "columns": list(self.columns),
            "keep_rows_written_after": (self.keep_rows_written_after.isoformat()
                                        if self.keep_rows_written_after else None),
        }


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    """The outcome of a recovery: per-table counts in plan order.

    ``keys_requested`` is the number of root keys looked for in the copy; ``keys_not_in_copy``
    of them were not there (created after the restore point, or wrong). ``sequences_advanced``
    names the sequences moved forward past restored ids (would be moved, in a dry run).
    """

    plan: RecoveryPlan
    dry_run: bool
    tables: tuple[TableOutcome, ...]
    keys_requested: int | None = None
    keys_not_in_copy: int = 0
    sequences_advanced: tuple[str, ...] = ()
    elapsed_seconds: float = 0.0

    def outcome(self, table: TableRef) -> TableOutcome:
        for outcome in self.tables:
            if outcome.table == table:
                return outcome
        raise KeyError(str(table))

    @property
    def inserted(self) -> int:
        return sum(t.inserted for t in self.tables)

    @property
    def updated(self) -> int:
        return sum(t.updated for t in self.tables)

    @property
    def deleted(self) -> int:
        return sum(t.deleted for t in self.tables)

    @property
    def skipped_existing(self) -> int:
        return sum(t.skipped_existing for t in self.tables)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict(),
            "dry_run": self.dry_run,
            "tables": [t.to_dict() for t in self.tables],
            "totals": {
                "inserted": self.inserted,
                "updated": self.updated,
                "deleted": self.deleted,
                "skipped_existing": self.skipped_existing,
            },
            "keys_requested": self.keys_requested,
            "keys_not_in_copy": self.keys_not_in_copy,
            "sequences_advanced": list(self.sequences_advanced),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }

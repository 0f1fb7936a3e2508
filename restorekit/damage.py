"""What was damaged, where the damage begins, and what a restore to a point would lose.

The runbook's first checklist item, "Determine restore point", as values: a :class:`Damage`
says what the operator knows (a table, the keys of its damaged rows or a predicate that picks
them, optionally the column that was changed); a provider that can look into its history
(``find_point``) answers with a :class:`FoundPoint`: the transaction that did the damage and
the restore point just before it. :class:`Loss` is what was committed after a point, shown in
the plan before anyone approves a restore to it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from restorekit.errors import ConfigError
from restorekit.models import RestorePoint

#: The restore_point value that asks the flow to find the point.
AUTO = "auto"


def parse_keys(ids: list[str] | tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """``--damaged-ids 3,k13``: each key's values in key column order (a composite key as
    a,b; a value holding a comma is given as a predicate instead)."""
    return tuple(tuple(part.strip() for part in key.split(",")) for key in ids)


class DamageKind(enum.StrEnum):
    DELETED = "deleted"  # the rows were deleted (or their table truncated or dropped)
    CHANGED = "changed"  # the rows were updated (a column, when given) or deleted
    TABLE = "table"  # the whole table: DELETE without WHERE, TRUNCATE, DROP TABLE


class FoundBy(enum.StrEnum):
    AUDIT_LOG = "audit log"
    WAL_SCAN = "WAL scan"
    BISECTION = "bisection"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class Damage:
    """What the operator knows about the damage.

    ``table`` is ``schema.name`` or ``name`` (as the flows' ``--table``); ``keys`` are primary
    key values as text (a composite key is one tuple per row, in key column order); ``where``
    is an SQL predicate evaluated on a copy from before the damage, instead of keys; neither
    means the whole table. ``column`` narrows CHANGED to the first update of that column.
    ``good_point`` is a point surely before the damage (default: the oldest base backup's
    consistent end, or the start of the provider's window).
    """

    table: str
    kind: DamageKind = DamageKind.DELETED
    keys: tuple[tuple[str, ...], ...] = ()
    where: str | None = None
    column: str | None = None
    good_point: RestorePoint | None = None

    def __post_init__(self) -> None:
        if not self.table.strip():
            raise ConfigError("say which table was damaged (--table) to find the restore point")
        if self.keys and self.where:
            raise ConfigError("give the damaged rows as keys or as a predicate, not both")
        if self.kind is DamageKind.TABLE and (self.keys or self.where):
            raise ConfigError("whole-table damage takes no keys or predicate")
        if self.column and self.kind is not DamageKind.CHANGED:
            raise ConfigError("a column narrows changed rows only (partial corruption)")
        if self.kind is not DamageKind.TABLE and not (self.keys or self.where):
            raise ConfigError(f"which {self.table} rows? give their keys (--ids) or a "
                              "predicate (--where); without them only whole-table damage "
                              "(DELETE without WHERE, TRUNCATE, DROP TABLE) can be found")

    def describe(self) -> str:
        rows = (f"{len(self.keys)} row(s)" if self.keys else
                f"the rows where {self.where}" if self.where else "the whole table")
        what = {DamageKind.DELETED: "deleted", DamageKind.TABLE: "emptied or dropped",
                DamageKind.CHANGED: f"changed{f' (column {self.column})' if self.column else ''}"}
        return f"{rows} of {self.table} {what[self.kind]}"


@dataclass(frozen=True, slots=True)
class FoundPoint:
    """The damaging transaction and the restore point that undoes it."""

    point: RestorePoint  # before-xid:N where the xid is known, else a time
    found_by: FoundBy
    xid: int | None = None
    commit_lsn: str | None = None
    commit_time: datetime | None = None
    rows_touched: int = 0  # rows of the table the damaging transaction deleted or updated
    what: str = ""  # "DELETE of 3 tracked rows", "TRUNCATE", "DROP TABLE", ...
    evidence: tuple[str, ...] = ()  # the matched records, as pg_waldump printed them (a few)
    notes: tuple[str, ...] = ()  # what the search met on the way (a rewrite followed, ...)
    scanned_bytes: int = 0
    copies: int = 0  # scratch copies / branches made to find it

    def summary(self) -> str:
        when = self.commit_time.isoformat() if self.commit_time else "unknown time"
        who = f"transaction {self.xid}" if self.xid is not None else "the damage"
        at = f" (commit LSN {self.commit_lsn})" if self.commit_lsn else ""
        return (f"{who} committed at {when}{at}: {self.what or 'the damage'}; restore point "
                f"{self.point}, found by {self.found_by.value}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "point": str(self.point), "found_by": self.found_by.value, "xid": self.xid,
            "commit_lsn": self.commit_lsn,
            "commit_time": self.commit_time.isoformat() if self.commit_time else None,
            "rows_touched": self.rows_touched, "what": self.what,
            "evidence": list(self.evidence), "notes": list(self.notes),
            "scanned_bytes": self.scanned_bytes, "copies": self.copies,
        }


@dataclass(frozen=True, slots=True)
class TableLoss:
    table: str  # schema.name, or the file (``1663/5/16384``) when no name is known
    inserted: int = 0
    updated: int = 0
    deleted: int = 0


@dataclass(frozen=True, slots=True)
class Loss:
    """What was committed after a point, up to the end of the archive."""

    point: str
    transactions: int = 0
    first_commit: datetime | None = None
    last_commit: datetime | None = None
    tables: tuple[TableLoss, ...] = field(default_factory=tuple)
    other: tuple[str, ...] = ()  # e.g. "2 files dropped (TRUNCATE/DROP TABLE)"

    def lines(self) -> list[str]:
        if not self.transactions:
            return [f"Nothing was committed after {self.point}: a restore to it loses no write."]
        span = (f"{self.first_commit.isoformat() if self.first_commit else '?'} .. "
                f"{self.last_commit.isoformat() if self.last_commit else '?'}")
        out = [f"{self.transactions} transaction(s) committed after {self.point} ({span}):"]
        out += [f"  {t.table}: {t.inserted} inserted, {t.updated} updated, {t.deleted} deleted"
                for t in self.tables]
        out += [f"  {o}" for o in self.other]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "point": self.point, "transactions": self.transactions,
            "first_commit": self.first_commit.isoformat() if self.first_commit else None,
            "last_commit": self.last_commit.isoformat() if self.last_commit else None,
            "tables": [{"table": t.table, "inserted": t.inserted, "updated": t.updated,
                        "deleted": t.deleted} for t in self.tables],
            "other": list(self.other),
        }

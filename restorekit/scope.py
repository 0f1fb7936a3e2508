"""Identify affected data: what a scenario has to repair, found before anything is changed.

* Scenario 2 (partial corruption): the tables named by the operator, plus the tables the
  verification suite finds broken on the live database (orphaned foreign keys, failing custom
  checks); then a row diff against a restored copy says exactly which rows differ.
* Scenario 3 (accidental deletion): the keys recorded as deleted in ``audit_log`` and the time of
  the first such deletion, which gives the restore point "just before the deletion".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import Connection, sql

from restorekit import integrity
from restorekit.errors import ConfigError
from restorekit.pg import catalog
from restorekit.pg.catalog import TableRef
from restorekit.recovery import deleted_keys_from_audit


@dataclass(frozen=True, slots=True)
class DeletionScope:
    """What was deleted from ``table`` and when (times are tz-aware)."""

    table: str
    keys: tuple[tuple[Any, ...], ...] | None  # None: unknown here, find by anti-diff on a copy
    source: str  # "ids" | "audit_log" | "anti-diff"
    first_deleted_at: datetime | None = None
    last_deleted_at: datetime | None = None

    @property
    def point_before(self) -> datetime | None:
        """One microsecond before the first recorded deletion: the restore point that still has
        every deleted row (the audit time is the deleting transaction's start, before its
        commit)."""
        if self.first_deleted_at is None:
            return None
        return self.first_deleted_at - timedelta(microseconds=1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table, "source": self.source,
            "keys": None if self.keys is None else [list(k) for k in self.keys],
            "first_deleted_at": (
                self.first_deleted_at.isoformat() if self.first_deleted_at else None
            ),
            "last_deleted_at": self.last_deleted_at.isoformat() if self.last_deleted_at else None,
        }


def deletion_scope(
    conn: Connection[Any],
    table: str,
    *,
    ids: list[str] | None = None,
    since: datetime | None = None,
) -> DeletionScope:
    """Find what was deleted from ``table``: the given ids, else the audit log, else unknown
    (the flow then uses a primary-key anti-diff against the restored copy)."""
    ref = TableRef.parse(table)
    if ref not in catalog.list_tables(conn):
        raise ConfigError(f"table {ref} does not exist in the live database")
    key = catalog.primary_key(conn, ref)
    if not key:
        raise ConfigError(f"table {ref} has no primary key; restorekit cannot tell rows apart")
    keys = deleted_keys_from_audit(conn, ref, since=since)
    first = last = None
    if keys is not None:
        first, last = _deletion_times(conn, ref, since)
    if ids:
        if len(key) != 1:
            raise ConfigError(f"table {ref} has a composite key ({', '.join(key)}); give keys "
                              "through the audit log or the anti-diff instead of --ids")
        _check_key_values(conn, ref, key[0], ids)
        return DeletionScope(str(ref), tuple((i,) for i in ids), "ids", first, last)
    if keys is None:
        return DeletionScope(str(ref), None, "anti-diff")
    if not keys:
        raise ConfigError(
            f"the audit log records no deletion from {ref}"
            + (f" since {since.isoformat()}" if since else "")
            + "; give --ids, or a restore point to compare against"
        )
    return DeletionScope(str(ref), tuple(keys), "audit_log", first, last)


def _check_key_values(conn: Connection[Any], table: TableRef, column: str,
                      values: list[str]) -> None:
    """Cast every given id to the key column's type inside PostgreSQL (one statement, rolled
    back), so an id of the wrong type is refused before anything is restored."""
    (col,) = [c for c in catalog.columns(conn, table) if c.name == column]
    query = sql.SQL("SELECT v::{} FROM unnest(%s::text[]) AS v").format(sql.SQL(col.data_type))
    for value in values:
        try:
            with conn.transaction(force_rollback=True):
                conn.execute(query, ([value],))
        except psycopg.DataError:
            raise ConfigError(
                f"id {value!r} is not a valid {col.data_type} for {table}.{column}") from None


def _deletion_times(conn: Connection[Any], table: TableRef,
                    since: datetime | None) -> tuple[datetime | None, datetime | None]:
    audit = TableRef(table.schema, "audit_log")
    row = conn.execute(
        sql.SQL(
            "SELECT min(created_at), max(created_at) FROM {} WHERE upper(action) = 'DELETE' "
            "AND table_name = ANY(%(names)s::text[]) "
            "AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)"
        ).format(audit.ident),
        {"names": [table.name, f"{table.schema}.{table.name}"], "since": since},
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


@dataclass(frozen=True, slots=True)
class IntegrityFindings:
    """Tables the verification suite found broken on the live database."""

    tables: tuple[str, ...]
    failing_checks: tuple[str, ...]
    report: dict[str, Any] = field(default_factory=dict)


def integrity_findings(report: integrity.VerificationReport) -> IntegrityFindings:
    """The tables behind failing checks (both sides of an orphaned foreign key)."""
    tables: list[str] = []
    failing = []
    for check in report.checks:
        if check.ok or check.skipped or check.unverified:  # unverified: not a finding
            continue
        failing.append(check.name)
        for side in ("child", "parent"):
            name = check.observed.get(side) if isinstance(check.observed, dict) else None
            if name and name not in tables:
                tables.append(str(name))
    return IntegrityFindings(tuple(tables), tuple(failing), report.to_dict())

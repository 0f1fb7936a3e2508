"""Runbook scenario 2 ("partial data corruption"): :func:`repair_rows` re-inserts missing rows and
rewrites changed ones from a restored copy, keeping the rows written after the restore point
unless asked to delete them, and never writing a row set other than the approved plan.

By default "changed" means any column differs, so every update made since the restore
point, legitimate ones included, is reverted. Two options narrow that:

* ``columns``: per table, the corrupted columns. A row counts as changed when the key and
  those columns differ, and only those columns are set; the rest of the row (say a balance
  the application updated since) stays as it is live. Missing rows are still inserted
  whole, every column from the copy. Tables not in the mapping compare every column.
* ``keep_rows_written_after``: every live row whose current version committed after this
  time (``pg_xact_commit_timestamp(xmin)``; needs ``track_commit_timestamp = on``) is left
  alone: not rewritten, not deleted, counted in ``kept_newer``. A row without a commit time
  (frozen, or written before tracking was on) counts as old. Rows DELETED after the time
  are missing like corrupted ones: when an ``audit_log`` next to the table records the
  deletion in a transaction committed after the time, the row stays deleted
  (``kept_deleted``); without one a deletion cannot be told from corruption and the row is
  re-inserted. Writes between the restore point and this time are treated as corruption.

A row is only written while it is still as the plan saw it: each UPDATE and DELETE
requires the row's current hash (of the compared columns) to equal the one listed, so a
row changed while the repair runs is left alone (``skipped_changed``). ``approved`` takes
the per-table ``fingerprint`` of a :func:`plan_repair` (or dry run) a human approved: when
the rows to write now differ in any way (another row, another current value, another
count), nothing is written.

``delete_extra=True`` is a full replace of these tables' contents and can cascade into
tables that are not listed. Values of ``GENERATED ALWAYS`` identity columns are not
rewritten (PostgreSQL allows only DEFAULT there); they are normally the key anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from psycopg import Connection, sql

from restorekit.diff import (
    ALIAS,
    create_temp_like,
    drop_temp,
    key_match,
    pinned_both,
    row_hash,
    stage_query,
)
from restorekit.pg.catalog import TableRef
from restorekit.recovery.commit_times import _newer
from restorekit.recovery.models import RecoveryResult, TableOutcome
from restorekit.recovery.repair_plan import (
    _DELETE,
    _INSERT,
    _UPDATE,
    _check_approved,
    _kind,
    _outcome,
    _plan_all,
    _Planned,
    _prepare_repair,
    _Repair,
)
from restorekit.recovery.sequences import _advance_sequences, _Facts
from restorekit.recovery.stage import _stage_rows
from restorekit.recovery.writes import _insert_statement, _transactions

log = logging.getLogger(__name__)


def repair_rows(
    live_conn: Connection[Any],
    copy_conn: Connection[Any],
    tables: Sequence[TableRef],
    *,
    update_changed: bool = True,
    insert_missing: bool = True,
    delete_extra: bool = False,
    columns: Mapping[TableRef, Sequence[str]] | None = None,
    keep_rows_written_after: datetime | None = None,
    approved: Mapping[TableRef, str] | None = None,
    dry_run: bool = False,
) -> RecoveryResult:
    """Repair corrupted tables from a restored copy, row by row but set-based.

    For each table the copy's row hashes are compared with live's (see :mod:`restorekit.diff`)
    and the rows to write are listed on the live side with their current hash; only the
    missing and changed rows are then fetched from the copy. In one live transaction: rows
    written since the restore point (``extra``) are deleted only with ``delete_extra``
    (children first), then, parents first, missing rows are inserted (``ON CONFLICT (primary
    key) DO NOTHING``) and changed rows rewritten (``UPDATE ... FROM`` the staged rows).

    What "changed" means, what ``columns``, ``keep_rows_written_after`` and ``approved``
    narrow, and how a row changed meanwhile is left alone: see the module docstring.

    Args:
        live_conn: the production database; written in one transaction per call.
        copy_conn: the restored copy; temp tables only, rolled back.
        tables: the tables to repair; pass a table's cascade children too when rows were
            deleted from it (they went with it).
        update_changed: rewrite rows whose content differs.
        insert_missing: re-insert rows that are in the copy but not live.
        delete_extra: delete live rows that are not in the copy (explicit opt-in).
        columns: the corrupted columns per table (see above).
        keep_rows_written_after: timezone-aware; see above.
        approved: the approved fingerprint per table; a table missing from it may get no write.
        dry_run: do everything, report exact counts, roll it all back.

    Raises:
        ConfigError: a table without a primary key, tables that differ between the two sides,
            unknown or unwritable ``columns``, a naive time, ``track_commit_timestamp`` off
            with ``keep_rows_written_after``, or a foreign-key cycle among ``tables``. Raised
            before anything is written.
        SafetyError: the rows to write differ from the approved plan, or a repaired row
            conflicts with another live row on a unique or foreign key; nothing was written.
        PostgresError: a server failed; nothing was written.
    """
    started = time.monotonic()
    after = keep_rows_written_after
    order, shapes, facts, plan = _prepare_repair(
        live_conn, copy_conn, tables, columns, after, insert_missing=insert_missing,
        update_changed=update_changed, delete_extra=delete_extra)

    with _transactions(live_conn, copy_conn, "repair", dry_run=dry_run):
        with pinned_both(live_conn, copy_conn):
            planned, live_temps = _plan_all(
                live_conn, copy_conn, order, shapes, insert_missing=insert_missing,
                update_changed=update_changed, delete_extra=delete_extra, after=after)
            if approved is not None:
                _check_approved(planned, approved, dry_run)
            staged = {table: _stage_to_write(live_conn, copy_conn, table, shapes[table],
                                             planned[table])
                      for table in order}
            live_temps.extend(stage for stage, _ in staged.values())
        deleted = _delete_extra(live_conn, order, shapes, planned, after)
        outcomes = [
            _apply_table(live_conn, table, shapes[table], planned[table], staged[table],
                         facts[table], after=after, insert_missing=insert_missing,
                         update_changed=update_changed, delete_extra=delete_extra,
                         deleted=deleted.get(table, 0))
            for table in order
        ]
        moved = _advance_sequences(live_conn, [o.table for o in outcomes if o.inserted], facts,
                                   dry_run=dry_run)
        drop_temp(live_conn, *live_temps)

    result = RecoveryResult(plan=plan, dry_run=dry_run, tables=tuple(outcomes),
                            sequences_advanced=tuple(moved),
                            elapsed_seconds=time.monotonic() - started)
    _log_repaired(result)
    return result


def _log_repaired(result: RecoveryResult) -> None:
    tables = result.tables
    log.info("%srepair: %d inserted, %d updated, %d deleted, %d extra rows kept, %d newer rows "
             "kept, %d later deletions kept", "dry run: " if result.dry_run else "",
             result.inserted, result.updated, result.deleted, sum(t.extra_kept for t in tables),
             sum(t.kept_newer for t in tables), sum(t.kept_deleted for t in tables))


def _stage_to_write(live_conn: Connection[Any], copy_conn: Connection[Any], table: TableRef,
                    repair: _Repair, planned: _Planned) -> tuple[TableRef, int]:
    """The copy's rows of the planned inserts and updates, in a live temp table (analyzed
    when updates join it); an empty one when there are none."""
    shape = repair.full
    if not (planned.updates or planned.inserts):
        return create_temp_like(live_conn, table, shape.columns, "stage"), 0
    # The keys to fetch go to the copy once; the copy returns just those rows.
    p = sql.Identifier("p")
    copy_keys, _ = stage_query(live_conn, copy_conn, sql.SQL(
        "SELECT {key} FROM {plan} AS {p} WHERE {p}.{kind} IN ({u}, {i})"
    ).format(key=shape.key_idents(p), plan=planned.plan.ident, p=p, kind=_kind(repair),
             u=sql.Literal(_UPDATE), i=sql.Literal(_INSERT)),
        table, shape.key, "keys", fmt=shape.key_format)
    k = sql.Identifier("k")
    source = sql.SQL(
        "{table} AS {t} WHERE EXISTS (SELECT FROM {keys} AS {k} WHERE {m})"
    ).format(table=table.ident, t=ALIAS, keys=copy_keys.ident, k=k,
             m=key_match(shape.key, k, ALIAS))
    return _stage_rows(copy_conn, live_conn, shape, source, analyze=planned.updates > 0)


def _delete_extra(live_conn: Connection[Any], order: Sequence[TableRef],
                  shapes: dict[TableRef, _Repair], planned: dict[TableRef, _Planned],
                  after: datetime | None) -> dict[TableRef, int]:
    """Delete the planned extra rows still as planned, children first; rows deleted per
    table."""
    deleted: dict[TableRef, int] = {}
    for table in reversed(order):  # children first
        if planned[table].deletes:
            head = sql.SQL("DELETE FROM {table} AS {t} USING {plan} AS {p}").format(
                table=table.ident, t=ALIAS, plan=planned[table].plan.ident,
                p=sql.Identifier("p"))
            deleted[table] = live_conn.execute(
                _pinned(head, shapes[table], _DELETE, after)).rowcount
    return deleted


def _apply_table(
    live_conn: Connection[Any], table: TableRef, repair: _Repair, planned: _Planned,
    staged: tuple[TableRef, int], facts: _Facts, *, after: datetime | None,
    insert_missing: bool, update_changed: bool, delete_extra: bool, deleted: int,
) -> TableOutcome:
    """Insert the table's planned missing rows and rewrite its planned changed ones from the
    staged copy rows; what happened to it."""
    stage, n = staged
    inserted = _insert_missing(live_conn, table, repair, planned, stage, facts)
    updated = _update_changed(live_conn, table, repair, planned, stage, after)
    if planned.updates and updated < planned.updates:
        log.warning("%s: %d row(s) changed while the repair ran and were left alone",
                    table, planned.updates - updated)
    return _outcome(
        table, repair.full.key, planned, after=after, insert_missing=insert_missing,
        update_changed=update_changed, delete_extra=delete_extra, staged=n,
        inserted=inserted, updated=updated, deleted=deleted)


def _insert_missing(live_conn: Connection[Any], table: TableRef, repair: _Repair,
                    planned: _Planned, stage: TableRef, facts: _Facts) -> int:
    """Insert the staged rows the plan lists as missing; how many were inserted."""
    if not planned.inserts:
        return 0
    p = sql.Identifier("p")
    only = sql.SQL("EXISTS (SELECT FROM {plan} AS {p} WHERE {p}.{kind} = {i} "
                   "AND {m})").format(
        plan=planned.plan.ident, p=p, kind=_kind(repair), i=sql.Literal(_INSERT),
        m=key_match(repair.full.key, p, sql.Identifier("s")))
    return live_conn.execute(
        _insert_statement(table, repair.full, stage, facts, where=only)
    ).rowcount


def _update_changed(live_conn: Connection[Any], table: TableRef, repair: _Repair,
                    planned: _Planned, stage: TableRef, after: datetime | None) -> int:
    """Rewrite the repaired columns of the rows the plan lists as changed and that are still
    as planned; how many were rewritten."""
    if not planned.updates:
        return 0
    s = sql.Identifier("s")
    assignments = sql.SQL(", ").join(
        sql.SQL("{c} = {s}.{c}").format(c=sql.Identifier(c), s=s)
        for c in repair.settable)
    head = sql.SQL("UPDATE {table} AS {t} SET {a} FROM {plan} AS {p}, {stage} AS {s}"
                   ).format(table=table.ident, t=ALIAS, a=assignments,
                            plan=planned.plan.ident, p=sql.Identifier("p"),
                            stage=stage.ident, s=s)
    return live_conn.execute(_pinned(
        head, repair, _UPDATE, after,
        also=key_match(repair.full.key, s, ALIAS))).rowcount


def _pinned(head: sql.Composable, repair: _Repair, kind: str, after: datetime | None,
            also: sql.Composable | None = None) -> sql.Composed:
    """``head`` (an UPDATE or DELETE of the table as ``t`` joined with its plan as ``p``)
    restricted to the plan's rows of ``kind`` that are still as the plan saw them: the same
    hash of the compared columns, and not written after ``after``. Under READ COMMITTED a row
    changed concurrently is re-checked against these conditions, so it is left alone rather
    than overwritten."""
    cs, p = repair.compare, sql.Identifier("p")
    condition = sql.SQL(
        "{head} WHERE {p}.{kind} = {value} AND {m} AND {p}.{h} = {live_hash} AND NOT {newer}"
    ).format(head=head, p=p, kind=_kind(repair), value=sql.Literal(kind),
             m=key_match(cs.key, p, ALIAS), h=sql.Identifier(cs.hash_column),
             live_hash=row_hash(cs.columns), newer=_newer(after))
    if also is None:
        return condition
    return sql.SQL("{} AND {}").format(condition, also)

"""Runbook scenario 2 ("partial data corruption"): :func:`repair_rows` re-inserts missing rows and
rewrites changed ones from a restored copy, keeping the rows written after the restore point
unless asked to delete them, and never writing a row set other than the approved plan.
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
)
from restorekit.pg.catalog import TableRef
from restorekit.pg.copy import copy_rows
from restorekit.recovery.commit_times import _newer
from restorekit.recovery.models import RecoveryPlan, RecoveryResult, TableOutcome
from restorekit.recovery.repair_plan import (
    _DELETE,
    _INSERT,
    _UPDATE,
    _check_approved,
    _column_names,
    _kind,
    _outcome,
    _plan_table,
    _Planned,
    _prepare_repair,
    _Repair,
)
from restorekit.recovery.sequences import _advance_sequences
from restorekit.recovery.stage import _stage_rows
from restorekit.recovery.writes import _insert_statement, _translated

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
    _, order, shapes, facts = _prepare_repair(live_conn, copy_conn, tables, columns, after,
                                              insert_missing=insert_missing)
    plan = RecoveryPlan(
        operation="repair_rows", tables=tuple(order), include_cascade=False,
        insert_missing=insert_missing, update_changed=update_changed, delete_extra=delete_extra,
        columns=_column_names(columns), keep_rows_written_after=after,
    )

    outcomes: list[TableOutcome] = []
    with _translated("repair", dry_run), live_conn.transaction(force_rollback=dry_run), \
            copy_conn.transaction(force_rollback=True):
        live_temps: list[TableRef] = []
        found: dict[TableRef, tuple[_Planned, TableRef, int]] = {}
        with pinned_both(live_conn, copy_conn):
            planned_all: dict[TableRef, _Planned] = {}
            for table in order:
                planned, temps = _plan_table(
                    live_conn, copy_conn, table, shapes[table], insert_missing=insert_missing,
                    update_changed=update_changed, delete_extra=delete_extra, after=after)
                live_temps.extend(temps)
                planned_all[table] = planned
            if approved is not None:
                _check_approved(planned_all, approved, dry_run)
            for table in order:
                planned, shape = planned_all[table], shapes[table].full
                if planned.updates or planned.inserts:
                    # The keys to fetch go to the copy once; the copy returns just those rows.
                    copy_keys = create_temp_like(copy_conn, table, shape.key, "keys")
                    p = sql.Identifier("p")
                    copy_rows(live_conn, copy_conn, sql.SQL(
                        "SELECT {key} FROM {plan} AS {p} WHERE {p}.{kind} IN ({u}, {i})"
                    ).format(key=shape.key_idents(p), plan=planned.plan.ident, p=p,
                             kind=_kind(shapes[table]), u=sql.Literal(_UPDATE),
                             i=sql.Literal(_INSERT)), None, copy_keys, shape.key,
                        fmt=shape.key_format)
                    copy_conn.execute(sql.SQL("ANALYZE {}").format(copy_keys.ident))
                    k = sql.Identifier("k")
                    source = sql.SQL(
                        "{table} AS {t} WHERE EXISTS (SELECT FROM {keys} AS {k} WHERE {m})"
                    ).format(table=table.ident, t=ALIAS, keys=copy_keys.ident, k=k,
                             m=key_match(shape.key, k, ALIAS))
                    stage, n = _stage_rows(copy_conn, live_conn, shape, source,
                                           analyze=planned.updates > 0)
                else:
                    stage, n = create_temp_like(live_conn, table, shape.columns, "stage"), 0
                live_temps.append(stage)
                found[table] = (planned, stage, n)

        deleted: dict[TableRef, int] = {}
        for table in reversed(order):  # children first
            planned = found[table][0]
            if planned.deletes:
                head = sql.SQL("DELETE FROM {table} AS {t} USING {plan} AS {p}").format(
                    table=table.ident, t=ALIAS, plan=planned.plan.ident, p=sql.Identifier("p"))
                deleted[table] = live_conn.execute(
                    _pinned(head, shapes[table], _DELETE, after)).rowcount

        for table in order:
            repair = shapes[table]
            planned, stage, n = found[table]
            inserted = updated = 0
            if planned.inserts:
                p = sql.Identifier("p")
                only = sql.SQL("EXISTS (SELECT FROM {plan} AS {p} WHERE {p}.{kind} = {i} "
                               "AND {m})").format(
                    plan=planned.plan.ident, p=p, kind=_kind(repair), i=sql.Literal(_INSERT),
                    m=key_match(repair.full.key, p, sql.Identifier("s")))
                inserted = live_conn.execute(
                    _insert_statement(table, repair.full, stage, facts[table], where=only)
                ).rowcount
            if planned.updates:
                s = sql.Identifier("s")
                assignments = sql.SQL(", ").join(
                    sql.SQL("{c} = {s}.{c}").format(c=sql.Identifier(c), s=s)
                    for c in repair.settable)
                head = sql.SQL("UPDATE {table} AS {t} SET {a} FROM {plan} AS {p}, {stage} AS {s}"
                               ).format(table=table.ident, t=ALIAS, a=assignments,
                                        plan=planned.plan.ident, p=sql.Identifier("p"),
                                        stage=stage.ident, s=s)
                updated = live_conn.execute(_pinned(
                    head, repair, _UPDATE, after,
                    also=key_match(repair.full.key, s, ALIAS))).rowcount
            outcomes.append(_outcome(
                table, repair.full.key, planned, after=after, insert_missing=insert_missing,
                update_changed=update_changed, delete_extra=delete_extra, staged=n,
                inserted=inserted, updated=updated, deleted=deleted.get(table, 0)))
            if planned.updates and updated < planned.updates:
                log.warning("%s: %d row(s) changed while the repair ran and were left alone",
                            table, planned.updates - updated)
        moved = _advance_sequences(live_conn, [o.table for o in outcomes if o.inserted], facts,
                                   dry_run=dry_run)
        drop_temp(live_conn, *live_temps)

    result = RecoveryResult(plan=plan, dry_run=dry_run, tables=tuple(outcomes),
                            sequences_advanced=tuple(moved),
                            elapsed_seconds=time.monotonic() - started)
    log.info("%srepair: %d inserted, %d updated, %d deleted, %d extra rows kept, %d newer rows "
             "kept, %d later deletions kept", "dry run: " if dry_run else "", result.inserted,
             result.updated, result.deleted, sum(t.extra_kept for t in outcomes),
             sum(t.kept_newer for t in outcomes), sum(t.kept_deleted for t in outcomes))
    return result


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

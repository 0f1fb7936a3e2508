"""Runbook scenario 3 ("accidental data deletion"): :func:`recover_deleted_rows` puts back the rows
of a table that were deleted, together with every row an ``ON DELETE CASCADE`` took with them,
and nothing else.

``ON DELETE SET NULL`` children are not part of it: their rows survived with the reference
cleared, and :func:`repair_rows` is the tool that sets it back. A child row that the
application deleted on purpose before the parent was deleted also comes back when it was
still in the copy; pass ``include_cascade=False`` and recover tables one by one to avoid that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from psycopg import Connection, sql

from restorekit.diff import (
    ALIAS,
    TableShape,
    create_temp_like,
    drop_temp,
    key_match,
    missing_keys_query,
    pinned_both,
    resolve_shapes,
)
from restorekit.pg import catalog
from restorekit.pg.catalog import FkGraph, TableRef
from restorekit.pg.copy import copy_rows
from restorekit.recovery.cascade import _select_on_copy
from restorekit.recovery.models import RecoveryPlan, RecoveryResult, TableOutcome
from restorekit.recovery.sequences import _advance_sequences, _Facts, _table_facts
from restorekit.recovery.stage import _normalise_keys, _stage_copy_keys, _stage_rows, _write_keys
from restorekit.recovery.writes import _insert_statement, _transactions

log = logging.getLogger(__name__)


def recover_deleted_rows(
    live_conn: Connection[Any],
    copy_conn: Connection[Any],
    root: TableRef,
    keys: Sequence[tuple[Any, ...]] | None,
    *,
    include_cascade: bool = True,
    dry_run: bool = False,
) -> RecoveryResult:
    """Put deleted rows back from a restored copy, with the rows their deletion cascaded to.

    For the root table's keys (given, or every key the copy has and live lacks when ``keys`` is
    None), the rows are taken from the copy together with every row in the cascade closure
    (children that ``ON DELETE CASCADE`` removed with them, recursively: users -> clients ->
    appointments, and appointments through users directly). They are inserted parents first with
    ``ON CONFLICT (primary key) DO NOTHING`` in one live transaction. Rows written live since the
    deletion are never changed.

    Args:
        live_conn: the production database; written in one transaction (a savepoint when the
            caller has one open).
        copy_conn: the restored copy; temp tables are created there in a transaction that is
            rolled back (it must not be a read-only hot standby).
        root: the table the deletion started from.
        keys: primary keys of the deleted root rows (tuples in key order; bare values are
            accepted for a one-column key), e.g. from :func:`deleted_keys_from_audit`. None
            means "every root row missing live" (the anti-diff: intended deletions too).
        include_cascade: also bring back the rows the cascade took.
        dry_run: do everything, report exact counts, and roll it all back.

    Returns:
        Per-table counts, parents first.

    Raises:
        ConfigError: a table of the closure has no primary key, the two sides' tables differ,
            a key has the wrong shape, or the closure contains a foreign-key cycle. Raised
            before anything is written.
        SafetyError: a restored row conflicts with a row written since on a unique or foreign
            key; nothing was written.
        PostgresError: the copy or live server failed; nothing was written.
    """
    started = time.monotonic()
    graph = FkGraph(catalog.foreign_keys(live_conn))
    tables = graph.cascade_closure([root]) if include_cascade else [root]
    # Every table is checked (primary key, columns on both sides) before anything is read.
    shapes = resolve_shapes(live_conn, copy_conn, tables)
    facts = _table_facts(live_conn, tables)
    root_shape = shapes[root]
    given = None if keys is None else _normalise_keys(keys, root_shape.key, root)
    plan = _insert_only_plan(tables, root, given, include_cascade=include_cascade)
    log.info("recovering deleted rows of %s (%s) into %s", root, plan.key_source,
             ", ".join(map(str, tables)))

    with _transactions(live_conn, copy_conn, "recovery of deleted rows", dry_run=dry_run):
        # The scratch copy's temp tables vanish with its rolled-back transaction.
        live_temps: list[TableRef] = []
        with pinned_both(live_conn, copy_conn):  # text COPY must print and parse alike
            copy_keys, requested = _request_keys(live_conn, copy_conn, root_shape, given,
                                                 live_temps)
            selected = _select_on_copy(copy_conn, graph, tables, shapes, root, copy_keys,
                                       include_cascade=include_cascade)
            keys_not_in_copy = _keys_not_in_copy(copy_conn, root_shape, copy_keys,
                                                 selected[root])
            staged = _stage_selected(copy_conn, live_conn, tables, shapes, selected, live_temps)
        outcomes = _insert_staged(live_conn, tables, shapes, facts, staged)
        moved = _advance_sequences(live_conn, [o.table for o in outcomes if o.inserted], facts,
                                   dry_run=dry_run)
        drop_temp(live_conn, *live_temps)

    result = RecoveryResult(
        plan=plan, dry_run=dry_run, tables=tuple(outcomes), keys_requested=requested,
        keys_not_in_copy=keys_not_in_copy, sequences_advanced=tuple(moved),
        elapsed_seconds=time.monotonic() - started,
    )
    _log_recovered(result)
    return result


def _log_recovered(result: RecoveryResult) -> None:
    if result.keys_not_in_copy:
        log.warning("%d of %d %s key(s) are not in the copy (written after the restore point?)",
                    result.keys_not_in_copy, result.keys_requested, result.plan.root)
    log.info("%s%s: %d rows inserted, %d already present",
             "dry run: " if result.dry_run else "", result.plan.operation, result.inserted,
             result.skipped_existing)


def _insert_only_plan(tables: Sequence[TableRef], root: TableRef,
                      given: Sequence[tuple[Any, ...]] | None, *,
                      include_cascade: bool) -> RecoveryPlan:
    """What :func:`recover_deleted_rows` does: inserts only, never an update or a delete."""
    return RecoveryPlan(
        operation="recover_deleted_rows", tables=tuple(tables), root=root,
        key_source="anti-diff" if given is None else "given",
        keys_given=None if given is None else len(given), include_cascade=include_cascade,
        insert_missing=True, update_changed=False, delete_extra=False)


def _request_keys(
    live_conn: Connection[Any], copy_conn: Connection[Any], root_shape: TableShape,
    given: Sequence[tuple[Any, ...]] | None, live_temps: list[TableRef],
) -> tuple[TableRef, int]:
    """The root keys to look for, in a copy temp table (analyzed), and how many were sent:
    ``given``, or every key the copy has and live lacks (the anti-diff, through a live temp
    table that is added to ``live_temps``)."""
    copy_keys = create_temp_like(copy_conn, root_shape.table, root_shape.key, "keys")
    if given is None:
        live_keys = _stage_copy_keys(live_conn, copy_conn, root_shape)
        live_temps.append(live_keys)
        requested = copy_rows(
            live_conn, copy_conn, missing_keys_query(root_shape, live_keys), None,
            copy_keys, root_shape.key, fmt=root_shape.key_format,
        )
    else:
        requested = _write_keys(copy_conn, copy_keys, root_shape.key, given)
    copy_conn.execute(sql.SQL("ANALYZE {}").format(copy_keys.ident))
    return copy_keys, requested


def _keys_not_in_copy(copy_conn: Connection[Any], root_shape: TableShape, copy_keys: TableRef,
                      root_rows: TableRef) -> int:
    """How many distinct requested keys found no root row in the copy."""
    k = sql.Identifier("k")
    not_found = copy_conn.execute(
        sql.SQL(
            "SELECT count(*) FROM (SELECT DISTINCT {key} FROM {keys}) AS {k} "
            "WHERE NOT EXISTS (SELECT FROM {rows} AS {t} WHERE {m})"
        ).format(key=root_shape.key_idents(), keys=copy_keys.ident, k=k,
                 rows=root_rows.ident, t=ALIAS, m=key_match(root_shape.key, k, ALIAS))
    ).fetchone()
    return int(not_found[0]) if not_found else 0


def _stage_selected(
    copy_conn: Connection[Any], live_conn: Connection[Any], tables: Sequence[TableRef],
    shapes: dict[TableRef, TableShape], selected: dict[TableRef, TableRef],
    live_temps: list[TableRef],
) -> dict[TableRef, tuple[TableRef, int]]:
    """Stream each table's selected copy rows into a live temp table (added to
    ``live_temps``); each is read whole by one INSERT, so none is analyzed."""
    staged: dict[TableRef, tuple[TableRef, int]] = {}
    for table in tables:
        source = sql.SQL("{} AS {}").format(selected[table].ident, ALIAS)
        staged[table] = _stage_rows(copy_conn, live_conn, shapes[table], source,
                                     analyze=False)
        live_temps.append(staged[table][0])
    return staged


def _insert_staged(
    live_conn: Connection[Any], tables: Sequence[TableRef], shapes: dict[TableRef, TableShape],
    facts: dict[TableRef, _Facts], staged: dict[TableRef, tuple[TableRef, int]],
) -> list[TableOutcome]:
    """Insert the staged rows: parents first, so every child's parent is back before the
    child; a key already live is skipped and counted."""
    outcomes: list[TableOutcome] = []
    for table in tables:
        stage, n = staged[table]
        inserted = live_conn.execute(
            _insert_statement(table, shapes[table], stage, facts[table])
        ).rowcount
        outcomes.append(TableOutcome(table, shapes[table].key, staged=n, inserted=inserted,
                                     skipped_existing=n - inserted))
    return outcomes

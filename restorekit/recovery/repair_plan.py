"""Planning a repair (runbook scenario 2): per table, the diff of key and compared columns, and the
rows to write listed on the live side with their current hash and a fingerprint a human
approves (:func:`plan_repair`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from psycopg import Connection, sql

from restorekit.diff import (
    ALIAS,
    TableShape,
    count_differences,
    create_temp_like,
    key_match,
    missing_keys_query,
    pinned_both,
    resolve_shapes,
    row_hash,
    stage_copy_hashes,
)
from restorekit.errors import ConfigError, SafetyError
from restorekit.pg import catalog
from restorekit.pg.catalog import FkGraph, TableRef
from restorekit.recovery.commit_times import _newer, require_commit_timestamps
from restorekit.recovery.deletion_scope import _deleted_after
from restorekit.recovery.models import RecoveryPlan, RecoveryResult, TableOutcome
from restorekit.recovery.options import _aware
from restorekit.recovery.sequences import _Facts, _table_facts
from restorekit.recovery.writes import _transactions

log = logging.getLogger(__name__)


_UPDATE, _INSERT, _DELETE = "u", "i", "d"


@dataclass(frozen=True, slots=True)
class _Repair:
    """One table of a repair: ``compare`` hashes and updates key + the repaired columns,
    ``full`` (every column) is what missing rows are staged and inserted with."""

    full: TableShape
    compare: TableShape
    settable: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Planned:
    hashes: TableRef
    plan: TableRef
    missing: int
    extra: int
    changed: int
    updates: int
    inserts: int
    deletes: int
    fingerprint: str


def _repair_shapes(
    live_conn: Connection[Any], copy_conn: Connection[Any], order: Sequence[TableRef],
    columns: Mapping[TableRef, Sequence[str]], facts: dict[TableRef, _Facts],
) -> dict[TableRef, _Repair]:
    unknown = [str(t) for t in columns if t not in order]
    if unknown:
        raise ConfigError(f"columns given for table(s) not being repaired: {', '.join(unknown)}")
    full = resolve_shapes(live_conn, copy_conn, order)
    shapes: dict[TableRef, _Repair] = {}
    for table in order:
        shape = full[table]
        always = facts[table].identity_always
        if table not in columns:
            settable = tuple(c for c in shape.columns if c not in shape.key and c not in always)
            shapes[table] = _Repair(shape, shape, settable)
            continue
        wanted = tuple(dict.fromkeys(columns[table]))
        bad = [c for c in wanted if c not in shape.columns]
        if bad:
            raise ConfigError(
                f"table {table} has no column(s) {', '.join(bad)} that can be repaired (unknown, "
                f"generated, or not in the copy); its columns: {', '.join(shape.columns)}")
        settable = tuple(c for c in wanted if c not in shape.key and c not in always)
        if not settable:
            raise ConfigError(
                f"columns {', '.join(wanted)} of {table} are its primary key or GENERATED ALWAYS "
                "identity columns, which a repair does not rewrite; name the corrupted columns")
        compare = replace(shape, columns=tuple(dict.fromkeys([*shape.key, *settable])))
        shapes[table] = _Repair(shape, compare, settable)
    return shapes


def _plan_table(
    live_conn: Connection[Any], copy_conn: Connection[Any], table: TableRef, shape: _Repair, *,
    insert_missing: bool, update_changed: bool, delete_extra: bool, after: datetime | None,
) -> tuple[_Planned, list[TableRef]]:
    """Diff one table (key + compared columns) and put the rows to write into a live temp
    table: ``(key, current live hash, kind)``, one INSERT ... SELECT per kind."""
    cs = shape.compare
    temps: list[TableRef] = []
    hashes = stage_copy_hashes(live_conn, copy_conn, cs)
    temps.append(hashes)
    missing, extra, changed = count_differences(live_conn, cs, hashes)
    h = sql.Identifier(cs.hash_column)
    kind = sql.Identifier(cs.hash_column + "_kind")
    plan = create_temp_like(live_conn, table, cs.key, "plan", extra=sql.SQL(
        "NULL::uuid AS {}, NULL::text AS {}").format(h, kind))
    temps.append(plan)
    s = sql.Identifier("s")
    newer = _newer(after)
    live_hash = row_hash(cs.columns)
    updates = inserts = deletes = 0
    if update_changed and changed:
        updates = live_conn.execute(sql.SQL(
            "INSERT INTO {plan} SELECT {skey}, {live_hash}, {kind_value} FROM {hashes} AS {s} "
            "JOIN {table} AS {t} ON {m} WHERE {s}.{h} <> {live_hash} AND NOT {newer}"
        ).format(plan=plan.ident, skey=cs.key_idents(s), live_hash=live_hash,
                 kind_value=sql.Literal(_UPDATE), hashes=hashes.ident, s=s, table=table.ident,
                 t=ALIAS, m=key_match(cs.key, ALIAS, s), h=h, newer=newer)).rowcount
    if insert_missing and missing:
        inserts = live_conn.execute(sql.SQL(
            "INSERT INTO {plan} ({key}, {kind}) SELECT {skey}, {kind_value} FROM ({missing}) "
            "AS {s}"
        ).format(plan=plan.ident, key=cs.key_idents(), kind=kind, skey=cs.key_idents(s),
                 kind_value=sql.Literal(_INSERT), missing=missing_keys_query(cs, hashes),
                 s=s)).rowcount
        # The audit log is read AFTER the missing rows (each statement sees its own snapshot):
        # a row found missing was deleted by a committed transaction, whose audit row is then
        # visible too. Read before, a deletion committing in between looked like corruption.
        gone = _deleted_after(live_conn, table, cs.key, after) if after is not None else None
        if gone is not None:
            temps.append(gone)
        if gone is not None and inserts:
            g = sql.Identifier("g")
            inserts -= live_conn.execute(sql.SQL(
                "DELETE FROM {plan} AS {s} WHERE {s}.{kind} = {kind_value} "
                "AND EXISTS (SELECT FROM {gone} AS {g} WHERE {m})"
            ).format(plan=plan.ident, s=s, kind=kind, kind_value=sql.Literal(_INSERT),
                     gone=gone.ident, g=g, m=key_match(cs.key, g, s))).rowcount
    if delete_extra and extra:
        deletes = live_conn.execute(sql.SQL(
            "INSERT INTO {plan} SELECT {tkey}, {live_hash}, {kind_value} FROM {table} AS {t} "
            "WHERE NOT EXISTS (SELECT FROM {hashes} AS {s} WHERE {m}) AND NOT {newer}"
        ).format(plan=plan.ident, tkey=cs.key_idents(ALIAS), live_hash=live_hash,
                 kind_value=sql.Literal(_DELETE), table=table.ident, t=ALIAS,
                 hashes=hashes.ident, s=s, m=key_match(cs.key, s, ALIAS), newer=newer)).rowcount
    p = sql.Identifier("p")
    # Order-independent digest of exactly the rows to write and their current values.
    row = live_conn.execute(sql.SQL(
        "SELECT coalesce(sum(hashtextextended({p}::text, 0)::numeric), 0)::text FROM {plan} AS {p}"
    ).format(p=p, plan=plan.ident)).fetchone()
    digest = row[0] if row else "0"
    live_conn.execute(sql.SQL("ANALYZE {}").format(plan.ident))
    fingerprint = f"{updates} updates, {inserts} inserts, {deletes} deletes (digest {digest})"
    return _Planned(hashes, plan, missing, extra, changed, updates, inserts, deletes,
                    fingerprint), temps


def _prepare_repair(
    live_conn: Connection[Any], copy_conn: Connection[Any], tables: Sequence[TableRef],
    columns: Mapping[TableRef, Sequence[str]] | None, keep_rows_written_after: datetime | None,
    *, insert_missing: bool, update_changed: bool, delete_extra: bool,
) -> tuple[list[TableRef], dict[TableRef, _Repair], dict[TableRef, _Facts], RecoveryPlan]:
    """What a repair and its plan both check and read before they diff: the options, the
    tables in insert order, each table's shape and facts, and the plan they report."""
    _aware("keep_rows_written_after", keep_rows_written_after)
    if keep_rows_written_after is not None:
        require_commit_timestamps(live_conn)
    graph = FkGraph(catalog.foreign_keys(live_conn))
    order = graph.topological_order(dict.fromkeys(tables))
    facts = _table_facts(live_conn, order)
    shapes = _repair_shapes(live_conn, copy_conn, order, columns or {}, facts)
    for table in order:
        left_out = sorted({fk.child for fk in graph.foreign_keys if fk.parent == table
                           and fk.on_delete == "cascade" and fk.child not in shapes})
        if left_out and insert_missing:
            log.warning("%s cascades to %s, which is not being repaired", table,
                        ", ".join(map(str, left_out)))
    plan = _recovery_plan(order, columns, keep_rows_written_after, insert_missing=insert_missing,
                          update_changed=update_changed, delete_extra=delete_extra)
    return order, shapes, facts, plan


def _outcome(table: TableRef, key: tuple[str, ...], planned: _Planned, *, after: datetime | None,
             insert_missing: bool, update_changed: bool, delete_extra: bool, staged: int = 0,
             inserted: int | None = None, updated: int | None = None,
             deleted: int | None = None) -> TableOutcome:
    inserted = planned.inserts if inserted is None else inserted
    updated = planned.updates if updated is None else updated
    deleted = planned.deletes if deleted is None else deleted
    kept_deleted = planned.missing - planned.inserts if insert_missing else 0
    kept_newer = ((planned.changed - planned.updates if update_changed else 0)
                  + (planned.extra - planned.deletes if delete_extra else 0)) if after else 0
    return TableOutcome(
        table, key, staged=staged, inserted=inserted,
        updated=updated, deleted=deleted, skipped_existing=max(planned.inserts - inserted, 0),
        missing=planned.missing, changed=planned.changed, extra=planned.extra,
        extra_kept=planned.extra - deleted, kept_newer=kept_newer, kept_deleted=kept_deleted,
        skipped_changed=max(planned.updates - updated, 0), fingerprint=planned.fingerprint,
    )


def _column_names(columns: Mapping[TableRef, Sequence[str]] | None) -> tuple[str, ...]:
    return tuple(f"{t}.{c}" for t, cs in (columns or {}).items() for c in cs)


def plan_repair(
    live_conn: Connection[Any],
    copy_conn: Connection[Any],
    tables: Sequence[TableRef],
    *,
    columns: Mapping[TableRef, Sequence[str]] | None = None,
    keep_rows_written_after: datetime | None = None,
    update_changed: bool = True,
    insert_missing: bool = True,
    delete_extra: bool = False,
) -> RecoveryResult:
    """What :func:`repair_rows` with the same arguments would write, without writing it.

    Only the diff runs (key and row hashes; no row is fetched from the copy). The outcome of
    each table has the planned counts in ``inserted``/``updated``/``deleted`` and the
    ``fingerprint`` to pass to :func:`repair_rows` as ``approved`` once a human has approved.

    Raises:
        ConfigError: as :func:`repair_rows`.
    """
    started = time.monotonic()
    after = keep_rows_written_after
    order, shapes, _, plan = _prepare_repair(
        live_conn, copy_conn, tables, columns, after, insert_missing=insert_missing,
        update_changed=update_changed, delete_extra=delete_extra)
    with _transactions(live_conn, copy_conn, "repair plan", dry_run=True), \
            pinned_both(live_conn, copy_conn):
        planned, _ = _plan_all(live_conn, copy_conn, order, shapes,
                               insert_missing=insert_missing, update_changed=update_changed,
                               delete_extra=delete_extra, after=after)
        outcomes = [_outcome(table, shapes[table].full.key, planned[table], after=after,
                             insert_missing=insert_missing, update_changed=update_changed,
                             delete_extra=delete_extra)
                    for table in order]
    return RecoveryResult(plan=plan, dry_run=True, tables=tuple(outcomes),
                          elapsed_seconds=time.monotonic() - started)


def _recovery_plan(
    order: Sequence[TableRef], columns: Mapping[TableRef, Sequence[str]] | None,
    after: datetime | None, *, insert_missing: bool, update_changed: bool, delete_extra: bool,
) -> RecoveryPlan:
    """What a repair (or its plan) is asked to do, tables in insert order."""
    return RecoveryPlan(
        operation="repair_rows", tables=tuple(order), include_cascade=False,
        insert_missing=insert_missing, update_changed=update_changed, delete_extra=delete_extra,
        columns=_column_names(columns), keep_rows_written_after=after,
    )


def _plan_all(
    live_conn: Connection[Any], copy_conn: Connection[Any], order: Sequence[TableRef],
    shapes: dict[TableRef, _Repair], *, insert_missing: bool, update_changed: bool,
    delete_extra: bool, after: datetime | None,
) -> tuple[dict[TableRef, _Planned], list[TableRef]]:
    """:func:`_plan_table` for every table in ``order``, and the live temp tables made."""
    planned: dict[TableRef, _Planned] = {}
    temps: list[TableRef] = []
    for table in order:
        planned[table], made = _plan_table(
            live_conn, copy_conn, table, shapes[table], insert_missing=insert_missing,
            update_changed=update_changed, delete_extra=delete_extra, after=after)
        temps.extend(made)
    return planned, temps


def _kind(repair: _Repair) -> sql.Identifier:
    return sql.Identifier(repair.compare.hash_column + "_kind")


def _check_approved(planned: Mapping[TableRef, _Planned], approved: Mapping[TableRef, str],
                    dry_run: bool) -> None:
    nothing = "0 updates, 0 inserts, 0 deletes (digest 0)"
    differ = [f"{table}: approved {approved.get(table, nothing)}, now {p.fingerprint}"
              for table, p in planned.items() if p.fingerprint != approved.get(table, nothing)]
    if differ:
        raise SafetyError(
            f"{'dry run of ' if dry_run else ''}repair refused: the rows to write changed since "
            f"the plan was approved ({'; '.join(differ)}); nothing was written; run again for "
            "a fresh plan")

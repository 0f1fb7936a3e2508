"""Selective row recovery from a restored copy: runbook scenarios 2 and 3, done set-based.

Scenario 3 ("accidental data deletion"): :func:`recover_deleted_rows` puts back the rows of a
table that were deleted, together with every row an ``ON DELETE CASCADE`` took with them
(deleting a user takes its clients and appointments), and nothing else. Scenario 2 ("partial data
corruption"): :func:`repair_rows` re-inserts missing rows and rewrites changed ones, keeping the
rows written after the restore point unless asked to delete them.

How data moves. The copy is in another cluster, so nothing joins across the two. The keys to
recover go to the copy once (COPY into a temp table there: the copy is a scratch clone and may
hold temp tables); the copy selects exactly the affected rows, cascade children included,
into temp tables of its own; those rows are streamed with COPY into TEMP staging tables on the
live side; and one ``INSERT ... SELECT ... ON CONFLICT (primary key) DO NOTHING`` (or
``UPDATE ... FROM``) per table applies them, parents first, in ONE live transaction. Nothing is
done per row; every statement is per table.

Guarantees:

* All or nothing: a failure anywhere rolls the live transaction back (a savepoint when the
  caller already had a transaction open).
* Rows that exist live are never overwritten by :func:`recover_deleted_rows`: a key that is
  already there is skipped and counted as such. A restored row that collides with a row written
  since on ANOTHER unique constraint (a re-used email) is not silently dropped: the whole recovery
  is refused with :class:`~restorekit.errors.SafetyError` naming the constraint, because its
  children would otherwise come back without it.
* Idempotent: running the same recovery twice inserts nothing the second time.
* ``dry_run=True`` runs the very same statements in a transaction that is rolled back, so the
  counts are exact and nothing changes (identity sequences are not advanced either).
* Explicit ids are inserted as they were (``OVERRIDING SYSTEM VALUE`` for ``GENERATED ALWAYS``
  identity columns); afterwards sequences that are behind the restored ids are moved forward.
* Live triggers stay enabled: INSERT/UPDATE triggers fire for restored rows like for any other
  write (audit triggers on DELETE do not fire for inserts).

The copy's temp tables live in a transaction on the copy that is always rolled back, so the copy
is left exactly as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import Connection, sql

from restorekit.diff import (
    ALIAS,
    TableShape,
    changed_keys_query,
    count_differences,
    create_temp_like,
    drop_temp,
    idents,
    jsonable_key,
    key_match,
    missing_keys_query,
    no_primary_key,
    pinned_both,
    resolve_shape,
    resolve_shapes,
    stage_copy_hashes,
)
from restorekit.errors import ConfigError, PostgresError, SafetyError
from restorekit.pg import catalog
from restorekit.pg.catalog import FkGraph, ForeignKey, TableRef
from restorekit.pg.copy import copy_rows

log = logging.getLogger(__name__)

Operation = Literal["recover_deleted_rows", "repair_rows"]
KeySource = Literal["given", "anti-diff"]


# -- models --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableOutcome:
    """What happened (or, in a dry run, would happen) to one table.

    ``staged`` rows were read from the copy. Of those, ``inserted`` were written and
    ``skipped_existing`` were not, because a row with the same key is already live (rows written
    after the restore point, or recovered by an earlier run). ``missing``, ``changed`` and
    ``extra`` are the diff counts :func:`repair_rows` found before it acted; ``extra_kept`` are
    rows written after the restore point that were left alone.
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


# -- deletion scope ------------------------------------------------------------------------------

_AUDIT_COLUMNS = ("table_name", "action", "old_row", "created_at")


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ConfigError(
            f"{name}={value.isoformat()} has no timezone; give one, e.g. 2026-11-25T13:05:00+00:00"
        )


def deleted_keys_from_audit(
    live_conn: Connection[Any],
    table: TableRef,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    audit_table: TableRef | None = None,
) -> list[tuple[Any, ...]] | None:
    """The keys of ``table`` rows that the audit log recorded as deleted (runbook scenario 3,
    step 2: "identify deletion scope").

    The audit log is the sample application's ``audit_log`` (``table_name``, ``action``,
    ``old_row`` jsonb, ``created_at``): the key is read from ``old_row`` with the table's own
    row type, so it has the key columns' real types. Cascaded deletes are in the log too (one
    row per deleted row, per table).

    Args:
        live_conn: the production database.
        table: the table whose deleted keys are wanted.
        since: only deletions at or after this time (timezone required).
        until: only deletions before this time (timezone required).
        audit_table: where the log is; default ``audit_log`` in the table's schema.

    Returns:
        Distinct keys (tuples in primary-key order), sorted; None when there is no audit table,
        so the caller falls back to the anti-diff (:func:`missing_keys`). A key is returned even
        when a row with that key has been written again since.

    Raises:
        ConfigError: naive timestamps, no primary key, or an audit table without the expected
            columns.
    """
    _aware("since", since)
    _aware("until", until)
    audit = audit_table or TableRef(table.schema, "audit_log")
    if audit not in catalog.list_tables(live_conn, [audit.schema]):
        log.info("no audit table %s; the deletion scope must come from the anti-diff", audit)
        return None
    have = {c.name for c in catalog.columns(live_conn, audit)}
    lacking = [c for c in _AUDIT_COLUMNS if c not in have]
    if lacking:
        raise ConfigError(
            f"audit table {audit} has no column(s) {', '.join(lacking)}; expected "
            f"{', '.join(_AUDIT_COLUMNS)} (old_row holding the deleted row as json)"
        )
    key = catalog.primary_key(live_conn, table)
    if not key:
        raise no_primary_key(table)
    r = sql.Identifier("r")
    a = sql.Identifier("a")
    not_null = sql.SQL(" AND ").join(
        sql.SQL("{}.{} IS NOT NULL").format(r, sql.Identifier(c)) for c in key
    )
    query = sql.SQL(
        """
        SELECT DISTINCT {rkey}
        FROM {audit} AS {a}
        CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, {a}.old_row::jsonb) AS {r}
        WHERE upper({a}.action) = 'DELETE'
          AND {a}.table_name = ANY(%(names)s::text[])
          AND (%(since)s::timestamptz IS NULL OR {a}.created_at >= %(since)s::timestamptz)
          AND (%(until)s::timestamptz IS NULL OR {a}.created_at < %(until)s::timestamptz)
          AND {not_null}
        ORDER BY {order}
        """
    ).format(
        rkey=idents(key, r), audit=audit.ident, a=a, table=table.ident, r=r, not_null=not_null,
        order=sql.SQL(", ").join(sql.Literal(i) for i in range(1, len(key) + 1)),
    )
    # Triggers record TG_TABLE_NAME (unqualified); some logs record schema.table.
    names = list(dict.fromkeys([table.name, f"{table.schema}.{table.name}", str(table)]))
    rows = live_conn.execute(query, {"names": names, "since": since, "until": until}).fetchall()
    return [tuple(row) for row in rows]


def _stage_copy_keys(
    live_conn: Connection[Any], copy_conn: Connection[Any], shape: TableShape
) -> TableRef:
    """Every key of the copy's table, streamed into a live temp table (analyzed)."""
    temp = create_temp_like(live_conn, shape.table, shape.key, "copykeys")
    query = sql.SQL("SELECT {key} FROM {table} AS {t}").format(
        key=shape.key_idents(ALIAS), table=shape.table.ident, t=ALIAS
    )
    copy_rows(copy_conn, live_conn, query, None, temp, shape.key, fmt=shape.key_format)
    live_conn.execute(sql.SQL("ANALYZE {}").format(temp.ident))
    return temp


def missing_keys(
    live_conn: Connection[Any], copy_conn: Connection[Any], table: TableRef
) -> list[tuple[Any, ...]]:
    """Keys of ``table`` that are in the copy but not live: the anti-diff.

    The copy's key set is streamed into a live temp table and anti-joined with the live table
    in one statement. This is every deletion since the restore point, intended or not; prefer
    :func:`deleted_keys_from_audit` when an audit log can narrow it down.

    Returns:
        The keys, sorted.

    Raises:
        ConfigError: no primary key, or the table differs between the two sides.
    """
    shape = resolve_shape(live_conn, copy_conn, table)
    with live_conn.transaction():
        staged = _stage_copy_keys(live_conn, copy_conn, shape)
        order = sql.SQL(", ").join(sql.Literal(i) for i in range(1, len(shape.key) + 1))
        rows = live_conn.execute(
            sql.SQL("{} ORDER BY {}").format(missing_keys_query(shape, staged), order)
        ).fetchall()
        drop_temp(live_conn, staged)
    return [tuple(row) for row in rows]


# -- helpers shared by both recoveries -----------------------------------------------------------


def _normalise_keys(keys: Sequence[Any], key: tuple[str, ...], table: TableRef
                    ) -> list[tuple[Any, ...]]:
    result: list[tuple[Any, ...]] = []
    for k in keys:
        if isinstance(k, tuple | list):
            value = tuple(k)
        elif len(key) == 1:
            value = (k,)  # a bare scalar for a one-column key
        else:
            raise ConfigError(f"key {k!r} of {table}: expected a tuple of ({', '.join(key)})")
        if len(value) != len(key):
            raise ConfigError(
                f"key {jsonable_key(value)} of {table} has {len(value)} value(s); the primary "
                f"key is ({', '.join(key)})"
            )
        if any(v is None for v in value):
            raise ConfigError(f"key {jsonable_key(value)} of {table} contains NULL")
        result.append(value)
    return result


def _write_keys(conn: Connection[Any], temp: TableRef, key: Sequence[str],
                keys: Sequence[tuple[Any, ...]]) -> int:
    """Send the key list once, with COPY (the server casts each value to the key's type)."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(temp.ident, idents(key))
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for k in keys:
            copy.write_row(k)
    return len(keys)


_TABLE_FACTS = sql.SQL(
    """
    SELECT w.nspname, w.relname, c.oid,
           array(SELECT a.attname FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                   AND a.attidentity = 'a'
                 ORDER BY a.attnum),
           array(SELECT ARRAY[a.attname::text, s.oid::text, sn.nspname::text, s.relname::text]
                 FROM pg_depend d
                 JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                 JOIN pg_namespace sn ON sn.oid = s.relnamespace
                 JOIN pg_sequence q ON q.seqrelid = s.oid AND q.seqincrement > 0
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid
                 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                   AND d.refobjid = c.oid AND d.deptype IN ('a', 'i')
                 ORDER BY a.attnum)
    FROM unnest(%s::text[], %s::text[]) AS w(nspname, relname)
    LEFT JOIN pg_namespace n ON n.nspname = w.nspname
    LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.relname
    """
)


@dataclass(frozen=True, slots=True)
class _Sequence:
    column: str
    oid: int
    ref: TableRef  # the sequence, named like a table so it composes the same way


@dataclass(frozen=True, slots=True)
class _Facts:
    identity_always: frozenset[str]  # GENERATED ALWAYS AS IDENTITY columns
    sequences: tuple[_Sequence, ...]  # owned by a column (serial / identity), ascending


def _table_facts(conn: Connection[Any], tables: Sequence[TableRef]) -> dict[TableRef, _Facts]:
    # Identity and owned sequences are not in catalog.Column; one catalog query for all tables.
    rows = conn.execute(
        _TABLE_FACTS, [[t.schema for t in tables], [t.name for t in tables]]
    ).fetchall()
    facts: dict[TableRef, _Facts] = {}
    for schema, name, oid, always, owned in rows:
        if oid is None:
            raise ConfigError(f"table not found: {TableRef(schema, name)}")
        sequences = tuple(
            _Sequence(column, int(seq_oid), TableRef(seq_schema, seq_name))
            for column, seq_oid, seq_schema, seq_name in (owned or [])
        )
        facts[TableRef(schema, name)] = _Facts(frozenset(always or ()), sequences)
    return facts


def _advance_sequences(
    conn: Connection[Any], tables: Sequence[TableRef], facts: dict[TableRef, _Facts], *,
    dry_run: bool,
) -> list[str]:
    """Move each sequence the tables own past the column's maximum when it is behind, so the
    application's next insert does not collide with a restored id; one statement for all.
    Returns the sequences moved (that would be moved, when ``dry_run``)."""
    parts: list[sql.Composable] = []
    params: list[Any] = []
    for table in tables:
        for seq in facts[table].sequences:
            action = sql.SQL("NULL") if dry_run else sql.SQL("setval(%s::oid::regclass, m.top)")
            # Not called yet: nextval returns last_value itself; called: last_value + increment.
            parts.append(sql.SQL(
                "SELECT %s::text, {action} FROM (SELECT max({col})::bigint AS top FROM {table})"
                " AS m, {sequence} AS s "
                "WHERE m.top > s.last_value OR (NOT s.is_called AND m.top >= s.last_value)"
            ).format(action=action, col=sql.Identifier(seq.column), table=table.ident,
                     sequence=seq.ref.ident))
            params.append(str(seq.ref))
            if not dry_run:
                params.append(seq.oid)
    if not parts:
        return []
    rows = conn.execute(sql.SQL(" UNION ALL ").join(parts), params).fetchall()
    return [name for name, _ in rows]


def _insert_statement(table: TableRef, shape: TableShape, stage: TableRef, facts: _Facts
                      ) -> sql.Composed:
    # ON CONFLICT on the primary key only: "already there" is skipped; any other unique conflict
    # (a value re-used by a row written since) fails loudly instead of dropping the row.
    always = facts.identity_always.intersection(shape.columns)
    overriding = sql.SQL("OVERRIDING SYSTEM VALUE ") if always else sql.SQL("")
    return sql.SQL(
        "INSERT INTO {table} ({cols}) {overriding}SELECT {cols} FROM {stage} "
        "ON CONFLICT ({key}) DO NOTHING"
    ).format(table=table.ident, cols=shape.column_idents(), overriding=overriding,
             stage=stage.ident, key=shape.key_idents())


@contextmanager
def _translated(operation: str, dry_run: bool) -> Iterator[None]:
    try:
        yield
    except psycopg.IntegrityError as exc:
        diag = exc.diag
        where = f" on {diag.schema_name}.{diag.table_name}" if diag.table_name else ""
        constraint = f" (constraint {diag.constraint_name})" if diag.constraint_name else ""
        detail = f": {diag.message_detail}" if diag.message_detail else ""
        raise SafetyError(
            f"{'dry run of ' if dry_run else ''}{operation} refused{where}{constraint}: "
            f"{diag.message_primary}{detail}. A row written since the restore point conflicts "
            "with a row being restored; everything was rolled back, nothing was written. "
            "Resolve the conflicting row (or leave its key out) and run again."
        ) from exc
    except psycopg.Error as exc:
        message = exc.diag.message_primary or str(exc)
        raise PostgresError(f"{operation} failed and was rolled back: {message}") from exc


def _cascade_fks(graph: FkGraph, child: TableRef, parents: Sequence[TableRef]) -> list[ForeignKey]:
    return [fk for fk in graph.foreign_keys
            if fk.child == child and fk.parent in parents and fk.on_delete == "cascade"]


def _references(fk: ForeignKey, parent_rows: TableRef) -> sql.Composed:
    """``EXISTS (SELECT FROM parent_rows p WHERE p.pcol = t.ccol ...)``."""
    p = sql.Identifier("p")
    match = sql.SQL(" AND ").join(
        sql.SQL("{p}.{pc} = {t}.{cc}").format(p=p, pc=sql.Identifier(pc), t=ALIAS,
                                              cc=sql.Identifier(cc))
        for pc, cc in zip(fk.parent_columns, fk.child_columns, strict=True)
    )
    return sql.SQL("EXISTS (SELECT FROM {rows} AS {p} WHERE {match})").format(
        rows=parent_rows.ident, p=p, match=match
    )


def _select_on_copy(
    copy_conn: Connection[Any],
    graph: FkGraph,
    tables: Sequence[TableRef],
    shapes: dict[TableRef, TableShape],
    root: TableRef,
    root_keys: TableRef,
    *,
    include_cascade: bool,
) -> dict[TableRef, TableRef]:
    """On the copy: the root rows with the given keys, then, table by table (parents first),
    the rows an ON DELETE CASCADE from an already-selected row reaches. Each set goes into a
    copy-side temp table; self-referencing cascades are followed until nothing new is found."""
    selected: dict[TableRef, TableRef] = {}
    k, x = sql.Identifier("k"), sql.Identifier("x")
    for table in tables:
        shape = shapes[table]
        rows = create_temp_like(copy_conn, table, (), "rows", extra=sql.SQL("{}.*").format(ALIAS))
        insert = sql.SQL("INSERT INTO {rows} SELECT {t}.* FROM {table} AS {t} WHERE ").format(
            rows=rows.ident, t=ALIAS, table=table.ident
        )
        not_yet = sql.SQL(" AND NOT EXISTS (SELECT FROM {rows} AS {x} WHERE {m})").format(
            rows=rows.ident, x=x, m=key_match(shape.key, x, ALIAS)
        )
        if table == root:
            copy_conn.execute(insert + sql.SQL("EXISTS (SELECT FROM {keys} AS {k} WHERE {m})")
                              .format(keys=root_keys.ident, k=k, m=key_match(shape.key, k, ALIAS)))
        else:
            # Parents come first in ``tables``, so every cascading parent is selected already.
            # One statement per foreign key (not one OR of them) so each can use its index.
            for fk in _cascade_fks(graph, table, [t for t in selected if t != table]):
                copy_conn.execute(insert + _references(fk, selected[fk.parent]) + not_yet)
        if include_cascade:
            for fk in _cascade_fks(graph, table, [table]):
                step = insert + _references(fk, rows) + not_yet
                # One statement per level of the hierarchy, not per row.
                while copy_conn.execute(step).rowcount > 0:
                    pass
        copy_conn.execute(sql.SQL("ANALYZE {}").format(rows.ident))
        selected[table] = rows
    return selected


def _stage_rows(
    copy_conn: Connection[Any], live_conn: Connection[Any], shape: TableShape,
    source: sql.Composable, *, analyze: bool,
) -> tuple[TableRef, int]:
    """Stream ``SELECT columns FROM source`` on the copy into a new live temp table; ``analyze``
    it when it will be joined (an INSERT ... SELECT reading it whole needs no statistics)."""
    stage = create_temp_like(live_conn, shape.table, shape.columns, "stage")
    query = sql.SQL("SELECT {cols} FROM {source}").format(
        cols=shape.column_idents(ALIAS), source=source
    )
    n = copy_rows(copy_conn, live_conn, query, None, stage, shape.columns, fmt=shape.row_format)
    if analyze:
        live_conn.execute(sql.SQL("ANALYZE {}").format(stage.ident))
    return stage, n


# -- scenario 3 ----------------------------------------------------------------------------------


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

    ``ON DELETE SET NULL`` children are not part of it: their rows survived with the reference
    cleared, and :func:`repair_rows` is the tool that sets it back. A child row that the
    application deleted on purpose before the parent was deleted also comes back when it was
    still in the copy; pass ``include_cascade=False`` and recover tables one by one to avoid that.

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
    plan = RecoveryPlan(
        operation="recover_deleted_rows",
        tables=tuple(tables),
        root=root,
        key_source="anti-diff" if given is None else "given",
        keys_given=None if given is None else len(given),
        include_cascade=include_cascade,
        insert_missing=True,
        update_changed=False,
        delete_extra=False,
    )
    log.info("recovering deleted rows of %s (%s) into %s", root, plan.key_source,
             ", ".join(map(str, tables)))

    outcomes: list[TableOutcome] = []
    with _translated("recovery of deleted rows", dry_run), \
            live_conn.transaction(force_rollback=dry_run), \
            copy_conn.transaction(force_rollback=True):
        # The scratch copy's temp tables vanish with its rolled-back transaction.
        live_temps: list[TableRef] = []
        with pinned_both(live_conn, copy_conn):  # text COPY must print and parse alike
            copy_keys = create_temp_like(copy_conn, root, root_shape.key, "keys")
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
            selected = _select_on_copy(copy_conn, graph, tables, shapes, root, copy_keys,
                                       include_cascade=include_cascade)
            k = sql.Identifier("k")
            not_found = copy_conn.execute(
                sql.SQL(
                    "SELECT count(*) FROM (SELECT DISTINCT {key} FROM {keys}) AS {k} "
                    "WHERE NOT EXISTS (SELECT FROM {rows} AS {t} WHERE {m})"
                ).format(key=root_shape.key_idents(), keys=copy_keys.ident, k=k,
                         rows=selected[root].ident, t=ALIAS, m=key_match(root_shape.key, k, ALIAS))
            ).fetchone()
            keys_not_in_copy = int(not_found[0]) if not_found else 0
            staged: dict[TableRef, tuple[TableRef, int]] = {}
            for table in tables:
                source = sql.SQL("{} AS {}").format(selected[table].ident, ALIAS)
                staged[table] = _stage_rows(copy_conn, live_conn, shapes[table], source,
                                             analyze=False)
                live_temps.append(staged[table][0])

        # Apply: parents first, so every child's parent is back before the child.
        for table in tables:
            stage, n = staged[table]
            inserted = live_conn.execute(
                _insert_statement(table, shapes[table], stage, facts[table])
            ).rowcount
            outcomes.append(TableOutcome(table, shapes[table].key, staged=n, inserted=inserted,
                                         skipped_existing=n - inserted))
        moved = _advance_sequences(live_conn, [o.table for o in outcomes if o.inserted], facts,
                                   dry_run=dry_run)
        drop_temp(live_conn, *live_temps)

    if keys_not_in_copy:
        log.warning("%d of %d %s key(s) are not in the copy (written after the restore point?)",
                    keys_not_in_copy, requested, root)
    result = RecoveryResult(
        plan=plan, dry_run=dry_run, tables=tuple(outcomes), keys_requested=requested,
        keys_not_in_copy=keys_not_in_copy, sequences_advanced=tuple(moved),
        elapsed_seconds=time.monotonic() - started,
    )
    log.info("%s%s: %d rows inserted, %d already present",
             "dry run: " if dry_run else "", plan.operation, result.inserted,
             result.skipped_existing)
    return result


# -- scenario 2 ----------------------------------------------------------------------------------


def repair_rows(
    live_conn: Connection[Any],
    copy_conn: Connection[Any],
    tables: Sequence[TableRef],
    *,
    update_changed: bool = True,
    insert_missing: bool = True,
    delete_extra: bool = False,
    dry_run: bool = False,
) -> RecoveryResult:
    """Repair corrupted tables from a restored copy, row by row but set-based.

    For each table the copy's row hashes are compared with live's (see :mod:`restorekit.diff`);
    only the missing and changed rows are then fetched from the copy. In one live transaction:
    rows written since the restore point (``extra``) are deleted only with ``delete_extra``
    (children first), then, parents first, missing rows are inserted (``ON CONFLICT (primary
    key) DO NOTHING``) and changed rows rewritten (``UPDATE ... FROM`` the staged rows where the
    key matches and the row differs).

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
        dry_run: do everything, report exact counts, roll it all back.

    Raises:
        ConfigError: a table without a primary key, tables that differ between the two sides,
            or a foreign-key cycle among ``tables``. Raised before anything is written.
        SafetyError: a repaired row conflicts with another live row on a unique or foreign key;
            nothing was written.
        PostgresError: a server failed; nothing was written.
    """
    started = time.monotonic()
    graph = FkGraph(catalog.foreign_keys(live_conn))
    order = graph.topological_order(dict.fromkeys(tables))
    shapes = resolve_shapes(live_conn, copy_conn, order)
    facts = _table_facts(live_conn, order)
    for table in order:
        left_out = sorted({fk.child for fk in graph.foreign_keys if fk.parent == table
                           and fk.on_delete == "cascade" and fk.child not in shapes})
        if left_out and insert_missing:
            log.warning("%s cascades to %s, which is not being repaired", table,
                        ", ".join(map(str, left_out)))
    plan = RecoveryPlan(
        operation="repair_rows", tables=tuple(order), include_cascade=False,
        insert_missing=insert_missing, update_changed=update_changed, delete_extra=delete_extra,
    )

    outcomes: list[TableOutcome] = []
    with _translated("repair", dry_run), live_conn.transaction(force_rollback=dry_run), \
            copy_conn.transaction(force_rollback=True):
        live_temps: list[TableRef] = []
        found: dict[TableRef, tuple[TableRef, TableRef, int, int, int, int]] = {}
        with pinned_both(live_conn, copy_conn):
            for table in order:
                shape = shapes[table]
                hashes = stage_copy_hashes(live_conn, copy_conn, shape)
                live_temps.append(hashes)
                missing, extra, changed = count_differences(live_conn, shape, hashes)
                wanted = []
                if insert_missing and missing:
                    wanted.append(missing_keys_query(shape, hashes))
                if update_changed and changed:
                    wanted.append(changed_keys_query(shape, hashes))
                if wanted:
                    # The keys to fetch go to the copy once; the copy returns just those rows.
                    copy_keys = create_temp_like(copy_conn, table, shape.key, "keys")
                    copy_rows(live_conn, copy_conn, sql.SQL(" UNION ALL ").join(wanted), None,
                              copy_keys, shape.key, fmt=shape.key_format)
                    copy_conn.execute(sql.SQL("ANALYZE {}").format(copy_keys.ident))
                    k = sql.Identifier("k")
                    source = sql.SQL(
                        "{table} AS {t} WHERE EXISTS (SELECT FROM {keys} AS {k} WHERE {m})"
                    ).format(table=table.ident, t=ALIAS, keys=copy_keys.ident, k=k,
                             m=key_match(shape.key, k, ALIAS))
                    stage, n = _stage_rows(copy_conn, live_conn, shape, source,
                                           analyze=update_changed and changed > 0)
                else:
                    stage, n = create_temp_like(live_conn, table, shape.columns, "stage"), 0
                live_temps.append(stage)
                found[table] = (hashes, stage, n, missing, extra, changed)

        deleted: dict[TableRef, int] = {}
        if delete_extra:
            s = sql.Identifier("s")
            for table in reversed(order):  # children first
                hashes = found[table][0]
                deleted[table] = live_conn.execute(
                    sql.SQL(
                        "DELETE FROM {table} AS {t} "
                        "WHERE NOT EXISTS (SELECT FROM {hashes} AS {s} WHERE {m})"
                    ).format(table=table.ident, t=ALIAS, hashes=hashes.ident, s=s,
                             m=key_match(shapes[table].key, s, ALIAS))
                ).rowcount

        for table in order:
            shape = shapes[table]
            _, stage, n, missing, extra, changed = found[table]
            inserted = updated = 0
            if insert_missing and missing:
                inserted = live_conn.execute(
                    _insert_statement(table, shape, stage, facts[table])
                ).rowcount
            # Only DEFAULT may be written into GENERATED ALWAYS identity columns.
            settable = [c for c in shape.columns
                        if c not in shape.key and c not in facts[table].identity_always]
            if update_changed and changed and settable:
                updated = live_conn.execute(
                    _update_statement(table, shape, stage, settable)
                ).rowcount
            outcomes.append(TableOutcome(
                table, shape.key, staged=n, inserted=inserted, updated=updated,
                deleted=deleted.get(table, 0),
                skipped_existing=max(missing - inserted, 0) if insert_missing else 0,
                missing=missing, changed=changed, extra=extra,
                extra_kept=0 if delete_extra else extra,
            ))
        moved = _advance_sequences(live_conn, [o.table for o in outcomes if o.inserted], facts,
                                   dry_run=dry_run)
        drop_temp(live_conn, *live_temps)

    result = RecoveryResult(plan=plan, dry_run=dry_run, tables=tuple(outcomes),
                            sequences_advanced=tuple(moved),
                            elapsed_seconds=time.monotonic() - started)
    log.info("%srepair: %d inserted, %d updated, %d deleted, %d extra rows kept",
             "dry run: " if dry_run else "", result.inserted, result.updated, result.deleted,
             sum(t.extra_kept for t in outcomes))
    return result


def _update_statement(table: TableRef, shape: TableShape, stage: TableRef,
                      targets: Sequence[str]) -> sql.Composed:
    s = sql.Identifier("s")
    assignments = sql.SQL(", ").join(
        sql.SQL("{c} = {s}.{c}").format(c=sql.Identifier(c), s=s) for c in targets
    )
    # Compared as row text: works for every type (json, point, xml have no equality operator)
    # and both rows are printed by the same session, so settings cannot differ.
    return sql.SQL(
        "UPDATE {table} AS {t} SET {assignments} FROM {stage} AS {s} "
        "WHERE {m} AND ROW({tcols})::text IS DISTINCT FROM ROW({scols})::text"
    ).format(table=table.ident, t=ALIAS, assignments=assignments, stage=stage.ident, s=s,
             m=key_match(shape.key, s, ALIAS), tcols=shape.column_idents(ALIAS),
             scols=shape.column_idents(s))

"""Selective row recovery from a restored copy: runbook scenarios 2 and 3, done set-based.

Scenario 3 ("accidental data deletion"): :func:`recover_deleted_rows` puts back the rows of a
table that were deleted, together with every row an ``ON DELETE CASCADE`` took with them
(deleting a user takes its clients and appointments), and nothing else. Scenario 2 ("partial data
corruption"): :func:`repair_rows` re-inserts missing rows and rewrites changed ones, keeping the
rows written after the restore point unless asked to delete them. It can be narrowed to the
corrupted columns (``columns``) and told to leave alone every row written after the corruption
(``keep_rows_written_after``), and it never writes a row set other than the one
:func:`plan_repair` showed for approval (``approved``).

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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
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
    row_hash,
    resolve_shapes,
    stage_copy_hashes,
)
from restorekit.errors import ConfigError, PostgresError, SafetyError
from restorekit.models import PointKind, RestorePoint
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


def _insert_statement(table: TableRef, shape: TableShape, stage: TableRef, facts: _Facts,
                      where: sql.Composable | None = None) -> sql.Composed:
    # ON CONFLICT on the primary key only: "already there" is skipped; any other unique conflict
    # (a value re-used by a row written since) fails loudly instead of dropping the row.
    always = facts.identity_always.intersection(shape.columns)
    overriding = sql.SQL("OVERRIDING SYSTEM VALUE ") if always else sql.SQL("")
    return sql.SQL(
        "INSERT INTO {table} ({cols}) {overriding}SELECT {cols} FROM {stage}{where} "
        "ON CONFLICT ({key}) DO NOTHING"
    ).format(table=table.ident, cols=shape.column_idents(), overriding=overriding,
             stage=stage.ident, key=shape.key_idents(),
             where=sql.SQL("") if where is None else sql.SQL(" AS s WHERE {}").format(where))


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


def require_commit_timestamps(conn: Connection[Any]) -> None:
    """Refuse (before any side effect) when the server does not record commit times.

    Raises:
        ConfigError: ``track_commit_timestamp`` is off.
    """
    row = conn.execute("SELECT current_setting('track_commit_timestamp')::bool").fetchone()
    if not (row and row[0]):
        raise ConfigError(
            "keep_rows_written_after needs track_commit_timestamp = on on the production server, "
            "and it is off: PostgreSQL records no commit times, so rows written after the "
            "corruption cannot be told from it. Turn it on (takes a restart; only later commits "
            "get a time) or leave keep_rows_written_after empty and narrow the repair with columns."
        )


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


def _newer(after: datetime | None, alias: sql.Identifier = ALIAS) -> sql.Composable:
    """True for a row whose current version committed after ``after``; a frozen or untracked
    xmin has no commit time and counts as old."""
    if after is None:
        return sql.SQL("false")
    return sql.SQL("coalesce(pg_xact_commit_timestamp({}.xmin) > {}, false)").format(
        alias, sql.Literal(after))


def _deleted_after(live_conn: Connection[Any], table: TableRef, key: tuple[str, ...],
                   after: datetime) -> TableRef | None:
    """A live temp table of the keys whose deletion the audit log (``audit_log`` next to the
    table, as :func:`deleted_keys_from_audit` reads it) records in a transaction committed
    after ``after``; None when there is no usable audit log (then such deletions cannot be told
    from corruption)."""
    audit = TableRef(table.schema, "audit_log")
    if audit not in catalog.list_tables(live_conn, [audit.schema]):
        log.info("no %s: rows of %s deleted after %s cannot be told from corruption", audit,
                 table, after.isoformat())
        return None
    if not {c.name for c in catalog.columns(live_conn, audit)}.issuperset(_AUDIT_COLUMNS):
        log.warning("%s lacks %s; deletions of %s are not looked up", audit,
                    ", ".join(_AUDIT_COLUMNS), table)
        return None
    temp = create_temp_like(live_conn, table, key, "deleted")
    r, a = sql.Identifier("r"), sql.Identifier("a")
    not_null = sql.SQL(" AND ").join(
        sql.SQL("{}.{} IS NOT NULL").format(r, sql.Identifier(c)) for c in key)
    live_conn.execute(sql.SQL(
        "INSERT INTO {temp} SELECT DISTINCT {rkey} FROM {audit} AS {a} "
        "CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, {a}.old_row::jsonb) AS {r} "
        "WHERE upper({a}.action) = 'DELETE' AND {a}.table_name = ANY(%s::text[]) "
        "AND {newer} AND {not_null}"
    ).format(temp=temp.ident, rkey=idents(key, r), audit=audit.ident, a=a, table=table.ident,
             r=r, newer=_newer(after, a), not_null=not_null),
        [list(dict.fromkeys([table.name, f"{table.schema}.{table.name}", str(table)]))])
    live_conn.execute(sql.SQL("ANALYZE {}").format(temp.ident))
    return temp


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
    *, insert_missing: bool,
) -> tuple[FkGraph, list[TableRef], dict[TableRef, _Repair], dict[TableRef, _Facts]]:
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
    return graph, order, shapes, facts


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
    _, order, shapes, _ = _prepare_repair(live_conn, copy_conn, tables, columns,
                                          keep_rows_written_after, insert_missing=insert_missing)
    plan = RecoveryPlan(
        operation="repair_rows", tables=tuple(order), include_cascade=False,
        insert_missing=insert_missing, update_changed=update_changed, delete_extra=delete_extra,
        columns=_column_names(columns), keep_rows_written_after=keep_rows_written_after,
    )
    outcomes = []
    with _translated("repair plan", True), live_conn.transaction(force_rollback=True), \
            copy_conn.transaction(force_rollback=True), pinned_both(live_conn, copy_conn):
        for table in order:
            planned, _ = _plan_table(
                live_conn, copy_conn, table, shapes[table], insert_missing=insert_missing,
                update_changed=update_changed, delete_extra=delete_extra,
                after=keep_rows_written_after)
            outcomes.append(_outcome(
                table, shapes[table].full.key, planned, after=keep_rows_written_after,
                insert_missing=insert_missing, update_changed=update_changed,
                delete_extra=delete_extra))
    return RecoveryResult(plan=plan, dry_run=True, tables=tuple(outcomes),
                          elapsed_seconds=time.monotonic() - started)


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


def _kind(repair: _Repair) -> sql.Identifier:
    return sql.Identifier(repair.compare.hash_column + "_kind")


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


def parse_columns(specs: Sequence[str], tables: Sequence[TableRef]
                  ) -> dict[TableRef, list[str]]:
    """Read ``column``, ``table.column`` or ``schema.table.column`` (quoted parts as
    PostgreSQL reads them) into columns per table; a bare column needs exactly one table.

    Raises:
        ConfigError: a malformed spec, or a bare column with no or several tables.
    """
    result: dict[TableRef, list[str]] = {}
    for spec in specs:
        parts = catalog.split_qualified(spec.strip()) if spec.strip() else []
        if len(parts) == 1:
            if len(tables) != 1:
                raise ConfigError(
                    f"column {spec!r} names no table; write it as table.column (a bare column "
                    "is only accepted when exactly one table is repaired)")
            table, column = tables[0], parts[0]
        elif len(parts) in (2, 3):
            table = TableRef(parts[0], parts[1]) if len(parts) == 3 else TableRef("public",
                                                                                  parts[0])
            column = parts[-1]
        else:
            raise ConfigError(f"column {spec!r}: expected column, table.column or "
                              "schema.table.column")
        result.setdefault(table, [])
        if column not in result[table]:
            result[table].append(column)
    return result


def check_keep_after(point: RestorePoint, keep_rows_written_after: datetime | None, *,
                     now: datetime | None = None) -> None:
    """Refuse a ``keep_rows_written_after`` that cannot be the end of a corruption which began
    after ``point``: at or before a time restore point every row written since would be left
    alone (nothing repaired), and a future time leaves nothing alone (a typo, most likely).
    Other restore point kinds cannot be compared before the restore; only the future is
    checked for them.

    Raises:
        ConfigError: saying which bound is broken and what to give instead.
    """
    keep = keep_rows_written_after
    _aware("keep_rows_written_after", keep)
    if keep is None:
        return
    now = now or datetime.now(UTC)
    if keep > now:
        raise ConfigError(
            f"keep_rows_written_after={keep.isoformat()} is in the future (now "
            f"{now.astimezone(UTC).isoformat(timespec='seconds')}); give the time the "
            "corruption ended")
    if point.kind is PointKind.TIME and point.time is not None and keep <= point.time:
        raise ConfigError(
            f"keep_rows_written_after={keep.isoformat()} is not after the restore point "
            f"{point.time.isoformat()}: every row written since the restore point would be left "
            "alone and nothing repaired. Give the time the corruption ENDED (after the restore "
            "point), or leave it empty")


def check_repair_options(
    live_conn: Connection[Any], tables: Sequence[TableRef],
    columns: Mapping[TableRef, Sequence[str]], keep_rows_written_after: datetime | None,
) -> None:
    """Check a repair's options against the live database before anything happens: the
    columns exist and can be written, their tables are being repaired, the time has a
    timezone and the server records commit times when it is given.

    Raises:
        ConfigError: naming the table, column or setting.
    """
    _aware("keep_rows_written_after", keep_rows_written_after)
    outside = [str(t) for t in columns if t not in tables]
    if outside:
        raise ConfigError(f"columns given for table(s) not being repaired: {', '.join(outside)} "
                          f"(repaired: {', '.join(map(str, tables)) or 'none'})")
    if columns:
        known = catalog.load_columns(live_conn, list(columns))
        keys = catalog.load_primary_keys(live_conn, list(columns))
        for table, wanted in columns.items():
            writable = {c.name for c in known[table] if not c.generated}
            bad = [c for c in wanted if c not in writable]
            if bad:
                raise ConfigError(
                    f"table {table} has no column(s) {', '.join(bad)} that can be repaired "
                    f"(unknown or generated); its columns: "
                    f"{', '.join(c.name for c in known[table])}")
            if all(c in keys[table] for c in wanted):
                raise ConfigError(f"columns {', '.join(wanted)} of {table} are its primary key, "
                                  "which a repair does not rewrite; name the corrupted columns")
    if keep_rows_written_after is not None:
        require_commit_timestamps(live_conn)

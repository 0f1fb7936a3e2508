"""Which rows differ between a live database and a restored copy of it.

The two databases live in different clusters (production and a restored scratch copy), so no
query can join them. Each row is classified by primary key:

* **missing**: the key is in the copy but not live (deleted since the restore point);
* **extra**: the key is live but not in the copy (written since the restore point);
* **changed**: the key is on both sides and the row hashes differ.

Two methods give exactly the same answer:

* ``full``: the copy's ``(primary key, md5 of the row)`` pairs are streamed with COPY into a TEMP
  table on the live side, and one FULL JOIN there counts the three kinds. Every key crosses the
  wire; best for small tables and for tables that differ almost everywhere.
* ``range``: the key space is cut into ranges at keys sampled on the live side
  (``TABLESAMPLE BERNOULLI``); both servers compute, in one statement each and at the same time
  (two threads, one connection each), ``count(*)`` and the sum of a 64-bit hash of every row
  (key included) per range. Only ranges whose pair differs are looked at again: split at live
  keys into smaller ranges (a k-way bisection) and re-summed, until they hold at most
  :attr:`RangeTuning.leaf_rows` rows. Then only those ranges' ``(key, md5)`` pairs are streamed
  to the live side and classified with the same FULL JOIN as ``full``. Mostly-equal tables
  therefore cost about one index-ordered pass over each side, run in parallel.

Each range is read through the primary-key index (``key >= lo AND key < hi`` inside a LATERAL
join over the list of ranges), so both sides must order keys the same way: ``auto`` (the
default) uses ``full`` when a key column's collation or type differs between the sides, and for
tables below :attr:`RangeTuning.min_rows` rows.

Only keys, counts and hashes cross the wire; the live database gets no write outside its own
session's temp tables and the copy is only read. Row text depends on session settings
(TimeZone, DateStyle, ...), so both sessions are pinned to
:data:`restorekit.pg.checksum.PINNED_SETTINGS` while hashing.

A table without a primary key cannot be diffed row by row (two identical rows cannot be told
apart), and is refused with a :class:`~restorekit.errors.ConfigError`.

The building blocks here (:func:`resolve_shape`, :func:`stage_copy_hashes`, ...) are shared with
:mod:`restorekit.recovery`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from psycopg import Connection, sql
from psycopg.pq import TransactionStatus

from restorekit.errors import ConfigError
from restorekit.pg import catalog
from restorekit.pg.catalog import TableRef
from restorekit.pg.checksum import pinned_output_settings
from restorekit.pg.cluster import connect
from restorekit.pg.copy import CopyFormat, copy_rows

log = logging.getLogger(__name__)

#: How many keys a :class:`TableDiff` lists per category.
SAMPLE_SIZE = 10

# The two sides' rows are always read through this alias, so a ``key_filter`` can say ``t.id``.
ALIAS = sql.Identifier("t")


@dataclass(frozen=True, slots=True)
class TableDiff:
    """How one table of the live database differs from the restored copy.

    Keys are tuples in primary-key column order; the samples hold at most
    :data:`SAMPLE_SIZE` keys each, lowest first.
    """

    table: TableRef
    primary_key: tuple[str, ...]
    missing: int
    extra: int
    changed: int
    missing_keys_sample: tuple[tuple[Any, ...], ...] = ()
    changed_keys_sample: tuple[tuple[Any, ...], ...] = ()
    extra_keys_sample: tuple[tuple[Any, ...], ...] = ()

    @property
    def identical(self) -> bool:
        return not (self.missing or self.extra or self.changed)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (key values that JSON has no type for are given as text)."""
        return {
            "table": str(self.table),
            "primary_key": list(self.primary_key),
            "missing": self.missing,
            "extra": self.extra,
            "changed": self.changed,
            "missing_keys_sample": [jsonable_key(k) for k in self.missing_keys_sample],
            "changed_keys_sample": [jsonable_key(k) for k in self.changed_keys_sample],
            "extra_keys_sample": [jsonable_key(k) for k in self.extra_keys_sample],
        }


def jsonable_key(key: Sequence[Any]) -> list[Any]:
    """A key tuple as a JSON-ready list: numbers, text, booleans and None as they are, dates as
    ISO text, bytes as hex, anything else (uuid, decimal, ...) as its text form."""
    out: list[Any] = []
    for value in key:
        if value is None or isinstance(value, bool | int | float | str):
            out.append(value)
        elif isinstance(value, bytes | bytearray | memoryview):
            out.append(bytes(value).hex())
        elif isinstance(value, _dt.date | _dt.time):
            out.append(value.isoformat())
        else:
            out.append(str(value))
    return out


# -- shared building blocks ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableShape:
    """What both sides agree on for one table: its key, the columns compared and copied, and
    the COPY format that is safe for each (binary only where the column types are identical)."""

    table: TableRef
    key: tuple[str, ...]
    columns: tuple[str, ...]
    key_format: CopyFormat
    row_format: CopyFormat
    hash_column: str = "rk_row_md5"

    def key_idents(self, alias: sql.Identifier | None = None) -> sql.Composed:
        return idents(self.key, alias)

    def column_idents(self, alias: sql.Identifier | None = None) -> sql.Composed:
        return idents(self.columns, alias)


def no_primary_key(table: TableRef) -> ConfigError:
    return ConfigError(
        f"table {table} has no primary key; restorekit cannot tell rows apart — add one or "
        "restore the whole table from a snapshot"
    )


def resolve_shape(
    live_conn: Connection[Any],
    copy_conn: Connection[Any],
    table: TableRef,
    columns: Sequence[str] | None = None,
) -> TableShape:
    """Check that ``table`` can be compared row by row and say how.

    Args:
        columns: the columns to compare; default every non-generated column of the live table
            (generated columns are computed from the others and cannot be written).

    Raises:
        ConfigError: the table is missing on a side, has no primary key, has different primary
            keys on the two sides, or a compared column is missing in the copy.
    """
    live_cols = catalog.columns(live_conn, table)
    copy_cols = catalog.columns(copy_conn, table)
    key = catalog.primary_key(live_conn, table)
    if not key:
        raise no_primary_key(table)
    copy_key = catalog.primary_key(copy_conn, table)
    if copy_key != key:
        raise ConfigError(
            f"table {table} has primary key ({', '.join(key)}) live but "
            f"({', '.join(copy_key) or 'none'}) in the copy; rows cannot be matched"
        )
    live_types = {c.name: c.data_type for c in live_cols}
    copy_types = {c.name: c.data_type for c in copy_cols}
    if columns is None:
        cols = tuple(c.name for c in live_cols if not c.generated)
    else:
        cols = tuple(dict.fromkeys(columns))
        if not cols:
            raise ConfigError(f"table {table}: no columns to compare")
        unknown = [c for c in cols if c not in live_types]
        if unknown:
            raise ConfigError(f"live table {table} has no column(s): {', '.join(unknown)}")
    absent = [c for c in cols if c not in copy_types]
    if absent:
        raise ConfigError(
            f"column(s) {', '.join(absent)} of {table} are not in the copy: the schema changed "
            "after the restore point; pass columns= with the columns both sides have"
        )

    def fmt(names: Sequence[str]) -> CopyFormat:
        return "binary" if all(live_types[c] == copy_types[c] for c in names) else "text"

    hash_column = "rk_row_md5"
    while hash_column in key:
        hash_column += "_"
    return TableShape(table, key, cols, fmt(key), fmt(cols), hash_column)


def idents(names: Sequence[str], alias: sql.Identifier | None = None) -> sql.Composed:
    """``a, b`` or ``t.a, t.b``."""
    if alias is None:
        return sql.SQL(", ").join(sql.Identifier(n) for n in names)
    return sql.SQL(", ").join(sql.SQL("{}.{}").format(alias, sql.Identifier(n)) for n in names)


def key_match(names: Sequence[str], left: sql.Identifier, right: sql.Identifier) -> sql.Composed:
    """``l.a = r.a AND l.b = r.b``."""
    return sql.SQL(" AND ").join(
        sql.SQL("{l}.{c} = {r}.{c}").format(l=left, r=right, c=sql.Identifier(n)) for n in names
    )


def row_hash(columns: Sequence[str], alias: sql.Identifier = ALIAS) -> sql.Composed:
    """The 16-byte md5 of a row's text form, as a uuid (fixed width, fast to compare)."""
    return sql.SQL("md5(ROW({})::text)::uuid").format(idents(columns, alias))


def temp_table(purpose: str) -> TableRef:
    """A fresh name in this session's temp schema (``pg_temp`` resolves to it)."""
    return TableRef("pg_temp", f"rk_{purpose}_{uuid.uuid4().hex[:12]}")


def create_temp_like(
    conn: Connection[Any],
    source: TableRef,
    columns: Sequence[str],
    purpose: str,
    *,
    extra: sql.Composable | None = None,
) -> TableRef:
    """A temp table with the types of ``columns`` of ``source`` (and ``extra`` select items),
    empty. Types come from the table itself, never from type names built as text."""
    temp = temp_table(purpose)
    parts: list[sql.Composable] = [idents(columns, ALIAS)] if columns else []
    if extra is not None:
        parts.append(extra)
    if not parts:
        raise ConfigError(f"temp table for {source}: no columns")
    items = sql.SQL(", ").join(parts)
    create = sql.SQL("CREATE TEMP TABLE {temp} AS SELECT {items} FROM {source} AS {t} WITH NO DATA")
    conn.execute(
        create.format(temp=sql.Identifier(temp.name), items=items, source=source.ident, t=ALIAS)
    )
    return temp


def drop_temp(conn: Connection[Any], *temps: TableRef) -> None:
    if temps:
        conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}").format(sql.SQL(", ").join(t.ident for t in temps))
        )


def where_clause(condition: sql.Composable | None) -> sql.Composable:
    return sql.SQL("") if condition is None else sql.SQL(" WHERE ({})").format(condition)


def stage_copy_hashes(
    live_conn: Connection[Any],
    copy_conn: Connection[Any],
    shape: TableShape,
    key_filter: sql.Composable | None = None,
) -> TableRef:
    """Stream the copy's ``(key..., row md5)`` pairs into a new live temp table, analyzed.

    Call it with both sessions' output settings pinned (:func:`pinned_both`).

    Returns:
        The temp table on ``live_conn``: the key columns plus ``shape.hash_column`` (uuid).
    """
    temp = create_temp_like(
        live_conn, shape.table, shape.key, "hashes",
        extra=sql.SQL("NULL::uuid AS {}").format(sql.Identifier(shape.hash_column)),
    )
    query = sql.SQL("SELECT {key}, {hash} FROM {table} AS {t}{where}").format(
        key=shape.key_idents(ALIAS), hash=row_hash(shape.columns), table=shape.table.ident,
        t=ALIAS, where=where_clause(key_filter),
    )
    # The hash column is uuid on both sides, so the key types alone decide the format.
    copy_rows(copy_conn, live_conn, query, None, temp, [*shape.key, shape.hash_column],
              fmt=shape.key_format)
    # Temp tables are never auto-analyzed; without statistics the anti-joins plan badly.
    live_conn.execute(sql.SQL("ANALYZE {}").format(temp.ident))
    return temp


@contextmanager
def pinned_both(*conns: Connection[Any]) -> Iterator[None]:
    """Pin the output settings of every session for the block (row text must match)."""
    with ExitStack() as stack:
        for conn in conns:
            stack.enter_context(pinned_output_settings(conn))
        yield


def count_differences(
    live_conn: Connection[Any],
    shape: TableShape,
    hashes: TableRef,
    key_filter: sql.Composable | None = None,
) -> tuple[int, int, int]:
    """``(missing, extra, changed)`` between the staged copy hashes and the live table, in one
    statement (a full join on the key). Needs pinned settings on ``live_conn``."""
    s, live = sql.Identifier("s"), sql.Identifier("l")
    h = sql.Identifier(shape.hash_column)
    query = sql.SQL(
        """
        SELECT count(*) FILTER (WHERE {live}.{h} IS NULL),
               count(*) FILTER (WHERE {s}.{h} IS NULL),
               count(*) FILTER (WHERE {s}.{h} <> {live}.{h})
        FROM {hashes} AS {s}
        FULL JOIN (SELECT {key}, {hash} AS {h} FROM {table} AS {t}{where}) AS {live}
               ON {match}
        """
    ).format(
        live=live, s=s, h=h, hashes=hashes.ident, key=shape.key_idents(ALIAS),
        hash=row_hash(shape.columns), table=shape.table.ident, t=ALIAS,
        where=where_clause(key_filter), match=key_match(shape.key, s, live),
    )
    row = live_conn.execute(query).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def missing_keys_query(
    shape: TableShape, staged: TableRef, key_filter: sql.Composable | None = None
) -> sql.Composed:
    """``SELECT key...`` of the staged copy keys that the live table lacks (the anti-diff).
    ``staged`` needs the key columns only."""
    s = sql.Identifier("s")
    live_filter = sql.SQL("") if key_filter is None else sql.SQL(" AND ({})").format(key_filter)
    return sql.SQL(
        "SELECT {skey} FROM {hashes} AS {s} "
        "WHERE NOT EXISTS (SELECT FROM {table} AS {t} WHERE {match}{live_filter})"
    ).format(
        skey=shape.key_idents(s), hashes=staged.ident, s=s, table=shape.table.ident, t=ALIAS,
        match=key_match(shape.key, ALIAS, s), live_filter=live_filter,
    )


def changed_keys_query(shape: TableShape, hashes: TableRef) -> sql.Composed:
    """``SELECT key...`` of the rows present on both sides whose hashes differ."""
    s = sql.Identifier("s")
    return sql.SQL(
        "SELECT {skey} FROM {hashes} AS {s} JOIN {table} AS {t} ON {match} "
        "WHERE {s}.{h} <> {hash}"
    ).format(
        skey=shape.key_idents(s), hashes=hashes.ident, s=s, table=shape.table.ident, t=ALIAS,
        match=key_match(shape.key, ALIAS, s), h=sql.Identifier(shape.hash_column),
        hash=row_hash(shape.columns),
    )


def extra_keys_query(
    shape: TableShape, hashes: TableRef, key_filter: sql.Composable | None = None
) -> sql.Composed:
    """``SELECT key...`` of the live rows whose key the copy does not have."""
    s = sql.Identifier("s")
    live_filter = sql.SQL("") if key_filter is None else sql.SQL("({}) AND ").format(key_filter)
    return sql.SQL(
        "SELECT {key} FROM {table} AS {t} "
        "WHERE {live_filter}NOT EXISTS (SELECT FROM {hashes} AS {s} WHERE {match})"
    ).format(
        key=shape.key_idents(ALIAS), table=shape.table.ident, t=ALIAS, live_filter=live_filter,
        hashes=hashes.ident, s=s, match=key_match(shape.key, ALIAS, s),
    )


def _sample(live_conn: Connection[Any], query: sql.Composed, width: int
            ) -> tuple[tuple[Any, ...], ...]:
    order = sql.SQL(", ").join(sql.Literal(i) for i in range(1, width + 1))
    limited = sql.SQL("{} ORDER BY {} LIMIT {}").format(query, order, sql.Literal(SAMPLE_SIZE))
    return tuple(tuple(r) for r in live_conn.execute(limited).fetchall())


# -- the public API ------------------------------------------------------------------------------


def diff_table(
    live_conn: Connection[Any],
    copy_conn: Connection[Any],
    table: TableRef,
    *,
    columns: Sequence[str] | None = None,
    key_filter: sql.Composable | None = None,
) -> TableDiff:
    """Compare one table row by row between the live database and a restored copy.

    Only the live session's temp tables are written; the temp table is dropped again (or rolled
    back with the caller's transaction). Run ``live_conn`` in a REPEATABLE READ transaction when
    the counts must come from one snapshot of a busy database.

    Args:
        live_conn: the production database.
        copy_conn: the restored copy (any cluster); only read.
        table: the table, the same name on both sides.
        columns: the columns to compare; default every non-generated column.
        key_filter: a condition on rows, applied on both sides, written against the alias ``t``
            (e.g. ``sql.SQL("t.{} < {}").format(sql.Identifier("id"), sql.Literal(1000))``);
            only rows that match are compared.

    Returns:
        The counts, plus up to :data:`SAMPLE_SIZE` keys per category.

    Raises:
        ConfigError: no primary key, the table or a column is missing on a side, or the two
            sides' primary keys differ.
        PostgresError: streaming the copy's hashes failed.
    """
    shape = resolve_shape(live_conn, copy_conn, table, columns)
    width = len(shape.key)
    with live_conn.transaction(), pinned_both(live_conn, copy_conn):
        hashes = stage_copy_hashes(live_conn, copy_conn, shape, key_filter)
        missing, extra, changed = count_differences(live_conn, shape, hashes, key_filter)
        result = TableDiff(
            table=table,
            primary_key=shape.key,
            missing=missing,
            extra=extra,
            changed=changed,
            missing_keys_sample=(
                _sample(live_conn, missing_keys_query(shape, hashes, key_filter), width)
                if missing else ()
            ),
            changed_keys_sample=(
                _sample(live_conn, changed_keys_query(shape, hashes), width) if changed else ()
            ),
            extra_keys_sample=(
                _sample(live_conn, extra_keys_query(shape, hashes, key_filter), width)
                if extra else ()
            ),
        )
        drop_temp(live_conn, hashes)
    log.info("diff %s: %d missing, %d extra, %d changed", table, missing, extra, changed)
    return result


def diff_tables(live_dsn: str, copy_dsn: str, tables: Sequence[TableRef]) -> list[TableDiff]:
    """:func:`diff_table` for each table; each side is read from one REPEATABLE READ snapshot,
    so the tables are compared as of one moment.

    Connections are opened here and closed before returning; DSNs never appear in errors.
    """
    tables = list(tables)
    with connect(live_dsn, autocommit=True) as live_conn, \
            connect(copy_dsn, autocommit=True) as copy_conn:
        for conn in (live_conn, copy_conn):
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
        # Rolled back at the end: nothing but temp tables was written, on the live side only.
        with live_conn.transaction(force_rollback=True), \
                copy_conn.transaction(force_rollback=True):
            return [diff_table(live_conn, copy_conn, t) for t in tables]

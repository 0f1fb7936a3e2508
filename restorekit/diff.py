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
  therefore cost about one index-ordered pass over each side, run in parallel. The row hash is
  ``hash_record_extended`` over the typed values where a type's equality means identical text
  (integers, text, timestamps, uuid, ...) and over the text of every other column, so it
  changes exactly when the full method's md5 of the row text does (up to 64-bit collisions)
  at a third of the cost of hashing the whole row's text.

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
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import pairwise
from typing import Any, Literal, TypeVar

from psycopg import Connection, IsolationLevel, sql
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

Method = Literal["auto", "range", "full"]

_T = TypeVar("_T")
_U = TypeVar("_U")


@dataclass(frozen=True, slots=True)
class RangeTuning:
    """How the ``range`` method cuts the key space (the defaults suit tables from about 20
    thousand to a few hundred million rows).

    Attributes:
        min_rows: ``auto`` uses the ``full`` method for tables with fewer live rows.
        leaf_rows: a range that differs is split until it holds at most this many rows; then
            its ``(key, md5)`` pairs are fetched. The first pass aims at ranges of this size.
        max_ranges: at most this many ranges in the first pass (bigger tables get bigger
            ranges there, and one more level of splitting).
        max_fanout: at most this many pieces per range and level.
        max_levels: after this many levels every range that still differs is fetched.
        full_fraction: when the ranges that differ hold more than this share of the rows,
            they are classified like the ``full`` method does (whole table, no range list).
        seed: the ``TABLESAMPLE ... REPEATABLE`` seed, so a rerun picks the same ranges.
    """

    min_rows: int = 20_000
    leaf_rows: int = 64
    max_ranges: int = 65_536
    max_fanout: int = 1_024
    max_levels: int = 8
    full_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.leaf_rows < 1 or self.max_ranges < 1 or self.max_fanout < 2 or \
                self.max_levels < 1 or not 0 < self.full_fraction <= 1:
            raise ConfigError(f"invalid {self!r}")


@dataclass(frozen=True, slots=True)
class DiffStats:
    """How a :class:`TableDiff` was computed (for logs and benchmarks; not part of equality).

    ``first_pass`` says how the range method read the whole table once ("index ranges" or
    "bucket scan"), ``levels`` counts checksum passes, ``ranges_compared`` the ranges summed on
    each side over all passes, ``leaf_ranges`` the ranges whose pairs were fetched (after
    merging neighbours), ``rows_staged`` the copy's ``(key, md5)`` pairs streamed to live.
    """

    method: Literal["full", "range"]
    reason: str = ""
    first_pass: str = ""
    levels: int = 0
    ranges_compared: int = 0
    leaf_ranges: int = 0
    rows_staged: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "reason": self.reason, "first_pass": self.first_pass,
                "levels": self.levels,
                "ranges_compared": self.ranges_compared, "leaf_ranges": self.leaf_ranges,
                "rows_staged": self.rows_staged}


@dataclass(frozen=True, slots=True)
class TableDiff:
    """How one table of the live database differs from the restored copy.

    Keys are tuples in primary-key column order; the samples hold at most
    :data:`SAMPLE_SIZE` keys each, lowest first. Both methods give equal ``TableDiff``s
    (``stats`` is left out of the comparison).
    """

    table: TableRef
    primary_key: tuple[str, ...]
    missing: int
    extra: int
    changed: int
    missing_keys_sample: tuple[tuple[Any, ...], ...] = ()
    changed_keys_sample: tuple[tuple[Any, ...], ...] = ()
    extra_keys_sample: tuple[tuple[Any, ...], ...] = ()
    stats: DiffStats | None = field(default=None, compare=False)

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
            "stats": self.stats.to_dict() if self.stats is not None else None,
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
    return resolve_shapes(live_conn, copy_conn, [table], {table: columns} if columns else None)[
        table
    ]


def resolve_shapes(
    live_conn: Connection[Any],
    copy_conn: Connection[Any],
    tables: Sequence[TableRef],
    columns: Mapping[TableRef, Sequence[str] | None] | None = None,
) -> dict[TableRef, TableShape]:
    """:func:`resolve_shape` for several tables with two catalog queries per side, whatever
    their number (a recovery touches a whole cascade closure)."""
    wanted = list(dict.fromkeys(tables))
    if not wanted:
        return {}
    live_cols = catalog.load_columns(live_conn, wanted)
    copy_cols = catalog.load_columns(copy_conn, wanted)
    live_keys = catalog.load_primary_keys(live_conn, wanted)
    copy_keys = catalog.load_primary_keys(copy_conn, wanted)
    return {
        table: _shape(table, live_cols[table], copy_cols[table], live_keys[table],
                      copy_keys[table], (columns or {}).get(table))
        for table in wanted
    }


def _shape(
    table: TableRef,
    live_cols: Sequence[catalog.Column],
    copy_cols: Sequence[catalog.Column],
    key: tuple[str, ...],
    copy_key: tuple[str, ...],
    columns: Sequence[str] | None,
) -> TableShape:
    if not key:
        raise no_primary_key(table)
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


def _table_source(shape: TableShape) -> sql.Composed:
    """The live table as a FROM item under :data:`ALIAS`."""
    return sql.SQL("{} AS {}").format(shape.table.ident, ALIAS)


def _stage_hashes(
    live_conn: Connection[Any], copy_conn: Connection[Any], shape: TableShape,
    copy_query: sql.Composable,
) -> tuple[TableRef, int]:
    """Stream ``copy_query``'s ``(key..., row md5)`` rows into a new live temp table, analyzed."""
    temp = create_temp_like(
        live_conn, shape.table, shape.key, "hashes",
        extra=sql.SQL("NULL::uuid AS {}").format(sql.Identifier(shape.hash_column)),
    )
    # The hash column is uuid on both sides, so the key types alone decide the format.
    rows = copy_rows(copy_conn, live_conn, copy_query, None, temp,
                     [*shape.key, shape.hash_column], fmt=shape.key_format)
    # Temp tables are never auto-analyzed; without statistics the anti-joins plan badly.
    live_conn.execute(sql.SQL("ANALYZE {}").format(temp.ident))
    return temp, rows


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
    query = sql.SQL("SELECT {key}, {hash} FROM {table} AS {t}{where}").format(
        key=shape.key_idents(ALIAS), hash=row_hash(shape.columns), table=shape.table.ident,
        t=ALIAS, where=where_clause(key_filter),
    )
    return _stage_hashes(live_conn, copy_conn, shape, query)[0]


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
    return _count_differences(live_conn, shape, hashes, _table_source(shape), key_filter)


def _count_differences(
    live_conn: Connection[Any], shape: TableShape, hashes: TableRef, source: sql.Composable,
    condition: sql.Composable | None,
) -> tuple[int, int, int]:
    s, live = sql.Identifier("s"), sql.Identifier("l")
    h = sql.Identifier(shape.hash_column)
    query = sql.SQL(
        """
        SELECT count(*) FILTER (WHERE {live}.{h} IS NULL),
               count(*) FILTER (WHERE {s}.{h} IS NULL),
               count(*) FILTER (WHERE {s}.{h} <> {live}.{h})
        FROM {hashes} AS {s}
        FULL JOIN (SELECT {key}, {hash} AS {h} FROM {source}{where}) AS {live}
               ON {match}
        """
    ).format(
        live=live, s=s, h=h, hashes=hashes.ident, key=shape.key_idents(ALIAS),
        hash=row_hash(shape.columns), source=source, where=where_clause(condition),
        match=key_match(shape.key, s, live),
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
    return _extra_keys_query(shape, hashes, _table_source(shape), key_filter)


def _extra_keys_query(
    shape: TableShape, hashes: TableRef, source: sql.Composable, condition: sql.Composable | None
) -> sql.Composed:
    s = sql.Identifier("s")
    live_filter = sql.SQL("") if condition is None else sql.SQL("({}) AND ").format(condition)
    return sql.SQL(
        "SELECT {key} FROM {source} "
        "WHERE {live_filter}NOT EXISTS (SELECT FROM {hashes} AS {s} WHERE {match})"
    ).format(
        key=shape.key_idents(ALIAS), source=source, live_filter=live_filter,
        hashes=hashes.ident, s=s, match=key_match(shape.key, ALIAS, s),
    )


def _sample(live_conn: Connection[Any], query: sql.Composed, width: int
            ) -> tuple[tuple[Any, ...], ...]:
    order = sql.SQL(", ").join(sql.Literal(i) for i in range(1, width + 1))
    limited = sql.SQL("{} ORDER BY {} LIMIT {}").format(query, order, sql.Literal(SAMPLE_SIZE))
    return tuple(tuple(r) for r in live_conn.execute(limited).fetchall())


def _classify(
    live_conn: Connection[Any], shape: TableShape, hashes: TableRef, source: sql.Composable,
    condition: sql.Composable | None, key_filter: sql.Composable | None, stats: DiffStats,
) -> TableDiff:
    """Count and sample the differences between the staged copy hashes and the live rows of
    ``source`` (a FROM item under :data:`ALIAS`) that match ``condition``."""
    width = len(shape.key)
    missing, extra, changed = _count_differences(live_conn, shape, hashes, source, condition)
    return TableDiff(
        table=shape.table,
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
            _sample(live_conn, _extra_keys_query(shape, hashes, source, condition), width)
            if extra else ()
        ),
        stats=stats,
    )


# -- the full method -----------------------------------------------------------------------------


def _diff_full(
    live_conn: Connection[Any], copy_conn: Connection[Any], shape: TableShape,
    key_filter: sql.Composable | None, reason: str,
) -> TableDiff:
    query = sql.SQL("SELECT {key}, {hash} FROM {table} AS {t}{where}").format(
        key=shape.key_idents(ALIAS), hash=row_hash(shape.columns), table=shape.table.ident,
        t=ALIAS, where=where_clause(key_filter),
    )
    with live_conn.transaction(), pinned_both(live_conn, copy_conn):
        hashes, staged = _stage_hashes(live_conn, copy_conn, shape, query)
        result = _classify(live_conn, shape, hashes, _table_source(shape), key_filter, key_filter,
                           DiffStats("full", reason, rows_staged=staged))
        drop_temp(live_conn, hashes)
    return result


# -- the range method ----------------------------------------------------------------------------
#
# A range is [lo, hi) in primary-key order; lo None means "from the lowest key", hi None "to
# the highest". Bounds are key values as text (printed by the live side with pinned settings)
# and reach SQL as array literals: ``(ARRAY[(NULL::tbl).col] || '{...}')[2:]`` makes the server
# parse them with the key column's own input function, on each side, so no type name is ever
# written as text and an int key on one side compares with a bigint key on the other.

_Bound = tuple[str, ...]
_Sums = tuple[int, Any]


@dataclass(frozen=True, slots=True)
class _Range:
    path: tuple[int, ...]  # position in the split tree; sorting by path sorts by key
    lo: _Bound | None
    hi: _Bound | None


# Per column: type, storage width, whether it is an array, (for collatable types) everything
# that decides its sort order (the collation's provider, locale, determinism and the version
# the library reports now: a copy restored onto another OS may sort differently under the same
# collation name), and whether its own hash function can stand in for its text (see _FAITHFUL).
_COLUMN_FACTS = sql.SQL(
    """
    SELECT a.attname, format_type(a.atttypid, a.atttypmod), ty.typlen, ty.typcategory = 'A',
           CASE WHEN a.attcollation = 0 THEN NULL
                WHEN co.collprovider = 'd' THEN
                    (SELECT to_jsonb(d) || jsonb_build_object(
                                'actual_version', pg_database_collation_actual_version(d.oid))
                     FROM pg_database d WHERE d.datname = current_database())
                ELSE to_jsonb(co) || jsonb_build_object(
                         'actual_version', pg_collation_actual_version(co.oid))
           END,
           ty.typnamespace = 'pg_catalog'::regnamespace AND ty.typname = ANY(%(faithful)s)
               AND (a.attcollation = 0 OR co.collisdeterministic)
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_type ty ON ty.oid = a.atttypid
    LEFT JOIN pg_collation co ON co.oid = a.attcollation
    WHERE n.nspname = %(schema)s AND c.relname = %(name)s AND a.attname = ANY(%(columns)s)
    """
)
# Types whose equality is identity of their text form (under the pinned output settings), so
# their built-in hash may replace hashing the text, which costs a third of the time. Left out on
# purpose: numeric (1.0 = 1.00), float (-0 = 0), interval ('1 day' = '24 hours'), json(b),
# bpchar (trailing blanks), enums and oids (hashed by OID, which differs between clusters).
_FAITHFUL = ("int2", "int4", "int8", "bool", "text", "varchar", "date", "time", "timestamp",
             "timestamptz", "uuid", "bytea")
_INTEGERS = frozenset({"smallint", "integer", "bigint"})


@dataclass(frozen=True, slots=True)
class _RangeFacts:
    """What the range method needs to know about a table, from both catalogs."""

    obstacle: str | None  # why the two sides might order the key differently
    # One key column of a fixed-width type (bigint, uuid, timestamptz, ...) whose order is not
    # the heap's: the first pass buckets a sequential scan instead of reading by index.
    bucket_scan: bool
    checksum: sql.Composable  # a 64-bit hash of a row of ALIAS, the same on both sides


def _scattered(live_conn: Connection[Any], shape: TableShape) -> bool:
    """Whether the planner's statistics say the key's order is far from the heap's (random
    uuids): reading such a table range by range through the index jumps between pages."""
    row = live_conn.execute(
        "SELECT max(abs(correlation)) FROM pg_stats "
        "WHERE schemaname = %s AND tablename = %s AND attname = %s",
        [shape.table.schema, shape.table.name, shape.key[0]]).fetchone()
    return row is not None and row[0] is not None and row[0] < 0.5


def _sort_order(info: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """What decides a collation's order, from a pg_collation or pg_database row (as json);
    column names vary between PostgreSQL versions, so the first present is taken."""
    if info is None:
        return ()

    def pick(*names: str) -> Any:
        return next((info[n] for n in names if info.get(n) is not None), None)

    provider = pick("collprovider", "datlocprovider")
    collate = pick("collcollate", "datcollate")
    if provider == "c" and collate in ("C", "POSIX"):
        return ("C",)  # byte order, whatever the server
    return (provider, collate, pick("colliculocale", "colllocale", "daticulocale", "datlocale"),
            pick("collicurules", "daticurules"), info.get("collisdeterministic", True),
            info.get("actual_version"))


def _checksum_columns(shape: TableShape) -> tuple[str, ...]:
    # The key is always hashed: two rows swapping their other values must change the sum.
    return tuple(dict.fromkeys([*shape.columns, *shape.key]))


def _range_facts(
    live_conn: Connection[Any], copy_conn: Connection[Any], shape: TableShape
) -> _RangeFacts:
    """Whether both sides order the key the same way (ranges must hold the same rows), how
    the first pass reads, and the row checksum both sides compute.

    The checksum must change whenever the row's text changes, since the full method compares
    md5s of row text: a column is hashed by its own type's hash function only when its type is
    in :data:`_FAITHFUL` and the same on both sides, otherwise as text (collation "C", so no
    nondeterministic collation can make two texts hash alike).
    """
    columns = _checksum_columns(shape)
    params = {"schema": shape.table.schema, "name": shape.table.name, "columns": list(columns),
              "faithful": list(_FAITHFUL)}
    live = {r[0]: r[1:] for r in live_conn.execute(_COLUMN_FACTS, params)}
    copy = {r[0]: r[1:] for r in copy_conn.execute(_COLUMN_FACTS, params)}
    if min(live_conn.info.server_version, copy_conn.info.server_version) >= 140000:
        parts = [sql.SQL("{}.{}").format(ALIAS, sql.Identifier(c))
                 if live[c][4] and copy[c][4] and live[c][0] == copy[c][0] else
                 sql.SQL('{}.{}::text COLLATE "C"').format(ALIAS, sql.Identifier(c))
                 for c in columns]
        checksum: sql.Composable = sql.SQL("hash_record_extended(ROW({}), 0)").format(
            sql.SQL(", ").join(parts))
    else:  # hash_record_extended is PostgreSQL 14+
        checksum = sql.SQL("hashtextextended(ROW({})::text, 0)").format(idents(columns, ALIAS))
    bucket = len(shape.key) == 1 and live[shape.key[0]][1] > 0 and _scattered(
        live_conn, shape)
    obstacle = None
    for col in shape.key:
        (live_type, _, is_array, live_coll, _), (copy_type, _, _, copy_coll, _) = \
            live[col], copy[col]
        if is_array:
            obstacle = f"key column {col} is an array ({live_type})"
        elif live_type != copy_type and not {live_type, copy_type} <= _INTEGERS:
            obstacle = f"key column {col} is {live_type} live but {copy_type} in the copy"
        elif _sort_order(live_coll) != _sort_order(copy_coll):
            obstacle = f"key column {col} is sorted by a different collation in the copy"
        if obstacle:
            break
    return _RangeFacts(obstacle, bucket, checksum)


def _live_rows_at_least(live_conn: Connection[Any], shape: TableShape, wanted: int) -> int:
    """The planner's row estimate, or, when that is below ``wanted`` (never analyzed, small),
    the exact count up to ``wanted`` (a scan of at most that many rows)."""
    estimate = catalog.estimated_rows(live_conn, [shape.table])[shape.table]
    if estimate >= wanted:
        return estimate
    query = sql.SQL("SELECT count(*) FROM (SELECT FROM {} LIMIT {}) AS s").format(
        shape.table.ident, sql.Literal(wanted))
    row = live_conn.execute(query).fetchone()
    return max(estimate, int(row[0]) if row else 0)


def _text_key(shape: TableShape, alias: sql.Identifier) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL("{}.{}::text").format(alias, sql.Identifier(c)) for c in shape.key)


def _sample_bounds(
    live_conn: Connection[Any], shape: TableShape, rows: int,
    key_filter: sql.Composable | None, tuning: RangeTuning,
) -> list[_Bound]:
    """Keys of a Bernoulli sample of live rows (about one per ``leaf_rows`` rows), sorted: the
    first pass's range bounds. Bernoulli reads every page but only prints sampled keys, which
    costs a few percent of one hashing pass."""
    wanted = min(tuning.max_ranges, rows // tuning.leaf_rows)
    if wanted < 1:
        return []
    percent = min(100.0, 100.0 * wanted / max(rows, 1))
    query = sql.SQL(
        "SELECT {text_key} FROM {table} AS {t} TABLESAMPLE BERNOULLI ({p}) REPEATABLE ({seed})"
        "{where} ORDER BY {key}"
    ).format(text_key=_text_key(shape, ALIAS), table=shape.table.ident, t=ALIAS,
             p=sql.Literal(percent), seed=sql.Literal(tuning.seed),
             where=where_clause(key_filter), key=shape.key_idents(ALIAS))
    return [tuple(r) for r in live_conn.execute(query).fetchall()]


def _array_literal(values: Iterable[str | None]) -> str:
    """PostgreSQL array-literal text of ``values`` (every element quoted, None as NULL)."""
    def quote(v: str | None) -> str:
        if v is None:
            return "NULL"
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "{" + ",".join(map(quote, values)) + "}"


def _key_array(shape: TableShape, column: str, values: Iterable[str | None]) -> sql.Composed:
    """An array of ``column``'s own type holding ``values`` (text), parsed by the server."""
    return sql.SQL("(ARRAY[(NULL::{table}).{col}] || {values})[2:]").format(
        table=shape.table.ident, col=sql.Identifier(column),
        values=sql.Literal(_array_literal(values)))


def _row(items: Sequence[sql.Composable]) -> sql.Composable:
    return sql.SQL("({})").format(sql.SQL(", ").join(items))


def _common_prefix(r: _Range) -> int:
    """How many leading key columns ``r.lo`` and ``r.hi`` share (at most all but one)."""
    if r.lo is None or r.hi is None:
        return 0
    width = len(r.lo)
    return next((n for n in range(width - 1) if r.lo[n] != r.hi[n]), width - 1)


def _over_ranges(
    shape: TableShape,
    ranges: Sequence[_Range],
    items: sql.Composable,
    outer: sql.Composable,
    key_filter: sql.Composable | None,
    *,
    steps: Sequence[int] | None = None,
    outer_where: sql.Composable | None = None,
) -> sql.Composed:
    """``SELECT {outer} FROM <the ranges> AS v CROSS JOIN LATERAL (SELECT {items} FROM table
    AS t WHERE <t's key in v's range> AND key_filter) AS x``: one index range scan per range.

    ``v.i`` is the range's position in ``ranges``, ``v.step`` its entry in ``steps``. Ranges
    of different shapes cannot share one index condition, so each shape gets its own arm of a
    UNION ALL: open below, open above, and closed ranges by how many leading key columns their
    bounds share. The shared columns become equalities and only the rest a row comparison,
    because a btree scan (before PostgreSQL 18) stops at a row comparison's upper bound only
    when its *first* column passes it: ``(a, b) < (3, 'x')`` would read the rest of ``a = 3``.
    ``OFFSET 0`` keeps the planner from flattening the LATERAL subquery into a join: it cannot
    estimate range conditions against a parameter list and would then scan the whole index.
    """
    v, x = sql.Identifier("v"), sql.Identifier("x")
    width = len(shape.key)
    cols = [sql.SQL("{}.{}").format(ALIAS, sql.Identifier(c)) for c in shape.key]
    lo_names = [sql.Identifier(f"lo{n}") for n in range(width)]
    hi_names = [sql.Identifier(f"hi{n}") for n in range(width)]
    lo_vals = [sql.SQL("{}.{}").format(v, name) for name in lo_names]
    hi_vals = [sql.SQL("{}.{}").format(v, name) for name in hi_names]
    shapes: dict[tuple[bool, bool, int], list[int]] = {}
    for i, r in enumerate(ranges):
        shapes.setdefault((r.lo is not None, r.hi is not None, _common_prefix(r)), []).append(i)
    extra = sql.SQL("") if key_filter is None else sql.SQL(" AND ({})").format(key_filter)
    arms: list[sql.Composable] = []
    for (has_lo, has_hi, prefix), members in sorted(shapes.items(), reverse=True):
        arrays: list[sql.Composable] = [
            sql.SQL("{}::int[]").format(sql.Literal(_array_literal(str(i) for i in members)))]
        names: list[sql.Composable] = [sql.Identifier("i")]
        if steps is not None:
            arrays.append(sql.SQL("{}::bigint[]").format(
                sql.Literal(_array_literal(str(steps[i]) for i in members))))
            names.append(sql.Identifier("step"))
        conditions: list[sql.Composable] = [
            sql.SQL("{} = {}").format(cols[n], lo_vals[n]) for n in range(prefix)]
        for present, bound, column_names, op, vals in (
                (has_lo, "lo", lo_names, ">=", lo_vals), (has_hi, "hi", hi_names, "<", hi_vals)):
            if not present:
                continue
            for n, col in enumerate(shape.key):
                values = (getattr(ranges[i], bound)[n] for i in members)
                arrays.append(_key_array(shape, col, values))
            names.extend(column_names)
            conditions.append(sql.SQL("{} {} {}").format(
                _row(cols[prefix:]), sql.SQL(op), _row(vals[prefix:])))
        condition = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("TRUE")
        arms.append(sql.SQL(
            "SELECT {outer} FROM unnest({arrays}) AS {v}({names}) "
            "CROSS JOIN LATERAL (SELECT {items} FROM {table} AS {t} WHERE {condition}{extra}"
            " OFFSET 0) AS {x}{outer_where}"
        ).format(outer=outer, arrays=sql.SQL(", ").join(arrays), v=v,
                 names=sql.SQL(", ").join(names), items=items, table=shape.table.ident, t=ALIAS,
                 condition=condition, extra=extra, x=x, outer_where=where_clause(outer_where)))
    return sql.SQL(" UNION ALL ").join(arms)


def _range_sums(
    conn: Connection[Any], shape: TableShape, ranges: Sequence[_Range],
    key_filter: sql.Composable | None, tuning: RangeTuning, checksum: sql.Composable, *,
    bucket_scan: bool = False,
) -> list[_Sums]:
    """``(count, sum of the 64-bit ``checksum`` of each row)`` per range, in ``ranges`` order
    (a sum, unlike xor, cannot cancel out a pair of equal rows).

    Normally one index range scan per range (about as fast as a sequential scan where the heap
    is in key order), one statement per :attr:`RangeTuning.max_ranges` ranges. With
    ``bucket_scan`` (``ranges`` is the whole key space cut at its bounds; one fixed-width key
    column scattered over the heap, like random uuids) it is one sequential scan grouped by
    ``width_bucket``, a binary search over the bounds, so no page is read twice.
    """
    hashed = sql.SQL("count(*) AS n, sum({}) AS h").format(checksum)
    if bucket_scan:
        bounds = sql.SQL("{}").format(_key_array(
            shape, shape.key[0], (r.lo[0] for r in ranges[1:] if r.lo is not None)))
        query = sql.SQL("SELECT width_bucket({key}, {bounds}), {hashed} FROM {table} AS {t}"
                        "{where} GROUP BY 1").format(
            key=shape.key_idents(ALIAS), bounds=bounds, hashed=hashed, table=shape.table.ident,
            t=ALIAS, where=where_clause(key_filter))
        found = {int(i): (int(n), h) for i, n, h in conn.execute(query).fetchall()}
        return [found.get(i, (0, None)) for i in range(len(ranges))]
    sums: list[_Sums] = []
    for start in range(0, len(ranges), tuning.max_ranges):
        chunk = ranges[start:start + tuning.max_ranges]
        query = _over_ranges(shape, chunk, hashed, sql.SQL("v.i, x.n, x.h"), key_filter)
        with _session_settings(conn, _INDEX_SCANS):
            found = {int(i): (int(n), h) for i, n, h in conn.execute(query).fetchall()}
        sums.extend(found[i] for i in range(len(chunk)))
    return sums


def _split(
    live_conn: Connection[Any], shape: TableShape, ranges: Sequence[tuple[_Range, int, int]],
    key_filter: sql.Composable | None, tuning: RangeTuning,
) -> tuple[list[_Range], list[_Range]]:
    """Cut each ``(range, live rows, rows on the fuller side)`` at every ``step``-th live key
    (one statement on live) into pieces of about ``leaf_rows`` rows, at most ``max_fanout``.
    Only live keys can be cut points, so a range the copy holds far more rows of (rows deleted
    live) is cut into at most as many pieces as it has live rows.

    Returns:
        The pieces, and the ranges that could not be cut (no live key inside).
    """
    steps = []
    for _, live_rows, rows in ranges:
        wanted = min(tuning.max_fanout, math.ceil(rows / tuning.leaf_rows), live_rows)
        steps.append(max(1, math.ceil(live_rows / max(wanted, 2))))
    names = [sql.Identifier(f"k{n}") for n in range(len(shape.key))]
    items = sql.SQL("{keys}, row_number() OVER (ORDER BY {key}) AS rn").format(
        keys=sql.SQL(", ").join(sql.SQL("{}.{} AS {}").format(ALIAS, sql.Identifier(k), n)
                                for k, n in zip(shape.key, names, strict=True)),
        key=shape.key_idents(ALIAS))
    x = sql.Identifier("x")
    outer = sql.SQL("v.i, x.rn, {}").format(sql.SQL(", ").join(
        sql.SQL("{}.{}::text").format(x, n) for n in names))
    query = sql.SQL("{} ORDER BY 1, 2").format(_over_ranges(
        shape, [r for r, _, _ in ranges], items, outer, key_filter, steps=steps,
        outer_where=sql.SQL("mod(x.rn, v.step) = 0")))
    cuts: dict[int, list[_Bound]] = {}
    with _session_settings(live_conn, _INDEX_SCANS):
        found = live_conn.execute(query).fetchall()
    for i, _, *key in found:
        cuts.setdefault(int(i), []).append(tuple(key))
    pieces: list[_Range] = []
    whole: list[_Range] = []
    for i, (r, _, _) in enumerate(ranges):
        bounds = [b for b in cuts.get(i, []) if b != r.lo]
        if not bounds:
            whole.append(r)
            continue
        edges = [r.lo, *bounds, r.hi]
        pieces.extend(_Range((*r.path, j), lo, hi)
                      for j, (lo, hi) in enumerate(pairwise(edges)))
    return pieces, whole


def _merge(ranges: Iterable[_Range]) -> list[_Range]:
    """Sorted, with neighbours (one's hi is the next one's lo) joined into one range."""
    merged: list[_Range] = []
    for r in sorted(ranges, key=lambda r: r.path):
        if merged and merged[-1].hi is not None and merged[-1].hi == r.lo:
            merged[-1] = _Range(merged[-1].path, merged[-1].lo, r.hi)
        else:
            merged.append(r)
    return merged


@contextmanager
def _session_settings(conn: Connection[Any], settings: Mapping[str, str]) -> Iterator[None]:
    """Set ``settings`` for the block and put the previous values back (as
    :func:`~restorekit.pg.checksum.pinned_output_settings` does for output settings)."""
    names, values = list(settings), list(settings.values())
    row = conn.execute("SELECT array_agg(current_setting(n) ORDER BY o) FROM unnest(%s::text[]) "
                       "WITH ORDINALITY AS s(n, o)", [names]).fetchone()
    previous = list(row[0]) if row and row[0] else []
    apply = "SELECT set_config(n, v, false) FROM unnest(%s::text[], %s::text[]) AS s(n, v)"
    conn.execute(apply, [names, values])
    try:
        yield
    finally:
        if conn.info.transaction_status != TransactionStatus.INERROR and previous:
            conn.execute(apply, [names, previous])


# The range statements are big nested loops whose estimated cost would switch JIT compilation
# on; compiling them takes longer than running them.
_RANGE_SETTINGS = {"jit": "off"}
# Each range is meant to be one index range scan. The planner estimates a row comparison
# against a parameter at a ninth of the table, so it would pick bitmap or sequential scans
# (for every one of thousands of ranges); these settings only make those plans look expensive.
_INDEX_SCANS = {"enable_seqscan": "off", "enable_bitmapscan": "off"}


@contextmanager
def _snapshot(conn: Connection[Any], *, read_only: bool) -> Iterator[None]:
    """A REPEATABLE READ transaction for the block when ``conn`` is idle (the range method
    reads each side several times and needs one snapshot); the caller's transaction otherwise.
    A read-only transaction is rolled back at the end: nothing was written."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        with conn.transaction():
            yield
        return
    with conn.transaction(force_rollback=read_only):
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ" +
                     (", READ ONLY" if read_only else ""))
        yield


def _on_both(pool: ThreadPoolExecutor, live_task: Callable[[], _T], copy_task: Callable[[], _U]
             ) -> tuple[_T, _U]:
    """Run the copy's statement in the pool's thread while the live one runs here."""
    copy_future = pool.submit(copy_task)
    try:
        live_result = live_task()
    except BaseException:
        with contextlib.suppress(BaseException):
            copy_future.result()  # never leave the copy connection busy behind us
        raise
    return live_result, copy_future.result()


@dataclass
class _Search:
    """Where the range search ended: the ranges whose pairs must be fetched (merged, in key
    order), or None when they hold so many rows that the whole table is fetched instead."""

    leaves: list[_Range] | None
    first_pass: str
    levels: int
    compared: int


def _search(
    live_conn: Connection[Any], copy_conn: Connection[Any], shape: TableShape,
    key_filter: sql.Composable | None, tuning: RangeTuning, rows: int, facts: _RangeFacts,
    pool: ThreadPoolExecutor,
) -> _Search:
    """Sum ranges on both sides at once, keep the ones that differ, split those at live keys,
    and repeat until each is small (or cannot be split)."""
    bounds = _sample_bounds(live_conn, shape, rows, key_filter, tuning)
    edges: list[_Bound | None] = [None, *bounds, None]
    pending = [_Range((j,), lo, hi) for j, (lo, hi) in enumerate(pairwise(edges))]
    # width_bucket wants at least one bound; one range is the whole table anyway.
    bucket_scan = facts.bucket_scan and len(pending) > 1
    first_pass = "bucket scan" if bucket_scan else "index ranges"
    leaves: list[_Range] = []
    leaf_rows = total_rows = levels = compared = 0
    while pending:
        levels += 1
        compared += len(pending)
        first = levels == 1 and bucket_scan
        live_sums, copy_sums = _on_both(
            pool,
            partial(_range_sums, live_conn, shape, pending, key_filter, tuning, facts.checksum,
                    bucket_scan=first),
            partial(_range_sums, copy_conn, shape, pending, key_filter, tuning, facts.checksum,
                    bucket_scan=first),
        )
        if levels == 1:
            total_rows = max(sum(n for n, _ in live_sums), sum(n for n, _ in copy_sums))
        to_split: list[tuple[_Range, int, int]] = []
        for r, mine, theirs in zip(pending, live_sums, copy_sums, strict=True):
            if mine == theirs:
                continue
            largest = max(mine[0], theirs[0])
            if largest <= tuning.leaf_rows or mine[0] < 2 or levels >= tuning.max_levels:
                leaves.append(r)
                leaf_rows += largest
            else:
                to_split.append((r, mine[0], largest))
        if leaf_rows > tuning.full_fraction * total_rows:
            # Most rows differ: one plain full join is cheaper than a long list of ranges.
            return _Search(None, first_pass, levels, compared)
        pending = []
        if to_split:
            pending, whole = _split(live_conn, shape, to_split, key_filter, tuning)
            leaves.extend(whole)
            leaf_rows += sum(n for r, _, n in to_split if r in whole)
    return _Search(_merge(leaves), first_pass, levels, compared)


def _diff_ranges(
    live_conn: Connection[Any], copy_conn: Connection[Any], shape: TableShape,
    key_filter: sql.Composable | None, tuning: RangeTuning, rows: int, facts: _RangeFacts,
    reason: str,
) -> TableDiff:
    with ExitStack() as stack:
        stack.enter_context(_snapshot(live_conn, read_only=False))
        stack.enter_context(_snapshot(copy_conn, read_only=True))
        stack.enter_context(pinned_both(live_conn, copy_conn))
        stack.enter_context(_session_settings(live_conn, _RANGE_SETTINGS))
        stack.enter_context(_session_settings(copy_conn, _RANGE_SETTINGS))
        pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="restorekit-diff"))
        found = _search(live_conn, copy_conn, shape, key_filter, tuning, rows, facts, pool)
        stats = DiffStats("range", reason, found.first_pass, found.levels, found.compared,
                          len(found.leaves) if found.leaves is not None else 0)
        if found.leaves == []:
            return TableDiff(shape.table, shape.key, 0, 0, 0, stats=stats)
        if found.leaves is None:
            copy_query = sql.SQL("SELECT {key}, {hash} FROM {table} AS {t}{where}").format(
                key=shape.key_idents(ALIAS), hash=row_hash(shape.columns),
                table=shape.table.ident, t=ALIAS, where=where_clause(key_filter))
            hashes, staged = _stage_hashes(live_conn, copy_conn, shape, copy_query)
            result = _classify(live_conn, shape, hashes, _table_source(shape), key_filter,
                               key_filter, replace(stats, rows_staged=staged))
            drop_temp(live_conn, hashes)
            return result
        # Only the ranges that differ, on both sides: the copy's pairs are streamed to live,
        # and live's rows of the same ranges are the other side of the full join.
        copy_query = _over_ranges(
            shape, found.leaves,
            sql.SQL("{}, {} AS {}").format(shape.key_idents(ALIAS), row_hash(shape.columns),
                                           sql.Identifier(shape.hash_column)),
            sql.SQL("x.*"), key_filter)
        live_columns = tuple(dict.fromkeys([*shape.key, *shape.columns]))
        source = sql.SQL("({}) AS {}").format(
            _over_ranges(shape, found.leaves, idents(live_columns, ALIAS), sql.SQL("x.*"),
                         key_filter), ALIAS)
        with _session_settings(copy_conn, _INDEX_SCANS):
            hashes, staged = _stage_hashes(live_conn, copy_conn, shape, copy_query)
        with _session_settings(live_conn, _INDEX_SCANS):
            result = _classify(live_conn, shape, hashes, source, None, key_filter,
                               replace(stats, rows_staged=staged))
        drop_temp(live_conn, hashes)
        return result


# -- the public API ------------------------------------------------------------------------------


def diff_table(
    live_conn: Connection[Any],
    copy_conn: Connection[Any],
    table: TableRef,
    *,
    columns: Sequence[str] | None = None,
    key_filter: sql.Composable | None = None,
    method: Method = "auto",
    tuning: RangeTuning | None = None,
) -> TableDiff:
    """Compare one table row by row between the live database and a restored copy.

    Only the live session's temp tables are written; the temp table is dropped again (or rolled
    back with the caller's transaction). Run ``live_conn`` in a REPEATABLE READ transaction when
    the counts must come from one snapshot of a busy database (the range method opens one
    itself on a side that has no transaction open).

    Args:
        live_conn: the production database.
        copy_conn: the restored copy (any cluster); only read.
        table: the table, the same name on both sides.
        columns: the columns to compare; default every non-generated column.
        key_filter: a condition on rows, applied on both sides, written against the alias ``t``
            (e.g. ``sql.SQL("t.{} < {}").format(sql.Identifier("id"), sql.Literal(1000))``);
            only rows that match are compared.
        method: ``"range"`` (checksums over key ranges, fetch only the ranges that differ),
            ``"full"`` (fetch every key's hash), or ``"auto"``: range for tables of at least
            ``tuning.min_rows`` live rows whose key sorts the same way on both sides.
        tuning: how the range method cuts the key space; default :class:`RangeTuning()`.

    Returns:
        The counts, plus up to :data:`SAMPLE_SIZE` keys per category; ``stats`` says which
        method ran. Both methods return equal results.

    Raises:
        ConfigError: no primary key, the table or a column is missing on a side, the two
            sides' primary keys differ, or ``method="range"`` for a key that may sort
            differently on the two sides.
        PostgresError: streaming the copy's hashes failed.
    """
    if method not in ("auto", "range", "full"):
        raise ConfigError(f"unknown diff method {method!r}; use 'auto', 'range' or 'full'")
    tuning = tuning or RangeTuning()
    shape = resolve_shape(live_conn, copy_conn, table, columns)
    reason = "asked for"
    rows = 0
    facts: _RangeFacts | None = None
    if method != "full":
        facts = _range_facts(live_conn, copy_conn, shape)
        if facts.obstacle is not None and method == "range":
            raise ConfigError(f"table {table} cannot be diffed by key ranges: {facts.obstacle}; "
                              "use method='full'")
        if facts.obstacle is not None:
            method, reason = "full", facts.obstacle
        else:
            rows = _live_rows_at_least(live_conn, shape, tuning.min_rows)
            if method == "auto":
                method = "range" if rows >= tuning.min_rows else "full"
                reason = f"about {rows} live rows ({'>=' if method == 'range' else '<'} " \
                         f"{tuning.min_rows})"
    if method == "full" or facts is None:
        result = _diff_full(live_conn, copy_conn, shape, key_filter, reason)
    else:
        result = _diff_ranges(live_conn, copy_conn, shape, key_filter, tuning, rows, facts,
                              reason)
    log.info("diff %s (%s): %d missing, %d extra, %d changed", table, method, result.missing,
             result.extra, result.changed)
    return result


def diff_tables(
    live_dsn: str, copy_dsn: str, tables: Sequence[TableRef], *, method: Method = "auto",
    tuning: RangeTuning | None = None,
) -> list[TableDiff]:
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
            return [diff_table(live_conn, copy_conn, t, method=method, tuning=tuning)
                    for t in tables]

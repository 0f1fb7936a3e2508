"""Counting and sampling the differences between staged copy hashes and the live table: one full
join on the key classifies every row as missing, extra or changed.
"""

from __future__ import annotations

from typing import Any

from psycopg import Connection, sql

from restorekit.diff.compose import ALIAS, key_match, row_hash, where_clause
from restorekit.diff.models import SAMPLE_SIZE, DiffStats, TableDiff
from restorekit.diff.shape import TableShape
from restorekit.diff.staging import _table_source
from restorekit.pg.catalog import TableRef


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
    return _unmatched_keys(
        shape.key_idents(s), sql.SQL("{} AS {}").format(staged.ident, s), None,
        sql.SQL("{} AS {}").format(shape.table.ident, ALIAS), key_filter,
        key_match(shape.key, ALIAS, s))


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
    return _unmatched_keys(
        shape.key_idents(ALIAS), source, condition, sql.SQL("{} AS {}").format(hashes.ident, s),
        None, key_match(shape.key, ALIAS, s))


def _unmatched_keys(
    keys: sql.Composable, outer: sql.Composable, outer_filter: sql.Composable | None,
    inner: sql.Composable, inner_filter: sql.Composable | None, match: sql.Composable,
) -> sql.Composed:
    """``SELECT keys FROM outer`` where no row of ``inner`` matches: the anti-join both
    directions of the diff use (missing: copy without live; extra: live without copy)."""
    outer_where = sql.SQL("") if outer_filter is None else sql.SQL("({}) AND ").format(
        outer_filter)
    inner_where = sql.SQL("") if inner_filter is None else sql.SQL(" AND ({})").format(
        inner_filter)
    return sql.SQL(
        "SELECT {keys} FROM {outer} WHERE {outer_where}NOT EXISTS "
        "(SELECT FROM {inner} WHERE {match}{inner_where})"
    ).format(keys=keys, outer=outer, outer_where=outer_where, inner=inner, match=match,
             inner_where=inner_where)


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

"""The entry points, :func:`diff_table` and :func:`diff_tables`, and the ``full`` method: the copy's
``(primary key, md5 of the row)`` pairs are streamed with COPY into a TEMP table on the live side,
and one FULL JOIN there counts the three kinds. Every key crosses the wire; best for small tables
and for tables that differ almost everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from psycopg import Connection, IsolationLevel, errors, sql

from restorekit.diff.counting import _classify
from restorekit.diff.models import DiffStats, Method, RangeTuning, TableDiff
from restorekit.diff.range_facts import _live_rows_at_least, _range_facts, _RangeFacts
from restorekit.diff.ranges import _diff_ranges
from restorekit.diff.shape import TableShape, resolve_shape
from restorekit.diff.staging import (
    _stage_hashes,
    _table_source,
    drop_temp,
    hashes_query,
    pinned_both,
)
from restorekit.errors import ConfigError, PostgresError
from restorekit.pg.catalog import TableRef
from restorekit.pg.cluster import connect

log = logging.getLogger(__name__)


def _diff_full(
    live_conn: Connection[Any], copy_conn: Connection[Any], shape: TableShape,
    key_filter: sql.Composable | None, reason: str,
) -> TableDiff:
    query = hashes_query(shape, key_filter)
    with live_conn.transaction(), pinned_both(live_conn, copy_conn):
        hashes, staged = _stage_hashes(live_conn, copy_conn, shape, query)
        result = _classify(live_conn, shape, hashes, _table_source(shape), key_filter, key_filter,
                           DiffStats("full", reason, rows_staged=staged))
        drop_temp(live_conn, hashes)
    return result


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
    # whole_tables: a large table's scan outlasts a web request's statement_timeout, and a
    # table read in part (row-level security) would look like missing rows.
    with connect(live_dsn, autocommit=True, whole_tables=True) as live_conn, \
            connect(copy_dsn, autocommit=True, whole_tables=True) as copy_conn:
        for conn in (live_conn, copy_conn):
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
        # Rolled back at the end: nothing but temp tables was written, on the live side only.
        with live_conn.transaction(force_rollback=True), \
                copy_conn.transaction(force_rollback=True):
            return [_diff_whole(live_conn, copy_conn, t, method, tuning) for t in tables]


def _diff_whole(live_conn: Connection[Any], copy_conn: Connection[Any], table: TableRef,
                method: Method, tuning: RangeTuning | None) -> TableDiff:
    """:func:`diff_table`, where row-level security that would hide rows (refused, on a
    session that turned row_security off) is an error that says what to change."""
    try:
        return diff_table(live_conn, copy_conn, table, method=method, tuning=tuning)
    except errors.InsufficientPrivilege as exc:
        if "row-level security" not in str(exc):
            raise
        raise PostgresError(
            f"{table}: {exc}. The diff reads whole tables, and row-level security would hide "
            f"rows from the role it reads them with ({live_conn.info.user!r} on production): "
            "use a connection string whose role owns the table or has BYPASSRLS"
        ) from exc

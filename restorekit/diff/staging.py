"""Temp tables on the live side and the copy's ``(key, md5 of the row)`` pairs streamed into them.

Row text depends on session settings (TimeZone, DateStyle, ...), so both sessions are pinned to
:data:`restorekit.pg.checksum.PINNED_SETTINGS` while hashing (:func:`pinned_both`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from psycopg import Connection, sql

from restorekit.diff.compose import ALIAS, idents, row_hash, where_clause
from restorekit.diff.shape import TableShape
from restorekit.errors import ConfigError
from restorekit.pg.catalog import TableRef
from restorekit.pg.checksum import pinned_output_settings
from restorekit.pg.copy import CopyFormat, copy_rows


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


def _table_source(shape: TableShape) -> sql.Composed:
    """The live table as a FROM item under :data:`ALIAS`."""
    return sql.SQL("{} AS {}").format(shape.table.ident, ALIAS)


def _stage_hashes(
    live_conn: Connection[Any], copy_conn: Connection[Any], shape: TableShape,
    copy_query: sql.Composable,
) -> tuple[TableRef, int]:
    """Stream ``copy_query``'s ``(key..., row md5)`` rows into a new live temp table, analyzed."""
    # The hash column is uuid on both sides, so the key types alone decide the format.
    return stage_query(copy_conn, live_conn, copy_query, shape.table, shape.key, "hashes",
                       fmt=shape.key_format, hash_column=shape.hash_column)


def stage_query(
    src_conn: Connection[Any],
    dst_conn: Connection[Any],
    query: sql.Composable,
    like: TableRef,
    columns: Sequence[str],
    purpose: str,
    *,
    fmt: CopyFormat,
    hash_column: str | None = None,
    analyze: bool = True,
) -> tuple[TableRef, int]:
    """Stream ``query``'s rows from ``src_conn`` with COPY into a new temp table on
    ``dst_conn`` that has the types of ``columns`` of ``like`` (plus a uuid ``hash_column``).

    Args:
        analyze: ANALYZE the temp table (the default): temp tables are never auto-analyzed,
            and without statistics the joins over them plan badly. A table that is only read
            whole (an INSERT ... SELECT) needs none.

    Returns:
        The temp table and the number of rows streamed.
    """
    extra = (None if hash_column is None
             else sql.SQL("NULL::uuid AS {}").format(sql.Identifier(hash_column)))
    temp = create_temp_like(dst_conn, like, columns, purpose, extra=extra)
    into = [*columns] if hash_column is None else [*columns, hash_column]
    rows = copy_rows(src_conn, dst_conn, query, None, temp, into, fmt=fmt)
    if analyze:
        dst_conn.execute(sql.SQL("ANALYZE {}").format(temp.ident))
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
    return _stage_hashes(live_conn, copy_conn, shape, hashes_query(shape, key_filter))[0]


def hashes_query(shape: TableShape, key_filter: sql.Composable | None = None) -> sql.Composed:
    """``SELECT key..., row md5 FROM table AS t [WHERE key_filter]``: a side's pairs."""
    return sql.SQL("SELECT {key}, {hash} FROM {table} AS {t}{where}").format(
        key=shape.key_idents(ALIAS), hash=row_hash(shape.columns), table=shape.table.ident,
        t=ALIAS, where=where_clause(key_filter),
    )


@contextmanager
def pinned_both(*conns: Connection[Any]) -> Iterator[None]:
    """Pin the output settings of every session for the block (row text must match)."""
    with ExitStack() as stack:
        for conn in conns:
            stack.enter_context(pinned_output_settings(conn))
        yield

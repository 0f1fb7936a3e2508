"""Stream rows between two databases with COPY, with no intermediate file.

``COPY (query) TO STDOUT`` on the source is read block by block and every block is written, as
is, into ``COPY table (columns) FROM STDIN`` on the destination. Memory stays at one block
(PostgreSQL sends about one row per block) whatever the table size, and the server does all
parsing and formatting.

Formats:

* ``binary`` (default) is the fastest and round-trips every value exactly, but the source query's
  column types must be *identical* to the destination columns' types: ``integer`` into
  ``bigint`` fails with "incorrect binary data format", ``text`` into ``jsonb`` fails too.
  :func:`copy_table` compares the two tables' column types (``format_type`` text, typmods
  included) before it starts.
* ``text`` lets PostgreSQL cast each value from its text form, so compatible-but-different
  types (``int`` into ``bigint``, ``varchar`` into ``text``) work, at some CPU cost.

Neither function commits: the destination rows become visible when the caller commits
``dst_conn`` (or immediately when it is in autocommit mode). A failure aborts the destination
COPY as a whole, so a failed copy writes no rows once the caller rolls back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import psycopg
from psycopg import Connection, sql

from restorekit.errors import ConfigError, PostgresError
from restorekit.pg import catalog
from restorekit.pg.catalog import TableRef

log = logging.getLogger(__name__)

CopyFormat = Literal["binary", "text"]

_FORMATS: Mapping[str, sql.SQL] = {"binary": sql.SQL("binary"), "text": sql.SQL("text")}

_COPY_OUT = sql.SQL("COPY ({query}) TO STDOUT (FORMAT {fmt})")
_COPY_IN = sql.SQL("COPY {table} ({columns}) FROM STDIN (FORMAT {fmt})")


def _format(fmt: str) -> sql.SQL:
    try:
        return _FORMATS[fmt]
    except KeyError:
        raise ConfigError(f"unknown COPY format {fmt!r}; use 'binary' or 'text'") from None


def copy_rows(
    src_conn: Connection[Any],
    dst_conn: Connection[Any],
    src_query: sql.Composable,
    params: Sequence[Any] | Mapping[str, Any] | None,
    dst_table: TableRef,
    columns: Sequence[str],
    *,
    fmt: CopyFormat = "binary",
    progress: Callable[[int], None] | None = None,
) -> int:
    """Copy the result of ``src_query`` on ``src_conn`` into ``dst_table`` on ``dst_conn``.

    Args:
        src_conn: where the rows are read (any isolation; run it in a REPEATABLE READ
            transaction to read several tables from one snapshot).
        dst_conn: where the rows are written; not committed here.
        src_query: a SELECT whose output columns match ``columns`` in order and, for
            ``fmt="binary"``, in type. Parameters are bound client-side (COPY takes no server
            parameters), so with params a literal ``%`` must be written ``%%``.
        params: values for the placeholders in ``src_query``, or None.
        dst_table: the destination table.
        columns: destination column names, in the order the query produces them.
        fmt: ``"binary"`` (exact types required) or ``"text"`` (values cast by the server).
        progress: called with the running total of bytes copied after each block.

    Returns:
        The number of rows the destination COPY stored.

    Raises:
        ConfigError: no columns, or an unknown format.
        PostgresError: either side failed; the message says which. The destination COPY is
            aborted, so the caller should roll ``dst_conn`` back.
    """
    if not columns:
        raise ConfigError(f"copy into {dst_table}: no columns given")
    form = _format(fmt)
    copy_out = _COPY_OUT.format(query=src_query, fmt=form)
    copy_in = _COPY_IN.format(
        table=dst_table.ident, columns=sql.SQL(", ").join(map(sql.Identifier, columns)), fmt=form
    )
    copied_bytes = 0
    side = "source"
    try:
        with src_conn.cursor() as src_cur, dst_conn.cursor() as dst_cur:
            with src_cur.copy(copy_out, params) as out:
                side = "destination"
                with dst_cur.copy(copy_in) as into:
                    side = "source"
                    for block in out:
                        side = "destination"
                        into.write(block)
                        side = "source"
                        copied_bytes += len(block)
                        if progress is not None:
                            progress(copied_bytes)
                    side = "destination"
                # Leaving the COPY FROM block sends the end-of-data message; the server's
                # "COPY n" reply sets rowcount.
                rows = dst_cur.rowcount
    except psycopg.Error as exc:
        diag = exc.diag.message_primary or str(exc)
        raise PostgresError(f"copy into {dst_table} failed on the {side} side: {diag}") from exc
    log.debug("copied %d rows (%d bytes) into %s", rows, copied_bytes, dst_table)
    return rows


def copy_table(
    src_conn: Connection[Any],
    dst_conn: Connection[Any],
    table: TableRef,
    *,
    columns: Sequence[str] | None = None,
    where: sql.Composable | None = None,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
    dst_table: TableRef | None = None,
    fmt: CopyFormat = "binary",
    progress: Callable[[int], None] | None = None,
) -> int:
    """Copy (some of) the rows of ``table`` from one database into another.

    Example:
        Copy back the clients of two deleted users from a restored scratch database::

            copy_table(scratch, prod, TableRef("public", "clients"),
                       where=sql.SQL("user_id = ANY(%s)"), params=[[17, 42]])

    Args:
        src_conn: the source database.
        dst_conn: the destination database; not committed here.
        table: the source table.
        columns: the columns to copy; default every column of the source table that is not a
            generated (computed) column, since COPY refuses values for those.
        where: a condition on the source rows, composed with ``sql.SQL``/``sql.Identifier``
            and placeholders (never formatted text).
        params: values for the placeholders in ``where``.
        dst_table: the destination table; default the same name as ``table``.
        fmt: ``"binary"`` or ``"text"``; see the module docstring.
        progress: called with the running total of bytes copied.

    Returns:
        The number of rows copied.

    Raises:
        ConfigError: a table or column is missing on either side, or (binary format) a column's
            type differs between the two sides.
        PostgresError: the copy itself failed.
    """
    dst_table = dst_table or table
    src_cols = catalog.columns(src_conn, table)
    if columns is None:
        columns = [c.name for c in src_cols if not c.generated]
    else:
        columns = list(columns)
    src_types = {c.name: c.data_type for c in src_cols}
    dst_types = {c.name: c.data_type for c in catalog.columns(dst_conn, dst_table)}
    for side, types, ref in (("source", src_types, table), ("destination", dst_types, dst_table)):
        absent = [c for c in columns if c not in types]
        if absent:
            raise ConfigError(f"{side} table {ref} has no column(s): {', '.join(absent)}")
    if fmt == "binary":
        mismatched = [
            f"{c} ({src_types[c]} -> {dst_types[c]})"
            for c in columns
            if src_types[c] != dst_types[c]
        ]
        if mismatched:
            raise ConfigError(
                f"binary COPY from {table} to {dst_table} needs identical column types; "
                f"these differ: {', '.join(mismatched)}. Use fmt='text'."
            )

    query = sql.SQL("SELECT {columns} FROM {table}").format(
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)), table=table.ident
    )
    if where is not None:
        query = sql.SQL("{query} WHERE {where}").format(query=query, where=where)
    return copy_rows(
        src_conn, dst_conn, query, params, dst_table, columns, fmt=fmt, progress=progress
    )

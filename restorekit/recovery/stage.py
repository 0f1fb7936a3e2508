"""Staging: key lists sent to the copy, and rows streamed from the copy into live temp tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Connection, sql

from restorekit.diff import (
    ALIAS,
    TableShape,
    idents,
    jsonable_key,
    stage_query,
)
from restorekit.errors import ConfigError
from restorekit.pg.catalog import TableRef


def _stage_copy_keys(
    live_conn: Connection[Any], copy_conn: Connection[Any], shape: TableShape
) -> TableRef:
    """Every key of the copy's table, streamed into a live temp table (analyzed)."""
    query = sql.SQL("SELECT {key} FROM {table} AS {t}").format(
        key=shape.key_idents(ALIAS), table=shape.table.ident, t=ALIAS
    )
    return stage_query(copy_conn, live_conn, query, shape.table, shape.key, "copykeys",
                       fmt=shape.key_format)[0]


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


def _stage_rows(
    copy_conn: Connection[Any], live_conn: Connection[Any], shape: TableShape,
    source: sql.Composable, *, analyze: bool,
) -> tuple[TableRef, int]:
    """Stream ``SELECT columns FROM source`` on the copy into a new live temp table; ``analyze``
    it when it will be joined (an INSERT ... SELECT reading it whole needs no statistics)."""
    query = sql.SQL("SELECT {cols} FROM {source}").format(
        cols=shape.column_idents(ALIAS), source=source
    )
    return stage_query(copy_conn, live_conn, query, shape.table, shape.columns, "stage",
                       fmt=shape.row_format, analyze=analyze)

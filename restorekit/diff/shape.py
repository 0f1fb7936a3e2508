"""What both sides agree on for one table (:class:`TableShape`): its key, the columns compared and
the COPY format that is safe for each.

A table without a primary key cannot be diffed row by row (two identical rows cannot be told
apart), and is refused with a :class:`~restorekit.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import Connection, sql

from restorekit.diff.compose import idents
from restorekit.errors import ConfigError
from restorekit.pg import catalog
from restorekit.pg.catalog import TableRef
from restorekit.pg.copy import CopyFormat


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

"""SQL pieces composed over a table's columns: identifier lists, key matches, the row hash.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

# The two sides' rows are always read through this alias, so a ``key_filter`` can say ``t.id``.
ALIAS = sql.Identifier("t")


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


def where_clause(condition: sql.Composable | None) -> sql.Composable:
    return sql.SQL("") if condition is None else sql.SQL(" WHERE ({})").format(condition)

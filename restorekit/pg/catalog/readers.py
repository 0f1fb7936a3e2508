"""The catalog queries and the single-purpose readers built on them (one query each)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from psycopg import Connection, sql

from restorekit.errors import ConfigError
from restorekit.pg.catalog.names import (
    _FK_ACTIONS,
    SYSTEM_SCHEMAS,
    Column,
    ForeignKey,
    TableRef,
)

V = TypeVar("V")

# -- queries -----------------------------------------------------------------------------------

# relkind r = ordinary table, p = partitioned table. Partitions (relispartition) are left out.
_TABLES = sql.SQL(
    """
    SELECT n.nspname, c.relname
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND NOT c.relispartition
      AND n.nspname <> ALL(%(system)s::text[])
      AND n.nspname !~ '^pg_(toast_)?temp_'  -- other sessions' temporary tables
      AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s::text[]))
    """
)

# The wanted tables arrive as two parallel arrays and are matched by name, so no name is ever
# turned into a regclass literal.
_WANTED = sql.SQL(
    """
    WITH want AS (
        SELECT w.nspname, w.relname, c.oid AS relid, c.relkind, c.reltuples
        FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS w(nspname, relname)
        LEFT JOIN pg_namespace n ON n.nspname = w.nspname
        LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.relname
                             AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
    )
    """
)

_COLUMNS = _WANTED + sql.SQL(
    """
    SELECT w.nspname, w.relname, w.relid,
           a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attnum,
           a.attgenerated <> ''
    FROM want w
    LEFT JOIN pg_attribute a ON a.attrelid = w.relid AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY w.nspname, w.relname, a.attnum
    """
)

_PRIMARY_KEYS = _WANTED + sql.SQL(
    """
    SELECT w.nspname, w.relname, w.relid,
           array(SELECT a.attname
                 FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
                 ORDER BY k.ord)
    FROM want w
    LEFT JOIN pg_constraint con ON con.conrelid = w.relid AND con.contype = 'p'
    """
)

_ESTIMATED_ROWS = _WANTED + sql.SQL(
    """
    SELECT w.nspname, w.relname, w.relid,
           -- reltuples is -1 until the first VACUUM/ANALYZE (PostgreSQL 14+); a partitioned
           -- parent has no rows of its own, so its leaves are summed.
           CASE WHEN w.relkind = 'p' THEN
               (SELECT coalesce(sum(greatest(lc.reltuples, 0)), 0)
                FROM pg_partition_tree(w.relid) AS pt
                JOIN pg_class lc ON lc.oid = pt.relid
                WHERE pt.isleaf)
           ELSE greatest(w.reltuples, 0)
           END::bigint
    FROM want w
    """
)

# conparentid <> 0 marks the per-partition clones of a constraint declared on a partitioned table.
_FOREIGN_KEYS = sql.SQL(
    """
    SELECT con.conname,
           cn.nspname, cc.relname,
           array(SELECT a.attname
                 FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
                 ORDER BY k.ord),
           pn.nspname, pc.relname,
           array(SELECT a.attname
                 FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
                 ORDER BY k.ord),
           con.confdeltype, con.confupdtype
    FROM pg_constraint con
    JOIN pg_class cc ON cc.oid = con.conrelid
    JOIN pg_namespace cn ON cn.oid = cc.relnamespace
    JOIN pg_class pc ON pc.oid = con.confrelid
    JOIN pg_namespace pn ON pn.oid = pc.relnamespace
    WHERE con.contype = 'f'
      AND con.conparentid = 0
      AND cn.nspname <> ALL(%(system)s::text[])
      AND (%(schemas)s::text[] IS NULL OR cn.nspname = ANY(%(schemas)s::text[]))
    """
)


def _want_params(tables: Sequence[TableRef]) -> dict[str, Any]:
    tables = list(dict.fromkeys(tables))
    return {"schemas": [t.schema for t in tables], "names": [t.name for t in tables]}


def _missing(tables: Iterable[TableRef]) -> ConfigError:
    names = ", ".join(str(t) for t in sorted(set(tables)))
    return ConfigError(f"table not found: {names}")


def _schemas_param(schemas: Sequence[str] | None) -> list[str] | None:
    # A bare string is a Sequence[str] too; treat it as one schema, not as its letters.
    if isinstance(schemas, str):
        return [schemas]
    return list(schemas) if schemas is not None else None


def _one_per_table(conn: Connection[Any], query: sql.Composed, tables: Sequence[TableRef],
                   value: Callable[[Any], V]) -> dict[TableRef, V]:
    """``value`` of the one item ``query`` (a ``_WANTED`` query) reads per table.

    Raises:
        ConfigError: a table does not exist (all missing ones are named).
    """
    result: dict[TableRef, V] = {}
    missing: list[TableRef] = []
    for schema, name, relid, item in conn.execute(query, _want_params(tables)):
        ref = TableRef(schema, name)
        if relid is None:
            missing.append(ref)
        else:
            result[ref] = value(item)
    if missing:
        raise _missing(missing)
    return result


# -- single-purpose readers --------------------------------------------------------------------


def list_tables(conn: Connection[Any], schemas: Sequence[str] | None = None) -> list[TableRef]:
    """Ordinary and partitioned (parent) tables in user schemas, sorted by schema and name.

    Args:
        conn: an open connection.
        schemas: only these schemas; all non-system schemas when None.
    """
    rows = conn.execute(
        _TABLES, {"system": list(SYSTEM_SCHEMAS), "schemas": _schemas_param(schemas)}
    ).fetchall()
    # Sorted here, not by ORDER BY: the database's collation must not decide the order.
    return sorted(TableRef(schema, name) for schema, name in rows)


def load_columns(
    conn: Connection[Any], tables: Sequence[TableRef]
) -> dict[TableRef, list[Column]]:
    """:func:`columns` of several tables in one query.

    Raises:
        ConfigError: a table does not exist (all missing ones are named).
    """
    result: dict[TableRef, list[Column]] = {}
    missing: list[TableRef] = []
    for schema, name, relid, col, typ, not_null, num, generated in conn.execute(
        _COLUMNS, _want_params(tables)
    ):
        ref = TableRef(schema, name)
        if relid is None:
            missing.append(ref)
            continue
        cols = result.setdefault(ref, [])
        if col is not None:
            cols.append(Column(col, typ, bool(not_null), int(num), bool(generated)))
    if missing:
        raise _missing(missing)
    return result


def load_primary_keys(
    conn: Connection[Any], tables: Sequence[TableRef]
) -> dict[TableRef, tuple[str, ...]]:
    """:func:`primary_key` of several tables in one query.

    Raises:
        ConfigError: a table does not exist (all missing ones are named).
    """
    return _one_per_table(conn, _PRIMARY_KEYS, tables, lambda key: tuple(key or ()))


def columns(conn: Connection[Any], table: TableRef) -> list[Column]:
    """The live columns of ``table`` in ordinal order (dropped columns left out).

    Raises:
        ConfigError: the table does not exist.
    """
    return load_columns(conn, [table])[table]


def primary_key(conn: Connection[Any], table: TableRef) -> tuple[str, ...]:
    """The primary-key column names of ``table`` in key order; ``()`` when it has none.

    Raises:
        ConfigError: the table does not exist.
    """
    return load_primary_keys(conn, [table])[table]


def foreign_keys(conn: Connection[Any], schemas: Sequence[str] | None = None) -> list[ForeignKey]:
    """Every foreign key whose child (referencing) table is in ``schemas`` (all user schemas
    when None), sorted by child table and constraint name. The parent may be in any schema."""
    rows = conn.execute(
        _FOREIGN_KEYS, {"system": list(SYSTEM_SCHEMAS), "schemas": _schemas_param(schemas)}
    ).fetchall()
    fks = [
        ForeignKey(
            name=conname,
            child=TableRef(c_schema, c_name),
            child_columns=tuple(c_cols),
            parent=TableRef(p_schema, p_name),
            parent_columns=tuple(p_cols),
            on_delete=_FK_ACTIONS[del_type],
            on_update=_FK_ACTIONS[upd_type],
        )
        for conname, c_schema, c_name, c_cols, p_schema, p_name, p_cols, del_type, upd_type in rows
    ]
    return sorted(fks, key=lambda fk: (fk.child, fk.name))


def estimated_rows(conn: Connection[Any], tables: Iterable[TableRef]) -> dict[TableRef, int]:
    """The planner's row estimate per table (``pg_class.reltuples``), in one query.

    Cheap and approximate: good for progress bars and plans, not for verification (use
    ``count(*)`` or :mod:`restorekit.pg.checksum`). A never-analyzed table reports 0.

    Raises:
        ConfigError: a table does not exist.
    """
    wanted = list(dict.fromkeys(tables))
    if not wanted:
        return {}
    return _one_per_table(conn, _ESTIMATED_ROWS, wanted, int)

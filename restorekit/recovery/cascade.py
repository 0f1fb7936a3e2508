"""The cascade closure on the copy: the root rows with the given keys and, table by table, every
row an ``ON DELETE CASCADE`` from an already-selected row reaches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Connection, sql

from restorekit.diff import (
    ALIAS,
    TableShape,
    create_temp_like,
    key_match,
)
from restorekit.pg.catalog import FkGraph, ForeignKey, TableRef


def _cascade_fks(graph: FkGraph, child: TableRef, parents: Sequence[TableRef]) -> list[ForeignKey]:
    return [fk for fk in graph.foreign_keys
            if fk.child == child and fk.parent in parents and fk.on_delete == "cascade"]


def _references(fk: ForeignKey, parent_rows: TableRef) -> sql.Composed:
    """``EXISTS (SELECT FROM parent_rows p WHERE p.pcol = t.ccol ...)``."""
    p = sql.Identifier("p")
    match = sql.SQL(" AND ").join(
        sql.SQL("{p}.{pc} = {t}.{cc}").format(p=p, pc=sql.Identifier(pc), t=ALIAS,
                                              cc=sql.Identifier(cc))
        for pc, cc in zip(fk.parent_columns, fk.child_columns, strict=True)
    )
    return sql.SQL("EXISTS (SELECT FROM {rows} AS {p} WHERE {match})").format(
        rows=parent_rows.ident, p=p, match=match
    )


def _select_on_copy(
    copy_conn: Connection[Any],
    graph: FkGraph,
    tables: Sequence[TableRef],
    shapes: dict[TableRef, TableShape],
    root: TableRef,
    root_keys: TableRef,
    *,
    include_cascade: bool,
) -> dict[TableRef, TableRef]:
    """On the copy: the root rows with the given keys, then, table by table (parents first),
    the rows an ON DELETE CASCADE from an already-selected row reaches. Each set goes into a
    copy-side temp table; self-referencing cascades are followed until nothing new is found."""
    selected: dict[TableRef, TableRef] = {}
    k, x = sql.Identifier("k"), sql.Identifier("x")
    for table in tables:
        shape = shapes[table]
        rows = create_temp_like(copy_conn, table, (), "rows", extra=sql.SQL("{}.*").format(ALIAS))
        insert = sql.SQL("INSERT INTO {rows} SELECT {t}.* FROM {table} AS {t} WHERE ").format(
            rows=rows.ident, t=ALIAS, table=table.ident
        )
        not_yet = sql.SQL(" AND NOT EXISTS (SELECT FROM {rows} AS {x} WHERE {m})").format(
            rows=rows.ident, x=x, m=key_match(shape.key, x, ALIAS)
        )
        if table == root:
            copy_conn.execute(insert + sql.SQL("EXISTS (SELECT FROM {keys} AS {k} WHERE {m})")
                              .format(keys=root_keys.ident, k=k, m=key_match(shape.key, k, ALIAS)))
        else:
            # Parents come first in ``tables``, so every cascading parent is selected already.
            # One statement per foreign key (not one OR of them) so each can use its index.
            for fk in _cascade_fks(graph, table, [t for t in selected if t != table]):
                copy_conn.execute(insert + _references(fk, selected[fk.parent]) + not_yet)
        if include_cascade:
            for fk in _cascade_fks(graph, table, [table]):
                step = insert + _references(fk, rows) + not_yet
                # One statement per level of the hierarchy, not per row.
                while copy_conn.execute(step).rowcount > 0:
                    pass
        copy_conn.execute(sql.SQL("ANALYZE {}").format(rows.ident))
        selected[table] = rows
    return selected

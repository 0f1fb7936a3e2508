"""A whole catalog read at one moment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import Connection

from restorekit.pg.catalog.graph import FkGraph
from restorekit.pg.catalog.names import Column, ForeignKey, TableRef
from restorekit.pg.catalog.readers import (
    foreign_keys,
    list_tables,
    load_columns,
    load_primary_keys,
)

# -- snapshot ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalog:
    """Tables, their columns and keys, and the foreign keys between them, read at one moment."""

    tables: tuple[TableRef, ...]
    columns: Mapping[TableRef, tuple[Column, ...]]
    primary_keys: Mapping[TableRef, tuple[str, ...]]
    foreign_keys: tuple[ForeignKey, ...]
    graph: FkGraph = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "graph", FkGraph(self.foreign_keys))

    def __contains__(self, table: object) -> bool:
        return table in self.columns

    def load_order(self, *, break_cycles: bool = False) -> list[TableRef]:
        """Every table, parents before children (see :meth:`FkGraph.topological_order`)."""
        return self.graph.topological_order(self.tables, break_cycles=break_cycles)


def snapshot(conn: Connection[Any], schemas: Sequence[str] | None = None) -> Catalog:
    """Read tables, columns, primary keys and foreign keys in four queries.

    Run it inside a REPEATABLE READ transaction when DDL may be running concurrently and the
    four reads must agree.
    """
    tables = list_tables(conn, schemas)
    cols = load_columns(conn, tables) if tables else {}
    pks = load_primary_keys(conn, tables) if tables else {}
    return Catalog(
        tables=tuple(tables),
        columns={t: tuple(cols[t]) for t in tables},
        primary_keys={t: pks[t] for t in tables},
        foreign_keys=tuple(foreign_keys(conn, schemas)),
    )

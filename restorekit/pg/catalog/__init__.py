"""Catalog introspection: tables, columns, keys and the foreign-key graph.

Everything here reads ``pg_catalog`` directly (not ``information_schema``): the catalog gives
composite keys in key order, the ON DELETE action of each foreign key and the planner's row
estimates, and it does not hide objects the current role merely cannot access.

Tables are named by :class:`TableRef`; SQL is always built from :attr:`TableRef.ident`, so a
table called ``"Robert'); DROP TABLE students;--"`` is just a strange name. Catalog lookups pass
schema and table names as query parameters and never as SQL text.

Partitions are not listed as tables of their own: the partitioned parent stands for its whole tree
(COPY, checksums and row counts through the parent cover every partition), and foreign keys are
reported once, on the constraint the user declared, not on every partition clone of it.
"""

from restorekit.pg.catalog.graph import FkGraph
from restorekit.pg.catalog.names import (
    SYSTEM_SCHEMAS,
    Column,
    FkAction,
    ForeignKey,
    TableRef,
    split_qualified,
)
from restorekit.pg.catalog.readers import (
    columns,
    estimated_rows,
    foreign_keys,
    list_tables,
    load_columns,
    load_primary_keys,
    primary_key,
)
from restorekit.pg.catalog.snapshot import Catalog, snapshot

__all__ = [
    "SYSTEM_SCHEMAS",
    "Catalog",
    "Column",
    "FkAction",
    "FkGraph",
    "ForeignKey",
    "TableRef",
    "columns",
    "estimated_rows",
    "foreign_keys",
    "list_tables",
    "load_columns",
    "load_primary_keys",
    "primary_key",
    "snapshot",
    "split_qualified",
]

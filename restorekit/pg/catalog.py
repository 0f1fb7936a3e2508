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

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from psycopg import Connection, sql

from restorekit.errors import ConfigError

SYSTEM_SCHEMAS: tuple[str, ...] = ("pg_catalog", "information_schema", "pg_toast")

FkAction = Literal["cascade", "set null", "set default", "restrict", "no action"]

# pg_constraint.confdeltype / confupdtype codes.
_FK_ACTIONS: Mapping[str, FkAction] = {
    "a": "no action",
    "r": "restrict",
    "c": "cascade",
    "n": "set null",
    "d": "set default",
}

# An identifier PostgreSQL would print without quotes (quote_ident's rule, minus keywords).
_PLAIN_IDENT = re.compile(r"[a-z_][a-z0-9_$]*")  # used with fullmatch: `$` would allow a trailing newline
# What the SQL lexer accepts as an unquoted identifier: letters (any non-ASCII too), digits, _ $.
_UNQUOTED_IDENT = re.compile(r"^[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*$")


def _quote_if_needed(name: str) -> str:
    if _PLAIN_IDENT.fullmatch(name):
        return name
    return '"' + name.replace('"', '""') + '"'


def _fold(name: str) -> str:
    # PostgreSQL folds unquoted identifiers to lower case for ASCII letters only.
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in name)


def split_qualified(text: str) -> list[str]:
    """Split ``a.b`` / ``"A.b"."c""d"`` into identifier parts, folding unquoted ones."""
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] == '"':
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise ConfigError(f"unterminated quoted identifier in table name {text!r}")
                if text[i] == '"':
                    if i + 1 < n and text[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(text[i])
                i += 1
            part = "".join(buf)
            if not part:
                raise ConfigError(f"empty quoted identifier in table name {text!r}")
        else:
            start = i
            while i < n and text[i] != "." and not text[i].isspace():
                i += 1
            raw = text[start:i]
            if not _UNQUOTED_IDENT.match(raw):
                raise ConfigError(
                    f"not a valid table name: {text!r} (quote names with special characters, "
                    'e.g. public."My Table")'
                )
            part = _fold(raw)
        if "\x00" in part:
            raise ConfigError(f"table name {text!r} contains a NUL character")
        if len(part.encode()) > 63:
            raise ConfigError(
                f"name {part!r} is longer than 63 bytes: PostgreSQL would truncate it")
        parts.append(part)
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return parts
        if text[i] != ".":
            raise ConfigError(f"not a valid table name: {text!r}")
        i += 1


@dataclass(frozen=True, slots=True, order=True)
class TableRef:
    """A schema-qualified table name, held unquoted (exactly as stored in ``pg_class``).

    Sorting is by (schema, name). Build SQL from :attr:`ident`; ``str()`` is for people.
    """

    schema: str
    name: str

    @property
    def ident(self) -> sql.Identifier:
        """The schema-qualified identifier to compose into SQL."""
        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return f"{_quote_if_needed(self.schema)}.{_quote_if_needed(self.name)}"

    @classmethod
    def parse(cls, text: str, default_schema: str = "public") -> TableRef:
        """Read ``name``, ``schema.name`` or their quoted forms the way PostgreSQL does.

        Unquoted parts are folded to lower case (``Users`` is ``users``); double-quoted parts
        are taken literally and may contain dots and doubled quotes (``"a.b"."x""y"``).
        ``parse(str(ref)) == ref`` for every ref.

        Raises:
            ConfigError: the text is empty, malformed or has more than two parts.
        """
        if not text or not text.strip():
            raise ConfigError("empty table name")
        parts = split_qualified(text.strip())
        if len(parts) == 1:
            return cls(default_schema, parts[0])
        if len(parts) == 2:
            return cls(parts[0], parts[1])
        raise ConfigError(
            f"table name {text!r} has {len(parts)} parts; expected name or schema.name"
        )


@dataclass(frozen=True, slots=True)
class Column:
    """A live (not dropped) column of a table.

    ``generated`` marks ``GENERATED ALWAYS AS (...) STORED`` columns, which COPY FROM and INSERT
    refuse values for; identity columns are not ``generated`` (COPY may write them).
    """

    name: str
    data_type: str  # format_type() text, e.g. "character varying(20)", "timestamp with time zone"
    not_null: bool
    ordinal: int
    generated: bool = False


@dataclass(frozen=True, slots=True)
class ForeignKey:
    """One foreign-key constraint; column tuples are in constraint (key) order."""

    name: str
    child: TableRef
    child_columns: tuple[str, ...]
    parent: TableRef
    parent_columns: tuple[str, ...]
    on_delete: FkAction
    on_update: FkAction

    @property
    def self_referencing(self) -> bool:
        return self.child == self.parent


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
    result: dict[TableRef, tuple[str, ...]] = {}
    missing: list[TableRef] = []
    for schema, name, relid, key in conn.execute(_PRIMARY_KEYS, _want_params(tables)):
        ref = TableRef(schema, name)
        if relid is None:
            missing.append(ref)
        else:
            result[ref] = tuple(key or ())
    if missing:
        raise _missing(missing)
    return result


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
    result: dict[TableRef, int] = {}
    missing: list[TableRef] = []
    for schema, name, relid, estimate in conn.execute(_ESTIMATED_ROWS, _want_params(wanted)):
        ref = TableRef(schema, name)
        if relid is None:
            missing.append(ref)
        else:
            result[ref] = int(estimate)
    if missing:
        raise _missing(missing)
    return result


# -- the foreign-key graph ---------------------------------------------------------------------


class FkGraph:
    """Parent/child relations between tables, from a list of foreign keys.

    An edge runs from the referenced (parent) table to the referencing (child) table. Self
    references (``employees.manager_id -> employees.id``) are kept for :meth:`parents_of` and
    :meth:`children_of` but never constrain an ordering.

    Cycles between different tables (``a -> b -> a``) make :meth:`topological_order` raise
    :class:`~restorekit.errors.ConfigError` naming the tables of every cycle, unless it is called
    with ``break_cycles=True``: then each cycle is emitted as a block, in name order, once all of
    its parents outside the cycle have been emitted. Loading such a block needs deferred or
    nullable foreign keys; the graph cannot decide that for you.
    """

    def __init__(self, fks: Iterable[ForeignKey]) -> None:
        self.foreign_keys: tuple[ForeignKey, ...] = tuple(fks)
        self._parents: dict[TableRef, set[TableRef]] = {}
        self._children: dict[TableRef, set[TableRef]] = {}
        self._cascade_children: dict[TableRef, set[TableRef]] = {}
        for fk in self.foreign_keys:
            self._parents.setdefault(fk.child, set()).add(fk.parent)
            self._children.setdefault(fk.parent, set()).add(fk.child)
            if fk.on_delete == "cascade":
                self._cascade_children.setdefault(fk.parent, set()).add(fk.child)

    @property
    def tables(self) -> list[TableRef]:
        """Every table that takes part in at least one foreign key, sorted."""
        return sorted(set(self._parents) | set(self._children))

    def parents_of(self, table: TableRef) -> list[TableRef]:
        """Tables ``table`` references, sorted (itself included when self-referencing)."""
        return sorted(self._parents.get(table, ()))

    def children_of(self, table: TableRef) -> list[TableRef]:
        """Tables that reference ``table``, sorted (itself included when self-referencing)."""
        return sorted(self._children.get(table, ()))

    def topological_order(
        self, tables: Iterable[TableRef], *, break_cycles: bool = False
    ) -> list[TableRef]:
        """Order ``tables`` so that every parent comes before its children.

        Only foreign keys between two of the given tables count. Ties are broken by name, so the
        result is the same for the same input on every run.

        Args:
            tables: the tables to order; unknown tables are fine (they have no edges).
            break_cycles: emit cycles as name-ordered blocks instead of raising.

        Raises:
            ConfigError: the tables contain a foreign-key cycle and ``break_cycles`` is False.
        """
        nodes = sorted(set(tables))
        members = set(nodes)
        edges = {
            t: sorted(c for c in self._children.get(t, ()) if c in members and c != t)
            for t in nodes
        }
        components = _strongly_connected(nodes, edges)
        cycles = [comp for comp in components if len(comp) > 1]
        if cycles and not break_cycles:
            described = "; ".join(" <-> ".join(str(t) for t in comp) for comp in cycles)
            raise ConfigError(
                f"foreign-key cycle between tables: {described} "
                "(load them with deferred constraints, or ask for break_cycles=True)"
            )

        # Kahn's algorithm over the condensation (each cycle is one node), smallest name first.
        comp_of = {t: i for i, comp in enumerate(components) for t in comp}
        indegree = [0] * len(components)
        succ: list[set[int]] = [set() for _ in components]
        for parent, kids in edges.items():
            for kid in kids:
                a, b = comp_of[parent], comp_of[kid]
                if a != b and b not in succ[a]:
                    succ[a].add(b)
                    indegree[b] += 1
        ready = [(components[i][0], i) for i in range(len(components)) if indegree[i] == 0]
        heapq.heapify(ready)
        order: list[TableRef] = []
        while ready:
            _, i = heapq.heappop(ready)
            order.extend(components[i])
            for j in succ[i]:
                indegree[j] -= 1
                if indegree[j] == 0:
                    heapq.heappush(ready, (components[j][0], j))
        return order

    def cascade_closure(
        self, tables: Iterable[TableRef], *, break_cycles: bool = False
    ) -> list[TableRef]:
        """``tables`` plus every table an ON DELETE CASCADE reaches from them, parents first.

        This is the set a ``DELETE`` on ``tables`` can have removed rows from: deleting a user
        takes its clients and, through them (and directly), its appointments.
        ON DELETE SET NULL / SET DEFAULT children are not included: their rows survive, changed.

        Raises:
            ConfigError: the closure contains a foreign-key cycle and ``break_cycles`` is False.
        """
        seen: set[TableRef] = set()
        stack = list(tables)
        while stack:
            table = stack.pop()
            if table in seen:
                continue
            seen.add(table)
            stack.extend(self._cascade_children.get(table, ()))
        return self.topological_order(seen, break_cycles=break_cycles)


def _strongly_connected(
    nodes: Sequence[TableRef], edges: Mapping[TableRef, Sequence[TableRef]]
) -> list[list[TableRef]]:
    """Tarjan's algorithm, iterative (a schema with thousands of tables must not hit the
    recursion limit). Each component is returned sorted."""
    index: dict[TableRef, int] = {}
    low: dict[TableRef, int] = {}
    on_stack: set[TableRef] = set()
    stack: list[TableRef] = []
    result: list[list[TableRef]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[TableRef, int]] = [(root, 0)]
        while work:
            node, pos = work.pop()
            if pos == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            kids = edges.get(node, ())
            descended = False
            while pos < len(kids):
                kid = kids[pos]
                pos += 1
                if kid not in index:
                    work.append((node, pos))
                    work.append((kid, 0))
                    descended = True
                    break
                if kid in on_stack:
                    low[node] = min(low[node], index[kid])
            if descended:
                continue
            if low[node] == index[node]:
                comp: list[TableRef] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                result.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return result


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

"""The schema fingerprint: the shape of a database's user schemas (the ``prisma db pull`` step)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import Connection, sql

from restorekit.errors import ConfigError
from restorekit.pg.catalog import SYSTEM_SCHEMAS, TableRef


@dataclass(frozen=True, slots=True)
class ColumnShape:
    """A column as the schema declares it. ``default`` also spells identity/generated columns."""

    name: str
    type: str  # format_type(), qualified (public.mood), with COLLATE when not the type's default
    not_null: bool
    default: str | None = None

    def describe(self) -> str:
        text = self.type + (" NOT NULL" if self.not_null else " NULL")
        return text + (f" DEFAULT {self.default}" if self.default is not None else "")


@dataclass(frozen=True, slots=True)
class TableShape:
    """One table: its columns in order, constraints and indexes as PostgreSQL prints them.

    ``constraints`` and ``indexes`` are ``(name, definition)`` pairs sorted by name; definitions
    come from ``pg_get_constraintdef`` / ``pg_get_indexdef`` with every name schema-qualified.
    """

    name: str  # str(TableRef): public.users, "Crm"."Tenants"
    kind: str  # "table" or "partitioned table"
    columns: tuple[ColumnShape, ...]
    constraints: tuple[tuple[str, str], ...] = ()
    indexes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SchemaFingerprint:
    """The shape of a database's user schemas: the ``prisma db pull`` of the runbook.

    Covers tables (partitions are represented by their partitioned parent), columns (name,
    type, nullability, default), constraints (primary key, unique, foreign key, check,
    exclusion), indexes and enum types, in every non-system schema; objects owned by
    extensions are left out. Two databases with equal :attr:`digest` have the same shape.
    Row data, sequences' positions, privileges and installed extensions are not part of it.
    """

    tables: tuple[TableShape, ...]
    enums: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def digest(self) -> str:
        """sha256 (hex) of the canonical JSON form; stable across runs and machines."""
        payload = json.dumps(
            self._payload(), sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def _payload(self) -> dict[str, Any]:
        return {
            "tables": [
                {
                    "name": t.name,
                    "kind": t.kind,
                    "columns": [
                        {"name": c.name, "type": c.type, "not_null": c.not_null,
                         "default": c.default}
                        for c in t.columns
                    ],
                    "constraints": [list(pair) for pair in t.constraints],
                    "indexes": [list(pair) for pair in t.indexes],
                }
                for t in self.tables
            ],
            "enums": [[name, list(labels)] for name, labels in self.enums],
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self._payload(), "digest": self.digest}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SchemaFingerprint:
        """Rebuild a stored fingerprint.

        Raises:
            ConfigError: the data is malformed, or its ``digest`` does not match its content
                (the stored baseline was edited or damaged).
        """
        try:
            fp = cls.create(
                tables=[
                    TableShape(
                        name=str(t["name"]),
                        kind=str(t["kind"]),
                        columns=tuple(
                            ColumnShape(str(c["name"]), str(c["type"]), bool(c["not_null"]),
                                        None if c.get("default") is None else str(c["default"]))
                            for c in t["columns"]
                        ),
                        constraints=tuple((str(n), str(d)) for n, d in t.get("constraints", ())),
                        indexes=tuple((str(n), str(d)) for n, d in t.get("indexes", ())),
                    )
                    for t in data["tables"]
                ],
                enums=[
                    (str(n), tuple(str(v) for v in labels)) for n, labels in data.get("enums", ())
                ],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a schema fingerprint: {exc!r}") from exc
        stored = data.get("digest")
        if stored is not None and stored != fp.digest:
            raise ConfigError(
                "schema fingerprint digest does not match its content: the stored baseline was "
                "edited or damaged; capture a new one"
            )
        return fp

    @classmethod
    def create(
        cls,
        tables: Iterable[TableShape],
        enums: Iterable[tuple[str, Sequence[str]]] = (),
    ) -> SchemaFingerprint:
        """Build a fingerprint in canonical order (tables, constraints, indexes by name)."""
        canonical = [
            TableShape(
                name=t.name,
                kind=t.kind,
                columns=tuple(t.columns),  # column order is part of the shape
                constraints=tuple(sorted(t.constraints)),
                indexes=tuple(sorted(t.indexes)),
            )
            for t in tables
        ]
        return cls(
            tables=tuple(sorted(canonical, key=lambda t: t.name)),
            enums=tuple(sorted((name, tuple(labels)) for name, labels in enums)),
        )

    def diff(self, other: SchemaFingerprint) -> list[str]:
        """How ``other`` differs from this fingerprint (this one is the expected shape).

        Returns:
            One readable line per difference ("column public.users.nickname added: text NULL"),
            sorted by object; empty when the shapes are equal.
        """
        mine = {t.name: t for t in self.tables}
        theirs = {t.name: t for t in other.tables}
        missing, added, common = _by_name(mine, theirs)
        out = [f"table {name} missing" for name in missing]
        out += [f"table {name} added" for name in added]
        for name in common:
            out.extend(_diff_table(mine[name], theirs[name]))
        my_enums, their_enums = dict(self.enums), dict(other.enums)
        missing, added, common = _by_name(my_enums, their_enums)
        out += [f"enum {name} missing" for name in missing]
        out += [f"enum {name} added" for name in added]
        out += [f"enum {name} labels changed: {', '.join(my_enums[name])} -> "
                f"{', '.join(their_enums[name])}"
                for name in common if my_enums[name] != their_enums[name]]
        return out


def _by_name(mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> tuple[list[str], ...]:
    """The names only in ``mine`` (missing), only in ``theirs`` (added) and in both, each
    sorted: the order every diff line is reported in."""
    return (sorted(mine.keys() - theirs.keys()), sorted(theirs.keys() - mine.keys()),
            sorted(mine.keys() & theirs.keys()))


def _diff_named(
    what: str, table: str, mine: Sequence[tuple[str, str]], theirs: Sequence[tuple[str, str]]
) -> list[str]:
    a, b = dict(mine), dict(theirs)
    missing, added, common = _by_name(a, b)
    out = [f"{what} {name} on {table} missing (expected: {a[name]})" for name in missing]
    out += [f"{what} {name} on {table} added: {b[name]}" for name in added]
    out += [f"{what} {name} on {table} changed: {a[name]} -> {b[name]}"
            for name in common if a[name] != b[name]]
    return out


def _diff_table(mine: TableShape, theirs: TableShape) -> list[str]:
    out: list[str] = []
    table = mine.name
    if mine.kind != theirs.kind:
        out.append(f"table {table} kind changed: {mine.kind} -> {theirs.kind}")
    a = {c.name: c for c in mine.columns}
    b = {c.name: c for c in theirs.columns}
    for name in [c.name for c in mine.columns if c.name not in b]:
        out.append(f"column {table}.{name} missing (expected: {a[name].describe()})")
    for name in [c.name for c in theirs.columns if c.name not in a]:
        out.append(f"column {table}.{name} added: {b[name].describe()}")
    for name in [c.name for c in mine.columns if c.name in b]:
        x, y = a[name], b[name]
        if x.type != y.type:
            out.append(f"column {table}.{name} type changed: {x.type} -> {y.type}")
        if x.not_null != y.not_null:
            out.append(
                f"column {table}.{name} "
                + ("lost NOT NULL" if x.not_null else "became NOT NULL")
            )
        if x.default != y.default:
            out.append(
                f"column {table}.{name} default changed: {x.default or '(none)'} -> "
                f"{y.default or '(none)'}"
            )
    common_a = [c.name for c in mine.columns if c.name in b]
    common_b = [c.name for c in theirs.columns if c.name in a]
    if common_a != common_b:
        out.append(
            f"table {table} column order changed: {', '.join(common_a)} -> {', '.join(common_b)}"
        )
    out.extend(_diff_named("constraint", table, mine.constraints, theirs.constraints))
    out.extend(_diff_named("index", table, mine.indexes, theirs.indexes))
    return out


# Tables of the fingerprint: the same set catalog.list_tables() reports (no partitions, no
# other sessions' temporary tables), minus tables an extension created (postgis'
# spatial_ref_sys): they come with the extension, not with the application's schema.
_FP_TABLES = sql.SQL(
    """
    SELECT c.oid, n.nspname, c.relname, c.relkind
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND NOT c.relispartition
      AND n.nspname <> ALL(%(system)s::text[])
      AND n.nspname !~ '^pg_(toast_)?temp_'
      AND NOT EXISTS (SELECT FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                        AND d.deptype = 'e')
    """
)

_FP_COLUMNS = sql.SQL(
    """
    SELECT a.attrelid, a.attname,
           format_type(a.atttypid, a.atttypmod)
             || CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
                     THEN ' COLLATE ' || quote_ident(co.collname) ELSE '' END,
           a.attnotnull,
           CASE a.attidentity
               WHEN 'a' THEN 'GENERATED ALWAYS AS IDENTITY'
               WHEN 'd' THEN 'GENERATED BY DEFAULT AS IDENTITY'
               ELSE CASE WHEN a.attgenerated = 's'
                         THEN 'GENERATED ALWAYS AS (' || pg_get_expr(ad.adbin, ad.adrelid)
                              || ') STORED'
                         ELSE pg_get_expr(ad.adbin, ad.adrelid) END
           END
    FROM pg_attribute a
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_collation co ON co.oid = a.attcollation
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    WHERE a.attrelid = ANY(%(relids)s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attrelid, a.attnum
    """
)

# conrelid <> 0 leaves out domain constraints; conparentid <> 0 are partition clones.
_FP_CONSTRAINTS = sql.SQL(
    """
    SELECT con.conrelid, con.conname, pg_get_constraintdef(con.oid)
    FROM pg_constraint con
    WHERE con.conrelid = ANY(%(relids)s::oid[])
      AND con.contype IN ('p', 'u', 'f', 'c', 'x')
      AND con.conparentid = 0
    """
)

_FP_INDEXES = sql.SQL(
    """
    SELECT i.indrelid, ic.relname, pg_get_indexdef(i.indexrelid)
    FROM pg_index i
    JOIN pg_class ic ON ic.oid = i.indexrelid
    WHERE i.indrelid = ANY(%(relids)s::oid[])
    """
)

_FP_ENUMS = sql.SQL(
    """
    SELECT n.nspname, t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
    FROM pg_type t
    JOIN pg_namespace n ON n.oid = t.typnamespace
    JOIN pg_enum e ON e.enumtypid = t.oid
    WHERE n.nspname <> ALL(%(system)s::text[])
      AND n.nspname !~ '^pg_(toast_)?temp_'
      AND NOT EXISTS (SELECT FROM pg_depend d
                      WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid
                        AND d.deptype = 'e')
    GROUP BY n.nspname, t.typname
    """
)


def fingerprint(conn: Connection[Any]) -> SchemaFingerprint:
    """Read the :class:`SchemaFingerprint` of the database ``conn`` is connected to.

    Five catalog queries in one transaction (a savepoint when ``conn`` is already in one).
    While they run, ``search_path`` is ``pg_catalog`` only, so every type, default and
    definition prints schema-qualified whatever the session's search_path: the fingerprint
    of one schema does not depend on who reads it. The previous search_path is put back.
    """
    system = {"system": list(SYSTEM_SCHEMAS)}
    with conn.transaction():
        row = conn.execute("SELECT current_setting('search_path')").fetchone()
        previous = str(row[0]) if row else ""
        # Session-level (not SET LOCAL): SET LOCAL inside a caller's savepoint would outlive
        # it. If a query fails, the rollback of this block undoes the change by itself.
        conn.execute("SELECT set_config('search_path', 'pg_catalog', false)")
        tables = conn.execute(_FP_TABLES, system).fetchall()
        relids = [oid for oid, *_ in tables]
        params = {"relids": relids}
        columns: dict[int, list[ColumnShape]] = {}
        for relid, name, typ, not_null, default in conn.execute(_FP_COLUMNS, params):
            columns.setdefault(relid, []).append(ColumnShape(name, typ, bool(not_null), default))
        constraints: dict[int, list[tuple[str, str]]] = {}
        for relid, name, definition in conn.execute(_FP_CONSTRAINTS, params):
            constraints.setdefault(relid, []).append((name, definition))
        indexes: dict[int, list[tuple[str, str]]] = {}
        for relid, name, definition in conn.execute(_FP_INDEXES, params):
            indexes.setdefault(relid, []).append((name, definition))
        enums = [
            (str(TableRef(schema, name)), tuple(labels))
            for schema, name, labels in conn.execute(_FP_ENUMS, system)
        ]
        conn.execute("SELECT set_config('search_path', %s, false)", [previous])
    return SchemaFingerprint.create(
        tables=[
            TableShape(
                name=str(TableRef(schema, name)),
                kind="partitioned table" if relkind == "p" else "table",
                columns=tuple(columns.get(oid, ())),
                constraints=tuple(constraints.get(oid, ())),
                indexes=tuple(indexes.get(oid, ())),
            )
            for oid, schema, name, relkind in tables
        ],
        enums=enums,
    )

"""Table names follow SQL rules, the same as ``psql``/``pg_dump``: ``schema.table`` or ``table``
(resolved through the server's ``search_path``); unquoted names are folded to lower case; a
double-quoted name is taken verbatim (``""`` for a quote inside it), e.g. ``public."Weird; Name"``.
A snapshot records its tables in that canonical, quoted-where-needed form.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import psycopg

from restorekit.errors import (
    ConfigError,
    PostgresError,
)
from restorekit.pg.catalog import split_qualified
from restorekit.pg.cluster import connect
from restorekit.pg.dsn import redact
from restorekit.snapshot.manifest import APPLICATION_NAME

# Used with fullmatch: `$` would allow a trailing newline.
_PLAIN_IDENT = re.compile(r"[a-z_][a-z0-9_$]*")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


# Relation kinds pg_dump --table selects: table, partitioned table, view, materialized view,
# foreign table, sequence.
_DUMPABLE_RELKINDS = {"r": "table", "p": "table", "v": "view", "m": "materialized view",
                      "f": "foreign table", "S": "sequence"}
_RELKIND_NAMES = {**_DUMPABLE_RELKINDS, "i": "index", "I": "index", "c": "composite type",
                  "t": "TOAST table"}


def parse_table_name(text: str) -> tuple[str | None, str]:
    """Split ``schema.table`` / ``table`` with SQL identifier rules into (schema or None, table).

    Unquoted parts are folded to lower case (ASCII only, as PostgreSQL does for UTF-8);
    double-quoted parts are verbatim, with ``""`` standing for one quote.
    """
    # One identifier grammar for the whole project: the catalog's.
    parts = split_qualified(text)
    if len(parts) > 2:
        raise ConfigError(f"table name {text!r} has too many dotted parts (expected schema.table)")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def quote_ident(name: str, *, always: bool = False) -> str:
    if not always and _PLAIN_IDENT.fullmatch(name):
        return name
    return '"' + name.replace('"', '""') + '"'


def format_table_name(schema: str, table: str) -> str:
    """The canonical ``schema.table`` form stored in snapshots (quoted where needed)."""
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def dump_pattern(schema: str, table: str) -> str:
    """An exact pg_dump ``--table`` pattern: inside double quotes ``* ? .`` and regex characters
    are literal, so any name matches only itself."""
    return f"{quote_ident(schema, always=True)}.{quote_ident(table, always=True)}"


def resolve_tables(dsn: str, names: Sequence[str]) -> list[tuple[str, str]]:
    """Resolve ``names`` to (schema, table) with one catalog query.

    Raises:
        ConfigError: a name is malformed, unknown (all unknown ones are named, with a hint when
            only the case differs), or is not something pg_dump --table can dump.
    """
    parsed = [parse_table_name(name) for name in names]
    # to_regclass parses the same SQL syntax and applies search_path to unqualified names; we
    # hand it fully quoted text so nothing in the name can change how it is read.
    qualified = [
        (quote_ident(s, always=True) + "." if s is not None else "") + quote_ident(t, always=True)
        for s, t in parsed
    ]
    query = """
        SELECT u.ord, n.nspname, c.relname, c.relkind
        FROM unnest(%(names)s::text[]) WITH ORDINALITY AS u(name, ord)
        LEFT JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(u.name)
        LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        ORDER BY u.ord
    """
    hints_query = """
        SELECT n.nspname, c.relname
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE lower(c.relname) = ANY(%(names)s::text[]) AND c.relkind = ANY(%(kinds)s::"char"[])
        ORDER BY 1, 2
    """
    with connect(dsn, application_name=APPLICATION_NAME) as conn:
        try:
            rows = conn.execute(query, {"names": qualified}).fetchall()
            unknown = [i for i, row in enumerate(rows) if row[1] is None]
            hints: list[tuple[str, str]] = []
            if unknown:
                hints = conn.execute(hints_query, {
                    "names": [parsed[i][1].lower() for i in unknown],
                    "kinds": list(_DUMPABLE_RELKINDS),
                }).fetchall()
        except psycopg.Error as exc:
            raise PostgresError(f"could not look up tables: {redact(str(exc)).strip()}") from None
    resolved: list[tuple[str, str]] = []
    problems: list[str] = []
    for (_, nspname, relname, relkind), name in zip(rows, names, strict=True):
        if nspname is None:
            continue
        if relkind not in _DUMPABLE_RELKINDS:
            kind = _RELKIND_NAMES.get(relkind, f"relkind {relkind!r}")
            problems.append(f"{name!r} is a {kind}, not a table")
            continue
        resolved.append((nspname, relname))
    if unknown or problems:
        parts = []
        if unknown:
            parts.append("unknown table(s): " + ", ".join(repr(names[i]) for i in unknown))
        parts.extend(problems)
        message = "; ".join(parts)
        if hints:
            message += "; did you mean " + ", ".join(format_table_name(s, t) for s, t in hints)
            message += " (quote mixed-case names)"
        raise ConfigError(message + "; nothing was dumped")
    # The same table named twice (e.g. with and without schema) is dumped once.
    return list(dict.fromkeys(resolved))

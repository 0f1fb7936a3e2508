"""The privileges restorekit's role needs on the live database, checked before any side effect.

Scenarios 2 and 3 read and write rows through the application's connection string (the
connection store's ``DATABASE_URL``); the flows' preflight calls :func:`check_privileges` on it
so that a role without, say, UPDATE is refused before anything is restored, snapshotted or
changed, with a message naming each missing privilege and the GRANT that adds it
(docs/security.md, "Database privileges").

What each need stands for (found by running the flows with a role that lacked it):

``select``   SELECT on the tables and their sequences: integrity findings, the row diff,
             ``pg_dump`` snapshots, the recovery's sequence check (reads ``last_value``).
``insert``   INSERT on the tables: re-inserting missing rows (both scenarios).
``update``   UPDATE on the tables: repairing changed rows (scenario 2).
``delete``   DELETE on the tables: ``full_replace`` only (scenario 2).
always       USAGE on the tables' schemas and TEMPORARY on the database (the recovery and the
             diff stage rows in temporary tables).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import Connection

from restorekit.errors import ConfigError

#: Needs a flow can ask for, and the table privilege each one stands for.
TABLE_PRIVILEGES = {"select": "SELECT", "insert": "INSERT", "update": "UPDATE",
                    "delete": "DELETE"}

_SYSTEM_SCHEMAS = ["pg_catalog", "information_schema", "pg_toast"]

# One row per user table: its oid, name, schema and which of the wanted privileges it lacks.
_TABLES = """
SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), n.nspname,
       ARRAY(SELECT p FROM unnest(%s::text[]) AS p WHERE NOT has_table_privilege(c.oid, p))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname <> ALL(%s::text[])
  AND n.nspname !~ '^pg_(toast_)?temp_'
ORDER BY 2
"""

# Sequences owned by the tables (serial / identity columns): what pg_dump and setval touch.
_SEQUENCES = """
SELECT DISTINCT quote_ident(n.nspname) || '.' || quote_ident(s.relname)
FROM pg_depend d
JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_namespace n ON n.oid = s.relnamespace
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.refobjid = ANY(%s::oid[]) AND d.deptype IN ('a', 'i')
  -- CASE: the planner may test rows before the relkind filter (a toast table is no sequence)
  AND CASE WHEN s.relkind = 'S' THEN NOT has_sequence_privilege(s.oid, 'SELECT') END
ORDER BY 1
"""


class MissingPrivileges(ConfigError):
    """The role lacks privileges a flow needs. Checked before any side effect; not retryable.

    Attributes:
        role: The role that was checked (``current_user``).
        missing: One line per missing privilege, e.g. ``UPDATE on public.clients``.
    """

    def __init__(self, message: str, *, role: str, missing: Sequence[str]) -> None:
        super().__init__(message)
        self.role = role
        self.missing = tuple(missing)


@dataclass(frozen=True, slots=True)
class PrivilegeCheck:
    """What :func:`missing_privileges` found: the role, and one ``(what, grant)`` per gap."""

    role: str
    database: str
    missing: tuple[tuple[str, str], ...]


def missing_privileges(conn: Connection[Any], needs: Sequence[str]) -> PrivilegeCheck:
    """Which of ``needs`` (keys of :data:`TABLE_PRIVILEGES`) the current role lacks on every
    user table, plus the schema USAGE, TEMPORARY and sequence SELECT every need implies.

    Raises:
        ValueError: An unknown need.
    """
    unknown = [n for n in needs if n not in TABLE_PRIVILEGES]
    if unknown:
        raise ValueError(f"unknown privilege need(s) {unknown}; known: {list(TABLE_PRIVILEGES)}")
    row = conn.execute("SELECT current_user, current_database(), "
                       "has_database_privilege(current_database(), 'TEMPORARY')").fetchone()
    assert row is not None
    role, database, temporary = str(row[0]), str(row[1]), bool(row[2])
    gaps: list[tuple[str, str]] = []
    ident = _quote(conn, role)
    if not temporary:
        gaps.append((f"TEMPORARY on database {database}",
                     f"GRANT TEMPORARY ON DATABASE {_quote(conn, database)} TO {ident};"))
    wanted = [TABLE_PRIVILEGES[n] for n in ("select", *[n for n in needs if n != "select"])]
    tables = conn.execute(_TABLES, [wanted, _SYSTEM_SCHEMAS]).fetchall()
    schemas = sorted({str(schema) for _, _, schema, _ in tables})
    for schema in schemas:
        usage = conn.execute("SELECT has_schema_privilege(%s, 'USAGE')", [schema]).fetchone()
        if usage is not None and not usage[0]:
            gaps.append((f"USAGE on schema {schema}",
                         f"GRANT USAGE ON SCHEMA {_quote(conn, schema)} TO {ident};"))
    for privilege in wanted:
        lacking = [str(name) for _, name, _, missing in tables if privilege in missing]
        if lacking:
            gaps.append((f"{privilege} on {', '.join(lacking)}",
                         f"GRANT {privilege} ON {', '.join(lacking)} TO {ident};"))
    lacking = [str(name) for (name,) in conn.execute(
        _SEQUENCES, [[int(oid) for oid, _, _, _ in tables]]).fetchall()]
    if lacking:
        gaps.append((f"SELECT on sequence(s) {', '.join(lacking)}",
                     f"GRANT SELECT ON SEQUENCE {', '.join(lacking)} TO {ident};"))
    return PrivilegeCheck(role=role, database=database, missing=tuple(gaps))


def check_privileges(conn: Connection[Any], needs: Sequence[str], *, purpose: str) -> None:
    """Raise :class:`MissingPrivileges` unless the current role has everything ``needs`` implies.

    Args:
        conn: A connection to the live database, as the role the flow will write with.
        needs: Keys of :data:`TABLE_PRIVILEGES`, e.g. ``("select", "insert")``.
        purpose: What the privileges are for, for the message (e.g. ``"accidental-deletion"``).
    """
    found = missing_privileges(conn, needs)
    if not found.missing:
        return
    lines = "; ".join(what for what, _ in found.missing)
    grants = " ".join(grant for _, grant in found.missing)
    raise MissingPrivileges(
        f"role {found.role!r} lacks privileges that {purpose} needs on database "
        f"{found.database!r}: "
        f"{lines}. Nothing was changed. As a superuser, run: {grants} "
        "(docs/security.md: Database privileges)",
        role=found.role, missing=[what for what, _ in found.missing],
    )


def _quote(conn: Connection[Any], name: str) -> str:
    from psycopg import sql

    return sql.Identifier(name).as_string(conn)

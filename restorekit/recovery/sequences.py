"""Identity columns and owned sequences of the recovered tables, and moving those sequences past
restored ids so the application's next insert does not collide with one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import Connection, sql

from restorekit.errors import ConfigError
from restorekit.pg.catalog import TableRef

_TABLE_FACTS = sql.SQL(
    """
    SELECT w.nspname, w.relname, c.oid,
           array(SELECT a.attname FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                   AND a.attidentity = 'a'
                 ORDER BY a.attnum),
           array(SELECT ARRAY[a.attname::text, s.oid::text, sn.nspname::text, s.relname::text]
                 FROM pg_depend d
                 JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                 JOIN pg_namespace sn ON sn.oid = s.relnamespace
                 JOIN pg_sequence q ON q.seqrelid = s.oid AND q.seqincrement > 0
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid
                 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                   AND d.refobjid = c.oid AND d.deptype IN ('a', 'i')
                 ORDER BY a.attnum)
    FROM unnest(%s::text[], %s::text[]) AS w(nspname, relname)
    LEFT JOIN pg_namespace n ON n.nspname = w.nspname
    LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.relname
    """
)


@dataclass(frozen=True, slots=True)
class _Sequence:
    column: str
    oid: int
    ref: TableRef  # the sequence, named like a table so it composes the same way


@dataclass(frozen=True, slots=True)
class _Facts:
    identity_always: frozenset[str]  # GENERATED ALWAYS AS IDENTITY columns
    sequences: tuple[_Sequence, ...]  # owned by a column (serial / identity), ascending


def _table_facts(conn: Connection[Any], tables: Sequence[TableRef]) -> dict[TableRef, _Facts]:
    # Identity and owned sequences are not in catalog.Column; one catalog query for all tables.
    rows = conn.execute(
        _TABLE_FACTS, [[t.schema for t in tables], [t.name for t in tables]]
    ).fetchall()
    facts: dict[TableRef, _Facts] = {}
    for schema, name, oid, always, owned in rows:
        if oid is None:
            raise ConfigError(f"table not found: {TableRef(schema, name)}")
        sequences = tuple(
            _Sequence(column, int(seq_oid), TableRef(seq_schema, seq_name))
            for column, seq_oid, seq_schema, seq_name in (owned or [])
        )
        facts[TableRef(schema, name)] = _Facts(frozenset(always or ()), sequences)
    return facts


def _advance_sequences(
    conn: Connection[Any], tables: Sequence[TableRef], facts: dict[TableRef, _Facts], *,
    dry_run: bool,
) -> list[str]:
    """Move each sequence the tables own past the column's maximum when it is behind, so the
    application's next insert does not collide with a restored id; one statement for all.
    Returns the sequences moved (that would be moved, when ``dry_run``)."""
    parts: list[sql.Composable] = []
    params: list[Any] = []
    for table in tables:
        for seq in facts[table].sequences:
            action = sql.SQL("NULL") if dry_run else sql.SQL("setval(%s::oid::regclass, m.top)")
            # Not called yet: nextval returns last_value itself; called: last_value + increment.
            parts.append(sql.SQL(
                "SELECT %s::text, {action} FROM (SELECT max({col})::bigint AS top FROM {table})"
                " AS m, {sequence} AS s "
                "WHERE m.top > s.last_value OR (NOT s.is_called AND m.top >= s.last_value)"
            ).format(action=action, col=sql.Identifier(seq.column), table=table.ident,
                     sequence=seq.ref.ident))
            params.append(str(seq.ref))
            if not dry_run:
                params.append(seq.oid)
    if not parts:
        return []
    rows = conn.execute(sql.SQL(" UNION ALL ").join(parts), params).fetchall()
    return [name for name, _ in rows]

"""The archive's table of contents (``pg_restore --list``): the entries that restore chosen tables
with what hangs off them, and the foreign keys that would reference a table the target lacks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from restorekit.errors import (
    ConfigError,
    PostgresError,
)
from restorekit.pg.cluster import connect
from restorekit.pg.dsn import redact
from restorekit.pg.tools import PgTool
from restorekit.snapshot.manifest import APPLICATION_NAME
from restorekit.snapshot.names import _ASCII_LOWER, format_table_name, quote_ident

log = logging.getLogger(__name__)


# Entries that belong to one table and come along when the table is restored.
_ATTACHED = frozenset({
    "TABLE DATA", "MATERIALIZED VIEW DATA", "SEQUENCE", "SEQUENCE SET", "SEQUENCE OWNED BY",
    "DEFAULT", "CONSTRAINT", "CHECK CONSTRAINT", "FK CONSTRAINT", "INDEX", "INDEX ATTACH",
    "TRIGGER", "RULE", "POLICY", "ROW SECURITY", "COMMENT", "SECURITY LABEL", "ACL",
    "STATISTICS", "TABLE ATTACH",
})
# Entries that are relations themselves (a dependency on one that is not selected means the
# entry would reference something missing, e.g. a foreign key to a table left out).
_RELATIONS = frozenset({
    "TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE", "SEQUENCE", "INDEX", "CONSTRAINT",
    "FK CONSTRAINT", "CHECK CONSTRAINT", "TRIGGER", "RULE", "DEFAULT", "TABLE ATTACH",
    "INDEX ATTACH", "POLICY",
})
_TABLE_DESCS = ("MATERIALIZED VIEW", "FOREIGN TABLE", "TABLE", "VIEW")
_OTHER_DESCS = frozenset({
    "DEFAULT ACL", "EVENT TRIGGER", "FOREIGN DATA WRAPPER", "FOREIGN SERVER", "USER MAPPING",
    "LARGE OBJECT", "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA", "SHELL TYPE",
    "PROCEDURAL LANGUAGE", "ACCESS METHOD", "OPERATOR CLASS", "OPERATOR FAMILY",
    "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER",
    "TEXT SEARCH TEMPLATE", "DATABASE PROPERTIES",
})
_KNOWN_DESCS = sorted(_ATTACHED | _RELATIONS | _OTHER_DESCS | set(_TABLE_DESCS), key=len,
                      reverse=True)
_TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
_DEPENDS = re.compile(r"^;\s*depends on:((?: \d+)*)\s*$")


@dataclass
class TocEntry:
    dump_id: int
    desc: str
    rest: str  # "<schema> <tag> <owner>" as pg_restore prints it (names are not quoted)
    line: str
    deps: list[int] = field(default_factory=list)


def read_toc(tool: PgTool, dump_dir: Path) -> list[TocEntry]:
    """``pg_restore --list --verbose``: entries with their dependencies."""
    out = tool.run("pg_restore", "--list", "--verbose", str(dump_dir)).stdout
    entries: list[TocEntry] = []
    for line in out.splitlines():
        match = _TOC_LINE.match(line)
        if match:
            text = match.group(4)
            desc = next((d for d in _KNOWN_DESCS if text.startswith(d + " ")), text.split(" ")[0])
            entries.append(TocEntry(int(match.group(1)), desc, text[len(desc) + 1:], line))
            continue
        deps = _DEPENDS.match(line)
        if deps and entries:
            entries[-1].deps.extend(int(d) for d in deps.group(1).split())
    return entries


def select_tables(
    toc: Sequence[TocEntry], wanted: Sequence[tuple[str, str]], snapshot_id: str
) -> list[TocEntry]:
    """The entries that restore the ``wanted`` (schema, table)s, in archive order: each table
    with what hangs off it alone (data, indexes, constraints, defaults, triggers, owned
    sequences, comments, grants). A foreign key to a table left out is left out too."""
    tables = [e for e in toc if e.desc in _TABLE_DESCS]
    chosen: set[int] = set()
    missing: list[str] = []
    for schema, name in wanted:
        # pg_restore prints "<schema> <name> <owner>" unquoted, so a name with spaces can also
        # look like a shorter name plus owner; an owner without spaces breaks the tie.
        head = f"{schema} {name} "
        hits = [e for e in tables if e.rest.startswith(head)]
        if len(hits) > 1:
            hits = [e for e in hits if " " not in e.rest[len(head):]]
        label = format_table_name(schema, name)
        if not hits:
            missing.append(label)
        elif len(hits) > 1:
            raise ConfigError(f"table {label} is ambiguous in snapshot {snapshot_id}")
        else:
            chosen.add(hits[0].dump_id)
    if missing:
        raise ConfigError(f"snapshot {snapshot_id} does not hold " + ", ".join(missing)
                          + "; nothing was restored")
    by_id = {e.dump_id: e for e in toc}
    changed = True
    while changed:
        changed = False
        for entry in toc:
            if entry.dump_id in chosen or entry.desc not in _ATTACHED or not entry.deps:
                continue
            if not chosen.intersection(entry.deps):
                continue
            if all(d in chosen or by_id.get(d) is None or by_id[d].desc not in _RELATIONS
                   for d in entry.deps):
                chosen.add(entry.dump_id)
                changed = True
    return [e for e in toc if e.dump_id in chosen]


def _drop_dangling_foreign_keys(
    tool: PgTool,
    dump_dir: Path,
    dsn: str,
    selected: list[TocEntry],
    wanted: Sequence[tuple[str, str]],
) -> list[TocEntry]:
    """Leave out foreign keys whose referenced table will not exist in the target: neither
    restored now nor already there. (A table-level dump keeps foreign keys to tables it does not
    hold; restoring it into a new database would otherwise fail on them.)"""
    fks = [e for e in selected if e.desc == "FK CONSTRAINT"]
    if not fks:
        return selected
    list_file = dump_dir.parent / "fk.list"
    list_file.write_text("".join(e.line + "\n" for e in fks))
    script = tool.run("pg_restore", f"--use-list={list_file}", "--file=-", str(dump_dir)).stdout
    refs = referenced_tables(script)
    if len(refs) != len(fks):
        log.warning("could not match %d foreign keys to their SQL; restoring all of them", len(fks))
        return selected
    restored = set(wanted)
    outside = sorted({ref for ref in refs if ref not in restored})
    existing = set(_existing_tables(dsn, outside)) if outside else set()
    dropped = {fk.dump_id for fk, ref in zip(fks, refs, strict=True)
               if ref not in restored and ref not in existing}
    for fk, ref in zip(fks, refs, strict=True):
        if fk.dump_id in dropped:
            log.warning("not restoring foreign key %s: it references %s, which the target "
                        "does not have", fk.rest, format_table_name(*ref))
    return [e for e in selected if e.dump_id not in dropped]


_SQL_TOKEN = re.compile(
    r"""\s+|--[^\n]*|/\*.*?\*/|"(?:[^"]|"")*"|'(?:[^']|'')*'|[^\W\d][\w$]*|\d+|.""",
    re.S,
)


def referenced_tables(script: str) -> list[tuple[str, str]]:
    """The table after REFERENCES in each statement of a pg_restore script that has one."""
    refs: list[tuple[str, str]] = []
    statement: list[str] = []
    for match in _SQL_TOKEN.finditer(script):
        token = match.group(0)
        if token.isspace() or token.startswith("--") or token.startswith("/*"):
            continue
        if token != ";":
            statement.append(token)
            continue
        upper = [t.upper() for t in statement]
        if "REFERENCES" in upper:
            i = upper.index("REFERENCES") + 1
            parts = [_ident(statement[i])] if i < len(statement) else []
            if i + 2 < len(statement) and statement[i + 1] == ".":
                parts.append(_ident(statement[i + 2]))
            if parts:
                refs.append((parts[0], parts[1]) if len(parts) == 2 else ("public", parts[0]))
        statement = []
    return refs


def _ident(token: str) -> str:
    if token.startswith('"'):
        return token[1:-1].replace('""', '"')
    return token.translate(_ASCII_LOWER)


def _existing_tables(dsn: str, tables: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    names = [f"{quote_ident(s, always=True)}.{quote_ident(t, always=True)}" for s, t in tables]
    with connect(dsn, application_name=APPLICATION_NAME) as conn:
        try:
            rows = conn.execute(
                "SELECT u.ord FROM unnest(%(names)s::text[]) WITH ORDINALITY AS u(name, ord) "
                "WHERE pg_catalog.to_regclass(u.name) IS NOT NULL",
                {"names": names},
            ).fetchall()
        except psycopg.Error as exc:
            raise PostgresError(f"could not look up tables: {redact(str(exc)).strip()}") from None
    return [tables[int(ord_) - 1] for (ord_,) in rows]

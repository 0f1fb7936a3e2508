"""The verification suite: is a (restored) database reachable, promoted, shaped and consistent?

This is the runbook's "Verify Data Integrity" and "Post-Restore Verification" as code.
:func:`verify` runs named checks against one database and returns a
:class:`VerificationReport`; nothing in here raises because a check failed (call
:meth:`VerificationReport.raise_for_failures` for that), and no single broken check stops the
others.

=====================  ========  =============================================================
check                  critical  what it proves
=====================  ========  =============================================================
``connectivity``       yes       a connection opens (retried while the server is still
                                 starting) and ``SELECT 1`` answers; latency, server version
``not_in_recovery``    yes       ``pg_is_in_recovery()`` is false: the restored cluster was
                                 promoted and accepts writes
``schema``             yes       the :class:`SchemaFingerprint` equals the baseline's (the
                                 ``prisma db pull`` step) or, without one, production's (when
                                 it answers); *unverified* with neither
``expected_tables``    yes       every configured table exists
``row_counts``         yes       exact ``count(*)`` of the critical tables, within
                                 ``row_count_tolerance`` of the baseline or, without one, of
                                 production (``reference_dsn``, when it answers); with neither
                                 it is *unverified*: not a pass, not a failure
``row_estimates``      no        the planner's estimates for every other table (observation)
``fk_orphans:<fk>``    yes       no child row of foreign key ``<fk>`` lacks its parent;
                                 ``NOT VALID`` keys too (the only ones orphans can hide under)
``custom:<name>``      config    an operator-configured query (:class:`CustomCheck`)
``amcheck``            on error  ``bt_index_check`` on every B-tree index; corruption is critical
``prisma_migrations``  missing   where Prisma's ``_prisma_migrations`` exists: every migration
                                 production (when reachable) or the baseline has applied is
                                 applied here; unfinished (failed) ones warn; shows the latest
=====================  ========  =============================================================

A check is ``pass``, ``FAIL`` (critical), ``warn`` (non-critical) or ``unverified``: it ran but
had nothing to compare with. :attr:`VerificationReport.ok` means "no critical failure" and
:attr:`VerificationReport.verified` "ok, and nothing left unverified"; the markdown verdict of
an ok but unverified report is ``NOT VERIFIED``, never ``PASSED``.

How it runs: one "main" connection reads what the scans need from the catalog, then every check
that scans a table (exact counts, foreign-key anti-joins, index checks) runs as one statement on
a small pool of read-only connections (``min(4, cores)``, never more than half the server's free
connection slots), biggest relations first so that the longest scan does not run alone at the
end. The configured custom checks go to the pool before the scans (operator SQL of unknown cost,
often a join of the biggest tables: started last on a third session they used to finish alone),
while the main connection runs the catalog checks (recovery state, schema fingerprint). The pool
is the parallelism: while it runs more than one statement at once, its sessions run without
parallel query workers, which would only oversubscribe the cores. Every session gets
``statement_timeout``.

Each check is its own statement, on purpose: folding a table's exact count and its foreign keys'
orphan checks into one scan (``LEFT JOIN`` each parent, ``count(*) FILTER (...)`` per key) reads
the child once, but then every child row travels through every join where an anti-join discards
the matches at once. ``bench/verify_bench.py`` times both on every run; on PostgreSQL 15 with the
data in memory the folded statement was not reliably faster (faster at 200k rows, slower from
1M rows for a child with two foreign keys), so the checks stay separate and concurrent.

Secrets: the report names the database by :func:`restorekit.pg.dsn.display` and every error
message goes through :func:`restorekit.pg.dsn.redact`; a report is safe to log, store and publish
as an artifact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any, Literal

import psycopg
from psycopg import Connection, sql

from restorekit.errors import ConfigError, PostgresUnavailable, RestoreKitError, VerificationFailed
from restorekit.pg.catalog import SYSTEM_SCHEMAS, ForeignKey, TableRef, estimated_rows, list_tables
from restorekit.pg.catalog import foreign_keys as catalog_foreign_keys
from restorekit.pg.cluster import connect as pg_connect
from restorekit.pg.dsn import display, parse, redact

log = logging.getLogger(__name__)

__all__ = [
    "Baseline",
    "CheckResult",
    "ColumnShape",
    "CustomCheck",
    "PrismaMigrations",
    "SchemaFingerprint",
    "TableShape",
    "VerificationReport",
    "capture_baseline",
    "connect_with_retry",
    "fingerprint",
    "orphan_query",
    "prisma_migrations",
    "verify",
]

APPLICATION_NAME = "restorekit-verify"
MAX_WORKERS = 4
#: How many differences / rows a check's ``detail`` spells out; ``observed`` keeps them all.
DETAIL_ITEMS = 10
#: Rows of a failing custom check (first column only) or orphan keys kept as examples.
SAMPLE_ROWS = 5
# SQLSTATEs amcheck raises when it finds corruption (data_corrupted, index_corrupted); any other
# error from bt_index_check (permissions, a lock timeout, an index dropped meanwhile) is not.
_CORRUPTION_SQLSTATES = frozenset({"XX001", "XX002"})

Expectation = Literal["zero_rows", "nonzero", "equals"]
_EXPECTATIONS: tuple[str, ...] = ("zero_rows", "nonzero", "equals")


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def _jsonable(value: Any) -> Any:
    """A JSON-safe form of a value read from the database (for ``observed`` and samples)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        whole = value.is_finite() and value == value.to_integral_value()
        return int(value) if whole else str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _error_text(exc: BaseException) -> str:
    """One redacted line for a report: the server's primary message, SQLSTATE appended."""
    message = redact(str(exc)).strip() or type(exc).__name__
    first = message.splitlines()[0] if message else message
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{first} [SQLSTATE {sqlstate}]" if sqlstate else first


# -- report model ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one named check.

    Attributes:
        name: the check's name, e.g. ``connectivity`` or ``fk_orphans:clients_user_id_fkey``.
        ok: the check passed. A check that could not run (``skipped``) is not ok when the
            report cannot vouch for what it covers.
        critical: a failure of this check makes the whole report fail.
        detail: one human-readable line (or a few) for the report table. Never holds secrets.
        observed: what the check measured, JSON-serialisable (counts, latency, differences).
        duration_ms: time spent in the check's statements.
        skipped: the check did not run (connectivity failed, amcheck not installed, ...).
        unverified: the check ran but had nothing to compare with (no baseline, production
            unreachable): it neither passes nor fails. Such a result is never ok and never
            critical, so it cannot fail a report, and every reader that only knows ``ok`` and
            ``critical`` (an older restorekit, the incident report) shows it as a warning.
    """

    name: str
    ok: bool
    critical: bool
    detail: str = ""
    observed: Mapping[str, Any] = field(default_factory=dict, hash=False)
    duration_ms: float = 0.0
    skipped: bool = False
    unverified: bool = False

    def __post_init__(self) -> None:
        if self.unverified and (self.ok or self.critical):
            raise ValueError(f"check {self.name!r}: an unverified result is neither ok nor "
                             "critical")

    @property
    def status(self) -> Literal["pass", "FAIL", "warn", "unverified"]:
        """``pass``; ``FAIL`` (not ok, critical); ``warn`` (not ok, non-critical);
        ``unverified`` (ran, but had nothing to compare with)."""
        if self.ok:
            return "pass"
        if self.unverified:
            return "unverified"
        return "FAIL" if self.critical else "warn"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "critical": self.critical,
            "detail": self.detail,
            "observed": _jsonable(dict(self.observed)),
            "duration_ms": self.duration_ms,
            "skipped": self.skipped,
            "unverified": self.unverified,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        return cls(
            name=str(data["name"]),
            ok=bool(data["ok"]),
            critical=bool(data["critical"]),
            detail=str(data.get("detail", "")),
            observed=dict(data.get("observed") or {}),
            duration_ms=float(data.get("duration_ms", 0.0)),
            skipped=bool(data.get("skipped", False)),
            unverified=bool(data.get("unverified", False)),  # absent in older reports
        )


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """Every check run against one database, in a stable order.

    Attributes:
        database: the database for display (:func:`restorekit.pg.dsn.display`; no password).
        checks: the results, in the order they are listed in this module's docstring.
        started_at: when verification started (UTC).
        duration_ms: wall-clock time of the whole verification.
    """

    database: str
    checks: tuple[CheckResult, ...]
    started_at: datetime
    duration_ms: float

    @property
    def ok(self) -> bool:
        """No critical check failed (warnings and unverified checks do not count). Not the
        same as :attr:`verified`: a report can be ok with nothing compared."""
        return not self.critical_failures

    @property
    def verified(self) -> bool:
        """Ok, and no check was left unverified: the database was compared with something."""
        return self.ok and not self.unverified

    @property
    def critical_failures(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if c.critical and not c.ok)

    @property
    def warnings(self) -> tuple[CheckResult, ...]:
        """Non-critical checks that failed or were skipped (unverified ones are apart)."""
        return tuple(c for c in self.checks if not c.critical and not c.ok and not c.unverified)

    @property
    def unverified(self) -> tuple[CheckResult, ...]:
        """Checks that ran with nothing to compare with (see :attr:`CheckResult.unverified`)."""
        return tuple(c for c in self.checks if c.unverified)

    def check(self, name: str) -> CheckResult:
        """The result named ``name``.

        Raises:
            KeyError: no check of that name ran.
        """
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(name)

    def raise_for_failures(self) -> None:
        """Raise :class:`~restorekit.errors.VerificationFailed` when a critical check failed.

        Raises:
            VerificationFailed: carrying this report; its message names the failing checks.
        """
        if not self.ok:
            raise VerificationFailed(self)

    def to_markdown(self) -> str:
        """A heading line and a ``check | result | detail`` table (for artifacts and reports)."""
        verdict = "FAILED" if not self.ok else "NOT VERIFIED" if self.unverified else "PASSED"
        summary = _n(len(self.checks), "check")
        if self.critical_failures:
            summary += f", {_n(len(self.critical_failures), 'critical failure')}"
        if self.unverified:
            summary += f", {len(self.unverified)} unverified"
        if self.warnings:
            summary += f", {_n(len(self.warnings), 'warning')}"
        lines = [
            f"**Verification {verdict}** for `{self.database}` "
            f"({summary}, {self.duration_ms:.0f} ms, started {self.started_at.isoformat()})",
            "",
            "| check | result | detail |",
            "|---|---|---|",
        ]
        for c in self.checks:
            result = c.status + (" (skipped)" if c.skipped else "")
            lines.append(f"| {_md_cell(c.name)} | {result} | {_md_cell(c.detail)} |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "ok": self.ok,
            "verified": self.verified,  # derived, like ok: from_dict reads the checks
            "started_at": self.started_at.isoformat(),
            "duration_ms": self.duration_ms,
            "checks": [c.to_dict() for c in self.checks],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VerificationReport:
        return cls(
            database=str(data["database"]),
            checks=tuple(CheckResult.from_dict(c) for c in data["checks"]),
            started_at=datetime.fromisoformat(str(data["started_at"])),
            duration_ms=float(data["duration_ms"]),
        )


# -- schema fingerprint ------------------------------------------------------------------------


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
        out: list[str] = []
        mine = {t.name: t for t in self.tables}
        theirs = {t.name: t for t in other.tables}
        for name in sorted(mine.keys() - theirs.keys()):
            out.append(f"table {name} missing")
        for name in sorted(theirs.keys() - mine.keys()):
            out.append(f"table {name} added")
        for name in sorted(mine.keys() & theirs.keys()):
            out.extend(_diff_table(mine[name], theirs[name]))
        my_enums, their_enums = dict(self.enums), dict(other.enums)
        for name in sorted(my_enums.keys() - their_enums.keys()):
            out.append(f"enum {name} missing")
        for name in sorted(their_enums.keys() - my_enums.keys()):
            out.append(f"enum {name} added")
        for name in sorted(my_enums.keys() & their_enums.keys()):
            if my_enums[name] != their_enums[name]:
                out.append(
                    f"enum {name} labels changed: {', '.join(my_enums[name])} -> "
                    f"{', '.join(their_enums[name])}"
                )
        return out


def _diff_named(
    what: str, table: str, mine: Sequence[tuple[str, str]], theirs: Sequence[tuple[str, str]]
) -> list[str]:
    out: list[str] = []
    a, b = dict(mine), dict(theirs)
    for name in sorted(a.keys() - b.keys()):
        out.append(f"{what} {name} on {table} missing (expected: {a[name]})")
    for name in sorted(b.keys() - a.keys()):
        out.append(f"{what} {name} on {table} added: {b[name]}")
    for name in sorted(a.keys() & b.keys()):
        if a[name] != b[name]:
            out.append(f"{what} {name} on {table} changed: {a[name]} -> {b[name]}")
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


# -- baseline ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Baseline:
    """What a healthy database looked like: its schema and its row counts.

    Captured from the source (production, or the database right after a known-good restore) and
    stored as JSON (:mod:`restorekit.baseline`: in the repository beside the backups, and
    locally); :func:`verify` compares a restored database against it.

    Attributes:
        fingerprint: the schema.
        exact_counts: ``count(*)`` of each critical table, keyed by ``str(TableRef)``.
        estimated_counts: the planner's estimate for every other table (0 when never analyzed).
        captured_at: when it was captured (UTC).
        prisma: Prisma's applied migrations, ``{"latest": name, "count": n}``; None when the
            database has no ``_prisma_migrations``.
    """

    fingerprint: SchemaFingerprint
    exact_counts: Mapping[str, int] = field(hash=False)
    estimated_counts: Mapping[str, int] = field(hash=False)
    captured_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    prisma: Mapping[str, Any] | None = field(default=None, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "captured_at": self.captured_at.isoformat(),
            "exact_counts": dict(sorted(self.exact_counts.items())),
            "estimated_counts": dict(sorted(self.estimated_counts.items())),
            "fingerprint": self.fingerprint.to_dict(),
            **({"prisma": dict(self.prisma)} if self.prisma is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Baseline:
        """Rebuild a stored baseline.

        Raises:
            ConfigError: malformed data, an unknown format, or a damaged fingerprint.
        """
        if data.get("format", 1) != 1:
            raise ConfigError(f"unsupported baseline format {data.get('format')!r} (expected 1)")
        try:
            captured_at = datetime.fromisoformat(str(data["captured_at"]))
            exact = {str(k): int(v) for k, v in data["exact_counts"].items()}
            estimated = {str(k): int(v) for k, v in data.get("estimated_counts", {}).items()}
            fp = data["fingerprint"]
            prisma = data.get("prisma")
            if prisma is not None:
                prisma = {"latest": prisma.get("latest"), "count": int(prisma["count"])}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"not a verification baseline: {exc!r}") from exc
        return cls(SchemaFingerprint.from_dict(fp), exact, estimated, captured_at, prisma)


def _parse_tables(names: Iterable[str]) -> list[TableRef]:
    if isinstance(names, str):  # one name, not a sequence of one-letter names
        names = [names]
    return list(dict.fromkeys(TableRef.parse(n) for n in names))


def _count_query(table: TableRef) -> sql.Composed:
    return sql.SQL("SELECT count(*) FROM {}").format(table.ident)


def capture_baseline(conn: Connection[Any], critical_tables: Sequence[str]) -> Baseline:
    """Capture a :class:`Baseline` from the database ``conn`` is connected to.

    Exact counts cost one ``count(*)`` per critical table (a full scan each); every other
    table gets the planner's estimate. Everything is read in one transaction.

    Args:
        conn: an open connection.
        critical_tables: names as in the config (``users``, ``public.users``, ``"Crm"."T"``).

    Raises:
        ConfigError: a name is malformed or a critical table does not exist.
    """
    critical = _parse_tables(critical_tables)
    captured_at = datetime.now(UTC)
    with conn.transaction():
        fp = fingerprint(conn)
        present = set(list_tables(conn))
        missing = [str(t) for t in critical if t not in present]
        if missing:
            raise ConfigError(f"critical table not found: {', '.join(missing)}")
        exact: dict[str, int] = {}
        for table in critical:
            row = conn.execute(_count_query(table)).fetchone()
            exact[str(table)] = int(row[0]) if row else 0
        others = sorted(present - set(critical))
        estimated = {str(t): n for t, n in estimated_rows(conn, others).items()}
        migrations = prisma_migrations(conn)
    prisma = None if migrations is None else {"latest": migrations.latest,
                                               "count": len(migrations.applied)}
    return Baseline(fp, exact, estimated, captured_at, prisma)


# -- Prisma migrations -------------------------------------------------------------------------

#: Prisma Migrate's history table (prisma-engines, schema-engine ARCHITECTURE.md): one row per
#: attempt; ``finished_at`` is set only on success, ``rolled_back_at`` by
#: ``prisma migrate resolve --rolled-back``. A row with neither is a failed (or still running)
#: migration, which makes ``prisma migrate deploy`` refuse (P3009).
PRISMA_TABLE = "_prisma_migrations"
# The table in the connection's search_path first (Prisma's ``schema`` URL option sets it),
# else in any schema that is not the system's.
_PRISMA_LOCATE = sql.SQL(
    """
    SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relname = %(table)s AND c.relkind IN ('r', 'p')
      AND n.nspname <> ALL (%(system)s::text[])
    ORDER BY array_position(current_schemas(false), n.nspname::text) NULLS LAST, n.nspname
    LIMIT 1
    """
)


@dataclass(frozen=True, slots=True)
class PrismaMigrations:
    """What ``_prisma_migrations`` says was applied.

    Attributes:
        applied: names of finished, not rolled-back migrations, in the order they finished.
        unfinished: names of attempts with neither ``finished_at`` nor ``rolled_back_at``
            (failed, or running when the database was copied).
        rolled_back: names of attempts marked rolled back.
        schema: where the table is.
    """

    applied: tuple[str, ...]
    unfinished: tuple[str, ...] = ()
    rolled_back: tuple[str, ...] = ()
    schema: str = "public"

    @property
    def latest(self) -> str | None:
        """The last migration that finished."""
        return self.applied[-1] if self.applied else None


def prisma_migrations(conn: Connection[Any]) -> PrismaMigrations | None:
    """Read Prisma's migration history, or None when there is no ``_prisma_migrations``."""
    row = conn.execute(_PRISMA_LOCATE, {"table": PRISMA_TABLE,
                                        "system": list(SYSTEM_SCHEMAS)}).fetchone()
    if row is None:
        return None
    schema = str(row[0])
    rows = conn.execute(sql.SQL(
        "SELECT migration_name, finished_at IS NOT NULL, rolled_back_at IS NOT NULL "
        "FROM {} ORDER BY finished_at NULLS LAST, started_at, migration_name"
    ).format(sql.Identifier(schema, PRISMA_TABLE))).fetchall()
    applied = [str(name) for name, finished, rolled_back in rows if finished and not rolled_back]
    return PrismaMigrations(
        applied=tuple(dict.fromkeys(applied)),
        unfinished=tuple(str(n) for n, finished, rolled_back in rows
                         if not finished and not rolled_back),
        rolled_back=tuple(str(n) for n, _, rolled_back in rows if rolled_back),
        schema=schema,
    )


def _prisma_result(conn: Connection[Any], baseline: Baseline | None, reference_dsn: str | None,
                   statement_timeout_ms: int) -> CheckResult | None:
    """Compare the migrations here with production's (when reachable) or the baseline's."""
    start = time.perf_counter()
    name = "prisma_migrations"
    try:
        here = prisma_migrations(conn)
        expected = baseline.prisma if baseline is not None else None
        if here is None and not (expected and expected.get("count")):
            return None  # not a Prisma database, and none was expected
        reference: PrismaMigrations | None = None
        source = "the baseline"
        unreachable = ""
        if reference_dsn is not None:
            try:
                with _open(reference_dsn, statement_timeout_ms, read_only=True) as ref_conn:
                    reference = prisma_migrations(ref_conn)
                source = "production"
            except (psycopg.Error, RestoreKitError) as exc:
                unreachable = f"production unreachable ({_error_text(exc)}); "
    except (psycopg.Error, RestoreKitError) as exc:
        return CheckResult(name, False, True, f"error: {_error_text(exc)}", {}, _ms(start))
    applied = here.applied if here is not None else ()
    observed: dict[str, Any] = {
        "latest": applied[-1] if applied else None, "applied": len(applied),
        "unfinished": list(here.unfinished) if here else [],
        "rolled_back": list(here.rolled_back) if here else [],
    }
    missing: list[str] = []
    if source == "production":
        observed["production_latest"] = reference.latest if reference else None
        missing = [m for m in (reference.applied if reference else ()) if m not in applied]
    elif expected and expected.get("count"):
        source = "the baseline"
        observed["baseline"] = dict(expected)
        if expected.get("latest") not in applied or len(applied) < int(expected["count"]):
            missing = [f"{int(expected['count'])} applied up to {expected.get('latest')}"]
    else:
        source = ""
    observed["missing"] = missing
    head = (f"latest {applied[-1]} ({_n(len(applied), 'migration')} applied)" if applied
            else "no migration applied" if here is not None else f"no {PRISMA_TABLE} table")
    notes = []
    if here is not None and here.unfinished:
        notes.append(f"unfinished (failed or interrupted): {_list_detail(list(here.unfinished))}")
    if here is not None and here.rolled_back:
        notes.append(f"rolled back: {_list_detail(list(here.rolled_back))}")
    tail = "".join(f"; {n}" for n in notes)
    if missing:
        return CheckResult(name, False, True, (
            f"{unreachable}missing migrations {source} has: {_list_detail(missing)}; {head}"
            f"{tail}"), observed, _ms(start))
    compared = f"; matches {source}" if source else "; nothing to compare with"
    if here is not None and here.unfinished:
        return CheckResult(name, False, False, f"{unreachable}{head}{compared}{tail}", observed,
                           _ms(start))
    return CheckResult(name, True, True, f"{unreachable}{head}{compared}{tail}", observed,
                       _ms(start))


# -- custom checks -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomCheck:
    """An operator-configured query, e.g. the runbook's "users without clients".

    The SQL is **trusted configuration** written by whoever owns restorekit's config, like a
    migration file; it is never built from user or incident input. It still runs in a
    ``READ ONLY`` transaction with ``statement_timeout`` and is always rolled back, so a wrong
    query cannot change the restored database or hang the verification.

    The query must be one SELECT (or ``WITH``/``VALUES``/``TABLE``) statement: it is run as a
    subquery so that only a count and a few example rows leave the server. For ``zero_rows``
    the count comes first, as ``SELECT count(*) FROM (<sql>) AS q``, and the example rows are
    fetched only when it is not zero: a passing check costs one statement, which the planner
    can run like the query written by hand (an index-only merge anti-join, say). A window count
    beside a ``LIMIT`` in one statement steered it away from that (bench/verify_bench.py: 501 ms
    against 124 ms at scale 10). For ``nonzero``/``equals`` (one row expected) the rows come
    first and the count only when there are :data:`SAMPLE_ROWS` or more. Both statements read
    one snapshot (``REPEATABLE READ``) and share the one ``statement_timeout``.

    Expectations:
        ``zero_rows``: the query returns no rows (e.g. "users without clients").
        ``nonzero``: the query returns one row whose first value is not 0, NULL or false
            (e.g. ``SELECT count(*) FROM users``).
        ``equals``: the query returns one row whose first value equals ``value`` (e.g. a
            marker row planted before a drill).

    Attributes:
        name: shown as ``custom:<name>``.
        sql: the query.
        expect: one of the expectations above.
        value: the expected value for ``equals``.
        critical: whether a failure fails the verification.
    """

    name: str
    sql: str
    expect: Expectation = "zero_rows"
    value: Any = None
    critical: bool = True

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ConfigError("a custom check needs a name")
        if not self.sql or not self.sql.strip().rstrip(";").strip():
            raise ConfigError(f"custom check {self.name!r} has no SQL")
        if self.expect not in _EXPECTATIONS:
            raise ConfigError(
                f"custom check {self.name!r}: expect must be one of {', '.join(_EXPECTATIONS)}, "
                f"got {self.expect!r}"
            )
        if self.expect == "equals" and self.value is None:
            raise ConfigError(f"custom check {self.name!r}: expect='equals' needs a value")

    @property
    def check_name(self) -> str:
        return f"custom:{self.name}"

    def count_query(self) -> psycopg.sql.Composed:  # plain "sql" is the field in this class body
        """The statement that counts the query's rows: ``SELECT count(*) FROM (<sql>) AS q``."""
        # The alias marks the statement in pg_stat_activity and in bench/verify_bench.py's profile.
        return sql.SQL("SELECT count(*) AS restorekit_rows FROM (\n{}\n) AS q").format(
            self._body()
        )

    def sample_query(self) -> psycopg.sql.Composed:
        """The statement that fetches the first :data:`SAMPLE_ROWS` rows of the query."""
        return sql.SQL("SELECT * FROM (\n{}\n) AS q LIMIT {}").format(
            self._body(), sql.Literal(SAMPLE_ROWS)
        )

    def _body(self) -> psycopg.sql.SQL:
        # The one place a str becomes SQL text: trusted configuration (see the class
        # docstring), never request or incident data. The callers put newlines around it: a
        # trailing "-- comment" must not swallow the closing parenthesis.
        return sql.SQL(self.sql.strip().rstrip(";").rstrip())

    def evaluate(self, total: int, first_values: Sequence[Any]) -> tuple[bool, str]:
        """Judge a result: ``total`` rows, of which ``first_values`` are the first columns."""
        sample = ", ".join(repr(_jsonable(v)) for v in first_values)
        if self.expect == "zero_rows":
            if total == 0:
                return True, "no rows"
            return False, f"{_n(total, 'row')}, expected none (first values: {sample})"
        if total != 1:
            return False, f"{_n(total, 'row')}, expected exactly one"
        got = first_values[0]
        if self.expect == "nonzero":
            if got is None or got is False or (isinstance(got, int | float | Decimal) and got == 0):
                return False, f"value is {_jsonable(got)!r}, expected nonzero"
            return True, f"value {_jsonable(got)!r}"
        if _equal(got, self.value):
            return True, f"value {_jsonable(got)!r} as expected"
        return False, f"value is {_jsonable(got)!r}, expected {_jsonable(self.value)!r}"


def _equal(got: Any, expected: Any) -> bool:
    if got == expected:
        return True
    # Config files hold strings where the database returns numbers, dates, UUIDs.
    return got is not None and str(_jsonable(got)) == str(expected)


# -- worker pool -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Outcome:
    value: Any = None
    error: str | None = None
    sqlstate: str | None = None
    duration_ms: float = 0.0


class _Workers:
    """A bounded thread pool, each thread borrowing one of at most ``size`` connections.

    Connections are opened on first use (a suite with two foreign keys opens two), set to
    read-only with the statement timeout, and closed by :meth:`close`. A job never raises:
    psycopg and restorekit errors come back as an :class:`_Outcome` with ``error`` set, and a
    broken connection is dropped rather than handed to the next job.
    """

    def __init__(self, connect: Callable[[], Connection[Any]], size: int) -> None:
        self._connect = connect
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="rk-verify")
        self._idle: queue.SimpleQueue[Connection[Any]] = queue.SimpleQueue()
        self._opened: list[Connection[Any]] = []
        self._lock = threading.Lock()

    def submit(self, job: Callable[[Connection[Any]], Any]) -> Future[_Outcome]:
        return self._executor.submit(self._run, job)

    def _run(self, job: Callable[[Connection[Any]], Any]) -> _Outcome:
        start = time.perf_counter()
        try:
            conn = self._acquire()
        except (psycopg.Error, RestoreKitError) as exc:
            return _Outcome(error=_error_text(exc), duration_ms=_ms(start))
        start = time.perf_counter()
        try:
            return _Outcome(value=job(conn), duration_ms=_ms(start))
        except psycopg.Error as exc:
            return _Outcome(error=_error_text(exc), sqlstate=exc.sqlstate, duration_ms=_ms(start))
        finally:
            if conn.closed or conn.broken:
                conn.close()
            else:
                self._idle.put(conn)

    def _acquire(self) -> Connection[Any]:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            conn = self._connect()
            with self._lock:
                self._opened.append(conn)
            return conn

    def cancel(self) -> None:
        """Ask the server to cancel whatever the workers are running (on an interruption)."""
        with self._lock:
            opened = list(self._opened)
        for conn in opened:
            try:
                conn.cancel_safe(timeout=5)
            except (psycopg.Error, OSError):
                pass  # best effort: close() follows and drops the connection anyway

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()


# -- the checks --------------------------------------------------------------------------------


def _session_setup(conn: Connection[Any], statement_timeout_ms: int, *, read_only: bool,
                   serial: bool = False) -> None:
    # One round trip. serial: the pool already runs one scan per core; parallel workers on top
    # of that only oversubscribe the cores (and take the server's max_worker_processes slots).
    conn.execute(
        "SELECT set_config('statement_timeout', %(timeout)s, false), "
        "CASE WHEN %(read_only)s THEN set_config('default_transaction_read_only', 'on', false) "
        "END, "
        "CASE WHEN %(serial)s THEN set_config('max_parallel_workers_per_gather', '0', false) END",
        {"timeout": str(int(statement_timeout_ms)), "read_only": read_only, "serial": serial},
    )


def _open(dsn: str, statement_timeout_ms: int, *, read_only: bool,
          serial: bool = False) -> Connection[Any]:
    """One connection for the suite: autocommit, tagged, with the timeout (single attempt)."""
    params = parse(dsn)
    extra: dict[str, Any] = {"autocommit": True}
    if "application_name" not in params:
        extra["application_name"] = APPLICATION_NAME
    if "connect_timeout" not in params:
        extra["connect_timeout"] = 10
    conn = pg_connect(dsn, **extra)
    try:
        _session_setup(conn, statement_timeout_ms, read_only=read_only, serial=serial)
    except psycopg.Error:
        conn.close()
        raise
    return conn


def connect_with_retry(
    connect: Callable[[], Connection[Any]],
    *,
    attempts: int = 5,
    backoff: float = 0.5,
    max_backoff: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Connection[Any], int]:
    """Call ``connect`` until it works, retrying only :class:`PostgresUnavailable`.

    A freshly restored cluster answers "the database system is starting up" (57P03) for a
    while; a wrong password or a missing database will not get better and fails at once.

    Returns:
        The connection and the number of attempts it took.

    Raises:
        PostgresUnavailable: still unavailable after ``attempts`` tries.
        PostgresError: a failure a retry cannot cure.
    """
    delay = backoff
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return connect(), attempt
        except PostgresUnavailable:
            if attempt >= attempts:
                raise
            log.info("database unavailable (attempt %d of %d); retrying in %.1fs",
                     attempt, attempts, delay)
            sleep(delay)
            delay = min(delay * 2, max_backoff)
    raise AssertionError("unreachable")  # pragma: no cover


def _check(
    name: str, critical: bool, fn: Callable[[], tuple[bool, str, Mapping[str, Any]]]
) -> CheckResult:
    """Run one check on the main connection; its psycopg/restorekit errors become a failure."""
    start = time.perf_counter()
    try:
        ok, detail, observed = fn()
    except (psycopg.Error, RestoreKitError) as exc:
        log.warning("check %s failed with an error: %s", name, _error_text(exc))
        return CheckResult(name, False, critical, f"error: {_error_text(exc)}", {}, _ms(start))
    return CheckResult(name, ok, critical, detail, dict(observed), _ms(start))


def _n(count: int, noun: str) -> str:
    """``1 orphan row``, ``3 orphan rows``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _list_detail(items: Sequence[str], limit: int = DETAIL_ITEMS) -> str:
    text = "; ".join(items[:limit])
    if len(items) > limit:
        text += f"; ... and {len(items) - limit} more"
    return text


@dataclass(frozen=True, slots=True)
class _FkInfo:
    """What catalog.foreign_keys() does not say but an orphan check needs."""

    validated: bool = True
    match_full: bool = False
    child_partitioned: bool = False
    parent_partitioned: bool = False
    #: The child's key columns declared NOT NULL (their IS NOT NULL test is left out).
    not_null: frozenset[str] = frozenset()


_FK_INFO = sql.SQL(
    """
    SELECT cn.nspname, cc.relname, con.conname, con.convalidated, con.confmatchtype = 'f',
           cc.relkind = 'p', pc.relkind = 'p',
           ARRAY(SELECT a.attname::text FROM pg_attribute a
                 WHERE a.attrelid = con.conrelid AND a.attnum = ANY(con.conkey)
                   AND a.attnotnull
                   -- PostgreSQL 18: a NOT NULL ... NOT VALID constraint sets attnotnull over
                   -- older rows that may still hold NULLs
                   AND NOT EXISTS (SELECT 1 FROM pg_constraint nn
                                   WHERE nn.conrelid = a.attrelid AND nn.contype = 'n'
                                     AND a.attnum = ANY(nn.conkey) AND NOT nn.convalidated))
    FROM pg_constraint con
    JOIN pg_class cc ON cc.oid = con.conrelid
    JOIN pg_namespace cn ON cn.oid = cc.relnamespace
    JOIN pg_class pc ON pc.oid = con.confrelid
    WHERE con.contype = 'f' AND con.conparentid = 0
      AND cn.nspname <> ALL(%(system)s::text[])
    """
)


def _fk_info(conn: Connection[Any]) -> dict[tuple[TableRef, str], _FkInfo]:
    return {
        (TableRef(schema, table), name): _FkInfo(bool(valid), bool(full), bool(cp), bool(pp),
                                                 frozenset(not_null or ()))
        for schema, table, name, valid, full, cp, pp, not_null in conn.execute(
            _FK_INFO, {"system": list(SYSTEM_SCHEMAS)}
        )
    }


def orphan_query(fk: ForeignKey, *, match_full: bool = False, child_partitioned: bool = False,
                 parent_partitioned: bool = False, not_null: Collection[str] = (),
                 sample: int | None = None) -> sql.Composed:
    """The anti-join counting the rows of ``fk.child`` that have no parent row.

    ``SELECT count(*) FROM child c WHERE <key set> AND NOT EXISTS (SELECT 1 FROM parent p
    WHERE p.k1 = c.k1 AND ...)``: one scan of the child and an index probe (or a hash anti-join)
    into the parent, however many rows there are.

    MATCH SIMPLE (PostgreSQL's default): a row with any NULL key column references nothing and
    is never an orphan. ``match_full``: a row with some but not all key columns NULL is a
    violation too. A foreign key does not extend to inheritance children, so plain tables are
    read with ONLY; on a partitioned table it covers every partition, which is read through the
    parent. With ``sample``, the statement returns up to that many orphan keys instead.

    ``not_null``: the child's key columns declared NOT NULL, which need no ``IS NOT NULL``
    test. PostgreSQL 15 keeps that redundant test and costs it per row, which tipped its choice
    from an index-only merge anti-join to a hash anti-join spilling to disk (bench/verify_bench.py's
    data at scale 20, appointments -> clients, serial: 447 ms against 252 ms; -> users: 343 ms
    against 121 ms).
    """
    c, p = sql.Identifier("c"), sql.Identifier("p")
    child_cols = [sql.SQL("{}.{}").format(c, sql.Identifier(col)) for col in fk.child_columns]
    nullable = [ref for col, ref in zip(fk.child_columns, child_cols, strict=True)
                if col not in not_null]
    pairs = sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}").format(p, sql.Identifier(pcol), ccol)
        for pcol, ccol in zip(fk.parent_columns, child_cols, strict=True)
    )
    missing = sql.SQL("NOT EXISTS (SELECT 1 FROM {only}{parent} AS {p} WHERE {pairs})").format(
        only=sql.SQL("" if parent_partitioned else "ONLY "), parent=fk.parent.ident, p=p,
        pairs=pairs,
    )
    all_set = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(col) for col in nullable)
    if not nullable:  # every key column is set on every row
        where = missing
    elif match_full and len(child_cols) > 1:
        any_set = sql.SQL(" OR ").join(sql.SQL("{} IS NOT NULL").format(col) for col in child_cols)
        any_null = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(col) for col in child_cols)
        where = sql.SQL("({}) AND ({} OR {})").format(any_set, any_null, missing)
    else:
        where = sql.SQL("{} AND {}").format(all_set, missing)
    source = sql.SQL("{only}{child} AS {c}").format(
        only=sql.SQL("" if child_partitioned else "ONLY "), child=fk.child.ident, c=c
    )
    if sample is None:
        return sql.SQL("SELECT count(*) FROM {} WHERE {}").format(source, where)
    return sql.SQL("SELECT {} FROM {} WHERE {} LIMIT {}").format(
        sql.SQL(", ").join(child_cols), source, where, sql.Literal(sample)
    )


def _fk_check_names(fks: Sequence[ForeignKey]) -> list[str]:
    # Constraint names are unique per table only; qualify the ones that clash.
    seen = Counter(fk.name for fk in fks)
    return [
        f"fk_orphans:{fk.name}" if seen[fk.name] == 1 else f"fk_orphans:{fk.child}:{fk.name}"
        for fk in fks
    ]


def _fk_job(fk: ForeignKey, info: _FkInfo) -> Callable[[Connection[Any]], tuple[int, list[Any]]]:
    flags = {"match_full": info.match_full, "child_partitioned": info.child_partitioned,
             "parent_partitioned": info.parent_partitioned, "not_null": info.not_null}

    def job(conn: Connection[Any]) -> tuple[int, list[Any]]:
        row = conn.execute(orphan_query(fk, **flags)).fetchone()
        count = int(row[0]) if row else 0
        sample: list[Any] = []
        if count:
            sample = [
                _jsonable(list(r))
                for r in conn.execute(orphan_query(fk, sample=SAMPLE_ROWS, **flags)).fetchall()
            ]
        return count, sample

    return job


def _fk_result(name: str, fk: ForeignKey, info: _FkInfo, outcome: _Outcome) -> CheckResult:
    # Every foreign key is critical. A NOT VALID one most of all: PostgreSQL enforces it on
    # new writes but never checked the rows it was added over, so it is the only kind whose
    # orphans can exist without corruption, and a restore must not pass over them unseen.
    critical = True
    relation = (
        f"{fk.child} ({', '.join(fk.child_columns)}) -> {fk.parent} "
        f"({', '.join(fk.parent_columns)})"
    )
    observed: dict[str, Any] = {
        "child": str(fk.child), "child_columns": list(fk.child_columns),
        "parent": str(fk.parent), "parent_columns": list(fk.parent_columns),
        "match": "full" if info.match_full else "simple", "validated": info.validated,
    }
    note = "" if info.validated else (
        " (constraint is NOT VALID: rows older than it were never checked; validate it, "
        "ALTER TABLE ... VALIDATE CONSTRAINT, once its orphans are resolved)")
    if outcome.error is not None:
        return CheckResult(name, False, critical, f"error: {outcome.error}", observed,
                           outcome.duration_ms)
    count, sample = outcome.value
    observed["orphans"] = count
    if count == 0:
        return CheckResult(name, True, critical, f"no orphans: {relation}{note}", observed,
                           outcome.duration_ms)
    keys = list(dict.fromkeys(tuple(map(str, key)) for key in sample))
    observed["sample_keys"] = sample
    if len(fk.child_columns) == 1:
        examples = ", ".join(f"{fk.child_columns[0]}={key[0]}" for key in keys)
    else:
        examples = ", ".join(
            f"({', '.join(fk.child_columns)})=({', '.join(key)})" for key in keys
        )
    detail = (
        f"{_n(count, 'orphan row')} in {fk.child} ({', '.join(fk.child_columns)}) with no "
        f"parent in {fk.parent} ({', '.join(fk.parent_columns)}), constraint {fk.name}; "
        f"e.g. {examples}{note}"
    )
    return CheckResult(name, False, critical, detail, observed, outcome.duration_ms)


_BTREE_INDEXES = sql.SQL(
    """
    SELECT ic.oid, n.nspname, ic.relname
    FROM pg_index i
    JOIN pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_am am ON am.oid = ic.relam
    JOIN pg_namespace n ON n.oid = ic.relnamespace
    WHERE am.amname = 'btree'
      AND ic.relkind = 'i'              -- partitioned indexes ('I') have no storage to check
      AND i.indisvalid AND i.indisready AND i.indislive
      AND ic.relpersistence <> 't'      -- other sessions' temporary indexes are unreadable
      AND n.nspname <> ALL(%(system)s::text[])
      AND n.nspname !~ '^pg_(toast_)?temp_'
    """
)


@dataclass(frozen=True, slots=True)
class _AmcheckPlan:
    function: sql.Composable
    version: str
    indexes: tuple[tuple[int, str], ...]  # (oid, display name)


def _prepare_amcheck(
    conn: Connection[Any], install: bool
) -> _AmcheckPlan | CheckResult:
    """Find (or, when allowed, install) amcheck and list the indexes to check."""
    start = time.perf_counter()

    def skipped(detail: str, **observed: Any) -> CheckResult:
        return CheckResult("amcheck", False, False, f"skipped: {detail}", observed, _ms(start),
                           skipped=True)

    row = conn.execute(
        "SELECT default_version, installed_version FROM pg_available_extensions "
        "WHERE name = 'amcheck'"
    ).fetchone()
    if row is None:
        return skipped("the amcheck extension is not available on this server "
                       "(it ships with PostgreSQL's contrib modules)", available=False)
    if row[1] is None:
        if not install:
            return skipped("the amcheck extension is not installed in this database; "
                           "pass install_amcheck=True or run CREATE EXTENSION amcheck",
                           available=True, installed=False)
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        log.info("installed the amcheck extension")
    ext = conn.execute(
        "SELECT n.nspname, e.extversion FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'"
    ).fetchone()
    if ext is None:  # dropped between the two statements
        return skipped("the amcheck extension disappeared while verifying", available=True)
    indexes = [
        (int(oid), str(TableRef(schema, name)))  # TableRef only for its quoting rules
        for oid, schema, name in conn.execute(_BTREE_INDEXES, {"system": list(SYSTEM_SCHEMAS)})
    ]
    return _AmcheckPlan(
        function=sql.Identifier(ext[0], "bt_index_check"),
        version=str(ext[1]),
        indexes=tuple(sorted(indexes, key=lambda item: item[1])),
    )


def _amcheck_job(function: sql.Composable, oid: int) -> Callable[[Connection[Any]], None]:
    statement = sql.SQL("SELECT {}(index => %s::oid::regclass)").format(function)

    def job(conn: Connection[Any]) -> None:
        conn.execute(statement, [oid])

    return job


def _amcheck_result(plan: _AmcheckPlan, outcomes: Sequence[tuple[str, _Outcome]]) -> CheckResult:
    corrupt = {name: o.error for name, o in outcomes if o.sqlstate in _CORRUPTION_SQLSTATES}
    errors = {name: o.error for name, o in outcomes
              if o.error is not None and name not in corrupt}
    checked = sum(1 for _, o in outcomes if o.error is None)
    observed = {"amcheck_version": plan.version, "indexes_total": len(outcomes),
                "indexes_checked": checked, "corrupt": corrupt, "errors": errors}
    duration = round(sum(o.duration_ms for _, o in outcomes), 3)
    if corrupt:
        items = [f"{name}: {msg}" for name, msg in corrupt.items()]
        detail = f"CORRUPTION in {len(corrupt)} of {len(outcomes)} B-tree indexes: " + _list_detail(
            items
        )
        return CheckResult("amcheck", False, True, detail, observed, duration)
    if errors:
        items = [f"{name}: {msg}" for name, msg in errors.items()]
        detail = f"{checked} of {len(outcomes)} B-tree indexes checked; could not check: " + (
            _list_detail(items)
        )
        return CheckResult("amcheck", False, False, detail, observed, duration)
    return CheckResult(
        "amcheck", True, False, f"{checked} B-tree indexes checked, no corruption found",
        observed, duration,
    )


def _not_in_recovery(conn: Connection[Any]) -> tuple[bool, str, Mapping[str, Any]]:
    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    in_recovery = bool(row and row[0])
    if in_recovery:
        return False, (
            "the server is in recovery (a standby, or a restore that was never promoted): "
            "promote it (pg_ctl promote or SELECT pg_promote()) before pointing an application "
            "at it"
        ), {"in_recovery": True}
    return True, "not in recovery (promoted, accepts writes)", {"in_recovery": False}


def _schema(
    conn: Connection[Any], baseline: Baseline | None, reference: _Reference | None = None
) -> CheckResult:
    """The fingerprint against the baseline's, else production's; unverified with neither."""
    start = time.perf_counter()
    try:
        fp = fingerprint(conn)
    except (psycopg.Error, RestoreKitError) as exc:
        log.warning("check schema failed with an error: %s", _error_text(exc))
        return CheckResult("schema", False, baseline is not None or reference is not None,
                           f"error: {_error_text(exc)}", {}, _ms(start))
    observed: dict[str, Any] = {"digest": fp.digest, "tables": len(fp.tables)}
    if baseline is not None:
        source, expected = "baseline", baseline.fingerprint
    elif reference is not None and reference.fingerprint is not None:
        source, expected = "production", reference.fingerprint
    else:
        why = (f"production unreachable ({reference.error})" if reference is not None
               else "no production to compare with")
        return CheckResult("schema", False, False, (
            f"unverified: no baseline, and {why}; {len(fp.tables)} tables, digest "
            f"{fp.digest[:12]}"), observed, _ms(start), unverified=True)
    observed[f"{source}_digest"] = expected.digest
    if fp.digest == expected.digest:
        return CheckResult("schema", True, True, (
            f"matches {'the baseline' if source == 'baseline' else source} "
            f"({len(fp.tables)} tables, digest {fp.digest[:12]})"), observed, _ms(start))
    differences = expected.diff(fp) or ["the digests differ"]
    observed["differences"] = differences
    return CheckResult("schema", False, True, (
        f"{_n(len(differences), 'difference')} from "
        f"{'the baseline' if source == 'baseline' else source}: {_list_detail(differences)}"
    ), observed, _ms(start))


_MISSING_TABLES = sql.SQL(
    """
    SELECT w.nspname, w.relname
    FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS w(nspname, relname)
    WHERE NOT EXISTS (SELECT FROM pg_class c
                      JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname = w.nspname AND c.relname = w.relname
                        AND c.relkind IN ('r', 'p', 'v', 'm', 'f'))
    """
)


def _expected_tables(
    conn: Connection[Any], tables: Sequence[TableRef]
) -> tuple[bool, str, Mapping[str, Any]]:
    rows = conn.execute(
        _MISSING_TABLES,
        {"schemas": [t.schema for t in tables], "names": [t.name for t in tables]},
    ).fetchall()
    missing = sorted(str(TableRef(schema, name)) for schema, name in rows)
    observed = {"expected": [str(t) for t in tables], "missing": missing}
    if missing:
        return False, f"{len(missing)} of {len(tables)} tables missing: {_list_detail(missing)}", (
            observed
        )
    return True, f"all {len(tables)} expected tables present", observed


def _row_estimates(
    conn: Connection[Any], critical: Sequence[TableRef], baseline: Baseline | None
) -> tuple[bool, str, Mapping[str, Any]]:
    others = sorted(set(list_tables(conn)) - set(critical))
    estimates = {str(t): n for t, n in estimated_rows(conn, others).items()}
    observed: dict[str, Any] = {"estimated": estimates}
    if baseline is not None:
        observed["baseline"] = dict(baseline.estimated_counts)
    # Observation only: a database restored from a logical dump has not been analyzed yet
    # and estimates 0 rows everywhere, so these numbers cannot fail anything.
    return True, (
        f"{_n(len(estimates), 'other table')}, about {_n(sum(estimates.values()), 'row')} "
        "(planner estimates; 0 can mean not analyzed yet)"
    ), observed


@dataclass(frozen=True, slots=True)
class _Reference:
    """What the restored counts are compared with when there is no baseline: production's."""

    counts: Mapping[str, int] = field(default_factory=dict)
    fingerprint: SchemaFingerprint | None = None
    #: Why production could not be read (redacted); empty when it was.
    error: str = ""


def _read_production(reference_dsn: str, tables: Sequence[TableRef],
                     statement_timeout_ms: int) -> _Reference:
    """Production's schema fingerprint and the exact counts of ``tables``, on one snapshot
    (one attempt, read only)."""
    counts: dict[str, int] = {}
    try:
        with _open(reference_dsn, statement_timeout_ms, read_only=True) as conn:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                fp = fingerprint(conn)
                present = set(list_tables(conn))
                for table in tables:
                    if table in present:
                        row = conn.execute(_count_query(table)).fetchone()
                        counts[str(table)] = int(row[0]) if row else 0
    except (psycopg.Error, RestoreKitError) as exc:
        return _Reference(error=_error_text(exc))
    return _Reference(counts, fp)


def _row_counts_result(
    tables: Sequence[TableRef],
    outcomes: Mapping[TableRef, _Outcome],
    baseline: Baseline | None,
    tolerance: float,
    reference: _Reference | None = None,
) -> CheckResult:
    """Compare the exact counts with the baseline's, else with production's (``reference``).

    A table with nothing to compare with is *unverified*, never a pass: a restore of the wrong
    database (or of an empty one) would count its rows and pass as well.
    """
    exact: dict[str, int] = {}
    errors: dict[str, str] = {}
    drift: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    summary: list[str] = []
    uncompared: list[str] = []
    if baseline is not None:
        source, base_counts = "baseline", baseline.exact_counts
    elif reference is not None and not reference.error:
        source, base_counts = "production", reference.counts
    else:
        source, base_counts = "", {}
    for table in tables:
        key, outcome = str(table), outcomes[table]
        if outcome.error is not None:
            errors[key] = outcome.error
            problems.append(f"{key}: {outcome.error}")
            continue
        count = int(outcome.value)
        exact[key] = count
        base = base_counts.get(key)
        if base is None:
            uncompared.append(key)
            summary.append(f"{key}={count}")
            continue
        change = (count - base) / base if base else None
        if abs(count - base) > tolerance * base:
            pct = f"{change:+.1%}" if change is not None else "from 0"
            drift[key] = {source: base, "observed": count,
                          "change": None if change is None else round(change, 6)}
            problems.append(
                f"{key}: {_n(count, 'row')}, {source} {base} ({pct}, tolerance {tolerance:.1%})"
            )
        else:
            summary.append(f"{key}={count} ({source} {base})")
    observed: dict[str, Any] = {"exact": exact, "tolerance": tolerance,
                                "compared_with": source or None}
    if source:
        observed[source] = {str(t): base_counts[str(t)] for t in tables
                            if str(t) in base_counts}
    if reference is not None and reference.error:
        observed["production_error"] = reference.error
    if uncompared:
        observed["unverified"] = uncompared
    if drift:
        observed["drift"] = drift
    if errors:
        observed["errors"] = errors
    duration = round(sum(o.duration_ms for o in outcomes.values()), 3)
    if problems:
        return CheckResult("row_counts", False, True, _list_detail(problems), observed, duration)
    if uncompared:
        if baseline is not None:
            why = "not in the baseline"
        elif reference is None:
            why = "no baseline, and no production to compare with"
        elif reference.error:
            why = f"no baseline, and production unreachable ({reference.error})"
        else:
            why = "no baseline, and not in production"
        return CheckResult(
            "row_counts", False, False,
            f"unverified: nothing to compare {_list_detail(uncompared)} with ({why}); counted "
            f"{_list_detail(summary)}", observed, duration, unverified=True,
        )
    return CheckResult("row_counts", True, True, _list_detail(summary), observed, duration)


def _custom(
    conn: Connection[Any], check: CustomCheck, statement_timeout_ms: int, serial: bool = False
) -> tuple[bool, str, Mapping[str, Any]]:
    # Operator SQL (trusted config): still read-only, time-limited and always rolled back. Its
    # statements share one snapshot (the count and the rows agree) and one timeout.
    deadline = time.perf_counter() + statement_timeout_ms / 1000

    def second(query: sql.Composed) -> list[tuple[Any, ...]]:
        # Only what the first statement left of the timeout: the check as a whole stays
        # within statement_timeout, as when it was one statement.
        left = max(1, math.ceil((deadline - time.perf_counter()) * 1000))
        conn.execute("SELECT set_config('statement_timeout', %s, true)", [str(left)])
        return conn.execute(query).fetchall()

    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # serial: it runs beside the pool's scans, which already use the cores.
        conn.execute(
            "SELECT set_config('statement_timeout', %(timeout)s, true), "
            "CASE WHEN %(serial)s "
            "THEN set_config('max_parallel_workers_per_gather', '0', true) END",
            {"timeout": str(int(statement_timeout_ms)), "serial": serial},
        )
        if check.expect == "zero_rows":
            count = conn.execute(check.count_query()).fetchone()
            total = int(count[0]) if count else 0
            rows = second(check.sample_query()) if total else []
        else:
            rows = conn.execute(check.sample_query()).fetchall()
            total = len(rows)
            if total >= SAMPLE_ROWS:
                total = int(second(check.count_query())[0][0])
    # Only the first column leaves the report (usually an id): rows may hold personal data.
    first = [row[0] if row else None for row in rows]
    ok, detail = check.evaluate(total, first)
    observed: dict[str, Any] = {"expect": check.expect, "rows": total,
                                "first_values": _jsonable(first)}
    if check.expect == "equals":
        observed["expected_value"] = _jsonable(check.value)
    return ok, detail, observed


# -- verify ------------------------------------------------------------------------------------


def _planned_after_connectivity(
    baseline: Baseline | None,
    expected: Sequence[TableRef],
    critical: Sequence[TableRef],
    custom_checks: Sequence[CustomCheck],
    amcheck: bool,
) -> list[tuple[str, bool]]:
    plan = [("not_in_recovery", True), ("schema", baseline is not None)]
    if expected:
        plan.append(("expected_tables", True))
    if critical:
        plan.append(("row_counts", True))
    plan += [("row_estimates", False), ("fk_orphans", True)]
    plan += [(c.check_name, c.critical) for c in custom_checks]
    if amcheck:
        plan.append(("amcheck", False))
    return plan


def verify(
    dsn: str,
    *,
    baseline: Baseline | None = None,
    critical_tables: Sequence[str] = (),
    row_count_tolerance: float = 0.0,
    custom_checks: Sequence[CustomCheck] = (),
    amcheck: bool = True,
    install_amcheck: bool = False,
    expected_tables: Sequence[str] = (),
    statement_timeout_ms: int = 600_000,
    max_workers: int | None = None,
    connect_attempts: int = 5,
    sleep: Callable[[float], None] = time.sleep,
    reference_dsn: str | None = None,
    reference_counts: bool = True,
) -> VerificationReport:
    """Run the verification suite against ``dsn`` (see the module docstring for the checks).

    Never raises because a check failed: read :attr:`VerificationReport.ok` or call
    :meth:`VerificationReport.raise_for_failures`. A check that errors (a timeout, a missing
    table, no privilege) becomes a failing result with the redacted error; when the database
    cannot be reached at all, every later check is reported as a skipped failure.

    Args:
        dsn: connection string (URL or key=value). Only its redacted form reaches the report.
        baseline: compare schema and exact row counts against it.
        critical_tables: tables to ``count(*)`` exactly; defaults to the baseline's.
        row_count_tolerance: allowed relative difference from the baseline count (0.05 = 5%).
        custom_checks: operator-configured queries (:class:`CustomCheck`).
        amcheck: run ``bt_index_check`` on every B-tree index when amcheck is installed.
        install_amcheck: allow ``CREATE EXTENSION IF NOT EXISTS amcheck`` (a change to the
            verified database; needs the privilege to create it).
        expected_tables: tables that must exist.
        statement_timeout_ms: ``statement_timeout`` of every session (0 = none).
        max_workers: connections for the scans; ``min(4, cores)`` by default. Never more than
            half the server's free connection slots, whatever this says.
        connect_attempts: connection attempts while the server is still starting.
        sleep: injected for tests (connect backoff).
        reference_dsn: production, read only to compare Prisma's migrations with (one attempt;
            the baseline's are used when it cannot be reached) and, without a baseline, the
            schema fingerprint and the critical tables' exact counts (``schema`` and
            ``row_counts`` are unverified when it cannot be reached, or without it).
        reference_counts: False: never count production's rows (a caller that compares them
            itself, with its own tolerance, as the restore drill does).

    Raises:
        ConfigError: malformed arguments (table names, tolerance, duplicate check names, DSN),
            before anything connects.
    """
    if not 0 <= row_count_tolerance < float("inf"):
        raise ConfigError(
            f"row_count_tolerance must be a fraction >= 0 (0.05 = 5%), got {row_count_tolerance!r}"
        )
    if statement_timeout_ms < 0:
        raise ConfigError(f"statement_timeout_ms must be >= 0, got {statement_timeout_ms!r}")
    if connect_attempts < 1:
        raise ConfigError(f"connect_attempts must be at least 1, got {connect_attempts!r}")
    if max_workers is not None and max_workers < 1:
        raise ConfigError(f"max_workers must be at least 1, got {max_workers!r}")
    dupes = [n for n, k in Counter(c.name for c in custom_checks).items() if k > 1]
    if dupes:
        raise ConfigError(f"custom check names must be unique; repeated: {', '.join(dupes)}")
    critical = _parse_tables(critical_tables)
    if not critical and baseline is not None:
        critical = _parse_tables(baseline.exact_counts)
    expected = _parse_tables(expected_tables)
    parse(dsn)  # a malformed DSN is a ConfigError now, not a failed "connectivity" check
    database = display(dsn)

    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    results: list[CheckResult] = []

    def report() -> VerificationReport:
        rep = VerificationReport(database, tuple(results), started_at, _ms(t0))
        log.info("verification of %s: %s (%d checks, %d critical failures, %d warnings)",
                 database, "ok" if rep.ok else "FAILED", len(rep.checks),
                 len(rep.critical_failures), len(rep.warnings))
        return rep

    start = time.perf_counter()
    attempts = 0

    def open_main() -> Connection[Any]:
        nonlocal attempts
        attempts += 1
        return _open(dsn, statement_timeout_ms, read_only=False)

    def skip_the_rest() -> VerificationReport:
        for name, crit in _planned_after_connectivity(
            baseline, expected, critical, custom_checks, amcheck
        ):
            results.append(CheckResult(name, False, crit, "skipped: no connection to the database",
                                       {}, 0.0, skipped=True))
        return report()

    try:
        conn, _ = connect_with_retry(open_main, attempts=connect_attempts, sleep=sleep)
    except (psycopg.Error, RestoreKitError) as exc:
        results.append(CheckResult(
            "connectivity", False, True, f"cannot connect: {_error_text(exc)}",
            {"attempts": attempts}, _ms(start),
        ))
        return skip_the_rest()

    try:
        results.append(_connectivity(conn, attempts, _ms(start)))
        if not results[-1].ok:
            return skip_the_rest()
        results.extend(_run_suite(
            conn, dsn,
            baseline=baseline, critical=critical, expected=expected,
            tolerance=row_count_tolerance, custom_checks=custom_checks, amcheck=amcheck,
            install_amcheck=install_amcheck, statement_timeout_ms=statement_timeout_ms,
            max_workers=max_workers, reference_dsn=reference_dsn,
            reference_counts=reference_counts,
        ))
    finally:
        conn.close()
    return report()


def _connectivity(conn: Connection[Any], attempts: int, connect_ms: float) -> CheckResult:
    start = time.perf_counter()
    try:
        conn.execute("SELECT 1").fetchone()
        latency = _ms(start)
        row = conn.execute("SELECT current_setting('server_version')").fetchone()
    except psycopg.Error as exc:
        return CheckResult("connectivity", False, True, f"error: {_error_text(exc)}",
                           {"attempts": attempts}, connect_ms + _ms(start))
    version = str(row[0]) if row else "?"
    observed = {"latency_ms": latency, "connect_ms": connect_ms, "attempts": attempts,
                "server_version": version, "server_version_num": conn.info.server_version}
    retried = f" after {attempts} attempts" if attempts > 1 else ""
    return CheckResult(
        "connectivity", True, True,
        f"PostgreSQL {version}; SELECT 1 in {latency:.1f} ms{retried}", observed,
        round(connect_ms + _ms(start), 3),
    )


def _run_suite(
    conn: Connection[Any],
    dsn: str,
    *,
    baseline: Baseline | None,
    critical: Sequence[TableRef],
    expected: Sequence[TableRef],
    tolerance: float,
    custom_checks: Sequence[CustomCheck],
    amcheck: bool,
    install_amcheck: bool,
    statement_timeout_ms: int,
    max_workers: int | None,
    reference_dsn: str | None = None,
    reference_counts: bool = True,
) -> list[CheckResult]:
    # First the catalog reads that plan the scans (main connection); the scans start on the
    # workers, and the main connection's own checks (fingerprint, custom checks) run beside them.
    fk_listing: list[tuple[str, ForeignKey, _FkInfo]] = []
    fk_error: CheckResult | None = None
    start = time.perf_counter()
    try:
        fks = catalog_foreign_keys(conn)
        infos = _fk_info(conn)
        fk_listing = [(name, fk, infos.get((fk.child, fk.name), _FkInfo()))
                      for name, fk in zip(_fk_check_names(fks), fks, strict=True)]
    except (psycopg.Error, RestoreKitError) as exc:
        fk_error = CheckResult("fk_orphans", False, True,
                               f"error listing foreign keys: {_error_text(exc)}", {}, _ms(start))
    plan: _AmcheckPlan | CheckResult | None = None
    if amcheck:
        start = time.perf_counter()
        try:
            plan = _prepare_amcheck(conn, install_amcheck)
        except (psycopg.Error, RestoreKitError) as exc:
            plan = CheckResult("amcheck", False, False, f"error: {_error_text(exc)}", {},
                               _ms(start))

    index_jobs = plan.indexes if isinstance(plan, _AmcheckPlan) else ()
    # Every scan, with the bytes it reads: the count reads its table, an orphan check its child
    # and (to build the hash, or walk the key index) its parent, amcheck its index.
    sizes = _relation_sizes(conn) if len(critical) + len(fk_listing) + len(index_jobs) > 1 else {}
    scans: list[tuple[int, Callable[[Connection[Any]], Any]]] = [
        (sizes.get(t, 0), _count_job(t)) for t in critical
    ]
    scans += [(sizes.get(fk.child, 0) + sizes.get(fk.parent, 0), _fk_job(fk, info))
              for _, fk, info in fk_listing]
    if isinstance(plan, _AmcheckPlan):
        scans += [(sizes.get(oid, 0), _amcheck_job(plan.function, oid)) for oid, _ in index_jobs]
    size = _pool_size(len(scans), max_workers=max_workers, cores=os.cpu_count() or 1,
                      free_slots=_free_connection_slots(conn) if scans else None)
    counts: dict[TableRef, _Outcome] = {}
    fk_outcomes: list[_Outcome] = []
    index_outcomes: list[tuple[str, _Outcome]] = []
    head: list[CheckResult] = []
    estimates: CheckResult | None = None
    customs: list[CheckResult] = []
    reference: _Reference | None = None

    def run_main_checks(serial: bool) -> None:
        nonlocal estimates, reference
        head.append(_check("not_in_recovery", True, lambda: _not_in_recovery(conn)))
        if baseline is None and reference_dsn is not None:
            # Without a baseline the restored schema and counts are compared with
            # production's; its scans run on production, not on the restored server the pool
            # keeps busy.
            reference = _read_production(reference_dsn, critical if reference_counts else (),
                                         statement_timeout_ms)
        head.append(_schema(conn, baseline, reference))
        prisma = _prisma_result(conn, baseline, reference_dsn, statement_timeout_ms)
        if prisma is not None:
            head.append(prisma)
        if expected:
            head.append(_check("expected_tables", True,
                               lambda: _expected_tables(conn, expected)))
        estimates = _check("row_estimates", False,
                           lambda: _row_estimates(conn, critical, baseline))
        if not scans:  # no pool: the custom checks run here, after the others
            customs.extend(
                _check(c.check_name, c.critical,
                       partial(_custom, conn, c, statement_timeout_ms, serial))
                for c in custom_checks
            )

    if not scans:
        run_main_checks(serial=False)
    else:
        workers = _Workers(
            lambda: _open(dsn, statement_timeout_ms, read_only=True, serial=size > 1), size
        )
        try:
            # The custom checks first: operator SQL of unknown cost, often a join of the
            # biggest tables (the demo's is the suite's longest statement). On the main
            # connection they used to start after its catalog checks, as a third session
            # beside the pool's two on two cores, and ended alone, last (bench/verify_bench.py:
            # 0.47 s of a 0.54 s suite at scale 5, 0.11 s alone). Then the scans, largest
            # first, so that the longest does not start last and run alone at the end while
            # the other connections idle (results keep their listed order).
            custom_futures = [workers.submit(_custom_job(c, statement_timeout_ms, size > 1))
                              for c in custom_checks]
            futures: dict[int, Future[_Outcome]] = {}
            for i in sorted(range(len(scans)), key=lambda i: -scans[i][0]):
                futures[i] = workers.submit(scans[i][1])
            # The main connection is free meanwhile: its catalog checks run beside the scans.
            run_main_checks(serial=True)
            customs.extend(_custom_result(c, f.result())
                           for c, f in zip(custom_checks, custom_futures, strict=True))
            outcomes = [futures[i].result() for i in range(len(scans))]
            counts = dict(zip(critical, outcomes[:len(critical)], strict=True))
            fk_outcomes = outcomes[len(critical):len(critical) + len(fk_listing)]
            index_outcomes = list(zip((name for _, name in index_jobs),
                                      outcomes[len(critical) + len(fk_listing):], strict=True))
        except BaseException:
            workers.cancel()  # e.g. a task timeout: do not leave scans running on the server
            raise
        finally:
            workers.close()

    results = head
    if critical:
        results.append(_row_counts_result(critical, counts, baseline, tolerance,
                                          reference if reference_counts else None))
    assert estimates is not None  # run_main_checks ran
    results.append(estimates)
    if fk_error is not None:
        results.append(fk_error)
    results.extend(
        _fk_result(name, fk, info, outcome)
        for (name, fk, info), outcome in zip(fk_listing, fk_outcomes, strict=True)
    )
    results.extend(customs)
    if isinstance(plan, _AmcheckPlan):
        results.append(_amcheck_result(plan, index_outcomes))
    elif plan is not None:
        results.append(plan)
    return results


_RELATION_SIZES = sql.SQL(
    """
    SELECT c.oid, n.nspname, c.relname, c.relkind,
           CASE c.relkind WHEN 'p' THEN (SELECT coalesce(sum(pg_relation_size(t.relid)), 0)
                                         FROM pg_partition_tree(c.oid) AS t)
                          ELSE pg_relation_size(c.oid) END
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'i')
      AND c.relpersistence <> 't'
      AND n.nspname <> ALL(%(system)s::text[])
    """
)


def _relation_sizes(conn: Connection[Any]) -> dict[TableRef | int, int]:
    """Bytes of every user table (by :class:`TableRef`) and index (by oid), to schedule the
    biggest scans first. Only an ordering hint: on an error the scans keep their listed order."""
    sizes: dict[TableRef | int, int] = {}
    try:
        rows = conn.execute(_RELATION_SIZES, {"system": list(SYSTEM_SCHEMAS)}).fetchall()
    except psycopg.Error as exc:
        log.info("relation sizes unavailable, scans keep their listed order: %s",
                 _error_text(exc))
        return sizes
    for oid, schema, name, kind, size in rows:
        sizes[int(oid) if kind == "i" else TableRef(schema, name)] = int(size or 0)
    return sizes


# The server's connection slots a client without superuser rights can still take.
_FREE_SLOTS = sql.SQL(
    """
    SELECT current_setting('max_connections')::int
           - current_setting('superuser_reserved_connections')::int
           - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')
    """
)


def _free_connection_slots(conn: Connection[Any]) -> int | None:
    try:
        row = conn.execute(_FREE_SLOTS).fetchone()
    except psycopg.Error as exc:
        log.info("free connection slots unknown: %s", _error_text(exc))
        return None
    return int(row[0]) if row else None


def _pool_size(jobs: int, *, max_workers: int | None, cores: int,
               free_slots: int | None) -> int:
    """Connections for ``jobs`` scans: ``max_workers`` (default ``min(4, cores)``), never more
    than the jobs, nor more than half the server's free connection slots (the application
    being verified needs the others), and at least one."""
    size = min(max_workers or min(MAX_WORKERS, cores), jobs)
    if free_slots is not None:
        size = min(size, free_slots // 2)
    return max(size, 1)


def _custom_job(check: CustomCheck, statement_timeout_ms: int,
                serial: bool) -> Callable[[Connection[Any]], CheckResult]:
    """A custom check as a pool job (read-only session, its own READ ONLY transaction)."""

    def job(conn: Connection[Any]) -> CheckResult:
        return _check(check.check_name, check.critical,
                      partial(_custom, conn, check, statement_timeout_ms, serial))

    return job


def _custom_result(check: CustomCheck, outcome: _Outcome) -> CheckResult:
    if isinstance(outcome.value, CheckResult):
        return outcome.value
    # The job never got a connection (its errors are caught by _check inside the job).
    return CheckResult(check.check_name, False, check.critical, f"error: {outcome.error}", {},
                       outcome.duration_ms)


def _count_job(table: TableRef) -> Callable[[Connection[Any]], int]:
    query = _count_query(table)

    def job(conn: Connection[Any]) -> int:
        row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0

    return job


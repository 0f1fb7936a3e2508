"""Prisma Migrate's history (``_prisma_migrations``) and the ``prisma_migrations`` check."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import Connection, sql

from restorekit.errors import RestoreKitError
from restorekit.integrity._format import (
    _error_text,
    _list_detail,
    _ms,
    _n,
)
from restorekit.integrity.connections import _open
from restorekit.integrity.report import CheckResult
from restorekit.pg.catalog import SYSTEM_SCHEMAS

if TYPE_CHECKING:
    from restorekit.integrity.baseline_model import Baseline


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

"""The ``amcheck`` check: ``bt_index_check`` on every B-tree index."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import Connection, sql

from restorekit.integrity._format import (
    _list_detail,
    _ms,
)
from restorekit.integrity.pool import _Outcome
from restorekit.integrity.report import CheckResult
from restorekit.pg.catalog import SYSTEM_SCHEMAS, TableRef

log = logging.getLogger(__name__)

# SQLSTATEs amcheck raises when it finds corruption (data_corrupted, index_corrupted); any other
# error from bt_index_check (permissions, a lock timeout, an index dropped meanwhile) is not.
_CORRUPTION_SQLSTATES = frozenset({"XX001", "XX002"})


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

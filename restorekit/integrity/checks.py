"""The checks the main connection runs.

Connectivity, recovery state, schema, expected tables and the planner's estimates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import Connection, sql

from restorekit.errors import RestoreKitError
from restorekit.integrity._format import (
    _error_text,
    _list_detail,
    _ms,
    _n,
)
from restorekit.integrity.baseline_model import Baseline
from restorekit.integrity.fingerprint import fingerprint
from restorekit.integrity.reference import _Reference
from restorekit.integrity.report import CheckResult
from restorekit.pg.catalog import TableRef, estimated_rows, list_tables

log = logging.getLogger(__name__)

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

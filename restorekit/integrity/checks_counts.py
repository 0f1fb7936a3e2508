"""The ``row_counts`` check: the critical tables' exact counts against the baseline or production.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from psycopg import Connection

from restorekit.integrity._format import (
    _list_detail,
    _n,
)
from restorekit.integrity.baseline_model import Baseline, _exact_count
from restorekit.integrity.pool import _Outcome
from restorekit.integrity.reference import _Reference
from restorekit.integrity.report import CheckResult
from restorekit.pg.catalog import TableRef


def _count_job(table: TableRef) -> Callable[[Connection[Any]], int]:
    def job(conn: Connection[Any]) -> int:
        return _exact_count(conn, table)

    return job


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

"""The runner: :func:`verify` plans the checks, runs the scans on a pool beside the main
connection's checks, and puts the results in their listed order."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import psycopg
from psycopg import Connection

from restorekit.errors import ConfigError, RestoreKitError
from restorekit.integrity._format import _error_text, _ms
from restorekit.integrity.baseline_model import Baseline, _parse_tables
from restorekit.integrity.checks import (
    _check,
    _connectivity,
    _expected_tables,
    _not_in_recovery,
    _row_estimates,
    _schema,
)
from restorekit.integrity.checks_amcheck import (
    _amcheck_job,
    _amcheck_result,
    _AmcheckPlan,
    _prepare_amcheck,
)
from restorekit.integrity.checks_counts import _count_job, _row_counts_result
from restorekit.integrity.checks_custom import CustomCheck, _custom, _custom_job, _custom_result
from restorekit.integrity.checks_fk import _fk_check_names, _fk_info, _fk_job, _fk_result, _FkInfo
from restorekit.integrity.connections import _open, connect_with_retry
from restorekit.integrity.pool import (
    _free_connection_slots,
    _OpenedAhead,
    _Outcome,
    _pool_size,
    _relation_sizes,
    _Workers,
)
from restorekit.integrity.prisma import _prisma_result
from restorekit.integrity.reference import _read_production, _Reference
from restorekit.integrity.report import CheckResult, VerificationReport
from restorekit.pg.catalog import ForeignKey, TableRef
from restorekit.pg.catalog import foreign_keys as catalog_foreign_keys
from restorekit.pg.dsn import display, parse

log = logging.getLogger(__name__)

_Job = Callable[[Connection[Any]], Any]


@dataclass(frozen=True, slots=True)
class _Suite:
    """What :func:`verify` was asked to check, its arguments checked and its tables parsed."""

    baseline: Baseline | None
    critical: Sequence[TableRef]
    expected: Sequence[TableRef]
    tolerance: float
    custom_checks: Sequence[CustomCheck]
    amcheck: bool
    install_amcheck: bool
    statement_timeout_ms: int
    max_workers: int | None
    reference_dsn: str | None
    reference_counts: bool


def _check_arguments(row_count_tolerance: float, statement_timeout_ms: int,
                     connect_attempts: int, max_workers: int | None,
                     custom_checks: Sequence[CustomCheck]) -> None:
    """Raise :class:`ConfigError` for an argument of :func:`verify` out of range."""
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


def _planned_after_connectivity(suite: _Suite) -> list[tuple[str, bool]]:
    plan = [("not_in_recovery", True), ("schema", suite.baseline is not None)]
    if suite.expected:
        plan.append(("expected_tables", True))
    if suite.critical:
        plan.append(("row_counts", True))
    plan += [("row_estimates", False), ("fk_orphans", True)]
    plan += [(c.check_name, c.critical) for c in suite.custom_checks]
    if suite.amcheck:
        plan.append(("amcheck", False))
    return plan


def _skipped_after_connectivity(suite: _Suite) -> list[CheckResult]:
    return [CheckResult(name, False, crit, "skipped: no connection to the database", {}, 0.0,
                        skipped=True)
            for name, crit in _planned_after_connectivity(suite)]


def _report(database: str, results: Sequence[CheckResult], started_at: datetime,
            t0: float) -> VerificationReport:
    rep = VerificationReport(database, tuple(results), started_at, _ms(t0))
    log.info("verification of %s: %s (%d checks, %d critical failures, %d warnings)",
             database, "ok" if rep.ok else "FAILED", len(rep.checks),
             len(rep.critical_failures), len(rep.warnings))
    return rep


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
    _check_arguments(row_count_tolerance, statement_timeout_ms, connect_attempts, max_workers,
                     custom_checks)
    critical = _parse_tables(critical_tables)
    if not critical and baseline is not None:
        critical = _parse_tables(baseline.exact_counts)
    suite = _Suite(baseline, critical, _parse_tables(expected_tables), row_count_tolerance,
                   custom_checks, amcheck, install_amcheck, statement_timeout_ms, max_workers,
                   reference_dsn, reference_counts)
    parse(dsn)  # a malformed DSN is a ConfigError now, not a failed "connectivity" check
    database = display(dsn)

    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    conn, connectivity = _connect_main(dsn, statement_timeout_ms, connect_attempts, sleep)
    results = [connectivity]
    try:
        if conn is not None and connectivity.ok:
            results.extend(_run_suite(conn, dsn, suite))
        else:
            results.extend(_skipped_after_connectivity(suite))
    finally:
        if conn is not None:
            conn.close()
    return _report(database, results, started_at, t0)


def _connect_main(
    dsn: str, statement_timeout_ms: int, connect_attempts: int, sleep: Callable[[float], None]
) -> tuple[Connection[Any] | None, CheckResult]:
    """The main connection (None when it cannot be opened) and the ``connectivity`` result."""
    start = time.perf_counter()
    attempts = 0

    def open_main() -> Connection[Any]:
        nonlocal attempts
        attempts += 1
        return _open(dsn, statement_timeout_ms, read_only=False)

    try:
        conn, _ = connect_with_retry(open_main, attempts=connect_attempts, sleep=sleep)
    except (psycopg.Error, RestoreKitError) as exc:
        return None, CheckResult(
            "connectivity", False, True, f"cannot connect: {_error_text(exc)}",
            {"attempts": attempts}, _ms(start),
        )
    try:
        return conn, _connectivity(conn, attempts, _ms(start))
    except BaseException:
        conn.close()
        raise


@dataclass(slots=True)
class _MainChecks:
    """What the main connection's checks found (see :func:`_main_checks`)."""

    head: list[CheckResult]
    estimates: CheckResult
    reference: _Reference | None
    customs: list[CheckResult]


def _main_checks(conn: Connection[Any], suite: _Suite, *, with_customs: bool) -> _MainChecks:
    """The checks of the main connection; the custom checks too when no pool runs them."""
    head = [_check("not_in_recovery", True, lambda: _not_in_recovery(conn))]
    reference: _Reference | None = None
    if suite.baseline is None and suite.reference_dsn is not None:
        # Without a baseline the restored schema and counts are compared with
        # production's; its scans run on production, not on the restored server the pool
        # keeps busy.
        reference = _read_production(suite.reference_dsn,
                                     suite.critical if suite.reference_counts else (),
                                     suite.statement_timeout_ms)
    head.append(_schema(conn, suite.baseline, reference))
    prisma = _prisma_result(conn, suite.baseline, suite.reference_dsn,
                            suite.statement_timeout_ms)
    if prisma is not None:
        head.append(prisma)
    if suite.expected:
        head.append(_check("expected_tables", True,
                           lambda: _expected_tables(conn, suite.expected)))
    estimates = _check("row_estimates", False,
                       lambda: _row_estimates(conn, suite.critical, suite.baseline))
    customs: list[CheckResult] = []
    if with_customs:  # no pool: the custom checks run here, after the others
        customs = [
            _check(c.check_name, c.critical,
                   partial(_custom, conn, c, suite.statement_timeout_ms, False))
            for c in suite.custom_checks
        ]
    return _MainChecks(head, estimates, reference, customs)


_FkListing = list[tuple[str, ForeignKey, _FkInfo]]


def _list_foreign_keys(conn: Connection[Any]) -> tuple[_FkListing, CheckResult | None]:
    """Every foreign key with its check name and flags, or the error listing them."""
    start = time.perf_counter()
    try:
        fks = catalog_foreign_keys(conn)
        infos = _fk_info(conn)
        return [(name, fk, infos.get((fk.child, fk.name), _FkInfo()))
                for name, fk in zip(_fk_check_names(fks), fks, strict=True)], None
    except (psycopg.Error, RestoreKitError) as exc:
        return [], CheckResult("fk_orphans", False, True,
                               f"error listing foreign keys: {_error_text(exc)}", {}, _ms(start))


def _plan_amcheck(conn: Connection[Any], install: bool) -> _AmcheckPlan | CheckResult:
    start = time.perf_counter()
    try:
        return _prepare_amcheck(conn, install)
    except (psycopg.Error, RestoreKitError) as exc:
        return CheckResult("amcheck", False, False, f"error: {_error_text(exc)}", {}, _ms(start))


def _scans(conn: Connection[Any], critical: Sequence[TableRef], fk_listing: _FkListing,
           plan: _AmcheckPlan | CheckResult | None) -> list[tuple[int, _Job]]:
    """Every scan, with the bytes it reads: the count reads its table, an orphan check its
    child and (to build the hash, or walk the key index) its parent, amcheck its index."""
    index_jobs = plan.indexes if isinstance(plan, _AmcheckPlan) else ()
    sizes = _relation_sizes(conn) if len(critical) + len(fk_listing) + len(index_jobs) > 1 else {}
    scans: list[tuple[int, _Job]] = [(sizes.get(t, 0), _count_job(t)) for t in critical]
    scans += [(sizes.get(fk.child, 0) + sizes.get(fk.parent, 0), _fk_job(fk, info))
              for _, fk, info in fk_listing]
    if isinstance(plan, _AmcheckPlan):
        scans += [(sizes.get(oid, 0), _amcheck_job(plan.function, oid)) for oid, _ in index_jobs]
    return scans


def _open_ahead(conn: Connection[Any], dsn: str, suite: _Suite) -> tuple[int | None,
                                                                          _OpenedAhead | None]:
    """The server's free connection slots, and the pool connections the critical tables'
    counts will need, already opening (None with fewer than two: a pool of one keeps
    PostgreSQL's parallel workers, and the scans still to be listed decide that)."""
    free_slots = _free_connection_slots(conn)
    count = _pool_size(len(suite.critical), max_workers=suite.max_workers,
                       cores=os.cpu_count() or 1, free_slots=free_slots)
    if len(suite.critical) < 2 or count < 2:
        return free_slots, None
    timeout = suite.statement_timeout_ms
    return free_slots, _OpenedAhead(lambda: _open(dsn, timeout, read_only=True, serial=True),
                                    count)


def _run_on_pool(dsn: str, suite: _Suite, scans: Sequence[tuple[int, _Job]], main_checks:
                 Callable[[], _MainChecks], free_slots: int | None,
                 ahead: _OpenedAhead | None) -> tuple[_MainChecks, list[_Outcome]]:
    """Run the scans and the custom checks on the pool, the main checks beside them."""
    # Never fewer than were opened ahead: the scans include the counts they were opened for.
    size = _pool_size(len(scans), max_workers=suite.max_workers, cores=os.cpu_count() or 1,
                      free_slots=free_slots)
    timeout = suite.statement_timeout_ms
    workers = _Workers(lambda: _open(dsn, timeout, read_only=True, serial=size > 1), size,
                       ahead)
    try:
        # The custom checks first: operator SQL of unknown cost, often a join of the
        # biggest tables (the demo's is the suite's longest statement). On the main
        # connection they used to start after its catalog checks, as a third session
        # beside the pool's two on two cores, and ended alone, last (bench/verify_bench.py:
        # 0.47 s of a 0.54 s suite at scale 5, 0.11 s alone). Then the scans, largest
        # first, so that the longest does not start last and run alone at the end while
        # the other connections idle (results keep their listed order).
        custom_futures = [workers.submit(_custom_job(c, timeout, size > 1))
                          for c in suite.custom_checks]
        futures: dict[int, Future[_Outcome]] = {}
        for i in sorted(range(len(scans)), key=lambda i: -scans[i][0]):
            futures[i] = workers.submit(scans[i][1])
        # The main connection is free meanwhile: its catalog checks run beside the scans.
        main = main_checks()
        main.customs.extend(_custom_result(c, f.result())
                            for c, f in zip(suite.custom_checks, custom_futures, strict=True))
        outcomes = [futures[i].result() for i in range(len(scans))]
    except BaseException:
        workers.cancel()  # e.g. a task timeout: do not leave scans running on the server
        raise
    finally:
        workers.close()
    return main, outcomes


def _run_suite(conn: Connection[Any], dsn: str, suite: _Suite) -> list[CheckResult]:
    # First the catalog reads that plan the scans (main connection), while the pool's first
    # connections open; the scans start on the workers, and the main connection's own checks
    # (fingerprint, custom checks) run beside them.
    free_slots, ahead = _open_ahead(conn, dsn, suite)
    try:
        fk_listing, fk_error = _list_foreign_keys(conn)
        plan = _plan_amcheck(conn, suite.install_amcheck) if suite.amcheck else None
        scans = _scans(conn, suite.critical, fk_listing, plan)
    except BaseException:
        if ahead is not None:
            ahead.close()
        raise
    if scans:
        main, outcomes = _run_on_pool(
            dsn, suite, scans, partial(_main_checks, conn, suite, with_customs=False),
            free_slots, ahead)
    else:
        main, outcomes = _main_checks(conn, suite, with_customs=True), []
    n_counts, n_fks = len(suite.critical), len(fk_listing)
    counts = dict(zip(suite.critical, outcomes[:n_counts], strict=True))
    fk_outcomes = outcomes[n_counts:n_counts + n_fks]

    results = main.head
    if suite.critical:
        results.append(_row_counts_result(suite.critical, counts, suite.baseline, suite.tolerance,
                                          main.reference if suite.reference_counts else None))
    results.append(main.estimates)
    if fk_error is not None:
        results.append(fk_error)
    results.extend(
        _fk_result(name, fk, info, outcome)
        for (name, fk, info), outcome in zip(fk_listing, fk_outcomes, strict=True)
    )
    results.extend(main.customs)
    if isinstance(plan, _AmcheckPlan):
        names = (name for _, name in plan.indexes)
        results.append(_amcheck_result(
            plan, list(zip(names, outcomes[n_counts + n_fks:], strict=True))))
    elif plan is not None:
        results.append(plan)
    return results

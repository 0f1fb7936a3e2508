"""Identify affected data and recover rows (runbook scenarios 2 and 3)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from prefect import task
from prefect.cache_policies import NO_CACHE

from restorekit import diff, integrity, recovery, scope
from restorekit.errors import PostgresError, PostgresUnavailable
from restorekit.models import RestoredRef
from restorekit.pg import catalog
from restorekit.pg.catalog import TableRef
from restorekit.pg.cluster import whole_table_session
from tasks._runtime import RETRY_DELAYS, TargetRef, logger, retry_if_transient, runtime


@contextmanager
def _connection_lost(step: str, atomic: str, **conns: Callable[[], Any]) -> Iterator[None]:
    """Turn a connection lost mid-step (a server killed, restarted, unreachable) into
    PostgresUnavailable that says which database, what state things are in, and what to do.

    ``conns`` maps a description ("the production database") to a callable returning its
    connection (or None before it is open) so the broken one can be named.
    """
    try:
        yield
    except (psycopg.OperationalError, PostgresError) as exc:
        lost = isinstance(exc.__cause__, psycopg.OperationalError)
        if isinstance(exc, PostgresError) and not lost:
            raise  # not a lost connection: the core's own message stands
        broken = [what for what, get in conns.items()
                  if (c := get()) is not None and c.broken]
        raise PostgresUnavailable(
            f"{step}: lost the connection to {' and '.join(broken) or ' or '.join(conns)} "
            f"({' '.join(str(exc).split())[:200]}). "
            f"{atomic} Next: make sure it is up again (a PostgreSQL killed or crashed restarts "
            "with crash recovery; the scratch copy is started again on its own), then re-run "
            "with the same incident id: a finished restore is reused, and the step redoes only "
            "what is missing.") from exc


def _data_session(dsn: str) -> psycopg.Connection[Any]:
    """A connection for a step that reads or writes whole tables (no session timeouts, no
    rows hidden by row-level security: restorekit.pg.cluster.whole_table_session)."""
    return whole_table_session(psycopg.connect(dsn))


@contextmanager
def _live_and_copy(
    ref: TargetRef, restored: RestoredRef, step: str, what: str, state: str,
) -> Iterator[tuple[psycopg.Connection[Any], psycopg.Connection[Any]]]:
    """Connections to production and the scratch copy for a writing step that is one
    transaction (``what``); a connection lost on the way is reported by _connection_lost,
    naming the one that broke and ``state``, what production is left as."""
    atomic = (f"{what} is ONE transaction: it was committed whole or rolled back whole, never "
              f"half ({state}).")
    rt = runtime(ref)
    opened: dict[str, Any] = {}
    with _connection_lost(step, atomic,
                          **{"the production database": lambda: opened.get("live"),
                             f"the scratch copy {restored.name!r}": lambda: opened.get("copy")}), \
            _data_session(rt.live_dsn()) as live, \
            _data_session(rt.dsn_for(restored).get_secret_value()) as copy:
        opened.update(live=live, copy=copy)
        yield live, copy


@task(name="find-integrity-issues", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient)
def find_integrity_issues(ref: TargetRef) -> dict[str, Any]:
    """Run the verification suite on LIVE (read-only) and name the tables behind failures."""
    rt = runtime(ref)
    cfg = rt.config.verify
    report = integrity.verify(
        rt.live_dsn(), critical_tables=list(cfg.critical_tables), amcheck=cfg.amcheck,
        install_amcheck=cfg.install_amcheck,
        custom_checks=[integrity.CustomCheck(**c.model_dump()) for c in cfg.checks],
    )
    findings = scope.integrity_findings(report)
    logger().info("live integrity: %d failing check(s), tables %s", len(findings.failing_checks),
                  ", ".join(findings.tables) or "none")
    return {"tables": list(findings.tables), "failing_checks": list(findings.failing_checks)}


@task(name="identify-affected-data", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient)
def identify_affected_data(ref: TargetRef, restored: RestoredRef,
                           tables: list[str]) -> list[dict[str, Any]]:
    """Row diff by primary key between live and the restored copy for ``tables`` (all tables
    with a primary key when empty): missing, changed and extra rows per table."""
    rt = runtime(ref)
    live = rt.live_dsn()
    copy = rt.dsn_for(restored).get_secret_value()
    with psycopg.connect(live) as conn:
        refs = [TableRef.parse(t) for t in tables] if tables else [
            t for t in catalog.list_tables(conn) if catalog.primary_key(conn, t)
        ]
        known = set(catalog.list_tables(conn))
    unknown = [str(t) for t in refs if t not in known]
    if unknown:
        from restorekit.errors import ConfigError

        raise ConfigError(f"unknown table(s) in the live database: {', '.join(unknown)}")
    with _connection_lost("identify-affected-data", "Nothing was changed (the diff only reads).",
                          **{"the production database or the scratch copy": lambda: None}):
        diffs = diff.diff_tables(live, copy, refs)
    for d in diffs:
        logger().info("%s: %d missing, %d changed, %d newer than the restore point",
                      d.table, d.missing, d.changed, d.extra)
    return [d.to_dict() for d in diffs]


@task(name="identify-deletion-scope", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient)
def identify_deletion_scope(ref: TargetRef, table: str, ids: list[str] | None = None,
                            since: datetime | None = None) -> dict[str, Any]:
    """What was deleted and when: given ids, the audit log, or 'find by anti-diff'."""
    rt = runtime(ref)
    with psycopg.connect(rt.live_dsn()) as conn:
        found = scope.deletion_scope(conn, table, ids=ids, since=since)
    data = found.to_dict()
    data["point_before"] = found.point_before.isoformat() if found.point_before else None
    return data


@task(name="recover-rows", cache_policy=NO_CACHE)
def recover_rows(ref: TargetRef, restored: RestoredRef, table: str,
                 keys: list[list[Any]] | None, include_cascade: bool = True,
                 dry_run: bool = False) -> dict[str, Any]:
    """Re-insert the deleted rows and the children their cascade took, parents first, in one
    transaction, ON CONFLICT DO NOTHING (idempotent)."""
    with _live_and_copy(
            ref, restored, "recover-rows", "The re-insert",
            "production is as before this step, or fully recovered if the COMMIT itself got "
            "through; the re-insert skips rows already present") as (live, copy):
        result = recovery.recover_deleted_rows(
            live, copy, TableRef.parse(table),
            [tuple(k) for k in keys] if keys is not None else None,
            include_cascade=include_cascade, dry_run=dry_run,
        )
    logger().info("recovered %d row(s) (%d already present)", result.inserted,
                  result.skipped_existing)
    return result.to_dict()


def _columns(columns: dict[str, list[str]] | None) -> dict[TableRef, list[str]] | None:
    return {TableRef.parse(t): cs for t, cs in columns.items()} if columns else None


@task(name="check-repair-options", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient)
def check_repair_options(ref: TargetRef, tables: list[str], columns: list[str],
                         keep_rows_written_after: datetime | None) -> dict[str, list[str]]:
    """Read-only: parse ``columns`` (``column``, ``table.column``) against the tables to repair,
    check them and ``keep_rows_written_after`` on live; returns the columns per table."""
    refs = [TableRef.parse(t) for t in tables]
    by_table = recovery.parse_columns(columns, refs)
    with psycopg.connect(runtime(ref).live_dsn()) as conn:
        # No tables: every table is diffed, so any table a column names is repaired.
        recovery.check_repair_options(conn, refs or list(by_table), by_table,
                                      keep_rows_written_after)
    return {str(t): cs for t, cs in by_table.items()}


@task(name="plan-repair", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient)
def plan_repair(ref: TargetRef, restored: RestoredRef, tables: list[str],
                delete_extra: bool = False, update_changed: bool = True,
                columns: dict[str, list[str]] | None = None,
                keep_rows_written_after: datetime | None = None) -> dict[str, Any]:
    """Read-only: exactly which rows repair-rows would write, per table (counts, rows kept,
    and the fingerprint repair-rows checks against once the plan is approved)."""
    rt = runtime(ref)
    with _connection_lost("plan-repair", "Nothing was changed (the plan only reads).",
                          **{"the production database or the scratch copy": lambda: None}), \
            _data_session(rt.live_dsn()) as live, \
            _data_session(rt.dsn_for(restored).get_secret_value()) as copy:
        result = recovery.plan_repair(
            live, copy, [TableRef.parse(t) for t in tables], columns=_columns(columns),
            keep_rows_written_after=keep_rows_written_after, update_changed=update_changed,
            delete_extra=delete_extra,
        )
    return result.to_dict()


@task(name="repair-rows", cache_policy=NO_CACHE)
def repair_rows(ref: TargetRef, restored: RestoredRef, tables: list[str],
                delete_extra: bool = False, dry_run: bool = False,
                update_changed: bool = True, columns: dict[str, list[str]] | None = None,
                keep_rows_written_after: datetime | None = None,
                approved: dict[str, str] | None = None) -> dict[str, Any]:
    """Update changed rows and re-insert missing ones from the copy, in FK order, in one
    transaction; rows newer than the restore point are kept unless ``delete_extra``. With
    ``approved`` (table -> fingerprint from plan-repair) it writes exactly those rows or
    nothing."""
    with _live_and_copy(
            ref, restored, "repair-rows", "The repair",
            "the affected tables are as before this step, or fully repaired if the COMMIT itself "
            "got through; a re-run diffs again and repairs what still differs") as (live, copy):
        result = recovery.repair_rows(
            live, copy, [TableRef.parse(t) for t in tables],
            update_changed=update_changed, delete_extra=delete_extra, dry_run=dry_run,
            columns=_columns(columns), keep_rows_written_after=keep_rows_written_after,
            approved=None if approved is None else {
                TableRef.parse(t): f for t, f in approved.items()},
        )
    logger().info("repaired: %d inserted, %d updated, %d deleted", result.inserted,
                  result.updated, result.deleted)
    return result.to_dict()

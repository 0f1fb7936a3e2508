"""Tasks of the restore drill: choose the point, compare with production, record the result."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from restorekit import drill, forecast
from restorekit.models import RestoredRef
from tasks._runtime import RETRY_DELAYS, TargetRef, logger, retry_if_transient, runtime


@task(name="choose-drill-point", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient)
def choose_drill_point(ref: TargetRef, mode: str, seed: int | None = None) -> dict[str, Any]:
    """The point to restore (latest, or random inside the window) and the window itself."""
    window = runtime(ref).provider.restore_window()
    point = drill.choose_point(window, mode, rng=random.Random(seed))
    window.check(point)
    last_commit = drill.last_commit_time(runtime(ref).live_dsn())
    return {
        "point": str(point),
        "latest": window.latest.isoformat() if window.latest else None,
        "earliest": window.earliest.isoformat() if window.earliest else None,
        "last_commit": last_commit.isoformat() if last_commit else None,
    }


@task(name="compare-with-production", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient)
def compare_with_production(ref: TargetRef, restored: RestoredRef,
                            tolerance: float) -> dict[str, Any]:
    """Exact row counts of the critical tables on production and on the restored copy."""
    rt = runtime(ref)
    tables = list(rt.config.verify.critical_tables)
    counts, failures = drill.compare_row_counts(
        rt.live_dsn(), rt.dsn_for(restored).get_secret_value(), tables, tolerance)
    return {"row_counts": counts, "failures": failures}


@task(name="record-drill", cache_policy=NO_CACHE)
def record_drill(ref: TargetRef, result: drill.DrillResult) -> None:
    """Drill report artifact, plus the drill-history table artifact (trend over past drills)."""
    rt = runtime(ref)
    history = drill.record(rt.settings.state_dir, result)
    slug = "".join(c if c.isalnum() else "-" for c in result.target.lower())
    create_markdown_artifact(key=f"drill-report-{slug}", markdown=result.to_markdown(),
                             description=f"restore drill of {result.target}")
    create_table_artifact(key=f"drill-history-{slug}", table=drill.history_rows(history),
                          description=f"restore drills of {result.target}: RTO, RPO, result")
    logger().info("drill of %s %s (RTO %.1f s)", result.target,
                  "passed" if result.passed else "FAILED", result.rto_seconds)


@task(name="forecast-rto", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient)
def forecast_rto(ref: TargetRef, restored: RestoredRef, phases: dict[str, float],
                 objective_seconds: float) -> forecast.RtoForecast | None:
    """The worst-case RTO from this drill's rates, the WAL archive and the backup schedule
    (None: the provider restores by itself, nothing to forecast)."""
    rt = runtime(ref)
    return forecast.forecast_for_drill(
        rt.provider, cron=rt.config.backups.cron, objective=timedelta(seconds=objective_seconds),
        backup_id=restored.backup_id, recovered_lsn=restored.recovered_to_lsn, phases=phases,
        history=drill.load_history(rt.settings.state_dir, ref.target), now_=drill.now(),
        reports_dir=rt.reports_dir())

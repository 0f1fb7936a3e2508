"""The weekly restore drill (runbook: "regular restore testing, disaster recovery drills, backup
verification").

For each target: restore the latest backup (or a random point inside the window) into a scratch
database, run the full verification suite, compare row counts with production, measure RTO per
phase and RPO, forecast the worst-case RTO (newest base backup + a whole backup interval of WAL
at the measured rates + verification and health), judge them against the target's tier, and
ALWAYS tear the scratch database down, also when a step failed. A drill that misses an
objective, forecasts a worst case beyond it, or fails verification ends Failed and notifies.

Blast radius: none on production (read-only queries); a scratch cluster for the drill's length.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow
from prefect.context import FlowRunContext
from pydantic import BaseModel, Field

from flows._common import lock_dir, one_run_per_target
from restorekit import drill
from restorekit.config import load_settings
from restorekit.errors import RestoreKitError, VerificationFailed
from restorekit.pg.dsn import redact
from tasks._runtime import TargetRef
from tasks.application import run_smoke_checks
from tasks.backups import check_backup_freshness
from tasks.database import (
    discard_restored,
    provider_capabilities,
    restore_name,
    restore_scratch_from_snapshot,
    restore_to_point_in_time,
    verify_integrity,
)
from tasks.drill import choose_drill_point, compare_with_production, forecast_rto, record_drill
from tasks.reporting import notify


class RestoreDrillParams(BaseModel):
    """Which targets to drill, and how."""

    targets: list[str] = Field(default_factory=list,
                               description="Targets to drill (empty: every target in the config).")
    point: Literal["latest", "random"] = Field(
        default="latest", description="Restore the latest point, or a random one in the window.")
    row_count_tolerance: float = Field(
        default=0.01, ge=0, le=1,
        description="Allowed difference between production and restored row counts (fraction).")
    seed: int | None = Field(default=None, description="Seed for the random point.")
    config: str | None = Field(default=None, description="Path of restorekit.toml.")
    lock_wait_seconds: float = Field(
        default=3600, ge=0,
        description="How long to wait while another restorekit run holds a target.")


class DrillFailed(RestoreKitError):
    """A drill missed an objective or failed verification."""


@flow(name="restore-drill", log_prints=True)
def restore_drill(params: RestoreDrillParams) -> list[drill.DrillResult]:
    settings = load_settings(params.config)
    targets = params.targets or sorted(settings.targets)
    results = []
    for target in targets:
        with one_run_per_target(target, params.lock_wait_seconds, lock_dir(params.config)):
            results.append(drill_target(TargetRef(target=target, config=params.config), params))
    failed = [r for r in results if not r.passed]
    if failed:
        raise DrillFailed("; ".join(f"{r.target}: {', '.join(r.failures)}" for r in failed))
    return results


def drill_target(ref: TargetRef, params: RestoreDrillParams) -> drill.DrillResult:
    settings = load_settings(params.config)
    cfg = settings.target(ref.target)
    rto, rpo = settings.objectives(cfg.tier)
    started_at = datetime.now(UTC)
    ctx = FlowRunContext.get()
    run_key = str(ctx.flow_run.id)[:8] if ctx and ctx.flow_run else started_at.strftime("%H%M%S")
    name = restore_name("drill", f"{started_at:%Y%m%dt%H%M%S}-{run_key}")
    result = drill.DrillResult(target=ref.target, tier=cfg.tier, started_at=started_at,
                               point=params.point, rto_objective_seconds=rto.total_seconds(),
                               rpo_objective_seconds=rpo.total_seconds())
    notify(ref, f"restorekit: restore drill of {ref.target} started")
    phases: dict[str, float] = {}
    failures: list[str] = []
    restored = None
    began = time.monotonic()
    try:
        chosen, latest = _choose_point(ref, params, result, failures)
        restored = _restore_copy(ref, chosen["point"], name, result)
        phases.update(restored.phases)
        if restored.recovered_to_time and latest and params.point == "latest":
            result.restore_gap_seconds = max(
                (latest - restored.recovered_to_time).total_seconds(), 0.0)
        _verify_copy(ref, params, restored, phases, failures)
        result.rto_forecast = forecast_rto(ref, restored, phases, rto.total_seconds())
        if params.point == "latest":
            compared = compare_with_production(ref, restored, params.row_count_tolerance)
            result.row_counts = compared["row_counts"]
            failures.extend(compared["failures"])
    except Exception as exc:  # noqa: BLE001 - a drill records every failure, then fails
        failures.append(redact(f"{type(exc).__name__}: {exc}"))
    finally:
        _tear_down(ref, restored, result, failures)
    result.phases = {k: round(v, 3) for k, v in phases.items()}
    result.rto_seconds = time.monotonic() - began
    result.failures = failures
    result = drill.judge(result)
    record_drill(ref, result)
    forecast = result.rto_forecast
    notify(ref, f"restorekit: restore drill of {ref.target} "
                + ("passed" if result.passed else "FAILED: " + "; ".join(result.failures)[:300])
                + f" (RTO {result.rto_seconds:.0f} s"
                + (f"; {forecast.headline()}" if forecast else "") + ")")
    return result


def _choose_point(ref: TargetRef, params: RestoreDrillParams, result: drill.DrillResult,
                  failures: list[str]) -> tuple[dict[str, Any], datetime | None]:
    """Freshness first (what a failure now would lose, before the restore takes its time),
    then the point to restore and the RPO measured from it. Returns the chosen point and the
    newest restorable time."""
    fresh = check_backup_freshness(ref)
    result.freshness, result.freshness_ok = fresh.lines(), fresh.ok
    failures.extend(f"backups at risk: {reason}" for reason in fresh.reasons)
    chosen = choose_drill_point(ref, params.point, params.seed)
    result.point = chosen["point"]
    latest = datetime.fromisoformat(chosen["latest"]) if chosen["latest"] else None
    if latest is not None:
        last_commit = chosen["last_commit"]
        result.rpo_seconds, result.rpo_basis = drill.measure_rpo(
            result.started_at, latest,
            datetime.fromisoformat(last_commit) if last_commit else None)
    return chosen, latest


def _restore_copy(ref: TargetRef, point: str, name: str, result: drill.DrillResult) -> Any:
    """Restore the scratch database the drill verifies."""
    if "new_target_restore" in provider_capabilities(ref):
        restored = restore_to_point_in_time(ref, point, name)
    else:
        # The provider cannot restore into a new database through its API (Supabase): what
        # restorekit can prove restorable is its newest verified logical snapshot.
        restored = restore_scratch_from_snapshot(ref, datetime.now(UTC).isoformat(), name)
        result.point = f"{restored.point} (newest logical snapshot; the provider's own " \
                       "backups cannot be restored to a new database through its API)"
    result.restored_database = restored.display
    return restored


def _verify_copy(ref: TargetRef, params: RestoreDrillParams, restored: Any,
                 phases: dict[str, float], failures: list[str]) -> None:
    """Verification and smoke checks, each timed as a phase; a failure is recorded, not
    raised."""
    t0 = time.monotonic()
    try:
        # A random point may predate a migration production has since applied. Row counts:
        # compared with production below (latest only, the drill's own tolerance), so
        # verification leaves them unverified rather than compare them twice.
        verify_integrity(ref, restored, use_baseline=False,
                         compare_with_production=params.point == "latest",
                         compare_counts=False)
    except VerificationFailed as exc:
        failures.append(f"verification: {exc}")
    phases["verification"] = time.monotonic() - t0
    t0 = time.monotonic()
    try:
        # The application's functions, where smoke checks are configured: it runs on
        # production, so this proves the checks (and the test account) still work.
        run_smoke_checks(ref)
    except VerificationFailed as exc:
        failures.append("smoke checks: " + "; ".join(
            f"{c.name}: {c.detail}" for c in exc.report.critical_failures))
    phases["health"] = time.monotonic() - t0


def _tear_down(ref: TargetRef, restored: Any, result: drill.DrillResult,
               failures: list[str]) -> None:
    """ALWAYS drop the scratch database, also when a step failed."""
    if restored is not None:
        try:
            discard_restored(ref, restored)
            result.torn_down = True
        except Exception as exc:  # noqa: BLE001
            failures.append(redact(f"teardown failed: {exc}"))
    else:
        result.torn_down = True  # nothing was created

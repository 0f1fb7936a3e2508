"""What the row-level scenarios (2, partial corruption, and 3, accidental deletion) share: the
plan around their own steps, the scratch copy they read from, and the checks and cleanup after
production was written to."""

from __future__ import annotations

from typing import Any

from flows._common import Recorder
from flows._point import loss_lines, point_line
from restorekit.health import plan_lines as health_plan_lines
from tasks._runtime import TargetRef
from tasks.application import check_health, health_endpoint, run_smoke_checks
from tasks.database import (
    capture_baseline,
    discard_restored,
    restore_scratch_from_snapshot,
    restore_to_point_in_time,
)


def plan_row_repair(rec: Recorder, ref: TargetRef, point: str, stale: list[str],
                    lines: list[str]) -> None:
    """Show the plan: the stale restores to sweep, how the point was found, which later writes
    the repair keeps, the scenario's own ``lines``, and how health is checked."""
    rec.plan([
        *rec.sweep_line(stale),
        *point_line(rec),
        *loss_lines(rec, ref, point, kept=True),
        *lines,
        *health_plan_lines(health_endpoint(ref)),
    ])


def restore_scratch_copy(rec: Recorder, ref: TargetRef, point: str, name: str, *,
                         from_snapshot: bool, tables: list[str] | None = None) -> Any:
    """Restore the copy the repair reads from: at ``point`` into a new database, or, where the
    provider cannot, from the newest verified logical snapshot before it (only ``tables``)."""
    if from_snapshot:
        restored = rec.step("scratch copy from snapshot", restore_scratch_from_snapshot, ref,
                            point, name, tables)
    else:
        restored = rec.step("restore scratch copy", restore_to_point_in_time, ref, point, name)
    rec.restored(restored)
    return restored


def check_and_drop_scratch_copy(rec: Recorder, ref: TargetRef, restored: Any) -> None:
    """After the repair: the application's health and smoke checks, then drop the scratch copy
    and capture a new baseline."""
    rec.report.add_health(rec.step("check health", check_health, ref))
    rec.add_checks(rec.step("smoke checks", run_smoke_checks, ref))
    rec.step("drop scratch copy", discard_restored, ref, restored)
    rec.step("capture baseline", capture_baseline, ref)


__all__ = ["check_and_drop_scratch_copy", "plan_row_repair", "restore_scratch_copy"]

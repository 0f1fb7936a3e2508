"""Prefect tasks: thin wrappers over restorekit that add retries, rollback hooks, logging and
artifacts. Names follow the runbook."""

from tasks.application import (
    check_health,
    redeploy_application,
    resume_application,
    run_smoke_checks,
    stop_application,
)
from tasks.backups import check_backup_freshness, expire_old_backups
from tasks.connection import swap_connection_string
from tasks.data import (
    find_integrity_issues,
    identify_affected_data,
    identify_deletion_scope,
    recover_rows,
    repair_rows,
)
from tasks.database import (
    adopt_restored,
    capture_baseline,
    discard_restored,
    preflight,
    protect_new_production,
    provider_capabilities,
    restore_in_place,
    restore_scratch_from_snapshot,
    restore_to_point_in_time,
    snapshot_current_state,
    sweep_stale_restores,
    take_base_backup,
    verify_integrity,
)
from tasks.drill import choose_drill_point, compare_with_production, record_drill
from tasks.reporting import notify, write_report

__all__ = [
    "adopt_restored",
    "capture_baseline",
    "check_backup_freshness",
    "expire_old_backups",
    "check_health",
    "choose_drill_point",
    "compare_with_production",
    "provider_capabilities",
    "record_drill",
    "restore_in_place",
    "restore_scratch_from_snapshot",
    "take_base_backup",
    "discard_restored",
    "find_integrity_issues",
    "identify_affected_data",
    "identify_deletion_scope",
    "notify",
    "preflight",
    "protect_new_production",
    "recover_rows",
    "redeploy_application",
    "repair_rows",
    "restore_to_point_in_time",
    "resume_application",
    "run_smoke_checks",
    "snapshot_current_state",
    "stop_application",
    "sweep_stale_restores",
    "swap_connection_string",
    "verify_integrity",
    "write_report",
]

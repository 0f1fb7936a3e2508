"""Scenario 1 of the runbook: complete database failure.

The database is inaccessible. restorekit restores the latest (or a chosen) point into a NEW
database, verifies it, points the application at it and redeploys. Nothing is overwritten: the
old database is left as it is, and if verification or the health check fails the connection
string and deployment are put back and the restored database is kept for forensics.

Blast radius: the application is stopped from step 2 until the redeploy; the connection string
is changed (reversibly).
"""

from __future__ import annotations

from prefect import flow
from prefect.transactions import transaction

from flows._common import Recorder, ScenarioParams
from restorekit.report import IncidentReport
from tasks.application import check_health, redeploy_application, resume_application, stop_application
from tasks.connection import swap_connection_string
from tasks.database import adopt_restored, capture_baseline, preflight, restore_name, restore_to_point_in_time, verify_integrity
from tasks._runtime import TargetRef


class CompleteFailureParams(ScenarioParams):
    """Restore into a new database and switch the application over."""


@flow(name="complete-failure", log_prints=True)
def complete_failure(params: CompleteFailureParams) -> IncidentReport:
    ref = TargetRef(target=params.target, config=params.config)
    rec = Recorder("complete-failure", params)
    reason = f"restorekit complete-failure {rec.incident_key}"
    with rec.run(ref) as report:
        pre = rec.step("preflight", preflight, ref, params.restore_point,
                       needs=("new_target_restore",))
        name = restore_name("cf", rec.incident_key)
        rec.plan([
            f"Stop the application ({pre.app}).",
            f"Restore {pre.target} ({pre.provider}) at {pre.point} into a NEW database "
            f"'{name}'; restore window {pre.window}, {pre.backups} base backup(s).",
            "Verify the restored database (connectivity, schema, row counts, every foreign "
            "key, custom checks, amcheck).",
            f"Swap the connection string in {pre.connection_store} to the restored database.",
            "Redeploy the application and check its health; on failure put the old "
            "connection string back, redeploy, and keep the restored database for forensics.",
        ])
        if params.dry_run:
            report.outcome = "dry-run"
            return report
        rec.approve()
        app_state = rec.step("stop application", stop_application, ref, reason)
        try:
            restored = rec.step("restore to point in time", restore_to_point_in_time, ref,
                                params.restore_point, name)
            report.restored_database = restored.display
            report.recovered_to_time = restored.recovered_to_time
            report.recovered_to_lsn = restored.recovered_to_lsn
            verified = rec.step("verify integrity", verify_integrity, ref, restored)
            rec.add_checks(verified)
        except BaseException:
            # Nothing was swapped: bring the application back exactly as it was.
            rec.step("resume application", resume_application, ref, app_state)
            raise
        with transaction():
            rec.step("swap connection string", swap_connection_string, ref, restored)
            rec.step("redeploy application", redeploy_application, ref, reason)
            rec.step("check health", check_health, ref)
        rec.step("adopt restored database", adopt_restored, ref, restored)
        rec.step("capture baseline", capture_baseline, ref)
    return report

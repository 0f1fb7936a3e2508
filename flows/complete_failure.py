"""Scenario 1 of the runbook: complete database failure.

The database is inaccessible. Where the provider can restore into a NEW database (self-hosted,
RDS, Neon), restorekit restores the latest (or a chosen) point there, verifies it, points the
application at it and redeploys; nothing is overwritten, and if verification or the health check
fails the connection string and deployment are put back and the restored database is kept for
forensics. Where the provider can only restore in place (Supabase), the plan says so, a verified
logical snapshot of the current state is taken first, and only then is the database overwritten.

Blast radius: the application is stopped from step 2 until the redeploy; the connection string
is changed (reversibly); with an in-place provider, the current database is replaced (after the
snapshot).

Verification must not pass blind: the restored database's row counts are compared with the
stored baseline (the repository's, else the local one) or, without one, with production. When
neither exists (no baseline, production unreachable) the plan says so and the swap waits for an
operator's approval even with ``require_approval`` off; so does a verification that comes back
unverified when the plan expected a reference. Without a health URL the plan says the
application's health is not checked, and the report shows that as a warning.
"""

from __future__ import annotations

from prefect import flow
from prefect.transactions import transaction
from pydantic import Field

from flows._common import Recorder, ScenarioParams
from flows._point import (
    DamagedRows,
    determine_restore_point,
    loss_lines,
    point_line,
    split_keys,
)
from restorekit.errors import CapabilityNotSupported, RestoreNotStarted, SafetyError
from restorekit.health import plan_lines as health_plan_lines
from restorekit.report import IncidentReport
from tasks._runtime import TargetRef
from tasks.application import (
    check_health,
    health_endpoint,
    redeploy_application,
    resume_application,
    run_smoke_checks,
    stop_application,
)
from tasks.connection import swap_connection_string
from tasks.database import (
    Preflight,
    VerificationReference,
    adopt_restored,
    capture_baseline,
    find_verification_reference,
    preflight,
    protect_new_production,
    restore_in_place,
    restore_name,
    restore_to_point_in_time,
    snapshot_current_state,
    sweep_stale_restores,
    verify_integrity,
)
from tasks.reporting import notify
from tasks.watch import start_post_restore_watch


class CompleteFailureParams(ScenarioParams, DamagedRows):
    """Restore into a new database and switch the application over (or, on providers that can
    only restore in place, snapshot first and restore in place)."""

    accept_in_place_without_snapshot: bool = Field(
        default=False,
        description="In-place providers only: go on when the current database is too broken to "
        "snapshot (its current state is then lost). Off: refuse.",
    )


@flow(name="complete-failure", log_prints=True)
def complete_failure(params: CompleteFailureParams) -> IncidentReport:
    ref = TargetRef(target=params.target, config=params.config)
    rec = Recorder("complete-failure", params)
    with rec.run(ref) as report:
        point = determine_restore_point(
            rec, ref, params.restore_point, table=params.damaged_table,
            keys=split_keys(params.damaged_ids), kind="deleted", where=params.where,
            good_point=params.good_point)
        params = params.model_copy(update={"restore_point": point})
        report.restore_point = point
        pre = rec.step("preflight", preflight, ref, params.restore_point, swap=True)
        if pre.can("new_target_restore"):
            _restore_to_new_database(rec, ref, params, pre)
        elif pre.can("in_place_restore"):
            _restore_in_place(rec, ref, params, pre)
        else:
            raise CapabilityNotSupported(
                f"provider {pre.provider!r} can neither restore into a new database nor in place")
    return report


def _restore_to_new_database(rec: Recorder, ref: TargetRef, params: CompleteFailureParams,
                             pre: Preflight) -> None:
    report = rec.report
    reason = f"restorekit complete-failure {rec.incident_key}"
    name = restore_name("cf", rec.incident_key)
    stale = rec.step("find stale restores", sweep_stale_restores, ref, [name], True)
    reference = find_verification_reference(ref)
    health_url = health_endpoint(ref)
    rec.plan([
        *rec.sweep_line(stale),
        *point_line(rec),
        *loss_lines(rec, ref, params.restore_point, kept=False),
        f"Stop the application ({pre.app}).",
        f"Restore {pre.target} ({pre.provider}) at {pre.point} into a NEW database "
        f"'{name}'; restore window {pre.window}, {pre.backups} backup(s).",
        "Verify the restored database (connectivity, schema, row counts, every foreign "
        "key, custom checks, amcheck); " + _reference_line(reference),
        f"Swap the connection string in {pre.connection_store} to the restored database.",
        "Redeploy the application, check its health and run its smoke checks; on failure "
        "put the old connection string back, redeploy, and keep the restored database for "
        "forensics.",
        *health_plan_lines(health_url),
        "Adopt the restored database as production (recorded in restorekit's state, so every "
        "later command acts on it) and protect it again: backups and WAL archiving resume at "
        "once (a failure there is reported, it does not undo the restore).",
    ])
    if params.dry_run:
        report.outcome = "dry-run"
        return
    _approve(rec, required_because=BLIND_SWAP if reference.blind else None)
    if stale:
        rec.step("sweep stale restores", sweep_stale_restores, ref, [name])
    app_state = rec.step("stop application", stop_application, ref, reason)
    try:
        restored = rec.step("restore to point in time", restore_to_point_in_time, ref,
                            params.restore_point, name)
        rec.restored(restored)
        verified = rec.step("verify integrity", verify_integrity, ref, restored)
        report.add_verification(verified)
        if not verified.verified and not reference.blind:
            # The plan promised a reference (production answered then) that verification did
            # not get: the same gate as a blind plan, before anything is swapped.
            rec.plan([*report.plan, "Verification could not verify: " + "; ".join(
                f"{c.name}: {c.detail}" for c in verified.unverified) + ". " + BLIND_SWAP])
            _approve(rec, required_because=BLIND_SWAP)
    except BaseException as exc:
        # Nothing was swapped: bring the application back exactly as it was.
        _put_application_back(rec, ref, app_state, exc, (
            "The application was started again as it was, on its old connection string "
            "(nothing was swapped)."))
        raise
    with transaction():
        rec.step("swap connection string", swap_connection_string, ref, restored)
        rec.step("redeploy application", redeploy_application, ref, reason)
        report.add_health(rec.step("check health", check_health, ref))
        # A critical smoke failure raises here, inside the transaction: the swap rolls back.
        rec.add_checks(rec.step("smoke checks", run_smoke_checks, ref))
    note = rec.step("adopt restored database", adopt_restored, ref, restored, rec.incident_key)
    if note:
        report.notes.append(note)
    # Backups resume on the new production; a failure here does not undo the restore.
    protection = rec.step("protect new production", protect_new_production, ref)
    report.protection = protection.line()
    if not protection.protected:
        notify(ref, f"restorekit: {report.target} was restored but is NOT protected again: "
                    f"{report.protection}")
    rec.step("capture baseline", capture_baseline, ref)
    # Its own flow run (the window is 30 min): started, or the note says how to start it.
    report.notes.append(rec.step("start post-restore watch", start_post_restore_watch, ref,
                                 f"complete-failure {rec.incident_key}"))


def _restore_in_place(rec: Recorder, ref: TargetRef, params: CompleteFailureParams,
                      pre: Preflight) -> None:
    report = rec.report
    reason = f"restorekit complete-failure {rec.incident_key}"
    rec.plan([
        *point_line(rec),
        *loss_lines(rec, ref, params.restore_point, kept=False),
        f"Stop the application ({pre.app}).",
        f"Take a verified logical snapshot of the CURRENT {pre.target} database "
        f"({pre.live_database}) into the repository: {pre.provider} restores IN PLACE, so this "
        "is the only copy of the current state."
        + (" If it cannot be taken, go on anyway (accepted by the operator)."
           if params.accept_in_place_without_snapshot else " If it cannot be taken, stop here."),
        f"Restore {pre.target} IN PLACE at {pre.point} (window {pre.window}): the current "
        "database is overwritten; its connection string stays the same.",
        "Verify the database, redeploy the application and check its health.",
        *health_plan_lines(health_endpoint(ref)),
    ])
    if params.dry_run:
        report.outcome = "dry-run"
        return
    rec.approve()
    app_state = rec.step("stop application", stop_application, ref, reason)
    snapshot = None
    try:
        snapshot = rec.step("snapshot current state", snapshot_current_state, ref, None,
                            label=f"before-in-place-{rec.incident_key}")
        report.snapshots.append(f"{snapshot['location']} ({snapshot['snapshot_id']}, "
                                f"{snapshot['size_bytes']} bytes, verified)")
    except BaseException as exc:
        if not params.accept_in_place_without_snapshot:
            rec.step("resume application", resume_application, ref, app_state)
            raise SafetyError(
                f"no verified snapshot of the current database could be taken ({exc}); an "
                f"in-place restore on {pre.provider} would destroy its current state without "
                "one. Nothing was changed. Re-run with accept_in_place_without_snapshot if the "
                "current state is worthless."
            ) from exc
        report.notes.append(f"no snapshot of the current state (accepted by the operator): {exc}")
    try:
        rec.step("restore in place", restore_in_place, ref, params.restore_point, snapshot)
    except RestoreNotStarted as exc:
        # The provider refused before sending anything (a paused project): nothing changed.
        _put_application_back(rec, ref, app_state, exc, (
            "The provider refused to start the restore (nothing was sent; the database is "
            "as it was); the application was started again as it was."))
        raise
    verified = rec.step("verify integrity", verify_integrity, ref, None)
    report.add_verification(verified)
    rec.step("redeploy application", redeploy_application, ref, reason)
    report.add_health(rec.step("check health", check_health, ref))
    rec.add_checks(rec.step("smoke checks", run_smoke_checks, ref))
    rec.step("capture baseline", capture_baseline, ref)
    report.notes.append(rec.step("start post-restore watch", start_post_restore_watch, ref,
                                 f"complete-failure {rec.incident_key}"))


#: Why a swap with nothing to verify the restore against waits for a human.
BLIND_SWAP = ("Nothing can show that the restored database is the right one (its row counts "
              "have nothing to be compared with), so the swap waits for an operator's approval "
              "even with require_approval off; capture a baseline (the backup flow does) to "
              "avoid this.")


def _reference_line(reference: VerificationReference) -> str:
    if reference.blind:
        return f"its row counts CANNOT be verified: {reference.detail}. {BLIND_SWAP}"
    return f"its row counts are compared with {reference.detail}."


def _approve(rec: Recorder, *, required_because: str | None) -> None:
    """The plan's approval gate; with ``required_because`` it is asked for even when the run
    was started with require_approval off."""
    if required_because is not None and not rec.params.require_approval:
        # Recorder.approve asks only when the run's parameters say so: require it for this run.
        rec.params = rec.params.model_copy(update={"require_approval": True})
        rec.report.notes.append(f"approval required: {required_because}")
    rec.approve()


def _put_application_back(rec: Recorder, ref: TargetRef, app_state: object,
                          exc: BaseException, why: str) -> None:
    """Start the application again as it was, and say so in the report and on the error."""
    rec.step("resume application", resume_application, ref, app_state)
    rec.report.notes.append(why)
    exc.add_note(why)

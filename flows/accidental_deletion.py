"""Scenario 3 of the runbook: accidental data deletion.

Specific rows were deleted (with whatever ON DELETE CASCADE took with them). restorekit finds the
deletion scope (the audit log, given ids, or a primary-key anti-diff), restores a scratch copy
from just before the deletion, and re-inserts exactly the deleted rows and their cascaded
children, parents first, in one transaction, ON CONFLICT DO NOTHING. Rows written after the
deletion are never touched; running it twice inserts nothing the second time.

Blast radius: inserts only, into the tables of the cascade; the application is stopped while
rows are re-inserted when stop_application is on.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow
from pydantic import AwareDatetime, BeforeValidator, Field

from flows._common import Recorder, ScenarioParams
from flows._point import determine_restore_point, is_auto
from flows._scratch import check_and_drop_scratch_copy, plan_row_repair, restore_scratch_copy
from restorekit.errors import ConfigError, VerificationFailed
from restorekit.report import IncidentReport
from tasks._runtime import TargetRef
from tasks.application import (
    resume_application,
    stop_application,
)
from tasks.data import identify_deletion_scope, recover_rows
from tasks.database import (
    Preflight,
    preflight,
    restore_name,
    sweep_stale_restores,
    verify_integrity,
)
from tasks.history import audit_log_point
from tasks.watch import start_post_restore_watch


def _int_to_text(value: object) -> object:
    # Incident tooling sends ids as JSON integers as often as strings; floats are not keys.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


KeyText = Annotated[str, BeforeValidator(_int_to_text)]


class AccidentalDeletionParams(ScenarioParams):
    """Bring back deleted rows and what their cascade removed."""

    restore_point: str = Field(
        default="latest",
        description="'latest' = just before the first deletion the audit log recorded; 'auto' "
        "= just before the transaction that deleted the rows, found in the WAL (or by "
        "bisection on Neon); or an explicit point (ISO-8601 time WITH timezone, lsn:..., "
        "before-xid:..., name:...).",
    )
    table: str = Field(default="users", description="The table rows were deleted from.")
    ids: list[KeyText] = Field(default_factory=list,
                           description="Primary keys to bring back (empty: all that were deleted).")
    deleted_since: AwareDatetime | None = Field(
        default=None, description="Only deletions at or after this time (with timezone).")
    stop_application: bool = Field(
        default=False, description="Stop the application first (if the deletion is ongoing).")
    include_cascade: bool = Field(
        default=True, description="Also bring back the children ON DELETE CASCADE removed.")


@flow(name="accidental-deletion", log_prints=True)
def accidental_deletion(params: AccidentalDeletionParams) -> IncidentReport:
    ref = TargetRef(target=params.target, config=params.config)
    rec = Recorder("accidental-deletion", params)
    reason = f"restorekit accidental-deletion {rec.incident_key}"
    with rec.run(ref) as report:
        found = rec.step("identify deletion scope", identify_deletion_scope, ref, params.table,
                         params.ids or None, params.deleted_since)
        point = _determine_restore_point(rec, ref, params, found)
        pre = rec.step("preflight", preflight, ref, point, snapshot_copy_allowed=True,
                       privileges=("select", "insert"))
        from_snapshot = not pre.can("new_target_restore")
        keys = found["keys"]
        name = restore_name("ad", rec.incident_key)
        stale = rec.step("find stale restores", sweep_stale_restores, ref, [name], True)
        plan_row_repair(rec, ref, point, stale,
                        _plan_lines(params, pre, name, found, from_snapshot))
        if params.dry_run:
            report.outcome = "dry-run"
            return report
        rec.approve()
        if stale:
            rec.step("sweep stale restores", sweep_stale_restores, ref, [name])
        app_state = (rec.step("stop application", stop_application, ref, reason)
                     if params.stop_application else None)
        try:
            restored = restore_scratch_copy(rec, ref, point, name, from_snapshot=from_snapshot)
            result = rec.step("recover rows", recover_rows, ref, restored, params.table, keys,
                              params.include_cascade)
            rec.add_changes(result)
            if result["keys_not_in_copy"]:
                report.notes.append(
                    f"{result['keys_not_in_copy']} requested key(s) were not in the copy at "
                    f"{point} (created after it, or wrong ids)")
            verified = rec.step("verify integrity", verify_integrity, ref, None, use_baseline=False)
            report.add_verification(verified)
        finally:
            if app_state is not None:
                rec.step("resume application", resume_application, ref, app_state)
        check_and_drop_scratch_copy(rec, ref, restored)
        if any(t.get("inserted") for t in result.get("tables") or []):
            # Production changed: watch it (its own flow run, or a note saying how to start it).
            report.notes.append(rec.step("start post-restore watch", start_post_restore_watch,
                                         ref, f"accidental-deletion {rec.incident_key}"))
    return report


def _determine_restore_point(rec: Recorder, ref: TargetRef, params: AccidentalDeletionParams,
                             found: dict[str, Any]) -> str:
    """Runbook: "Determine restore point": just before the deletion (from the audit log by
    default), found in the WAL with auto, or the operator's own."""
    point = params.restore_point
    if point == "latest":
        if not found["point_before"]:
            raise ConfigError(
                f"no deletion from {params.table} is recorded in an audit log: give the "
                "restore point (a time just before the deletion), or --point auto to find "
                "the deleting transaction in the WAL"
            )
        point = found["point_before"]
        rec.report.point_found = audit_log_point(point, found["source"])
    if is_auto(point) and found["keys"] is None and not params.where:
        raise ConfigError(f"--point auto needs the deleted {params.table} rows: --ids, "
                          "--where, or an audit log that recorded them")
    point = determine_restore_point(
        rec, ref, point, table=params.table,
        keys=[[str(v) for v in k] for k in found["keys"] or []],
        kind="deleted", where=params.where if found["keys"] is None else None,
        good_point=params.good_point)
    rec.report.restore_point = point
    return point


def _plan_lines(params: AccidentalDeletionParams, pre: Preflight, name: str,
                found: dict[str, Any], from_snapshot: bool) -> list[str]:
    """The plan from stopping the application to the cleanup."""
    keys = found["keys"]
    what = (f"{len(keys)} {params.table} row(s) from {found['source']}" if keys is not None
            else f"every {params.table} row missing from live (anti-diff against the copy)")
    return [
        *([f"Stop the application ({pre.app})."] if params.stop_application else []),
        (f"Restore a scratch copy of {pre.target} at {pre.point} (window {pre.window}) as "
         f"'{name}'; production is not touched." if not from_snapshot else
         f"{pre.provider} cannot restore into a new database (and an in-place restore would "
         "destroy everything written since), so the copy comes from the newest verified "
         f"logical snapshot taken before {pre.point}, restored into a local scratch cluster; "
         "rows created between that snapshot and the deletion cannot be recovered."),
        f"Re-insert {what}"
        + (" and the rows ON DELETE CASCADE removed with them" if params.include_cascade else "")
        + ", parents first, in one transaction, ON CONFLICT DO NOTHING; rows written since "
        "are kept.",
        "Verify the recovered keys are present and every foreign key has its parent.",
        *(["Resume the application."] if params.stop_application else []),
        "Check the application's health, drop the scratch copy, write the report.",
    ]


__all__ = ["AccidentalDeletionParams", "VerificationFailed", "accidental_deletion"]

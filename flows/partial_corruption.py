"""Scenario 2 of the runbook: partial data corruption.

Some rows are missing or wrong, but the database is up. restorekit finds the affected data
(integrity findings on live, then a row diff by primary key against a scratch copy restored at
the point before the corruption), takes a verified snapshot of the affected tables, then repairs:
missing rows re-inserted and changed rows updated from the copy, parents first, in one
transaction. Rows created after the restore point are kept unless full_replace is asked for.

Blast radius: updates and inserts (and with full_replace, deletes) in the affected tables only,
after a verified snapshot of exactly those tables.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import AwareDatetime, Field

from flows._common import Recorder, ScenarioParams
from flows._point import (
    DamagedRows,
    determine_restore_point,
    is_auto,
    split_keys,
)
from flows._scratch import check_and_drop_scratch_copy, plan_row_repair, restore_scratch_copy
from restorekit.errors import ConfigError
from restorekit.models import RestorePoint
from restorekit.recovery import check_keep_after
from restorekit.report import IncidentReport
from tasks._runtime import TargetRef
from tasks.data import (
    check_repair_options,
    find_integrity_issues,
    identify_affected_data,
    plan_repair,
    repair_rows,
)
from tasks.database import (
    Preflight,
    check_tables,
    preflight,
    restore_name,
    snapshot_current_state,
    sweep_stale_restores,
    verify_integrity,
)
from tasks.watch import start_post_restore_watch


class PartialCorruptionParams(ScenarioParams, DamagedRows):
    """Repair corrupted or missing rows from a copy restored before the corruption."""

    restore_point: str = Field(
        default="",
        description="A point BEFORE the corruption: auto (found from the damaged rows), "
        "ISO-8601 time WITH timezone, lsn:..., before-xid:..., name:..., backup:...",
    )
    tables: list[str] = Field(
        default_factory=list,
        description="Tables to repair (empty: those with integrity findings, else every table).",
    )
    full_replace: bool = Field(
        default=False,
        description="Also delete rows created after the restore point (makes the tables equal "
        "to the copy). Off: newer rows are kept.",
    )
    columns: list[str] = Field(
        default_factory=list,
        description="Only these corrupted columns are compared and rewritten, as table.column "
        "(or column when exactly one table is given); the rest of each row stays as it is live. "
        "Missing rows are still re-inserted whole. Empty: every column.",
    )
    keep_rows_written_after: AwareDatetime | None = Field(
        default=None,
        description="When the corruption ended (with timezone): rows whose current version "
        "committed later are left alone; needs track_commit_timestamp = on. Rows deleted later "
        "stay deleted when the audit log records it, otherwise they are re-inserted.",
    )
    damaged_column: str | None = Field(
        default=None,
        description="With restore_point auto: find the first update that changed this column "
        "of those rows (default: their first update or delete).",
    )


@flow(name="partial-corruption", log_prints=True)
def partial_corruption(params: PartialCorruptionParams) -> IncidentReport:
    ref = TargetRef(target=params.target, config=params.config)
    rec = Recorder("partial-corruption", params)
    with rec.run(ref) as report:
        params = _determine_restore_point(rec, ref, params)
        pre = rec.step("preflight", preflight, ref, params.restore_point,
                       snapshot_copy_allowed=True,
                       privileges=("select", "insert", "update")
                       + (("delete",) if params.full_replace else ()))
        from_snapshot = not pre.can("new_target_restore")
        if params.tables:
            rec.step("check tables", check_tables, ref, list(params.tables))
        findings = rec.step("find integrity issues", find_integrity_issues, ref)
        tables = list(params.tables) or list(findings["tables"])
        columns: dict[str, list[str]] = {}
        if params.columns or params.keep_rows_written_after:
            columns = rec.step("check repair options", check_repair_options, ref, tables,
                               list(params.columns), params.keep_rows_written_after)
        if findings["failing_checks"]:
            report.notes.append("live integrity findings: " + ", ".join(findings["failing_checks"]))
        name = restore_name("pc", rec.incident_key)
        stale = rec.step("find stale restores", sweep_stale_restores, ref, [name], True)
        plan_row_repair(rec, ref, params.restore_point, stale,
                        _plan_lines(params, pre, name, tables, columns, from_snapshot))
        if params.dry_run:
            report.outcome = "dry-run"
            return report
        if stale:
            rec.step("sweep stale restores", sweep_stale_restores, ref, [name])
        restored = restore_scratch_copy(rec, ref, params.restore_point, name,
                                        from_snapshot=from_snapshot, tables=tables or None)
        repaired = _repair_affected_rows(rec, ref, params, restored, tables, columns,
                                         from_snapshot)
        verified = rec.step("verify integrity", verify_integrity, ref, None, use_baseline=False)
        report.add_verification(verified)
        check_and_drop_scratch_copy(rec, ref, restored)
        if repaired:  # production changed: watch it (its own flow run, or a note saying how)
            report.notes.append(rec.step("start post-restore watch", start_post_restore_watch,
                                         ref, f"partial-corruption {rec.incident_key}"))
    return report


def _determine_restore_point(rec: Recorder, ref: TargetRef,
                             params: PartialCorruptionParams) -> PartialCorruptionParams:
    """Runbook: "Determine restore point", which must lie BEFORE the corruption."""
    if params.restore_point in ("", "latest"):
        raise ConfigError(
            "partial-corruption needs a restore point from BEFORE the corruption (the "
            "latest point contains it); give e.g. --point 2026-11-25T13:05:00Z, or "
            "--point auto with the damaged rows"
        )
    damaged = params.damaged_table or (params.tables[0] if len(params.tables) == 1 else None)
    if is_auto(params.restore_point) and not (params.damaged_ids or params.where):
        raise ConfigError("--point auto for partial-corruption needs the corrupted rows: "
                          "--damaged-ids or --where (and --damaged-table)")
    point = determine_restore_point(
        rec, ref, params.restore_point, table=damaged, keys=split_keys(params.damaged_ids),
        kind="changed", where=params.where, column=params.damaged_column,
        good_point=params.good_point)
    params = params.model_copy(update={"restore_point": point})
    rec.report.restore_point = point
    check_keep_after(RestorePoint.parse(params.restore_point), params.keep_rows_written_after)
    return params


def _plan_lines(params: PartialCorruptionParams, pre: Preflight, name: str, tables: list[str],
                columns: dict[str, list[str]], from_snapshot: bool) -> list[str]:
    """The plan from the scratch copy to the cleanup (what to restore, diff and repair)."""
    keep = params.keep_rows_written_after
    return [
        (f"Restore a scratch copy of {pre.target} at {pre.point} (window {pre.window}) as "
         f"'{name}'; production is not touched." if not from_snapshot else
         f"{pre.provider} cannot restore into a new database (an in-place restore would "
         "discard everything written since), so the copy comes from the newest verified "
         f"logical snapshot taken before {pre.point}, in a local scratch cluster. Because "
         "that snapshot is older than the point, only MISSING rows are re-inserted; changed "
         "rows are listed for review, not overwritten."),
        "Diff " + (", ".join(tables) if tables else "every table with a primary key")
        + " by primary key against the copy.",
        "Snapshot the affected tables (pg_dump, read back and checksummed) before any change.",
        "Repair in one transaction, parents first: re-insert missing rows"
        + ("" if from_snapshot else
           (", update changed rows (every row that differs from the copy: updates made since "
            "the restore point, legitimate ones included, are reverted)" if not columns else
            ", update changed rows in the corrupted columns only ("
            + ", ".join(f"{t}.{c}" for t, cs in columns.items() for c in cs)
            + "; the rest of each row stays as it is live, missing rows come back whole)"))
        + ("" if keep is None else
           f"; rows whose current version committed after {keep.isoformat()} are left alone "
           "(not rewritten, not deleted); rows deleted after it stay deleted where the audit "
           "log records the deletion, otherwise they are re-inserted (a deletion cannot be "
           "told from corruption); writes between the restore point and then are treated as "
           "corruption")
        + ("; DELETE rows created after the restore point (full replace)." if params.full_replace
           else "; rows created after the restore point are kept."),
        "After the diff, the exact rows to write are counted and shown here before approval; "
        "the repair writes exactly those (each still as the diff saw it) or nothing.",
        "Verify integrity on live, check the application's health, drop the scratch copy.",
    ]


def _repair_affected_rows(rec: Recorder, ref: TargetRef, params: PartialCorruptionParams,
                          restored: Any, tables: list[str], columns: dict[str, list[str]],
                          from_snapshot: bool) -> bool:
    """Diff against the copy, show the exact writes, snapshot the affected tables, approve and
    repair. Returns whether production was written to."""
    report = rec.report
    keep = params.keep_rows_written_after
    diffs = rec.step("identify affected data", identify_affected_data, ref, restored, tables)
    affected = [d["table"] for d in diffs
                if d["missing"] or d["changed"] or (params.full_replace and d["extra"])]
    for d in diffs:
        report.notes.append(f"{d['table']}: {d['missing']} missing, {d['changed']} changed, "
                            f"{d['extra']} newer than the restore point")
    approved: dict[str, str] = {}
    if affected:
        planned = rec.step("plan repair", plan_repair, ref, restored, affected,
                           params.full_replace, not from_snapshot,
                           {t: cs for t, cs in columns.items() if t in affected}, keep)
        writes = {o["table"]: o for o in planned["tables"]}
        affected = [t for t in affected if writes[t]["inserted"] or writes[t]["updated"]
                    or writes[t]["deleted"]]
        approved = {t: writes[t]["fingerprint"] for t in affected}
        rec.plan([*report.plan, "Rows to write: " + ("; ".join(
            f"{t}: {o['updated']} updated, {o['inserted']} inserted, {o['deleted']} deleted"
            + (f", {o['kept_newer']} newer rows and {o['kept_deleted']} later deletions kept"
               if keep is not None else "")
            for t, o in writes.items()) or "none")])
    if not affected:
        report.notes.append("no row differs from the copy: nothing to repair")
        return False
    snap = rec.step("snapshot affected tables", snapshot_current_state, ref, affected,
                    label=f"before-repair-{rec.incident_key}")
    report.snapshots.append(f"{snap['location']} ({snap['snapshot_id']}, "
                            f"{snap['size_bytes']} bytes, verified)")
    rec.approve()
    result = rec.step("repair rows", repair_rows, ref, restored, affected,
                      params.full_replace, False, not from_snapshot,
                      {t: cs for t, cs in columns.items() if t in affected}, keep,
                      approved)
    if from_snapshot and any(d["changed"] for d in diffs):
        report.notes.append(
            "changed rows were NOT overwritten (the copy is an older snapshot): "
            + ", ".join(f"{d['table']} {d['changed']}" for d in diffs if d["changed"]))
    rec.add_changes(result)
    if keep is not None:
        report.notes.append(f"left alone as written after {keep.isoformat()}: " + ", ".join(
            f"{t['table']} {t['kept_newer']} rows, {t['kept_deleted']} later deletions"
            for t in result["tables"]))
    if any(t["skipped_changed"] for t in result["tables"]):
        report.notes.append("changed while the repair ran, left alone: " + ", ".join(
            f"{t['table']} {t['skipped_changed']}" for t in result["tables"]
            if t["skipped_changed"]))
    return True

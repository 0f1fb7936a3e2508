"""``restorekit run SCENARIO``: a scenario of the runbook as a Prefect flow."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from restorekit.cli._common import (
    GOOD_POINT_HELP,
    WHERE_HELP,
    ConfigOpt,
    JsonOpt,
    TargetOpt,
    _config_path,
    _fail,
    _prefect_without_telemetry,
    _print_report,
)
from restorekit.cli.checks import check_scenario
from restorekit.cli.scenarios import SCENARIO_MODELS, run_options, scenario_params

if TYPE_CHECKING:
    from restorekit.config import Settings

_ALL = "all scenarios"
_PC, _AD, _CF = "partial-corruption", "accidental-deletion", "complete-failure"
_AUTO = "finding the point (--point auto)"

# The options of ``run``, one alias each, grouped by the help panel they are listed in.

_Scenario = Annotated[str, typer.Argument(
    help="complete-failure (the database is gone: restore into a new one and switch the "
    "application over) | partial-corruption (wrong or missing rows: repair them from a "
    "copy restored before the corruption) | accidental-deletion (rows deleted: bring them "
    "back with their cascade)", show_default=False)]

_RestorePoint = Annotated[str | None, typer.Option(
    "--point", "-p", rich_help_panel=_ALL,
    help="Restore point: latest | auto | ISO-8601 time with timezone | lsn:X/Y | xid:N | "
    "before-xid:N | name:NAME | backup:ID. auto: found from the damage (the WAL on "
    "self-hosted, bisection on Neon; see the panel below). Default: latest; "
    "accidental-deletion: just before the first deletion the audit log recorded; "
    "partial-corruption needs a point BEFORE the corruption.")]

_IncidentId = Annotated[str | None, typer.Option(
    rich_help_panel=_ALL,
    help="Incident reference; a re-run with the same id reuses a finished restore instead "
    "of restoring again.")]

_DryRun = Annotated[bool, typer.Option(
    "--dry-run", rich_help_panel=_ALL, help="Print the plan and touch nothing.")]

_RequireApproval = Annotated[bool, typer.Option(
    "--require-approval/--no-require-approval", rich_help_panel=_ALL,
    help="Pause before the first destructive step, with the plan shown, until someone "
    "approves it in the Prefect UI (needs a Prefect server: PREFECT_API_URL). Off here; "
    "deployments have it on.")]

_LockWaitSeconds = Annotated[float, typer.Option(
    min=0, rich_help_panel=_ALL,
    help="How long to wait while another restorekit run holds this target before refusing "
    "(one restore per target at a time).")]

_Tables = Annotated[list[str] | None, typer.Option(
    "--tables", rich_help_panel=_PC, show_default=False,
    help="A table to repair (repeatable). Default: the tables with integrity findings, "
    "else every table.")]

_Columns = Annotated[list[str] | None, typer.Option(
    "--columns", rich_help_panel=_PC, show_default=False,
    help="A corrupted column, as table.column (or column with exactly one --tables), "
    "repeatable: only these are compared and rewritten, the rest of each row stays as it "
    "is live; missing rows still come back whole. Default: every column, so updates made "
    "since the restore point, legitimate ones included, are reverted.")]

_KeepRowsWrittenAfter = Annotated[str | None, typer.Option(
    rich_help_panel=_PC, show_default=False,
    help="When the corruption ended (ISO-8601 time with timezone, after --point): rows "
    "whose current version committed later are left alone (needs track_commit_timestamp "
    "= on); rows deleted later stay deleted where the audit log records it.")]

_FullReplace = Annotated[bool, typer.Option(
    "--full-replace", rich_help_panel=_PC,
    help="Also delete rows created after the restore point, making the tables equal to "
    "the copy. Off: newer rows are kept.")]

_Table = Annotated[str, typer.Option(
    rich_help_panel=_AD, help="The table rows were deleted from.")]

_Ids = Annotated[list[str] | None, typer.Option(
    "--ids", rich_help_panel=_AD, show_default=False,
    help="A primary key to bring back (repeatable). Default: every deleted row the audit "
    "log recorded, else every row missing from live.")]

_DeletedSince = Annotated[str | None, typer.Option(
    rich_help_panel=_AD, show_default=False,
    help="Only deletions at or after this time (ISO-8601 with timezone).")]

_StopApplication = Annotated[bool, typer.Option(
    "--stop-app", rich_help_panel=_AD,
    help="Stop the application first (while the deletion is ongoing) and start it again "
    "after the rows are back.")]

_IncludeCascade = Annotated[bool, typer.Option(
    "--include-cascade/--no-include-cascade", rich_help_panel=_AD,
    help="Also bring back the child rows ON DELETE CASCADE removed with them.")]

_Where = Annotated[str | None, typer.Option(
    rich_help_panel=_AUTO, show_default=False, help=WHERE_HELP)]

_GoodPoint = Annotated[str | None, typer.Option(
    rich_help_panel=_AUTO, show_default=False, help=GOOD_POINT_HELP)]

_DamagedTable = Annotated[str | None, typer.Option(
    rich_help_panel=_AUTO, show_default=False,
    help="complete-failure / partial-corruption: the table the damage hit (alone: DELETE "
    "without WHERE, TRUNCATE or DROP TABLE of it). accidental-deletion uses --table.")]

_DamagedIds = Annotated[list[str] | None, typer.Option(
    "--damaged-ids", rich_help_panel=_AUTO, show_default=False,
    help="complete-failure / partial-corruption: a primary key of a damaged row "
    "(repeatable; a composite key as a,b). accidental-deletion uses --ids.")]

_DamagedColumn = Annotated[str | None, typer.Option(
    rich_help_panel=_AUTO, show_default=False,
    help="partial-corruption: find the first update that changed this column of those "
    "rows (default: their first update or delete).")]

_AcceptInPlaceWithoutSnapshot = Annotated[bool, typer.Option(
    "--accept-in-place-without-snapshot", rich_help_panel=_CF,
    help="In-place providers only (Supabase): go on when the current database is too "
    "broken to snapshot, losing its current state. Off: refuse.")]


def run(
    ctx: typer.Context,
    scenario: _Scenario,
    target: TargetOpt,
    restore_point: _RestorePoint = None,
    incident_id: _IncidentId = None,
    dry_run: _DryRun = False,
    require_approval: _RequireApproval = False,
    lock_wait_seconds: _LockWaitSeconds = 600,
    tables: _Tables = None,
    columns: _Columns = None,
    keep_rows_written_after: _KeepRowsWrittenAfter = None,
    full_replace: _FullReplace = False,
    table: _Table = "users",
    ids: _Ids = None,
    deleted_since: _DeletedSince = None,
    stop_application: _StopApplication = False,
    include_cascade: _IncludeCascade = True,
    where: _Where = None,
    good_point: _GoodPoint = None,
    damaged_table: _DamagedTable = None,
    damaged_ids: _DamagedIds = None,
    damaged_column: _DamagedColumn = None,
    accept_in_place_without_snapshot: _AcceptInPlaceWithoutSnapshot = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a scenario of the runbook as a Prefect flow (against PREFECT_API_URL when set, else
    Prefect's local ephemeral mode) and print its incident report. Every option is checked
    first (exit 2 on bad input, nothing touched); exits non-zero when the run fails."""
    scenario, fields = run_options(ctx)
    settings = check_scenario(scenario, fields)
    fields.setdefault("config", _config_path(settings))
    started = datetime.now(UTC)
    with _prefect_without_telemetry():
        params = scenario_params(scenario, fields)
        import importlib

        flow = getattr(importlib.import_module(SCENARIO_MODELS[scenario][0]),
                       scenario.replace("-", "_"))
        failure: BaseException | None = None
        try:
            report = flow(params)
        except Exception as exc:  # noqa: BLE001 - the flow wrote its report before raising
            failure = exc
            report = _last_report(settings, target, scenario, started)
    if report is not None:
        _print_report(as_json, json.dumps(report.to_json_dict(), default=str),
                      report.to_markdown())
    if failure is not None:
        _fail(failure)


def _last_report(settings: Settings, target: str, scenario: str, since: datetime) -> Any:
    """The report this run wrote before failing (none when it failed before writing one: an
    older run's report is not this run's)."""
    from restorekit.report import IncidentReport

    folder = settings.state_dir.absolute() / "reports" / target
    found = sorted(f for f in (folder.glob(f"*-{scenario}.json") if folder.exists() else [])
                   if f.stat().st_mtime >= since.timestamp() - 1)
    if not found:
        return None
    data = json.loads(found[-1].read_text())
    data.pop("rto_seconds", None)
    data.pop("data_loss_seconds", None)
    return IncidentReport(**data)

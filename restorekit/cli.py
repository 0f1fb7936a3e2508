"""The restorekit command line.

    restorekit window   --target NAME          the restore window (earliest .. latest point)
    restorekit backup   --target NAME          take a base backup now
    restorekit restore  --target NAME --to-new --point P   restore into a NEW local cluster
    restorekit snapshot --target NAME [--table T]...       logical snapshot (pg_dump)
    restorekit backups  --target NAME          list base backups
    restorekit cleanup  --target NAME          remove scratch restores left behind
    restorekit run SCENARIO --target NAME ...  run a scenario flow (complete-failure,
                                               partial-corruption, accidental-deletion)
    restorekit demo                            the embedded default, end to end
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from restorekit.config import Settings, load_settings
from restorekit.errors import RestoreKitError
from restorekit.models import RestorePoint
from restorekit.pg.dsn import display, redact
from restorekit.progress import rich_progress

app = typer.Typer(
    name="restorekit",
    help="The database restore runbook as software: backups, point-in-time restores, drills.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="restorekit.toml (default: $RESTOREKIT_CONFIG or ./restorekit.toml)"),
]
TargetOpt = Annotated[str, typer.Option("--target", "-t", help="Target name from the config file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


def _settings(config: Path | None) -> Settings:
    return load_settings(config)


def _provider(settings: Settings, target: str) -> Any:
    """The provider the target's config names (self-hosted, RDS, Neon, Supabase)."""
    from restorekit.providers.base import provider_from_config

    return provider_from_config(settings.target(target), settings)


def _emit(data: dict[str, Any], as_json: bool, table: Table | None = None) -> None:
    if as_json:
        out.print_json(json.dumps(data, default=str))
    elif table is not None:
        out.print(table)


@app.command()
def window(target: TargetOpt, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Print the restore window: the earliest and latest points a restore can reach."""
    provider = _provider(_settings(config), target)
    win = provider.restore_window()
    data = {
        "target": target,
        "earliest": win.earliest.isoformat() if win.earliest else None,
        "latest": win.latest.isoformat() if win.latest else None,
        "earliest_lsn": win.earliest_lsn,
        "latest_lsn": win.latest_lsn,
    }
    table = Table(title=f"Restore window of {target}")
    table.add_column("")
    table.add_column("time")
    table.add_column("LSN")
    table.add_row("earliest", str(data["earliest"]), str(win.earliest_lsn))
    table.add_row("latest", str(data["latest"]), str(win.latest_lsn))
    _emit(data, as_json, table)


@app.command()
def backup(
    target: TargetOpt,
    label: Annotated[str, typer.Option(help="A label, e.g. 'before migration 42'.")] = "",
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Take a base backup of the target now (the runbook's manual pre-deployment backup)."""
    provider = _provider(_settings(config), target)
    with rich_progress(console, enabled=not as_json) as progress:
        info = provider.create_backup(label, progress=progress)
    data = {"target": target, "backup_id": info.backup_id, "engine": info.engine,
            "stop_time": info.stop_time.isoformat(), "stop_lsn": info.stop_lsn,
            "size_bytes": info.size_bytes, "label": info.label}
    table = Table(title="Base backup taken")
    for key in data:
        table.add_column(key)
    table.add_row(*(str(v) for v in data.values()))
    _emit(data, as_json, table)


@app.command()
def backups(target: TargetOpt, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List the target's base backups, oldest first."""
    provider = _provider(_settings(config), target)
    items = provider.list_backups()
    table = Table(title=f"Base backups of {target}")
    for col in ("backup id", "engine", "stop time", "stop LSN", "size", "label"):
        table.add_column(col)
    for b in items:
        table.add_row(b.backup_id, b.engine, b.stop_time.isoformat(), b.stop_lsn,
                      f"{b.size_bytes / 1e6:.1f} MB", b.label)
    _emit({"target": target, "backups": [
        {"backup_id": b.backup_id, "engine": b.engine, "stop_time": b.stop_time.isoformat(),
         "stop_lsn": b.stop_lsn, "size_bytes": b.size_bytes, "label": b.label} for b in items
    ]}, as_json, table)


@app.command()
def restore(
    target: TargetOpt,
    point: Annotated[str, typer.Option(
        "--point", "-p",
        help="latest | ISO-8601 time with timezone | lsn:X/Y | xid:N | name:NAME | backup:ID",
    )] = "latest",
    to_new: Annotated[bool, typer.Option("--to-new", help="Restore into a NEW local cluster (required: in-place restores are never done by this command).")] = False,
    name: Annotated[str | None, typer.Option(help="Name of the new cluster (default: derived from the target and time).")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    show_dsn: Annotated[bool, typer.Option("--show-dsn/--no-show-dsn", help="Print the new cluster's DSN (it holds no password for local clusters).")] = True,
) -> None:
    """Restore the target's backups into a NEW cluster at a point and print how to reach it."""
    if not to_new:
        raise typer.BadParameter("pass --to-new: this command only restores into a new cluster",
                                 param_hint="--to-new")
    parsed = RestorePoint.parse(point)
    settings = _settings(config)
    provider = _provider(settings, target)
    from datetime import UTC, datetime

    name = name or f"{target}-{datetime.now(UTC).strftime('%Y%m%dt%H%M%S')}"
    with rich_progress(console, enabled=not as_json) as progress:
        restored = provider.restore(parsed, name=name, progress=progress)
    dsn = restored.dsn.get_secret_value()
    data = {
        "target": target, "point": str(parsed), "name": name, "handle": restored.handle,
        "backup_id": restored.backup_id,
        "recovered_to_time": restored.recovered_to_time.isoformat() if restored.recovered_to_time else None,
        "recovered_to_lsn": restored.recovered_to_lsn,
        "phases_seconds": {k: round(v, 3) for k, v in restored.phases.items()},
        "dsn": redact(dsn) if show_dsn else display(dsn),
    }
    table = Table(title="Restored into a new cluster", show_header=False)
    for key, value in data.items():
        table.add_row(key, str(value))
    _emit(data, as_json, table)


@app.command()
def snapshot(
    target: TargetOpt,
    table: Annotated[list[str] | None, typer.Option("--table", help="Only this table (repeatable).")] = None,
    label: str = "",
    jobs: Annotated[int, typer.Option(min=1, max=64, help="Parallel pg_dump jobs.")] = 2,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Take a verified logical snapshot (pg_dump) of the target's database into its repository."""
    from restorekit.repository import open_repository
    from restorekit.snapshot import take_snapshot

    settings = _settings(config)
    cfg = settings.target(target)
    if not cfg.repository:
        raise typer.BadParameter(f"target {target} has no repository configured")
    from restorekit.pg.tools import default_os_user

    # Owned by the PostgreSQL OS user: its archive_command writes into the same repository.
    repo = open_repository(cfg.repository, os_user=default_os_user())
    with rich_progress(console, enabled=not as_json) as progress:
        info = take_snapshot(cfg.resolve_dsn(), repo, label=label, tables=table or None,
                             jobs=jobs, progress=progress)
    data = info.to_dict()
    t = Table(title="Logical snapshot (read back and verified)", show_header=False)
    for key in ("snapshot_id", "tables", "size_bytes", "location", "verified"):
        t.add_row(key, str(data.get(key)))
    _emit(data, as_json, t)


@app.command()
def cleanup(target: TargetOpt, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Remove scratch clusters that earlier (failed or killed) runs left behind for this target,
    stopping their PostgreSQL servers. Never removed: a restore adopted as production, the one
    the target's DSN points at, and the one the application's connection string points at (a
    complete-failure run killed after its swap but before adopting the restore)."""
    from restorekit.providers.base import reaches
    from restorekit.runtime import TargetRuntime

    settings = _settings(config)
    provider = _provider(settings, target)
    in_use = TargetRuntime(settings=settings, config=settings.target(target)).connection_in_use()
    removed, kept = [], []
    for restored in provider.list_scratch():
        if any(reaches(provider, restored, dsn) for dsn in in_use):
            kept.append(restored.handle)
            continue
        provider.discard(restored)
        removed.append(restored.handle)
    t = Table(title=f"Removed {len(removed)} scratch restore(s)")
    t.add_column("path")
    for path in removed:
        t.add_row(path)
    for path in kept:
        t.add_row(f"{path} (kept: the application's connection string points at it)")
    _emit({"target": target, "removed": removed, "kept_in_use": kept}, as_json, t)


SCENARIOS = ("complete-failure", "partial-corruption", "accidental-deletion")


@app.command("serve-webhook")
def serve_webhook(
    host: Annotated[str, typer.Option(help="Interface to listen on (put TLS in front of it).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8787,
    config: ConfigOpt = None,
) -> None:
    """Receive PagerDuty v3 webhooks (POST /webhooks/pagerduty): verify the signature, match the
    \\[webhook] rules, and create one Prefect flow run per event (the event id is the
    idempotency key, so a retried delivery never starts a second restore)."""
    from restorekit.errors import ConfigError

    settings = _settings(config)
    if settings.webhook is None:
        raise ConfigError(f"{settings.source_path or 'config'}: no [webhook] section")
    logging.getLogger("restorekit.webhook").setLevel(logging.INFO)  # main() sets WARNING
    from restorekit.webhook import serve

    serve(settings.webhook, host=host, port=port)


@app.command()
def deploy(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Register every flow as a Prefect deployment against PREFECT_API_URL: the three scenarios
    and the manual backup per target (typed forms, approval on by default), the weekly restore
    drill on its cron schedule, the 'restorekit' process work pool, one-restore-per-target
    concurrency limits, and automations that notify on failed runs ([notify] prefect_blocks)
    and mark runs Crashed when their heartbeats stop. Then run a worker:
    prefect worker start --pool restorekit"""
    import os

    if not os.environ.get("PREFECT_API_URL"):
        raise typer.BadParameter(
            "set PREFECT_API_URL to your Prefect server (e.g. http://127.0.0.1:4200/api)",
            param_hint="PREFECT_API_URL")
    from deployments.deploy import WORK_POOL, deploy_all

    settings = _settings(config)
    config_path = str((config or settings.source_path or Path("restorekit.toml")).absolute())
    planned = deploy_all(settings, config_path)
    table = Table(title=f"Deployments on work pool {WORK_POOL!r}")
    table.add_column("deployment")
    table.add_column("schedule")
    for p in planned:
        table.add_row(p.name, p.schedule or "-")
    _emit({"work_pool": WORK_POOL, "deployments": [
        {"name": p.name, "schedule": p.schedule, "parameters": p.parameters} for p in planned
    ]}, as_json, table)


@app.command()
def run(
    scenario: Annotated[str, typer.Argument(help="complete-failure | partial-corruption | accidental-deletion")],
    target: TargetOpt,
    point: Annotated[str | None, typer.Option("--point", "-p", help="Restore point: latest | ISO-8601 time with timezone | lsn:X/Y | xid:N | name:NAME | backup:ID. Default: latest (accidental-deletion: just before the first recorded deletion).")] = None,
    tables: Annotated[list[str] | None, typer.Option("--tables", help="partial-corruption: tables to repair (repeatable).")] = None,
    table: Annotated[str, typer.Option(help="accidental-deletion: the table rows were deleted from.")] = "users",
    ids: Annotated[list[str] | None, typer.Option("--ids", help="accidental-deletion: primary keys to bring back (repeatable).")] = None,
    full_replace: Annotated[bool, typer.Option(help="partial-corruption: also delete rows newer than the restore point.")] = False,
    stop_app: Annotated[bool, typer.Option(help="accidental-deletion: stop the application first.")] = False,
    incident_id: Annotated[str | None, typer.Option(help="Incident reference; a re-run with the same id reuses finished restores.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and touch nothing.")] = False,
    require_approval: Annotated[bool, typer.Option(help="Pause before the first destructive step until approved in the Prefect UI.")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a scenario of the runbook as a Prefect flow (against PREFECT_API_URL when set, else
    Prefect's local ephemeral mode) and print its incident report. Exits non-zero on failure."""
    if scenario not in SCENARIOS:
        raise typer.BadParameter(f"choose one of {', '.join(SCENARIOS)}", param_hint="SCENARIO")
    settings = _settings(config)
    settings.target(target)  # unknown targets fail here, before Prefect starts
    if point is not None:
        RestorePoint.parse(point)  # bad points too
    config_path = str((config or settings.source_path or Path("restorekit.toml")).absolute())
    common = {"target": target, "config": config_path, "dry_run": dry_run,
              "require_approval": require_approval, "incident_id": incident_id}
    from restorekit.report import IncidentReport

    if scenario == "complete-failure":
        from flows.complete_failure import CompleteFailureParams, complete_failure

        runner: Any = lambda: complete_failure(CompleteFailureParams(restore_point=point or "latest", **common))  # noqa: E731
    elif scenario == "partial-corruption":
        from flows.partial_corruption import PartialCorruptionParams, partial_corruption

        runner = lambda: partial_corruption(PartialCorruptionParams(  # noqa: E731
            restore_point=point or "", tables=tables or [], full_replace=full_replace, **common))
    else:
        from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion

        runner = lambda: accidental_deletion(AccidentalDeletionParams(  # noqa: E731
            restore_point=point or "latest", table=table, ids=ids or [],
            stop_application=stop_app, **common))
    failure: BaseException | None = None
    report: IncidentReport | None = None
    try:
        report = runner()
    except Exception as exc:  # the flow wrote its report before raising
        failure = exc
        report = _last_report(settings, target, scenario)
    if report is not None:
        if as_json:
            out.print_json(json.dumps(report.to_json_dict(), default=str))
        else:
            from rich.markdown import Markdown

            out.print(Markdown(report.to_markdown()))
    if failure is not None:
        raise failure


def _last_report(settings: Settings, target: str, scenario: str) -> Any:
    from restorekit.report import IncidentReport

    folder = settings.state_dir.absolute() / "reports" / target
    found = sorted(folder.glob(f"*-{scenario}.json")) if folder.exists() else []
    if not found:
        return None
    data = json.loads(found[-1].read_text())
    data.pop("rto_seconds", None)
    data.pop("data_loss_seconds", None)
    return IncidentReport(**data)


@app.command()
def demo(
    state_dir: Annotated[Path, typer.Option(help="Where the demo keeps its clusters, repository and Prefect server.")] = Path(".restorekit-demo"),
    scale: Annotated[float, typer.Option(min=0.001, max=100, help="Sample data scale (1 = ~100k rows).")] = 0.1,
    ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Start a local Prefect server so the runs can be seen in its UI (unless PREFECT_API_URL is set).")] = True,
    stop: Annotated[bool, typer.Option("--stop", help="Stop what an earlier demo left running, and exit.")] = False,
) -> None:
    """The embedded default end to end: build production (sample schema, WAL archiving, a
    backup, the local app), then break it three ways (accidental deletion, corruption, the
    cluster destroyed) and run the flow that repairs each, printing the incident reports."""
    from restorekit.demo import run_demo, stop_demo

    if stop:
        stop_demo(state_dir.absolute(), console)
        return
    run_demo(state_dir.absolute(), scale=scale, ui=ui, console=console, out=out)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except RestoreKitError as exc:
        # soft_wrap: no newlines inserted into paths and URLs (the terminal wraps by itself).
        console.print(f"[bold red]error:[/] {redact(str(exc))}", soft_wrap=True)
        sys.exit(2 if exc.__class__.__name__ in ("ConfigError", "RestorePointError") else 1)


if __name__ == "__main__":
    main()

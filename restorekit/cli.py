"""The restorekit command line.

    restorekit window   --target NAME          the restore window (earliest .. latest point)
    restorekit backup   --target NAME          take a base backup now
    restorekit restore  --target NAME --to-new --point P   restore into a NEW local cluster
    restorekit snapshot --target NAME [--table T]...       logical snapshot (pg_dump)
    restorekit backups  --target NAME          list base backups
    restorekit cleanup  --target NAME          remove scratch restores left behind
    restorekit run SCENARIO --target NAME ...  run a scenario flow (complete-failure,
                                               partial-corruption, accidental-deletion)
    restorekit drill    [--target NAME]...     run the restore drill once, print its report
    restorekit watch    --target NAME          watch a target after a restore, with alerts
    restorekit demo                            the embedded default, end to end

Bad input costs no Prefect: importing prefect takes seconds and its ephemeral server more, so
``run`` and ``drill`` check every option first, with the core functions the flows call (restore
points, table and column names, times; then, read-only, the target's restore window and
backups, the live tables, ids and audit log), and refuse with one line ``error: ...`` and exit
status 2. Only then do they import the flow, build its params model and run it. Module-level
imports are what ``--help`` needs; everything else is imported where it is used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from restorekit.errors import (
    CapabilityNotSupported,
    ConfigError,
    RestoreKitError,
    RestorePointError,
)

if TYPE_CHECKING:
    from rich.table import Table

    from restorekit.config import Settings
    from restorekit.models import RestorePoint

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
    from restorekit.config import load_settings

    return load_settings(config)


def _provider(settings: Settings, target: str) -> Any:
    """The provider the target's config names (self-hosted, RDS, Neon, Supabase)."""
    from restorekit.providers.base import provider_from_config

    return provider_from_config(settings.target(target), settings)


def _table(*args: Any, **kwargs: Any) -> Table:
    from rich.table import Table

    return Table(*args, **kwargs)


def _progress(as_json: bool) -> Any:
    from restorekit.progress import rich_progress

    return rich_progress(console, enabled=not as_json)


def _emit(data: dict[str, Any], as_json: bool, table: Table | None = None) -> None:
    if as_json:
        out.print_json(json.dumps(data, default=str))
    elif table is not None:
        out.print(table)


@app.command()
def window(target: TargetOpt, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Print the restore window: the earliest and latest points a restore can reach."""
    settings = _settings(config)
    provider = _provider(settings, target)
    win = provider.restore_window()
    from restorekit import production

    adopted = production.load(settings.state_dir, target)
    data = {
        "target": target,
        "earliest": win.earliest.isoformat() if win.earliest else None,
        "latest": win.latest.isoformat() if win.latest else None,
        "earliest_lsn": win.earliest_lsn,
        "latest_lsn": win.latest_lsn,
        # Since scenario 1 adopted a restore: which database is production, and since when.
        "production": adopted.model_dump(mode="json") if adopted else None,
    }
    table = _table(title=f"Restore window of {target}")
    table.add_column("")
    table.add_column("time")
    table.add_column("LSN")
    table.add_row("earliest", str(data["earliest"]), str(win.earliest_lsn))
    table.add_row("latest", str(data["latest"]), str(win.latest_lsn))
    if adopted is not None:
        table.caption = (f"production since the incident: {adopted.describe()}"
                         + (f"; {adopted.protection.line()}" if adopted.protection else ""))
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
    with _progress(as_json) as progress:
        info = provider.create_backup(label, progress=progress)
    data = {"target": target, "backup_id": info.backup_id, "engine": info.engine,
            "stop_time": info.stop_time.isoformat(), "stop_lsn": info.stop_lsn,
            "size_bytes": info.size_bytes, "label": info.label}
    table = _table(title="Base backup taken")
    for key in data:
        table.add_column(key)
    table.add_row(*(str(v) for v in data.values()))
    _emit(data, as_json, table)


@app.command()
def backups(target: TargetOpt, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List the target's base backups, oldest first."""
    provider = _provider(_settings(config), target)
    items = provider.list_backups()
    table = _table(title=f"Base backups of {target}")
    for col in ("backup id", "engine", "stop time", "stop LSN", "timeline", "size", "label"):
        table.add_column(col)
    for b in items:
        table.add_row(b.backup_id, b.engine, b.stop_time.isoformat(), b.stop_lsn,
                      str(b.timeline), f"{b.size_bytes / 1e6:.1f} MB", b.label)
    _emit({"target": target, "backups": [
        {"backup_id": b.backup_id, "engine": b.engine, "stop_time": b.stop_time.isoformat(),
         "stop_lsn": b.stop_lsn, "timeline": b.timeline, "size_bytes": b.size_bytes,
         "label": b.label} for b in items
    ]}, as_json, table)


@app.command()
def restore(
    target: TargetOpt,
    point: Annotated[str, typer.Option(
        "--point", "-p",
        help="latest | ISO-8601 time with timezone | lsn:X/Y | xid:N | before-xid:N | "
        "name:NAME | backup:ID",
    )] = "latest",
    to_new: Annotated[bool, typer.Option("--to-new", help="Restore into a NEW local cluster (required: in-place restores are never done by this command).")] = False,
    name: Annotated[str | None, typer.Option(help="Name of the new cluster (default: derived from the target and time).")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    show_dsn: Annotated[bool, typer.Option("--show-dsn/--no-show-dsn", help="Print the new cluster's DSN, its password masked (***): the copy has the source's roles and passwords; --no-show-dsn: a short postgresql:// URL instead.")] = True,
) -> None:
    """Restore the target's backups into a NEW cluster at a point and print how to reach it."""
    if not to_new:
        raise typer.BadParameter("pass --to-new: this command only restores into a new cluster",
                                 param_hint="--to-new")
    from restorekit.models import RestorePoint
    from restorekit.pg.dsn import display, redact

    parsed = RestorePoint.parse(point)
    settings = _settings(config)
    provider = _provider(settings, target)
    from datetime import UTC, datetime

    name = name or f"{target}-{datetime.now(UTC).strftime('%Y%m%dt%H%M%S')}"
    with _progress(as_json) as progress:
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
    table = _table(title="Restored into a new cluster", show_header=False)
    for key, value in data.items():
        table.add_row(key, str(value))
    _emit(data, as_json, table)


@app.command("find-point")
def find_point(
    target: TargetOpt,
    table: Annotated[str, typer.Option(
        "--table", help="The damaged table (quoted as in SQL when it needs quotes).",
        show_default=False)],
    ids: Annotated[list[str] | None, typer.Option(
        "--ids", show_default=False,
        help="A primary key of a damaged row (repeatable; a composite key as a,b).")] = None,
    where: Annotated[str | None, typer.Option(
        show_default=False, help="Or: an SQL predicate picking the damaged rows, evaluated "
        "read-only on a copy from before the damage.")] = None,
    changed: Annotated[bool, typer.Option(
        "--changed", help="The rows were changed, not deleted: find their first update (or "
        "delete).")] = False,
    column: Annotated[str | None, typer.Option(
        show_default=False, help="With --changed: the first update that changed this "
        "column.")] = None,
    good_point: Annotated[str | None, typer.Option(
        show_default=False, help="A point surely before the damage (default: the newest base "
        "backup that still has the rows; Neon: the start of the restore window).")] = None,
    loss: Annotated[bool, typer.Option(
        "--loss/--no-loss", help="Also list what a restore to the found point would lose "
        "(what was committed after it).")] = True,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find the restore point: the transaction that deleted or changed the given rows (no
    rows: a DELETE without WHERE, TRUNCATE or DROP TABLE of the table), from a scratch copy
    before the damage and the archived WAL (self-hosted) or bisection over branches (Neon).
    Production is not touched; the copies made are removed. Prints the point to give to
    `restorekit run ... --point`."""
    from restorekit.damage import Damage, DamageKind, parse_keys
    from restorekit.models import RestorePoint
    from restorekit.providers.base import Capability

    kind = (DamageKind.CHANGED if changed or column else
            DamageKind.DELETED if ids or where else DamageKind.TABLE)
    damage = Damage(table=table, kind=kind,
                    keys=parse_keys(ids or ()),
                    where=where, column=column,
                    good_point=RestorePoint.parse(good_point) if good_point else None)
    settings = _settings(config)
    provider = _provider(settings, target)
    if Capability.FIND_POINT not in provider.capabilities:
        raise CapabilityNotSupported(
            f"target {target!r} is on {provider.kind}, which gives no access to its WAL: "
            "restorekit cannot find the point there; read the application's logs for the "
            "time of the damage and give it as --point")
    with _progress(as_json) as progress:
        found = provider.find_point(damage, progress=progress)
        lost = (provider.loss_after(found.point, progress=progress)
                if loss and Capability.LOSS_REPORT in provider.capabilities else None)
    data = {**found.as_dict(), "damage": damage.describe(),
            "loss": lost.as_dict() if lost else None}
    t = _table(title=f"Restore point for {damage.describe()}", show_header=False)
    for key in ("point", "found_by", "xid", "commit_time", "commit_lsn", "what",
                "rows_touched", "copies", "scanned_bytes"):
        t.add_row(key, str(data.get(key)))
    for line in found.evidence:
        t.add_row("evidence", line)
    for note in found.notes:
        t.add_row("note", note)
    for line in lost.lines() if lost else []:
        t.add_row("after it", line)
    _emit(data, as_json, t)


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
    with _progress(as_json) as progress:
        info = take_snapshot(cfg.resolve_dsn(), repo, label=label, tables=table or None,
                             jobs=jobs, progress=progress)
    data = info.to_dict()
    t = _table(title="Logical snapshot (read back and verified)", show_header=False)
    for key in ("snapshot_id", "tables", "size_bytes", "location", "verified"):
        t.add_row(key, str(data.get(key)))
    _emit(data, as_json, t)


@app.command()
def prune(
    target: TargetOpt,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Apply the target's [backups] retention now: remove base backups and archived WAL the
    policy no longer keeps (never the newest keep_count, never WAL a kept backup needs). The
    backup flow does this after every scheduled backup; do not run it while a restore of this
    target is reading an old backup."""
    from datetime import UTC, datetime

    from restorekit.retention import expire_backups

    settings = _settings(config)
    policy = settings.target(target).backups
    said = expire_backups(_provider(settings, target), policy, datetime.now(UTC),
                          dry_run=dry_run)
    t = _table(title=f"Retention of {target}")
    t.add_column("result")
    t.add_row(said)
    _emit({"target": target, "dry_run": dry_run, "result": said,
           "policy": policy.model_dump()}, as_json, t)


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
    t = _table(title=f"Removed {len(removed)} scratch restore(s)")
    t.add_column("path")
    for path in removed:
        t.add_row(path)
    for path in kept:
        t.add_row(f"{path} (kept: the application's connection string points at it)")
    _emit({"target": target, "removed": removed, "kept_in_use": kept}, as_json, t)


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
    table = _table(title=f"Deployments on work pool {WORK_POOL!r}")
    table.add_column("deployment")
    table.add_column("schedule")
    for p in planned:
        table.add_row(p.name, p.schedule or "-")
    _emit({"work_pool": WORK_POOL, "deployments": [
        {"name": p.name, "schedule": p.schedule, "parameters": p.parameters} for p in planned
    ]}, as_json, table)


# -- run: the scenarios -------------------------------------------------------------------------

SCENARIOS = ("complete-failure", "partial-corruption", "accidental-deletion")

#: The parameters every scenario flow takes (flows/_common.py ScenarioParams).
COMMON_FIELDS = ("target", "restore_point", "incident_id", "dry_run", "require_approval",
                 "config", "lock_wait_seconds", "where", "good_point")

#: The parameters each scenario adds (its flow's params model; tests/unit/test_cli_parity.py
#: keeps this in step with the models).
SCENARIO_FIELDS: dict[str, tuple[str, ...]] = {
    "complete-failure": ("accept_in_place_without_snapshot", "damaged_table", "damaged_ids"),
    "partial-corruption": ("tables", "columns", "keep_rows_written_after", "full_replace",
                           "damaged_table", "damaged_ids", "damaged_column"),
    "accidental-deletion": ("table", "ids", "deleted_since", "stop_application",
                            "include_cascade"),
}

#: The params model of each scenario (module in flows/, class name).
SCENARIO_MODELS = {
    "complete-failure": ("flows.complete_failure", "CompleteFailureParams"),
    "partial-corruption": ("flows.partial_corruption", "PartialCorruptionParams"),
    "accidental-deletion": ("flows.accidental_deletion", "AccidentalDeletionParams"),
}

#: Flow parameters whose option is not spelled like the parameter (the runbook's shorter words);
#: every other parameter ``a_b`` is the option ``--a-b``.
OPTION_NAMES = {"restore_point": "--point", "stop_application": "--stop-app",
                "targets": "--target"}

#: What a refusal is (exit status 2): bad input, found before anything was touched.
REFUSALS = (ConfigError, RestorePointError, CapabilityNotSupported)


def option_name(field: str) -> str:
    """The command-line option of a flow parameter."""
    return OPTION_NAMES.get(field, "--" + field.replace("_", "-"))


def given_options(ctx: typer.Context) -> dict[str, Any]:
    """The command's parameters given on the command line (not left at their defaults), by
    parameter name (the flow parameter's name)."""
    given = {}
    for name, value in ctx.params.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            given[name] = value
    return given


def aware_time(option: str, text: str) -> datetime:
    """Read an ISO-8601 time that carries a timezone (``Z`` allowed).

    Raises:
        ConfigError: unreadable, without a timezone, or out of range.
    """
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not an ISO-8601 time; give e.g. "
                          "2026-11-25T13:05:00Z") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ConfigError(f"{option} {text} has no timezone; give one, e.g. "
                          "2026-11-25T13:05:00+00:00 or ...Z")
    try:
        when.astimezone(UTC)
    except OverflowError:
        raise ConfigError(f"{option} {text} is out of range") from None
    return when


def scenario_fields(scenario: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The flow parameters of ``scenario`` from the options given on the command line.

    Pure: no config, no database, no Prefect. Times are read into tz-aware datetimes.

    Raises:
        ConfigError: an unknown scenario, an option another scenario takes, or an unreadable
            time.
    """
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    takes = COMMON_FIELDS + SCENARIO_FIELDS[scenario]
    foreign = [name for name in options if name not in takes]
    if foreign:
        name = foreign[0]
        owners = [s for s in SCENARIOS if name in SCENARIO_FIELDS[s]]
        raise ConfigError(
            f"{option_name(name)} is an option of {' and '.join(owners) or 'no scenario'}, not "
            f"of {scenario}; {scenario} takes "
            + ", ".join(option_name(f) for f in SCENARIO_FIELDS[scenario])
            + " besides the common options (see restorekit run --help)")
    fields = dict(options)
    for name in ("keep_rows_written_after", "deleted_since"):
        if fields.get(name) is not None:
            fields[name] = aware_time(option_name(name), str(fields[name]))
    for name in ("tables", "columns", "ids", "damaged_ids"):
        if name in fields:
            fields[name] = list(fields[name] or [])
    return fields


def run_options(ctx: typer.Context) -> tuple[str, dict[str, Any]]:
    """The scenario and its flow parameters as given on ``restorekit run``'s command line:
    the options given (others keep the model's defaults), always the target and
    require_approval (off unless asked for: nobody may be watching a Prefect UI), and the
    config as an absolute path."""
    options = given_options(ctx)
    scenario = str(options.pop("scenario"))
    options.pop("as_json", None)
    options.update(target=ctx.params["target"], require_approval=ctx.params["require_approval"])
    if options.get("config") is not None:
        options["config"] = str(Path(options["config"]).absolute())
    return scenario, scenario_fields(scenario, options)


def scenario_params(scenario: str, fields: Mapping[str, Any]) -> Any:
    """Build the scenario flow's params model (imports the flow, hence prefect: call it after
    the checks). A validation error is a :class:`ConfigError` naming the option, on one line."""
    import importlib

    module, name = SCENARIO_MODELS[scenario]
    return _model(getattr(importlib.import_module(module), name), fields)


def _model(cls: Any, fields: Mapping[str, Any]) -> Any:
    from pydantic import ValidationError

    try:
        return cls(**fields)
    except ValidationError as exc:
        raise ConfigError("; ".join(
            f"{option_name(str(err['loc'][0])) if err['loc'] else cls.__name__}: {err['msg']}"
            for err in exc.errors())) from None


def check_scenario(scenario: str, fields: Mapping[str, Any]) -> Settings:
    """Refuse bad input of a scenario before anything runs; returns the settings.

    First what needs nothing (the restore point, times, table and column names), then the
    config and the target, then, read-only, what the flow's first steps look at: the restore
    window and backups (never the live database for complete-failure: it may be down), the
    live tables and columns (partial-corruption) and the deletion scope (accidental-deletion).
    What cannot be reached (database down, provider API failing) is left to the flow, which
    retries, reports and notifies; only bad input is refused here. The flow checks it all again.

    Raises:
        ConfigError, RestorePointError, CapabilityNotSupported: a refusal (exit status 2).
    """
    from restorekit.models import RestorePoint

    point_text = fields.get("restore_point")
    if scenario == "partial-corruption" and (point_text or "").strip().lower() in ("", "latest"):
        raise ConfigError(
            "partial-corruption needs a restore point from BEFORE the corruption (the latest "
            "point contains it); give e.g. --point 2026-11-25T13:05:00Z")
    auto = (point_text or "").strip().lower() == "auto"
    point = None if auto else RestorePoint.parse(point_text or "latest")
    # Imported after the point is read: it brings psycopg (a fifth of a second).
    from restorekit.pg.catalog import TableRef

    if auto:
        _check_auto_input(scenario, fields)
    elif fields.get("where") or fields.get("good_point") or fields.get("damaged_table") \
            or fields.get("damaged_ids") or fields.get("damaged_column"):
        raise ConfigError("--where, --good-point and --damaged-* describe the damage for "
                          "--point auto; with a point given they would be ignored")

    tables = [TableRef.parse(t) for t in fields.get("tables") or []]
    columns: dict[Any, list[str]] | None = None
    if scenario == "partial-corruption":
        from restorekit.recovery import check_keep_after, parse_columns

        if point is not None:
            check_keep_after(point, fields.get("keep_rows_written_after"))
        specs = fields.get("columns") or []
        # Without --tables the tables come from the live integrity findings (the flow's), so
        # a bare column can only be judged there.
        if tables or all(_qualified(spec) for spec in specs):
            columns = parse_columns(specs, tables)
    if scenario == "accidental-deletion":
        TableRef.parse(fields.get("table", "users"))

    settings = _settings(Path(fields["config"]) if fields.get("config") else None)
    cfg = settings.target(fields["target"])
    from restorekit.runtime import TargetRuntime

    rt = TargetRuntime(settings=settings, config=cfg)
    if auto:
        from restorekit.providers.base import Capability

        if Capability.FIND_POINT not in rt.provider.capabilities:
            raise CapabilityNotSupported(
                f"target {fields['target']!r} is on {rt.provider.kind}, which gives no access "
                "to its WAL (and no branches at any point): restorekit cannot find where the "
                "damage began there; give the restore point (--point <time just before it>)")
    if scenario == "complete-failure":
        if point is not None:
            with _unless_unreachable():
                _check_point(rt.provider, point, fields["target"], snapshot_copy_allowed=False)
        return settings
    import psycopg

    from restorekit.privileges import check_privileges

    with _unless_unreachable(), psycopg.connect(rt.live_dsn(), connect_timeout=5) as conn:
        if scenario == "partial-corruption":
            _check_repair_input(conn, tables, columns, fields.get("keep_rows_written_after"))
            needs = ("select", "insert", "update") + (
                ("delete",) if fields.get("full_replace") else ())
        else:
            point = _check_deletion_input(conn, fields, point)
            needs = ("select", "insert")
        # The privileges the flow's preflight asks for (flows/partial_corruption.py,
        # flows/accidental_deletion.py): checked after the input, which is what was typed.
        check_privileges(conn, needs, purpose=f"this run on {fields['target']!r}")
        if point is not None:
            _check_point(rt.provider, point, fields["target"], snapshot_copy_allowed=True)
    return settings


def _qualified(spec: str) -> bool:
    from restorekit.pg.catalog import split_qualified

    return len(split_qualified(spec.strip()) if spec.strip() else []) != 1


@contextlib.contextmanager
def _unless_unreachable() -> Iterator[None]:
    """Skip the rest of a read-only pre-check when what it reads cannot be reached."""
    import psycopg

    from restorekit.errors import PostgresError, ProviderError, RepositoryError

    try:
        yield
    except (psycopg.Error, OSError, PostgresError, ProviderError, RepositoryError) as exc:
        logging.getLogger(__name__).info("pre-check skipped, the flow will judge: %s", exc)


def _check_repair_input(conn: Any, tables: list[Any], columns: dict[Any, list[str]] | None,
                        keep: datetime | None) -> None:
    """Partial-corruption on live: the tables exist (as tasks.database.check_tables); the
    columns exist, can be written and belong to tables being repaired, and commit times are
    recorded when ``keep`` is given (restorekit.recovery.check_repair_options)."""
    from restorekit.pg import catalog
    from restorekit.recovery import check_repair_options

    if tables:
        known = set(catalog.list_tables(conn))
        unknown = [str(t) for t in tables if t not in known]
        if unknown:
            raise ConfigError(f"unknown table(s) in the live database: {', '.join(unknown)}")
    if columns is not None or keep is not None:
        columns = columns or {}
        check_repair_options(conn, tables or list(columns), columns, keep)


def _check_auto_input(scenario: str, fields: Mapping[str, Any]) -> None:
    """``--point auto``: what the search needs, judged before anything runs."""
    from restorekit.models import RestorePoint

    if fields.get("good_point"):
        RestorePoint.parse(str(fields["good_point"]))
    if fields.get("where") and (fields.get("damaged_ids") or fields.get("ids")):
        raise ConfigError("give the damaged rows as ids or as --where, not both")
    if scenario == "complete-failure" and not fields.get("damaged_table"):
        raise ConfigError("--point auto needs --damaged-table: the table the damage hit "
                          "(with --damaged-ids or --where for rows, else the whole table)")
    if scenario == "partial-corruption":
        tables = fields.get("tables") or []
        if not (fields.get("damaged_table") or len(tables) == 1):
            raise ConfigError("--point auto needs --damaged-table (or exactly one --tables)")
        if not (fields.get("damaged_ids") or fields.get("where")):
            raise ConfigError("--point auto for partial-corruption needs the corrupted rows: "
                              "--damaged-ids or --where")


def _check_deletion_input(conn: Any, fields: Mapping[str, Any], point: RestorePoint | None
                          ) -> RestorePoint | None:
    """Accidental-deletion on live: the deletion scope the flow's first step finds (table,
    key, ids of the key's type, the audit log); returns the restore point ('latest' is just
    before the first recorded deletion; None for auto, which the flow finds)."""
    from restorekit.models import PointKind, RestorePoint
    from restorekit.scope import deletion_scope

    table = fields.get("table", "users")
    found = deletion_scope(conn, table, ids=fields.get("ids") or None,
                           since=fields.get("deleted_since"))
    if point is None:
        if found.keys is None and not fields.get("where"):
            raise ConfigError(f"--point auto needs the deleted {table} rows: --ids, --where, "
                              "or an audit log that recorded them")
        return None
    if point.kind is not PointKind.LATEST:
        return point
    if found.point_before is None:
        raise ConfigError(f"no deletion from {table} is recorded in an audit log: give the "
                          "restore point (a time just before the deletion), or --point auto "
                          "to find the deleting transaction in the WAL")
    return RestorePoint.at(found.point_before)


def _check_point(provider: Any, point: RestorePoint, target: str, *,
                 snapshot_copy_allowed: bool) -> None:
    """The restore point against the provider's capabilities, restore window and backups: the
    checks of the flow's preflight that need no side effect (a point after the window but not
    in the future is left to preflight, which archives the pending WAL and looks again)."""
    from restorekit.models import PointKind
    from restorekit.providers.base import Capability

    now = datetime.now(UTC)
    from_snapshot = (snapshot_copy_allowed
                     and Capability.NEW_TARGET_RESTORE not in provider.capabilities)
    if (point.kind is PointKind.TIME and not from_snapshot
            and Capability.POINT_IN_TIME not in provider.capabilities):
        raise CapabilityNotSupported(
            f"provider {provider.kind!r} of target {target!r} cannot point_in_time")
    if from_snapshot:
        if point.time is None:
            raise ConfigError(
                f"{provider.kind} cannot restore into a new database, so the copy comes from a "
                f"logical snapshot: give the restore point as a time, not {str(point)!r}")
        if point.time > now:
            raise RestorePointError(f"restore time {point} is in the future")
        return
    window = provider.restore_window()
    if point.time is not None and window.latest is not None and window.latest < point.time <= now:
        return
    window.check(point, now=now)
    if point.kind is PointKind.BACKUP:
        backups = provider.list_backups()
        if point.value not in {b.backup_id for b in backups}:
            known = ", ".join(b.backup_id for b in backups[-5:]) or "none"
            raise RestorePointError(
                f"no backup {point.value!r} for target {target!r}; available: {known} "
                "(the newest; list them all with `restorekit backups`)")


@contextlib.contextmanager
def _prefect_without_telemetry() -> Iterator[None]:
    """Prefect settings for a run started here: without PREFECT_API_URL Prefect starts an
    ephemeral server, which would send anonymous analytics (and, offline, log "Failed to send
    telemetry"); it runs with PREFECT_SERVER_ANALYTICS_ENABLED=false unless the user set that
    setting (environment or Prefect profile)."""
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        get_current_settings,
        temporary_settings,
    )

    if "analytics_enabled" in get_current_settings().server.model_fields_set:
        yield
        return
    with temporary_settings(updates={PREFECT_SERVER_ANALYTICS_ENABLED: False}):
        yield


def _config_path(settings: Settings) -> str:
    """The config the settings came from, as the absolute path the flow is given."""
    return str((settings.source_path or Path("restorekit.toml")).absolute())


_ALL = "all scenarios"
_PC, _AD, _CF = "partial-corruption", "accidental-deletion", "complete-failure"
_AUTO = "finding the point (--point auto)"


@app.command()
def run(
    ctx: typer.Context,
    scenario: Annotated[str, typer.Argument(
        help="complete-failure (the database is gone: restore into a new one and switch the "
        "application over) | partial-corruption (wrong or missing rows: repair them from a "
        "copy restored before the corruption) | accidental-deletion (rows deleted: bring them "
        "back with their cascade)", show_default=False)],
    target: TargetOpt,
    restore_point: Annotated[str | None, typer.Option(
        "--point", "-p", rich_help_panel=_ALL,
        help="Restore point: latest | auto | ISO-8601 time with timezone | lsn:X/Y | xid:N | "
        "before-xid:N | name:NAME | backup:ID. auto: found from the damage (the WAL on "
        "self-hosted, bisection on Neon; see the panel below). Default: latest; "
        "accidental-deletion: just before the first deletion the audit log recorded; "
        "partial-corruption needs a point BEFORE the corruption.")] = None,
    incident_id: Annotated[str | None, typer.Option(
        rich_help_panel=_ALL,
        help="Incident reference; a re-run with the same id reuses a finished restore instead "
        "of restoring again.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", rich_help_panel=_ALL, help="Print the plan and touch nothing.")] = False,
    require_approval: Annotated[bool, typer.Option(
        "--require-approval/--no-require-approval", rich_help_panel=_ALL,
        help="Pause before the first destructive step, with the plan shown, until someone "
        "approves it in the Prefect UI (needs a Prefect server: PREFECT_API_URL). Off here; "
        "deployments have it on.")] = False,
    lock_wait_seconds: Annotated[float, typer.Option(
        min=0, rich_help_panel=_ALL,
        help="How long to wait while another restorekit run holds this target before refusing "
        "(one restore per target at a time).")] = 600,
    tables: Annotated[list[str] | None, typer.Option(
        "--tables", rich_help_panel=_PC, show_default=False,
        help="A table to repair (repeatable). Default: the tables with integrity findings, "
        "else every table.")] = None,
    columns: Annotated[list[str] | None, typer.Option(
        "--columns", rich_help_panel=_PC, show_default=False,
        help="A corrupted column, as table.column (or column with exactly one --tables), "
        "repeatable: only these are compared and rewritten, the rest of each row stays as it "
        "is live; missing rows still come back whole. Default: every column, so updates made "
        "since the restore point, legitimate ones included, are reverted.")] = None,
    keep_rows_written_after: Annotated[str | None, typer.Option(
        rich_help_panel=_PC, show_default=False,
        help="When the corruption ended (ISO-8601 time with timezone, after --point): rows "
        "whose current version committed later are left alone (needs track_commit_timestamp "
        "= on); rows deleted later stay deleted where the audit log records it.")] = None,
    full_replace: Annotated[bool, typer.Option(
        "--full-replace", rich_help_panel=_PC,
        help="Also delete rows created after the restore point, making the tables equal to "
        "the copy. Off: newer rows are kept.")] = False,
    table: Annotated[str, typer.Option(
        rich_help_panel=_AD, help="The table rows were deleted from.")] = "users",
    ids: Annotated[list[str] | None, typer.Option(
        "--ids", rich_help_panel=_AD, show_default=False,
        help="A primary key to bring back (repeatable). Default: every deleted row the audit "
        "log recorded, else every row missing from live.")] = None,
    deleted_since: Annotated[str | None, typer.Option(
        rich_help_panel=_AD, show_default=False,
        help="Only deletions at or after this time (ISO-8601 with timezone).")] = None,
    stop_application: Annotated[bool, typer.Option(
        "--stop-app", rich_help_panel=_AD,
        help="Stop the application first (while the deletion is ongoing) and start it again "
        "after the rows are back.")] = False,
    include_cascade: Annotated[bool, typer.Option(
        "--include-cascade/--no-include-cascade", rich_help_panel=_AD,
        help="Also bring back the child rows ON DELETE CASCADE removed with them.")] = True,
    where: Annotated[str | None, typer.Option(
        rich_help_panel=_AUTO, show_default=False,
        help="An SQL predicate that picks the damaged rows, evaluated read-only on a copy from "
        "before the damage (instead of ids).")] = None,
    good_point: Annotated[str | None, typer.Option(
        rich_help_panel=_AUTO, show_default=False,
        help="A point surely before the damage where the search starts. Default: the newest "
        "base backup that still has the rows (Neon: the start of the restore window; a "
        "time).")] = None,
    damaged_table: Annotated[str | None, typer.Option(
        rich_help_panel=_AUTO, show_default=False,
        help="complete-failure / partial-corruption: the table the damage hit (alone: DELETE "
        "without WHERE, TRUNCATE or DROP TABLE of it). accidental-deletion uses --table.")] = None,
    damaged_ids: Annotated[list[str] | None, typer.Option(
        "--damaged-ids", rich_help_panel=_AUTO, show_default=False,
        help="complete-failure / partial-corruption: a primary key of a damaged row "
        "(repeatable; a composite key as a,b). accidental-deletion uses --ids.")] = None,
    damaged_column: Annotated[str | None, typer.Option(
        rich_help_panel=_AUTO, show_default=False,
        help="partial-corruption: find the first update that changed this column of those "
        "rows (default: their first update or delete).")] = None,
    accept_in_place_without_snapshot: Annotated[bool, typer.Option(
        "--accept-in-place-without-snapshot", rich_help_panel=_CF,
        help="In-place providers only (Supabase): go on when the current database is too "
        "broken to snapshot, losing its current state. Off: refuse.")] = False,
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
        if as_json:
            out.print_json(json.dumps(report.to_json_dict(), default=str))
        else:
            from rich.markdown import Markdown

            out.print(Markdown(report.to_markdown()))
    if failure is not None:
        _fail(failure)


def _fail(failure: BaseException) -> None:
    """Re-raise a restorekit error (main prints it); anything else is one line too, exit 1
    (the flow's log already holds its traceback)."""
    if isinstance(failure, RestoreKitError):
        raise failure
    from restorekit.pg.dsn import redact

    _error(redact(f"{type(failure).__name__}: {failure}"))
    raise typer.Exit(1)


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


# -- drill ----------------------------------------------------------------------------------------


class DrillPoint(StrEnum):
    latest = "latest"
    random = "random"


def drill_options(ctx: typer.Context) -> dict[str, Any]:
    """The restore drill's flow parameters as given on ``restorekit drill``'s command line
    (the defaults are the model's; the config as an absolute path)."""
    fields = {name: value for name, value in ctx.params.items() if name != "as_json"}
    fields["targets"] = list(fields.get("targets") or [])
    fields["point"] = str(fields["point"].value if isinstance(fields["point"], DrillPoint)
                          else fields["point"])
    if fields.get("config") is not None:
        fields["config"] = str(Path(fields["config"]).absolute())
    else:
        fields.pop("config", None)
    return fields


def drill_params(fields: Mapping[str, Any]) -> Any:
    """Build the restore drill's params model (imports the flow, hence prefect)."""
    from flows.restore_drill import RestoreDrillParams

    return _model(RestoreDrillParams, fields)


@app.command()
def drill(
    ctx: typer.Context,
    targets: Annotated[list[str] | None, typer.Option(
        "--target", "-t", show_default=False,
        help="A target to drill (repeatable). Default: every target in the config.")] = None,
    point: Annotated[DrillPoint, typer.Option(
        help="latest: restore the latest restorable point (and compare row counts with "
        "production); random: a random point inside the restore window.")] = DrillPoint.latest,
    row_count_tolerance: Annotated[float, typer.Option(
        min=0, max=1,
        help="Allowed difference between production's and the restore's row counts of the "
        "critical tables, as a fraction of production's.")] = 0.01,
    seed: Annotated[int | None, typer.Option(
        show_default=False, help="Seed for the random point (the same seed, the same point).")
    ] = None,
    lock_wait_seconds: Annotated[float, typer.Option(
        min=0, help="How long to wait while another restorekit run holds a target before "
        "refusing.")] = 3600,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the restore drill once, now: restore each target into a scratch database, verify it,
    compare row counts with production, measure RTO and RPO against the target's tier, tear
    the scratch database down, and print the drill report. Exits non-zero when a drill fails."""
    fields = drill_options(ctx)
    settings = _settings(Path(fields["config"]) if fields.get("config") else None)
    names = fields["targets"] or sorted(settings.targets)
    for name in names:  # unknown targets, and provider settings the adapter refuses
        with _unless_unreachable():
            _provider(settings, name)
    fields.setdefault("config", _config_path(settings))
    started = datetime.now(UTC)
    with _prefect_without_telemetry():
        params = drill_params(fields)
        from flows.restore_drill import restore_drill

        failure: BaseException | None = None
        try:
            results = [r.model_dump(mode="json") for r in restore_drill(params)]
        except Exception as exc:  # noqa: BLE001 - the drills recorded their results first
            failure = exc
            results = _drills_since(settings, names, started)
    if as_json:
        out.print_json(json.dumps({"passed": failure is None and all(r["passed"] for r in results),
                                   "drills": results}, default=str))
    else:
        from rich.markdown import Markdown

        from restorekit.drill import DrillResult

        for result in results:
            out.print(Markdown(DrillResult(**result).to_markdown()))
    if failure is not None:
        _fail(failure)


def _drills_since(settings: Settings, targets: Iterable[str], since: datetime
                  ) -> list[dict[str, Any]]:
    """The drills recorded in the targets' drill history since ``since`` (a failed drill run
    raises; its results are in the history)."""
    from restorekit.drill import load_history

    return [h for name in targets for h in load_history(settings.state_dir, name)
            if datetime.fromisoformat(h["started_at"]) >= since]


@app.command()
def watch(
    target: TargetOpt,
    window_minutes: Annotated[float | None, typer.Option(
        min=0.01, max=24 * 60, show_default=False,
        help="How long to watch. Default: the target's watch window_minutes (30).")] = None,
    interval_seconds: Annotated[float | None, typer.Option(
        min=0.1, max=3600, show_default=False,
        help="Between samples. Default: the target's watch interval_seconds (30).")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Watch a target after a restore (the post-restore-watch flow, here and now): health and
    database latency and errors, row counts against the baseline, foreign keys and custom
    checks, alerting through the configured notifications when a limit is crossed. Exits 1
    when one was."""
    settings = _settings(config)
    settings.target(target)
    with _prefect_without_telemetry():
        from flows.post_restore_watch import PostRestoreWatchParams, post_restore_watch
        from restorekit.watch import WatchBreached

        params = PostRestoreWatchParams(
            target=target, config=_config_path(settings), window_minutes=window_minutes,
            interval_seconds=interval_seconds)
        failure: WatchBreached | None = None
        try:
            report = post_restore_watch(params)
        except WatchBreached as exc:
            failure, report = exc, exc.report
    if as_json:
        out.print_json(report.model_dump_json())
    else:
        from rich.markdown import Markdown

        out.print(Markdown(report.to_markdown()))
    if failure is not None:
        _fail(failure)


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
        code = app(sys.argv[1:] or ["--help"], standalone_mode=False)
    except RestoreKitError as exc:
        from restorekit.pg.dsn import redact

        message = redact(str(exc))
        refused = isinstance(exc, REFUSALS)
        _error(" ".join(message.split()) if refused else message)
        sys.exit(2 if refused else 1)
    except typer.TyperException as exc:  # a usage error: unknown option, bad value, ...
        _error(" ".join(exc.format_message().split()))
        sys.exit(exc.exit_code)
    except typer.Abort:
        _error("aborted")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _error(message: str) -> None:
    # Plain text on one line: no newlines inserted into paths and URLs (the terminal wraps by
    # itself), no markup read into brackets (a restore window is printed as [a .. b]).
    sys.stderr.write(f"error: {message}\n")


if __name__ == "__main__":
    main()

"""``window``, ``backup``, ``backups`` and ``restore --to-new``: the restore window, base
backups, and a restore into a new cluster."""

from __future__ import annotations

from typing import Annotated

import typer

from restorekit.cli._common import (
    ConfigOpt,
    JsonOpt,
    TargetOpt,
    _emit,
    _progress,
    _record_table,
    _runtime,
    _table,
)


def window(target: TargetOpt, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Print the restore window: the earliest and latest points a restore can reach."""
    rt = _runtime(config, target)
    win = rt.provider.restore_window()
    from restorekit import production

    adopted = production.load(rt.settings.state_dir, target)
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


def backup(
    target: TargetOpt,
    label: Annotated[str, typer.Option(help="A label, e.g. 'before migration 42'.")] = "",
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Take a base backup of the target now (the runbook's manual pre-deployment backup)."""
    provider = _runtime(config, target).provider
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


def backups(target: TargetOpt, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List the target's base backups, oldest first."""
    items = _runtime(config, target).provider.list_backups()
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


def restore(
    target: TargetOpt,
    point: Annotated[str, typer.Option(
        "--point", "-p",
        help="latest | ISO-8601 time with timezone | lsn:X/Y | xid:N | before-xid:N | "
        "name:NAME | backup:ID",
    )] = "latest",
    to_new: Annotated[bool, typer.Option(
        "--to-new",
        help="Restore into a NEW local cluster (required: in-place restores are never done by "
        "this command).",
    )] = False,
    name: Annotated[str | None, typer.Option(
        help="Name of the new cluster (default: derived from the target and time).",
    )] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    show_dsn: Annotated[bool, typer.Option(
        "--show-dsn/--no-show-dsn",
        help="Print the new cluster's DSN, its password masked (***): the copy has the source's "
        "roles and passwords; --no-show-dsn: a short postgresql:// URL instead.",
    )] = True,
) -> None:
    """Restore the target's backups into a NEW cluster at a point and print how to reach it."""
    if not to_new:
        raise typer.BadParameter("pass --to-new: this command only restores into a new cluster",
                                 param_hint="--to-new")
    from restorekit.models import RestorePoint
    from restorekit.pg.dsn import display, redact

    parsed = RestorePoint.parse(point)
    provider = _runtime(config, target).provider
    from datetime import UTC, datetime

    name = name or f"{target}-{datetime.now(UTC).strftime('%Y%m%dt%H%M%S')}"
    with _progress(as_json) as progress:
        restored = provider.restore(parsed, name=name, progress=progress)
    dsn = restored.dsn.get_secret_value()
    data = {
        "target": target, "point": str(parsed), "name": name, "handle": restored.handle,
        "backup_id": restored.backup_id,
        "recovered_to_time": (
            restored.recovered_to_time.isoformat() if restored.recovered_to_time else None
        ),
        "recovered_to_lsn": restored.recovered_to_lsn,
        "phases_seconds": {k: round(v, 3) for k, v in restored.phases.items()},
        "dsn": redact(dsn) if show_dsn else display(dsn),
    }
    _emit(data, as_json, _record_table("Restored into a new cluster", data))

"""``snapshot``, ``prune`` and ``cleanup``: logical snapshots, retention, scratch restores
left behind."""

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


def snapshot(
    target: TargetOpt,
    table: Annotated[list[str] | None, typer.Option(
        "--table", help="Only this table (repeatable).",
    )] = None,
    label: str = "",
    jobs: Annotated[int, typer.Option(min=1, max=64, help="Parallel pg_dump jobs.")] = 2,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Take a verified logical snapshot (pg_dump) of the target's database into its repository."""
    from restorekit.repository import open_repository
    from restorekit.snapshot import take_snapshot

    cfg = _runtime(config, target).config
    if not cfg.repository:
        raise typer.BadParameter(f"target {target} has no repository configured")
    from restorekit.pg.tools import default_os_user

    # Owned by the PostgreSQL OS user: its archive_command writes into the same repository.
    repo = open_repository(cfg.repository, os_user=default_os_user())
    with _progress(as_json) as progress:
        info = take_snapshot(cfg.resolve_dsn(), repo, label=label, tables=table or None,
                             jobs=jobs, progress=progress)
    data = info.to_dict()
    t = _record_table("Logical snapshot (read back and verified)", data,
                      ("snapshot_id", "tables", "size_bytes", "location", "verified"))
    _emit(data, as_json, t)


def prune(
    target: TargetOpt,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Say what would be removed; remove nothing.",
    )] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Apply the target's backup retention (its backups section) now: remove base backups
    and archived WAL the policy no longer keeps (never the newest keep_count, never WAL a kept
    backup needs). The backup flow does this after every scheduled backup; do not run it while a
    restore of this target is reading an old backup."""
    from datetime import UTC, datetime

    from restorekit.retention import expire_backups

    rt = _runtime(config, target)
    policy = rt.config.backups
    said = expire_backups(rt.provider, policy, datetime.now(UTC), dry_run=dry_run)
    t = _table(title=f"Retention of {target}")
    t.add_column("result")
    t.add_row(said)
    _emit({"target": target, "dry_run": dry_run, "result": said,
           "policy": policy.model_dump()}, as_json, t)


def cleanup(target: TargetOpt, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Remove scratch clusters that earlier (failed or killed) runs left behind for this target,
    stopping their PostgreSQL servers. Never removed: a restore adopted as production, the one
    the target's DSN points at, and the one the application's connection string points at (a
    complete-failure run killed after its swap but before adopting the restore)."""
    from restorekit.providers.base import reaches

    rt = _runtime(config, target)
    provider = rt.provider
    in_use = rt.connection_in_use()
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

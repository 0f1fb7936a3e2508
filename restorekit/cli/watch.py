"""``restorekit watch``: the post-restore watch, here and now."""

from __future__ import annotations

from typing import Annotated

import typer

from restorekit.cli._common import (
    ConfigOpt,
    JsonOpt,
    TargetOpt,
    _config_path,
    _fail,
    _prefect_without_telemetry,
    _print_report,
    _settings,
)


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
    _print_report(as_json, report.model_dump_json(), report.to_markdown())
    if failure is not None:
        _fail(failure)

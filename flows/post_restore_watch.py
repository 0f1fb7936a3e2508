"""After a restore: watch production for a while, with alerts (runbook: "Monitoring After
Restore").

Samples the target every interval for the window (default ``[targets.X.watch]``, 30 min): the
health endpoint's latency and errors, the database connection's latency and errors (as the
application connects), the critical tables' row counts against the baseline, and now and then
foreign-key integrity and the configured custom checks. A crossed limit is announced at once
through the configured notifications, once per kind (and table or check). Publishes a table of
the samples and a markdown summary; the run fails when any limit was crossed.

Started by scenario 1 after adoption and by scenarios 2 and 3 when they changed production, as
its own flow run (``post-restore-watch/<target>``), so that no scenario waits out the window.

Blast radius: none. Read-only queries (one connection per sample, a few scans) and GETs of the
health endpoint; it holds no target lock, so a new restore can start while it watches.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from restorekit.watch import WatchBreached, WatchReport
from tasks._runtime import TargetRef
from tasks.reporting import notify
from tasks.watch import publish_watch, watch_production


class PostRestoreWatchParams(BaseModel):
    """Watch a target after a restore."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(description="Target name from restorekit.toml, e.g. 'production'.")
    config: str | None = Field(
        default=None, description="Path of restorekit.toml (default: $RESTOREKIT_CONFIG).")
    window_minutes: float | None = Field(
        default=None, gt=0, le=24 * 60,
        description="How long to watch (default: [targets.X.watch] window_minutes, 30).")
    interval_seconds: float | None = Field(
        default=None, gt=0, le=3600,
        description="Between samples (default: [targets.X.watch] interval_seconds, 30).")
    started_by: str | None = Field(
        default=None, description="The scenario run that started this watch (for the notices).")


@flow(name="post-restore-watch", log_prints=True)
def post_restore_watch(params: PostRestoreWatchParams) -> WatchReport:
    ref = TargetRef(target=params.target, config=params.config)
    after = f" after {params.started_by}" if params.started_by else ""
    notify(ref, f"restorekit: post-restore watch of {params.target} started{after}")
    report = watch_production(ref, params.window_minutes, params.interval_seconds)
    publish_watch(ref, report)
    if not report.quiet:
        notify(ref, f"restorekit: post-restore watch of {params.target} ended: {report.summary()}")
        raise WatchBreached(report)
    notify(ref, f"restorekit: post-restore watch of {params.target} ended {report.summary()}")
    return report

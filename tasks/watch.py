"""The watch after a restore: sample production, alert on breaches, publish the samples."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from restorekit.errors import ConfigError
from restorekit.pg.dsn import redact
from restorekit.watch import Breach, Sampler, WatchReport, watch
from tasks._runtime import TargetRef, logger, runtime
from tasks.database import load_baseline
from tasks.reporting import notify

#: The flow every scenario that changed production starts, one deployment per target.
WATCH_FLOW = "post-restore-watch"


def _key(kind: str, target: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in f"{kind}-{target}".lower())
    return slug.strip("-")[:100]


@task(name="watch-production", task_run_name="watch-production-{ref.target}",
      cache_policy=NO_CACHE)
def watch_production(ref: TargetRef, window_minutes: float | None = None,
                     interval_seconds: float | None = None) -> WatchReport:
    """Sample production for the window and notify once per breach as it happens.

    Args:
        ref: the target.
        window_minutes: how long; default ``[targets.X.watch] window_minutes``.
        interval_seconds: between samples; default ``[targets.X.watch] interval_seconds``.

    Returns:
        Every sample and breach; raises nothing because a limit was crossed.

    Example::

        report = watch_production(ref, window_minutes=30)
    """
    rt = runtime(ref)
    limits = rt.config.watch
    window = window_minutes or limits.window_minutes
    interval = interval_seconds or limits.interval_seconds
    if interval > window * 60:
        raise ConfigError(f"interval {interval:g} s is longer than the window ({window:g} min)")
    baseline = load_baseline(rt)
    sampler = Sampler(rt.live_dsn(), health_url=rt.health_url(),
                      critical_tables=rt.config.verify.critical_tables,
                      checks=rt.config.verify.checks, timeout_seconds=limits.timeout_seconds)
    alerted: list[str] = []
    undelivered: list[str] = []

    def on_breach(breach: Breach) -> None:
        text = breach.text(ref.target)
        try:
            notify(ref, text)
        except Exception as exc:  # noqa: BLE001 - an undeliverable alert must not end the watch
            undelivered.append(f"{text} ({type(exc).__name__}: {redact(str(exc))[:200]})")
            logger().error("alert not delivered: %s", undelivered[-1])
        else:
            alerted.append(text)

    started = datetime.now(UTC)
    samples, breaches = watch(
        sampler, limits, window_seconds=window * 60, interval_seconds=interval,
        baseline_counts=baseline.exact_counts if baseline is not None else None,
        on_breach=on_breach)
    return WatchReport(
        target=ref.target, started_at=started, finished_at=datetime.now(UTC),
        window_minutes=window, interval_seconds=interval, samples=samples, breaches=breaches,
        alerted=alerted, undelivered=undelivered,
        baseline=(f"the baseline of {baseline.captured_at.isoformat()}"
                  if baseline is not None else ""))


@task(name="publish-watch", cache_policy=NO_CACHE)
def publish_watch(ref: TargetRef, report: WatchReport) -> str:
    """Publish the samples as a table artifact and the summary as markdown (and as JSON in
    state_dir/reports/<target>/); returns the JSON file's path."""
    create_table_artifact(
        key=_key("post-restore-watch-samples", ref.target),
        table=[s.row() for s in report.samples],
        description=f"post-restore watch of {ref.target}: {report.summary()}")
    create_markdown_artifact(
        key=_key("post-restore-watch", ref.target), markdown=report.to_markdown(),
        description=f"post-restore watch of {ref.target}: {report.summary()}")
    path = (runtime(ref).reports_dir()
            / f"{report.started_at.strftime('%Y%m%dT%H%M%SZ')}-post-restore-watch.json")
    path.write_text(json.dumps(report.model_dump(mode="json"), indent=2))
    return str(path)


@task(name="start-post-restore-watch", cache_policy=NO_CACHE)
def start_post_restore_watch(ref: TargetRef, started_by: str) -> str:
    """Start the ``post-restore-watch/<target>`` deployment as its own flow run, without
    waiting for it (the scenario must not wait out the window); returns a note for the report.

    Without that deployment nothing is started and the note says how to start one. Never
    raises: the restore is done, and a watch that cannot start must not fail it.
    """
    from prefect.client.schemas import FlowRun
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.utilities.asyncutils import run_coro_as_sync

    name = f"{WATCH_FLOW}/{ref.target}"
    by_hand = (f"start it by hand: `restorekit watch -t {ref.target}"
               + (f" -c {ref.config}" if ref.config else "") + "`, or register it with "
               "`restorekit deploy`")
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(name)
        params = dict((deployment.parameters or {}).get("params") or {})
        params.update(target=ref.target, started_by=started_by)
        if ref.config:
            params["config"] = ref.config
        started = run_deployment(deployment.id, parameters={"params": params}, timeout=0)
        # A sync task gets the FlowRun itself (async_dispatch); only an async caller would get
        # a coroutine.
        run = started if isinstance(started, FlowRun) else run_coro_as_sync(started)
    except ObjectNotFound:
        note = f"post-restore watch not started: no deployment {name}; {by_hand}"
        logger().warning(note)
        return note
    except Exception as exc:  # noqa: BLE001 - see the docstring
        note = (f"post-restore watch NOT started ({type(exc).__name__}: "
                f"{redact(str(exc))[:200]}); {by_hand}")
        logger().error(note)
        return note
    note = (f"post-restore watch started: flow run {run.name} ({run.id}) of {name}; it alerts "
            "through the configured notifications and publishes its samples when done")
    logger().info(note)
    return note

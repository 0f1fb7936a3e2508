"""Tell people, and leave a record: notifications and the incident report artifact."""

from __future__ import annotations

import inspect
import json
from datetime import UTC, datetime

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.cache_policies import NO_CACHE
from prefect.utilities.asyncutils import run_coro_as_sync

from restorekit.errors import ConfigError
from restorekit.notify import send_webhook
from restorekit.report import IncidentReport
from tasks._runtime import RETRY_DELAYS, TargetRef, logger, retry_if_transient, runtime


@task(name="notify", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_if_transient)
def notify(ref: TargetRef, text: str) -> bool:
    """Post a one-line notice to the configured Slack-compatible webhook (runbook: "Notify
    stakeholders"). Returns False when none is configured."""
    rt = runtime(ref)
    sent = send_webhook(rt.settings.notify.webhook_url_env, text)
    for block_name in rt.settings.notify.prefect_blocks:
        # Any Prefect notification block (Slack, Teams, email, PagerDuty, ...), loaded by name.
        block = Block.load(block_name)
        if not isinstance(block, NotificationBlock):
            raise ConfigError(f"Prefect block {block_name!r} is not a notification block")
        pending = block.notify(body=text, subject="restorekit")
        # NotificationBlock declares notify async. Prefect's own blocks dispatch it to a plain
        # call in a sync task (None back); a block with only the async method hands back a
        # coroutine, which unawaited would send nothing.
        if inspect.iscoroutine(pending):
            run_coro_as_sync(pending)
        sent = True
    logger().info("notice%s: %s", "" if sent else " (no notification configured)", text)
    return sent


def _artifact_key(scenario: str, target: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in f"{scenario}-{target}".lower())
    return slug.strip("-")[:100]


@task(name="write-report", cache_policy=NO_CACHE)
def write_report(ref: TargetRef, report: IncidentReport) -> str:
    """Publish the incident report as a Prefect markdown artifact and as JSON on disk
    (state_dir/reports/<target>/); returns the JSON file's path."""
    rt = runtime(ref)
    markdown = report.to_markdown()
    create_markdown_artifact(
        key=_artifact_key(report.scenario, report.target),
        markdown=markdown,
        description=f"{report.scenario} on {report.target}: {report.outcome}",
    )
    stamp = (report.started_at or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    path = rt.reports_dir() / f"{stamp}-{report.scenario}.json"
    path.write_text(json.dumps(report.to_json_dict(), indent=2, default=str))
    return str(path)

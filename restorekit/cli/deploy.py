"""``serve-webhook`` and ``deploy``: the PagerDuty receiver and the Prefect deployments."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from restorekit.cli._common import (
    ConfigOpt,
    JsonOpt,
    _emit,
    _settings,
    _table,
)


def serve_webhook(
    host: Annotated[str, typer.Option(
        help="Interface to listen on (put TLS in front of it).",
    )] = "127.0.0.1",
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


def deploy(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Register every flow as a Prefect deployment against PREFECT_API_URL: the three scenarios
    and the manual backup per target (typed forms, approval on by default), the weekly restore
    drill on its cron schedule, the 'restorekit' process work pool, one-restore-per-target
    concurrency limits, and automations that notify on failed runs (notify.prefect_blocks)
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

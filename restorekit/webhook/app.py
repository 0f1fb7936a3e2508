"""The delivery handler, the ASGI app around it, and serve()."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from restorekit.errors import ProviderError
from restorekit.webhook.events import (
    SIGNATURE_HEADER,
    WebhookEventError,
    parse_event,
    verify_signature,
)
from restorekit.webhook.flow_runs import FlowRuns, merge_parameters, prefect_flow_runs
from restorekit.webhook.rules import WebhookConfig, freshness_problem, match_rule

if TYPE_CHECKING:  # imported where used: restorekit.config imports this module for its models
    from starlette.applications import Starlette
    from starlette.requests import Request

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/pagerduty"
HEALTH_PATH = "/healthz"


# ------------------------------------------------------------------------------ the handler


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    """What to answer a delivery: an HTTP status and a JSON body (free of secrets)."""

    status_code: int
    content: dict[str, Any]


def _rejected(status_code: int, reason: str) -> WebhookResponse:
    return WebhookResponse(status_code, {"status": "rejected", "reason": reason})


def handle_delivery(
    body: bytes,
    signature: str | None,
    *,
    config: WebhookConfig,
    secrets: Sequence[str],
    prefect: FlowRuns,
    now: datetime,
) -> WebhookResponse:
    """Decide on one delivery whose body was already read (steps 2–6 of the module docstring).

    Args:
        body: The raw body (at most ``max_body_bytes``).
        signature: The ``X-PagerDuty-Signature`` header, or None.
        config: The webhook config.
        secrets: The resolved signing secrets.
        prefect: The client used to start the run.
        now: The current time (tz-aware).

    Returns:
        The answer. Prefect failures also end up here, as 503 or 502; nothing is raised.
    """
    if not signature:
        log.warning("pagerduty webhook: delivery without %s refused", SIGNATURE_HEADER)
        return _rejected(401, f"missing {SIGNATURE_HEADER} header")
    if not verify_signature(body, signature, secrets):
        log.warning("pagerduty webhook: delivery with an invalid signature refused")
        return _rejected(401, "invalid signature")
    try:
        event = parse_event(body)
    except WebhookEventError as exc:
        log.warning("pagerduty webhook: signed but malformed delivery refused: %s", exc)
        return _rejected(400, str(exc))
    where = f"event {event.id} ({event.event_type}"
    where += f", incident {event.data.id})" if event.data else ")"
    if problem := freshness_problem(event, now, config.max_age_seconds):
        log.warning("pagerduty webhook: %s refused: %s", where, problem)
        return _rejected(400, problem)
    rule = match_rule(event, config)
    if rule is None or event.data is None:
        log.info("pagerduty webhook: %s matches no rule; ignored", where)
        return WebhookResponse(202, {"status": "ignored", "event_id": event.id,
                                     "reason": "no rule matches this event"})
    key = f"pagerduty:{event.id}"
    try:
        deployment = prefect.deployment(rule.deployment)
        run = prefect.create_flow_run(
            deployment.id,
            merge_parameters(deployment.parameters, rule.run_parameters(event)),
            idempotency_key=key,
            tags=["restorekit", "pagerduty", f"pagerduty-incident:{event.data.id}", *rule.tags],
            name=f"pagerduty-{event.data.id}",
        )
    except ProviderError as exc:
        retryable = exc.is_retryable
        log.error("pagerduty webhook: %s: no flow run of %s: %s", where, rule.deployment, exc)
        return WebhookResponse(503 if retryable else 502, {
            "status": "error", "reason": str(exc), "retryable": retryable,
            "deployment": rule.deployment, "event_id": event.id,
        })
    status = "created" if run.created else "duplicate"
    log.info("pagerduty webhook: %s → flow run %s (%s) of %s: %s", where, run.name, run.id,
             rule.deployment, status)
    return WebhookResponse(202, {
        "status": status, "flow_run_id": run.id, "flow_run_name": run.name,
        "deployment": rule.deployment, "idempotency_key": key, "event_id": event.id,
    })


# ----------------------------------------------------------------------------- ASGI + serve


def create_app(
    config: WebhookConfig,
    *,
    prefect: FlowRuns | None = None,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Starlette:
    """The ASGI app: ``POST /webhooks/pagerduty`` and ``GET /healthz``.

    Secrets and the Prefect URL are resolved here, so a missing variable fails at startup and
    not on the first incident.

    Args:
        config: The webhook config.
        prefect: The Prefect client (default: built from ``config`` and the environment, and
            closed when the app shuts down).
        environ: Where the variables named in ``config`` are read (default: ``os.environ``).
        clock: Returns the current tz-aware time (for the freshness check).

    Raises:
        ConfigError: A secret variable is unset, or no Prefect API URL is configured.
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    secrets = config.resolve_secrets(environ)
    own_client = prefect is None
    client = prefect if prefect is not None else prefect_flow_runs(config, environ)
    limit = config.max_body_bytes

    async def pagerduty(request: Request) -> Response:
        body = await _read_body(request, limit)
        if body is None:
            log.warning("pagerduty webhook: body over %d bytes refused", limit)
            # Connection: close, or the server would go on reading (and discarding) the rest
            # of the body to keep the connection alive for a next request.
            return JSONResponse({"status": "rejected",
                                 "reason": f"body larger than {limit} bytes"}, status_code=413,
                                headers={"Connection": "close"})
        if not is_json_content_type(request.headers.get("content-type")):
            log.warning("pagerduty webhook: delivery with a Content-Type other than "
                        "application/json refused")
            return JSONResponse({"status": "rejected",
                                 "reason": "Content-Type must be application/json"},
                                status_code=415)
        # The Prefect calls block: keep them off the event loop.
        result = await run_in_threadpool(
            handle_delivery, body, request.headers.get(SIGNATURE_HEADER),
            config=config, secrets=secrets, prefect=client, now=clock(),
        )
        return JSONResponse(result.content, status_code=result.status_code)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if own_client:
                client.close()

    return Starlette(
        routes=[Route(WEBHOOK_PATH, pagerduty, methods=["POST"]),
                Route(HEALTH_PATH, healthz, methods=["GET"])],
        lifespan=lifespan,
    )


def is_json_content_type(value: str | None) -> bool:
    """True for ``application/json``, with or without parameters (``; charset=utf-8``)."""
    return (value or "").partition(";")[0].strip().lower() == "application/json"


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it is known to exceed ``limit`` (no more than needed is read)."""
    declared = request.headers.get("content-length")
    with contextlib.suppress(ValueError):
        if declared is not None and int(declared) > limit:
            return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def serve(config: WebhookConfig, host: str = "127.0.0.1", port: int = 8787, *,
          environ: Mapping[str, str] | None = None) -> None:
    """Run the webhook receiver with uvicorn until interrupted.

    Put it behind TLS (a reverse proxy or a load balancer). PagerDuty delivers only to public
    URLs, and the signature does not hide the incident data.

    Raises:
        ConfigError: As :func:`create_app`.
    """
    import uvicorn

    app = create_app(config, environ=environ)
    log.info("pagerduty webhook: listening on http://%s:%d%s (%d rule(s))", host, port,
             WEBHOOK_PATH, len(config.rules))
    uvicorn.run(app, host=host, port=port, server_header=False, log_level="info")

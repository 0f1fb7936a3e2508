"""PagerDuty v3 webhooks → Prefect flow runs: incident tooling starts a restore flow over HTTP.

    POST /webhooks/pagerduty    one signed PagerDuty v3 event (provider-apis.md §7.1)
    GET  /healthz               liveness

A delivery goes through these steps in order, and nothing is created in Prefect unless all of
them pass:

1. **Size**: a body over ``max_body_bytes`` gets 413; at most ``max_body_bytes + 1`` bytes are
   read (none when the Content-Length already says too much).
   **Type**: a Content-Type other than ``application/json`` (parameters allowed) gets 415.
2. **Signature**: ``X-PagerDuty-Signature`` must carry a ``v1=`` HMAC-SHA256 of the raw body under
   one of the configured secrets; otherwise 401. Nothing is parsed before this check.
3. **Parse**: the event envelope, plus the incident for events whose ``data.type`` is
   ``incident``; malformed input gets 400 naming the field.
4. **Freshness**: PagerDuty signs no timestamp, so a captured delivery could be replayed
   forever. ``event.occurred_at`` older than ``max_age_seconds``, or more than 60 s in the
   future, gets 400.
5. **Rules**: the first matching rule wins; no match gets 202 ``{"status": "ignored"}``.
6. **Prefect**: the deployment is looked up by name, and a flow run is created with the
   rule's parameters and the incident id deep-merged over the deployment's defaults, and with
   ``idempotency_key = "pagerduty:<event.id>"``. The answer is 202 ``created`` (Prefect
   answered 201) or ``duplicate`` (200: a run with that key already exists). If Prefect is
   unreachable or answers 5xx/429, the response is 503. PagerDuty retries 5xx, and the
   idempotency key makes the retry safe. Other refusals (unknown deployment 404, parameter
   schema 409, auth 401/403) get 502: a configuration problem that the operator has to fix.

PagerDuty retries timeouts, 5xx and 429 and drops 4xx without a retry (developer-docs
``webhooks/02-Behavior.md``). That is why a stale event gets a 4xx (a retry is no fresher)
and an event that matches no rule gets a 2xx. PagerDuty waits only 5 s for an answer, so the
Prefect calls use a short timeout (``prefect_timeout_seconds``, per request) and no retries of
their own. The calls go through Prefect's own client (``get_client(sync_client=True)``), in
``deployments/flow_runs.py``: the core never imports Prefect, so :func:`create_app` builds that
adapter by name (:data:`PREFECT_FLOW_RUNS`) unless it is given another :class:`FlowRuns`.

Secrets: the config names environment variables and never holds values. The subscription
secret, the signature header and the Prefect ``Authorization`` header are never logged or
echoed back.
"""

from restorekit.webhook.app import (
    HEALTH_PATH,
    WEBHOOK_PATH,
    WebhookResponse,
    create_app,
    handle_delivery,
    is_json_content_type,
    serve,
)
from restorekit.webhook.events import (
    SIGNATURE_HEADER,
    Incident,
    PagerDutyEvent,
    PriorityRef,
    ServiceRef,
    WebhookEventError,
    parse_event,
    verify_signature,
)
from restorekit.webhook.flow_runs import (
    PREFECT_FLOW_RUNS,
    DeploymentRef,
    FlowRunRef,
    FlowRuns,
    merge_parameters,
    prefect_flow_runs,
)
from restorekit.webhook.rules import (
    MAX_FUTURE_SKEW_SECONDS,
    WebhookConfig,
    WebhookRule,
    freshness_problem,
    match_rule,
)

__all__ = [
    "HEALTH_PATH", "MAX_FUTURE_SKEW_SECONDS", "WEBHOOK_PATH", "PriorityRef", "ServiceRef",
    "is_json_content_type",
    "PREFECT_FLOW_RUNS", "SIGNATURE_HEADER", "DeploymentRef", "FlowRunRef", "FlowRuns",
    "Incident", "PagerDutyEvent", "WebhookConfig", "WebhookEventError", "WebhookResponse",
    "WebhookRule", "create_app", "freshness_problem", "handle_delivery", "match_rule",
    "merge_parameters", "parse_event", "prefect_flow_runs", "serve", "verify_signature",
]

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

from __future__ import annotations

import contextlib
import copy
import hashlib
import hmac
import importlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from restorekit.errors import ConfigError, ProviderError, RestoreKitError

if TYPE_CHECKING:  # imported where used: restorekit.config imports this module for its models
    from starlette.applications import Starlette
    from starlette.requests import Request

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-PagerDuty-Signature"
WEBHOOK_PATH = "/webhooks/pagerduty"
HEALTH_PATH = "/healthz"
#: How far ``occurred_at`` may lie in the future (clock skew between PagerDuty and us).
MAX_FUTURE_SKEW_SECONDS = 60.0

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEPLOYMENT = re.compile(r"^[^/]+/[^/]+$")
_PARAM_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_V1_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_ENVELOPE_FIELDS = ("id", "event_type", "resource_type", "occurred_at")
#: Incident event types whose ``data`` is an incident (developer-docs ``webhooks/01-Overview.md``);
#: annotated, responder.* and status_update_published carry other objects.
_INCIDENT_DATA_EVENTS = frozenset(
    f"incident.{kind}"
    for kind in ("acknowledged", "delegated", "escalated", "priority_updated", "reassigned",
                 "reopened", "resolved", "triggered", "unacknowledged")
)


# --------------------------------------------------------------------------------------- config


def _env_name(value: str, what: str) -> str:
    if not _ENV_NAME.match(value):
        # Never echo the value: a secret pasted here by mistake must not reach a log.
        raise ValueError(
            f"{what} must be the NAME of an environment variable (e.g. "
            "PAGERDUTY_WEBHOOK_SECRET), not the value itself"
        )
    return value


class WebhookRule(BaseModel):
    """Which PagerDuty events start which Prefect deployment, and with which parameters.

    Every condition that is set must hold; conditions left unset match anything. The rule
    matches only events that carry an incident (``data.type == "incident"``).

    Attributes:
        event_types: PagerDuty event types, e.g. ``incident.triggered``.
        service_id: The PagerDuty service id (``data.service.id``), e.g. ``PF9KMXH``.
        service_name: The service's name (``data.service.summary``), compared case-insensitively.
        title_contains: A substring of the incident title, compared case-insensitively.
        priorities: Priority names (``data.priority.summary``) such as ``["P1", "P2"]``. An
            incident without a priority never matches a rule that lists priorities.
        urgency: ``high`` or ``low``.
        deployment: ``"flow-name/deployment-name"`` as Prefect shows it.
        parameters: Deep-merged over the deployment's default parameters (see
            :func:`merge_parameters`), so a rule names only what differs from the deployment.
        incident_parameter: Where the incident id goes in the parameters. A dotted path
            reaches into a model parameter: ``params.incident_id`` for the scenario flows,
            which take ``params: <Scenario>Params``.
        tags: Extra flow-run tags, added to ``restorekit``, ``pagerduty`` and
            ``pagerduty-incident:<id>``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_types: tuple[str, ...] = Field(default=("incident.triggered",), min_length=1)
    service_id: str | None = None
    service_name: str | None = None
    title_contains: str | None = None
    priorities: tuple[str, ...] = ()
    urgency: Literal["high", "low"] | None = None
    deployment: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    incident_parameter: str = "incident_id"
    tags: tuple[str, ...] = ()

    @field_validator("deployment")
    @classmethod
    def _deployment_name(cls, value: str) -> str:
        if not _DEPLOYMENT.match(value):
            raise ValueError(f"deployment {value!r} must look like 'flow-name/deployment-name'")
        return value

    @model_validator(mode="after")
    def _incident_parameter_fits(self) -> WebhookRule:
        if not _PARAM_PATH.match(self.incident_parameter):
            raise ValueError(
                f"incident_parameter {self.incident_parameter!r} must be a parameter name or a "
                "dotted path such as 'params.incident_id'"
            )
        node: Any = self.parameters
        for part in self.incident_parameter.split(".")[:-1]:
            node = node.get(part, {}) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise ValueError(
                    f"incident_parameter {self.incident_parameter!r}: parameters[{part!r}] "
                    "is not a table"
                )
        return self

    @property
    def flow_name(self) -> str:
        return self.deployment.split("/", 1)[0]

    @property
    def deployment_name(self) -> str:
        return self.deployment.split("/", 1)[1]

    def matches(self, event: PagerDutyEvent) -> bool:
        """True when ``event`` satisfies every condition this rule sets."""
        incident = event.data
        if incident is None or event.event_type not in self.event_types:
            return False
        if self.service_id is not None and incident.service.id != self.service_id:
            return False
        if (self.service_name is not None
                and incident.service.summary.casefold() != self.service_name.casefold()):
            return False
        if (self.title_contains is not None
                and self.title_contains.casefold() not in incident.title.casefold()):
            return False
        if self.priorities:
            wanted = {p.casefold() for p in self.priorities}
            if incident.priority is None or incident.priority.summary.casefold() not in wanted:
                return False
        return self.urgency is None or incident.urgency == self.urgency

    def run_parameters(self, event: PagerDutyEvent) -> dict[str, Any]:
        """``parameters`` with the incident id placed at ``incident_parameter`` (a fresh copy)."""
        assert event.data is not None
        params = copy.deepcopy(self.parameters)
        *parents, leaf = self.incident_parameter.split(".")
        node = params
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = event.data.id
        return params


class WebhookConfig(BaseModel):
    """The ``[webhook]`` section: who may start which flow.

    Attributes:
        secret_env: Name of the environment variable holding the PagerDuty webhook
            subscription's signing secret.
        extra_secret_envs: More secrets to accept: other subscriptions that deliver to this
            endpoint, or the previous secret while a rotation is under way.
        max_age_seconds: Events whose ``occurred_at`` is older are refused (replay guard).
            PagerDuty retries a failing delivery for about 20 minutes, so a retry that comes
            after this age is refused as well.
        max_body_bytes: Larger bodies are refused without being read in full. PagerDuty
            drops webhooks over 256 KiB itself.
        prefect_api_url: The Prefect API, e.g. ``http://prefect:4200/api``. The default is
            ``$PREFECT_API_URL``.
        prefect_auth_env: Name of the environment variable holding ``user:password`` (sent as
            HTTP Basic, for a self-hosted server with ``PREFECT_SERVER_API_AUTH_STRING``) or an
            API key (sent as Bearer, for Prefect Cloud). When unset, ``$PREFECT_API_KEY`` and
            then ``$PREFECT_API_AUTH_STRING`` are used when set, as Prefect's own client does.
        prefect_timeout_seconds: Timeout of each Prefect request. PagerDuty waits 5 s for
            the whole answer, which includes two requests.
        rules: Tried in order; the first that matches decides.
    """

    # A secret pasted into secret_env by mistake must not come back in the error's text.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    secret_env: str
    extra_secret_envs: tuple[str, ...] = ()
    max_age_seconds: int = Field(default=600, ge=1)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    prefect_api_url: str | None = None
    prefect_auth_env: str | None = None
    prefect_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    rules: tuple[WebhookRule, ...] = Field(min_length=1)

    @field_validator("secret_env", "prefect_auth_env")
    @classmethod
    def _names_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _env_name(value, str(info.field_name))

    @field_validator("extra_secret_envs")
    @classmethod
    def _names_only_all(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_env_name(v, "extra_secret_envs") for v in value)

    @field_validator("prefect_api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("prefect_api_url must start with http:// or https://")
        return value

    def resolve_secrets(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """The signing secrets, read from the environment (secret: never log them).

        Raises:
            ConfigError: A named variable is unset or empty.
        """
        env = os.environ if environ is None else environ
        secrets = []
        for name in (self.secret_env, *self.extra_secret_envs):
            value = env.get(name, "").strip()
            if not value:
                raise ConfigError(
                    f"webhook: environment variable {name} (signing secret) is not set"
                )
            secrets.append(value)
        return secrets

    def resolve_prefect(self, environ: Mapping[str, str] | None = None) -> tuple[str, str | None]:
        """``(api_url, credential)`` for Prefect's client (the credential is a secret).

        Raises:
            ConfigError: No API URL is configured, or ``prefect_auth_env`` names an unset variable.
        """
        env = os.environ if environ is None else environ
        url = self.prefect_api_url or env.get("PREFECT_API_URL", "").strip()
        if not url:
            raise ConfigError(
                "webhook: no Prefect API; set prefect_api_url or PREFECT_API_URL "
                "(e.g. http://127.0.0.1:4200/api)"
            )
        if self.prefect_auth_env:
            credential = env.get(self.prefect_auth_env, "").strip()
            if not credential:
                raise ConfigError(
                    f"webhook: environment variable {self.prefect_auth_env} "
                    "(Prefect credential) is not set"
                )
            return url, credential
        if key := env.get("PREFECT_API_KEY", "").strip():
            return url, key
        return url, env.get("PREFECT_API_AUTH_STRING", "").strip() or None


# ---------------------------------------------------------------------------------- the event


class WebhookEventError(RestoreKitError):
    """A delivery body is not a PagerDuty v3 event that can be acted on. Never retryable."""


class ServiceRef(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    id: str = Field(min_length=1)
    summary: str


class PriorityRef(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    summary: str


class Incident(BaseModel):
    """``event.data`` when it is an incident (the fields the rules and the run need)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    id: str = Field(min_length=1)
    number: int | None = None
    title: str
    status: str | None = None
    html_url: str | None = None
    service: ServiceRef
    priority: PriorityRef | None = None  # null when the account has no priorities
    urgency: Literal["high", "low"] | None = None


class PagerDutyEvent(BaseModel):
    """One PagerDuty v3 event (the ``event`` object of a delivery).

    ``data`` is the incident for incident events and None for others (``pagey.ping``,
    ``service.*``, notes, responders). ``data_type`` tells which kind of event it was.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)
    id: str = Field(min_length=1)
    event_type: str = Field(min_length=1)
    resource_type: str | None = None
    occurred_at: AwareDatetime
    data_type: str | None = None
    data: Incident | None = None


def _describe(exc: ValidationError, prefix: str) -> str:
    # loc and msg only: pydantic's `input` would copy untrusted text into logs.
    return "; ".join(
        f"{'.'.join([prefix, *(str(p) for p in err['loc'])])}: {err['msg']}"
        for err in exc.errors()
    )


def parse_event(body: bytes | str | Mapping[str, Any]) -> PagerDutyEvent:
    """Validate a PagerDuty v3 delivery body.

    Args:
        body: The raw body (or the decoded JSON object).

    Returns:
        The event. Its ``data`` is set for events that carry an incident.

    Raises:
        WebhookEventError: The body is not JSON, has no ``event`` object, or a required field
            is missing or malformed (the message names the field, e.g. ``event.occurred_at``).
    """
    if isinstance(body, bytes | str):
        try:
            raw = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WebhookEventError(f"body is not valid JSON: {exc}") from None
    else:
        raw = body
    if not isinstance(raw, Mapping) or not isinstance(raw.get("event"), Mapping):
        raise WebhookEventError("body must be a JSON object with an 'event' object")
    event = raw["event"]
    data = event.get("data")
    if data is not None and not isinstance(data, Mapping):
        raise WebhookEventError("event.data must be an object or null")
    data_type = data.get("type") if data is not None else None
    try:
        envelope = PagerDutyEvent.model_validate(
            {k: event[k] for k in _ENVELOPE_FIELDS if k in event}
            | {"data_type": data_type if isinstance(data_type, str) else None}
        )
    except ValidationError as exc:
        raise WebhookEventError(_describe(exc, "event")) from None
    if envelope.event_type not in _INCIDENT_DATA_EVENTS and data_type != "incident":
        return envelope
    if data is None:
        raise WebhookEventError(f"event.data: an {envelope.event_type} event needs the incident")
    if data_type not in (None, "incident"):
        raise WebhookEventError(
            f"event.data.type: an {envelope.event_type} event carries an incident, "
            f"not {data_type!r}"
        )
    try:
        incident = Incident.model_validate(data)
    except ValidationError as exc:
        raise WebhookEventError(_describe(exc, "event.data")) from None
    return envelope.model_copy(update={"data": incident, "data_type": "incident"})


def verify_signature(body: bytes, header: str | None, secrets: Sequence[str]) -> bool:
    """True when ``header`` holds a valid ``v1`` signature of ``body`` under any of ``secrets``.

    ``X-PagerDuty-Signature`` is ``v1=<hex>[,v1=<hex>...]``: HMAC-SHA256 of the raw body, one
    value per secret PagerDuty signs with (several during a rotation). Values of other versions
    and malformed values are skipped. Every candidate is compared in constant time.

    Args:
        body: The raw request body, exactly as received.
        header: The header's value, or None when it is missing.
        secrets: The secrets to accept; empty strings are ignored.
    """
    if not header:
        return False
    candidates = []
    for part in header.split(","):
        version, sep, value = part.strip().partition("=")
        value = value.strip()
        if sep and version.strip() == "v1" and _V1_HEX.match(value):
            candidates.append(value.lower().encode("ascii"))
    valid = False
    for secret in secrets:
        if not secret:
            continue
        digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
        expected = digest.encode("ascii")
        for candidate in candidates:
            valid |= hmac.compare_digest(expected, candidate)
    return valid


def match_rule(event: PagerDutyEvent, config: WebhookConfig) -> WebhookRule | None:
    """The first rule in ``config.rules`` that ``event`` satisfies, or None."""
    return next((rule for rule in config.rules if rule.matches(event)), None)


def freshness_problem(
    event: PagerDutyEvent, now: datetime, max_age_seconds: float
) -> str | None:
    """Why ``event`` is too old or too far in the future to act on, or None when it is fresh."""
    age = (now - event.occurred_at).total_seconds()
    if age > max_age_seconds:
        return (f"stale event: occurred_at is {age:.0f} s old (at most {max_age_seconds:.0f} s "
                "accepted)")
    if -age > MAX_FUTURE_SKEW_SECONDS:
        return (f"event from the future: occurred_at is {-age:.0f} s ahead of this server's clock "
                f"(at most {MAX_FUTURE_SKEW_SECONDS:.0f} s accepted)")
    return None


# ------------------------------------------------------------------------------- Prefect port


@dataclass(frozen=True, slots=True)
class DeploymentRef:
    """A deployment as Prefect reports it: its id and its default parameters."""

    id: str
    name: str  # "flow-name/deployment-name"
    parameters: dict[str, Any] = field(default_factory=dict)


def merge_parameters(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` deep-merged over ``defaults`` (a fresh copy; neither input is changed).

    Prefect merges a run's parameters over the deployment's defaults one level deep only, so
    ``{"params": {"incident_id": ...}}`` would replace the whole ``params`` object of a scenario
    deployment (its target, config path and ``require_approval``). Tables merge key by key;
    anything else, including Prefect's hydration markers (``__prefect_kind``), is replaced.
    """
    merged = copy.deepcopy(dict(defaults))
    for key, value in overrides.items():
        base = merged.get(key)
        if (isinstance(base, dict) and isinstance(value, Mapping)
                and "__prefect_kind" not in base and "__prefect_kind" not in value):
            merged[key] = merge_parameters(base, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass(frozen=True, slots=True)
class FlowRunRef:
    """A flow run Prefect created, or returned because its idempotency key was already used.

    Attributes:
        created: True for a new run (HTTP 201), False for an existing one (HTTP 200).
    """

    id: str
    name: str
    deployment_id: str
    created: bool
    idempotency_key: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    state_name: str | None = None


class FlowRuns(Protocol):
    """Where the webhook starts runs: Prefect, through its own client
    (``deployments.flow_runs.PrefectFlowRuns``, the default), or a fake in tests.

    Contract: both calls block for at most the configured timeout and do not retry (PagerDuty
    retries the delivery, and the idempotency key makes that safe); every failure is a
    :class:`ProviderError` with ``provider="prefect"``, retryable for connection failures,
    timeouts, 408, 429 and 5xx, not retryable for an unknown deployment (404), parameters that
    fail the deployment's schema (409), refused credentials (401/403) and other 4xx. Nothing
    raised, logged or shown by ``repr`` contains the credential.
    """

    def deployment(self, name: str) -> DeploymentRef:
        """The deployment ``"flow-name/deployment-name"``, with its default parameters."""
        ...

    def create_flow_run(
        self,
        deployment_id: str,
        parameters: Mapping[str, Any],
        idempotency_key: str | None = None,
        tags: Sequence[str] = (),
        name: str | None = None,
    ) -> FlowRunRef:
        """A run of the deployment: new (``created``), or the one an earlier call with the same
        ``idempotency_key`` created (``created`` False)."""
        ...

    def close(self) -> None: ...


#: The default :class:`FlowRuns`, named rather than imported: it imports Prefect, which the
#: core does not (the registry pattern of restorekit.sinks.base).
PREFECT_FLOW_RUNS = "deployments.flow_runs:PrefectFlowRuns"


def prefect_flow_runs(config: WebhookConfig, environ: Mapping[str, str] | None = None) -> FlowRuns:
    """The default :class:`FlowRuns`: Prefect's own client, built from ``config``.

    Raises:
        ConfigError: No Prefect API URL, or ``prefect_auth_env`` names an unset variable.
    """
    module_name, _, attr = PREFECT_FLOW_RUNS.partition(":")
    factory: Any = getattr(importlib.import_module(module_name), attr)
    runs: FlowRuns = factory.from_config(config, environ)
    return runs


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


__all__ = [
    "PREFECT_FLOW_RUNS", "SIGNATURE_HEADER", "DeploymentRef", "FlowRunRef", "FlowRuns",
    "Incident", "PagerDutyEvent", "WebhookConfig", "WebhookEventError", "WebhookResponse",
    "WebhookRule", "create_app", "freshness_problem", "handle_delivery", "match_rule",
    "merge_parameters", "parse_event", "prefect_flow_runs", "serve", "verify_signature",
]

"""A PagerDuty v3 delivery: its signature, and the event it carries (provider-apis.md §7.1)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

from restorekit.errors import RestoreKitError

SIGNATURE_HEADER = "X-PagerDuty-Signature"
_V1_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_ENVELOPE_FIELDS = ("id", "event_type", "resource_type", "occurred_at")
#: Incident event types whose ``data`` is an incident (developer-docs ``webhooks/01-Overview.md``);
#: annotated, responder.* and status_update_published carry other objects.
_INCIDENT_DATA_EVENTS = frozenset(
    f"incident.{kind}"
    for kind in ("acknowledged", "delegated", "escalated", "priority_updated", "reassigned",
                 "reopened", "resolved", "triggered", "unacknowledged")
)



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

"""PagerDuty webhook → Prefect flow run: signatures, parsing, rules, freshness, the Prefect
adapter (Prefect's own client, deployments/flow_runs.py) over httpx.MockTransport, and the ASGI
app end to end with starlette's TestClient."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import anyio
import httpx
import pytest
from pydantic import ValidationError

from deployments.flow_runs import PrefectFlowRuns
from restorekit.errors import ConfigError, ProviderError
from restorekit.webhook import (
    SIGNATURE_HEADER,
    PagerDutyEvent,
    WebhookConfig,
    WebhookEventError,
    WebhookRule,
    create_app,
    freshness_problem,
    match_rule,
    merge_parameters,
    parse_event,
    verify_signature,
)

with warnings.catch_warnings():
    # Starlette 1.10's TestClient prefers the httpx2 fork and warns when it falls back to httpx
    # (what Prefect installs); it works the same, and pytest turns warnings into errors here.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", UserWarning)
    from starlette.testclient import TestClient

SECRET = "ChEj3aj4QtfAT4wMK8xLcdL6lPfQCzD6Pn5bdl3/dNupYXjsJjHo0+GAcbEM4gSk"
OLD_SECRET = "old-Z2l2ZSBtZSBhIGJyZWFr/+secret"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
API = "http://prefect.test:4200/api"
DEPLOYMENT_ID = "6f1c2a9e-3d4b-4c8e-9a51-0b7d2e1f4a10"
CREATE_PATH = f"/api/deployments/{DEPLOYMENT_ID}/create_flow_run"
ENV = {"PD_SECRET": SECRET, "PD_OLD_SECRET": OLD_SECRET}


def sign(body: bytes, *secrets: str) -> str:
    return ",".join(
        "v1=" + hmac.new(s.encode(), body, hashlib.sha256).hexdigest() for s in secrets
    )


def incident_event(**changes: Any) -> dict[str, Any]:
    """A PagerDuty v3 incident.triggered delivery (developer-docs webhooks/01-Overview.md)."""
    event: dict[str, Any] = {
        "event": {
            "id": "01DEN2LMZ9B0XDN61NFZA8WSJ7",
            "event_type": "incident.triggered",
            "resource_type": "incident",
            "occurred_at": (NOW - timedelta(seconds=30)).isoformat().replace("+00:00", "Z"),
            "agent": None,
            "client": None,
            "data": {
                "id": "PGR0VU2", "type": "incident", "number": 2, "status": "triggered",
                "self": "https://api.pagerduty.com/incidents/PGR0VU2",
                "html_url": "https://acme.pagerduty.com/incidents/PGR0VU2",
                "incident_key": "d3640fbd41094207a1c11e58e46b1662",
                "created_at": "2026-03-01T11:59:30Z",
                "title": "Production database DOWN: primary unreachable",
                "service": {"id": "PF9KMXH", "summary": "Billing DB", "type": "service_reference"},
                "assignees": [], "teams": [],
                "priority": {"id": "PSO75BM", "summary": "P1", "type": "priority_reference"},
                "urgency": "high", "conference_bridge": None, "resolve_reason": None,
            },
        }
    }
    for dotted, value in changes.items():
        node = event["event"]
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node[part]
        if value is _DELETE:
            node.pop(leaf)
        else:
            node[leaf] = value
    return event


_DELETE = object()


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def make_config(**changes: Any) -> WebhookConfig:
    raw: dict[str, Any] = {
        "secret_env": "PD_SECRET",
        "prefect_api_url": API,
        "rules": [
            {"service_id": "PF9KMXH", "priorities": ["P1", "P2"],
             "deployment": "restore-probe/production",
             "parameters": {"target": "production", "require_approval": True}},
        ],
    }
    raw.update(changes)
    return WebhookConfig.model_validate(raw)


# ------------------------------------------------------------------------------ signatures


def test_a_valid_signature_is_accepted() -> None:
    body = encode(incident_event())
    assert verify_signature(body, sign(body, SECRET), [SECRET])


def test_a_signature_made_with_another_secret_is_refused() -> None:
    body = encode(incident_event())
    assert not verify_signature(body, sign(body, "not-the-secret"), [SECRET])


@pytest.mark.parametrize("header", [None, "", "   ", "v1=", "v1", ","])
def test_a_missing_or_empty_signature_is_refused(header: str | None) -> None:
    assert not verify_signature(b"{}", header, [SECRET])


def test_any_matching_v1_value_accepts_among_several() -> None:
    body = encode(incident_event())
    header = sign(body, "first-unknown", SECRET, "third-unknown")
    assert verify_signature(body, header, [SECRET])
    assert verify_signature(body, header.replace(",", ", "), [SECRET])  # spaces tolerated


def test_rotation_accepts_either_secret_we_hold() -> None:
    body = encode(incident_event())
    # PagerDuty still signs with the old secret only; we already hold the new one too.
    assert verify_signature(body, sign(body, OLD_SECRET), [SECRET, OLD_SECRET])
    # PagerDuty signs with both while we hold only the new one.
    assert verify_signature(body, sign(body, OLD_SECRET, SECRET), [SECRET])


def test_other_versions_and_malformed_values_are_skipped_without_error() -> None:
    body = b'{"event": {}}'
    good = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert not verify_signature(body, f"v0={good}", [SECRET])
    assert not verify_signature(body, f"v2={good}", [SECRET])
    assert not verify_signature(body, f"v1={good[:-2]}", [SECRET])            # too short
    assert not verify_signature(body, "v1=" + "zz" * 32, [SECRET])             # not hex
    assert not verify_signature(body, "v1=ü" + good[1:], [SECRET])             # not ASCII
    assert verify_signature(body, f"v1={good.upper()}", [SECRET])              # hex is hex
    assert not verify_signature(body, f"v1={good}", [])                        # no secret
    assert not verify_signature(body, f"v1={good}", [""])


def test_tampering_with_the_body_breaks_the_signature() -> None:
    body = encode(incident_event())
    header = sign(body, SECRET)
    assert not verify_signature(body.replace(b"PF9KMXH", b"PF9KMXI"), header, [SECRET])
    # Re-serialising the same JSON differently is tampering too: the raw bytes are signed.
    reformatted = json.dumps(json.loads(body), indent=2).encode()
    assert not verify_signature(reformatted, header, [SECRET])
    assert not verify_signature(body + b"\n", header, [SECRET])


def test_the_signature_covers_utf8_bytes() -> None:
    body = encode(incident_event(data__title="Datenbank ausgefallen – Größe 0 ✗"))
    assert verify_signature(body, sign(body, SECRET), [SECRET])


# ------------------------------------------------------------------------------- parsing


def test_an_incident_event_parses() -> None:
    event = parse_event(encode(incident_event()))
    assert event.id == "01DEN2LMZ9B0XDN61NFZA8WSJ7"
    assert event.event_type == "incident.triggered"
    assert event.occurred_at == NOW - timedelta(seconds=30)
    assert event.data is not None
    assert (event.data.id, event.data.number, event.data.service.id) == ("PGR0VU2", 2, "PF9KMXH")
    assert event.data.service.summary == "Billing DB"
    assert event.data.priority is not None and event.data.priority.summary == "P1"
    assert event.data.urgency == "high"


def test_an_incident_without_a_priority_parses() -> None:
    event = parse_event(encode(incident_event(data__priority=None)))
    assert event.data is not None and event.data.priority is None


@pytest.mark.parametrize(("body", "message"), [
    (b"not json", "body is not valid JSON"),
    (b"\xff\xfe{}", "body is not valid JSON"),
    (b"[1, 2]", "JSON object with an 'event' object"),
    (b'{"event": "x"}', "JSON object with an 'event' object"),
    (b'{"messages": []}', "JSON object with an 'event' object"),
])
def test_bodies_that_are_not_events_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(WebhookEventError, match=message):
        parse_event(body)


@pytest.mark.parametrize(("changes", "message"), [
    ({"id": _DELETE}, r"event\.id: Field required"),
    ({"id": ""}, r"event\.id: String should have at least 1 character"),
    ({"event_type": _DELETE}, r"event\.event_type: Field required"),
    ({"occurred_at": "2026-03-01T11:59:30"}, r"event\.occurred_at: Input should have timezone"),
    ({"occurred_at": "yesterday"}, r"event\.occurred_at: Input should be a valid datetime"),
    ({"data": None}, r"event\.data: an incident\.triggered event needs the incident"),
    ({"data": [1]}, r"event\.data must be an object"),
    ({"data__id": _DELETE}, r"event\.data\.id: Field required"),
    ({"data__title": _DELETE}, r"event\.data\.title: Field required"),
    ({"data__service": _DELETE}, r"event\.data\.service: Field required"),
    ({"data__service": {"summary": "x"}}, r"event\.data\.service\.id: Field required"),
    ({"data__service": {"id": "P1"}}, r"event\.data\.service\.summary: Field required"),
    ({"data__priority": {"id": "X"}}, r"event\.data\.priority\.summary: Field required"),
    ({"data__urgency": "urgent"}, r"event\.data\.urgency: Input should be 'high' or 'low'"),
    ({"data__type": "incident_note"}, r"event\.data\.type: an incident\.triggered event carries"),
])
def test_malformed_events_name_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(WebhookEventError, match=message):
        parse_event(encode(incident_event(**changes)))


def test_error_messages_do_not_copy_the_input() -> None:
    secretish = "s3cr3t-looking-input-value"
    with pytest.raises(WebhookEventError) as info:
        parse_event(encode(incident_event(occurred_at=secretish)))
    assert secretish not in str(info.value)


def test_events_without_an_incident_parse_with_no_data() -> None:
    ping = {"event": {"id": "01PING", "event_type": "pagey.ping", "resource_type": "pagey",
                      "occurred_at": "2026-03-01T11:59:59Z", "agent": None, "client": None,
                      "data": {"message": "Hello from your friend Pagey!", "type": "ping"}}}
    event = parse_event(encode(ping))
    assert (event.event_type, event.data, event.data_type) == ("pagey.ping", None, "ping")
    note = incident_event(event_type="incident.annotated", data={
        "incident": {"id": "PGR0VU2", "type": "incident_reference"}, "id": "P2LA89X",
        "content": "restoring now", "type": "incident_note"})
    assert parse_event(encode(note)).data is None


# -------------------------------------------------------------------------------- rules


def rule(**fields: Any) -> dict[str, Any]:
    return {"deployment": "restore-probe/production", **fields}


def event_with(**changes: Any) -> PagerDutyEvent:
    return parse_event(encode(incident_event(**changes)))


def test_the_first_matching_rule_wins() -> None:
    config = make_config(rules=[
        rule(service_id="OTHER", deployment="a/never"),
        rule(priorities=["P1"], deployment="a/first"),
        rule(deployment="a/second"),
    ])
    found = match_rule(event_with(), config)
    assert found is not None and found.deployment == "a/first"
    p3 = match_rule(event_with(data__priority={"summary": "P3"}), config)
    assert p3 is not None and p3.deployment == "a/second"


@pytest.mark.parametrize(("fields", "matches"), [
    ({}, True),
    ({"event_types": ["incident.acknowledged"]}, False),
    ({"event_types": ["incident.acknowledged", "incident.triggered"]}, True),
    ({"service_id": "PF9KMXH"}, True),
    ({"service_id": "pf9kmxh"}, False),                      # ids are exact
    ({"service_name": "billing db"}, True),                  # names ignore case
    ({"service_name": "Billing"}, False),                    # ...but are whole names
    ({"title_contains": "DATABASE down"}, True),
    ({"title_contains": "disk full"}, False),
    ({"priorities": ["p1"]}, True),
    ({"priorities": ["P2", "P3"]}, False),
    ({"urgency": "high"}, True),
    ({"urgency": "low"}, False),
    ({"service_id": "PF9KMXH", "priorities": ["P1"], "urgency": "high",
      "title_contains": "primary"}, True),
    ({"service_id": "PF9KMXH", "priorities": ["P1"], "urgency": "low"}, False),
])
def test_every_condition_that_is_set_must_hold(fields: dict[str, Any], matches: bool) -> None:
    config = make_config(rules=[rule(**fields)])
    assert (match_rule(event_with(), config) is not None) is matches


def test_a_rule_with_priorities_never_matches_an_incident_without_one() -> None:
    config = make_config(rules=[rule(priorities=["P1"])])
    assert match_rule(event_with(data__priority=None), config) is None
    assert match_rule(event_with(data__priority=None), make_config(rules=[rule()])) is not None


def test_events_without_an_incident_match_no_rule() -> None:
    config = make_config(rules=[rule(event_types=["incident.annotated", "pagey.ping"])])
    note = event_with(event_type="incident.annotated", data={"type": "incident_note", "id": "N"})
    assert match_rule(note, config) is None


def test_run_parameters_put_the_incident_where_the_rule_says() -> None:
    flat = WebhookRule.model_validate(rule(parameters={"target": "production"}))
    assert flat.run_parameters(event_with()) == {"target": "production", "incident_id": "PGR0VU2"}
    nested = WebhookRule.model_validate(rule(
        parameters={"params": {"target": "production", "require_approval": True}},
        incident_parameter="params.incident_id"))
    params = nested.run_parameters(event_with())
    assert params == {"params": {"target": "production", "require_approval": True,
                                 "incident_id": "PGR0VU2"}}
    assert "incident_id" not in nested.parameters["params"]  # the rule is not mutated
    fresh = WebhookRule.model_validate(rule(incident_parameter="params.incident_id"))
    assert fresh.run_parameters(event_with()) == {"params": {"incident_id": "PGR0VU2"}}


# ------------------------------------------------------------------------------- config


def test_a_secret_pasted_into_secret_env_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as info:
        make_config(secret_env=SECRET)
    assert "NAME of an environment variable" in str(info.value)
    assert SECRET not in str(info.value)
    with pytest.raises(ValidationError):
        make_config(prefect_auth_env="admin:hunter2")
    with pytest.raises(ValidationError):
        make_config(extra_secret_envs=["OK_NAME", "not a name"])


@pytest.mark.parametrize("changes", [
    {"rules": []},
    {"rules": [rule(deployment="no-slash")]},
    {"rules": [rule(deployment="a/b/c")]},
    {"rules": [rule(event_types=[])]},
    {"rules": [rule(urgency="urgent")]},
    {"rules": [rule(unknown=1)]},
    {"rules": [rule(incident_parameter="params..id")]},
    {"rules": [rule(parameters={"params": "x"}, incident_parameter="params.incident_id")]},
    {"max_age_seconds": 0},
    {"max_body_bytes": 10},
    {"prefect_api_url": "prefect:4200/api"},
    {"secret": "x"},
])
def test_bad_config_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        make_config(**changes)


def test_defaults() -> None:
    config = WebhookConfig.model_validate({"secret_env": "S", "rules": [rule()]})
    assert (config.max_age_seconds, config.max_body_bytes) == (600, 256 * 1024)
    assert config.rules[0].event_types == ("incident.triggered",)
    assert config.rules[0].incident_parameter == "incident_id"
    with pytest.raises(ValidationError):
        config.max_age_seconds = 5  # type: ignore[misc]  # frozen


def test_secrets_and_prefect_are_resolved_from_the_environment() -> None:
    config = make_config(extra_secret_envs=["PD_OLD_SECRET"])
    assert config.resolve_secrets(ENV) == [SECRET, OLD_SECRET]
    with pytest.raises(ConfigError, match="PD_OLD_SECRET"):
        config.resolve_secrets({"PD_SECRET": SECRET})
    unset = make_config(prefect_api_url=None)
    with pytest.raises(ConfigError, match="PREFECT_API_URL"):
        unset.resolve_prefect({})
    assert unset.resolve_prefect({"PREFECT_API_URL": API}) == (API, None)
    assert unset.resolve_prefect({"PREFECT_API_URL": API, "PREFECT_API_KEY": "pnu_k"}) == (
        API, "pnu_k")
    assert unset.resolve_prefect({"PREFECT_API_URL": API, "PREFECT_API_AUTH_STRING": "a:b"}) == (
        API, "a:b")
    named = make_config(prefect_auth_env="RK_PREFECT_AUTH")
    assert named.resolve_prefect({"RK_PREFECT_AUTH": "admin:pw"}) == (API, "admin:pw")
    with pytest.raises(ConfigError, match="RK_PREFECT_AUTH"):
        named.resolve_prefect({"PREFECT_API_KEY": "pnu_ignored"})


# ----------------------------------------------------------------------------- freshness


@pytest.mark.parametrize(("offset", "problem"), [
    (timedelta(seconds=0), None),
    (timedelta(seconds=-600), None),                # exactly max age
    (timedelta(seconds=-601), "stale event: occurred_at is 601 s old"),
    (timedelta(hours=-3), "stale event"),
    (timedelta(seconds=60), None),                  # clock skew tolerated
    (timedelta(seconds=61), "event from the future"),
])
def test_freshness(offset: timedelta, problem: str | None) -> None:
    event = event_with(occurred_at=(NOW + offset).isoformat())
    found = freshness_problem(event, NOW, 600)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_freshness_compares_instants_across_time_zones() -> None:
    plus_two = (NOW - timedelta(seconds=30)).astimezone(timezone(timedelta(hours=2)))
    assert freshness_problem(event_with(occurred_at=plus_two.isoformat()), NOW, 600) is None


# ------------------------------------------------------------------- Prefect over a mock


FLOW_ID = "0b6c1f0e-5a3d-4e2b-9c1d-7e8f9a0b1c2d"


def run_id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


class FakePrefect:
    """Prefect's two endpoints (provider-apis.md §7.4) in an httpx.MockTransport, recording
    every request and answering 201 for a new idempotency key and 200 for a known one. The
    CSRF token endpoint answers as a server without CSRF protection (Prefect's default) and is
    not recorded."""

    def __init__(self, deployments: dict[str, str] | None = None) -> None:
        self.deployments = {"restore-probe/production": DEPLOYMENT_ID} if deployments is None \
            else deployments
        self.defaults: dict[str, Any] = {}  # the deployment's default parameters
        self.requests: list[httpx.Request] = []
        self.runs: dict[str, dict[str, Any]] = {}
        self.fail: Callable[[httpx.Request], httpx.Response | None] = lambda request: None

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/csrf-token":
            return httpx.Response(422, json={"detail": "CSRF protection is disabled."})
        self.requests.append(request)
        if (failure := self.fail(request)) is not None:
            return failure
        path = request.url.path
        if request.method == "GET" and path.startswith("/api/deployments/name/"):
            flow, deployment = path.removeprefix("/api/deployments/name/").split("/")
            key = f"{flow}/{deployment}"  # url.path is already unquoted
            if key not in self.deployments:
                return httpx.Response(404, json={"detail": "Deployment not found"})
            return httpx.Response(200, json={"id": self.deployments[key], "name": deployment,
                                             "flow_id": FLOW_ID, "parameters": self.defaults})
        if request.method == "POST" and path.endswith("/create_flow_run"):
            body = json.loads(request.content)
            deployment_id = path.split("/")[3]
            if deployment_id not in self.deployments.values():
                return httpx.Response(404, json={"detail": "Deployment not found"})
            key = body.get("idempotency_key")
            if key in self.runs:
                return httpx.Response(200, json=self.runs[key])
            run = {"id": run_id(len(self.runs) + 1), "flow_id": FLOW_ID,
                   "name": body.get("name") or "quick-fox",
                   "deployment_id": deployment_id, "parameters": body["parameters"],
                   "idempotency_key": key, "tags": body.get("tags", []),
                   "state_name": "Scheduled", "state_type": "SCHEDULED"}
            self.runs[key] = run
            return httpx.Response(201, json=run)
        return httpx.Response(404, json={"detail": "Not Found"})

    def client(self, credential: str | None = None) -> PrefectFlowRuns:
        transport = httpx.MockTransport(self.handler)
        return PrefectFlowRuns(API, credential=credential, transport=transport)


@pytest.fixture
def fake() -> FakePrefect:
    return FakePrefect()


def test_deployment_lookup_and_flow_run_creation(fake: FakePrefect) -> None:
    with fake.client() as prefect:
        assert prefect.deployment_id("restore-probe/production") == DEPLOYMENT_ID
        first = prefect.create_flow_run(DEPLOYMENT_ID, {"target": "x"}, idempotency_key="k1",
                                        tags=["restorekit"], name="run-name")
        again = prefect.create_flow_run(DEPLOYMENT_ID, {"target": "x"}, idempotency_key="k1")
    assert first.created and not again.created
    assert first.id == again.id == run_id(1)
    assert first.parameters == {"target": "x"} and first.idempotency_key == "k1"
    get, post = fake.requests[0], fake.requests[1]
    assert (get.method, get.url.path) == ("GET", "/api/deployments/name/restore-probe/production")
    assert (post.method, post.url.path) == ("POST", CREATE_PATH)
    sent = json.loads(post.content)
    assert {k: sent[k] for k in ("parameters", "tags", "idempotency_key", "name")} == {
        "parameters": {"target": "x"}, "tags": ["restorekit"], "idempotency_key": "k1",
        "name": "run-name"}
    assert sent["state"]["type"] == "SCHEDULED"
    assert "authorization" not in get.headers


def test_the_deployment_comes_with_its_default_parameters(fake: FakePrefect) -> None:
    fake.defaults = {"params": {"target": "production", "require_approval": True}}
    with fake.client() as prefect:
        found = prefect.deployment("restore-probe/production")
    assert (found.id, found.name) == (DEPLOYMENT_ID, "restore-probe/production")
    assert found.parameters == fake.defaults


def test_names_are_quoted_into_the_path(fake: FakePrefect) -> None:
    fake.deployments = {"restore probe/prod #1": DEPLOYMENT_ID}
    with fake.client() as prefect:
        assert prefect.deployment_id("restore probe/prod #1") == DEPLOYMENT_ID
    assert fake.requests[0].url.raw_path == b"/api/deployments/name/restore%20probe/prod%20%231"


@pytest.mark.parametrize(("credential", "header"), [
    ("admin:s3cret", "Basic " + base64.b64encode(b"admin:s3cret").decode()),
    ("pnu_abc123", "Bearer pnu_abc123"),
])
def test_credentials_become_basic_or_bearer(
    fake: FakePrefect, credential: str, header: str
) -> None:
    with fake.client(credential) as prefect:
        prefect.deployment_id("restore-probe/production")
        assert credential not in repr(prefect)
        assert header.split()[1] not in repr(prefect)
    assert fake.requests[0].headers["authorization"] == header


@pytest.mark.parametrize(("status", "body", "retryable", "message"), [
    (404, {"detail": "Deployment not found"}, False, "Prefect has no deployment"),
    (409, {"detail": "Error creating flow run: 'target' is a required property"}, False,
     "'target' is a required property"),
    (401, {"detail": "Unauthorized"}, False, "check the credential"),
    (422, {"exception_message": "Invalid request received."}, False, "Invalid request"),
    (429, {"detail": "slow down"}, True, "429"),
    (500, "Internal Server Error", True, "500"),
    (503, {"detail": "busy"}, True, "busy"),
])
def test_http_errors_map_onto_provider_error(
    fake: FakePrefect, status: int, body: Any, retryable: bool, message: str
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        headers = {"Retry-After": "7"} if status == 429 else {}
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    fake.fail = fail
    with fake.client() as prefect, pytest.raises(ProviderError, match=message) as info:
        prefect.create_flow_run(DEPLOYMENT_ID, {}, idempotency_key="k")
    error = info.value
    assert (error.provider, error.operation, error.status_code) == (
        "prefect", "create_flow_run", status)
    assert len(fake.requests) == 1  # Prefect's client does not retry here: PagerDuty does
    assert error.is_retryable is retryable
    assert error.retry_after == (7.0 if status == 429 else None)


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
def test_an_unreachable_prefect_is_retryable(fake: FakePrefect, exc: Exception) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc

    fake.fail = fail
    with fake.client() as prefect, pytest.raises(ProviderError, match="unreachable") as info:
        prefect.deployment_id("restore-probe/production")
    assert info.value.is_retryable and info.value.status_code is None


def test_a_password_in_the_api_url_stays_out_of_messages() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    prefect = PrefectFlowRuns("http://admin:pa55word@prefect.test:4200/api",
                              transport=httpx.MockTransport(down))
    with prefect, pytest.raises(ProviderError) as info:
        prefect.deployment_id("restore-probe/production")
    assert "pa55word" not in str(info.value) and "pa55word" not in repr(prefect)
    assert "prefect.test:4200/api" in str(info.value)


def test_a_success_without_an_id_is_an_error(fake: FakePrefect) -> None:
    fake.fail = lambda request: httpx.Response(200, text="<html>proxy login</html>")
    with fake.client() as prefect, pytest.raises(ProviderError, match="without a JSON object"):
        prefect.deployment_id("restore-probe/production")


# ------------------------------------------------------------------------------ the app


@pytest.fixture
def app_client(fake: FakePrefect) -> Iterator[TestClient]:
    app = create_app(make_config(extra_secret_envs=["PD_OLD_SECRET"]), prefect=fake.client(),
                     environ=ENV, clock=lambda: NOW)
    with TestClient(app) as client:
        yield client


def deliver(client: TestClient, body: bytes, signature: str | None = "sign",
            **headers: str) -> httpx.Response:
    if signature == "sign":
        signature = sign(body, SECRET)
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    return client.post("/webhooks/pagerduty", content=body,
                       headers={"Content-Type": "application/json", **headers})


def test_healthz(app_client: TestClient) -> None:
    response = app_client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_a_matching_event_creates_one_flow_run_and_a_retry_is_a_duplicate(
    app_client: TestClient, fake: FakePrefect
) -> None:
    body = encode(incident_event())
    first = deliver(app_client, body)
    assert first.status_code == 202
    assert first.json() == {
        "status": "created", "flow_run_id": run_id(1), "flow_run_name": "pagerduty-PGR0VU2",
        "deployment": "restore-probe/production",
        "idempotency_key": "pagerduty:01DEN2LMZ9B0XDN61NFZA8WSJ7",
        "event_id": "01DEN2LMZ9B0XDN61NFZA8WSJ7",
    }
    get, post = fake.requests
    assert (get.method, get.url.path) == ("GET", "/api/deployments/name/restore-probe/production")
    assert (post.method, post.url.path) == ("POST", CREATE_PATH)
    sent = json.loads(post.content)
    assert {k: sent[k] for k in ("parameters", "idempotency_key", "tags", "name")} == {
        "parameters": {"target": "production", "require_approval": True,
                       "incident_id": "PGR0VU2"},
        "idempotency_key": "pagerduty:01DEN2LMZ9B0XDN61NFZA8WSJ7",
        "tags": ["restorekit", "pagerduty", "pagerduty-incident:PGR0VU2"],
        "name": "pagerduty-PGR0VU2",
    }

    # PagerDuty retries (at-least-once delivery), signed with the old secret this time.
    again = deliver(app_client, body, sign(body, OLD_SECRET))
    assert again.status_code == 202
    assert again.json()["status"] == "duplicate"
    assert again.json()["flow_run_id"] == run_id(1)
    assert len(fake.runs) == 1


@pytest.mark.parametrize(("signature", "reason"), [
    (None, "missing X-PagerDuty-Signature header"),
    ("", "missing X-PagerDuty-Signature header"),
    ("v1=" + "0" * 64, "invalid signature"),
    ("garbage", "invalid signature"),
])
def test_unsigned_or_badly_signed_deliveries_create_nothing(
    app_client: TestClient, fake: FakePrefect, signature: str | None, reason: str
) -> None:
    response = deliver(app_client, encode(incident_event()), signature)
    assert response.status_code == 401
    assert response.json() == {"status": "rejected", "reason": reason}
    assert fake.requests == []


def test_a_tampered_body_is_refused(app_client: TestClient, fake: FakePrefect) -> None:
    body = encode(incident_event())
    tampered = body.replace(b'"P1"', b'"P2"')
    assert deliver(app_client, tampered, sign(body, SECRET)).status_code == 401
    assert fake.requests == []


def test_an_oversized_body_is_refused_before_the_signature_is_checked(
    fake: FakePrefect
) -> None:
    config = make_config(max_body_bytes=2048)
    app = create_app(config, prefect=fake.client(), environ=ENV, clock=lambda: NOW)
    big = encode(incident_event(data__title="x" * 4096))
    with TestClient(app) as client:
        response = deliver(client, big)
        assert response.status_code == 413
        assert response.json()["reason"] == "body larger than 2048 bytes"

        # Without Content-Length (chunked), the body is read no further than the limit.
        chunked = client.post("/webhooks/pagerduty", content=iter([big]),
                              headers={SIGNATURE_HEADER: sign(big, SECRET)})
        assert chunked.status_code == 413
        # a body under the limit still goes through
        small = encode(incident_event())
        assert len(small) < 2048
        assert deliver(client, small).json()["status"] == "created"
    assert len(fake.runs) == 1


def test_the_stream_is_read_no_further_than_the_limit(fake: FakePrefect) -> None:
    app = create_app(make_config(max_body_bytes=2048), prefect=fake.client(), environ=ENV,
                     clock=lambda: NOW)
    big = encode(incident_event(data__title="x" * 8192))
    chunks = [big[start:start + 512] for start in range(0, len(big), 512)]
    received: list[int] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if len(received) == len(chunks):
            return {"type": "http.disconnect"}
        received.append(len(chunks[len(received)]))
        return {"type": "http.request", "body": chunks[len(received) - 1],
                "more_body": len(received) < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/webhooks/pagerduty",
             "raw_path": b"/webhooks/pagerduty", "root_path": "", "query_string": b"",
             "server": ("testserver", 80), "client": ("pagerduty", 1234),
             "headers": [(b"x-pagerduty-signature", sign(big, SECRET).encode())]}
    anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 413
    assert sum(received) == 2048 + 512 and len(chunks) > 5   # stopped at the first chunk past
    assert fake.requests == []


@pytest.mark.parametrize(("offset", "reason"), [
    (timedelta(minutes=-11), "stale event"),
    (timedelta(minutes=5), "event from the future"),
])
def test_stale_and_future_events_are_refused(
    app_client: TestClient, fake: FakePrefect, offset: timedelta, reason: str
) -> None:
    body = encode(incident_event(occurred_at=(NOW + offset).isoformat()))
    response = deliver(app_client, body)
    assert response.status_code == 400
    assert response.json()["status"] == "rejected"
    assert reason in response.json()["reason"]
    assert fake.requests == []


def test_a_signed_but_malformed_event_is_refused(app_client: TestClient, fake: FakePrefect) -> None:
    response = deliver(app_client, encode(incident_event(occurred_at="2026-03-01T11:59:30")))
    assert response.status_code == 400
    assert "event.occurred_at" in response.json()["reason"]
    assert deliver(app_client, b"{not json").status_code == 400
    assert fake.requests == []


@pytest.mark.parametrize("changes", [
    {"data__priority": {"summary": "P4"}},
    {"data__service": {"id": "POTHER", "summary": "Other"}},
    {"event_type": "incident.resolved"},
])
def test_events_matching_no_rule_are_ignored(
    app_client: TestClient, fake: FakePrefect, changes: dict[str, Any]
) -> None:
    response = deliver(app_client, encode(incident_event(**changes)))
    assert response.status_code == 202
    assert response.json()["status"] == "ignored"
    assert fake.requests == []


def test_a_ping_is_ignored(app_client: TestClient, fake: FakePrefect) -> None:
    ping = {"event": {"id": "01PING", "event_type": "pagey.ping", "resource_type": "pagey",
                      "occurred_at": NOW.isoformat(), "agent": None, "client": None,
                      "data": {"message": "Hello from your friend Pagey!", "type": "ping"}}}
    response = deliver(app_client, encode(ping))
    assert (response.status_code, response.json()["status"]) == (202, "ignored")
    assert fake.requests == []


def test_the_incident_is_deep_merged_into_a_scenario_deployment_s_params(
    fake: FakePrefect
) -> None:
    # What `restorekit deploy` registers: one model parameter with the target's defaults.
    fake.defaults = {"params": {"target": "production", "config": "/etc/restorekit.toml",
                                "require_approval": True}}
    config = make_config(rules=[rule(incident_parameter="params.incident_id",
                                     parameters={"params": {"restore_point": "latest"}})])
    app = create_app(config, prefect=fake.client(), environ=ENV, clock=lambda: NOW)
    with TestClient(app) as client:
        assert deliver(client, encode(incident_event())).json()["status"] == "created"
    assert json.loads(fake.requests[-1].content)["parameters"] == {"params": {
        "target": "production", "config": "/etc/restorekit.toml", "require_approval": True,
        "restore_point": "latest", "incident_id": "PGR0VU2"}}


def test_merge_parameters() -> None:
    defaults = {"params": {"target": "prod", "require_approval": True, "tables": ["a"]},
                "flag": 1, "var": {"__prefect_kind": "workspace_variable", "variable_name": "v"}}
    merged = merge_parameters(defaults, {"params": {"tables": ["b"], "incident_id": "P1"},
                                         "flag": {"x": 1}, "var": {"value": 2}, "new": None})
    assert merged == {"params": {"target": "prod", "require_approval": True, "tables": ["b"],
                                 "incident_id": "P1"},
                      "flag": {"x": 1}, "var": {"value": 2}, "new": None}
    assert defaults["params"] == {"target": "prod", "require_approval": True, "tables": ["a"]}
    assert merge_parameters({}, {}) == {}


def test_prefect_unreachable_is_503_so_pagerduty_retries(
    app_client: TestClient, fake: FakePrefect
) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    fake.fail = down
    body = encode(incident_event())
    response = deliver(app_client, body)
    assert response.status_code == 503
    assert response.json()["retryable"] is True
    fake.fail = lambda request: None                  # Prefect is back; PagerDuty retries
    assert deliver(app_client, body).json()["status"] == "created"
    assert len(fake.runs) == 1


def test_an_unknown_deployment_is_502_and_names_it(fake: FakePrefect) -> None:
    fake.deployments = {}
    app = create_app(make_config(), prefect=fake.client(), environ=ENV, clock=lambda: NOW)
    with TestClient(app) as client:
        response = deliver(client, encode(incident_event()))
    assert response.status_code == 502
    assert response.json()["retryable"] is False
    assert "restore-probe/production" in response.json()["reason"]


def test_only_post_is_allowed(app_client: TestClient) -> None:
    assert app_client.get("/webhooks/pagerduty").status_code == 405


def test_the_app_refuses_to_start_without_its_secret(fake: FakePrefect) -> None:
    with pytest.raises(ConfigError, match="PD_SECRET"):
        create_app(make_config(), prefect=fake.client(), environ={})
    with pytest.raises(ConfigError, match="PREFECT_API_URL"):
        create_app(make_config(prefect_api_url=None), environ=ENV)


def test_the_app_builds_its_own_client_from_the_environment() -> None:
    config = make_config(prefect_api_url=None, prefect_auth_env="RK_PREFECT_AUTH")
    app = create_app(config, environ={**ENV, "PREFECT_API_URL": API, "RK_PREFECT_AUTH": "u:p"})
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200


def test_nothing_secret_reaches_the_logs(
    fake: FakePrefect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    credential = "admin:pr3fect-pa55"
    app = create_app(make_config(), prefect=fake.client(credential), environ=ENV,
                     clock=lambda: NOW)
    body = encode(incident_event())
    signature = sign(body, SECRET)
    with TestClient(app) as client:
        deliver(client, body, signature)
        deliver(client, body, "v1=" + "a" * 64)
        deliver(client, encode(incident_event(occurred_at="bad")))
        fake.fail = lambda request: httpx.Response(401, json={"detail": "Unauthorized"})
        deliver(client, encode(incident_event(id="other")))
    text = caplog.text
    basic = base64.b64encode(credential.encode()).decode()
    for secret in (SECRET, OLD_SECRET, signature, signature[3:], credential, basic, "a" * 64):
        assert secret not in text
    assert "flow run" in text and "invalid signature" in text

"""The PagerDuty webhook against a REAL Prefect server (``prefect_server``): a signed
incident.triggered creates exactly one flow run of the deployment, with the expected parameters
and idempotency key. A redelivery is a duplicate, and bad or missing signatures create nothing.
For a scenario-shaped deployment (one ``params`` model), the incident id lands inside ``params``
next to the deployment's defaults. Prefect's own 404/409 come back as 502 and an unreachable
Prefect as 503.

The deployment has no work pool, so no worker is needed: its runs stay Scheduled."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fixtures.prefect import sent_until_not_busy
from prefect import flow, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort
from pydantic import BaseModel

from restorekit.webhook import SIGNATURE_HEADER, WebhookConfig, create_app

with warnings.catch_warnings():
    # Starlette 1.10's TestClient prefers the httpx2 fork and warns when it falls back to httpx
    # (what Prefect installs); it works the same, and pytest turns warnings into errors here.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", UserWarning)
    from starlette.testclient import TestClient

SECRET = "integration-subscription-secret/+K9"
SERVICE = "PDBPROD"


@flow(name="restore-probe")
def restore_probe(target: str, incident_id: str | None = None,
                  require_approval: bool = True) -> str:
    """A stand-in for a restore flow: only its parameters matter here (it never runs)."""
    return f"{target} {incident_id} {require_approval}"


class ProbeParams(BaseModel):
    """Shaped like flows._common.ScenarioParams: one model parameter, as the scenarios take."""

    target: str
    incident_id: str | None = None
    require_approval: bool = True
    config: str | None = None


@flow(name="restore-probe-model")
def restore_probe_model(params: ProbeParams) -> str:
    return params.target


@dataclass(frozen=True)
class Deployment:
    id: uuid.UUID
    name: str  # "restore-probe/<deployment>"


def register(flow_obj: Any, parameters: dict[str, Any]) -> Deployment:
    name = f"production-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        deployment_id = client.create_deployment(
            flow_id=client.create_flow(flow_obj),
            name=name,
            parameters=parameters,
            parameter_openapi_schema=flow_obj.parameters.model_dump_for_openapi(),
            enforce_parameter_schema=True,  # so that Prefect answers 409 to bad parameters
        )
    return Deployment(deployment_id, f"{flow_obj.name}/{name}")


@pytest.fixture(scope="module")
def deployment(prefect_server: str) -> Deployment:
    return register(restore_probe, {"require_approval": True})


@pytest.fixture(scope="module")
def model_deployment(prefect_server: str) -> Deployment:
    # What `restorekit deploy` registers for a scenario: the whole model as one default.
    return register(restore_probe_model, {"params": {
        "target": "production", "config": "/etc/restorekit/restorekit.toml",
        "require_approval": True}})


def runs_of(deployment: Deployment) -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            # The sync client sends limit/sort as null when they are left out (422).
            sort=FlowRunSort.ID_DESC, limit=200,
        )


def config_for(api_url: str, deployment: Deployment,
               model_deployment: Deployment | None = None) -> WebhookConfig:
    return WebhookConfig.model_validate({
        "secret_env": "PD_WEBHOOK_SECRET",
        "prefect_api_url": api_url,
        "prefect_timeout_seconds": 10,
        "rules": [
            {"service_id": SERVICE, "priorities": ["P1", "P2"], "deployment": deployment.name,
             "parameters": {"target": "production"}, "tags": ["db-restore"]},
            # The flow requires `target`: Prefect's schema check refuses the run (409).
            {"service_id": "PNOTARGET", "deployment": deployment.name,
             "parameters": {"require_approval": False}},
            {"service_id": "PNODEPLOY", "deployment": "restore-probe/no-such-deployment"},
            {"service_id": "PMODEL",
             "deployment": (model_deployment or deployment).name,
             "incident_parameter": "params.incident_id"},
        ],
    })


@pytest.fixture
def app(prefect_server: str, deployment: Deployment,
        model_deployment: Deployment) -> Iterator[TestClient]:
    application = create_app(config_for(prefect_server, deployment, model_deployment),
                             environ={"PD_WEBHOOK_SECRET": SECRET})
    with TestClient(application) as client:
        yield client


def delivery(service: str = SERVICE) -> tuple[str, str, bytes]:
    """(event id, incident id, body) of a fresh incident.triggered delivery."""
    event_id = f"01{uuid.uuid4().hex[:24].upper()}"
    incident_id = f"Q{uuid.uuid4().hex[:6].upper()}"
    body = json.dumps({"event": {
        "id": event_id, "event_type": "incident.triggered", "resource_type": "incident",
        "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "agent": None, "client": {"name": "Datadog"},
        "data": {
            "id": incident_id, "type": "incident", "number": 42, "status": "triggered",
            "title": "Primary database unreachable", "urgency": "high",
            "service": {"id": service, "summary": "Billing DB", "type": "service_reference"},
            "priority": {"id": "PSO75BM", "summary": "P1", "type": "priority_reference"},
        },
    }}).encode()
    return event_id, incident_id, body


def post(client: TestClient, body: bytes, signature: str | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    return client.post("/webhooks/pagerduty", content=body, headers=headers)


def deliver(client: TestClient, body: bytes, signature: str) -> Any:
    """Post as PagerDuty does: the same delivery again after a retryable 503."""
    return sent_until_not_busy(
        lambda: post(client, body, signature),
        lambda r: r.status_code == 503 and bool(r.json().get("retryable")))


def sign(body: bytes, secret: str = SECRET) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_a_signed_incident_creates_exactly_one_flow_run(
    app: TestClient, deployment: Deployment
) -> None:
    event_id, incident_id, body = delivery()
    before = len(runs_of(deployment))

    first = deliver(app, body, sign(body))
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "created"
    assert first.json()["deployment"] == deployment.name
    runs = [r for r in runs_of(deployment) if r.idempotency_key == f"pagerduty:{event_id}"]
    assert len(runs) == 1 and len(runs_of(deployment)) == before + 1
    run = runs[0]
    assert str(run.id) == first.json()["flow_run_id"]
    assert run.parameters == {"target": "production", "require_approval": True,
                              "incident_id": incident_id}
    assert run.name == f"pagerduty-{incident_id}"
    assert {"restorekit", "pagerduty", f"pagerduty-incident:{incident_id}",
            "db-restore"} <= set(run.tags)
    assert run.state is not None and run.state.name == "Scheduled"

    # PagerDuty redelivers (at-least-once): Prefect returns the same run (200), nothing new.
    again = deliver(app, body, sign(body))
    assert again.status_code == 202
    assert again.json()["status"] == "duplicate"
    assert again.json()["flow_run_id"] == str(run.id)
    assert len(runs_of(deployment)) == before + 1

    # A badly signed copy, and an unsigned one, are refused and create nothing.
    forged = body.replace(b'"P1"', b'"P2"')
    assert post(app, forged, sign(body)).status_code == 401
    other_event, _, other = delivery()
    assert post(app, other, sign(other, "not-the-secret")).status_code == 401
    unsigned = post(app, other, None)
    assert unsigned.status_code == 401
    assert unsigned.json()["reason"] == f"missing {SIGNATURE_HEADER} header"
    assert len(runs_of(deployment)) == before + 1
    assert not [r for r in runs_of(deployment) if r.idempotency_key == f"pagerduty:{other_event}"]


def test_the_incident_id_lands_inside_a_scenario_s_params_and_keeps_its_defaults(
    app: TestClient, model_deployment: Deployment
) -> None:
    event_id, incident_id, body = delivery(service="PMODEL")
    response = deliver(app, body, sign(body))
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "created"
    (run,) = runs_of(model_deployment)
    assert run.idempotency_key == f"pagerduty:{event_id}"
    assert run.parameters == {"params": {
        "target": "production", "config": "/etc/restorekit/restorekit.toml",
        "require_approval": True, "incident_id": incident_id}}


def test_parameters_refused_by_the_deployment_schema_are_a_502(
    app: TestClient, deployment: Deployment
) -> None:
    before = len(runs_of(deployment))
    _, _, body = delivery(service="PNOTARGET")
    response = post(app, body, sign(body))
    assert response.status_code == 502, response.text
    assert response.json()["retryable"] is False
    assert "409" in response.json()["reason"] and "target" in response.json()["reason"]
    assert len(runs_of(deployment)) == before


def test_an_unknown_deployment_is_a_502(app: TestClient) -> None:
    _, _, body = delivery(service="PNODEPLOY")
    response = post(app, body, sign(body))
    assert response.status_code == 502, response.text
    assert "restore-probe/no-such-deployment" in response.json()["reason"]


def test_an_unreachable_prefect_is_a_503(deployment: Deployment) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    application = create_app(config_for(f"http://127.0.0.1:{port}/api", deployment),
                             environ={"PD_WEBHOOK_SECRET": SECRET})
    _, _, body = delivery()
    with TestClient(application) as client:
        response = post(client, body, sign(body))
    assert response.status_code == 503, response.text
    assert response.json()["retryable"] is True

"""The PagerDuty webhook under abuse, over real HTTP: the app runs in uvicorn on a loopback
port (``restorekit serve-webhook`` is the same ``create_app`` under ``uvicorn.run``) and starts
runs on a REAL Prefect server (``prefect_server``).

Every refused delivery creates no flow run, and nothing the endpoint answers or logs repeats
the subscription secret or a signature:

* unsigned, a garbage or all-zero signature, a signature made with a wrong secret, one made
  with a secret rotated out of the config, a body changed after signing: 401;
* a replay of a delivery that already started a run: 202 ``duplicate`` and still one run (the
  idempotency key ``pagerduty:<event id>``); a properly signed event whose ``occurred_at`` is
  too old, or too far in the future: 400;
* a body over ``max_body_bytes``: 413 without reading it, whether the Content-Length says so,
  or the body streams in chunks with no Content-Length (the answer comes while the sender is
  still far from done), or a Content-Length lies about the size;
* malformed JSON and JSON that is not an event, signed: 400;
* a Content-Type other than ``application/json`` (or none): 415.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import select
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import uvicorn
from fixtures.prefect import sent_until_not_busy
from prefect import flow, get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort

from restorekit.pg.cluster import free_port
from restorekit.webhook import SIGNATURE_HEADER, WEBHOOK_PATH, WebhookConfig, create_app

SECRET = "whsec-CANARY-" + uuid.uuid4().hex            # the current subscription secret
OLD_SECRET = "whsec-ROTATED-" + uuid.uuid4().hex       # rotated out: no longer configured
WRONG_SECRET = "whsec-WRONG-" + uuid.uuid4().hex
SERVICE = "PABUSE1"
LIMIT = 64 * 1024  # max_body_bytes for these tests


@flow(name="abuse-probe")
def abuse_probe(target: str, incident_id: str | None = None) -> str:
    """Stands in for a restore flow: its runs stay Scheduled (no work pool, no worker)."""
    return f"{target} {incident_id}"


def sign(body: bytes, secret: str = SECRET) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def event_body(*, occurred_at: datetime | None = None, event_id: str | None = None,
               title: str = "Primary database unreachable") -> tuple[str, bytes]:
    event_id = event_id or f"01{uuid.uuid4().hex[:24].upper()}"
    when = occurred_at or datetime.now(UTC)
    body = json.dumps({"event": {
        "id": event_id, "event_type": "incident.triggered", "resource_type": "incident",
        "occurred_at": when.isoformat().replace("+00:00", "Z"), "agent": None, "client": None,
        "data": {"id": f"Q{uuid.uuid4().hex[:6].upper()}", "type": "incident", "number": 7,
                 "status": "triggered", "title": title, "urgency": "high",
                 "service": {"id": SERVICE, "summary": "DB", "type": "service_reference"},
                 "priority": {"id": "PX", "summary": "P1", "type": "priority_reference"}},
    }}).encode()
    return event_id, body


# ---------------------------------------------------------------------------- the endpoint


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Endpoint:
    """The webhook app served by uvicorn on 127.0.0.1:port, and what was said on the wire."""

    port: int
    deployment_id: uuid.UUID
    client: SyncPrefectClient
    answers: list[Answer] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)

    def post(self, body: bytes, signature: str | None = "sign", *,
             content_type: str | None = "application/json") -> Answer:
        headers = {}
        if signature == "sign":
            signature = sign(body)
        if signature is not None:
            headers[SIGNATURE_HEADER] = signature
            self.signatures.append(signature)
        if content_type is not None:
            headers["Content-Type"] = content_type
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
                   f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(request)
            return self.read_answer(sock)

    def deliver(self, body: bytes, signature: str = "sign", *,
                content_type: str = "application/json") -> Answer:
        """Post as PagerDuty does: the same delivery again after a retryable 503."""
        return sent_until_not_busy(
            lambda: self.post(body, signature, content_type=content_type),
            lambda a: a.status == 503 and bool(a.json().get("retryable")))

    def read_answer(self, sock: socket.socket) -> Answer:
        data = b""
        while not _complete(data):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:  # the server closed with our body unread
                break
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:])}
        if headers.get("transfer-encoding") == "chunked":
            body = _dechunk(body)
        answer = Answer(status, headers, body)
        self.answers.append(answer)
        return answer

    def runs(self) -> list[FlowRun]:
        """The deployment's runs, read from the server (one client for the module: a new one
        per call cost a connection and a version check each time)."""
        return self.client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[self.deployment_id])),
            sort=FlowRunSort.ID_DESC, limit=200)


def _complete(data: bytes) -> bool:
    """True once a response with a Content-Length has arrived whole."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


@pytest.fixture(scope="module")
def endpoint(prefect_server: str) -> Iterator[Endpoint]:
    name = f"abuse-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        deployment_id = client.create_deployment(
            flow_id=client.create_flow(abuse_probe), name=name,
            parameter_openapi_schema=abuse_probe.parameters.model_dump_for_openapi(),
        )
    config = WebhookConfig.model_validate({
        "secret_env": "RK_ABUSE_SECRET",
        "prefect_api_url": prefect_server,
        "prefect_timeout_seconds": 10,
        "max_age_seconds": 600,
        "max_body_bytes": LIMIT,
        "rules": [{"service_id": SERVICE, "deployment": f"abuse-probe/{name}",
                   "parameters": {"target": "production"}}],
    })
    # OLD_SECRET is what PagerDuty signed with before the rotation: no longer configured.
    app = create_app(config, environ={"RK_ABUSE_SECRET": SECRET})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        threading.Event().wait(0.05)
    try:
        with get_client(sync_client=True) as client:
            yield Endpoint(port=port, deployment_id=deployment_id, client=client)
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


def assert_nothing_echoed(endpoint: Endpoint, caplog: pytest.LogCaptureFixture) -> None:
    """No answer (status line, headers, body) and no log line repeats a secret or signature."""
    spoken = [a.body.decode("utf-8", "replace") + json.dumps(a.headers) for a in endpoint.answers]
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    secrets = [SECRET, OLD_SECRET, WRONG_SECRET]
    for signature in endpoint.signatures:
        values = [v.partition("=")[2] for v in signature.split(",")]
        secrets.extend(s for s in (signature, *values) if len(s) >= 16)  # not "", "garbage"
    for text in (*spoken, logged):
        for secret in secrets:
            assert secret not in text


# ---------------------------------------------------------------------------- signatures


def test_unsigned_and_badly_signed_deliveries_are_401_and_start_nothing(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    before = len(endpoint.runs())
    event_id, body = event_body()
    cases = {
        "unsigned": None,
        "empty": "",
        "garbage": "garbage",
        "all zero": "v1=" + "0" * 64,
        "wrong secret": sign(body, WRONG_SECRET),
        "rotated-out secret": sign(body, OLD_SECRET),
        "another version": "v0=" + sign(body)[3:],
        "truncated": sign(body)[:-2],
    }
    for name, signature in cases.items():
        answer = endpoint.post(body, signature)
        assert answer.status == 401, name
        assert answer.json()["status"] == "rejected", name
    assert endpoint.answers[-8].json()["reason"] == f"missing {SIGNATURE_HEADER} header"
    # The body changed after PagerDuty signed it (an attacker raising the priority).
    tampered = body.replace(b'"P1"', b'"P2"')
    assert endpoint.post(tampered, sign(body)).status == 401
    # The same bytes with a replaced event id (to dodge the idempotency key) are not signed.
    _, other = event_body(event_id=event_id + "X")
    assert endpoint.post(other, sign(body)).status == 401
    assert len(endpoint.runs()) == before
    assert "invalid signature" in caplog.text
    assert_nothing_echoed(endpoint, caplog)


# ---------------------------------------------------------------------------- replays


def test_a_replayed_delivery_starts_no_second_run(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    before = len(endpoint.runs())
    event_id, body = event_body()
    signature = sign(body)
    first = endpoint.deliver(body, signature)
    assert first.status == 202 and first.json()["status"] == "created", first.body
    for _ in range(3):  # a captured delivery sent again, byte for byte
        again = endpoint.deliver(body, signature)
        assert again.status == 202 and again.json()["status"] == "duplicate"
        assert again.json()["flow_run_id"] == first.json()["flow_run_id"]
    runs = endpoint.runs()
    assert len(runs) == before + 1
    assert [r.idempotency_key for r in runs if r.idempotency_key == f"pagerduty:{event_id}"] == [
        f"pagerduty:{event_id}"]
    assert_nothing_echoed(endpoint, caplog)


@pytest.mark.parametrize(("offset", "reason"), [
    (timedelta(minutes=-11), "stale event"),
    (timedelta(days=-30), "stale event"),
    (timedelta(minutes=5), "event from the future"),
])
def test_an_old_or_future_event_is_refused_even_when_signed(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture, offset: timedelta, reason: str
) -> None:
    before = len(endpoint.runs())
    _, body = event_body(occurred_at=datetime.now(UTC) + offset)
    answer = endpoint.post(body)
    assert answer.status == 400
    assert reason in answer.json()["reason"]
    assert len(endpoint.runs()) == before
    assert_nothing_echoed(endpoint, caplog)


# ---------------------------------------------------------------------------- size


def test_a_declared_oversized_body_is_413_before_any_of_it_is_sent(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    before = len(endpoint.runs())
    signature = "v1=" + "1" * 64
    endpoint.signatures.append(signature)
    head = (f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\n{SIGNATURE_HEADER}: {signature}\r\n"
            f"Content-Length: {100 * 1024 * 1024}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=30) as sock:
        sock.sendall(head)          # the headers only: not one byte of the 100 MiB body
        answer = endpoint.read_answer(sock)
    assert answer.status == 413
    assert answer.headers["connection"] == "close"
    assert answer.json() == {"status": "rejected", "reason": f"body larger than {LIMIT} bytes"}
    assert len(endpoint.runs()) == before
    assert_nothing_echoed(endpoint, caplog)


def test_a_streamed_oversized_body_is_413_long_before_it_ends(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    """Chunked, no Content-Length: the server reads just past the limit and answers while
    the sender still has most of 64 MiB to go."""
    before = len(endpoint.runs())
    total = 64 * 1024 * 1024
    chunk = b"x" * 16384
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    _, valid = event_body()
    signature = sign(valid)  # a real signature (of another body): size is checked first
    endpoint.signatures.append(signature)
    sent = 0
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=30) as sock:
        sock.sendall((f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Content-Type: application/json\r\n{SIGNATURE_HEADER}: {signature}\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n").encode())
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break               # the server has answered
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        answer = endpoint.read_answer(sock)  # to EOF: the server closes the connection
    assert answer.status == 413
    assert answer.headers["connection"] == "close"  # it does not drain the rest either
    assert sent < total / 4, f"sent {sent} of {total} bytes before the answer"
    assert len(endpoint.runs()) == before
    assert_nothing_echoed(endpoint, caplog)


def test_a_lying_content_length_gets_nothing_through(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    """Content-Length says 200 bytes, a signed 1 MiB body follows: the server takes the 200
    bytes as the body (whose signature does not match) and never acts on the rest."""
    before = len(endpoint.runs())
    _, body = event_body(title="y" * (1024 * 1024))
    signature = sign(body)
    endpoint.signatures.append(signature)
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=30) as sock:
        sock.sendall((f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Content-Type: application/json\r\n{SIGNATURE_HEADER}: {signature}\r\n"
                      "Content-Length: 200\r\n\r\n").encode())
        try:
            sock.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close before the rest arrives
        answer = endpoint.read_answer(sock)
    assert answer.status in (400, 401)
    assert len(endpoint.runs()) == before
    assert_nothing_echoed(endpoint, caplog)


def test_an_oversized_body_with_a_valid_signature_is_still_413(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    before = len(endpoint.runs())
    _, body = event_body(title="z" * LIMIT)
    answer = endpoint.post(body)
    assert answer.status == 413
    assert len(endpoint.runs()) == before
    assert_nothing_echoed(endpoint, caplog)


# ---------------------------------------------------------------------------- content


@pytest.mark.parametrize(("body", "reason"), [
    (b"{not json", "body is not valid JSON"),
    (b"\xff\xfe\x00{", "body is not valid JSON"),
    (b"", "body is not valid JSON"),
    (b'["event"]', "JSON object with an 'event' object"),
    (b'{"event": {"id": "E1"}}', "event.event_type: Field required"),
])
def test_malformed_signed_bodies_are_400(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture, body: bytes, reason: str
) -> None:
    before = len(endpoint.runs())
    answer = endpoint.post(body)
    assert answer.status == 400
    assert reason in answer.json()["reason"]
    assert len(endpoint.runs()) == before
    assert_nothing_echoed(endpoint, caplog)


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/jsonx", None,
])
def test_a_wrong_content_type_is_415(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture, content_type: str | None
) -> None:
    before = len(endpoint.runs())
    _, body = event_body()
    answer = endpoint.post(body, content_type=content_type)
    assert answer.status == 415
    assert "application/json" in answer.json()["reason"]
    assert len(endpoint.runs()) == before
    assert_nothing_echoed(endpoint, caplog)


def test_json_with_a_charset_parameter_is_accepted(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    before = len(endpoint.runs())
    _, body = event_body()
    answer = endpoint.deliver(body, content_type="Application/JSON; charset=utf-8")
    assert answer.status == 202 and answer.json()["status"] == "created", answer.body
    assert len(endpoint.runs()) == before + 1
    assert_nothing_echoed(endpoint, caplog)

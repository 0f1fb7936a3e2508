from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from restorekit.errors import ConfigError
from restorekit.health import HealthReport, check_health, display_url, parse_latency

URL = "https://app.example.com/api/health"

Responder = Callable[[httpx.Request], httpx.Response]


def json_response(status: int, body: Any, content_type: str = "application/json") -> Responder:
    return lambda request: httpx.Response(status, content=json.dumps(body).encode(),
                                          headers={"Content-Type": content_type})


def run(*responders: Responder, attempts: int = 5, url: str = URL,
        ) -> tuple[HealthReport, list[httpx.Request], list[float]]:
    """check_health over a MockTransport answering with ``responders`` in turn (last repeats)."""
    requests: list[httpx.Request] = []
    sleeps: list[float] = []
    queue = list(responders)

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        responder = queue.pop(0) if len(queue) > 1 else queue[0]
        return responder(request)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        report = check_health(url, attempts=attempts, interval=0.25, client=client,
                              sleep=sleeps.append)
    return report, requests, sleeps


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


RUNBOOK_OK = {"ok": True, "database": {"connected": True, "latency": "15ms"}}
RUNBOOK_DOWN = {"ok": False, "database": {"connected": False,
                                          "error": 'database "app" does not exist'}}


# -- the runbook's shape --------------------------------------------------------------------


def test_runbook_shape_healthy() -> None:
    report, requests, sleeps = run(json_response(200, RUNBOOK_OK))
    assert report.ok and report.connected is True
    assert report.status_code == 200 and report.latency_ms == 15.0
    assert report.attempts_used == 1 and sleeps == []
    assert requests[0].headers["Cache-Control"] == "no-cache"
    assert "application/health+json" in requests[0].headers["Accept"]


def test_runbook_shape_503_is_unhealthy_after_retries_with_the_app_error() -> None:
    report, requests, sleeps = run(json_response(503, RUNBOOK_DOWN), attempts=3)
    assert not report.ok
    assert (report.status_code, report.connected, report.attempts_used) == (503, False, 3)
    assert 'database "app" does not exist' in report.detail
    assert len(requests) == 3 and sleeps == [0.25, 0.25]


@pytest.mark.parametrize(
    ("status", "body", "why"),
    [
        (200, {"ok": True, "database": {"connected": False}}, "database not connected"),
        (200, {"ok": True}, "database.connected missing"),
        (200, {"ok": False, "database": {"connected": True}}, "ok is false"),
        (200, {"ok": "true", "database": {"connected": True}}, 'ok is "true"'),
        (204, {"ok": True, "database": {"connected": True}}, "HTTP 204"),
    ],
)
def test_runbook_shape_needs_200_ok_and_connected(status: int, body: Any, why: str) -> None:
    report, requests, _ = run(json_response(status, body))
    assert not report.ok and why in report.detail
    assert len(requests) == 1  # not a 5xx: retrying cannot help


def test_recovers_after_connection_errors_and_a_503() -> None:
    report, requests, sleeps = run(refused, refused, json_response(503, RUNBOOK_DOWN),
                                   json_response(200, RUNBOOK_OK))
    assert report.ok and report.attempts_used == 4 and len(sleeps) == 3


def test_no_answer_at_all() -> None:
    report, requests, _ = run(refused, attempts=2)
    assert not report.ok and report.status_code is None and report.connected is None
    assert report.attempts_used == 2 and "ConnectError" in report.detail


def test_timeouts_are_retried() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    report, _, _ = run(slow, json_response(200, RUNBOOK_OK))
    assert report.ok and report.attempts_used == 2


@pytest.mark.parametrize(
    ("status", "content", "content_type"),
    [
        (200, b"<html><body>It works!</body></html>", "text/html"),
        (502, b"Bad Gateway", "text/plain"),
        (200, b"", ""),
        (200, b"\xff\xfe not utf-8", "application/json"),
        (200, b"[1, 2]", "application/json"),
        (200, b'{"hello": "world"}', "application/json"),
    ],
)
def test_garbage_is_unhealthy_never_an_exception(status: int, content: bytes,
                                                 content_type: str) -> None:
    report, _, _ = run(lambda r: httpx.Response(status, content=content,
                                                headers={"Content-Type": content_type}),
                       attempts=2)
    assert not report.ok and report.status_code == status
    assert report.attempts_used == (2 if status >= 500 else 1)
    assert f"HTTP {status}" in report.detail


def test_non_json_detail_shows_a_redacted_snippet() -> None:
    body = b"error: could not connect to postgresql://app:s3cr3t-XYZ@db/app"
    report, _, _ = run(lambda r: httpx.Response(500, content=body), attempts=1)
    assert "could not connect" in report.detail and "s3cr3t-XYZ" not in report.detail


def test_bare_true_like_prefect_server() -> None:
    report, _, _ = run(json_response(200, True))
    assert report.ok and report.connected is None and report.latency_ms is None


# -- the IETF draft shape -------------------------------------------------------------------

IETF_PASS = {
    "status": "pass",
    "version": "1",
    "checks": {
        "postgres:responseTime": [{"componentType": "datastore", "observedValue": 12.5,
                                   "observedUnit": "ms", "status": "pass"}],
        "cpu:utilization": [{"componentType": "system", "observedValue": 85,
                             "observedUnit": "percent", "status": "warn"}],
    },
}


@pytest.mark.parametrize("status", ["pass", "ok", "UP"])
def test_ietf_pass(status: str) -> None:
    report, _, _ = run(json_response(200, {**IETF_PASS, "status": status},
                                     "application/health+json"))
    assert report.ok and not report.warning
    assert report.connected is True and report.latency_ms == 12.5


def test_ietf_pass_without_checks_and_3xx_is_allowed() -> None:
    report, _, _ = run(json_response(304, {"status": "pass"}))
    assert report.ok and report.connected is None and report.latency_ms is None


def test_ietf_warn_is_healthy_with_a_warning() -> None:
    body = {"status": "warn", "output": "replica lag high"}
    report, _, _ = run(json_response(200, body))
    assert report.ok and report.warning and "replica lag high" in report.detail


@pytest.mark.parametrize("status", ["fail", "error", "down"])
def test_ietf_fail(status: str) -> None:
    body = {"status": status, "output": "db unreachable",
            "checks": {"database:connections": [{"status": "fail", "output": "refused"}]}}
    report, requests, _ = run(json_response(503, body), attempts=2)
    assert not report.ok and report.connected is False
    assert "db unreachable" in report.detail and len(requests) == 2


def test_ietf_pass_with_an_error_status_code_is_unhealthy() -> None:
    report, _, _ = run(json_response(500, {"status": "pass"}), attempts=1)
    assert not report.ok and "must be 2xx/3xx" in report.detail


def test_ietf_pass_with_a_failing_datastore_is_unhealthy() -> None:
    body = {"status": "pass",
            "checks": {"db:responseTime": [{"observedValue": "0.25", "observedUnit": "s",
                                            "status": "fail", "output": "timeout"}]}}
    report, _, _ = run(json_response(200, body))
    assert not report.ok and report.connected is False
    assert report.latency_ms == 250.0 and "db:responseTime: timeout" in report.detail


def test_ietf_unknown_status() -> None:
    report, _, _ = run(json_response(200, {"status": "meh"}))
    assert not report.ok and "unknown status" in report.detail


# -- helpers and arguments ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ms"),
    [("15ms", 15.0), ("15 ms", 15.0), (" 2.5ms ", 2.5), ("1.2s", 1200.0), ("250us", 0.25),
     ("250µs", 0.25), ("7", 7.0), (7, 7.0), (3.5, 3.5), ("fast", None), (None, None),
     (True, None), ("12 parsecs", None)],
)
def test_parse_latency(value: Any, ms: float | None) -> None:
    assert parse_latency(value) == ms


def test_display_url_masks_passwords_and_query_values() -> None:
    shown = display_url("https://user:pw@app.example.com/api/health?token=abc&x=1")
    assert shown == "https://user:***@app.example.com/api/health?token=***&x=***"
    report, _, _ = run(json_response(200, RUNBOOK_OK),
                       url="https://app.example.com/api/health?x-vercel-protection-bypass=abc")
    assert "abc" not in report.url and report.ok


@pytest.mark.parametrize("url", ["ftp://example.com/health", "example.com/health", "/api/health"])
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        check_health(url, attempts=1)


def test_attempts_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        check_health(URL, attempts=0)


def test_report_is_frozen() -> None:
    report, _, _ = run(json_response(200, RUNBOOK_OK))
    with pytest.raises(ValueError):
        report.ok = False  # type: ignore[misc]

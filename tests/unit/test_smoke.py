"""Smoke checks against an httpx.MockTransport: what is sent, how answers are judged, and that
the secrets a check sends never reach its result."""

from __future__ import annotations

import json

import httpx
import pytest

from restorekit.config import settings_from_dict
from restorekit.errors import ConfigError
from restorekit.smoke import SmokeCheck, base_url_from, run_smoke_checks

PASSWORD = 'pa"ss w0rd&=/'


def login_check(**overrides: object) -> SmokeCheck:
    fields: dict[str, object] = {
        "name": "login", "method": "POST", "path": "/api/login",
        "json": {"email": "smoke@example.com", "password": "${SMOKE_PW}"},
        "expect_body_contains": '"ok": true'}
    return SmokeCheck.model_validate({**fields, **overrides})


def client(handler) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_a_login_is_sent_with_the_secret_resolved_and_judged() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text=json.dumps({"ok": True, "user": "smoke@example.com"}))

    report = run_smoke_checks([login_check()], "http://app.test:8080",
                              env={"SMOKE_PW": PASSWORD}, client=client(handler))
    assert report.ok
    (result,) = report.results
    assert result.name == "smoke:login" and result.status_code == 200 and result.critical
    assert str(seen[0].url) == "http://app.test:8080/api/login"
    assert seen[0].method == "POST"
    assert json.loads(seen[0].content) == {"email": "smoke@example.com", "password": PASSWORD}
    assert report.checks[0]["name"] == "smoke:login" and report.checks[0]["ok"] is True


def test_a_wrong_status_or_missing_text_fails_and_the_echoed_secret_is_masked() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        # A careless app echoes the request body in its error.
        return httpx.Response(401, text=json.dumps({"ok": False,
                                                   "got": json.loads(request.content)}))

    report = run_smoke_checks([login_check()], "http://app.test", env={"SMOKE_PW": PASSWORD},
                              client=client(handler))
    assert not report.ok
    (result,) = report.critical_failures
    assert "HTTP 401" in result.detail and "expected 200" in result.detail
    assert "body lacks" in result.detail
    dumped = report.model_dump_json()
    assert PASSWORD not in dumped and json.dumps(PASSWORD)[1:-1] not in dumped
    assert "***" in result.detail


def test_form_bodies_headers_and_several_statuses() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"Location": "/dashboard"})

    check = SmokeCheck(name="form", method="POST", url="https://forms.test/contact",
                       form={"message": "restorekit smoke"},
                       headers={"Authorization": "Bearer ${TOKEN}"}, expect_status=[200, 302])
    report = run_smoke_checks([check], None, env={"TOKEN": "tok-123"}, client=client(handler))
    assert report.ok
    assert seen[0].headers["authorization"] == "Bearer tok-123"
    assert seen[0].content == b"message=restorekit+smoke"


def test_body_env_sends_the_variable_as_the_body() -> None:
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(200, text="welcome")

    check = SmokeCheck(name="raw", method="POST", path="/login", body_env="LOGIN_BODY",
                       expect_body_contains=["welcome"])
    body = '{"user": "u", "password": "p4ss"}'
    report = run_smoke_checks([check], "http://app.test", env={"LOGIN_BODY": body},
                              client=client(handler))
    assert report.ok and seen == [body.encode()]


def test_no_answer_a_missing_variable_and_no_base_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    page = SmokeCheck(name="users", path="/api/users?limit=5", critical=False)
    report = run_smoke_checks([login_check(), page], "http://app.test", env={},
                              client=client(handler))
    login, users = report.results
    assert not login.ok and login.skipped and "SMOKE_PW is not set" in login.detail
    assert not users.ok and not users.critical and "no answer: ConnectError" in users.detail
    assert [r.name for r in report.critical_failures] == ["smoke:login"]
    assert "limit=***" in users.url  # query values may be tokens

    skipped = run_smoke_checks([page], None, env={}, client=client(handler))
    assert skipped.ok and skipped.results[0].skipped and "base_url" in skipped.results[0].detail


def test_base_url_is_the_health_urls_origin_without_credentials() -> None:
    assert base_url_from("http://u:pw@127.0.0.1:8080/api/health?x=1") == "http://127.0.0.1:8080"
    assert base_url_from(None) is None
    assert base_url_from("not a url") is None


@pytest.mark.parametrize("entry, message", [
    ({"name": "x"}, "exactly one of path or url"),
    ({"name": "x", "path": "api"}, "must start with '/'"),
    ({"name": "x", "url": "ftp://h/x"}, "http(s) URL"),
    ({"name": "x", "url": "https://u:secret@h/x"}, "holds a password"),
    ({"name": "x", "path": "/l", "json": {"password": "hunter2"}}, "literal value"),
    ({"name": "x", "path": "/l", "headers": {"Authorization": "Bearer abc"}}, "literal value"),
    ({"name": "x", "path": "/l", "json": {}, "form": {}}, "at most one of json, form"),
    ({"name": "x", "path": "/l", "expect_status": 700}, "HTTP statuses"),
    ({"name": "x", "path": "/l", "methd": "GET"}, "methd"),
])
def test_config_refuses_bad_entries(entry: dict[str, object], message: str) -> None:
    raw = {"targets": {"production": {"dsn": "host=h dbname=app", "repository": "file:///r",
                                      "smoke": [entry]}}}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings_from_dict(raw)


def test_config_error_never_repeats_a_literal_secret() -> None:
    raw = {"targets": {"production": {"dsn": "host=h dbname=app", "repository": "file:///r",
                                      "smoke": [{"name": "x", "path": "/l",
                                                 "json": {"password": "hunter2"}}]}}}
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(raw)
    assert "hunter2" not in str(caught.value)


def test_config_reads_smoke_entries_and_base_url() -> None:
    raw = {"targets": {"production": {
        "dsn": "host=h dbname=app", "repository": "file:///r",
        "app": {"base_url": "https://shop.example.com"},
        "smoke": [{"name": "login", "method": "post", "path": "/api/login",
                   "json": {"email": "e", "password": "${PW}"}, "expect_status": 200},
                  {"name": "page", "path": "/api/users?limit=5", "critical": False}]}}}
    target = settings_from_dict(raw).target("production")
    login, page = target.smoke
    assert login.method == "POST" and login.references() == ["PW"]
    assert page.method == "GET" and not page.critical and page.expect_status == (200,)
    assert target.app.base_url == "https://shop.example.com"

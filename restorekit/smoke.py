"""Smoke checks of the application's functions: the runbook's "test login, data display, forms,
file uploads, payments" after a restore, as HTTP requests with an expected answer.

Each ``[[targets.NAME.smoke]]`` entry of restorekit.toml is one :class:`SmokeCheck`: a method, a
``path`` (joined to the application's base URL: ``[targets.NAME.app] base_url``, else the origin
of its health URL) or an absolute ``url``, an optional body, and what the answer must be::

    [[targets.production.smoke]]
    name = "login"
    method = "POST"
    path = "/api/login"
    json = { email = "smoke-test@example.com", password = "${SMOKE_LOGIN_PASSWORD}" }
    expect_status = 200
    expect_body_contains = '"ok": true'

Secrets never sit in the config, in flow parameters or in a report: a body, form or header value
names an environment variable as ``${NAME}`` (or ``body_env`` names one holding the whole body),
resolved by :func:`run_smoke_checks` when it sends the request; every resolved value is masked
(``***``) in the results. A check that fails is a result, never an exception.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from restorekit.clients import http_client
from restorekit.pg.dsn import redact

if TYPE_CHECKING:  # httpx costs ~0.2 s to import; restorekit.config imports this module
    import httpx

log = logging.getLogger(__name__)

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Keys whose literal value would be a secret written into restorekit.toml.
_SECRET_KEY = re.compile(r"pass|secret|token|api[_-]?key|authorization|cookie|credential",
                         re.IGNORECASE)
_SNIPPET_CHARS = 120
_HEADERS = {"Cache-Control": "no-cache", "User-Agent": "restorekit-smoke"}


class SmokeCheck(BaseModel):
    """One ``[[targets.NAME.smoke]]`` entry: a request and the answer it must get.

    Attributes:
        name: Shown in the report's checks table as ``smoke:<name>``.
        method: The HTTP method.
        path: Joined to the application's base URL (give ``path`` or ``url``).
        url: An absolute http(s) URL, e.g. another service of the application.
        json: A JSON body; string values may hold ``${ENV}`` references.
        form: A form body (``application/x-www-form-urlencoded``); values may hold ``${ENV}``.
        body_env: The name of an environment variable holding the whole body (sent as is).
        headers: Extra headers; values may hold ``${ENV}`` (an ``Authorization`` must).
        expect_status: The status (or statuses) that pass.
        expect_body_contains: Strings the response body must contain, each of them.
        critical: A failure fails the step (scenario 1 then rolls the swap back).
        timeout: Seconds for the request.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(min_length=1, max_length=100)
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    path: str | None = None
    url: str | None = None
    json_body: Any = Field(default=None, alias="json")
    form: dict[str, str] | None = None
    body_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    expect_status: tuple[int, ...] = (200,)
    expect_body_contains: tuple[str, ...] = ()
    critical: bool = True
    timeout: float = Field(default=10.0, gt=0, le=300)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("expect_status", mode="before")
    @classmethod
    def _statuses(cls, value: Any) -> Any:
        return (value,) if isinstance(value, int) else value

    @field_validator("expect_status")
    @classmethod
    def _http_statuses(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(not 100 <= s <= 599 for s in value):
            raise ValueError(f"expect_status must be HTTP statuses (100-599), got {value!r}")
        return value

    @field_validator("expect_body_contains", mode="before")
    @classmethod
    def _contains(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> SmokeCheck:
        if (self.path is None) == (self.url is None):
            raise ValueError(f"smoke check {self.name!r}: give exactly one of path or url")
        if self.path is not None and not self.path.startswith("/"):
            raise ValueError(f"smoke check {self.name!r}: path must start with '/'")
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"smoke check {self.name!r}: url must be an http(s) URL")
            if parts.password:
                raise ValueError(f"smoke check {self.name!r}: url holds a password; send it "
                                 "in a header from an environment variable (${NAME})")
        bodies = [b for b in (self.json_body, self.form, self.body_env) if b is not None]
        if len(bodies) > 1:
            raise ValueError(f"smoke check {self.name!r}: give at most one of json, form, "
                             "body_env")
        if self.body_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*",
                                                          self.body_env):
            raise ValueError(f"smoke check {self.name!r}: body_env must name an environment "
                             "variable")
        for key, value in _string_items(
                {"json": self.json_body, "form": self.form, "headers": self.headers}):
            if _SECRET_KEY.search(key) and not _REFERENCE.search(value):
                raise ValueError(
                    f"smoke check {self.name!r}: {key} holds a literal value; restorekit.toml "
                    "holds no secrets: put it in an environment variable and write ${NAME}")
        return self

    def references(self) -> list[str]:
        """The environment variables this check reads when it runs."""
        names = [m.group(1) for _, v in _string_items(
            {"json": self.json_body, "form": self.form, "headers": self.headers})
            for m in _REFERENCE.finditer(v)]
        if self.body_env:
            names.append(self.body_env)
        return list(dict.fromkeys(names))


def _string_items(value: Any, key: str = "") -> list[tuple[str, str]]:
    """Every string in a nested JSON-like value, with the key it sits under."""
    if isinstance(value, str):
        return [(key, value)]
    if isinstance(value, Mapping):
        return [item for k, v in value.items() for item in _string_items(v, str(k))]
    if isinstance(value, list | tuple):
        return [item for v in value for item in _string_items(v, key)]
    return []


class SmokeResult(BaseModel):
    """The outcome of one :class:`SmokeCheck`. Holds no secret.

    Attributes:
        name: ``smoke:<check name>``.
        ok: The answer had an expected status and every expected string.
        critical: A failure of this check fails the step.
        detail: One line: status, time, and what was missing (secrets masked).
        url: The URL requested, query values masked.
        status_code: The HTTP status; None when nothing answered.
        elapsed_ms: The request's time.
        skipped: The check could not be sent (no base URL, a missing environment variable).
    """

    model_config = ConfigDict(frozen=True)
    name: str
    ok: bool
    critical: bool
    detail: str
    url: str = ""
    status_code: int | None = None
    elapsed_ms: float | None = None
    skipped: bool = False


class SmokeReport(BaseModel):
    """Every smoke check of one run, in config order."""

    model_config = ConfigDict(frozen=True)
    base_url: str | None
    results: tuple[SmokeResult, ...]

    @property
    def ok(self) -> bool:
        """No critical check failed."""
        return not self.critical_failures

    @property
    def critical_failures(self) -> tuple[SmokeResult, ...]:
        return tuple(r for r in self.results if r.critical and not r.ok)

    @property
    def checks(self) -> list[dict[str, Any]]:
        """The results as the incident report's checks table reads them."""
        return [r.model_dump() for r in self.results]


def base_url_from(health_url: str | None) -> str | None:
    """The origin (``scheme://host:port``) of the application's health URL."""
    if not health_url:
        return None
    parts = urlsplit(health_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.netloc.rpartition("@")[2]  # never carry credentials over to other requests
    return f"{parts.scheme}://{host}"


def run_smoke_checks(
    checks: Sequence[SmokeCheck],
    base_url: str | None,
    *,
    env: Mapping[str, str] | None = None,
    client: httpx.Client | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> SmokeReport:
    """Send every check once and judge the answers.

    Args:
        checks: The configured checks.
        base_url: What ``path`` is joined to; None when the application's address is unknown
            (checks with a ``path`` are then reported as skipped warnings).
        env: Where ``${NAME}`` and ``body_env`` are looked up (``os.environ`` when None).
        client: The HTTP client (tests pass one over ``httpx.MockTransport``); built when None,
            not following redirects (a login answering 302 is an answer to judge).
        clock: Measures each request.

    Returns:
        One result per check; a failure is a result, never an exception.
    """
    environ = os.environ if env is None else env
    owned = client is None
    http = client if client is not None else http_client(follow_redirects=False)
    try:
        results = tuple(_run_one(http, check, base_url, environ, clock) for check in checks)
    finally:
        if owned:
            http.close()
    return SmokeReport(base_url=base_url, results=results)


def _run_one(http: httpx.Client, check: SmokeCheck, base_url: str | None,
             env: Mapping[str, str], clock: Callable[[], float]) -> SmokeResult:
    import httpx

    from restorekit.health import display_url

    name = f"smoke:{check.name}"
    if check.url is not None:
        url = check.url
    elif base_url:
        url = urljoin(base_url.rstrip("/") + "/", check.path.lstrip("/") if check.path else "")
    else:
        return SmokeResult(name=name, ok=False, critical=False, skipped=True, detail=(
            "skipped: the application's address is unknown (set [targets.NAME.app] base_url "
            "or health_url)"))
    shown = display_url(url)
    missing = [n for n in check.references() if not env.get(n)]
    if missing:
        return SmokeResult(name=name, ok=False, critical=check.critical, skipped=True, url=shown,
                           detail=f"not sent: environment variable {', '.join(missing)} is not set")
    secrets = sorted({env[n] for n in check.references()}, key=len, reverse=True)

    def scrub(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
            text = text.replace(json.dumps(secret)[1:-1], "***")  # as a JSON body echoes it
        return redact(text)

    request: dict[str, Any] = {"headers": {**_HEADERS, **_resolve(check.headers, env)},
                               "timeout": check.timeout}
    if check.json_body is not None:
        request["json"] = _resolve(check.json_body, env)
    elif check.form is not None:
        request["data"] = _resolve(check.form, env)
    elif check.body_env is not None:
        request["content"] = env[check.body_env].encode()
        request["headers"].setdefault("Content-Type", "application/json")
    started = clock()
    try:
        response = http.request(check.method, url, **request)
    except httpx.RequestError as exc:
        elapsed = (clock() - started) * 1000
        detail = scrub(f"{check.method} {shown}: no answer: {type(exc).__name__}: {exc}")
        log.warning("smoke %s: %s", check.name, detail)
        return SmokeResult(name=name, ok=False, critical=check.critical, url=shown,
                           elapsed_ms=round(elapsed, 1), detail=detail)
    elapsed = (clock() - started) * 1000
    body = response.text
    problems = []
    if response.status_code not in check.expect_status:
        problems.append("expected " + " or ".join(map(str, check.expect_status)))
    absent = [s for s in check.expect_body_contains if s not in body]
    if absent:
        problems.append("body lacks " + ", ".join(repr(scrub(s)) for s in absent))
    head = f"{check.method} {shown}: HTTP {response.status_code} in {elapsed:.0f} ms"
    if problems:
        # Scrubbed before it is cut (a cut secret is no longer found) and before repr()
        # escapes it again.
        snippet = scrub(" ".join(body[:_SNIPPET_CHARS * 4].split()))[:_SNIPPET_CHARS]
        detail = scrub(f"{head}; {'; '.join(problems)}") + f"; body: {snippet!r}"
    else:
        detail = scrub(head)
    log.info("smoke %s: %s", check.name, detail)
    return SmokeResult(name=name, ok=not problems, critical=check.critical, url=shown,
                       status_code=response.status_code, elapsed_ms=round(elapsed, 1),
                       detail=detail)


def _resolve(value: Any, env: Mapping[str, str]) -> Any:
    """``value`` with every ``${NAME}`` in its strings replaced by the variable's value."""
    if isinstance(value, str):
        return _REFERENCE.sub(lambda m: env[m.group(1)], value)
    if isinstance(value, Mapping):
        return {k: _resolve(v, env) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_resolve(v, env) for v in value]
    return value

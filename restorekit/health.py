"""The application health check: the runbook's ``curl https://your-domain.com/api/health``.

Two response shapes are understood (provider-apis.md §6):

* The runbook's own: ``{"ok": true, "database": {"connected": true, "latency": "15ms"}}``.
  Healthy means HTTP 200 **and** ``ok`` is true **and** ``database.connected`` is true.
* The IETF draft "Health Check Response Format for HTTP APIs" (``application/health+json``):
  ``status`` ``pass``/``ok``/``up`` is healthy, ``warn`` healthy with a warning (both only with
  HTTP 2xx/3xx), ``fail``/``error``/``down`` unhealthy. Datastore entries in ``checks``
  (``componentType: datastore``, or a component named like a database) give ``connected``
  (a failing one makes the app unhealthy even under a top-level ``pass``: the database is what
  a restore is about) and the latency (``observedValue`` + ``observedUnit``).

A bare JSON ``true`` (Prefect's own ``/api/health``) counts as healthy without database details.

No health URL configured means the application's health is **not checked**, which is not a
pass: :meth:`HealthReport.not_checked` says so (``checked`` false, ``ok`` false, ``warning``
true), and the flows show it as a warning in the plan and the report, never as healthy.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, ConfigDict

from restorekit.clients import http_client
from restorekit.errors import ConfigError
from restorekit.pg.dsn import redact

log = logging.getLogger(__name__)

#: Why the application's health is not checked when a target has no health endpoint.
NO_HEALTH_URL = ("no health URL is configured ([app] health_url, or an application platform "
                 "that serves one), so nothing proves the application works on the database")

_PASS = frozenset({"pass", "ok", "up"})
_FAIL = frozenset({"fail", "error", "down"})
_WARN = "warn"
_LATENCY = re.compile(
    r"\s*(?P<value>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*"
    r"(?P<unit>ns|us|µs|ms|s|sec|secs|seconds?|milliseconds?)?\s*",
    re.IGNORECASE,
)
_TO_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "millisecond": 1.0,
          "milliseconds": 1.0, "s": 1000.0, "sec": 1000.0, "secs": 1000.0, "second": 1000.0,
          "seconds": 1000.0}
_DATASTORE_NAME = re.compile(r"postgres|database|sql|^db$|^pg$", re.IGNORECASE)
_SNIPPET_CHARS = 80
_HEADERS = {
    "Accept": "application/health+json, application/json;q=0.9, */*;q=0.1",
    # An edge cache (Vercel, a CDN) must not answer for the app we just redeployed.
    "Cache-Control": "no-cache",
}


class HealthReport(BaseModel):
    """The outcome of :func:`check_health`. Holds no secret (the URL is shown redacted).

    Attributes:
        url: The URL checked, with any password and query values masked.
        ok: The application is healthy and, where it says so, connected to its database.
        status_code: The HTTP status of the last answer; None when nothing answered.
        connected: ``database.connected`` (runbook) or the datastore checks (IETF); None when
            the response does not say.
        latency_ms: The database latency the application reported, in milliseconds.
        detail: A one-line explanation, e.g. the application's database error.
        attempts_used: Requests made, retries included.
        warning: The application answered ``warn``: healthy, but look at ``detail``; or,
            with ``checked`` false, nothing was checked.
        checked: A health endpoint was asked. False only from :meth:`not_checked`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    ok: bool
    status_code: int | None
    connected: bool | None
    latency_ms: float | None
    detail: str
    attempts_used: int
    warning: bool = False
    checked: bool = True

    @classmethod
    def not_checked(cls, reason: str) -> HealthReport:
        """The report when no health endpoint is configured: neither healthy nor a failure."""
        return cls(url="", ok=False, status_code=None, connected=None, latency_ms=None,
                   detail=f"application health not checked: {reason}", attempts_used=0,
                   warning=True, checked=False)


@dataclass(frozen=True, slots=True)
class _Verdict:
    ok: bool
    connected: bool | None
    latency_ms: float | None
    detail: str
    warning: bool = False


def check_health(
    url: str,
    *,
    timeout: float = 5,
    attempts: int = 10,
    interval: float = 0.5,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> HealthReport:
    """GET ``url`` until it is healthy, or until a retry cannot help or ``attempts`` run out.

    Connection errors, timeouts and 5xx answers are retried (a redeployed app is still coming
    up; a restored database still starting gives a 503); any other unhealthy answer is final.
    An unhealthy application is a result, never an exception.

    Args:
        url: The health endpoint (http or https).
        timeout: Seconds per request.
        attempts: Requests at most (at least 1).
        interval: Seconds between attempts.
        client: The HTTP client to use (tests pass one over ``httpx.MockTransport``); one that
            does not follow redirects is built when None, as 3xx is a valid health answer.
        sleep: Waits between attempts (tests pass a recorder).

    Returns:
        The report of the last attempt.

    Raises:
        ConfigError: ``url`` is not an http(s) URL, or ``attempts`` < 1.

    Example::

        report = check_health(app.health_url(), attempts=20)
        if not report.ok:
            raise VerificationFailed(...)   # report.detail says why
    """
    shown = display_url(url)
    if attempts < 1:
        raise ConfigError(f"attempts must be at least 1, got {attempts}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"not an http(s) URL: {shown}")
    owned = client is None
    http = client if client is not None else http_client(follow_redirects=False)
    try:
        for attempt in range(1, attempts + 1):
            report, retryable = _attempt(http, url, shown, timeout, attempt)
            if report.ok or not retryable or attempt == attempts:
                log.info("health %s: %s after %d attempt(s): %s", shown,
                         "ok" if report.ok else "unhealthy", attempt, report.detail)
                return report
            log.info("health %s: attempt %d/%d: %s; retrying in %g s", shown, attempt,
                     attempts, report.detail, interval)
            sleep(interval)
    finally:
        if owned:
            http.close()
    raise AssertionError("unreachable: the loop returns on its last attempt")


def _attempt(http: httpx.Client, url: str, shown: str, timeout: float,
             attempt: int) -> tuple[HealthReport, bool]:
    try:
        response = http.get(url, timeout=timeout, headers=_HEADERS)
    except httpx.RequestError as exc:
        detail = f"no answer: {type(exc).__name__}: {redact(str(exc)) or 'no details'}"
        return HealthReport(url=shown, ok=False, status_code=None, connected=None,
                            latency_ms=None, detail=detail, attempts_used=attempt), True
    verdict = assess(response.status_code, response.content, response.headers.get("content-type"))
    report = HealthReport(url=shown, ok=verdict.ok, status_code=response.status_code,
                          connected=verdict.connected, latency_ms=verdict.latency_ms,
                          detail=verdict.detail, attempts_used=attempt, warning=verdict.warning)
    return report, not verdict.ok and response.status_code >= 500


def assess(status_code: int, body: bytes, content_type: str | None = None) -> _Verdict:
    """Judge one health answer (no I/O)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        snippet = redact(" ".join(body[:_SNIPPET_CHARS * 4].decode("utf-8", "replace").split()))
        return _Verdict(False, None, None,
                        f"HTTP {status_code}: body is not JSON ({content_type or 'no content type'}"
                        f", {len(body)} bytes): {snippet[:_SNIPPET_CHARS]!r}")
    if isinstance(data, dict) and "ok" in data:
        return _assess_runbook(status_code, data)
    if isinstance(data, dict) and isinstance(data.get("status"), str):
        return _assess_ietf(status_code, data)
    if isinstance(data, bool):
        ok = data and 200 <= status_code < 300
        return _Verdict(ok, None, None, f"HTTP {status_code}: {json.dumps(data)} "
                                        "(no database details)")
    return _Verdict(False, None, None,
                    f"HTTP {status_code}: unrecognised health body (neither the runbook's "
                    "{\"ok\": ..., \"database\": ...} nor a health+json \"status\")")


def _assess_runbook(status_code: int, data: dict[str, Any]) -> _Verdict:
    database = data.get("database")
    database = database if isinstance(database, dict) else {}
    raw_connected = database.get("connected")
    connected = raw_connected if isinstance(raw_connected, bool) else None
    latency = parse_latency(database.get("latency"))
    ok = status_code == 200 and data.get("ok") is True and connected is True
    if ok:
        return _Verdict(True, True, latency, "HTTP 200: ok, database connected"
                        + (f" ({latency:g} ms)" if latency is not None else ""))
    reasons = []
    if status_code != 200:
        reasons.append(f"HTTP {status_code}")
    if data.get("ok") is not True:
        reasons.append(f"ok is {json.dumps(data.get('ok'))}")
    if connected is not True:
        reasons.append("database not connected" if connected is False
                       else "database.connected missing")
    error = database.get("error") or data.get("error")
    if error:
        reasons.append(redact(str(error)))
    return _Verdict(False, connected, latency, "; ".join(reasons))


def _assess_ietf(status_code: int, data: dict[str, Any]) -> _Verdict:
    status = str(data["status"]).lower()
    connected, latency, failing = _datastore_checks(data.get("checks"))
    success_code = 200 <= status_code < 400
    output = redact(str(data.get("output") or ""))
    head = f"HTTP {status_code}: status {status}"
    if status in _FAIL or status not in _PASS | {_WARN}:
        why = output or "; ".join(failing) or ("unknown status" if status not in _FAIL else "")
        return _Verdict(False, connected, latency, f"{head}: {why}" if why else head)
    if not success_code:
        return _Verdict(False, connected, latency,
                        f"{head} with an error HTTP status (pass/warn must be 2xx/3xx)")
    if connected is False:
        return _Verdict(False, False, latency, f"{head}, but a datastore check fails: "
                        + "; ".join(failing))
    if status == _WARN:
        notes = [str(n) for n in data.get("notes") or [] if n]
        why = output or "; ".join(notes) or "no details"
        return _Verdict(True, connected, latency, f"{head}: {redact(why)}", warning=True)
    return _Verdict(True, connected, latency, head)


def _datastore_checks(checks: Any) -> tuple[bool | None, float | None, list[str]]:
    """(connected, latency in ms, failing check descriptions) from an IETF ``checks`` object."""
    if not isinstance(checks, dict):
        return None, None, []
    statuses: list[str] = []
    latency: float | None = None
    failing: list[str] = []
    for name, entries in checks.items():
        component, _, measurement = str(name).rpartition(":")
        component = component or str(name)
        for entry in entries if isinstance(entries, list) else [entries]:
            if not isinstance(entry, dict):
                continue
            datastore = (entry.get("componentType") == "datastore"
                         or bool(_DATASTORE_NAME.search(component)))
            if not datastore:
                continue
            entry_status = str(entry.get("status", "")).lower()
            if entry_status:
                statuses.append(entry_status)
            if entry_status in _FAIL:
                failing.append(f"{name}: {redact(str(entry.get('output') or entry_status))}")
            if latency is None and (measurement == "responseTime" or entry.get("observedUnit")):
                value = entry.get("observedValue")
                unit = entry.get("observedUnit")
                latency = parse_latency(f"{value}{unit}" if unit and value is not None else value)
    if not statuses:
        return None, latency, failing
    return not any(s in _FAIL for s in statuses), latency, failing


def parse_latency(value: Any) -> float | None:
    """Milliseconds from ``"15ms"``, ``"1.2 s"``, ``"250us"`` or a bare number (taken as ms)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    match = _LATENCY.fullmatch(str(value))
    if not match:
        return None
    unit = (match.group("unit") or "ms").lower()
    return float(match.group("value")) * _TO_MS[unit]


def plan_lines(shown_url: str | None) -> list[str]:
    """The restore plan's line about the health check: none when an endpoint will be checked,
    else that the application's health will NOT be (and shows as a warning, not a pass)."""
    if shown_url is not None:
        return []
    return [f"Application health not checked: {NO_HEALTH_URL}. The report shows it as a "
            "warning, not a pass."]


def display_url(url: str) -> str:
    """``url`` with the password and every query value masked (both may be tokens)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparseable URL)"
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        query = urlencode([(key, "***") for key, _ in parse_qsl(query, keep_blank_values=True)],
                          safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

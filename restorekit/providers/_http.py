"""One HTTP call with a bounded retry policy: the loop the HTTP adapters (Neon, Supabase) share.

Shared here: the attempt loop; which failures are repeated in-process (a status any method may
repeat because the server did nothing, a status only an idempotent GET may repeat, a network
error that happened before the request was sent, or any network error on a GET); the
exponential backoff; reading ``Retry-After``-style headers; and never sleeping longer than the
policy's ``max_wait`` (a longer wait is left to the task-level retry).

Left to each adapter, through callbacks: its status sets, how long a given answer asks it to
wait, and how every failure becomes a :class:`~restorekit.errors.ProviderError`, so messages
carry the provider's own words. Nothing here logs a header, a body or a query string, so a
credential cannot leak through the retry log.
"""

from __future__ import annotations

import email.utils
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from restorekit.errors import ProviderError

#: Failures before anything reached the server: safe to repeat for every method.
UNSENT = (httpx.ConnectError, httpx.ConnectTimeout)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When one call is repeated in-process, and how long it waits in between.

    Args:
        max_attempts: Attempts per call, the first one included.
        retry_any: Statuses every method repeats (the server did nothing: 429, 423, ...).
        retry_get: Statuses only a GET repeats (a POST may have acted: 5xx).
        backoff_seconds: The first backoff (then doubled per attempt).
        max_wait: The longest single wait; the backoff is capped at it, and an answer asking
            for longer makes the call give up (retryable) instead of sleeping.
    """

    max_attempts: int
    retry_any: frozenset[int]
    retry_get: frozenset[int]
    backoff_seconds: float = 1.0
    max_wait: float = 60.0

    def backoff(self, attempt: int) -> float:
        """``backoff_seconds * 2**(attempt-1)``, capped at ``max_wait`` (attempt counts from 1)."""
        return float(min(self.backoff_seconds * 2 ** (attempt - 1), self.max_wait))

    def retries(self, method: str, status: int) -> bool:
        return status in self.retry_any or (method == "GET" and status in self.retry_get)


def send(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    policy: RetryPolicy,
    delay: Callable[[httpx.Response, int], float],
    network_error: Callable[[httpx.RequestError, bool], ProviderError],
    give_up: Callable[[httpx.Response, int, float], ProviderError],
    sleep: Callable[[float], None],
    log: logging.Logger,
    headers: Callable[[], dict[str, str]] | None = None,
    params: dict[str, Any] | None = None,
    json: Any = None,
) -> httpx.Response:
    """Send ``method path`` until it gets an answer the policy does not repeat, and return it.

    Every answer whose status the policy does not retry (successes, 4xx, a 5xx to a POST, ...)
    is returned as it is: the adapter decides what it means.

    Args:
        client: The adapter's client (base URL, auth and timeouts set).
        method, path: The request; ``params`` and ``json`` are passed through.
        policy: The adapter's retry policy.
        delay: ``(response, attempt)`` -> seconds to wait before repeating a retryable answer.
        network_error: ``(exc, repeatable)`` -> the error for a network failure that is not
            retried (any more); ``repeatable`` is whether a retry could not have done harm
            (a GET, or nothing was sent).
        give_up: ``(response, attempt, wait)`` -> the error for a retryable answer that is not
            repeated any more (attempts used up, or it asked for more than ``max_wait``).
        sleep: Injected ``time.sleep``.
        log: The adapter's logger (each retry is logged as a warning).
        headers: Called once per attempt for per-attempt headers (a fresh request id).

    Raises:
        ProviderError: whatever ``network_error`` or ``give_up`` returned.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            response = client.request(method, path, params=params, json=json,
                                      headers=headers() if headers else None)
        except httpx.RequestError as exc:
            # Nothing reached the server when connecting failed, so that is safe to repeat for
            # any method; after that, only a GET is repeated.
            repeatable = method == "GET" or isinstance(exc, UNSENT)
            if not repeatable or attempt >= policy.max_attempts:
                raise network_error(exc, repeatable) from exc
            wait = policy.backoff(attempt)
            reason = f"{type(exc).__name__}: {exc}"
        else:
            status = response.status_code
            if not policy.retries(method, status):
                return response
            wait = delay(response, attempt)
            if attempt >= policy.max_attempts or wait > policy.max_wait:
                raise give_up(response, attempt, wait)
            reason = f"answered {status} {response.reason_phrase}".rstrip()
        log.warning("%s %s %s; retrying in %.1f s (attempt %d of %d)", method, path, reason,
                    wait, attempt + 1, policy.max_attempts)
        sleep(wait)


def header_seconds(value: str | None, *, now: Callable[[], datetime],
                   epochs: bool = False) -> float | None:
    """Seconds to wait from a ``Retry-After``-style header, never negative.

    The header holds a number of seconds or an HTTP date (RFC 9110 §10.2.3). With ``epochs``,
    a number past 10**9 is a Unix time instead (some rate limiters' reset headers). None when
    the header is absent or unreadable.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max((when - now()).total_seconds(), 0.0)
    if not math.isfinite(number):
        return None
    if epochs and number > 1_000_000_000:
        number -= now().timestamp()
    return max(number, 0.0)


def sent_request_id(exc: httpx.RequestError, header: str = "X-Request-ID") -> str | None:
    """The request id a failed request carried (None when there was no request)."""
    try:
        return exc.request.headers.get(header)
    except RuntimeError:  # httpx raises it when the error has no request attached
        return None

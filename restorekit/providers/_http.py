"""The HTTP adapters' (Neon, Supabase) client and their one retry policy, on tenacity.

Who retries what (one layer per failure, so attempts never multiply):

* **This layer** retries what the server did not act on, or what is safe to repeat: a status
  in the policy's ``retry_any`` for every method (429, 423, 503: the server did nothing), a
  status in ``retry_get`` for a GET only (a 5xx to a POST may have acted), a failed connect for
  every method (nothing was sent), any other network error for a GET. The budget is bounded:
  ``max_attempts`` per call, exponential backoff from ``backoff_seconds``, and a server's own
  wait (``Retry-After``, or the adapter's rate-limit header) honoured up to ``max_wait``. A
  server asking for longer is not waited out here. When this layer gives up, the
  :class:`~restorekit.errors.ProviderError` it raises keeps ``retryable=True`` (the failure is
  transient) and has ``retry_spent=True``.
* **Prefect task retries** (``tasks._runtime.retry_if_transient``) leave errors with
  ``retry_spent`` alone: retrying the task would repeat the same calls that already used up
  their budget here, attempts times attempts. The task layer retries what this layer must not
  repeat blindly: a request whose connection failed after it was sent, where the adapter can
  look before it acts again (Neon raises it retryable: its next attempt finds the branch by
  name first; Supabase raises it not retryable, since a restore may have started), a 5xx to a
  DELETE or POST the adapter marks retryable, and failures outside HTTP (PostgreSQL still
  starting, a storage error).

Left to each adapter, through callbacks: how long a given answer asks it to wait (the default
reads ``Retry-After``), and how every failure becomes a ProviderError, so messages carry the
provider's own words. Nothing here logs a header, a body or a query string, so a credential
cannot leak through the retry log.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import tenacity
from pydantic import SecretStr

from restorekit.clients import http_client
from restorekit.errors import ConfigError, ProviderError

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

    def repeats(self, method: str, exc: BaseException) -> bool:
        """Whether a network error may be repeated: nothing was sent, or it was a GET."""
        return isinstance(exc, httpx.RequestError) and (method == "GET" or isinstance(exc, UNSENT))


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class HttpPlumbing:
    """How an HTTP adapter (Neon, Supabase) reaches its API and waits: the transport, injected
    time, and the retry budget. Not in restorekit.toml: the defaults serve production, and
    tests replace parts (a mock transport, a fake sleep and clock, fewer attempts).

    Args:
        transport: An httpx transport (tests: ``httpx.MockTransport``); None: the network.
        sleep: ``time.sleep``; every wait (retries, polls) goes through it.
        clock: A monotonic clock, for deadlines.
        now: The wall clock (UTC), for restore windows and ``Retry-After`` dates.
        max_attempts: Attempts per HTTP call, the first one included.
        max_retry_wait: The longest single wait between attempts (see :class:`RetryPolicy`).
        backoff_seconds: The first backoff when the server gives no wait (then doubled).
        request_timeout: Seconds per HTTP request.

    Raises:
        ConfigError: ``max_attempts`` is below 1.
    """

    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = _utc_now
    max_attempts: int = 5
    max_retry_wait: float = 60.0
    backoff_seconds: float = 1.0
    request_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")

    def policy(self, *, retry_any: frozenset[int], retry_get: frozenset[int]) -> RetryPolicy:
        """This budget over the adapter's own retryable statuses."""
        return RetryPolicy(max_attempts=self.max_attempts, retry_any=retry_any,
                           retry_get=retry_get, backoff_seconds=self.backoff_seconds,
                           max_wait=self.max_retry_wait)

    def client(self, base_url: str, token: SecretStr,
               headers: dict[str, str] | None = None) -> httpx.Client:
        """A JSON API client with a bearer token: what both management APIs take (§3, §4)."""
        return http_client(
            base_url=base_url, transport=self.transport, timeout=self.request_timeout,
            headers={"Authorization": f"Bearer {token.get_secret_value()}",
                     "Accept": "application/json", "User-Agent": "restorekit",
                     **(headers or {})},
        )


#: The network, real time and the default budget: what production runs with.
PRODUCTION_PLUMBING = HttpPlumbing()


def send(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    policy: RetryPolicy,
    network_error: Callable[[httpx.RequestError, bool], ProviderError],
    give_up: Callable[[httpx.Response, int, float], ProviderError],
    sleep: Callable[[float], None],
    log: logging.Logger,
    now: Callable[[], datetime] = _utc_now,
    delay: Callable[[httpx.Response, int], float] | None = None,
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
        network_error: ``(exc, repeatable)`` -> the error for a network failure that is not
            retried (any more); ``repeatable`` is whether a retry could not have done harm
            (a GET, or nothing was sent).
        give_up: ``(response, attempt, wait)`` -> the error for a retryable answer that is not
            repeated any more (attempts used up, or it asked for more than ``max_wait``).
        sleep: Injected ``time.sleep``.
        log: The adapter's logger (each retry is logged as a warning).
        now: The wall clock, for ``Retry-After`` given as a date.
        delay: ``(response, attempt)`` -> seconds to wait before repeating a retryable answer;
            default ``Retry-After``, else the policy's backoff.
        headers: Called once per attempt for per-attempt headers (a fresh request id).

    Raises:
        ProviderError: whatever ``network_error`` or ``give_up`` returned; ``retry_spent`` is
            set when the policy covered the failure (see the module docstring).
    """

    def default_delay(response: httpx.Response, attempt: int) -> float:
        hinted = header_seconds(response.headers.get("Retry-After"), now=now)
        return hinted if hinted is not None else policy.backoff(attempt)

    rules = _Rules(method, path, policy, network_error, give_up, log, delay or default_delay)
    retrying = tenacity.Retrying(retry=rules.retry, stop=rules.stop, wait=rules.wait,
                                 sleep=sleep, before_sleep=rules.before_sleep,
                                 retry_error_callback=rules.exhausted)

    def attempt() -> httpx.Response:
        return client.request(method, path, params=params, json=json,
                              headers=headers() if headers else None)

    try:
        response: httpx.Response = retrying(attempt)
    except httpx.RequestError as exc:  # one the policy does not repeat (sent, not a GET)
        raise network_error(exc, policy.repeats(method, exc)) from exc
    return response


@dataclass(frozen=True, slots=True)
class _Rules:
    """The tenacity callbacks of one :func:`send`: whether to repeat an outcome, how long to
    wait first, what to log, and what to raise when the policy is spent."""

    method: str
    path: str
    policy: RetryPolicy
    network_error: Callable[[httpx.RequestError, bool], ProviderError]
    give_up: Callable[[httpx.Response, int, float], ProviderError]
    log: logging.Logger
    delay: Callable[[httpx.Response, int], float]

    def wait(self, state: tenacity.RetryCallState) -> float:
        outcome = state.outcome
        assert outcome is not None
        if outcome.failed:
            return self.policy.backoff(state.attempt_number)
        return self.delay(outcome.result(), state.attempt_number)

    def retry(self, state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        assert outcome is not None
        exc = outcome.exception()  # None unless the attempt failed
        if exc is not None:
            return self.policy.repeats(self.method, exc)
        return self.policy.retries(self.method, outcome.result().status_code)

    def stop(self, state: tenacity.RetryCallState) -> bool:
        return (state.attempt_number >= self.policy.max_attempts
                or state.upcoming_sleep > self.policy.max_wait)

    def before_sleep(self, state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        assert outcome is not None and state.next_action is not None
        if outcome.failed:
            exc = outcome.exception()
            reason = f"{type(exc).__name__}: {exc}"
        else:
            response = outcome.result()
            reason = f"answered {response.status_code} {response.reason_phrase}".rstrip()
        self.log.warning("%s %s %s; retrying in %.1f s (attempt %d of %d)", self.method,
                         self.path, reason, state.next_action.sleep, state.attempt_number + 1,
                         self.policy.max_attempts)

    def exhausted(self, state: tenacity.RetryCallState) -> httpx.Response:
        outcome = state.outcome
        assert outcome is not None
        if outcome.failed:
            exc = outcome.exception()
            assert isinstance(exc, httpx.RequestError)
            error = self.network_error(exc, True)
            error.retry_spent = True
            raise error from exc
        error = self.give_up(outcome.result(), state.attempt_number, state.upcoming_sleep)
        error.retry_spent = True
        raise error


def header_seconds(value: str | None, *, now: Callable[[], datetime] = _utc_now,
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
        headers = exc.request.headers
    except RuntimeError:  # httpx raises it when the error has no request attached
        return None
    # Not headers.get(): httpx types its result Any; indexing is typed str (same value).
    return headers[header] if header in headers else None

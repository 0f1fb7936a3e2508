"""The HTTP side of :class:`SupabaseProvider`: construction, the one ``_call`` and its errors."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr

from restorekit.errors import (
    ConfigError,
    ProviderError,
)
from restorekit.providers._http import (
    PRODUCTION_PLUMBING,
    HttpPlumbing,
    RetryPolicy,
    header_seconds,
    send,
)
from restorekit.providers.supabase.settings import _REF, DEFAULT_BASE_URL

log = logging.getLogger(__name__)

#: The OAuth scope each call needs, named in 401/403 messages.
_SCOPES = {"backups": "database:read", "restore": "database:write", "project": "projects:read"}




class SupabaseClient:
    """The constructor and API plumbing of :class:`SupabaseProvider` (its docstring has the
    Args)."""

    kind: ClassVar[str] = "supabase"

    def __init__(
        self,
        *,
        project_ref: str,
        token: SecretStr | str,
        base_url: str = DEFAULT_BASE_URL,
        poll_interval: float = 5.0,
        timeout: float = 3600.0,
        start_timeout: float = 600.0,
        busy_timeout: float = 600.0,
        http: HttpPlumbing = PRODUCTION_PLUMBING,
        token_env: str = "",
        target_name: str = "",
    ) -> None:
        if not _REF.match(project_ref):
            raise ConfigError(f"Supabase project_ref {project_ref!r} must be 20 lower-case letters")
        secret = token if isinstance(token, SecretStr) else SecretStr(token)
        if not secret.get_secret_value():
            raise ConfigError("the Supabase access token is empty")
        if min(poll_interval, timeout, start_timeout, busy_timeout) <= 0:
            raise ConfigError("poll_interval and the Supabase timeouts must be positive")
        self.project_ref = project_ref
        self.base_url = base_url.rstrip("/")
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.busy_timeout = busy_timeout
        self.token_env = token_env
        self.target_name = target_name
        self.http = http
        self._pitr_enabled: bool | None = None
        self._client = http.client(self.base_url, secret)

    def __repr__(self) -> str:
        return f"SupabaseProvider(project_ref={self.project_ref!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        self._client.close()

    # -- HTTP --------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, operation: str,
              body: dict[str, Any] | None = None) -> httpx.Response:
        """One API call with the retry policy in the module docstring; errors become
        ProviderError (``retryable`` set per case)."""

        def network_error(exc: httpx.RequestError, repeatable: bool) -> ProviderError:
            if repeatable:
                return ProviderError(
                    f"cannot reach the Supabase Management API at {self.base_url} "
                    f"({type(exc).__name__}: {exc})",
                    provider=self.kind, operation=operation, retryable=True)
            return ProviderError(
                f"{method} {path} failed after it was sent ({type(exc).__name__}: {exc}); "
                "Supabase may or may not have started the restore: check the project status "
                "before trying again", provider=self.kind, operation=operation)

        def give_up(response: httpx.Response, attempt: int, wait: float) -> ProviderError:
            if response.status_code == 429:
                return ProviderError(
                    f"Supabase kept answering 429 (rate limited) to {method} {path} after "
                    f"{attempt} attempts: {_message(response)}",
                    provider=self.kind, operation=operation, retryable=True, status_code=429,
                    retry_after=wait)
            return self._error_for(response, method, path, operation)

        response = send(self._client, method, path, json=body, policy=self._retry_policy,
                        delay=self._retry_delay, network_error=network_error, give_up=give_up,
                        sleep=self.http.sleep, log=log, now=self.http.now)
        if response.status_code >= 400:
            raise self._error_for(response, method, path, operation)
        return response

    @property
    def _retry_policy(self) -> RetryPolicy:
        # A 429 did not act: every method waits it out. A 5xx may have: GETs only.
        return self.http.policy(retry_any=frozenset({429}), retry_get=frozenset(range(500, 600)))

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float:
        """429: until the rate-limit window resets (``X-RateLimit-Reset``, else
        ``Retry-After``, else the backoff), at least 1 s. 5xx: ``Retry-After``, else the
        backoff. Both capped at ``max_retry_wait``, so they are always waited out."""
        policy = self._retry_policy
        if response.status_code == 429:
            wait = self._header_seconds(response, "X-RateLimit-Reset")
            if wait is None:
                wait = self._header_seconds(response, "Retry-After")
            if wait is None:
                wait = policy.backoff(attempt)
            return min(max(wait, 1.0), self.http.max_retry_wait)
        hinted = self._header_seconds(response, "Retry-After")
        if hinted is not None:
            return min(hinted, self.http.max_retry_wait)
        return policy.backoff(attempt)

    def _header_seconds(self, response: httpx.Response, name: str) -> float | None:
        # Supabase documents seconds; an epoch (other APIs' habit) or an HTTP date also works.
        return header_seconds(response.headers.get(name), now=self.http.now, epochs=True)

    def _error_for(self, response: httpx.Response, method: str, path: str,
                   operation: str) -> ProviderError:
        status = response.status_code
        where = f"Supabase answered {status} to {method} {path}"
        detail = _message(response)
        if status in (401, 403):
            source = f" in ${self.token_env}" if self.token_env else ""
            return ProviderError(
                f"{where}: {detail}. The access token{source} is invalid, expired or lacks "
                f"the {_SCOPES.get(operation, 'needed')} permission for project "
                f"{self.project_ref}.",
                provider=self.kind, operation=operation, status_code=status)
        if status == 404:
            return ProviderError(
                f"{where}: {detail} (is project_ref {self.project_ref} right, and can this token "
                "see it?)", provider=self.kind, operation=operation, status_code=status)
        if status >= 500:
            retry = method == "GET"
            hint = "" if retry else (
                "; the restore may or may not have started: check the project status before "
                "trying again")
            return ProviderError(f"{where}: {detail}{hint}", provider=self.kind,
                                 operation=operation, retryable=retry, status_code=status)
        return ProviderError(f"{where}: {detail}", provider=self.kind, operation=operation,
                             status_code=status)

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError as exc:
            raise ProviderError(
                f"Supabase answered {response.request.method} {response.request.url.path} with "
                f"something that is not JSON: {response.text[:200]!r}",
                provider=self.kind, retryable=True) from exc
        if not isinstance(data, dict):
            raise ProviderError(
                f"Supabase answered {response.request.url.path} with {type(data).__name__}, "
                "expected an object", provider=self.kind)
        return data


def _message(response: httpx.Response) -> str:
    """The server's own words: ``message`` (Supabase's error shape) or ``error``, else text."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(data, dict):
        for key in ("message", "error", "msg"):
            if data.get(key):
                return str(data[key])
    return str(data)[:300]

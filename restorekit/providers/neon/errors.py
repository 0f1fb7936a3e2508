"""Neon's errors: a failed API call or operation, and decoding an answer (§3 GeneralError)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from restorekit.errors import ProviderError
from restorekit.providers._http import header_seconds
from restorekit.providers.neon.settings import _RETRY_ANY


class NeonApiError(ProviderError):
    """A Neon API call failed; carries Neon's ``code`` and ``request_id`` (§3 GeneralError)."""

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        retryable: bool,
        status_code: int | None = None,
        retry_after: float | None = None,
        code: str = "",
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, provider="neon", operation=operation, retryable=retryable,
                         status_code=status_code, retry_after=retry_after)
        self.code = code
        self.request_id = request_id


class NeonOperationFailed(ProviderError):
    """A Neon operation ended ``failed`` or ``cancelled``. Not retryable as such: the caller
    decides (a restore re-run finds the branch by name)."""

    def __init__(self, message: str, *, operation: str, action: str, status: str,
                 detail: str) -> None:
        super().__init__(message, provider="neon", operation=operation, retryable=False)
        self.action = action
        self.status = status
        self.detail = detail



def _need(data: dict[str, Any], key: str) -> Any:
    """``data[key]``, or a ProviderError when Neon's answer lacks it (never a KeyError)."""
    if not isinstance(data, dict) or data.get(key) is None:
        raise NeonApiError(f"Neon API answer without {key!r}: {str(data)[:200]}",
                           operation="decode", retryable=False)
    return data[key]


def _json(response: httpx.Response) -> dict[str, Any]:
    if response.status_code == 204 or not response.content:
        return {}
    try:
        data = response.json()
    except ValueError:
        raise NeonApiError(
            f"Neon API {response.request.method} {response.request.url.path} answered "
            f"{response.status_code} with a body that is not JSON",
            operation="decode", retryable=False, status_code=response.status_code,
        ) from None
    return data if isinstance(data, dict) else {"items": data}


def _api_error(response: httpx.Response, *, method: str, path: str, operation: str,
               now: Callable[[], datetime]) -> NeonApiError:
    status = response.status_code
    code, message, rid = "", "", None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("code") or "")
        message = str(body.get("message") or "")
        rid = body.get("request_id")
    if not message:
        message = response.text.strip()[:300] or response.reason_phrase
    # Neon echoes the X-Request-ID we sent (§3); without a body or header, ours still names it.
    rid = rid or response.headers.get("X-Request-ID") or response.request.headers.get(
        "X-Request-ID")
    retryable = status in _RETRY_ANY or status >= 500
    hint = ""
    if status in (401, 403):
        retryable = False
        hint = " (check the API key in the variable named by api_key_env)"
    return NeonApiError(
        f"Neon API {method} {path} ({operation}) answered {status}"
        + (f" {code}" if code else "") + f": {message}{hint} [request_id {rid}]",
        operation=operation, retryable=retryable, status_code=status,
        retry_after=header_seconds(response.headers.get("Retry-After"), now=now), code=code,
        request_id=str(rid),
    )


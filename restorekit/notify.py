"""Notifications to a Slack-compatible incoming webhook.

The webhook URL is a secret (anyone holding it can post): the config names the environment
variable that holds it, and the URL never appears in logs or errors.
"""

from __future__ import annotations

import logging
import os

import httpx

from restorekit.clients import http_client
from restorekit.errors import ProviderError

log = logging.getLogger(__name__)


def send_webhook(
    url_env: str | None,
    text: str,
    *,
    client: httpx.Client | None = None,
    timeout: float = 10,
) -> bool:
    """POST ``{"text": text}`` to the webhook named by ``url_env``. Returns False when no webhook
    is configured; raises ProviderError (retryable on 5xx/429/timeouts) when delivery fails."""
    if not url_env:
        return False
    url = os.environ.get(url_env)
    if not url:
        log.warning("notification webhook variable %s is not set; nothing sent", url_env)
        return False
    own = client is None
    client = client or http_client(timeout=timeout)
    try:
        response = client.post(url, json={"text": text})
    except httpx.TransportError as exc:
        raise ProviderError(
            f"notification webhook ({url_env}) unreachable: {type(exc).__name__}",
            provider="webhook", operation="notify", retryable=True,
        ) from None
    finally:
        if own:
            client.close()
    if response.status_code >= 300:
        raise ProviderError(
            f"notification webhook ({url_env}) answered HTTP {response.status_code}",
            provider="webhook", operation="notify",
            retryable=response.status_code >= 500 or response.status_code == 429,
            status_code=response.status_code,
        )
    return True

"""The incident webhook's way into Prefect: its :class:`~restorekit.webhook.FlowRuns` port on
Prefect's own client (``get_client(sync_client=True)``; provider-apis.md §7.4).

This lives beside the deployments, not in ``restorekit/`` (the core never imports Prefect);
:func:`restorekit.webhook.create_app` builds it by name when it is given no other.

What Prefect's client does for us: the two calls (``read_deployment_by_name``,
``create_flow_run_from_deployment`` with the ``idempotency_key``), auth (HTTP Basic from an
auth string, Bearer from an API key), TLS settings, CSRF tokens and the API version header.
What stays here:

* **No retries.** PagerDuty waits 5 s for an answer and retries 5xx, timeouts and 429 itself;
  the idempotency key makes its retry safe. Prefect's client would back off 2, 4, 8... seconds
  on 429/502/503 (``PREFECT_CLIENT_MAX_RETRIES``), past PagerDuty's patience, so every call
  runs with that setting at 0 and a failure becomes a 503 at once.
* **Created or found.** Prefect answers 201 for a new run and 200 for the run an earlier call
  with the same key created; the client returns the run either way, so a response hook notes
  the status of the create call (per thread: the webhook serves deliveries from a pool).
* **Errors** become :class:`~restorekit.errors.ProviderError` (``provider="prefect"``):
  retryable for connection failures, timeouts, 408, 429 and 5xx; not retryable for 404
  (unknown deployment), 409 (parameters fail the deployment's schema), 401/403 and other 4xx,
  with the server's ``detail`` in the message and never the credential.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote
from uuid import UUID

import httpx
from pydantic import ValidationError

from restorekit.errors import ConfigError, ProviderError
from restorekit.webhook import DeploymentRef, FlowRunRef, WebhookConfig

_DETAIL_CHARS = 300


class PrefectFlowRuns:
    """Finds a deployment by name and creates its flow runs, through Prefect's sync client.

    Args:
        api_url: The API base, e.g. ``http://127.0.0.1:4200/api``.
        credential: ``user:password`` (sent as HTTP Basic, Prefect's auth string) or an API key
            (sent as Bearer).
        timeout: Seconds per request.
        transport: An httpx transport (tests pass ``httpx.MockTransport``).
    """

    def __init__(
        self,
        api_url: str,
        *,
        credential: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        from prefect.client.orchestration import get_client
        from prefect.settings import (
            PREFECT_API_AUTH_STRING,
            PREFECT_API_KEY,
            PREFECT_API_URL,
            temporary_settings,
        )

        self.api_url = api_url.rstrip("/")
        # For messages and repr: without any user:password@ in the URL.
        self._shown_url = str(httpx.URL(self.api_url).copy_with(username=None, password=None))
        self._statuses = threading.local()
        settings: dict[str, Any] = {"timeout": timeout,
                                    "event_hooks": {"response": [self._note_status]}}
        if transport is not None:
            settings["transport"] = transport
        basic = credential is not None and ":" in credential
        # get_client reads the API and its credential from Prefect's settings: ours, for now.
        with temporary_settings(
            updates={PREFECT_API_URL: self.api_url,
                     PREFECT_API_AUTH_STRING: credential if basic else None,
                     PREFECT_API_KEY: None if basic else credential},
        ):
            self._client = get_client(httpx_settings=settings, sync_client=True)
        self._client.__enter__()

    @classmethod
    def from_config(
        cls, config: WebhookConfig, environ: Mapping[str, str] | None = None, *,
        transport: httpx.BaseTransport | None = None,
    ) -> PrefectFlowRuns:
        """Built from ``[webhook]`` (``prefect_api_url``, ``prefect_auth_env``) and the
        environment (see :meth:`WebhookConfig.resolve_prefect`).

        Raises:
            ConfigError: No API URL, or ``prefect_auth_env`` names an unset variable.
        """
        url, credential = config.resolve_prefect(environ)
        return cls(url, credential=credential, timeout=config.prefect_timeout_seconds,
                   transport=transport)

    def __repr__(self) -> str:  # the credential stays out
        return f"PrefectFlowRuns({self._shown_url!r})"

    def close(self) -> None:
        self._client.__exit__(None, None, None)

    def __enter__(self) -> PrefectFlowRuns:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def deployment(self, name: str) -> DeploymentRef:
        """The deployment ``"flow-name/deployment-name"``, with its default parameters.

        Raises:
            ConfigError: ``name`` is not ``flow-name/deployment-name``.
            ProviderError: Not found (not retryable), or the API failed.
        """
        flow, sep, deployment = name.partition("/")
        if not sep or not flow or not deployment:
            raise ConfigError(f"deployment {name!r} must look like 'flow-name/deployment-name'")
        # Prefect's client puts the names into the path as they are; a space or a '#' in a
        # name would then break the URL, so they go in quoted.
        quoted = f"{quote(flow, safe='')}/{quote(deployment, safe='')}"
        with self._calling("read_deployment_by_name", f"deployment {name!r}"):
            found = self._client.read_deployment_by_name(quoted)
        return DeploymentRef(id=str(found.id), name=name, parameters=dict(found.parameters or {}))

    def deployment_id(self, name: str) -> str:
        """The id of the deployment ``"flow-name/deployment-name"`` (see :meth:`deployment`)."""
        return self.deployment(name).id

    def create_flow_run(
        self,
        deployment_id: str,
        parameters: Mapping[str, Any],
        idempotency_key: str | None = None,
        tags: Sequence[str] = (),
        name: str | None = None,
    ) -> FlowRunRef:
        """Create a flow run of a deployment; with ``idempotency_key``, at most one per key.

        ``parameters`` are merged over the deployment's defaults (top-level keys only) and
        ``tags`` are added to the deployment's. The run starts Scheduled, for a worker to pick up.

        Returns:
            The run. ``created`` is False when Prefect returned the run that an earlier call
            with the same ``idempotency_key`` created.

        Raises:
            ProviderError: Unknown deployment (404) or parameters that fail the deployment's
                schema (409), both not retryable, or the API failed.
        """
        try:
            target = UUID(deployment_id)
        except ValueError:
            raise ProviderError(f"Prefect deployment id {deployment_id!r} is not a UUID",
                                provider="prefect", operation="create_flow_run") from None
        self._statuses.create = None
        with self._calling("create_flow_run", f"deployment {deployment_id}"):
            run = self._client.create_flow_run_from_deployment(
                target, parameters=dict(parameters), tags=list(tags), name=name,
                idempotency_key=idempotency_key)
        return FlowRunRef(
            id=str(run.id), name=run.name, deployment_id=str(run.deployment_id or deployment_id),
            created=self._statuses.create == 201, idempotency_key=run.idempotency_key,
            parameters=dict(run.parameters), state_name=run.state_name,
        )

    def _note_status(self, response: httpx.Response) -> None:
        request = response.request
        if request.method == "POST" and request.url.path.endswith("/create_flow_run"):
            self._statuses.create = response.status_code

    @contextmanager
    def _calling(self, operation: str, subject: str) -> Iterator[None]:
        """Run one client call with Prefect's own retries off; its failures as ProviderError."""
        from prefect.exceptions import ObjectNotFound
        from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

        try:
            with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0}):
                yield
        except ObjectNotFound as exc:
            response = exc.http_exc.response if isinstance(exc.http_exc, httpx.HTTPStatusError) \
                else None
            detail = _error_detail(response) if response is not None else "not found"
            raise ProviderError(f"Prefect has no {subject} (404: {detail})", provider="prefect",
                                operation=operation, status_code=404) from exc
        except httpx.HTTPStatusError as exc:
            raise _status_error(exc.response, operation, subject) from exc
        except httpx.TransportError as exc:  # connect/read errors and timeouts
            raise ProviderError(
                f"Prefect API at {self._shown_url} unreachable during {operation}: "
                f"{type(exc).__name__}",
                provider="prefect", operation=operation, retryable=True,
            ) from exc
        except (ValidationError, ValueError) as exc:  # not JSON, or not the object expected
            raise ProviderError(
                f"Prefect {operation} answered without a JSON object with an id "
                f"({type(exc).__name__})", provider="prefect", operation=operation,
            ) from None


def _status_error(response: httpx.Response, operation: str, subject: str) -> ProviderError:
    status = response.status_code
    detail = _error_detail(response)
    if status == 404:
        message = f"Prefect has no {subject} (404: {detail})"
    elif status == 409:
        message = f"Prefect refused {operation} for {subject} (409, parameter schema): {detail}"
    elif status in (401, 403):
        message = (f"Prefect refused {operation} ({status}): check the credential "
                   f"(prefect_auth_env / PREFECT_API_KEY): {detail}")
    else:
        message = f"Prefect {operation} failed for {subject} ({status}): {detail}"
    return ProviderError(
        message, provider="prefect", operation=operation, status_code=status,
        retryable=status in (408, 429) or status >= 500, retry_after=_retry_after(response),
    )


def _error_detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        text = response.text.strip()
    else:
        if isinstance(data, dict):
            text = str(data.get("detail") or data.get("exception_detail")
                       or data.get("exception_message") or data)
        else:
            text = str(data)
    text = " ".join(text.split()) or response.reason_phrase or "no detail"
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None

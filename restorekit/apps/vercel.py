"""Vercel as the application platform (provider-apis.md §5), over Vercel's REST API with httpx.

The runbook's steps map onto Vercel like this:

* **Stop Application** ("``vercel --prod --force``" with a maintenance build): Vercel has no
  "stop". The only way to take the app off production without deleting anything is to point
  production at another, already built deployment: a *maintenance deployment* (a page that
  answers 503 and touches no database). ``maintenance_deployment_id`` names it; without one,
  :meth:`VercelApp.stop` refuses with a :class:`ConfigError` before calling anything.
* **Restart / Redeploy Application**: a rollback or promote keeps the old deployment's env
  (§5.5), so only a *new build* reads a new ``DATABASE_URL``: ``POST /v13/deployments`` with the
  current production ``deploymentId``, ``target: production`` and ``forceNew=1`` (no dedup), then
  poll until ``READY``. After an instant rollback Vercel may stop assigning the production
  domains to new deployments (§5.5, [UNCONFIRMED]); such a build ends ``READY`` with
  ``readySubstate == "STAGED"`` and is promoted explicitly. Both outcomes are handled.
* **Resume** (rollback of a stop): ``POST /v1/projects/{projectId}/rollback/{deploymentId}`` back
  to the deployment that served before. Instant rollback keeps that deployment's *old* env.

"The deployment that served production" is read from ``GET /v7/deployments?target=production
&state=READY`` (newest first), skipping the maintenance deployment. After an instant rollback the
newest READY production build is not necessarily the one serving; that is harmless here because a
redeploy builds from it with the project's *current* env, and :meth:`VercelApp.resume` targets
the id recorded in the :class:`AppState`.

Requests carry ``teamId`` or ``slug`` on every call when configured (§5, gotcha 11). 429 and 5xx
are retried a bounded number of times, honouring ``Retry-After``; other 4xx fail at once with
Vercel's own message. The token is read from the environment variable ``token_env`` names, sent
only in the ``Authorization`` header and scrubbed from every message.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx

from restorekit.apps.base import AppState
from restorekit.clients import http_client
from restorekit.errors import ConfigError, OperationTimedOut, ProviderError
from restorekit.pg.dsn import redact
from restorekit.providers._http import header_seconds

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.vercel.com"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_TERMINAL_FAILURES = frozenset({"ERROR", "CANCELED"})
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_META_VALUE_MAX = 256  # Vercel's meta values are short strings; keep the reason readable


class VercelClient:
    """One team-scoped, retrying JSON client for Vercel's REST API (shared by app and store).

    Args:
        provider: The kind reported in errors (``"vercel"``).
        token_env: Name of the environment variable holding the access token (read per call).
        team_id: ``teamId`` sent on every call (``team_...``); exclusive with ``team_slug``.
        team_slug: ``slug`` sent on every call instead.
        base_url: API root; tests point it at a local fake.
        timeout: Seconds per HTTP request.
        max_retries: Retries after a 429, a 5xx or a transport error.
        max_retry_after: Longest ``Retry-After`` we wait in-process; a longer one is raised
            as a retryable error so the caller (a Prefect retry) decides.
        transport: An httpx transport (tests: ``httpx.MockTransport``).
        sleep: Injected for tests.
    """

    def __init__(
        self,
        *,
        provider: str = "vercel",
        token_env: str = "VERCEL_TOKEN",
        team_id: str | None = None,
        team_slug: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 30.0,
        max_retries: int = 4,
        max_retry_after: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not _ENV_NAME.fullmatch(token_env or ""):
            raise ConfigError(f"vercel: token_env must name an environment variable, "
                              f"got {token_env!r}")
        if team_id and team_slug:
            raise ConfigError("vercel: give team_id or team_slug, not both")
        if max_retries < 0 or max_retry_after < 0 or timeout <= 0:
            raise ConfigError("vercel: timeout must be > 0, max_retries and max_retry_after >= 0")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"vercel: base_url must be an http(s) URL, got {base_url!r}")
        self.provider = provider
        self.token_env = token_env
        self.team_id = team_id
        self.team_slug = team_slug
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_after = max_retry_after
        self._transport = transport
        self._sleep = sleep
        self._client: httpx.Client | None = None

    @property
    def scope(self) -> dict[str, str]:
        """The team query parameters sent on every call."""
        if self.team_id:
            return {"teamId": self.team_id}
        if self.team_slug:
            return {"slug": self.team_slug}
        return {}

    def describe_scope(self) -> str:
        return f" (team {self.team_id or self.team_slug})" if self.scope else ""

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def token(self) -> str:
        value = os.environ.get(self.token_env, "").strip()
        if not value:
            raise ConfigError(
                f"vercel: environment variable {self.token_env} is not set; it must hold a "
                "Vercel access token (vercel.com/account/tokens) with access to the project"
            )
        return value

    def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        secrets: Iterable[str | None] = (),
    ) -> Any:
        """Send one call and return its JSON body (``None`` when empty).

        Raises:
            ConfigError: The token is not set.
            ProviderError: A 4xx (``status_code`` set, not retryable), or a 429/5xx/transport
                error that persisted through the retries (retryable).
        """
        token = self.token()
        scrub = [token, *(s for s in secrets if s)]
        query = {**(params or {}), **self.scope}
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        what = f"vercel {operation}: {method} {path}"
        attempt = 0
        while True:
            error: ProviderError
            try:
                response = self._http().request(method, path, params=query, json=body,
                                                headers=headers)
            except httpx.TransportError as exc:
                error = ProviderError(
                    _scrub(f"{what} failed: {type(exc).__name__}: {exc}", scrub),
                    provider=self.provider, operation=operation, retryable=True,
                )
                cause: BaseException | None = exc
                delay = _backoff(attempt)
            else:
                if response.status_code < 400:
                    return _json_body(response, what, self.provider, operation)
                error = self._http_error(response, what, operation, scrub)
                cause = None
                if not error.is_retryable:
                    raise error
                delay = error.retry_after if error.retry_after is not None else _backoff(attempt)
                if delay > self.max_retry_after:
                    raise error  # the caller's retry policy decides; we do not block that long
            if attempt >= self.max_retries:
                raise error from cause
            attempt += 1
            log.warning("%s; retry %d/%d in %.1f s", error, attempt, self.max_retries, delay)
            self._sleep(delay)

    def _http(self) -> httpx.Client:
        if self._client is None:
            host = urlsplit(self.base_url).hostname or ""
            # A proxy from the environment must never catch loopback calls (tests, local fakes).
            self._client = http_client(base_url=self.base_url, timeout=self.timeout,
                                        transport=self._transport,
                                        trust_env=host not in _LOOPBACK)
        return self._client

    def _http_error(self, response: httpx.Response, what: str, operation: str,
                    scrub: list[str]) -> ProviderError:
        status = response.status_code
        code, message = _vercel_error(response)
        detail = f"{message} ({code})" if code else message
        request_id = response.headers.get("x-vercel-id")
        text = f"{what} answered {status}: {detail}"
        if status in (401, 403):
            team = " and team" if self.scope else " (team projects need team_id or team_slug)"
            text += (f"; check that ${self.token_env} holds a valid token with access to this "
                     f"project{team}")
        if request_id:
            text += f" [x-vercel-id {request_id}]"
        return ProviderError(
            _scrub(text, scrub), provider=self.provider, operation=operation,
            retryable=status in _RETRYABLE_STATUS, status_code=status,
            retry_after=header_seconds(response.headers.get("retry-after")),
        )


def _json_body(response: httpx.Response, what: str, provider: str, operation: str) -> Any:
    if not response.content.strip():
        return None
    try:
        return response.json()
    except ValueError:
        raise ProviderError(f"{what}: answered {response.status_code} with a body that is not "
                            "JSON", provider=provider, operation=operation) from None


def _vercel_error(response: httpx.Response) -> tuple[str, str]:
    # Vercel's error body: {"error": {"code": "...", "message": "..."}}.
    try:
        data = response.json()
    except ValueError:
        return "", response.reason_phrase or "no error message"
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("code") or ""), str(error.get("message") or "no error message")
    return "", response.reason_phrase or "no error message"


def _backoff(attempt: int) -> float:
    return float(min(2 ** attempt, 30))


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return redact(text)


def path_segment(value: str) -> str:
    """A path parameter, percent-encoded (project names, ids)."""
    return quote(value, safe="")


class VercelApp:
    """A Vercel project's production deployment (see :class:`restorekit.apps.base.AppPlatform`).

    Args:
        project: Project id (``prj_...``) or name.
        team_id: ``teamId`` for team projects (sent on every call); or ``team_slug``.
        team_slug: ``slug`` instead of ``team_id``.
        token_env: Name of the environment variable holding the Vercel token.
        base_url: API root (default ``https://api.vercel.com``).
        health_url: The application's ``/api/health`` URL, for the caller's health check.
        maintenance_deployment_id: A READY deployment of this project that serves a maintenance
            page; needed by :meth:`stop`.
        poll_interval_seconds: Pause between polls of a building deployment.
        timeout_seconds: Deadline for a redeploy (build + promote), or a promote.
        request_timeout_seconds, max_retries, max_retry_after_seconds: HTTP behaviour, see
            :class:`VercelClient`.
        transport, sleep, clock: Injected for tests.
    """

    kind: ClassVar[str] = "vercel"

    def __init__(
        self,
        project: str,
        *,
        team_id: str | None = None,
        team_slug: str | None = None,
        token_env: str = "VERCEL_TOKEN",
        base_url: str = DEFAULT_BASE_URL,
        health_url: str | None = None,
        maintenance_deployment_id: str | None = None,
        poll_interval_seconds: float = 3.0,
        timeout_seconds: float = 900.0,
        request_timeout_seconds: float = 30.0,
        max_retries: int = 4,
        max_retry_after_seconds: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not project or not isinstance(project, str):
            raise ConfigError("vercel app: project (id or name) is required")
        if poll_interval_seconds <= 0 or timeout_seconds <= 0:
            raise ConfigError("vercel app: poll_interval_seconds and timeout_seconds must be > 0")
        if health_url is not None and urlsplit(health_url).scheme not in ("http", "https"):
            raise ConfigError(f"vercel app: health_url must be an http(s) URL, got {health_url!r}")
        self.project = project
        self.maintenance_deployment_id = maintenance_deployment_id or None
        self.poll_interval = poll_interval_seconds
        self.timeout = timeout_seconds
        self._health_url = health_url
        self._sleep = sleep
        self._clock = clock
        self.api = VercelClient(
            provider=self.kind, token_env=token_env, team_id=team_id, team_slug=team_slug,
            base_url=base_url, timeout=request_timeout_seconds, max_retries=max_retries,
            max_retry_after=max_retry_after_seconds, transport=transport, sleep=sleep,
        )

    def __repr__(self) -> str:
        return f"VercelApp(project={self.project!r}{self.api.describe_scope()})"

    def close(self) -> None:
        self.api.close()

    # -- AppPlatform -------------------------------------------------------------------------

    def describe(self) -> str:
        return f"Vercel project {self.project}{self.api.describe_scope()}"

    def health_url(self) -> str | None:
        return self._health_url

    def stop(self, *, reason: str) -> AppState:
        if self.maintenance_deployment_id is None:
            raise ConfigError(
                f"{self.describe()}: Vercel has no 'stop'. To take the app off production, "
                "deploy a maintenance page once (e.g. a build that answers 503 on every route), "
                "and set maintenance_deployment_id to its deployment id (dpl_...) in "
                "[targets.NAME.app.vercel]; stop then points production at it and resume "
                "points production back"
            )
        maintenance = self._deployment(self.maintenance_deployment_id, operation="stop")
        self._check_ours(maintenance, what="maintenance_deployment_id", operation="stop")
        if maintenance.get("readyState") != "READY":
            raise ConfigError(
                f"{self.describe()}: maintenance deployment {self.maintenance_deployment_id} is "
                f"{maintenance.get('readyState')}, not READY; redeploy the maintenance page"
            )
        serving = self._current_production(operation="stop")
        before = self._state(serving)
        log.info("%s: pointing production at maintenance deployment %s (was %s): %s",
                 self.describe(), self.maintenance_deployment_id, before.deployment, reason)
        project_id = str(maintenance.get("projectId") or self.project)
        if maintenance.get("target") == "production" and maintenance.get("readySubstate") in (
                None, "PROMOTED"):
            # It served production before: the documented instant-rollback path.
            self._rollback(project_id, self.maintenance_deployment_id, operation="stop")
        else:
            self._promote(project_id, self.maintenance_deployment_id, operation="stop",
                          deadline=self._clock() + self.timeout)
        return before

    def resume(self, state: AppState) -> None:
        if state.platform != self.kind or state.location != self.describe():
            raise ConfigError(f"state of {state.platform} {state.location!r} cannot be resumed "
                              f"on {self.describe()}")
        if not state.running or state.deployment is None:
            log.info("%s: nothing served before; nothing to resume", self.describe())
            return
        deployment = self._deployment(state.deployment, operation="resume")
        self._check_ours(deployment, what="the recorded deployment", operation="resume")
        if deployment.get("readyState") != "READY":
            raise ProviderError(
                f"{self.describe()}: deployment {state.deployment} is "
                f"{deployment.get('readyState')}; it cannot serve production again",
                provider=self.kind, operation="resume",
            )
        project_id = str(deployment.get("projectId") or self.project)
        log.info("%s: rolling production back to %s", self.describe(), state.deployment)
        self._rollback(project_id, state.deployment, operation="resume")

    def redeploy(self, *, reason: str) -> AppState:
        deadline = self._clock() + self.timeout
        source = self._current_production(operation="redeploy")
        if source is None:
            raise ProviderError(
                f"{self.describe()}: no READY production deployment to redeploy from; deploy "
                "the project once (vercel --prod) first",
                provider=self.kind, operation="redeploy",
            )
        before = self._state(source)
        body = {
            "name": str(source.get("name") or self.project),
            "project": self.project,
            "deploymentId": before.deployment,
            "target": "production",
            "withLatestCommit": False,  # same code; only the env changes
            "meta": {"reason": reason[:_META_VALUE_MAX]},
        }
        created = self._object(self.api.request(
            "POST", "/v13/deployments", operation="redeploy", params={"forceNew": "1"},
            body=body,
        ), "POST /v13/deployments", "redeploy")
        new_id = str(created.get("id") or "")
        if not new_id:
            raise ProviderError(f"{self.describe()}: POST /v13/deployments answered without an "
                                "id", provider=self.kind, operation="redeploy")
        log.info("%s: redeploying %s as %s (%s): %s", self.describe(), before.deployment, new_id,
                 created.get("inspectorUrl") or created.get("url") or "", reason)
        ready = self._wait_ready(new_id, deadline, created)
        if ready.get("readySubstate") == "STAGED":
            # Production domains were not assigned (e.g. auto-assignment paused after an
            # instant rollback, provider-apis.md §5.5): promote explicitly.
            log.info("%s: %s is READY but STAGED; promoting it", self.describe(), new_id)
            project_id = str(ready.get("projectId") or source.get("projectId") or self.project)
            self._promote(project_id, new_id, operation="redeploy", deadline=deadline)
        log.info("%s: %s serves production", self.describe(), new_id)
        return before

    # -- Vercel calls ------------------------------------------------------------------------

    def _deployment(self, deployment_id: str, *, operation: str) -> dict[str, Any]:
        path = f"/v13/deployments/{path_segment(deployment_id)}"
        return self._object(self.api.request("GET", path, operation=operation), f"GET {path}",
                            operation)

    def _current_production(self, *, operation: str) -> dict[str, Any] | None:
        """The newest READY production deployment that is not the maintenance page."""
        # limit > 1 so that a maintenance page that is itself a production build is skipped.
        data = self._object(self.api.request(
            "GET", "/v7/deployments", operation=operation,
            params={"projectId": self.project, "target": "production", "state": "READY",
                    "limit": "10"},
        ), "GET /v7/deployments", operation)
        items = data.get("deployments")
        if not isinstance(items, list):
            raise ProviderError(f"{self.describe()}: GET /v7/deployments answered without a "
                                "deployments list", provider=self.kind, operation=operation)
        for item in items:
            if not isinstance(item, dict):
                continue
            uid = item.get("uid") or item.get("id")
            if uid and uid != self.maintenance_deployment_id and item.get("readyState",
                                                                          "READY") == "READY":
                return {**item, "uid": str(uid)}
        return None

    def _rollback(self, project_id: str, deployment_id: str, *, operation: str) -> None:
        path = (f"/v1/projects/{path_segment(project_id)}/rollback/"
                f"{path_segment(deployment_id)}")
        self.api.request("POST", path, operation=operation)

    def _promote(self, project_id: str, deployment_id: str, *, operation: str,
                 deadline: float) -> None:
        path = (f"/v10/projects/{path_segment(project_id)}/promote/"
                f"{path_segment(deployment_id)}")
        self.api.request("POST", path, operation=operation)
        # 202 means accepted: wait until the deployment says it took production traffic.
        while True:
            deployment = self._deployment(deployment_id, operation=operation)
            if deployment.get("readySubstate") not in ("STAGED", "ROLLING"):
                return
            self._pause(deadline, f"promote of {deployment_id}", deployment, operation)

    def _wait_ready(self, deployment_id: str, deadline: float,
                    created: dict[str, Any]) -> dict[str, Any]:
        deployment = created
        while True:
            state = deployment.get("readyState")
            if state == "READY":
                return deployment
            if state in _TERMINAL_FAILURES:
                reason = (deployment.get("readyStateReason") or deployment.get("errorMessage")
                          or "no reason given")
                code = deployment.get("errorCode")
                raise ProviderError(
                    f"{self.describe()}: deployment {deployment_id} ended {state}"
                    f"{f' ({code})' if code else ''}: {reason}"
                    f"{_inspect(deployment)}; production still serves the previous deployment",
                    provider=self.kind, operation="redeploy",
                )
            if state is not None:  # the POST's own answer is polled right away
                self._pause(deadline, f"deployment {deployment_id}", deployment, "redeploy")
            deployment = self._deployment(deployment_id, operation="redeploy")

    def _pause(self, deadline: float, what: str, deployment: dict[str, Any],
               operation: str) -> None:
        if self._clock() + self.poll_interval > deadline:
            state = deployment.get("readyState")
            if deployment.get("readySubstate"):
                state = f"{state} ({deployment['readySubstate']})"
            raise OperationTimedOut(
                f"{self.describe()}: {what} still {state} after {self.timeout:g} s; it may "
                f"still finish{_inspect(deployment)}",
                provider=self.kind, operation=operation,
            )
        self._sleep(self.poll_interval)

    # -- helpers -----------------------------------------------------------------------------

    def _check_ours(self, deployment: dict[str, Any], *, what: str, operation: str) -> None:
        owners = {deployment.get("projectId"), deployment.get("name")}
        if self.project not in owners:
            raise ConfigError(
                f"{self.describe()}: {what} {deployment.get('id')} belongs to project "
                f"{deployment.get('name') or deployment.get('projectId')}, not {self.project}"
            )

    def _object(self, data: Any, what: str, operation: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ProviderError(f"{self.describe()}: {what} answered without a JSON object",
                                provider=self.kind, operation=operation)
        return data

    def _state(self, deployment: dict[str, Any] | None) -> AppState:
        if deployment is None:
            return AppState(platform=self.kind, running=False, location=self.describe())
        return AppState(platform=self.kind, running=True, deployment=str(deployment["uid"]),
                        location=self.describe())


def _inspect(deployment: Mapping[str, Any]) -> str:
    url = deployment.get("inspectorUrl")
    return f"; inspect it at {url}" if url else ""

"""The HTTP side of :class:`NeonProvider`: the one ``_call`` that translates errors, operation
polling, and branch lookups."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr

from restorekit.errors import ConfigError, OperationTimedOut, SafetyError
from restorekit.providers._http import (
    PRODUCTION_PLUMBING,
    HttpPlumbing,
    RetryPolicy,
    send,
    sent_request_id,
)
from restorekit.providers.base import Progress
from restorekit.providers.neon.errors import (
    NeonApiError,
    NeonOperationFailed,
    _api_error,
    _json,
    _need,
)
from restorekit.providers.neon.settings import (
    _RETRY_ANY,
    _RETRY_GET,
    BACKUP_PREFIX,
    DEFAULT_BASE_URL,
    DONE,
    FAILED,
    PRESERVE_PREFIX,
)

log = logging.getLogger(__name__)


class NeonClient:
    """The constructor and API plumbing of :class:`NeonProvider` (its docstring has the Args)."""

    kind: ClassVar[str] = "neon"

    def __init__(
        self,
        *,
        project_id: str,
        branch_id: str,
        api_key: SecretStr,
        database: str,
        role: str,
        base_url: str = DEFAULT_BASE_URL,
        poll_interval_seconds: float = 2.0,
        timeout_seconds: float = 1800.0,
        scratch_prefix: str = "restorekit-",
        http: HttpPlumbing = PRODUCTION_PLUMBING,
        target_name: str = "",
        find_point_budget: int = 12,
        find_point_precision_seconds: float = 1.0,
    ) -> None:
        if not api_key.get_secret_value():
            raise ConfigError("the Neon API key is empty")
        if scratch_prefix.startswith(BACKUP_PREFIX) or scratch_prefix.startswith(PRESERVE_PREFIX):
            raise ConfigError(f"scratch_prefix {scratch_prefix!r} overlaps restorekit's backup "
                              "or pre-restore branch names")
        self.project_id = project_id
        self.branch_id = branch_id
        self.database = database
        self.role = role
        self.base_url = base_url.rstrip("/")
        self.poll_interval = poll_interval_seconds
        self.timeout = timeout_seconds
        self.scratch_prefix = scratch_prefix
        self.target_name = target_name
        self.find_point_budget = find_point_budget
        self.find_point_precision = timedelta(seconds=find_point_precision_seconds)
        self.http = http
        self._client = http.client(self.base_url, api_key,
                                   headers={"Content-Type": "application/json"})

    def __repr__(self) -> str:
        return f"NeonProvider(project={self.project_id!r}, branch={self.branch_id!r})"

    def close(self) -> None:
        self._client.close()

    def _rw_endpoint(self, branch_id: str) -> dict[str, Any] | None:
        endpoints = self._call("GET", self._p(f"/branches/{branch_id}/endpoints"),
                               operation="endpoints").get("endpoints") or []
        return next((e for e in endpoints if e.get("type") == "read_write"), None)

    def _branch(self, branch_id: str, *, operation: str) -> dict[str, Any] | None:
        if not branch_id:
            return None
        found = self._call("GET", self._p(f"/branches/{branch_id}"), operation=operation,
                           missing_ok=True)
        return found.get("branch") if found else None

    def _find_branch(self, name: str) -> dict[str, Any] | None:
        matches = [b for b in self._branches(operation="find_branch", search=name)
                   if b.get("name") == name]
        if len(matches) > 1:
            ids = ", ".join(str(b["id"]) for b in matches)
            raise SafetyError(f"several Neon branches are named {name!r} ({ids}); "
                              "delete or rename the extra ones")
        return matches[0] if matches else None

    def _branches(self, *, operation: str, search: str | None = None) -> list[dict[str, Any]]:
        """Every branch (``search`` narrows by partial name server-side), following cursors."""
        limit = 10000
        params: dict[str, Any] = {"limit": limit}
        if search:
            params["search"] = search
        found: list[dict[str, Any]] = []
        seen: set[str] = set()
        while True:
            page = self._call("GET", self._p("/branches"), operation=operation, params=params)
            batch = page.get("branches") or []
            found.extend(batch)
            cursor = (page.get("pagination") or {}).get("next")
            if len(batch) < limit or not cursor or cursor in seen:
                return found
            seen.add(cursor)
            params = {**params, "cursor": cursor}

    # -- operations ----------------------------------------------------------------------------

    def _wait(self, operations: Iterable[dict[str, Any]], *, what: str,
              progress: Progress) -> None:
        """Poll every operation until it is finished/skipped (§3.5).

        ``failed``/``cancelled`` raise NeonOperationFailed; ``error`` is Neon retrying, so it
        is polled like ``running``; past ``timeout_seconds`` OperationTimedOut names the
        operation that is still pending.
        """
        ops = list(operations)
        total = len(ops)
        pending: dict[str, dict[str, Any]] = {}
        for op in ops:
            self._check_op(op, what)
            if op.get("status") not in DONE:
                pending[str(op["id"])] = op
        deadline = self.http.clock() + self.timeout
        while pending:
            progress("neon operations", total - len(pending), total)
            remaining = deadline - self.http.clock()
            if remaining <= 0:
                op = next(iter(pending.values()))
                raise OperationTimedOut(
                    f"Neon operation {op['id']} ({op.get('action', '?')}) for {what} was still "
                    f"{op.get('status', '?')} after {self.timeout:.0f} s; it may still finish: "
                    f"check project {self.project_id} in the Neon console before re-running",
                    provider=self.kind, operation=str(op["id"]),
                )
            self.http.sleep(min(self.poll_interval, remaining))
            for op_id in list(pending):
                op = _need(self._call("GET", self._p(f"/operations/{op_id}"),
                                      operation=f"operation {op_id}"), "operation")
                self._check_op(op, what)
                if op.get("status") in DONE:
                    del pending[op_id]
                else:
                    if op.get("status") == "error":
                        log.warning("Neon operation %s (%s) reports an error and is being "
                                    "retried by Neon (failures: %s): %s", op_id, op.get("action"),
                                    op.get("failures_count"), op.get("error"))
                    pending[op_id] = op
        progress("neon operations", total, total)

    def _check_op(self, op: dict[str, Any], what: str) -> None:
        status = op.get("status")
        if status in FAILED:
            detail = str(op.get("error") or "no detail")
            raise NeonOperationFailed(
                f"Neon operation {op.get('id')} ({op.get('action', '?')}) for {what} {status}: "
                f"{detail}",
                operation=str(op.get("id")), action=str(op.get("action", "")),
                status=str(status), detail=detail,
            )

    # -- HTTP ----------------------------------------------------------------------------------

    def _p(self, suffix: str) -> str:
        return f"/projects/{self.project_id}{suffix}"

    def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        expect: tuple[int, ...] = (200,),
        missing_ok: bool = False,
    ) -> dict[str, Any]:
        """One API call, retried where that is safe (module docstring); returns the JSON body
        ({} for none, and for 404 when ``missing_ok``)."""

        def network_error(exc: httpx.RequestError, repeatable: bool) -> NeonApiError:
            # Retryable even after a POST was sent: the task-level retry looks before it acts.
            return NeonApiError(
                f"Neon API {method} {path} ({operation}) failed: {type(exc).__name__}: {exc}",
                operation=operation, retryable=True, request_id=sent_request_id(exc),
            )

        def give_up(response: httpx.Response, attempt: int, wait: float) -> NeonApiError:
            return _api_error(response, method=method, path=path, operation=operation,
                              now=self.http.now)

        response = send(
            self._client, method, path, params=params, json=json,
            headers=lambda: {"X-Request-ID": str(uuid.uuid4())},
            policy=self._retry_policy, network_error=network_error,
            give_up=give_up, sleep=self.http.sleep, log=log, now=self.http.now,
        )
        status = response.status_code
        if status in expect:
            return _json(response)
        if missing_ok and status in (404, 204):
            return {}
        raise _api_error(response, method=method, path=path, operation=operation, now=self.http.now)

    @property
    def _retry_policy(self) -> RetryPolicy:
        return self.http.policy(retry_any=_RETRY_ANY, retry_get=_RETRY_GET)

    def _is_scratch_name(self, name: str) -> bool:
        return (name.startswith(self.scratch_prefix) and len(name) > len(self.scratch_prefix)
                and not name.startswith((BACKUP_PREFIX, PRESERVE_PREFIX)))

"""A local fake of the Vercel REST API endpoints restorekit uses (provider-apis.md §5).

A real HTTP server on loopback (threaded), so adapters are exercised through httpx end to end.
It is strict where Vercel is: every call must carry ``Authorization: Bearer <token>`` and the
team scope (``teamId`` or ``slug``); a call that does not is answered like Vercel would (401/403)
AND recorded in :attr:`FakeVercel.problems`, which tests assert is empty. Bodies are checked
(a redeploy needs ``name``, ``deploymentId`` and ``target: "production"``).

Implemented, with the documented shapes:

* ``GET  /v10/projects/{idOrName}/env`` (three union shapes, see ``env_list_shape``). Like the
  real list it NEVER decrypts, whatever ``decrypt`` says (provider-apis.md §5.1, vercel/sdk#118,
  vercel/vercel#9072): an ``encrypted`` value comes back as ciphertext with
  ``"decrypted": false``; a ``plain`` value as stored (AWS Glue's Vercel connector notes: "the
  stored value for plain variables"); a ``sensitive``/``secret`` one without a value, or as
  ciphertext with ``sensitive_list_value = "ciphertext"`` (the Glue notes again).
* ``GET  /v1/projects/{idOrName}/env/{id}`` (§5.1a): ``plain`` and ``encrypted`` values
  decrypted (``"decrypted": true``); a ``sensitive``/``secret`` one never (``"decrypted": false``,
  no value: the SDK's ``GetProjectEnvResponseBody1``).
* ``PATCH /v9/projects/{idOrName}/env/{id}`` (a body without ``type`` keeps the type),
  ``DELETE /v9/projects/{idOrName}/env/{id}``
* ``POST /v10/projects/{idOrName}/env?upsert=true``
* ``sensitive`` is refused for the ``development`` target, as Vercel does.
* ``POST /v13/deployments``, ``GET /v13/deployments/{id}``, ``GET /v7/deployments``
* ``POST /v1/projects/{projectId}/rollback/{id}`` (201),
  ``POST /v10/projects/{projectId}/promote/{id}`` (201, or 202 with ``promote_status``)

Behaviour knobs: ``build_polls`` (a new build answers BUILDING for that many polls),
``outcomes`` (a queue of ``"READY"``/``"ERROR"``/``"CANCELED"`` for the next builds),
``stage_production_builds`` (new production builds end READY + STAGED),
``pause_auto_assign_after_rollback`` (the [UNCONFIRMED] Vercel behaviour: after a rollback new
production builds are STAGED until a promote), :meth:`FakeVercel.fail` (inject 429 with
Retry-After, 500, ... on matching calls), ``tamper`` (corrupt values written to the env).

Deployments are *backed*: each one snapshots the project env when it is built (as Vercel does),
and ``on_ready`` / ``on_production`` callbacks run with ``(deployment, env_snapshot)`` when a
build becomes READY and when production switches to a deployment (new build, promote,
rollback). :func:`backed_by` makes such a hook that writes the snapshot to a local demo app's env
file and restarts it, so a flow's health checks are real.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from fakes._http import Answer, JsonHandler, ServedFake
from restorekit.sinks.envfile import quote_value

Hook = Callable[[dict[str, Any], dict[str, str]], None]


@dataclass
class Recorded:
    """One request as the fake saw it (the Authorization header is reduced to ok/not ok)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorized: bool


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    retry_after: str | None
    body: dict[str, Any] | None


@dataclass
class Deployment:
    id: str
    name: str
    project_id: str
    target: str | None
    ready_state: str
    env: dict[str, str]
    meta: dict[str, str] = field(default_factory=dict)
    ready_substate: str | None = None
    polls_left: int = 0
    outcome: str = "READY"
    created_at: int = field(default_factory=lambda: int(time.time() * 1000))
    error_code: str | None = None
    ready_state_reason: str | None = None
    source_id: str | None = None


class _Handler(JsonHandler):
    fake: FakeVercel
    content_type = "application/json; charset=utf-8"

    def answer(self, headers: dict[str, str], body: bytes) -> Answer:
        try:
            return super().answer(headers, body)
        except Exception as exc:  # noqa: BLE001 - a bug in the fake must show, not hang
            self.fake.problems.append(f"fake crashed on {self.command} {self.path}: {exc!r}")
            return 500, {}, _error("fake_crashed", repr(exc))

    def headers_for(self, status: int) -> dict[str, str]:
        return {"x-vercel-id": "fake::" + secrets.token_hex(4)}


class FakeVercel(ServedFake):
    """The fake API's state and its server. Use as a context manager, or start()/stop().

    Args:
        token: The only bearer token accepted.
        team_id: When set, every call must carry ``teamId=<team_id>`` (or ``slug=team_slug``).
        team_slug: The slug accepted instead of the team id.
        project_id, project_name: The one project.
    """

    handler = _Handler
    thread_name = "fake-vercel"

    def __init__(self, *, token: str = "vercel-test-token-5f2a", team_id: str | None = "team_rk",
                 team_slug: str | None = "restorekit", project_id: str = "prj_shop123",
                 project_name: str = "shop") -> None:
        self.token = token
        self.team_id = team_id
        self.team_slug = team_slug
        self.project_id = project_id
        self.project_name = project_name
        self.envs: list[dict[str, Any]] = []
        self.deployments: dict[str, Deployment] = {}
        self.production: str | None = None
        self.auto_assign = True
        self.requests: list[Recorded] = []
        self.problems: list[str] = []
        # knobs
        self.env_list_shape = "pagination"  # | "hidden" | "single"
        self.sensitive_list_value = "absent"  # | "ciphertext": how the list shows sensitive vars
        self.hidden_production_envs = 0
        self.build_polls = 0
        self.outcomes: deque[str] = deque()
        self.stage_production_builds = False
        self.pause_auto_assign_after_rollback = True
        self.promote_status = 201
        self.promote_polls = 0  # a promoted deployment answers ROLLING for that many polls
        self.tamper: Callable[[str], str] | None = None
        self.freeze_updated_at = False
        self.on_ready: list[Hook] = []
        self.on_production: list[Hook] = []
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._clock = itertools.count(1_700_000_000_000, 1000)

    # -- test helpers ------------------------------------------------------------------------

    def add_env(self, key: str, value: str, *, type: str = "encrypted",
                target: list[str] | tuple[str, ...] | str = ("production",),
                **extra: Any) -> str:
        env_id = f"env_{next(self._ids)}{secrets.token_hex(3)}"
        now = next(self._clock)
        with self._lock:
            self.envs.append({"id": env_id, "key": key, "value": value, "type": type,
                              "target": list(target) if not isinstance(target, str) else target,
                              "createdAt": now, "updatedAt": now, "configurationId": None,
                              **extra})
        return env_id

    def env_value(self, key: str, target: str = "production") -> str | None:
        """The raw stored value (also for sensitive vars), as a build would see it."""
        with self._lock:
            for env in self.envs:
                if env["key"] == key and target in _targets(env):
                    return str(env["value"])
        return None

    def add_deployment(self, *, target: str | None = "production", serve: bool = True,
                       ready_state: str = "READY", name: str | None = None) -> str:
        """An existing, built deployment (snapshotting the env as it is now)."""
        hooks: list[tuple[Hook, Deployment]] = []
        with self._lock:
            dep = self._new_deployment(target, meta={}, source_id=None)
            dep.ready_state = ready_state
            if name:
                dep.name = name
            if ready_state == "READY":
                dep.ready_substate = "STAGED"
                if serve:
                    hooks = self._switch_production(dep)
        for hook, served in hooks:
            hook(self.deployment_json(served), dict(served.env))
        return dep.id

    def fail(self, method: str, path_regex: str, status: int, *, times: int = 1,
             retry_after: str | float | None = None, body: dict[str, Any] | None = None) -> None:
        """Answer the next ``times`` matching calls with ``status`` (after auth checks)."""
        with self._lock:
            self._faults.append(Fault(method.upper(), re.compile(path_regex), status, times,
                                      None if retry_after is None else str(retry_after), body))

    def calls(self, method: str | None = None, path_regex: str | None = None) -> list[Recorded]:
        pattern = re.compile(path_regex) if path_regex else None
        return [r for r in self.requests
                if (method is None or r.method == method)
                and (pattern is None or pattern.search(r.path))]

    def production_env(self) -> dict[str, str]:
        with self._lock:
            if self.production is None:
                return {}
            return dict(self.deployments[self.production].env)

    # -- model -------------------------------------------------------------------------------

    def _now(self) -> int:
        return next(self._clock)

    def _new_deployment(self, target: str | None, *, meta: dict[str, str],
                        source_id: str | None) -> Deployment:
        dep_id = f"dpl_{next(self._ids)}{secrets.token_hex(4)}"
        snapshot = {e["key"]: str(e["value"]) for e in self.envs
                    if (target or "preview") in _targets(e)}
        dep = Deployment(id=dep_id, name=self.project_name, project_id=self.project_id,
                         target=target, ready_state="QUEUED", env=snapshot, meta=meta,
                         polls_left=self.build_polls, source_id=source_id,
                         created_at=self._now())
        self.deployments[dep_id] = dep
        return dep

    def _switch_production(self, dep: Deployment) -> list[tuple[Hook, Deployment]]:
        self.production = dep.id
        dep.ready_substate = "PROMOTED"
        return [(hook, dep) for hook in self.on_production]

    def _advance(self, dep: Deployment) -> list[tuple[Hook, Deployment]]:
        """One poll of a build: BUILDING for polls_left polls, then its outcome."""
        if dep.ready_state in ("READY", "ERROR", "CANCELED"):
            if dep.ready_substate == "ROLLING":
                if dep.polls_left > 0:
                    dep.polls_left -= 1
                else:
                    return self._switch_production(dep)
            return []
        if dep.polls_left > 0:
            dep.polls_left -= 1
            dep.ready_state = "BUILDING"
            return []
        dep.ready_state = dep.outcome
        if dep.outcome == "ERROR":
            dep.error_code = "BUILD_FAILED"
            dep.ready_state_reason = 'Command "npm run build" exited with 1'
            return []
        if dep.outcome == "CANCELED":
            dep.ready_state_reason = "Canceled by a newer deployment"
            return []
        hooks = [(hook, dep) for hook in self.on_ready]
        dep.ready_substate = "STAGED"
        if dep.target == "production" and self.auto_assign and not self.stage_production_builds:
            hooks += self._switch_production(dep)
        return hooks

    def deployment_json(self, dep: Deployment, *, listing: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": dep.name, "projectId": dep.project_id,
            "url": f"{dep.name}-{dep.id[4:]}.vercel.app",
            "readyState": dep.ready_state, "target": dep.target, "meta": dep.meta,
            "createdAt": dep.created_at, "buildingAt": dep.created_at + 1,
            "inspectorUrl": f"https://vercel.com/restorekit/{dep.name}/{dep.id[4:]}",
            "aliasAssigned": self.production == dep.id, "type": "LAMBDAS",
            "creator": {"uid": "usr_1", "username": "restorekit"},
        }
        if dep.ready_state == "READY":
            data["ready"] = dep.created_at + 2
            data["readySubstate"] = dep.ready_substate
        if dep.error_code:
            data["errorCode"] = dep.error_code
        if dep.ready_state_reason:
            data["readyStateReason"] = dep.ready_state_reason
        if listing:
            data.update(uid=dep.id, created=dep.created_at, state=dep.ready_state)
        else:
            data.update(id=dep.id, alias=[f"{dep.name}.example.com"] if self.production == dep.id
                        else [], regions=["iad1"])
        return data

    def env_json(self, env: dict[str, Any]) -> dict[str, Any]:
        """An entry as the list (and PATCH/POST/DELETE answers) show it: never decrypted."""
        data = dict(env)
        if env["type"] in _UNREADABLE:
            data.pop("value", None)
            if self.sensitive_list_value == "ciphertext":
                data["value"] = _ciphertext()
            data["decrypted"] = False
        elif env["type"] == "encrypted":
            data["value"] = _ciphertext()
            data["decrypted"] = False
        return data

    def env_decrypted_json(self, env: dict[str, Any]) -> dict[str, Any]:
        """An entry as ``GET /v1/projects/{idOrName}/env/{id}`` shows it."""
        data = dict(env)
        if env["type"] in _UNREADABLE:
            data.pop("value", None)  # never returned, by any endpoint
            data["decrypted"] = False
        else:
            data["decrypted"] = True
        return data

    # -- request handling --------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str],
               raw_body: bytes) -> tuple[int, dict[str, str], Any]:
        parts = urlsplit(raw_path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        authorized = headers.get("authorization") == f"Bearer {self.token}"
        body: Any = None
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError:
                body = "<not json>"
        with self._lock:
            self.requests.append(Recorded(method, path, query, body, authorized))
        if not authorized:
            self.problems.append(f"{method} {path}: missing or wrong Authorization header")
            return 403 if "authorization" in headers else 401, {}, _error(
                "forbidden", "Not authorized")
        if self.team_id or self.team_slug:
            ok = (self.team_id and query.get("teamId") == self.team_id) or (
                self.team_slug and query.get("slug") == self.team_slug)
            if not ok:
                self.problems.append(f"{method} {path}: no teamId/slug for the team project")
                return 403, {}, _error("forbidden", "You don't have permission to access this "
                                       "project (team scope missing)")
        if body == "<not json>":
            self.problems.append(f"{method} {path}: body is not JSON")
            return 400, {}, _error("bad_request", "Invalid JSON")
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.method == method and fault.path.search(path):
                    fault.times -= 1
                    extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                    return fault.status, extra, fault.body or _error(
                        "rate_limited" if fault.status == 429 else "internal_server_error",
                        "Too many requests" if fault.status == 429 else "An unexpected error")
        for route_method, pattern, handler in _ROUTES:
            match = pattern.fullmatch(path)
            if match and route_method == method:
                hooks: list[tuple[Hook, Deployment]] = []
                with self._lock:
                    status, payload = handler(self, match, query, body, hooks)
                for hook, dep in hooks:  # outside the lock: a hook may call the fake
                    hook(self.deployment_json(dep), dict(dep.env))
                return status, {}, payload
        self.problems.append(f"{method} {path}: no such endpoint")
        return 404, {}, _error("not_found", f"The requested path {path} was not found")

    # route handlers: (fake, match, query, body, hooks) -> (status, payload)

    def _project_matches(self, id_or_name: str, *, id_only: bool = False) -> bool:
        return unquote(id_or_name) == self.project_id or (
            not id_only and unquote(id_or_name) == self.project_name)

    def _list_env(self, m: re.Match[str], q: dict[str, str], body: Any,
                  hooks: list[Any]) -> tuple[int, Any]:
        if not self._project_matches(m["project"]):
            return 404, _error("not_found", "Project not found")
        envs = [self.env_json(e) for e in self.envs]  # `decrypt` changes nothing (§5.1)
        if self.env_list_shape == "single" and len(envs) == 1:
            return 200, envs[0]
        if self.env_list_shape == "hidden":
            return 200, {"envs": envs, "hiddenProductionEnvCount": self.hidden_production_envs}
        return 200, {"envs": envs, "pagination": {"count": len(envs), "next": None,
                                                  "prev": None}}

    def _find_env(self, env_id: str) -> dict[str, Any] | None:
        return next((e for e in self.envs if e["id"] == unquote(env_id)), None)

    def _project_env(self, m: re.Match[str]) -> tuple[dict[str, Any] | None, tuple[int, Any]]:
        """The environment variable in the path; else None and the 404 to answer."""
        if not self._project_matches(m["project"]):
            return None, (404, _error("not_found", "Project not found"))
        env = self._find_env(m["env"])
        if env is None:
            return None, (404, _error("not_found", "Environment Variable not found"))
        return env, (200, None)

    def _get_env(self, m: re.Match[str], q: dict[str, str], body: Any,
                 hooks: list[Any]) -> tuple[int, Any]:
        env, refused = self._project_env(m)
        if env is None:
            return refused
        return 200, self.env_decrypted_json(env)

    def _patch_env(self, m: re.Match[str], q: dict[str, str], body: Any,
                   hooks: list[Any]) -> tuple[int, Any]:
        env, refused = self._project_env(m)
        if env is None:
            return refused
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            self.problems.append("PATCH env: body without a string value")
            return 400, _error("bad_request", "Invalid request: `value` should be string")
        unknown = set(body) - {"key", "value", "type", "target", "gitBranch",
                               "customEnvironmentIds", "comment"}
        if unknown:
            self.problems.append(f"PATCH env: unknown fields {sorted(unknown)}")
            return 400, _error("bad_request", f"Invalid request: unknown {sorted(unknown)}")
        env_type = body.get("type", env["type"])
        refused = self._refuse_type(env_type, body.get("target", env["target"]),
                                    given="type" in body)
        if refused:
            return 400, refused
        env["type"] = env_type  # no `type` in the body: the type stays what it was
        env["value"] = self.tamper(body["value"]) if self.tamper else body["value"]
        if not self.freeze_updated_at:
            env["updatedAt"] = self._now()
        return 200, self.env_json(env)

    def _refuse_type(self, env_type: Any, target: Any, *,
                     given: bool = True) -> dict[str, Any] | None:
        if given and env_type not in ("system", "encrypted", "plain", "sensitive"):
            self.problems.append(f"env: type {env_type!r} is not one Vercel accepts")
            return _error("bad_request", "Invalid request: `type` should be one of system, "
                          "encrypted, plain, sensitive")
        targets = [target] if isinstance(target, str) else list(target or [])
        if env_type == "sensitive" and "development" in targets:
            return _error("bad_request", "Sensitive environment variables cannot be created "
                          "for the Development environment")
        return None

    def _delete_env(self, m: re.Match[str], q: dict[str, str], body: Any,
                    hooks: list[Any]) -> tuple[int, Any]:
        env, refused = self._project_env(m)
        if env is None:
            return refused
        self.envs.remove(env)
        return 200, self.env_json(env)

    def _create_env(self, m: re.Match[str], q: dict[str, str], body: Any,
                    hooks: list[Any]) -> tuple[int, Any]:
        if not self._project_matches(m["project"]):
            return 404, _error("not_found", "Project not found")
        items = body if isinstance(body, list) else [body]
        for item in items:
            if not (isinstance(item, dict) and {"key", "value", "type", "target"} <= set(item)):
                self.problems.append("POST env: needs key, value, type and target")
                return 400, _error("bad_request", "Invalid request: missing required fields")
            refused = self._refuse_type(item["type"], item["target"])
            if refused:
                return 400, refused
        created = []
        for item in items:
            targets = item["target"] if isinstance(item["target"], list) else [item["target"]]
            existing = next((e for e in self.envs if e["key"] == item["key"]
                             and set(targets) & set(_targets(e))), None)
            if existing is not None and q.get("upsert") != "true":
                return 409, _error("ENV_ALREADY_EXISTS", "The environment variable already exists")
            if existing is not None:
                existing.update(value=self.tamper(item["value"]) if self.tamper else item["value"],
                                type=item["type"], target=targets, updatedAt=self._now())
                created.append(self.env_json(existing))
            else:
                env_id = self.add_env(item["key"], self.tamper(item["value"]) if self.tamper
                                      else item["value"], type=item["type"], target=targets)
                created.append(self.env_json(self._find_env(env_id) or {}))
        return 201, {"created": created[0] if len(created) == 1 else created, "failed": []}

    def _create_deployment(self, m: re.Match[str], q: dict[str, str], body: Any,
                           hooks: list[Any]) -> tuple[int, Any]:
        if not isinstance(body, dict) or not body.get("name"):
            self.problems.append("POST /v13/deployments: name is required")
            return 400, _error("bad_request", "Invalid request: missing required property `name`")
        source = self.deployments.get(str(body.get("deploymentId")))
        if source is None:
            self.problems.append("POST /v13/deployments: redeploy without a known deploymentId")
            return 404, _error("not_found", "Deployment not found")
        if body.get("target") != "production":
            self.problems.append("POST /v13/deployments: a redeploy of production must say "
                                 "target: production (it would be a preview)")
        project = body.get("project") or body["name"]
        if project not in (self.project_id, self.project_name):
            return 404, _error("not_found", "Project not found")
        meta = body.get("meta") or {}
        if not all(isinstance(v, str) for v in meta.values()):
            return 400, _error("bad_request", "meta values must be strings")
        dep = self._new_deployment(body.get("target"), meta=meta, source_id=source.id)
        if self.outcomes:
            dep.outcome = self.outcomes.popleft()
        return 200, self.deployment_json(dep)

    def _get_deployment(self, m: re.Match[str], q: dict[str, str], body: Any,
                        hooks: list[Any]) -> tuple[int, Any]:
        dep = self.deployments.get(unquote(m["dep"]))
        if dep is None:
            return 404, _error("not_found", "Deployment not found")
        hooks.extend(self._advance(dep))
        return 200, self.deployment_json(dep)

    def _list_deployments(self, m: re.Match[str], q: dict[str, str], body: Any,
                          hooks: list[Any]) -> tuple[int, Any]:
        deps = sorted(self.deployments.values(), key=lambda d: d.created_at, reverse=True)
        if "projectId" in q:
            if not self._project_matches(q["projectId"]):
                return 200, {"deployments": [], "pagination": {"count": 0, "next": None,
                                                               "prev": None}}
        if "target" in q:
            deps = [d for d in deps if d.target == q["target"]]
        if "state" in q:
            wanted = set(q["state"].split(","))
            deps = [d for d in deps if d.ready_state in wanted]
        deps = deps[: int(q.get("limit", "20"))]
        return 200, {"deployments": [self.deployment_json(d, listing=True) for d in deps],
                     "pagination": {"count": len(deps), "next": None, "prev": None}}

    def _project_deployment(self, m: re.Match[str],
                            action: str) -> tuple[Any, tuple[int, Any]]:
        """The deployment in the path of a rollback or promote, whose project must be given by
        id; else None and the 404 to answer."""
        if not self._project_matches(m["project"], id_only=True):
            self.problems.append(f"{action}: the path needs the project id, not its name")
            return None, (404, _error("not_found", "Project not found"))
        dep = self.deployments.get(unquote(m["dep"]))
        if dep is None:
            return None, (404, _error("not_found", "Deployment not found"))
        return dep, (200, None)

    def _rollback(self, m: re.Match[str], q: dict[str, str], body: Any,
                  hooks: list[Any]) -> tuple[int, Any]:
        dep, refused = self._project_deployment(m, "rollback")
        if dep is None:
            return refused
        if dep.ready_state != "READY" or dep.target != "production" \
                or dep.ready_substate != "PROMOTED":
            return 400, _error("invalid_rollback", "This deployment cannot be rolled back to: "
                               "it never served production")
        hooks.extend(self._switch_production(dep))
        if self.pause_auto_assign_after_rollback:
            self.auto_assign = False
        return 201, None

    def _promote(self, m: re.Match[str], q: dict[str, str], body: Any,
                 hooks: list[Any]) -> tuple[int, Any]:
        dep, refused = self._project_deployment(m, "promote")
        if dep is None:
            return refused
        if dep.ready_state != "READY":
            return 400, _error("invalid_promote", "Only READY deployments can be promoted")
        self.auto_assign = True
        if self.promote_polls:
            dep.ready_substate = "ROLLING"
            dep.polls_left = self.promote_polls
        else:
            hooks.extend(self._switch_production(dep))
        return self.promote_status, None


def _targets(env: dict[str, Any]) -> list[str]:
    target = env.get("target")
    return [target] if isinstance(target, str) else list(target or [])


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


_UNREADABLE = ("sensitive", "secret")


def _ciphertext() -> str:
    # What the list answers for an encrypted value: base64 of opaque bytes, never the value.
    return base64.b64encode(secrets.token_bytes(48)).decode()


_P = r"(?P<project>[^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], Callable[..., tuple[int, Any]]]] = [
    ("GET", re.compile(rf"/v10/projects/{_P}/env"), FakeVercel._list_env),
    ("POST", re.compile(rf"/v10/projects/{_P}/env"), FakeVercel._create_env),
    ("GET", re.compile(rf"/v1/projects/{_P}/env/(?P<env>[^/]+)"), FakeVercel._get_env),
    ("PATCH", re.compile(rf"/v9/projects/{_P}/env/(?P<env>[^/]+)"), FakeVercel._patch_env),
    ("DELETE", re.compile(rf"/v9/projects/{_P}/env/(?P<env>[^/]+)"), FakeVercel._delete_env),
    ("POST", re.compile(r"/v13/deployments"), FakeVercel._create_deployment),
    ("GET", re.compile(r"/v13/deployments/(?P<dep>[^/]+)"), FakeVercel._get_deployment),
    ("GET", re.compile(r"/v7/deployments"), FakeVercel._list_deployments),
    ("POST", re.compile(rf"/v1/projects/{_P}/rollback/(?P<dep>[^/]+)"), FakeVercel._rollback),
    ("POST", re.compile(rf"/v10/projects/{_P}/promote/(?P<dep>[^/]+)"), FakeVercel._promote),
]


def backed_by(env_file: Path, restart: Callable[[], object], *,
              keys: tuple[str, ...] = ("DATABASE_URL",)) -> Hook:
    """An ``on_production`` hook that makes a local app serve what production serves.

    It writes the deployment's env snapshot (``keys``) to ``env_file`` and calls ``restart``;
    e.g. ``fake.on_production.append(backed_by(app.env_file, lambda: app.redeploy(reason="")))``
    with a :class:`restorekit.apps.local.LocalProcessApp`, so a flow's health check is real.
    """

    def hook(deployment: dict[str, Any], env: dict[str, str]) -> None:
        lines = [f"{key}={quote_value(env[key])}\n" for key in keys if key in env]
        env_file.write_text("".join(lines))
        restart()

    return hook


def running(**kwargs: Any) -> Iterator[FakeVercel]:
    """Generator for a pytest fixture: ``yield from running(team_id=...)``."""
    fake = FakeVercel(**kwargs).start()
    try:
        yield fake
    finally:
        fake.stop()

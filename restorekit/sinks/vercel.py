"""A Vercel project environment variable as the place where DATABASE_URL lives (§5.1, §5.2).

The store manages ONE env entry: ``key`` whose ``target`` covers every configured target
(default ``["production"]``), with no git branch and no custom environment. A change applies
only to the next *build* (provider-apis.md §5.2): the caller redeploys afterwards.

Reading a value
---------------
``GET /v10/projects/{idOrName}/env`` never decrypts, whatever its ``decrypt`` parameter says
(§5.1, vercel/sdk#118, vercel/vercel#9072): an ``encrypted`` value comes back as ciphertext.
So the list is used only to find the entry's ``id``, and the value is read through
``GET /v1/projects/{idOrName}/env/{id}`` (§5.1a), which decrypts ``plain`` and ``encrypted``
values. A response without ``"decrypted": true`` is an error, never a value: a ciphertext taken
for the connection string would be the value a rollback writes back.

Sensitive variables
-------------------
A ``sensitive`` variable (or a legacy ``secret``) is never readable back, by any endpoint. The
value restorekit uses for it is one it knows itself, in this order:

* the value restorekit itself last wrote there, if the entry is unchanged since (same id and
  ``updatedAt``): kept encrypted next to the backups (``<key>.current``), so that a swap that
  succeeded is not later "read" as the old value;
* otherwise the value of ``current_value_env``: the name of an environment variable that holds
  the application's current connection string (a secret, never logged).

Without either, ``read()`` raises a :class:`ConfigError` saying what to configure, and ``write()``
refuses before changing anything (a swap that cannot be rolled back would leave production on
the new database after a failed health check). ``describe()`` says so, so a flow's plan shows it
before the swap. A write verifies a sensitive value by its entry's ``updatedAt`` advancing, and
keeps the type ``sensitive``.

Where the previous value goes
-----------------------------
Vercel keeps no history of env values, and a :class:`~restorekit.sinks.base.Revision` must hold
no secret. So ``write`` keeps the previous value in a local file under ``state_dir``
(``<state_dir>/vercel-env/``, directory 0700, file 0600, created exclusively), **encrypted**
with Fernet (AES-128-CBC + HMAC-SHA256), and the revision's ``ref`` is only that file's path.

The key is, in order of preference:

* ``backup_key_env``: the name of an environment variable holding a Fernet key
  (``python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"``);
* otherwise derived from the Vercel token with HKDF-SHA256 (salted with team/project/key).

Trade-offs, stated plainly: the derived key protects the file exactly as well as the token
protects the live value (whoever holds the token can read the env var from Vercel anyway), costs
no extra secret, but a token rotated between the write and a rollback makes the file unreadable
(``restore`` then says so). A dedicated key survives token rotation but is one more secret to
provision on every worker that may run the rollback hook. Either way the file lives on the
machine that ran the write: a rollback on another worker needs a shared ``state_dir``. Files are
not pruned automatically.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr

from restorekit.apps.vercel import DEFAULT_BASE_URL, VercelClient, path_segment
from restorekit.errors import ConfigError, ProviderError, RestoreKitError
from restorekit.sinks._files import CONTROL, KEY_NAME
from restorekit.sinks.base import Revision, check_new_value, check_read_value, check_revision
from restorekit.sinks.vercel_backups import UNREADABLE_TYPES, VercelEnvBackups

log = logging.getLogger(__name__)

_TARGETS = frozenset({"production", "preview", "development"})


class VercelEnvStore(VercelEnvBackups):
    """One Vercel env var (see :class:`restorekit.sinks.base.ConnectionStore`).

    Args:
        project: Project id (``prj_...``) or name.
        state_dir: Where encrypted copies of previous values are kept (required).
        key: The env var name.
        team_id: ``teamId`` sent on every call; or ``team_slug``.
        team_slug: ``slug`` instead of ``team_id``.
        token_env: Name of the environment variable holding the Vercel token.
        base_url: API root (default ``https://api.vercel.com``).
        targets: The targets the entry must cover (``production``, ``preview``,
            ``development``); also the targets of an entry ``write`` has to create.
        env_type: The type of an entry ``write`` has to create (``encrypted`` by default).
        current_value_env: For a ``sensitive`` variable: name of an environment variable that
            holds the application's current value (see the module docstring). Unused for
            readable types: their value is read from Vercel.
        backup_key_env: Name of an environment variable holding a Fernet key for the backups;
            unset means a key derived from the token (see the module docstring).
        request_timeout_seconds, max_retries, max_retry_after_seconds: HTTP behaviour, see
            :class:`restorekit.apps.vercel.VercelClient`.
        transport, sleep: Injected for tests.
    """

    kind: ClassVar[str] = "vercel"

    def __init__(
        self,
        project: str,
        *,
        state_dir: str | Path | None = None,
        key: str = "DATABASE_URL",
        team_id: str | None = None,
        team_slug: str | None = None,
        token_env: str = "VERCEL_TOKEN",
        base_url: str = DEFAULT_BASE_URL,
        targets: list[str] | tuple[str, ...] = ("production",),
        env_type: str = "encrypted",
        current_value_env: str | None = None,
        backup_key_env: str | None = None,
        request_timeout_seconds: float = 30.0,
        max_retries: int = 4,
        max_retry_after_seconds: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not project or not isinstance(project, str):
            raise ConfigError("vercel env store: project (id or name) is required")
        if not KEY_NAME.fullmatch(key or ""):
            raise ConfigError(f"vercel env store: not a valid environment variable name: {key!r}")
        if state_dir is None:
            raise ConfigError(
                "vercel env store: state_dir is required: Vercel keeps no history of env "
                "values, so the previous value is kept (encrypted) in a file under state_dir "
                "for the rollback; set it in [targets.NAME.connection.options]"
            )
        if isinstance(targets, str) or not targets or not set(targets) <= _TARGETS:
            raise ConfigError(f"vercel env store: targets must be a non-empty list of "
                              f"{', '.join(sorted(_TARGETS))}; got {targets!r}")
        if env_type not in ("encrypted", "plain", "sensitive"):
            raise ConfigError(f"vercel env store: env_type must be encrypted, plain or "
                              f"sensitive; got {env_type!r}")
        if env_type == "sensitive" and "development" in targets:
            raise ConfigError("vercel env store: Vercel has no sensitive variables for the "
                              "development target; drop it from targets or use env_type "
                              "encrypted")
        for option, name in (("backup_key_env", backup_key_env),
                             ("current_value_env", current_value_env)):
            if name is not None and not KEY_NAME.fullmatch(name):
                raise ConfigError(f"vercel env store: {option} must name an environment "
                                  f"variable; got {name!r}")
        self.project = project
        self.key = key
        self.targets = tuple(dict.fromkeys(targets))
        self.env_type = env_type
        self.current_value_env = current_value_env
        self.state_dir = Path(state_dir).absolute()
        self.backup_key_env = backup_key_env
        self.api = VercelClient(
            provider=self.kind, token_env=token_env, team_id=team_id, team_slug=team_slug,
            base_url=base_url, timeout=request_timeout_seconds, max_retries=max_retries,
            max_retry_after=max_retry_after_seconds, transport=transport, sleep=sleep,
        )
        self._seen_type: str | None = None  # the entry's type when last listed (describe())

    def __repr__(self) -> str:
        return f"VercelEnvStore(project={self.project!r}, key={self.key!r})"

    def close(self) -> None:
        self.api.close()

    @property
    def location(self) -> str:
        """Which variable this is; a revision's ``location`` (stable, unlike describe())."""
        return (f"Vercel env {self.key} [{', '.join(self.targets)}] of project "
                f"{self.project}{self.api.describe_scope()}")

    def describe(self) -> str:
        sensitive = (self._seen_type in UNREADABLE_TYPES if self._seen_type is not None
                     else self.current_value_env is not None)
        if not sensitive:
            return self.location
        if self.current_value_env:
            return (f"{self.location} (sensitive: not readable back; rollback writes the value "
                    f"of ${self.current_value_env}, or the one restorekit last wrote)")
        return (f"{self.location} (sensitive: not readable back; no rollback is possible "
                "until current_value_env is set)")

    # -- ConnectionStore ---------------------------------------------------------------------

    def read(self) -> SecretStr:
        envs, hidden = self._list("read")
        entry = self._find(envs)
        if entry is None:
            raise ConfigError(f"{self.describe()}: no such variable" + _hidden_note(hidden))
        return SecretStr(self._value_of(entry, "read"))

    def write(self, dsn: SecretStr) -> Revision:
        value = dsn.get_secret_value()
        check_new_value(self.describe(), value, self.key)
        cipher = self._cipher()  # a missing key fails here, before anything changes
        envs, hidden = self._list("write")
        entry = self._find(envs)
        if entry is None:
            if hidden:
                raise ConfigError(f"{self.describe()}: no such variable visible, but"
                                  + _hidden_note(hidden).removeprefix(";")
                                  + "; refusing to create a second one")
            return self._create(value, cipher)
        env_id, env_type = str(entry["id"]), str(entry.get("type"))
        # Before anything changes: a sensitive value nobody knows stops the swap here.
        old = self._value_of(entry, "write")
        backup = self._save_backup(cipher, {
            "existed": True, "env_id": env_id, "value": old, "type": env_type,
            "target": _targets_of(entry), "updated_at": entry.get("updatedAt"),
        })
        revision = Revision(store=self.kind, location=self.location, ref=str(backup))
        secrets = (value, old)
        try:
            self._patch(env_id, value, env_type, operation="write", secrets=secrets)
            self._remember(self._verify(env_id, value, previous=entry, operation="write"), value)
        except RestoreKitError as exc:
            problem = str(exc)
            try:
                self._patch(env_id, old, env_type, operation="write", secrets=secrets)
                self._remember(self._verify(env_id, old, previous=None, operation="write"), old)
            except RestoreKitError as put_back:
                raise ProviderError(
                    f"{problem}; putting the previous value back failed too ({put_back}); it is "
                    f"kept encrypted in {backup}", provider=self.kind, operation="write",
                ) from exc
            raise ProviderError(f"{problem}; the previous value was put back",
                                provider=self.kind, operation="write") from exc
        log.info("wrote %s (previous value kept encrypted in %s)", self.describe(), backup)
        return revision

    def restore(self, revision: Revision) -> None:
        check_revision(revision, kind=self.kind, location=self.location)
        if revision.ref is None:
            raise ConfigError(f"{self.describe()}: the revision names no backup file")
        saved = self._load_backup(Path(revision.ref))
        envs, _ = self._list("restore")
        by_id = {str(e.get("id")): e for e in envs}
        env_id = saved.get("env_id")
        if not saved["existed"]:
            # The write created the variable: the previous state is "no variable".
            entry = by_id.get(str(env_id)) if env_id else self._find(envs)
            if entry is not None:
                self._delete(str(entry["id"]))
            log.info("restored %s: removed the variable the write had created",
                     self.describe())
            return
        old = saved.get("value")
        if old is None:  # a backup written before restorekit could know sensitive values
            raise ProviderError(
                f"{self.describe()}: the value before the write was a sensitive one that "
                "cannot be read back, so it was never saved; set it by hand in the Vercel "
                "dashboard (nothing was changed)", provider=self.kind, operation="restore",
            )
        entry = by_id.get(str(env_id)) or self._find(envs)
        if entry is not None:
            if self._holds(entry, old):
                log.info("restored %s: the previous value is already in place", self.describe())
                return
            env_type = str(entry.get("type"))
            self._patch(str(entry["id"]), old, env_type, operation="restore", secrets=(old,))
            after = self._verify(str(entry["id"]), old, previous=entry, operation="restore")
        else:
            created = self._upsert(old, saved.get("type") or self.env_type,
                                   saved.get("target") or list(self.targets), "restore")
            after = self._verify(created, old, previous=None, operation="restore")
        self._remember(after, old)
        log.info("restored %s from %s", self.describe(), revision.ref)

    # -- the value of an entry ---------------------------------------------------------------

    def _value_of(self, entry: dict[str, Any], operation: str) -> str:
        """The entry's current value: decrypted by id, or, if sensitive, the one we know."""
        if entry.get("type") in UNREADABLE_TYPES:
            value = self._known_value(entry)
        else:
            data = self._fetch(str(entry["id"]), operation)
            if data.get("type") in UNREADABLE_TYPES:  # made sensitive since the list
                self._seen_type = str(data["type"])
                return self._value_of({**entry, **data}, operation)
            decrypted = _decrypted(data)
            if decrypted is None:
                raise ProviderError(
                    f"{self.describe()}: Vercel did not return the decrypted value of entry "
                    f"{entry['id']} (type {data.get('type')!r}, decrypted "
                    f"{data.get('decrypted')!r}); the token may lack the permission to read "
                    "environment variable values", provider=self.kind, operation=operation)
            value = decrypted
        return check_read_value(self.describe(), value)

    def _known_value(self, entry: dict[str, Any]) -> str:
        """A sensitive entry's value as restorekit knows it (see the module docstring)."""
        tracked = self._tracked(entry)
        if tracked is not None:
            log.info("%s: sensitive; using the value restorekit last wrote there",
                     self.location)
            return tracked
        name = self.current_value_env
        if name is None:
            raise ConfigError(
                f"{self.location}: the variable is of type {entry.get('type')!r}: Vercel never "
                "returns its value, by any endpoint, so restorekit can neither read it nor keep "
                "it to roll a swap back. Set current_value_env in "
                "[targets.NAME.connection.options] to the name of an environment variable that "
                f"holds the application's current {self.key} (e.g. current_value_env = "
                f'"APP_{self.key}", set wherever restorekit runs), or make the variable '
                "'encrypted'")
        value = os.environ.get(name, "")
        if not value:
            raise ConfigError(
                f"{self.location}: sensitive, and environment variable {name} "
                f"(current_value_env) is not set; it must hold the application's current "
                f"{self.key}, exactly as it is in Vercel")
        if CONTROL.search(value):
            raise ConfigError(
                f"{self.location}: ${name} (current_value_env) contains control characters "
                f"(a trailing newline?); it must hold exactly the value of {self.key}")
        log.info("%s: sensitive; using the value of $%s", self.location, name)
        return value

    def _holds(self, entry: dict[str, Any], value: str) -> bool:
        """Whether ``entry`` is known to hold ``value`` already (restore is idempotent)."""
        if entry.get("type") in UNREADABLE_TYPES:
            return self._tracked(entry) == value
        return _decrypted(self._fetch(str(entry["id"]), "restore")) == value

    # -- Vercel calls ------------------------------------------------------------------------

    @property
    def _env_path(self) -> str:
        return f"/v10/projects/{path_segment(self.project)}/env"

    def _list(self, operation: str) -> tuple[list[dict[str, Any]], int]:
        # Only ids, types, targets and updatedAt are taken from the list: it never decrypts.
        data = self.api.request("GET", self._env_path, operation=operation)
        # A union of shapes (§5.1): {"envs", "pagination"} | {"envs", "hiddenProductionEnvCount"}
        # | a single env object.
        if isinstance(data, dict) and isinstance(data.get("envs"), list):
            envs = [e for e in data["envs"] if isinstance(e, dict)]
            hidden = data.get("hiddenProductionEnvCount")
            return envs, hidden if isinstance(hidden, int) else 0
        if isinstance(data, dict) and "key" in data:
            return [data], 0
        raise ProviderError(f"{self.describe()}: GET {self._env_path} answered with an "
                            "unexpected shape", provider=self.kind, operation=operation)

    def _fetch(self, env_id: str, operation: str) -> dict[str, Any]:
        path = f"/v1/projects/{path_segment(self.project)}/env/{path_segment(env_id)}"
        data = self.api.request("GET", path, operation=operation)
        if not isinstance(data, dict):
            raise ProviderError(f"{self.describe()}: GET {path} answered with an unexpected "
                                "shape", provider=self.kind, operation=operation)
        return data

    def _find(self, envs: list[dict[str, Any]]) -> dict[str, Any] | None:
        wanted = set(self.targets)
        found = [
            e for e in envs
            if e.get("key") == self.key and not e.get("gitBranch")
            and not e.get("customEnvironmentIds") and wanted & set(_targets_of(e))
        ]
        if len(found) > 1:
            shapes = "; ".join(f"{e.get('id')} [{', '.join(_targets_of(e))}]" for e in found)
            raise ConfigError(
                f"{self.describe()}: the value is split over several entries ({shapes}); "
                "restorekit manages one entry: merge them, or configure targets to match one"
            )
        if found and not wanted <= set(_targets_of(found[0])):
            raise ConfigError(
                f"{self.describe()}: entry {found[0].get('id')} covers only "
                f"[{', '.join(_targets_of(found[0]))}]; configure targets to match it"
            )
        if found:
            self._seen_type = str(found[0].get("type"))
        return found[0] if found else None

    def _patch(self, env_id: str, value: str, env_type: str, *, operation: str,
               secrets: tuple[str | None, ...]) -> None:
        body = {"value": value}
        if env_type == "sensitive":
            body["type"] = "sensitive"  # explicit: a swap never makes the value readable
        self.api.request("PATCH", f"/v9/projects/{path_segment(self.project)}/env/"
                         f"{path_segment(env_id)}", operation=operation, body=body,
                         secrets=secrets)

    def _upsert(self, value: str, env_type: str, targets: list[str], operation: str) -> str | None:
        data = self.api.request(
            "POST", self._env_path, operation=operation, params={"upsert": "true"},
            body={"key": self.key, "value": value, "type": env_type, "target": targets},
            secrets=(value,),
        )
        # {"created": env | [env], "failed": [...]}: the id is only a hint, _verify re-reads.
        created = data.get("created") if isinstance(data, dict) else None
        if isinstance(created, list):
            created = created[0] if created else None
        failed = data.get("failed") if isinstance(data, dict) else None
        if failed:
            raise ProviderError(f"{self.describe()}: Vercel refused to create the variable",
                                provider=self.kind, operation=operation)
        return str(created["id"]) if isinstance(created, dict) and created.get("id") else None

    def _delete(self, env_id: str) -> None:
        try:
            self.api.request("DELETE", f"/v9/projects/{path_segment(self.project)}/env/"
                             f"{path_segment(env_id)}", operation="restore")
        except ProviderError as exc:
            if exc.status_code != 404:  # already gone: that is the state we want
                raise

    def _verify(self, env_id: str | None, value: str, *, previous: dict[str, Any] | None,
                operation: str) -> dict[str, Any]:
        """Read the entry back (its value by id) and return it as listed."""
        envs, _ = self._list(operation)
        entry = next((e for e in envs if env_id and str(e.get("id")) == env_id), None)
        if entry is None:
            entry = self._find(envs)
        if entry is None:
            raise ProviderError(f"{self.describe()}: the variable is missing when read back",
                                provider=self.kind, operation=operation)
        was = (previous or {}).get("type")
        if entry.get("type") not in UNREADABLE_TYPES:
            if was in UNREADABLE_TYPES:
                raise ProviderError(f"{self.describe()}: the variable was {was!r} and is "
                                    f"{entry.get('type')!r} after the write",
                                    provider=self.kind, operation=operation)
            readable = _decrypted(self._fetch(str(entry["id"]), operation))
            if readable is None:
                raise ProviderError(f"{self.describe()}: the value written could not be read "
                                    "back decrypted", provider=self.kind, operation=operation)
            if readable != value:
                raise ProviderError(f"{self.describe()}: the value read back differs from the "
                                    "value written", provider=self.kind, operation=operation)
            return entry
        # Sensitive: the value cannot be compared; the entry must at least have changed.
        before = (previous or {}).get("updatedAt")
        after = entry.get("updatedAt")
        if previous is not None and not (isinstance(after, (int, float))
                                         and isinstance(before, (int, float)) and after > before):
            raise ProviderError(f"{self.describe()}: sensitive value; updatedAt did not advance "
                                f"({before} -> {after}), so the write is not confirmed",
                                provider=self.kind, operation=operation)
        return entry

    def _create(self, value: str, cipher: Any) -> Revision:
        backup = self._save_backup(cipher, {"existed": False, "env_id": None, "value": None,
                                            "type": None, "target": None, "updated_at": None})
        created: str | None = None
        try:
            created = self._upsert(value, self.env_type, list(self.targets), "write")
            self._remember(self._verify(created, value, previous=None, operation="write"),
                           value)
        except RestoreKitError as exc:
            with contextlib.suppress(RestoreKitError):
                envs, _ = self._list("write")
                entry = self._find(envs)
                if entry is not None:
                    self._delete(str(entry["id"]))
            raise ProviderError(f"{exc}; the variable the write created was removed again",
                                provider=self.kind, operation="write") from exc
        log.info("created %s (it did not exist; restore removes it)", self.describe())
        return Revision(store=self.kind, location=self.location, ref=str(backup))


def _targets_of(entry: dict[str, Any]) -> list[str]:
    target = entry.get("target")
    if isinstance(target, str):
        return [target]
    if isinstance(target, list):
        return [str(t) for t in target]
    return []


def _decrypted(entry: dict[str, Any]) -> str | None:
    """The value of a ``GET .../env/{id}`` answer, or None when it is not a decrypted one."""
    value = entry.get("value")
    if not isinstance(value, str) or entry.get("type") in UNREADABLE_TYPES:
        return None
    if entry.get("decrypted") is True:
        return value
    # A plain value is stored as is; only a missing flag is tolerated, never "decrypted": false.
    return value if entry.get("type") == "plain" and "decrypted" not in entry else None


def _hidden_note(hidden: int) -> str:
    if not hidden:
        return ""
    return (f"; {hidden} production variable(s) are hidden from this token (it may lack the "
            "permission to see production env vars)")

"""A Vercel project environment variable as the place where DATABASE_URL lives (§5.1, §5.2).

The store manages ONE env entry: ``key`` whose ``target`` covers every configured target
(default ``["production"]``), with no git branch and no custom environment. A change applies
only to the next *build* (provider-apis.md §5.2): the caller redeploys afterwards.

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

Sensitive variables
-------------------
A ``sensitive`` env var (and an ``encrypted`` one the token may not decrypt) cannot be read back:
``read()`` raises a :class:`ConfigError` saying so. ``write()`` still works; it verifies the
write by the entry's ``updatedAt`` advancing instead of by value, and the previous value is then
unknown, so ``restore`` of such a revision raises a :class:`ProviderError` telling the operator
to set the value by hand.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr

from restorekit.apps.vercel import DEFAULT_BASE_URL, VercelClient, path_segment
from restorekit.errors import ConfigError, ProviderError, RestoreKitError
from restorekit.sinks.base import Revision, check_new_value

log = logging.getLogger(__name__)

_KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TARGETS = frozenset({"production", "preview", "development"})
_UNREADABLE_TYPES = frozenset({"sensitive", "secret"})
_BACKUP_VERSION = 1


class VercelEnvStore:
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
        backup_key_env: str | None = None,
        request_timeout_seconds: float = 30.0,
        max_retries: int = 4,
        max_retry_after_seconds: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not project or not isinstance(project, str):
            raise ConfigError("vercel env store: project (id or name) is required")
        if not _KEY_NAME.fullmatch(key or ""):
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
        if backup_key_env is not None and not _KEY_NAME.fullmatch(backup_key_env):
            raise ConfigError(f"vercel env store: backup_key_env must name an environment "
                              f"variable; got {backup_key_env!r}")
        self.project = project
        self.key = key
        self.targets = tuple(dict.fromkeys(targets))
        self.env_type = env_type
        self.state_dir = Path(state_dir).absolute()
        self.backup_key_env = backup_key_env
        self.api = VercelClient(
            provider=self.kind, token_env=token_env, team_id=team_id, team_slug=team_slug,
            base_url=base_url, timeout=request_timeout_seconds, max_retries=max_retries,
            max_retry_after=max_retry_after_seconds, transport=transport, sleep=sleep,
        )

    def __repr__(self) -> str:
        return f"VercelEnvStore(project={self.project!r}, key={self.key!r})"

    def close(self) -> None:
        self.api.close()

    @property
    def backup_dir(self) -> Path:
        return self.state_dir / "vercel-env"

    def describe(self) -> str:
        return (f"Vercel env {self.key} [{', '.join(self.targets)}] of project "
                f"{self.project}{self.api.describe_scope()}")

    # -- ConnectionStore ---------------------------------------------------------------------

    def read(self) -> SecretStr:
        envs, hidden = self._list("read")
        entry = self._find(envs)
        if entry is None:
            raise ConfigError(f"{self.describe()}: no such variable"
                              + _hidden_note(hidden))
        value = _readable(entry)
        if value is None:
            raise ConfigError(self._unreadable(entry))
        if not value:
            raise ConfigError(f"{self.describe()}: the value is empty")
        return SecretStr(value)

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
        old = _readable(entry)
        env_id = str(entry["id"])
        backup = self._save_backup(cipher, {
            "existed": True, "env_id": env_id, "value": old, "type": entry.get("type"),
            "target": _targets_of(entry), "updated_at": entry.get("updatedAt"),
        })
        revision = Revision(store=self.kind, location=self.describe(), ref=str(backup))
        if old is None:
            log.warning("%s: %s; writing anyway, verified by updatedAt: a rollback cannot put "
                        "the previous value back", self.describe(), self._unreadable(entry))
        try:
            self._patch(env_id, value, operation="write", secrets=(value, old))
            self._verify(env_id, value, previous=entry, operation="write")
        except RestoreKitError as exc:
            problem = str(exc)
            if old is None:
                raise ProviderError(
                    f"{problem}; the previous value was not readable (sensitive), so it could "
                    "not be put back: set it by hand in the Vercel dashboard",
                    provider=self.kind, operation="write",
                ) from exc
            try:
                self._patch(env_id, old, operation="write", secrets=(value, old))
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
        if revision.store != self.kind or revision.location != self.describe():
            raise ConfigError(
                f"revision of {revision.store} {revision.location!r} cannot be restored into "
                f"{self.describe()}"
            )
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
        if old is None:
            raise ProviderError(
                f"{self.describe()}: the value before the write was a sensitive one that "
                "cannot be read back, so it was never saved; set it by hand in the Vercel "
                "dashboard (nothing was changed)", provider=self.kind, operation="restore",
            )
        entry = by_id.get(str(env_id))
        if entry is None:
            entry = self._find(envs)
        if entry is not None and _readable(entry) == old:
            log.info("restored %s: the previous value is already in place", self.describe())
            return
        if entry is not None:
            self._patch(str(entry["id"]), old, operation="restore", secrets=(old,))
            self._verify(str(entry["id"]), old, previous=entry, operation="restore")
        else:
            created = self._upsert(old, saved.get("type") or self.env_type,
                                   saved.get("target") or list(self.targets), "restore")
            self._verify(created, old, previous=None, operation="restore")
        log.info("restored %s from %s", self.describe(), revision.ref)

    # -- Vercel calls ------------------------------------------------------------------------

    @property
    def _env_path(self) -> str:
        return f"/v10/projects/{path_segment(self.project)}/env"

    def _list(self, operation: str) -> tuple[list[dict[str, Any]], int]:
        data = self.api.request("GET", self._env_path, operation=operation,
                                params={"decrypt": "true"})
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
        return found[0] if found else None

    def _patch(self, env_id: str, value: str, *, operation: str,
               secrets: tuple[str | None, ...]) -> None:
        self.api.request("PATCH", f"/v9/projects/{path_segment(self.project)}/env/"
                         f"{path_segment(env_id)}", operation=operation,
                         body={"value": value}, secrets=secrets)

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
                operation: str) -> None:
        envs, _ = self._list(operation)
        entry = next((e for e in envs if env_id and str(e.get("id")) == env_id), None)
        if entry is None:
            entry = self._find(envs)
        if entry is None:
            raise ProviderError(f"{self.describe()}: the variable is missing when read back",
                                provider=self.kind, operation=operation)
        readable = _readable(entry)
        if readable is not None:
            if readable != value:
                raise ProviderError(f"{self.describe()}: the value read back differs from the "
                                    "value written", provider=self.kind, operation=operation)
            return
        # Sensitive: the value cannot be compared; the entry must at least have changed.
        before = (previous or {}).get("updatedAt")
        after = entry.get("updatedAt")
        if previous is not None and not (isinstance(after, (int, float))
                                         and isinstance(before, (int, float)) and after > before):
            raise ProviderError(f"{self.describe()}: sensitive value; updatedAt did not advance "
                                f"({before} -> {after}), so the write is not confirmed",
                                provider=self.kind, operation=operation)

    def _create(self, value: str, cipher: Any) -> Revision:
        backup = self._save_backup(cipher, {"existed": False, "env_id": None, "value": None,
                                            "type": None, "target": None, "updated_at": None})
        created: str | None = None
        try:
            created = self._upsert(value, self.env_type, list(self.targets), "write")
            self._verify(created, value, previous=None, operation="write")
        except RestoreKitError as exc:
            with contextlib.suppress(RestoreKitError):
                envs, _ = self._list("write")
                entry = self._find(envs)
                if entry is not None:
                    self._delete(str(entry["id"]))
            raise ProviderError(f"{exc}; the variable the write created was removed again",
                                provider=self.kind, operation="write") from exc
        log.info("created %s (it did not exist; restore removes it)", self.describe())
        return Revision(store=self.kind, location=self.describe(), ref=str(backup))

    def _unreadable(self, entry: dict[str, Any]) -> str:
        return (f"{self.describe()}: the variable is of type {entry.get('type')!r} and its "
                "value cannot be read back through the API (Vercel never returns sensitive "
                "values); restorekit can overwrite it but cannot read it or put an unknown "
                "previous value back. Make it 'encrypted' to get read-back and rollback")

    # -- encrypted backups -------------------------------------------------------------------

    def _cipher(self) -> Any:
        from cryptography.fernet import Fernet
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        if self.backup_key_env is not None:
            raw = os.environ.get(self.backup_key_env, "").strip()
            if not raw:
                raise ConfigError(f"{self.describe()}: environment variable "
                                  f"{self.backup_key_env} (backup_key_env) is not set")
            try:
                return Fernet(raw.encode())
            except (ValueError, TypeError):
                raise ConfigError(
                    f"{self.describe()}: {self.backup_key_env} does not hold a Fernet key "
                    "(32 url-safe base64-encoded bytes; make one with Fernet.generate_key())"
                ) from None
        info = f"{self.api.team_id or self.api.team_slug or ''}/{self.project}/{self.key}"
        derived = HKDF(algorithm=hashes.SHA256(), length=32,
                       salt=b"restorekit vercel env backup v1",
                       info=info.encode()).derive(self.api.token().encode())
        return Fernet(base64.urlsafe_b64encode(derived))

    def _save_backup(self, cipher: Any, payload: dict[str, Any]) -> Path:
        record = {"v": _BACKUP_VERSION, "project": self.project, "key": self.key,
                  "team": self.api.team_id or self.api.team_slug, **payload}
        token: bytes = cipher.encrypt(json.dumps(record).encode())
        with self._io("write"):
            self.backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            stem = f"{_file_safe(self.project)}.{self.key}.{_utc_stamp()}"
            for attempt in range(100):
                path = self.backup_dir / f"{stem}{'' if attempt == 0 else f'-{attempt}'}.bak"
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    continue
                with os.fdopen(fd, "wb") as fh:
                    os.fchmod(fh.fileno(), 0o600)
                    fh.write(token)
                    fh.flush()
                    os.fsync(fh.fileno())
                return path
        raise ProviderError(f"{self.describe()}: could not create a unique backup file in "
                            f"{self.backup_dir}", provider=self.kind, operation="write")

    def _load_backup(self, path: Path) -> dict[str, Any]:
        from cryptography.fernet import InvalidToken

        # A revision comes back from Prefect's stored state: only our own files are accepted.
        pattern = re.compile(rf"{re.escape(_file_safe(self.project))}\.{re.escape(self.key)}"
                             r"\.\d{8}T\d{12}Z(?:-\d+)?\.bak")
        if path.parent != self.backup_dir or not pattern.fullmatch(path.name):
            raise ConfigError(f"{path} is not a restorekit backup of {self.describe()}")
        with self._io("restore"):
            try:
                token = path.read_bytes()
            except FileNotFoundError:
                raise ProviderError(f"{self.describe()}: backup {path} is gone; the previous "
                                    "value cannot be restored", provider=self.kind,
                                    operation="restore") from None
        try:
            record = json.loads(self._cipher().decrypt(token))
        except InvalidToken:
            raise ConfigError(
                f"{self.describe()}: backup {path} cannot be decrypted with the current key "
                f"({'$' + self.backup_key_env if self.backup_key_env else 'derived from the token'}"
                "; was the key or the token changed since the write?)"
            ) from None
        if (not isinstance(record, dict) or record.get("v") != _BACKUP_VERSION
                or record.get("project") != self.project or record.get("key") != self.key
                or record.get("team") != (self.api.team_id or self.api.team_slug)):
            raise ConfigError(f"{path} is not a restorekit backup of {self.describe()}")
        return record

    @contextlib.contextmanager
    def _io(self, operation: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise ProviderError(
                f"{self.describe()}: {operation} of the backup failed: {exc.strerror or exc}"
                + (f" ({exc.filename})" if exc.filename else ""),
                provider=self.kind, operation=operation,
            ) from exc


def _targets_of(entry: dict[str, Any]) -> list[str]:
    target = entry.get("target")
    if isinstance(target, str):
        return [target]
    if isinstance(target, list):
        return [str(t) for t in target]
    return []


def _readable(entry: dict[str, Any]) -> str | None:
    """The entry's plain value, or None when the API does not give it (sensitive, undecrypted)."""
    if entry.get("type") in _UNREADABLE_TYPES or entry.get("decrypted") is False:
        return None
    value = entry.get("value")
    return value if isinstance(value, str) else None


def _hidden_note(hidden: int) -> str:
    if not hidden:
        return ""
    return (f"; {hidden} production variable(s) are hidden from this token (it may lack the "
            "permission to see production env vars)")


def _file_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def _utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")

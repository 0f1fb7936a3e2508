"""Where :class:`~restorekit.sinks.vercel.VercelEnvStore` keeps values Vercel will not give
back: the previous value of every write (encrypted, for the rollback) and the value restorekit
last wrote into a sensitive entry. The key, the files and the trade-offs are described in
:mod:`restorekit.sinks.vercel`'s docstring."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from restorekit.errors import ConfigError, ProviderError, RestoreKitError
from restorekit.sinks._files import create_exclusive, os_errors, utc_stamp, write_private

if TYPE_CHECKING:
    from restorekit.apps.vercel import VercelClient

log = logging.getLogger(__name__)

#: Entry types whose value Vercel never returns, by any endpoint.
UNREADABLE_TYPES = frozenset({"sensitive", "secret"})
#: The format of the encrypted records.
BACKUP_VERSION = 1


class VercelEnvBackups:
    """The encrypted files of one Vercel env var, under ``<state_dir>/vercel-env/``."""

    kind: ClassVar[str]
    project: str
    key: str
    state_dir: Path
    backup_key_env: str | None
    api: VercelClient

    if TYPE_CHECKING:
        @property
        def location(self) -> str: ...

        def describe(self) -> str: ...

    @property
    def backup_dir(self) -> Path:
        return self.state_dir / "vercel-env"

    # -- the value restorekit last wrote into a sensitive entry -------------------------------

    @property
    def _tracking_path(self) -> Path:
        return self.backup_dir / f"{_file_safe(self.project)}.{self.key}.current"

    def _remember(self, entry: dict[str, Any], value: str) -> None:
        """After a confirmed write into a sensitive entry: keep (encrypted) what it now holds.

        Best effort: the write itself succeeded; without this file ``read()`` falls back to
        ``current_value_env``.
        """
        if entry.get("type") not in UNREADABLE_TYPES:
            return
        record = {"v": BACKUP_VERSION, "project": self.project, "key": self.key,
                  "team": self.api.team_id or self.api.team_slug, "env_id": str(entry.get("id")),
                  "updated_at": entry.get("updatedAt"), "value": value}
        try:
            token: bytes = self._cipher().encrypt(json.dumps(record).encode())
            with self._io("write"):
                self.backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                partial = self._tracking_path.with_name(
                    f"{self._tracking_path.name}.{os.getpid()}.tmp")
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                write_private(fd, token)
                os.replace(partial, self._tracking_path)
        except RestoreKitError as exc:
            log.warning("%s: could not keep the value written (%s); read() will use "
                        "current_value_env", self.location, exc)

    def _tracked(self, entry: dict[str, Any]) -> str | None:
        """The value restorekit last wrote into ``entry``, if nothing changed it since."""
        from cryptography.fernet import InvalidToken

        try:
            token = self._tracking_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("%s: cannot read %s (%s)", self.location, self._tracking_path,
                        exc.strerror or exc)
            return None
        try:
            record = json.loads(self._cipher().decrypt(token))
        except (InvalidToken, ValueError):
            log.warning("%s: %s cannot be decrypted with the current key; ignored",
                        self.location, self._tracking_path)
            return None
        same = (isinstance(record, dict) and record.get("v") == BACKUP_VERSION
                and record.get("project") == self.project and record.get("key") == self.key
                and record.get("team") == (self.api.team_id or self.api.team_slug)
                and record.get("env_id") == str(entry.get("id"))
                and record.get("updated_at") is not None
                and record.get("updated_at") == entry.get("updatedAt"))
        value = record.get("value") if same else None
        return value if isinstance(value, str) and value else None

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
        record = {"v": BACKUP_VERSION, "project": self.project, "key": self.key,
                  "team": self.api.team_id or self.api.team_slug, **payload}
        token: bytes = cipher.encrypt(json.dumps(record).encode())
        with self._io("write"):
            self.backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            stem = f"{_file_safe(self.project)}.{self.key}.{utc_stamp()}"
            path = create_exclusive(lambda suffix: self.backup_dir / f"{stem}{suffix}.bak", token)
        if path is not None:
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
        if (not isinstance(record, dict) or record.get("v") != BACKUP_VERSION
                or record.get("project") != self.project or record.get("key") != self.key
                or record.get("team") != (self.api.team_id or self.api.team_slug)):
            raise ConfigError(f"{path} is not a restorekit backup of {self.describe()}")
        return record

    def _io(self, operation: str) -> contextlib.AbstractContextManager[None]:
        return os_errors(self.describe, provider=self.kind, operation=operation,
                         doing=f"{operation} of the backup")


def _file_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)

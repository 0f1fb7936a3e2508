"""The ConnectionStore interface: where an application's DATABASE_URL lives.

The runbook's "Update Connection String" step writes a new DSN into the store the application
reads at start (an env file, a Vercel environment variable, an AWS Secrets Manager secret, a
Prefect Secret block), and a failed verification must be able to put the old one back.

Contract for implementers:

* ``read()`` returns the current value as a ``SecretStr``. A missing store or key is a
  :class:`~restorekit.errors.ConfigError` naming the location and key, never the value.
* ``write(dsn)`` is atomic on its own: it writes the new value, reads it back and compares;
  when anything fails after the old value was touched it puts the old value back before it
  raises. Prefect only runs ``on_rollback`` hooks for tasks that completed, so a half-done swap
  must never be left behind by the store itself.
* ``write`` returns a :class:`Revision` that says how to get the previous value back. A revision
  holds NO secret: it is stored in Prefect's state and shown in the UI. It names where the old
  value is kept (a 0600 backup file, a secret version id, a deployment id), not the value.
* ``restore(revision)`` brings back exactly what was there before the write that returned it.
  It is idempotent (a rollback hook may run twice) and refuses a revision of another store.
* ``describe()`` is a secret-free location for logs and reports.
* Only :class:`restorekit.errors.RestoreKitError` subclasses escape: I/O and SDK/HTTP errors are
  translated inside the store (``ProviderError`` with ``provider=<kind>``).
* No method blocks for long: remote stores bound every call with a timeout.
* A store holds one key. Keys that move together (``DATABASE_URL`` + ``DIRECT_URL``) are one
  store per key composed by :class:`restorekit.sinks.group.StoreGroup`, which makes the set
  all-or-nothing: no store needs multi-key logic.

Example::

    store = get_store("envfile", path=Path("/srv/app/.env"))
    revision = store.write(new_dsn)   # new_dsn: SecretStr; revision.ref = path of a 0600 backup
    if not check_health(app.health_url()).ok:
        store.restore(revision)
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from restorekit.errors import ConfigError
from restorekit.registry import Registry


class Revision(BaseModel):
    """How to bring back the value a :meth:`ConnectionStore.write` replaced. Holds no secret.

    Attributes:
        store: The store kind that wrote it (``"envfile"``, later ``"vercel"``, ...).
        location: The store's ``describe()`` at write time, so a revision cannot be applied to
            another store by mistake.
        ref: Where the previous value is kept: for an env file the path of the 0600 backup copy;
            for a versioned secret store the previous version id. ``None`` means there was
            nothing before (restoring removes what the write created).
        created_at: When the write happened (UTC).
        members: For a :class:`~restorekit.sinks.group.StoreGroup` (``store="group"``): the
            revision of each key's store, in write order; empty for a single store.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    store: str
    location: str
    ref: str | None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    members: tuple[Revision, ...] = ()


@runtime_checkable
class ConnectionStore(Protocol):
    """Where an application's connection string lives (the contract is in the module docstring)."""

    kind: ClassVar[str]

    def describe(self) -> str:
        """A secret-free location, e.g. ``env file /srv/app/.env (DATABASE_URL)``."""
        ...

    def read(self) -> SecretStr:
        """The current connection string.

        Raises:
            ConfigError: The store or the key does not exist.
            ProviderError: The store could not be read.
        """
        ...

    def write(self, dsn: SecretStr) -> Revision:
        """Replace the connection string, atomically, and say how to undo it.

        Raises:
            ConfigError: ``dsn`` cannot be stored (empty, control characters).
            ProviderError: The write or its read-back failed; the old value is back in place.
        """
        ...

    def restore(self, revision: Revision) -> None:
        """Put back the value that the write returning ``revision`` replaced. Idempotent.

        Raises:
            ConfigError: ``revision`` belongs to another store or points outside it.
            ProviderError: The previous value could not be written back.
        """
        ...


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_revision(revision: Revision, *, kind: str, location: str) -> None:
    """Refuse a revision another store (or another location of this kind) wrote.

    Raises:
        ConfigError: naming both locations.
    """
    if revision.store != kind or revision.location != location:
        raise ConfigError(
            f"revision of {revision.store} {revision.location!r} cannot be restored into "
            f"{location}"
        )


def check_read_value(where: str, value: str | None) -> str:
    """The value a store just read, refused when empty: an empty DSN would only fail later,
    far from the store that holds it. ``where`` is the store's secret-free ``describe()``.

    Raises:
        ConfigError: naming the store, never the value.
    """
    if not value:
        raise ConfigError(f"{where}: the value is empty")
    return value


def check_new_value(where: str, value: str, what: str = "connection string") -> None:
    """Refuse a value no store should write: empty, or with control characters (a pasted
    newline would corrupt an env file and silently break the app). ``where`` is the store's
    secret-free ``describe()``.

    Raises:
        ConfigError: naming the store, never the value.
    """
    if not value:
        raise ConfigError(f"{where}: refusing to write an empty {what}")
    if _CONTROL.search(value):
        raise ConfigError(f"{where}: the {what} contains control characters (a newline?); "
                          "refusing to write it")


_REGISTRY = Registry("connection store", {
    "envfile": "restorekit.sinks.envfile:EnvFileStore",
    "vercel": "restorekit.sinks.vercel:VercelEnvStore",
    "aws-secrets-manager": "restorekit.sinks.aws_secrets:SecretsManagerStore",
    # Lives with the Prefect tasks: it needs Prefect's Secret block, and the core has no Prefect.
    "prefect-secret": "tasks.secret_block:PrefectSecretStore",
})
register = _REGISTRY.register


def get_store(kind: str, **options: Any) -> ConnectionStore:
    """Build the store ``kind`` with its options; SDKs are imported only here, lazily."""
    store: ConnectionStore = _REGISTRY.load(kind)(**options)
    return store

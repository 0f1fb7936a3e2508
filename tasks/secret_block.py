"""A Prefect ``Secret`` block as the place where DATABASE_URL lives.

This store imports Prefect, so it lives here and not in ``restorekit/`` (the core never imports
Prefect). Register it once per process with :func:`register_prefect_secret_store`; after that
``restorekit.sinks.base.get_store("prefect-secret", block_name=...)`` builds it.

The previous value is kept in Prefect itself, in a second Secret block named
``<block_name>-restorekit-previous-<utc stamp>``; a :class:`~restorekit.sinks.base.Revision`'s
``ref`` is that block's *name* (no secret). Backup blocks are not pruned automatically. Values are
read with ``block.value.get_secret_value()`` rather than ``Secret.get()``, which JSON-decodes
strings that look like JSON and so would not round-trip every string exactly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import ClassVar

from prefect.blocks.system import Secret
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from pydantic import SecretStr

from restorekit.errors import ConfigError, ProviderError, RestoreKitError
from restorekit.pg.dsn import redact
from restorekit.sinks.base import (
    Revision,
    check_new_value,
    check_read_value,
    check_revision,
    register,
)

log = logging.getLogger(__name__)

_BLOCK_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")
_BACKUP_INFIX = "-restorekit-previous-"
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def register_prefect_secret_store() -> None:
    """Make ``get_store("prefect-secret", ...)`` build :class:`PrefectSecretStore`."""
    register("prefect-secret", "tasks.secret_block:PrefectSecretStore")


class PrefectSecretStore:
    """A Prefect Secret block (see :class:`restorekit.sinks.base.ConnectionStore`).

    Args:
        block_name: The Secret block's name (lower-case letters, digits, dashes).
        key: The application's variable name (only shown in ``describe()``).
        clock: Injected for tests (backup block names carry its UTC time).

    Example:
        >>> register_prefect_secret_store()
        >>> store = get_store("prefect-secret", block_name="shop-database-url")
        >>> revision = store.write(SecretStr("postgresql://app@db-restored/shop"))
        >>> revision.ref
        'shop-database-url-restorekit-previous-20261125t135215123456z'
    """

    kind: ClassVar[str] = "prefect-secret"

    def __init__(self, block_name: str, *, key: str = "DATABASE_URL",
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        if not isinstance(block_name, str) or not _BLOCK_NAME.fullmatch(block_name):
            raise ConfigError(f"prefect-secret: block_name must be lower-case letters, digits "
                              f"and dashes (at most 100), got {block_name!r}")
        self.block_name = block_name
        self.key = key
        self._clock = clock

    def __repr__(self) -> str:
        return f"PrefectSecretStore(block_name={self.block_name!r})"

    def describe(self) -> str:
        return f"Prefect Secret block {self.block_name} ({self.key})"

    # -- ConnectionStore ---------------------------------------------------------------------

    def read(self) -> SecretStr:
        value = self._load(self.block_name, "read")
        if value is None:
            raise ConfigError(f"{self.describe()}: no such block; create it with "
                              f"Secret(value=...).save({self.block_name!r})")
        return SecretStr(check_read_value(self.describe(), value))

    def write(self, dsn: SecretStr) -> Revision:
        value = dsn.get_secret_value()
        check_new_value(self.describe(), value)
        previous = self._load(self.block_name, "write")
        backup = None if previous is None else self._save_backup(previous)
        revision = Revision(store=self.kind, location=self.describe(), ref=backup)
        try:
            self._save(self.block_name, value, "write")
            if self._load(self.block_name, "write") != value:
                raise ProviderError(f"{self.describe()}: the value read back differs from the "
                                    "value written", provider=self.kind, operation="write")
        except RestoreKitError as exc:
            try:
                if previous is None:
                    self._delete(self.block_name, "write")
                else:
                    self._save(self.block_name, previous, "write")
            except RestoreKitError as put_back:
                raise ProviderError(
                    f"{exc}; putting the previous value back failed too ({put_back}); it is "
                    f"kept in block {backup}", provider=self.kind, operation="write",
                ) from exc
            raise ProviderError(f"{exc}; the previous value was put back", provider=self.kind,
                                operation="write") from exc
        log.info("wrote %s (previous value kept in block %s)", self.describe(),
                 backup or "nothing: new")
        return revision

    def restore(self, revision: Revision) -> None:
        check_revision(revision, kind=self.kind, location=self.describe())
        if revision.ref is None:
            # The write created the block: the previous state is "no block".
            self._delete(self.block_name, "restore")
            log.info("restored %s: removed the block the write had created", self.describe())
            return
        pattern = re.compile(rf"{re.escape(self.block_name)}{_BACKUP_INFIX}"
                             r"\d{8}t\d{12}z(?:-\d+)?")
        if not pattern.fullmatch(revision.ref):
            raise ConfigError(f"{revision.ref!r} is not a restorekit backup of {self.describe()}")
        previous = self._load(revision.ref, "restore")
        if previous is None:
            raise ProviderError(f"{self.describe()}: backup block {revision.ref} is gone; the "
                                "previous value cannot be restored", provider=self.kind,
                                operation="restore")
        if self._load(self.block_name, "restore") == previous:
            log.info("restored %s: the previous value is already in place", self.describe())
            return
        self._save(self.block_name, previous, "restore")
        if self._load(self.block_name, "restore") != previous:
            raise ProviderError(f"{self.describe()}: the value read back differs from the "
                                "restored value", provider=self.kind, operation="restore")
        log.info("restored %s from block %s", self.describe(), revision.ref)

    # -- Prefect calls -----------------------------------------------------------------------

    def _load(self, name: str, operation: str) -> str | None:
        """The block's string value, or None when there is no such block."""
        try:
            # _sync=True: this store is synchronous, also when called from an async flow.
            # Prefect's async_dispatch takes _sync but its signature does not say so (nor that
            # _sync=True means no coroutine back): hence the ignores here and below.
            block: Secret[str] = Secret.load(name, _sync=True)  # type: ignore[call-arg,assignment]
        except ValueError as exc:
            if isinstance(exc.__cause__, ObjectNotFound):
                return None
            raise self._error(exc, operation) from exc
        except Exception as exc:  # noqa: BLE001 - translated at the adapter boundary
            raise self._error(exc, operation) from exc
        value = block.value.get_secret_value()
        if not isinstance(value, str):
            raise ConfigError(f"Prefect Secret block {name} holds a {type(value).__name__}, "
                              "not a connection string")
        return value

    def _save(self, name: str, value: str, operation: str, *, overwrite: bool = True) -> None:
        try:
            Secret(value=SecretStr(value)).save(name, overwrite=overwrite,  # type: ignore[call-arg]
                                                _sync=True)
        except Exception as exc:  # noqa: BLE001 - translated at the adapter boundary
            raise self._error(exc, operation) from exc

    def _delete(self, name: str, operation: str) -> None:
        try:
            Secret.delete(name, _sync=True)  # type: ignore[call-arg]
        except ValueError as exc:
            if not isinstance(exc.__cause__, ObjectNotFound):
                raise self._error(exc, operation) from exc
        except ObjectNotFound:
            pass  # already gone: that is the state we want
        except Exception as exc:  # noqa: BLE001 - translated at the adapter boundary
            raise self._error(exc, operation) from exc

    def _save_backup(self, value: str) -> str:
        stamp = self._clock().astimezone(UTC).strftime("%Y%m%dt%H%M%S%fz")
        base = f"{self.block_name}{_BACKUP_INFIX}{stamp}"
        for attempt in range(100):
            name = base if attempt == 0 else f"{base}-{attempt}"
            if self._load(name, "write") is not None:
                continue
            self._save(name, value, "write", overwrite=False)
            return name
        raise ProviderError(f"{self.describe()}: could not find a free backup block name",
                            provider=self.kind, operation="write")

    def _error(self, exc: Exception, operation: str) -> RestoreKitError:
        if isinstance(exc, RestoreKitError):
            return exc
        status: int | None = None
        if isinstance(exc, PrefectHTTPStatusError):
            status = exc.response.status_code
            retryable = status in _RETRYABLE_STATUS
            detail = f"the Prefect API answered {status}"
        else:
            # Connection failures surface as httpx errors; tasks/ may not import httpx (the
            # architecture rule), so they are recognised by module.
            retryable = type(exc).__module__.split(".")[0] in ("httpx", "httpcore")
            detail = f"{type(exc).__name__}: {exc}"
        return ProviderError(f"{self.describe()}: {operation} failed: {redact(detail)}",
                             provider=self.kind, operation=operation, retryable=retryable,
                             status_code=status)

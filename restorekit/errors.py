"""One error taxonomy for restorekit.

Every error restorekit raises derives from :class:`RestoreKitError`. Each class says whether a
retry can help (``retryable``); Prefect tasks retry only those (see ``tasks.retry_if_transient``).

    RestoreKitError                      root; never raised directly
    ├── ConfigError                      bad config or parameters              retryable=False
    ├── RestorePointError                restore point invalid / outside window / unreachable
    ├── CapabilityNotSupported           the provider cannot do what was asked
    ├── ProviderError                    an adapter's remote call failed       .retryable per case
    │   ├── RestoreNotStarted            refused before the request: nothing changed
    │   ├── OperationTimedOut            our deadline passed; remote state unknown
    │   └── OperationFailed              the remote operation ended failed
    ├── RepositoryError                  backup repository I/O                 .retryable per case
    │   ├── ObjectNotFound               the object does not exist
    │   └── ChecksumMismatch             an object read back differs from what was written
    ├── PostgresError                    a PostgreSQL server or tool failed
    │   ├── PostgresUnavailable          connect failed / cannot_connect_now   retryable=True
    │   ├── PostgresAuthError            the server refused the credentials    retryable=False
    │   └── PgToolFailed                 non-zero exit of pg_* / pgbackrest (.argv redacted)
    ├── VerificationFailed               .report carries the failing checks
    └── SafetyError                      a guard refused: no snapshot, target is production, ...

Messages never contain secrets: DSNs are redacted with :func:`restorekit.pg.dsn.redact` before
they are put into an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar


class RestoreKitError(Exception):
    """Root of every restorekit error."""

    retryable: ClassVar[bool] = False

    @property
    def is_retryable(self) -> bool:
        return self.retryable


class ConfigError(RestoreKitError):
    """Bad configuration or parameters. Never retried: the input has to change."""


class RestorePointError(RestoreKitError):
    """The restore point is malformed, outside the restore window, or the WAL cannot reach it."""

    def __init__(self, message: str, *, window: Any = None) -> None:
        super().__init__(message)
        self.window = window


class CapabilityNotSupported(RestoreKitError):
    """The provider does not have the capability a step needs."""


class ProviderError(RestoreKitError):
    """A provider's remote operation failed. ``retryable`` is set per instance."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        operation: str = "",
        retryable: bool = False,
        status_code: int | None = None,
        retry_after: float | None = None,
        code: str = "",
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.operation = operation
        self._retryable = retryable
        self.status_code = status_code
        self.retry_after = retry_after
        self.code = code  # the provider's own error code (AWS Error.Code, Neon code, ...)
        self.request_id = request_id  # for the provider's support
        # Set by restorekit.providers._http when its retry policy already covered this failure
        # (retried it to the end of its budget, or the server asked for a longer wait): a
        # task-level retry would only multiply the attempts (tasks._runtime.retry_if_transient).
        self.retry_spent = False

    @property
    def is_retryable(self) -> bool:
        return self._retryable


class RestoreNotStarted(ProviderError):
    """The provider's state forbids a restore (a paused or failed project): nothing was sent,
    nothing changed, so a flow can put the application back as it was."""


class OperationTimedOut(ProviderError):
    """Our deadline passed while waiting. The remote operation may still be running."""


class OperationFailed(ProviderError):
    """A remote operation ended in a failed state (a restore, a build, a branch operation)."""


class RepositoryError(RestoreKitError):
    """The backup repository could not be read or written."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self._retryable = retryable

    @property
    def is_retryable(self) -> bool:
        return self._retryable


class ObjectNotFound(RepositoryError):
    """The object does not exist in the repository."""


class ChecksumMismatch(RepositoryError):
    """An object read back does not match the checksum recorded when it was written."""


class WalConflict(RepositoryError):
    """A different file is already archived under this WAL name; it is never overwritten."""


class PostgresError(RestoreKitError):
    """A PostgreSQL server or client tool failed."""


class PostgresUnavailable(PostgresError):
    """The server cannot be reached or is still starting (SQLSTATE 57P03)."""

    retryable = True


class DatabaseMissing(PostgresError):
    """The database the connection string names does not exist (SQLSTATE 3D000)."""


class PostgresAuthError(PostgresError):
    """The server refused restorekit's credentials (bad or missing password, no pg_hba.conf
    entry, unknown role). Never retried: the configuration has to change."""

    def __init__(self, message: str, *, role: str = "", host: str = "") -> None:
        super().__init__(message)
        self.role = role
        self.host = host


class PgToolFailed(PostgresError):
    """A PostgreSQL (or pgBackRest) command exited non-zero.

    ``argv`` is already redacted; ``stderr_tail`` holds the last lines of its error output.
    """

    def __init__(self, argv: Sequence[str], returncode: int, stderr_tail: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        tool = self.argv[0].rsplit("/", 1)[-1] if self.argv else "command"
        super().__init__(
            f"{tool} exited with status {returncode}: {stderr_tail.strip() or '(no output)'}"
        )


class VerificationFailed(RestoreKitError):
    """Verification found critical failures; ``report`` names them."""

    def __init__(self, report: Any) -> None:
        self.report = report
        failing = getattr(report, "critical_failures", ())
        names = ", ".join(getattr(c, "name", str(c)) for c in failing) or "unknown"
        super().__init__(f"verification failed: {names}")


class SafetyError(RestoreKitError):
    """A safety guard refused to go on (no verified snapshot, target is production, ...)."""


def is_retryable(exc: BaseException) -> bool:
    """True when retrying the operation that raised ``exc`` can help."""
    return isinstance(exc, RestoreKitError) and exc.is_retryable

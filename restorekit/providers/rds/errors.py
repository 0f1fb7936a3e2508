"""RDS errors: botocore exceptions translated into restorekit errors (:func:`map_rds_errors`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
    WaiterError,
)

from restorekit.errors import (
    ConfigError,
    OperationTimedOut,
    ProviderError,
)

PROVIDER = "rds"

_THROTTLING = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "SlowDown", "PriorRequestNotComplete", "BandwidthLimitExceeded",
})
_TRANSIENT = frozenset({
    "InternalFailure", "InternalError", "InternalServerError", "InternalServiceError",
    "ServiceUnavailable", "ServiceUnavailableException", "ServiceUnavailableError",
    "RequestTimeout", "RequestTimeoutException",
})
_NOT_FOUND = frozenset({
    "DBInstanceNotFound", "DBInstanceNotFoundFault", "DBSnapshotNotFound",
    "DBSnapshotNotFoundFault", "DBClusterNotFoundFault", "DBClusterSnapshotNotFoundFault",
})
_HINTS = {
    "DBInstanceNotFound": "the DB instance does not exist (check instance_id and region)",
    "DBClusterNotFoundFault": "the DB cluster does not exist (check aurora_cluster_id and region)",
    "DBSnapshotNotFound": "the snapshot does not exist",
    "PointInTimeRestoreNotEnabled": "point-in-time restore is not enabled for the source: "
    "automated backups are off (BackupRetentionPeriod 0)",
    "InvalidRestoreFault": "RDS cannot restore to that point (outside the restorable window, "
    "or the backups cannot reach it)",
    "DBInstanceAlreadyExists": "an instance with that identifier already exists",
    "InvalidDBInstanceState": "the instance is busy (creating, modifying, deleting) or in a "
    "state that does not allow this",
    "InsufficientDBInstanceCapacity": "no capacity for that instance class in this AZ; set "
    "db_instance_class to another class",
    "DBSubnetGroupNotFoundFault": "the source's DB subnet group no longer exists",
    "AccessDenied": "the AWS credentials lack the permission",
    "AccessDeniedException": "the AWS credentials lack the permission",
    "UnauthorizedOperation": "the AWS credentials lack the permission",
    "InvalidClientTokenId": "the AWS credentials are not valid",
    "SignatureDoesNotMatch": "the AWS credentials are not valid",
    "ExpiredToken": "the AWS session token has expired",
    "ExpiredTokenException": "the AWS session token has expired",
}


def _client_error_retryable(code: str, status: int | None) -> bool:
    return (code in _THROTTLING or code.startswith("Throttl") or code in _TRANSIENT
            or (status is not None and status >= 500))


def _on(resource: str) -> str:
    return f" ({resource})" if resource else ""


def _from_client_error(exc: ClientError, operation: str, resource: str) -> ProviderError:
    error = exc.response.get("Error", {}) or {}
    meta = exc.response.get("ResponseMetadata", {}) or {}
    code = str(error.get("Code") or "Unknown")
    message = str(error.get("Message") or "").strip()
    status = meta.get("HTTPStatusCode")
    status = int(status) if status is not None else None
    retryable = _client_error_retryable(code, status)
    hint = _HINTS.get(code) or _HINTS.get(code.removesuffix("Fault"))
    attempts = int(meta.get("RetryAttempts") or 0) + 1  # botocore's own retries included
    text = f"RDS {operation}{_on(resource)} failed: {code}: {message or '(no message)'}"
    if hint:
        text += f" — {hint}"
    if retryable:
        text += (f" (transient; still failing after {attempts} attempts)" if attempts > 1
                 else " (transient; retrying may help)")
    if meta.get("RequestId"):
        text += f" [request id {meta['RequestId']}]"
    return ProviderError(text, provider=PROVIDER, operation=operation, retryable=retryable,
                         status_code=status, code=code, request_id=meta.get("RequestId"))


@contextlib.contextmanager
def map_rds_errors(operation: str, *, resource: str = "") -> Iterator[None]:
    """Translate botocore errors raised inside the block into restorekit errors.

    * ``ClientError`` → :class:`ProviderError` with the AWS code and message; retryable for
      throttling, 5xx, ``InternalFailure`` and ``ServiceUnavailable``; not for 4xx faults such
      as ``DBInstanceNotFound``, ``InvalidRestoreFault`` or ``PointInTimeRestoreNotEnabled``.
      ``status_code`` is the HTTP status (404 for the not-found faults).
    * connection failures and timeouts talking to the API → retryable :class:`ProviderError`.
    * a waiter that ran out of attempts → :class:`OperationTimedOut` naming ``resource``.
    * missing credentials → non-retryable :class:`ProviderError`; invalid request parameters →
      :class:`ConfigError`.

    The original exception is chained (``raise ... from exc``).
    """
    try:
        yield
    except ClientError as exc:
        raise _from_client_error(exc, operation, resource) from exc
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
            ConnectionClosedError) as exc:
        raise ProviderError(
            f"RDS {operation}{_on(resource)}: the RDS API did not answer ({exc}); "
            "retrying may help",
            provider=PROVIDER, operation=operation, retryable=True,
        ) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise ProviderError(
            f"RDS {operation}: no usable AWS credentials in the AWS credential chain "
            "(environment, shared config/profile, container or instance role)",
            provider=PROVIDER, operation=operation,
        ) from exc
    except ParamValidationError as exc:
        raise ConfigError(f"RDS {operation}{_on(resource)}: invalid request: {exc}") from exc
    except WaiterError as exc:
        reason = str(getattr(exc, "kwargs", {}).get("reason", exc))
        if "max attempts exceeded" in reason.lower():
            raise OperationTimedOut(
                f"RDS {operation}: {resource or 'the resource'} did not become available in "
                f"time ({reason}); it may still be in progress",
                provider=PROVIDER, operation=operation,
            ) from exc
        raise ProviderError(f"RDS {operation}{_on(resource)}: {reason}", provider=PROVIDER,
                            operation=operation) from exc
    except BotoCoreError as exc:
        raise ProviderError(f"RDS {operation}{_on(resource)}: {exc}", provider=PROVIDER,
                            operation=operation) from exc


def aws_error_code(exc: BaseException) -> str | None:
    """The AWS error code behind a translated error (``DBInstanceNotFound``), if any."""
    cause = exc.__cause__
    if isinstance(cause, ClientError):
        return str(cause.response.get("Error", {}).get("Code") or "") or None
    return None


def _is_not_found(exc: ProviderError) -> bool:
    return aws_error_code(exc) in _NOT_FOUND


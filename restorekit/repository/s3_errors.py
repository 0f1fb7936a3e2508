"""boto3, botocore and s3transfer errors translated into restorekit's taxonomy: ``ObjectNotFound``,
or a ``RepositoryError`` that is retryable for 5xx, throttling, timeouts and lost connections.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from restorekit.errors import (
    ObjectNotFound,
    RepositoryError,
    RestoreKitError,
)
from restorekit.repository.s3_client import S3_CONNECT_TIMEOUT, S3_READ_TIMEOUT_ENV

_THROTTLING = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "SlowDown",
    "RequestLimitExceeded", "RequestTimeout", "RequestTimeTooSkewed", "InternalError",
    "ServiceUnavailable", "BandwidthLimitExceeded", "EC2ThrottledException",
})
_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})


def _is_not_found(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in _NOT_FOUND or (status == 404 and code != "NoSuchBucket")


@contextlib.contextmanager
def _map_s3_errors(operation: str, key: str, url: str, bucket: str, *,
                   read_timeout: float | None = None, attempts: int | None = None
                   ) -> Iterator[None]:
    """Translate boto/botocore/s3transfer errors into restorekit's taxonomy."""
    try:
        yield
    except RestoreKitError:
        raise
    except Exception as exc:
        raise s3_error(exc, operation=operation, key=key, url=url, bucket=bucket,
                       read_timeout=read_timeout, attempts=attempts) from exc


def s3_error(exc: BaseException, *, operation: str, key: str, url: str, bucket: str,
             read_timeout: float | None = None, attempts: int | None = None
             ) -> RepositoryError:
    """The RepositoryError for a boto3/botocore/s3transfer exception (exposed for tests).

    ``read_timeout`` and ``attempts`` (the client's settings, when known) make a timeout's
    message say how long was waited.
    """
    from botocore import exceptions as bce

    what = f"S3 {operation} of {key!r} in {url}" if key else f"S3 {operation} in {url}"
    if isinstance(exc, bce.ReadTimeoutError | bce.ConnectTimeoutError):
        # Said in words, not botocore's "Read timeout on endpoint URL": an operator must tell a
        # hanging endpoint from one that refuses connections (EndpointConnectionError below).
        # A stall mid-download raises the same error, once (botocore retries whole requests).
        tries = f"each request is tried {attempts} times; " if attempts else ""
        if isinstance(exc, bce.ReadTimeoutError):
            waited = f" for {read_timeout:g} s" if read_timeout else ""
            detail = (f"it accepted the connection but nothing came back{waited} ({tries}the "
                      f"endpoint hangs or is overloaded; {S3_READ_TIMEOUT_ENV} sets how long "
                      "to wait)")
        else:
            detail = (f"no connection to the endpoint within {S3_CONNECT_TIMEOUT:g} s ({tries}"
                      "the host is down or a firewall drops the packets)")
        return RepositoryError(f"{what} timed out talking to the repository: {detail}",
                               retryable=True)
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = str(error.get("Message", "")).strip()
        if code == "NoSuchBucket":
            return RepositoryError(f"{what} failed: bucket {bucket!r} does not exist; create it "
                                   "or fix the repository URL")
        if _is_not_found(exc):
            return ObjectNotFound(f"{key!r} not found in {url}")
        retryable = (status is None or status >= 500 or status == 429 or code in _THROTTLING)
        hint = ""
        if status in (401, 403) or code in ("AccessDenied", "InvalidAccessKeyId",
                                            "SignatureDoesNotMatch", "ExpiredToken"):
            hint = " (check the AWS credentials in the environment and the bucket policy)"
        return RepositoryError(f"{what} failed: {code or 'error'} (HTTP {status}): "
                               f"{message}{hint}", retryable=retryable)
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return RepositoryError(f"{what} failed: no usable AWS credentials; set "
                               "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run "
                               "with an instance/task role")
    transient = (bce.ConnectionError, bce.HTTPClientError, bce.IncompleteReadError,
                 bce.ChecksumError, bce.FlexibleChecksumError, bce.CredentialRetrievalError,
                 ConnectionError, TimeoutError)
    if isinstance(exc, transient):
        return RepositoryError(f"{what} failed: {exc}", retryable=True)
    exhausted: tuple[type[Exception], ...] = ()
    with contextlib.suppress(ImportError):  # s3transfer comes with boto3
        from s3transfer.exceptions import RetriesExceededError

        exhausted = (RetriesExceededError,)
    if isinstance(exc, exhausted):
        return RepositoryError(f"{what} failed after retries: {exc}", retryable=True)
    if isinstance(exc, OSError):
        return RepositoryError(f"{what} failed: {exc.strerror or exc}")
    return RepositoryError(f"{what} failed: {type(exc).__name__}: {exc}")

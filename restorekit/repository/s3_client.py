"""How an S3 client is configured: how long each request waits for the repository
(``RESTOREKIT_S3_READ_TIMEOUT``) and how many attempts botocore makes.
"""

from __future__ import annotations

import os
from typing import Any

from restorekit.errors import (
    ConfigError,
)

S3_READ_TIMEOUT_ENV = "RESTOREKIT_S3_READ_TIMEOUT"
DEFAULT_S3_READ_TIMEOUT = 120.0
S3_CONNECT_TIMEOUT = 10.0
DEFAULT_S3_ATTEMPTS = 5


def s3_read_timeout(raw: str | None = None) -> float:
    """Seconds each S3 request waits for the repository's answer: 120 unless
    ``RESTOREKIT_S3_READ_TIMEOUT`` says otherwise.

    An endpoint that accepts the connection and then hangs costs about this times botocore's
    attempts (``AWS_MAX_ATTEMPTS``, 5 by default), plus backoff, before the call fails: 10
    minutes with the defaults. Lower it (e.g. 15) to fail over to the runbook sooner; keep it
    well above the slowest honest answer (a large PUT part over a slow link).

    Raises:
        ConfigError: not a number, or not in (0, 3600].
    """
    raw = os.environ.get(S3_READ_TIMEOUT_ENV) if raw is None else raw
    if raw is None or not raw.strip():
        return DEFAULT_S3_READ_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= 3600:  # NaN fails this too
        raise ConfigError(f"{S3_READ_TIMEOUT_ENV}={raw!r}: expected the seconds each S3 request "
                          "waits for an answer, more than 0 and at most 3600, e.g. 30 (unset: "
                          f"{DEFAULT_S3_READ_TIMEOUT:g})")
    return seconds


def _s3_attempts() -> int | None:
    """botocore's attempts per call: ours (5) unless AWS_MAX_ATTEMPTS is set (None: botocore
    will judge the value)."""
    raw = os.environ.get("AWS_MAX_ATTEMPTS")
    if not raw:
        return DEFAULT_S3_ATTEMPTS
    try:
        return int(raw)
    except ValueError:
        return None


def _make_client(endpoint_url: str | None, region: str | None) -> tuple[Any, float, int | None]:
    """An S3 client with credentials from the AWS chain, our retries and timeouts; and the read
    timeout and attempts it was given (the error messages quote them)."""
    from botocore.config import Config

    from restorekit.clients import boto3_session

    read_timeout = s3_read_timeout()
    attempts = _s3_attempts()
    # 5 attempts unless AWS_MAX_ATTEMPTS says otherwise (botocore reads it when unset
    # here). total_max_attempts counts the first try; Config's max_attempts would not.
    retries: dict[str, Any] = {"mode": "standard"}
    if not os.environ.get("AWS_MAX_ATTEMPTS"):
        retries["total_max_attempts"] = DEFAULT_S3_ATTEMPTS
    config = Config(
        retries=retries,
        connect_timeout=S3_CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        max_pool_connections=32,
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    session = boto3_session(region_name=region)
    return session.client("s3", endpoint_url=endpoint_url, config=config), read_timeout, attempts

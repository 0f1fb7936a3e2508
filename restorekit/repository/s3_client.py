"""How an S3 client is configured: how long each request waits for the repository
(``RESTOREKIT_S3_READ_TIMEOUT``) and how many attempts botocore makes.
"""

from __future__ import annotations

import os

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

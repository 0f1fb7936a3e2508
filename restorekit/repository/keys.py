"""Object keys and listing prefixes: relative ``/``-separated paths, checked before any backend
sees them.
"""

from __future__ import annotations

import re

from restorekit.errors import (
    ConfigError,
)
from restorekit.repository.protocol import RECORD_SUFFIX, TEMP_PREFIX

_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise ConfigError.

    A key is a relative, ``/``-separated path: no ``..`` or ``.`` parts, no empty parts, no
    leading ``/``, no backslashes or control characters, not ending in the record suffix.
    """
    if not isinstance(key, str) or not key:
        raise ConfigError("an object key must be a non-empty string such as "
                          "'wal/000000010000000000000001'")
    if key.startswith("/"):
        raise ConfigError(f"object key {key!r} is absolute: keys are relative, "
                          "e.g. 'base/2024-01-01/base.tar'")
    if _CONTROL.search(key):
        raise ConfigError(f"object key {key!r} contains a backslash or control character")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise ConfigError(
                f"object key {key!r} has an empty, '.' or '..' part: write a plain relative path "
                "such as 'base/label/base.tar'"
            )
        if part.startswith(TEMP_PREFIX):
            raise ConfigError(
                f"object key {key!r}: names starting with {TEMP_PREFIX!r} are reserved")
        if len(part.encode()) > 200:
            raise ConfigError(f"object key {key!r}: each part must be at most 200 bytes")
    if key.endswith(RECORD_SUFFIX):
        raise ConfigError(
            f"object key {key!r}: the suffix {RECORD_SUFFIX!r} is reserved for checksum records")
    return key


def _check_prefix(prefix: str) -> str:
    """A listing prefix: a key's beginning ('', 'wal/', 'wal/0000000100')."""
    if prefix == "":
        return prefix
    if prefix.startswith("/") or _CONTROL.search(prefix):
        raise ConfigError(f"list prefix {prefix!r} must be relative, without backslashes or "
                          "control characters")
    *dirs, last = prefix.split("/")
    if any(part in ("", ".", "..") for part in dirs) or last in (".", ".."):
        raise ConfigError(f"list prefix {prefix!r} has an empty, '.' or '..' part")
    return prefix

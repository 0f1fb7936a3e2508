"""Checksum records and verified streams: the ``<key>.sha256.json`` sidecar every object gets
(written after the object is complete), the reader that hashes an upload while it is sent, and
the reader that checks size and sha256 against the record when a download reaches its end.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from restorekit.errors import (
    ChecksumMismatch,
    RepositoryError,
)
from restorekit.repository.compression import ENCODINGS
from restorekit.repository.protocol import CHUNK_SIZE, TEMP_PREFIX, ObjectInfo, Progress

RECORD_FORMAT = "restorekit-checksum/1"
RECORD_FORMAT_ENCODED = "restorekit-checksum/2"


def _now() -> datetime:
    return datetime.now(UTC)


def _record_bytes(info: ObjectInfo) -> bytes:
    body: dict[str, Any] = {"format": RECORD_FORMAT, "key": info.key, "size": info.size,
                            "sha256": info.sha256, "created_at": info.created_at.isoformat()}
    if info.encoding is not None:
        # Another format: a restorekit that predates compression compares the bytes at rest
        # with size/sha256, fails with a checksum mismatch and never hands out compressed bytes.
        body.update(format=RECORD_FORMAT_ENCODED, encoding=info.encoding,
                    stored_size=info.stored_size, stored_sha256=info.stored_sha256)
    return (json.dumps(body, sort_keys=True) + "\n").encode()


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _parse_record(key: str, data: bytes, url: str) -> ObjectInfo:
    try:
        body = json.loads(data)
        encoding = body.get("encoding")
        info = ObjectInfo(key=key, size=int(body["size"]), sha256=str(body["sha256"]),
                          created_at=datetime.fromisoformat(body["created_at"]),
                          encoding=None if encoding is None else str(encoding),
                          stored_size=None if encoding is None else int(body["stored_size"]),
                          stored_sha256=None if encoding is None else str(body["stored_sha256"]))
        if body.get("key") != key or not _SHA256.fullmatch(info.sha256) or info.size < 0:
            raise ValueError("record does not describe this key")
        if encoding is not None and (encoding not in ENCODINGS
                                     or not _SHA256.fullmatch(info.stored_sha256 or "")):
            raise ValueError(f"unknown encoding {encoding!r} or bad stored_sha256")
    except (ValueError, KeyError, TypeError) as exc:
        raise RepositoryError(
            f"checksum record of {key!r} in {url} is unreadable ({exc}); the object cannot be "
            "trusted: re-upload it or remove it"
        ) from None
    return info


def _mismatch(key: str, url: str, expected: ObjectInfo, sha256: str, size: int, *,
              at_rest: bool = False) -> ChecksumMismatch:
    want_sha, want_size = ((expected.stored_sha256, expected.stored_size) if at_rest
                           else (expected.sha256, expected.size))
    what = (f" ({expected.encoding}-compressed bytes at rest)" if at_rest
            else f" (after {expected.encoding} decompression)" if expected.encoding else "")
    return ChecksumMismatch(
        f"checksum mismatch for {key!r} in {url}{what}: expected sha256 {want_sha} "
        f"({want_size} bytes), got sha256 {sha256} ({size} bytes); the stored object is "
        "corrupt or was changed after it was written"
    )


class _HashingReader:
    """Wraps a source stream for uploads: hashes and counts what is read.

    ``read(n)`` returns exactly ``n`` bytes unless at end of stream (multipart uploads need
    full-size parts even from pipes). It reports itself as not seekable so uploaders read it
    once, in order.
    """

    def __init__(self, stream: IO[bytes], progress: Progress | None = None) -> None:
        self._stream = stream
        self._progress = progress
        self.sha = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            chunks = []
            while chunk := self._stream.read(CHUNK_SIZE):
                chunks.append(chunk)
            data = b"".join(chunks)
        else:
            data = self._stream.read(n)
            if data and len(data) < n:
                parts = [data]
                have = len(data)
                while have < n and (more := self._stream.read(n - have)):
                    parts.append(more)
                    have += len(more)
                data = b"".join(parts)
        if data:
            self.sha.update(data)
            self.size += len(data)
            if self._progress is not None:
                self._progress(len(data))
        return data


class _VerifyingReader(io.RawIOBase):
    """A streaming reader that checks size and sha256 against the record when it reaches EOF."""

    def __init__(self, source: Any, expected: ObjectInfo, url: str,
                 errors: Callable[[], ContextManager[None]], *, at_rest: bool = False) -> None:
        super().__init__()
        self._source = source
        self._expected = expected
        self._at_rest = at_rest  # check the compressed bytes (stored_*), not the content
        self._url = url
        self._errors = errors
        self._sha = hashlib.sha256()
        self._size = 0
        self._done = False
        self._failure: ChecksumMismatch | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._failure is not None:
            raise self._failure
        if self._done:
            return 0
        view = memoryview(buffer).cast("B")
        with self._errors():
            data = self._source.read(len(view))
        if not data:
            self._finish()
            return 0
        n = len(data)
        view[:n] = data
        self._sha.update(data)
        self._size += n
        return n

    def _finish(self) -> None:
        self._done = True
        sha = self._sha.hexdigest()
        expected = self._expected
        want = ((expected.stored_sha256, expected.stored_size) if self._at_rest
                else (expected.sha256, expected.size))
        if (sha, self._size) != want:
            self._failure = _mismatch(expected.key, self._url, expected, sha, self._size,
                                      at_rest=self._at_rest)
            raise self._failure

    def drain(self) -> None:
        """Read to EOF (verifying), discarding the rest."""
        while self.read(CHUNK_SIZE):
            pass

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._source.close()
        super().close()


def hash_file(path: Path, progress: Callable[[int], None] | None = None) -> tuple[str, int]:
    """(sha256 hex, size) of a local file, read in chunks (``progress`` told of each)."""
    with open(path, "rb") as f:
        return hash_open_file(f.fileno(), progress)


def hash_open_file(fd: int, progress: Callable[[int], None] | None = None) -> tuple[str, int]:
    """(sha256 hex, size) of the open file ``fd``, read with ``preadv`` into one reused buffer:
    the file offset, which a child process reading the same open file shares, is left alone
    (``open_in_place`` hashes a base backup while tar reads it), and no chunk is allocated."""
    sha = hashlib.sha256()
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    size = 0
    while n := os.preadv(fd, [buf], size):
        sha.update(view[:n])
        size += n
        if progress is not None:
            progress(n)
    return sha.hexdigest(), size


def _temp_name(name: str) -> str:
    return f"{TEMP_PREFIX}{os.urandom(6).hex()}-{name}"[:240]

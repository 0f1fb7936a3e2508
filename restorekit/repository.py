"""Where base backups, WAL and logical snapshots live: a local directory or an S3 bucket.

One interface, :class:`Repository`, with two backends chosen by URL (:func:`open_repository`):

    file:///var/lib/restorekit/repo              LocalRepository (a bare absolute path works too)
    s3://bucket/prefix?endpoint_url=http://127.0.0.1:9000&region=us-east-1
                                                 S3Repository (credentials from the AWS chain only)

Contract, for every backend:

* **Checksum records.** Every object ``<key>`` gets a sidecar record ``<key>.sha256.json``
  (``{"format", "key", "size", "sha256", "created_at"}``), written *after* the object is complete.
  An object without its record is incomplete (an interrupted put): it is not listed, and reading it
  raises :class:`IncompleteObject` (an :class:`~restorekit.errors.ObjectNotFound`). Keys ending in
  ``.sha256.json`` are therefore reserved, and so are names starting with ``.rk-tmp-`` (the local
  backend's temporary files).
* **Atomic puts.** The object appears complete in one step (local: temporary file in the same
  directory, fsync, rename, fsync the directory; S3: ``upload_fileobj``, complete when it
  returns), then its record is written the same way. The old record is removed just before the
  new object lands, so a reader never pairs new bytes with an old record. A failed local put
  leaves the old object and record untouched; a failed S3 overwrite leaves the key incomplete
  until the put is retried. Puts hash while writing: one pass over the data.
* **Verified reads.** ``get_file``, ``get_bytes``, ``open_verified`` and ``verify`` compare size and
  sha256 with the record and raise :class:`~restorekit.errors.ChecksumMismatch` naming the key, the
  expected and actual sha256 and the repository URL. ``get_file`` never leaves unverified bytes at
  ``dest``.
* **Errors.** Only :mod:`restorekit.errors` types escape: ``ObjectNotFound`` for a missing object,
  ``RepositoryError`` with ``retryable`` set for everything else (S3 5xx, throttling and connection
  errors are retryable; 4xx are not), ``ConfigError`` for a bad URL or key. ``delete`` of a missing
  object is not an error.
* **Progress** callbacks receive byte *increments* (like ``tqdm.update`` and boto3's ``Callback``).
* ``url`` is a display form that never contains secrets and that :func:`open_repository` accepts.
* **Compressed objects.** ``put_file``/``put_stream`` with ``encoding="lz4"|"zstd"|"gzip"``
  store the bytes compressed (by the ``lz4``/``zstd``/``gzip`` programs: the standard library
  has no lz4 or zstd) and every read decompresses them, so callers only ever see the original
  bytes. Such a record says ``"encoding"`` plus ``"stored_size"``/``"stored_sha256"`` (the
  bytes at rest, checked while they stream in) while ``size``/``sha256`` keep describing the
  original bytes (checked after decompression): both are verified on every read. A record
  without ``encoding`` (every object of an older repository) is read exactly as before.

boto3 is imported only when an S3 URL is opened, so ``restorekit.wal`` (PostgreSQL's
archive_command) starts fast for local repositories.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, ContextManager, NoReturn, Protocol, runtime_checkable
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from restorekit.errors import (
    ChecksumMismatch,
    ConfigError,
    ObjectNotFound,
    RepositoryError,
    RestoreKitError,
)

__all__ = [
    "ENCODINGS",
    "RECORD_SUFFIX",
    "IncompleteObject",
    "LocalRepository",
    "ObjectInfo",
    "Progress",
    "Repository",
    "RepositoryLocation",
    "S3Repository",
    "check_key",
    "codec_argv",
    "hash_file",
    "open_repository",
    "parse_repository_url",
    "s3_read_timeout",
]

RECORD_SUFFIX = ".sha256.json"
RECORD_FORMAT = "restorekit-checksum/1"
RECORD_FORMAT_ENCODED = "restorekit-checksum/2"
TEMP_PREFIX = ".rk-tmp-"
CHUNK_SIZE = 1024 * 1024
MULTIPART_CHUNK = 8 * 1024 * 1024

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What the checksum record says about a complete object.

    ``size`` and ``sha256`` describe the object's content as every read returns it. For an
    object stored compressed, ``encoding`` names the codec and ``stored_size``/``stored_sha256``
    describe the bytes at rest (None otherwise: they are the content itself).
    """

    key: str
    size: int
    sha256: str
    created_at: datetime
    encoding: str | None = None
    stored_size: int | None = None
    stored_sha256: str | None = None

    @property
    def bytes_at_rest(self) -> int:
        """What the object occupies in the repository."""
        return self.size if self.stored_size is None else self.stored_size


#: Codecs a compressed object may use: the program, and its package where it is missing.
ENCODINGS = {"lz4": "lz4", "zstd": "zstd", "gzip": "gzip"}


def codec_argv(encoding: str, *, decompress: bool, level: int | None = None) -> list[str]:
    """The command line that (de)compresses ``encoding`` from stdin to stdout.

    Raises:
        ConfigError: an unknown encoding, or its program is not installed.
    """
    if encoding not in ENCODINGS:
        raise ConfigError(f"unknown compression {encoding!r}; known: {', '.join(ENCODINGS)}")
    program = shutil.which(encoding) or shutil.which(encoding, path="/usr/bin:/bin")
    if program is None:
        raise ConfigError(
            f"the {encoding} program is not installed (install the {ENCODINGS[encoding]!r} "
            f"package): it {'reads' if decompress else 'writes'} {encoding}-compressed objects "
            "in the repository")
    argv = [program, "-q", "-c"] if encoding != "gzip" else [program, "-c"]
    if decompress:
        argv.insert(1, "-d")
    elif level is not None:
        argv.append(f"-{level}")
    return argv


class IncompleteObject(ObjectNotFound):
    """The object exists but has no checksum record: its put was interrupted."""


@runtime_checkable
class Repository(Protocol):
    """A place for backups, WAL and snapshots. See the module docstring for the contract."""

    url: str

    def put_file(self, key: str, path: Path, *, progress: Progress | None = None,
                 encoding: str | None = None, level: int | None = None) -> ObjectInfo:
        ...

    def put_stream(self, key: str, stream: BinaryIO, *, progress: Progress | None = None,
                   encoding: str | None = None, level: int | None = None) -> ObjectInfo:
        ...

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        ...

    def get_file(self, key: str, dest: Path, *, progress: Progress | None = None) -> ObjectInfo:
        ...

    def get_bytes(self, key: str) -> bytes:
        ...

    def open_verified(self, key: str) -> ContextManager[BinaryIO]:
        ...

    def stat(self, key: str) -> ObjectInfo:
        ...

    def exists(self, key: str) -> bool:
        ...

    def list(self, prefix: str) -> list[ObjectInfo]:
        ...

    def delete(self, key: str) -> None:
        ...

    def verify(self, key: str) -> ObjectInfo:
        ...


# -- keys ------------------------------------------------------------------------------------

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


# -- URLs ------------------------------------------------------------------------------------

_URL_HELP = (
    "write file:///absolute/path (or just /absolute/path) for a local directory, or "
    "s3://bucket/prefix[?endpoint_url=http://host:port&region=us-east-1] for S3"
)
_S3_PARAMS = ("endpoint_url", "region")
_SECRET_WORDS = ("key", "secret", "token", "password", "credential", "session")
_CREDENTIALS_HELP = (
    "a repository URL must not contain credentials: give them through the AWS chain instead "
    "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY environment variables, AWS_PROFILE, or an "
    "instance/task role)"
)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z0-9-]{2,32}$")


@dataclass(frozen=True, slots=True)
class RepositoryLocation:
    """A parsed repository URL. ``url`` is the canonical display form (no secrets)."""

    kind: str  # "local" | "s3"
    url: str
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None


def parse_repository_url(url: str) -> RepositoryLocation:
    """Parse a repository URL without touching the repository. Raises ConfigError."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"empty repository URL: {_URL_HELP}")
    url = url.strip()
    if url.startswith("/"):
        return _local_location(url)
    scheme, sep, _ = url.partition("://")
    if not sep:
        if url.startswith("file:"):
            raise ConfigError(f"file URLs need an absolute path with three slashes: {_URL_HELP}")
        raise ConfigError(f"not a repository URL (relative paths are not accepted): {_URL_HELP}")
    scheme = scheme.lower()
    if scheme == "s3":
        return _s3_location(url)
    if scheme == "file":
        return _file_location(url)
    raise ConfigError(f"unsupported repository scheme {scheme + '://'!r}: {_URL_HELP}")


def _local_location(raw_path: str) -> RepositoryLocation:
    if "\x00" in raw_path:
        raise ConfigError("a repository path must not contain NUL bytes")
    if any(part == ".." for part in raw_path.split("/")):
        raise ConfigError(
            f"repository path {raw_path!r} contains '..': write the resolved absolute path")
    path = Path(os.path.normpath(raw_path))
    if path == Path("/"):
        raise ConfigError("the filesystem root cannot be a repository: name a directory, "
                          "e.g. file:///var/lib/restorekit/repo")
    return RepositoryLocation(kind="local", url="file://" + quote(str(path), safe="/"), path=path)


def _file_location(url: str) -> RepositoryLocation:
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ConfigError(f"file repository URLs take no query or fragment: {_URL_HELP}")
    if parts.netloc not in ("", "localhost"):
        if "@" in parts.netloc:
            raise ConfigError(_CREDENTIALS_HELP)
        raise ConfigError(
            f"file URL names a host ({parts.netloc!r}); a local path needs three slashes: "
            f"file:///{parts.netloc}{parts.path}"
        )
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ConfigError(f"file URLs need an absolute path: {_URL_HELP}")
    return _local_location(path)


def _s3_location(url: str) -> RepositoryLocation:
    parts = urlsplit(url)
    # Credentials are checked before anything else so no message below can echo them.
    if "@" in parts.netloc:
        raise ConfigError(_CREDENTIALS_HELP)
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ConfigError(f"malformed query string in the repository URL: {_URL_HELP}") from None
    names = [name.lower() for name, _ in query]
    if any(word in name for name in names for word in _SECRET_WORDS):
        raise ConfigError(_CREDENTIALS_HELP)
    params: dict[str, str] = {}
    for name, value in query:
        name = name.lower()
        if name not in _S3_PARAMS:
            raise ConfigError(f"unknown S3 repository URL parameter {name!r}; accepted: "
                              f"{', '.join(_S3_PARAMS)}")
        if name in params:
            raise ConfigError(f"S3 repository URL parameter {name!r} given twice")
        params[name] = value
    if parts.fragment:
        raise ConfigError(f"S3 repository URLs take no fragment ('#...'): {_URL_HELP}")
    bucket = parts.netloc
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(
            f"{bucket!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, '.' or "
            f"'-'): {_URL_HELP}"
        )
    prefix = unquote(parts.path).strip("/")
    if prefix:
        try:
            check_key(prefix)
        except ConfigError:
            raise ConfigError(
                f"S3 prefix {prefix!r} must be a plain path without empty, '.' or '..' parts"
            ) from None
    endpoint = params.get("endpoint_url") or None
    if endpoint is not None:
        ep = urlsplit(endpoint)
        if "@" in ep.netloc:
            raise ConfigError(_CREDENTIALS_HELP)
        if ep.scheme not in ("http", "https") or not ep.netloc or ep.query or ep.fragment:
            raise ConfigError(
                f"endpoint_url {endpoint!r} must look like http://host:port or https://host"
            )
        endpoint = endpoint.rstrip("/")
    region = params.get("region") or None
    if region is not None and not _REGION.match(region):
        raise ConfigError(f"region {region!r} is not a valid AWS region name such as 'us-east-1'")
    shown = {k: v for k, v in (("endpoint_url", endpoint), ("region", region)) if v}
    display = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    if shown:
        display += "?" + urlencode(shown, safe=":/", quote_via=quote)
    return RepositoryLocation(kind="s3", url=display, bucket=bucket, prefix=prefix,
                              endpoint_url=endpoint, region=region)


def open_repository(url: str, *, os_user: str | None = None) -> Repository:
    """Open the repository at ``url`` (see the module docstring for the accepted forms).

    ``os_user`` applies to local repositories: when running as root, every directory and file the
    repository creates is given to that user (PostgreSQL's archive_command runs as ``postgres``
    and must be able to write into ``wal/``).
    """
    location = parse_repository_url(url)
    if location.kind == "local":
        assert location.path is not None
        return LocalRepository(location.path, os_user=os_user)
    return S3Repository(location.bucket, location.prefix, endpoint_url=location.endpoint_url,
                        region=location.region)


# -- records and hashing -----------------------------------------------------------------------


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

    def __init__(self, stream: BinaryIO, progress: Progress | None = None) -> None:
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


class _Decoder(io.RawIOBase):
    """The decompressed bytes of ``stored`` (an already verifying reader), through the codec's
    program. A thread feeds the program; at the end the thread's error (a checksum mismatch of
    the bytes at rest comes first: it is the real cause) or the program's failure is raised."""

    def __init__(self, stored: BinaryIO, info: ObjectInfo, url: str) -> None:
        super().__init__()
        assert info.encoding is not None
        self._info = info
        self._url = url
        self._stored = stored
        self._proc = subprocess.Popen(codec_argv(info.encoding, decompress=True),
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._feed, name="restorekit-decode",
                                        daemon=True)
        self._thread.start()
        self._finished = False

    def _feed(self) -> None:
        assert self._proc.stdin is not None
        try:
            while chunk := self._stored.read(CHUNK_SIZE):
                self._proc.stdin.write(chunk)
        except BrokenPipeError:
            # The program gave up on damaged input: read the stored bytes to their end so a
            # checksum mismatch, the real cause, is what gets raised.
            try:
                while self._stored.read(CHUNK_SIZE):
                    pass
            except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
                self._error = exc
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            self._error = exc
        finally:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        assert self._proc.stdout is not None
        n = self._proc.stdout.readinto(buffer)
        if n:
            return n
        if not self._finished:
            self._finished = True
            self._thread.join()
            stderr = self._proc.stderr.read() if self._proc.stderr else b""
            code = self._proc.wait()
            if self._error is not None:
                raise self._error
            if code != 0:
                raise ChecksumMismatch(
                    f"{self._info.key!r} in {self._url} could not be decompressed "
                    f"({self._info.encoding} exited {code}: "
                    f"{stderr.decode(errors='replace').strip()[-300:]}); the stored object is "
                    "corrupt")
        return 0

    def close(self) -> None:
        if not self.closed:
            if self._proc.poll() is None:
                self._proc.kill()
            self._thread.join()
            self._proc.wait()
            for pipe in (self._proc.stdout, self._proc.stderr):
                if pipe is not None:
                    pipe.close()
        super().close()


@contextlib.contextmanager
def _reader_only(verified: ContextManager[tuple[ObjectInfo, BinaryIO]]) -> Iterator[BinaryIO]:
    with verified as (_, reader):
        yield reader


def _finish_encoder(proc: subprocess.Popen[bytes], feeder: threading.Thread,
                    failure: list[BaseException], key: str, encoding: str) -> None:
    """After the compressed stream ended: the source was read whole and the program
    succeeded, or the put fails (before the object commits)."""
    feeder.join()
    code = proc.wait()
    if failure:
        exc = failure[0]
        if isinstance(exc, RestoreKitError):
            raise exc
        raise RepositoryError(f"reading the source of {key!r} failed while compressing it: "
                              f"{exc}") from exc
    if code != 0:
        stderr = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
        raise RepositoryError(f"{encoding} failed compressing {key!r} (exit {code}): "
                              f"{stderr[-300:]}")


def hash_file(path: Path) -> tuple[str, int]:
    """(sha256 hex, size) of a local file, read in chunks."""
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def _temp_name(name: str) -> str:
    return f"{TEMP_PREFIX}{os.urandom(6).hex()}-{name}"[:240]


# -- shared policy -----------------------------------------------------------------------------


class _BaseRepository:
    """The contract's policy; backends provide the small primitives below."""

    url: str

    # primitives ----------------------------------------------------------------------------
    def _errors(self, operation: str, key: str = "") -> ContextManager[None]:
        raise NotImplementedError

    def _read_record(self, key: str) -> ObjectInfo:
        raise NotImplementedError

    def _delete_record(self, key: str) -> None:
        raise NotImplementedError

    def _write_record(self, info: ObjectInfo) -> None:
        raise NotImplementedError

    def _store(self, key: str, reader: _HashingReader,
               check: Callable[[], None] | None = None) -> None:
        """Make the object complete in one step, removing the old record just before;
        ``check`` (raising) runs once every byte is written, before the object commits."""
        raise NotImplementedError

    def _delete_object(self, key: str) -> None:
        raise NotImplementedError

    def _open_object(self, key: str) -> Any:
        raise NotImplementedError

    # public API ----------------------------------------------------------------------------
    def put_stream(self, key: str, stream: BinaryIO, *, progress: Progress | None = None,
                   encoding: str | None = None, level: int | None = None) -> ObjectInfo:
        """Store ``stream``'s bytes at ``key`` atomically, hashing while writing; compressed
        with ``encoding`` (at ``level``) when given. ``progress`` counts bytes at rest."""
        check_key(key)
        if encoding is None:
            return self._put(key, stream, progress)
        argv = codec_argv(encoding, decompress=False, level=level)
        original = _HashingReader(stream)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        failure: list[BaseException] = []

        def feed() -> None:
            assert proc.stdin is not None
            try:
                while chunk := original.read(CHUNK_SIZE):
                    proc.stdin.write(chunk)
            except BaseException as exc:  # noqa: BLE001 - raised by the calling thread
                failure.append(exc)
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()

        feeder = threading.Thread(target=feed, name="restorekit-encode", daemon=True)
        feeder.start()
        try:
            info = self._put(key, proc.stdout, progress, original=original,  # type: ignore[arg-type]
                             encoding=encoding, check=lambda: _finish_encoder(
                                 proc, feeder, failure, key, encoding))
        finally:
            if proc.poll() is None:
                proc.kill()
            feeder.join()
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        return info

    def _put(self, key: str, stream: BinaryIO, progress: Progress | None, *,
             original: _HashingReader | None = None, encoding: str | None = None,
             check: Callable[[], None] | None = None) -> ObjectInfo:
        reader = _HashingReader(stream, progress)
        with self._errors("put", key):
            self._store(key, reader, check)
            if encoding is None or original is None:
                info = ObjectInfo(key=key, size=reader.size, sha256=reader.sha.hexdigest(),
                                  created_at=_now())
            else:
                info = ObjectInfo(key=key, size=original.size, sha256=original.sha.hexdigest(),
                                  created_at=_now(), encoding=encoding,
                                  stored_size=reader.size, stored_sha256=reader.sha.hexdigest())
            self._write_record(info)
        return info

    def put_file(self, key: str, path: Path, *, progress: Progress | None = None,
                 encoding: str | None = None, level: int | None = None) -> ObjectInfo:
        """Store the file at ``path`` under ``key`` (compressed: see :meth:`put_stream`)."""
        check_key(key)
        try:
            source = open(path, "rb")
        except OSError as exc:
            raise RepositoryError(
                f"cannot read {path} to store it as {key!r}: {exc.strerror}") from exc
        with source:
            return self.put_stream(key, source, progress=progress,  # type: ignore[arg-type]
                                   encoding=encoding, level=level)

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        return self.put_stream(key, io.BytesIO(data))

    def stat(self, key: str) -> ObjectInfo:
        """The record of a complete object. ObjectNotFound (or IncompleteObject) otherwise."""
        check_key(key)
        with self._errors("stat", key):
            info = self._read_record(key)
            self._require_object(key)
        return info

    def _require_object(self, key: str) -> None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def open_verified(self, key: str) -> ContextManager[BinaryIO]:
        """A streaming reader over the object; reaching EOF raises ChecksumMismatch if the
        bytes differ from the record. On a clean exit from the ``with`` block the rest of the
        object is read and verified too, so a consumer that stops early (a tar reader stops at the
        end-of-archive marker) still learns about corruption."""
        return _reader_only(self._verified(key))

    @contextlib.contextmanager
    def _verified(self, key: str) -> Iterator[tuple[ObjectInfo, BinaryIO]]:
        check_key(key)
        with self._errors("get", key):
            info = self._read_record(key)
            source = self._open_object(key)
        errors = lambda: self._errors("get", key)  # noqa: E731
        if info.encoding is None:
            reader = _VerifyingReader(source, info, self.url, errors)
            buffered = io.BufferedReader(reader, buffer_size=CHUNK_SIZE)
            try:
                yield info, buffered  # type: ignore[misc]
                reader.drain()
            finally:
                buffered.close()
            return
        # Compressed: the bytes at rest are checked as they stream into the decompressor,
        # the decompressed bytes against the original's size and sha256.
        at_rest = io.BufferedReader(_VerifyingReader(source, info, self.url, errors,
                                                     at_rest=True), buffer_size=CHUNK_SIZE)
        try:
            decoder = _Decoder(at_rest, info, self.url)  # type: ignore[arg-type]
        except BaseException:
            at_rest.close()
            raise
        reader = _VerifyingReader(decoder, info, self.url, contextlib.nullcontext)
        buffered = io.BufferedReader(reader, buffer_size=CHUNK_SIZE)
        try:
            yield info, buffered  # type: ignore[misc]
            reader.drain()
        finally:
            buffered.close()
            decoder.close()
            at_rest.close()

    def get_bytes(self, key: str) -> bytes:
        with self.open_verified(key) as src:
            return src.read()

    def get_file(self, key: str, dest: Path, *, progress: Progress | None = None) -> ObjectInfo:
        """Download ``key`` to ``dest`` (replacing it) and verify. ``dest`` only ever holds
        verified bytes: on ChecksumMismatch it is removed."""
        check_key(key)
        dest = Path(dest)
        tmp = dest.parent / _temp_name(dest.name)
        try:
            # The record is read (ObjectNotFound raised) before the temporary file is created.
            with self._verified(key) as (info, src), open(tmp, "wb") as out:
                while chunk := src.read(CHUNK_SIZE):
                    out.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
            os.replace(tmp, dest)
        except ChecksumMismatch:
            tmp.unlink(missing_ok=True)
            dest.unlink(missing_ok=True)
            raise
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise RepositoryError(f"cannot write {dest} while fetching {key!r} from "
                                      f"{self.url}: {exc.strerror or exc}") from exc
            raise
        return info

    def verify(self, key: str) -> ObjectInfo:
        """Read the whole object back and check it against its record (size + sha256)."""
        with self._verified(key) as (info, _):
            pass  # a clean exit drains and verifies
        return info

    def delete(self, key: str) -> None:
        """Remove the object and its record; a missing object is not an error."""
        check_key(key)
        with self._errors("delete", key):
            # The record goes first: a crash in between leaves an incomplete object, never a
            # record that vouches for nothing.
            self._delete_record(key)
            self._delete_object(key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


# -- local directory -------------------------------------------------------------------------


class LocalRepository(_BaseRepository):
    """A repository in a local (or mounted) directory.

    Objects are files under ``root``; records are ``<file>.sha256.json`` beside them; temporary
    files are ``.rk-tmp-*`` in the same directory. Directories are created 0700 and files 0600;
    with ``os_user`` (and running as root) both are chowned to that user.
    """

    def __init__(self, root: Path, *, os_user: str | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_absolute():
            raise ConfigError(f"a local repository needs an absolute path, got {str(root)!r}")
        self.os_user = os_user
        self.url = "file://" + quote(str(self.root), safe="/")

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _record_path(self, key: str) -> Path:
        path = self._path(key)
        return path.with_name(path.name + RECORD_SUFFIX)

    @contextlib.contextmanager
    def _errors(self, operation: str, key: str = "") -> Iterator[None]:
        try:
            yield
        except RestoreKitError:
            raise
        except PermissionError as exc:
            hint = (" (the PostgreSQL OS user must own the repository directory: chown -R "
                    f"{self.os_user or 'postgres'} {self.root})")
            raise RepositoryError(f"{operation} {key!r} in {self.url}: permission denied on "
                                  f"{exc.filename}{hint}") from exc
        except OSError as exc:
            detail = exc.strerror or str(exc)
            if exc.errno == errno.ENOSPC:
                detail = "no space left on the device"
            where = f" ({exc.filename})" if exc.filename else ""
            raise RepositoryError(
                f"{operation} {key!r} in {self.url} failed: {detail}{where}") from exc

    def _chown(self, path: Path) -> None:
        if self.os_user is not None:
            # Imported here: restorekit.pg.tools pulls in psycopg (through pg.dsn), and
            # restorekit.wal must start fast.
            from restorekit.pg.tools import chown_for

            chown_for(path, self.os_user)

    def _ensure_dir(self, directory: Path) -> None:
        if directory.is_dir():
            return
        missing = []
        current = directory
        while not current.exists():
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            if self.os_user is not None:
                from restorekit.pg.tools import make_dir

                make_dir(path, self.os_user, mode=0o700)
            else:
                with contextlib.suppress(FileExistsError):
                    path.mkdir(mode=0o700)

    def _write_atomic(self, final: Path, write: Callable[[BinaryIO], None],
                      before_commit: Callable[[], None] | None = None) -> None:
        self._ensure_dir(final.parent)
        tmp = final.parent / _temp_name(final.name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)  # type: ignore[arg-type]
                out.flush()
                os.fsync(out.fileno())
            self._chown(tmp)
            if before_commit is not None:
                before_commit()
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)

    def _store(self, key: str, reader: _HashingReader,
               check: Callable[[], None] | None = None) -> None:
        def write(out: BinaryIO) -> None:
            while chunk := reader.read(CHUNK_SIZE):
                out.write(chunk)

        def before_commit() -> None:
            if check is not None:
                check()
            self._delete_record(key)

        # The old record goes only once the new bytes are safely staged: a failed put leaves
        # the old object and its record untouched.
        self._write_atomic(self._path(key), write, before_commit=before_commit)

    def _write_record(self, info: ObjectInfo) -> None:
        data = _record_bytes(info)

        def write(out: BinaryIO) -> None:
            out.write(data)

        self._write_atomic(self._record_path(info.key), write)

    def _delete_record(self, key: str) -> None:
        record = self._record_path(key)
        if record.exists():
            record.unlink(missing_ok=True)
            _fsync_dir(record.parent)

    def _delete_object(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _read_record(self, key: str) -> ObjectInfo:
        try:
            data = self._record_path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            self._raise_missing(key)
        return _parse_record(key, data, self.url)

    def _raise_missing(self, key: str) -> NoReturn:
        if self._path(key).is_file():
            raise IncompleteObject(
                f"{key!r} in {self.url} has no checksum record: its upload was interrupted, so "
                "it is treated as missing (store it again)"
            )
        raise ObjectNotFound(f"{key!r} not found in {self.url}")

    def _require_object(self, key: str) -> None:
        if not self._path(key).is_file():
            raise ObjectNotFound(f"{key!r} in {self.url} has a checksum record but the object "
                                 "itself is gone (deleted outside restorekit?)")

    def _open_object(self, key: str) -> Any:
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, NotADirectoryError):
            self._require_object(key)
            raise

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Complete objects whose key starts with ``prefix``, sorted by key."""
        _check_prefix(prefix)
        head, _, _ = prefix.rpartition("/")
        start = self._path(head) if head else self.root
        found: list[ObjectInfo] = []
        with self._errors("list", prefix):
            if not start.is_dir():
                return []
            for dirpath, dirnames, filenames in os.walk(start):
                rel = Path(dirpath).relative_to(self.root).as_posix()
                rel = "" if rel == "." else rel + "/"
                dirnames[:] = sorted(
                    d for d in dirnames
                    if not d.startswith(TEMP_PREFIX)
                    and ((rel + d + "/").startswith(prefix) or prefix.startswith(rel + d + "/"))
                )
                names = set(filenames)
                for name in filenames:
                    key = rel + name
                    if (name.startswith(TEMP_PREFIX) or name.endswith(RECORD_SUFFIX)
                            or not key.startswith(prefix) or name + RECORD_SUFFIX not in names):
                        continue
                    try:
                        data = (Path(dirpath) / (name + RECORD_SUFFIX)).read_bytes()
                    except FileNotFoundError:
                        continue  # deleted while listing
                    found.append(_parse_record(key, data, self.url))
        return sorted(found, key=lambda info: info.key)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- S3 ----------------------------------------------------------------------------------------

_THROTTLING = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "SlowDown",
    "RequestLimitExceeded", "RequestTimeout", "RequestTimeTooSkewed", "InternalError",
    "ServiceUnavailable", "BandwidthLimitExceeded", "EC2ThrottledException",
})
_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})
_LIST_WORKERS = 16

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


class S3Repository(_BaseRepository):
    """A repository in an S3 bucket (AWS, MinIO, moto, ...) under an optional prefix.

    Objects are ``<prefix>/<key>``; records are ``<prefix>/<key>.sha256.json``. Credentials come
    from the AWS chain only. Uploads go through boto3's transfer manager (multipart, 8 MiB parts,
    8 in parallel); downloads are one streaming GET verified as it is read (measured against
    moto: 340 MB/s against 130 MB/s for the transfer manager's ranged download, and no second
    hashing pass). botocore retries transient failures itself (standard mode, 5 attempts or
    ``AWS_MAX_ATTEMPTS``) before an error reaches the caller. Each attempt waits at most 10 s for
    the connection and :func:`s3_read_timeout` seconds (``RESTOREKIT_S3_READ_TIMEOUT``, 120) for
    an answer; an endpoint that hangs surfaces as a retryable RepositoryError saying it timed out.
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, client: Any = None) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        params = {k: v for k, v in (("endpoint_url", endpoint_url), ("region", region)) if v}
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        if params:
            self.url += "?" + urlencode(params, safe=":/", quote_via=quote)
        # Known only for the client built here: the error messages quote them.
        self.read_timeout: float | None = None
        self.attempts: int | None = None
        if client is None:
            self.read_timeout = s3_read_timeout()
            self.attempts = _s3_attempts()
            # 5 attempts unless AWS_MAX_ATTEMPTS says otherwise (botocore reads it when unset
            # here). total_max_attempts counts the first try; Config's max_attempts would not.
            retries: dict[str, Any] = {"mode": "standard"}
            if not os.environ.get("AWS_MAX_ATTEMPTS"):
                retries["total_max_attempts"] = DEFAULT_S3_ATTEMPTS
            config = Config(
                retries=retries,
                connect_timeout=S3_CONNECT_TIMEOUT,
                read_timeout=self.read_timeout,
                max_pool_connections=32,
                s3={"addressing_style": "path"} if endpoint_url else None,
            )
            session = boto3.session.Session(region_name=region)
            client = session.client("s3", endpoint_url=endpoint_url, config=config)
        self.client = client
        self._transfer = TransferConfig(multipart_threshold=MULTIPART_CHUNK,
                                        multipart_chunksize=MULTIPART_CHUNK, max_concurrency=8)

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _record_key(self, key: str) -> str:
        return self._full(key) + RECORD_SUFFIX

    def _errors(self, operation: str, key: str = "") -> ContextManager[None]:
        return _map_s3_errors(operation, key, self.url, self.bucket,
                              read_timeout=self.read_timeout, attempts=self.attempts)

    def _store(self, key: str, reader: _HashingReader,
               check: Callable[[], None] | None = None) -> None:
        # S3 has no staging without a copy: the old record goes first, so a failed overwrite
        # leaves the key incomplete (never new bytes paired with the old record).
        self._delete_record(key)
        self.client.upload_fileobj(reader, self.bucket, self._full(key), Config=self._transfer)
        if check is not None:
            check()  # raising here leaves the object without a record: incomplete

    def _write_record(self, info: ObjectInfo) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._record_key(info.key),
                               Body=_record_bytes(info), ContentType="application/json")

    def _delete_record(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._record_key(key))

    def _delete_object(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def _read_record(self, key: str) -> ObjectInfo:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._record_key(key))
            data = response["Body"].read()
        except Exception as exc:
            if _is_not_found(exc):
                if self._object_exists(key):
                    raise IncompleteObject(
                        f"{key!r} in {self.url} has no checksum record: its upload was "
                        "interrupted, so it is treated as missing (store it again)"
                    ) from None
                raise ObjectNotFound(f"{key!r} not found in {self.url}") from None
            raise
        return _parse_record(key, data, self.url)

    def _object_exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as exc:
            if _is_not_found(exc):
                return False
            raise
        return True

    def _require_object(self, key: str) -> None:
        if not self._object_exists(key):
            raise ObjectNotFound(f"{key!r} in {self.url} has a checksum record but the object "
                                 "itself is gone (deleted outside restorekit?)")

    def _open_object(self, key: str) -> Any:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
        except Exception as exc:
            if _is_not_found(exc):
                self._require_object(key)
            raise

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Complete objects whose key starts with ``prefix``, sorted by key.

        One listing, then the records of the listed objects are read in parallel (one GET each).
        """
        from concurrent.futures import ThreadPoolExecutor

        _check_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        objects: set[str] = set()
        records: set[str] = set()
        with self._errors("list", prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for item in page.get("Contents", []):
                    key = item["Key"][len(base):]
                    if key.endswith(RECORD_SUFFIX):
                        records.add(key[: -len(RECORD_SUFFIX)])
                    else:
                        objects.add(key)
            complete = sorted(objects & records)

            def fetch(key: str) -> ObjectInfo | None:
                try:
                    body = self.client.get_object(Bucket=self.bucket, Key=self._record_key(key))
                    return _parse_record(key, body["Body"].read(), self.url)
                except Exception as exc:
                    if _is_not_found(exc):
                        return None  # deleted while listing
                    raise

            if len(complete) <= 1:
                results = [fetch(key) for key in complete]
            else:
                with ThreadPoolExecutor(max_workers=min(_LIST_WORKERS, len(complete))) as pool:
                    results = list(pool.map(fetch, complete))
        return [info for info in results if info is not None]


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
    try:
        from s3transfer.exceptions import RetriesExceededError
    except ImportError:  # pragma: no cover
        RetriesExceededError = ()  # type: ignore[assignment,misc]  # noqa: N806
    if isinstance(exc, RetriesExceededError):
        return RepositoryError(f"{what} failed after retries: {exc}", retryable=True)
    if isinstance(exc, OSError):
        return RepositoryError(f"{what} failed: {exc.strerror or exc}")
    return RepositoryError(f"{what} failed: {type(exc).__name__}: {exc}")

"""A repository in a local (or mounted) directory (:class:`LocalRepository`).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NoReturn
from urllib.parse import quote

from restorekit.errors import (
    ConfigError,
    ObjectNotFound,
    RepositoryError,
    RestoreKitError,
)
from restorekit.repository.base import _BaseRepository
from restorekit.repository.keys import _check_prefix
from restorekit.repository.local_files import _fsync_dir, _write_atomic
from restorekit.repository.objects import _HashingReader, _parse_record, _record_bytes
from restorekit.repository.protocol import (
    CHUNK_SIZE,
    RECORD_SUFFIX,
    TEMP_PREFIX,
    IncompleteObject,
    ObjectInfo,
)


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
        _write_atomic(self._path(key), write, self.os_user, before_commit=before_commit)

    def _write_record(self, info: ObjectInfo) -> None:
        data = _record_bytes(info)

        def write(out: BinaryIO) -> None:
            out.write(data)

        _write_atomic(self._record_path(info.key), write, self.os_user)

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

    def _has_files(self) -> bool:
        return True

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Complete objects whose key starts with ``prefix``, sorted by key."""
        found = []
        with self._errors("list", prefix):
            for key, record in self._complete(prefix):
                try:
                    found.append(_parse_record(key, record.read_bytes(), self.url))
                except FileNotFoundError:
                    continue  # deleted while listing
        return found

    # ``list`` is the method above from here on in the class body: the type is builtins.list.
    def keys(self, prefix: str) -> builtins.list[str]:
        """The keys of the complete objects under ``prefix``, sorted; no record is read."""
        return [key for key, _ in self._complete(prefix)]

    def _complete(self, prefix: str) -> builtins.list[tuple[str, Path]]:
        """(key, record path) of the complete objects under ``prefix``, sorted by key."""
        _check_prefix(prefix)
        head, _, _ = prefix.rpartition("/")
        start = self._path(head) if head else self.root
        with self._errors("list", prefix):
            if not start.is_dir():
                return []
            return sorted(_walk_complete(self.root, start, prefix))


def _walk_complete(root: Path, start: Path, prefix: str) -> Iterator[tuple[str, Path]]:
    """(key, record path) of the complete objects under ``start`` whose key starts with
    ``prefix`` (an object counts once its record is beside it; temporary files are skipped)."""
    for dirpath, dirnames, filenames in os.walk(start):
        rel = Path(dirpath).relative_to(root).as_posix()
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
            yield key, Path(dirpath) / (name + RECORD_SUFFIX)

"""The repository interface (:class:`Repository`), what it says about an object
(:class:`ObjectInfo`), and the names and sizes every backend shares. The contract is in the
package docstring (:mod:`restorekit.repository`).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager as ContextManager
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol, runtime_checkable

from restorekit.errors import (
    ObjectNotFound,
)

RECORD_SUFFIX = ".sha256.json"


TEMP_PREFIX = ".rk-tmp-"
CHUNK_SIZE = 1024 * 1024
MULTIPART_CHUNK = 8 * 1024 * 1024

Progress = Callable[[int], None]


class ObjectInfo(NamedTuple):
    """What the checksum record says about a complete object.

    ``size`` and ``sha256`` describe the object's content as every read returns it. For an
    object stored compressed, ``encoding`` names the codec and ``stored_size``/``stored_sha256``
    describe the bytes at rest (None otherwise: they are the content itself).

    A NamedTuple rather than a frozen dataclass: ``dataclasses`` imports ``inspect`` (and with
    it ``ast``, ``dis``, ``tokenize``), ~9 ms of CPU at every start of ``archive_command``.
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


class IncompleteObject(ObjectNotFound):
    """The object exists but has no checksum record: its put was interrupted."""


class InPlace(NamedTuple):
    """An object's own file for a program to read itself (see ``Repository.open_in_place``)."""

    file: BinaryIO
    #: Hash the file (``progress`` told of each chunk); ChecksumMismatch when it is not what
    #: the record says.
    check: Callable[[Progress | None], None]


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

    def get_many(self, keys: list[str]) -> list[bytes]:
        ...

    def open_verified(self, key: str) -> ContextManager[BinaryIO]:
        ...

    def open_in_place(self, key: str) -> ContextManager[InPlace | None]:
        ...

    def stat(self, key: str) -> ObjectInfo:
        ...

    def exists(self, key: str) -> bool:
        ...

    def list(self, prefix: str) -> list[ObjectInfo]:
        ...

    # ``list`` is the method above from here on in the class body: the type is builtins.list.
    def keys(self, prefix: str) -> builtins.list[str]:
        ...

    def delete(self, key: str) -> None:
        ...

    def verify(self, key: str) -> ObjectInfo:
        ...


def discard_unfinished(repo: Repository, keys: Iterable[str], what: str) -> bool:
    """Best effort: remove what an unfinished ``what`` (a backup, a snapshot) uploaded; it is
    unusable without its last object, so leftovers are only clutter. Stops at the first
    failure: the repository is failing, and waiting out its retries for every key helps
    nobody. True when all went."""
    for key in keys:
        try:
            repo.delete(key)
        except Exception as exc:  # noqa: BLE001 - the original error matters more
            import logging  # not at import: archive_command never gets here

            logging.getLogger(__name__).warning("could not remove %s of an unfinished %s: %s",
                                                key, what, exc)
            return False
    return True

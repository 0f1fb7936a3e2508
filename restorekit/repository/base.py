"""The contract's policy, shared by every backend (:class:`_BaseRepository`): keys checked, puts
hashed while writing and committed in one step, reads verified against the record, the record
removed before the object. Backends provide small primitives.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import IO, Any, BinaryIO

from restorekit.errors import (
    ChecksumMismatch,
    ObjectNotFound,
    RepositoryError,
)
from restorekit.repository.compression import _decode_into, _Decoder, _encoder
from restorekit.repository.keys import check_key
from restorekit.repository.objects import (
    _HashingReader,
    _mismatch,
    _now,
    _temp_name,
    _VerifyingReader,
    hash_file,
    hash_open_file,
)
from restorekit.repository.protocol import CHUNK_SIZE, InPlace, ObjectInfo, Progress


@contextlib.contextmanager
def _reader_only(verified: ContextManager[tuple[ObjectInfo, BinaryIO]]) -> Iterator[BinaryIO]:
    with verified as (_, reader):
        yield reader


def _check_hashed(info: ObjectInfo, url: str, hashed: tuple[str, int]) -> None:
    """A local file's ``(sha256, size)`` against the record's content: ChecksumMismatch when
    they differ."""
    sha, size = hashed
    if (sha, size) != (info.sha256, info.size):
        raise _mismatch(info.key, url, info, sha, size)


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

    def _has_files(self) -> bool:
        """Whether ``_open_object`` returns the object's own file (a program can read it)."""
        return False

    # public API ----------------------------------------------------------------------------
    def put_stream(self, key: str, stream: BinaryIO, *, progress: Progress | None = None,
                   encoding: str | None = None, level: int | None = None) -> ObjectInfo:
        """Store ``stream``'s bytes at ``key`` atomically, hashing while writing; compressed
        with ``encoding`` (at ``level``) when given. ``progress`` counts bytes at rest."""
        check_key(key)
        if encoding is None:
            return self._put(key, stream, progress)
        original = _HashingReader(stream)
        with _encoder(original, key, encoding, level) as (compressed, check):
            return self._put(key, compressed, progress, original=original, encoding=encoding,
                             check=check)

    def _put(self, key: str, stream: IO[bytes], progress: Progress | None, *,
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
            return self.put_stream(key, source, progress=progress,
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
    def open_in_place(self, key: str) -> Iterator[InPlace | None]:
        """The object's own file, open, for a program to read itself (tar, as its stdin): no
        byte passes through this process on its way. ``check`` hashes the same open file
        meanwhile (with pread: the offset the program shares is left alone; the pages one
        reader brings into the page cache serve the other) and raises ChecksumMismatch when
        it differs from the record; the caller runs it to the end before trusting what the
        program wrote. None where the store has no such file (S3) or holds the object
        compressed: read those with :meth:`open_verified`."""
        check_key(key)
        if not self._has_files():
            yield None
            return
        with self._errors("get", key):
            info = self._read_record(key)
            file = self._open_object(key) if info.encoding is None else None
        if file is None:
            yield None
            return

        def check(progress: Progress | None) -> None:
            with self._errors("get", key):
                hashed = hash_open_file(file.fileno(), progress)
            _check_hashed(info, self.url, hashed)

        with file:
            yield InPlace(file, check)

    @contextlib.contextmanager
    def _stored(self, key: str) -> Iterator[tuple[ObjectInfo, BinaryIO]]:
        """The record, and a reader of the object's bytes as stored that checks them against
        the record at EOF (the compressed bytes, for a compressed object)."""
        check_key(key)
        with self._errors("get", key):
            info = self._read_record(key)
            source = self._open_object(key)
        reader = _VerifyingReader(source, info, self.url, lambda: self._errors("get", key),
                                  at_rest=info.encoding is not None)
        buffered = io.BufferedReader(reader, buffer_size=CHUNK_SIZE)
        try:
            yield info, buffered
        finally:
            buffered.close()

    @contextlib.contextmanager
    def _verified(self, key: str) -> Iterator[tuple[ObjectInfo, BinaryIO]]:
        with self._stored(key) as (info, stored):
            if info.encoding is None:  # the bytes as stored are the content
                yield info, stored
                while stored.read(CHUNK_SIZE):  # a consumer that stopped early: verify the rest
                    pass
                return
            # Compressed: the bytes at rest are checked as they stream into the decompressor,
            # the decompressed bytes against the original's size and sha256.
            decoder = _Decoder(stored, info, self.url)
            reader = _VerifyingReader(decoder, info, self.url, contextlib.nullcontext)
            buffered = io.BufferedReader(reader, buffer_size=CHUNK_SIZE)
            try:
                yield info, buffered
                reader.drain()
            finally:
                buffered.close()
                decoder.close()

    def get_bytes(self, key: str) -> bytes:
        with self.open_verified(key) as src:
            return src.read()

    def get_many(self, keys: list[str]) -> list[bytes]:
        """``get_bytes`` of every key, in order (a remote store reads them side by side)."""
        return [self.get_bytes(key) for key in keys]

    def get_file(self, key: str, dest: Path, *, progress: Progress | None = None) -> ObjectInfo:
        """Download ``key`` to ``dest`` (replacing it) and verify. ``dest`` only ever holds
        verified bytes: on ChecksumMismatch it is removed."""
        check_key(key)
        dest = Path(dest)
        tmp = dest.parent / _temp_name(dest.name)
        try:
            # The record is read (ObjectNotFound raised) before the temporary file is created.
            with self._stored(key) as (info, src), open(tmp, "wb") as out:
                if info.encoding is None:
                    while chunk := src.read(CHUNK_SIZE):
                        out.write(chunk)
                        if progress is not None:
                            progress(len(chunk))
                else:
                    _decode_into(src, info, self.url, out)
            if info.encoding is not None:  # the file just written, from the page cache
                _check_hashed(info, self.url, hash_file(tmp, progress))
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

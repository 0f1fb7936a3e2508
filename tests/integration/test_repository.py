"""The Repository contract, run against every backend: a local directory and S3 (moto's server)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from restorekit.errors import ChecksumMismatch, ConfigError, ObjectNotFound, RepositoryError
from restorekit.pg.tools import default_os_user
from restorekit.repository import (
    RECORD_SUFFIX,
    IncompleteObject,
    LocalRepository,
    Repository,
    S3Repository,
    open_repository,
)
from restorekit.repository import s3_error as map_s3_error

# -- helpers that reach behind the repository's back ---------------------------------------------


def _raw_read(repo: Repository, name: str) -> bytes:
    if isinstance(repo, LocalRepository):
        return repo.root.joinpath(*name.split("/")).read_bytes()
    assert isinstance(repo, S3Repository)
    return repo.client.get_object(Bucket=repo.bucket, Key=repo._full(name))["Body"].read()


def _raw_write(repo: Repository, name: str, data: bytes) -> None:
    if isinstance(repo, LocalRepository):
        repo.root.joinpath(*name.split("/")).write_bytes(data)
        return
    assert isinstance(repo, S3Repository)
    repo.client.put_object(Bucket=repo.bucket, Key=repo._full(name), Body=data)


def _raw_delete(repo: Repository, name: str) -> None:
    if isinstance(repo, LocalRepository):
        repo.root.joinpath(*name.split("/")).unlink()
        return
    assert isinstance(repo, S3Repository)
    repo.client.delete_object(Bucket=repo.bucket, Key=repo._full(name))


def _flip_byte(repo: Repository, key: str, offset: int = 0) -> None:
    data = bytearray(_raw_read(repo, key))
    data[offset] ^= 0xFF
    _raw_write(repo, key, bytes(data))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Pipe(io.RawIOBase):
    """A non-seekable source that returns short reads, like a pipe."""

    def __init__(self, data: bytes, step: int = 777, fail_after: int | None = None) -> None:
        self._data = data
        self._pos = 0
        self._step = step
        self._fail_after = fail_after

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        if self._fail_after is not None and self._pos >= self._fail_after:
            raise OSError(5, "simulated read error from the source")
        n = min(len(buffer), self._step, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


# -- round trips -------------------------------------------------------------------------------


def test_put_and_get_round_trips(repo: Repository, tmp_path: Path) -> None:
    before = datetime.now(UTC)
    info = repo.put_bytes("snapshots/a.bin", b"hello restore")
    assert info.key == "snapshots/a.bin"
    assert (info.size, info.sha256) == (13, _sha(b"hello restore"))
    assert before <= info.created_at <= datetime.now(UTC)
    assert repo.get_bytes("snapshots/a.bin") == b"hello restore"
    assert repo.stat("snapshots/a.bin") == info
    assert repo.exists("snapshots/a.bin")

    source = tmp_path / "src.bin"
    source.write_bytes(os.urandom(300_000))
    seen: list[int] = []
    info = repo.put_file("base/b1/base.tar", source, progress=seen.append)
    assert sum(seen) == 300_000
    assert info.sha256 == _sha(source.read_bytes())
    dest = tmp_path / "out.bin"
    got = repo.get_file("base/b1/base.tar", dest)
    assert got == info
    assert dest.read_bytes() == source.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".rk-tmp-")] == []

    data = os.urandom(50_000)
    info = repo.put_stream("streams/s", _Pipe(data))  # type: ignore[arg-type]
    assert (info.size, info.sha256) == (len(data), _sha(data))
    with repo.open_verified("streams/s") as reader:
        assert reader.read() == data

    empty = repo.put_bytes("empty", b"")
    assert empty.size == 0 and repo.get_bytes("empty") == b""
    assert repo.verify("base/b1/base.tar") == repo.stat("base/b1/base.tar")


def test_overwrite_replaces_object_and_record(repo: Repository) -> None:
    repo.put_bytes("k", b"old")
    info = repo.put_bytes("k", b"new content")
    assert repo.stat("k") == info
    assert repo.get_bytes("k") == b"new content"


def test_list_returns_complete_objects_sorted(repo: Repository) -> None:
    for key in ["wal/000000010000000000000002", "wal/000000010000000000000001",
                "wal/00000002.history", "base/x/base.tar", "walrus", "top"]:
        repo.put_bytes(key, key.encode())
    _raw_write(repo, "wal/000000010000000000000003", b"no record yet")  # incomplete upload

    assert [i.key for i in repo.list("wal/")] == [
        "wal/000000010000000000000001", "wal/000000010000000000000002", "wal/00000002.history"]
    assert [i.key for i in repo.list("wal")] == [
        "wal/000000010000000000000001", "wal/000000010000000000000002", "wal/00000002.history",
        "walrus"]
    assert [i.key for i in repo.list("wal/0000000100")] == [
        "wal/000000010000000000000001", "wal/000000010000000000000002"]
    everything = repo.list("")
    assert [i.key for i in everything] == sorted(i.key for i in everything)
    assert len(everything) == 6
    assert not any(i.key.endswith(RECORD_SUFFIX) for i in everything)
    assert everything[0].sha256 == _sha(everything[0].key.encode())
    assert repo.list("nothing/here/") == []
    # keys(): the same objects from the listing alone (no record is read)
    for prefix in ("wal/", "wal", "wal/0000000100", "", "nothing/here/"):
        assert repo.keys(prefix) == [i.key for i in repo.list(prefix)]


def test_delete(repo: Repository) -> None:
    repo.put_bytes("d/x", b"x")
    repo.delete("d/x")
    assert not repo.exists("d/x")
    assert repo.list("d/") == []
    repo.delete("d/x")  # missing is not an error
    repo.delete("never/existed")
    with pytest.raises(ObjectNotFound):
        repo.get_bytes("d/x")


@pytest.mark.parametrize("operation", ["stat", "get_bytes", "get_file", "verify", "open_verified"])
def test_missing_object(repo: Repository, operation: str, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound) as info:
        _read_with(repo, operation, "nope/missing", tmp_path)
    assert "nope/missing" in str(info.value) and repo.url in str(info.value)
    assert not isinstance(info.value, IncompleteObject)


def _read_with(repo: Repository, operation: str, key: str, tmp_path: Path) -> object:
    if operation == "get_file":
        return repo.get_file(key, tmp_path / "dest")
    if operation == "open_verified":
        with repo.open_verified(key) as reader:
            return reader.read()
    return getattr(repo, operation)(key)


# -- corruption ----------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["get_file", "get_bytes", "open_verified", "verify"])
def test_flipped_byte_is_detected(repo: Repository, operation: str, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    info = repo.put_bytes("base/b1/base.tar", data)
    _flip_byte(repo, "base/b1/base.tar", offset=54_321)
    bad = bytearray(data)
    bad[54_321] ^= 0xFF

    with pytest.raises(ChecksumMismatch) as caught:
        _read_with(repo, operation, "base/b1/base.tar", tmp_path)
    message = str(caught.value)
    assert "'base/b1/base.tar'" in message
    assert info.sha256 in message and _sha(bytes(bad)) in message
    assert repo.url in message
    if operation == "get_file":
        assert list(tmp_path.iterdir()) == []  # neither dest nor a temporary file is left


def test_get_many_reads_every_key_in_order_and_verifies_each(repo: Repository) -> None:
    blobs = {f"backups/b{i}/backup.json": os.urandom(1000 + i) for i in range(6)}
    for key, data in blobs.items():
        repo.put_bytes(key, data)
    keys = sorted(blobs, reverse=True)
    assert repo.get_many(keys) == [blobs[k] for k in keys]
    assert repo.get_many([]) == []
    _flip_byte(repo, "backups/b3/backup.json", offset=7)
    with pytest.raises(ChecksumMismatch, match="backups/b3/backup.json"):
        repo.get_many(keys)


def test_get_file_removes_stale_dest_on_mismatch(repo: Repository, tmp_path: Path) -> None:
    repo.put_bytes("x", b"good bytes")
    _flip_byte(repo, "x")
    dest = tmp_path / "RECOVERYXLOG"
    dest.write_bytes(b"left over from an earlier attempt")
    with pytest.raises(ChecksumMismatch):
        repo.get_file("x", dest)
    assert not dest.exists()


def test_truncated_and_extended_objects_are_detected(repo: Repository) -> None:
    repo.put_bytes("t", b"0123456789")
    _raw_write(repo, "t", b"01234")
    with pytest.raises(ChecksumMismatch, match=r"10 bytes\), got sha256 \w+ \(5 bytes\)"):
        repo.verify("t")
    _raw_write(repo, "t", b"0123456789+")
    with pytest.raises(ChecksumMismatch):
        repo.get_bytes("t")


def _extract(tar: tarfile.TarFile, dest: Path) -> None:
    if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
        tar.extractall(dest, filter="data")
    else:
        tar.extractall(dest)


def test_tar_streams_through_open_verified(repo: Repository, tmp_path: Path) -> None:
    payload = os.urandom(200_000)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        member = tarfile.TarInfo("data/file.bin")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    repo.put_bytes("base/b/base.tar", buffer.getvalue())

    with (repo.open_verified("base/b/base.tar") as reader,
          tarfile.open(fileobj=reader, mode="r|") as tar):
        _extract(tar, tmp_path / "ok")
    assert (tmp_path / "ok/data/file.bin").read_bytes() == payload

    # Corrupt the tar's zero padding after the end-of-archive marker: a streaming tar reader
    # never looks there, but leaving the block still verifies the rest.
    _flip_byte(repo, "base/b/base.tar", offset=len(buffer.getvalue()) - 1)
    with pytest.raises(ChecksumMismatch), repo.open_verified("base/b/base.tar") as reader:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            _extract(tar, tmp_path / "bad")


# -- compressed objects ----------------------------------------------------------------------------


def _compressible(n: int) -> bytes:
    """WAL-like: runs of zeros and repeated records between random bytes."""
    chunk = os.urandom(512) + b"\x00" * 3000 + b"INSERT INTO t VALUES (42, 'x');" * 20
    return (chunk * (n // len(chunk) + 1))[:n]


@pytest.mark.parametrize("encoding", ["lz4", "zstd", "gzip"])
def test_compressed_objects_are_stored_smaller_and_read_plain(
        repo: Repository, encoding: str, tmp_path: Path) -> None:
    data = _compressible(2_000_000)
    source = tmp_path / "segment"
    source.write_bytes(data)
    seen: list[int] = []
    info = repo.put_file("wal/seg", source, encoding=encoding, level=1, progress=seen.append)
    at_rest = _raw_read(repo, "wal/seg")
    assert (info.size, info.sha256, info.encoding) == (len(data), _sha(data), encoding)
    assert (info.stored_size, info.stored_sha256) == (len(at_rest), _sha(at_rest))
    assert info.bytes_at_rest == len(at_rest) < len(data) // 4
    assert sum(seen) == len(at_rest)
    assert repo.stat("wal/seg") == info and repo.list("wal/") == [info]
    assert repo.get_bytes("wal/seg") == data
    with repo.open_verified("wal/seg") as reader:
        assert reader.read(10) == data[:10]  # stopping early still verifies the rest
    assert repo.get_file("wal/seg", tmp_path / "dest") == info
    assert (tmp_path / "dest").read_bytes() == data
    assert repo.verify("wal/seg") == info
    record = _raw_read(repo, "wal/seg" + RECORD_SUFFIX).decode()
    assert f'"encoding": "{encoding}"' in record and "restorekit-checksum/2" in record


def test_plain_objects_keep_the_old_record(repo: Repository) -> None:
    info = repo.put_bytes("wal/plain", b"plain wal")
    record = _raw_read(repo, "wal/plain" + RECORD_SUFFIX).decode()
    assert "encoding" not in record and "restorekit-checksum/1" in record
    assert info.encoding is None and info.bytes_at_rest == 9


@pytest.mark.parametrize("operation", ["get_file", "get_bytes", "open_verified", "verify"])
def test_flipped_byte_in_a_compressed_object_is_detected(repo: Repository, operation: str,
                                                          tmp_path: Path) -> None:
    data = _compressible(500_000)
    info = repo.put_stream("wal/seg", io.BytesIO(data), encoding="lz4")  # type: ignore[arg-type]
    assert info.stored_size is not None
    _flip_byte(repo, "wal/seg", offset=info.stored_size // 2)
    with pytest.raises(ChecksumMismatch, match="lz4-compressed bytes at rest") as caught:
        _read_with(repo, operation, "wal/seg", tmp_path)
    assert info.stored_sha256 in str(caught.value)
    if operation == "get_file":
        assert list(tmp_path.iterdir()) == []


def test_decompressed_bytes_are_checked_against_the_original(repo: Repository,
                                                             tmp_path: Path) -> None:
    """A record whose at-rest checksum fits but whose original does not (the object was
    replaced by another valid compressed stream and its record patched) still fails."""
    repo.put_stream("wal/seg", io.BytesIO(_compressible(100_000)),  # type: ignore[arg-type]
                    encoding="zstd")
    other = repo.put_stream("wal/other", io.BytesIO(b"other bytes" * 1000),  # type: ignore[arg-type]
                            encoding="zstd")
    import json

    record = json.loads(_raw_read(repo, "wal/seg" + RECORD_SUFFIX))
    record.update(stored_size=other.stored_size, stored_sha256=other.stored_sha256)
    _raw_write(repo, "wal/seg", _raw_read(repo, "wal/other"))
    _raw_write(repo, "wal/seg" + RECORD_SUFFIX, json.dumps(record).encode())
    with pytest.raises(ChecksumMismatch, match="after zstd decompression"):
        repo.get_file("wal/seg", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_failed_compressed_put_leaves_nothing(repo: Repository) -> None:
    source = _Pipe(_compressible(300_000), fail_after=100_000)
    with pytest.raises(RepositoryError):
        repo.put_stream("wal/seg", source, encoding="lz4")  # type: ignore[arg-type]
    assert not repo.exists("wal/seg")
    assert repo.list("wal/") == []


def _chatty(directory: Path, encoding: str) -> None:
    """An ``encoding`` program first on PATH that writes 256 KiB of warnings (four pipes' worth)
    before it runs the real one."""
    import shutil

    real = shutil.which(encoding)
    program = directory / encoding
    program.write_text(f"#!/bin/sh\nhead -c 262144 /dev/zero | tr '\\0' w >&2\n"
                       f'exec {real} "$@"\n')
    program.chmod(0o755)


@pytest.mark.parametrize("operation", ["put_stream", "open_verified", "get_file"])
def test_a_chatty_codec_does_not_hang_the_repository(
        local_repo_url: str, operation: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The codec's stderr goes to a file: on a pipe read only at the end, a program blocked
    writing its warnings stops reading its input, and the put or the read waits forever."""
    import threading

    repo = open_repository(local_repo_url, os_user=default_os_user())
    data = _compressible(2_000_000)
    if operation != "put_stream":
        repo.put_stream("wal/seg", io.BytesIO(data), encoding="lz4")  # type: ignore[arg-type]
    (tmp_path / "bin").mkdir()
    _chatty(tmp_path / "bin", "lz4")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    got: list[bytes] = []

    def run() -> None:
        if operation == "put_stream":
            repo.put_stream("wal/seg", io.BytesIO(data), encoding="lz4")  # type: ignore[arg-type]
            got.append(repo.get_bytes("wal/seg"))
        elif operation == "open_verified":
            with repo.open_verified("wal/seg") as reader:
                got.append(reader.read())
        else:
            repo.get_file("wal/seg", tmp_path / "dest")
            got.append((tmp_path / "dest").read_bytes())

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), f"{operation} hung on the codec's warnings"
    assert got == [data]


# -- incomplete objects, atomicity -----------------------------------------------------------------


def test_object_without_checksum_record_is_incomplete(repo: Repository) -> None:
    repo.put_bytes("wal/000000010000000000000001", b"segment")
    _raw_delete(repo, "wal/000000010000000000000001" + RECORD_SUFFIX)

    with pytest.raises(IncompleteObject, match="no checksum record") as caught:
        repo.stat("wal/000000010000000000000001")
    assert isinstance(caught.value, ObjectNotFound)
    with pytest.raises(IncompleteObject):
        repo.get_bytes("wal/000000010000000000000001")
    assert not repo.exists("wal/000000010000000000000001")
    assert repo.list("wal/") == []


def test_record_without_object_is_not_found(repo: Repository) -> None:
    repo.put_bytes("gone", b"x")
    _raw_delete(repo, "gone")
    with pytest.raises(ObjectNotFound, match="object itself is gone"):
        repo.stat("gone")
    with pytest.raises(ObjectNotFound):
        repo.get_bytes("gone")
    assert repo.list("") == []


def test_unreadable_record_is_a_clear_error(repo: Repository) -> None:
    repo.put_bytes("r", b"x")
    _raw_write(repo, "r" + RECORD_SUFFIX, b"{not json")
    with pytest.raises(RepositoryError, match="checksum record of 'r' .* is unreadable"):
        repo.get_bytes("r")


def test_put_is_invisible_until_complete(repo: Repository, tmp_path: Path) -> None:
    states: list[bool] = []

    def progress(_: int) -> None:
        states.append(repo.exists("atomic/obj"))

    source = tmp_path / "f"
    source.write_bytes(os.urandom(3 * 1024 * 1024))
    repo.put_file("atomic/obj", source, progress=progress)
    assert states and not any(states)
    assert repo.exists("atomic/obj")


def test_failed_put_leaves_nothing_behind(repo: Repository) -> None:
    with pytest.raises((RepositoryError, OSError)):
        source = _Pipe(os.urandom(100_000), step=4096, fail_after=40_000)
        repo.put_stream("f/new", source)  # type: ignore[arg-type]
    assert not repo.exists("f/new")
    assert repo.list("") == []
    if isinstance(repo, LocalRepository):
        assert [p.name for p in repo.root.rglob("*") if p.is_file()] == []


def test_failed_local_overwrite_keeps_the_old_object(local_repo_url: str) -> None:
    repo = open_repository(local_repo_url, os_user=default_os_user())
    old = repo.put_bytes("k", b"old and good")
    with pytest.raises(RepositoryError, match="simulated read error"):
        repo.put_stream("k", _Pipe(os.urandom(10_000), fail_after=5_000))  # type: ignore[arg-type]
    assert repo.stat("k") == old
    assert repo.get_bytes("k") == b"old and good"


@pytest.mark.parametrize(
    "key", ["../escape", "/etc/passwd", "a//b", "a/./b", "", "x" + RECORD_SUFFIX, "a/.rk-tmp-1"])
def test_bad_keys_are_rejected_before_any_io(repo: Repository, key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        repo.put_bytes(key, b"x")
    with pytest.raises(ConfigError):
        repo.get_file(key, tmp_path / "d")
    with pytest.raises(ConfigError):
        repo.delete(key)
    assert repo.list("") == []
    with pytest.raises(ConfigError):
        repo.list("../")


def test_large_file_goes_multipart(repo: Repository, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    block = os.urandom(1024 * 1024)
    source.write_bytes(block * 20)
    seen: list[int] = []
    info = repo.put_file("base/big/base.tar", source, progress=seen.append)
    assert info.size == 20 * 1024 * 1024 and sum(seen) == info.size
    assert info.sha256 == _sha(block * 20)
    if isinstance(repo, S3Repository):
        head = repo.client.head_object(Bucket=repo.bucket, Key=repo._full("base/big/base.tar"))
        assert head["ETag"].strip('"').endswith("-3")  # three 8 MiB parts
    dest = tmp_path / "back.bin"
    got: list[int] = []
    assert repo.get_file("base/big/base.tar", dest, progress=got.append) == info
    assert sum(got) == info.size
    assert _sha(dest.read_bytes()) == info.sha256


# -- backend specifics -----------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership changes need root")
def test_local_repository_gives_what_it_creates_to_os_user(local_repo_url: str) -> None:
    import pwd

    repo = open_repository(local_repo_url, os_user="postgres")
    assert isinstance(repo, LocalRepository)
    repo.put_bytes("wal/deep/000000010000000000000001", b"x")
    uid = pwd.getpwnam("postgres").pw_uid
    created = [repo.root / "wal", repo.root / "wal/deep",
               repo.root / "wal/deep/000000010000000000000001",
               repo.root / ("wal/deep/000000010000000000000001" + RECORD_SUFFIX)]
    assert [p.stat().st_uid for p in created] == [uid] * 4
    assert oct(created[0].stat().st_mode & 0o777) == "0o700"
    assert oct(created[2].stat().st_mode & 0o777) == "0o600"


def test_missing_bucket_is_a_clear_non_retryable_error(moto_server: str) -> None:
    repo = open_repository(f"s3://rk-no-such-bucket/p?endpoint_url={moto_server}&region=us-east-1")
    with pytest.raises(RepositoryError, match="bucket 'rk-no-such-bucket' does not exist") as info:
        repo.put_bytes("x", b"x")
    assert not info.value.is_retryable


def _client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(
    ("exc", "kind", "retryable"),
    [
        (lambda: _client_error("NoSuchKey", 404), ObjectNotFound, False),
        (lambda: _client_error("404", 404), ObjectNotFound, False),
        (lambda: _client_error("AccessDenied", 403), RepositoryError, False),
        (lambda: _client_error("InvalidRequest", 400), RepositoryError, False),
        (lambda: _client_error("SlowDown", 503), RepositoryError, True),
        (lambda: _client_error("InternalError", 500), RepositoryError, True),
        (lambda: _client_error("Throttling", 400), RepositoryError, True),
        (lambda: _client_error("TooManyRequests", 429), RepositoryError, True),
        (lambda: __import__("botocore.exceptions").exceptions.EndpointConnectionError(
            endpoint_url="http://x"), RepositoryError, True),
        (lambda: __import__("botocore.exceptions").exceptions.ReadTimeoutError(
            endpoint_url="http://x"), RepositoryError, True),
        (lambda: __import__("botocore.exceptions").exceptions.NoCredentialsError(),
         RepositoryError, False),
    ],
)
def test_s3_error_mapping(exc: Callable[[], Exception], kind: type[Exception],
                          retryable: bool) -> None:
    error = map_s3_error(exc(), operation="get", key="k", url="s3://b/p", bucket="b")
    assert type(error) is kind
    assert error.is_retryable is retryable
    assert "s3://b/p" in str(error)

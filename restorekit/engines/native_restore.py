"""Restoring a native base backup: which backup a point is restored from, and unpacking it
into the new data directory (GNU tar as the PostgreSQL OS user, the checksum read to the end
first, no links let through)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, cast

from restorekit.errors import (
    ConfigError,
    PgToolFailed,
    RepositoryError,
)
from restorekit.models import (
    BackupInfo,
    PointKind,
    RestorePoint,
    parse_lsn,
)
from restorekit.pg.tools import chown_for
from restorekit.repository import codec_argv
from restorekit.repository.protocol import InPlace

_CHUNK = 1024 * 1024
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux), missing from older Pythons' fcntl
_PIPE_SIZE = 1 << 20
_QUEUED_CHUNKS = 8  # read ahead of tar: at most this many MiB in memory


def _start_tar(dest: Path, *, os_user: str | None, codec: str | None,
               stdin: IO[bytes] | int, stderr: IO[bytes]) -> subprocess.Popen[bytes]:
    """GNU tar extracting the archive on ``stdin`` into ``dest``, as the PostgreSQL OS user (the
    files come out owned by it), through the codec's program when ``codec`` is given.

    ``stderr`` is a file, not a pipe: tar warns once per member in some archives (a time stamp
    in the future), and with a pipe nobody reads until the end it would block there, stop
    reading its stdin, and hang the restore."""
    dest.mkdir(parents=True, exist_ok=True)
    chown_for(dest, os_user)
    argv = ["tar", "--extract", "--file=-", f"--directory={dest}", "--no-same-owner",
            "--blocking-factor=2048"]
    if codec is not None:
        program = codec_argv(codec, decompress=True)[0]  # ConfigError when not installed
        argv.append(f"--use-compress-program={program}")
    if os_user is not None:
        argv = ["runuser", "-u", os_user, "--", *argv]
    # A session of its own: stopping runuser alone would leave tar (and its codec) writing
    # into ``dest`` while the caller removes it.
    return subprocess.Popen(argv, stdin=stdin, stderr=stderr, start_new_session=True)


def _finish_tar(proc: subprocess.Popen[bytes], stderr: IO[bytes], *, broken: bool = False
                ) -> None:
    if proc.wait() != 0 or broken:
        stderr.seek(0)
        text = stderr.read().decode(errors="replace")
        argv = cast(list[str], proc.args)  # _start_tar runs an argv list of str
        raise PgToolFailed(argv, proc.returncode, text[-2000:])


def untar_in_place(stored: InPlace, dest: Path, *, os_user: str | None,
                   on_bytes: Callable[[int], None], codec: str | None = None) -> None:
    """Extract a repository object that is a local file: tar reads the file itself (it is tar's
    stdin) while this process hashes it alongside, so no byte goes through a pipe or this
    process on its way to tar, and the two readers share the page cache. The checksum is run
    to the end before tar's result counts: on a mismatch tar is stopped and ChecksumMismatch
    raised (the cause, when tar failed too); the caller removes the directory."""
    with tempfile.TemporaryFile() as stderr:
        proc = _start_tar(dest, os_user=os_user, codec=codec, stdin=stored.file, stderr=stderr)
        try:
            stored.check(on_bytes)
        except BaseException:
            _stop_group(proc)
            raise
        _finish_tar(proc, stderr)


def untar(stream: IO[bytes], dest: Path, *, os_user: str | None,
          on_bytes: Callable[[int], None], codec: str | None = None) -> None:
    """Stream a tar archive into GNU tar while this process reads the repository stream to its
    end, so the checksum is checked before the cluster is ever started (the way for an object
    that is not a local file: S3, or compressed by the repository). On a mismatch tar is
    stopped and the error raised; the caller removes the directory. ``codec``: the archive is
    compressed and tar runs that program (``lz4 -d``...) on it.

    A writer thread feeds tar through a pipe widened to 1 MiB while this thread reads and
    hashes the next chunks, so hashing and extraction run side by side (both release the GIL).
    """
    with tempfile.TemporaryFile() as stderr:
        proc = _start_tar(dest, os_user=os_user, codec=codec, stdin=subprocess.PIPE,
                          stderr=stderr)
        broken = _feed(proc, stream, on_bytes)
        _finish_tar(proc, stderr, broken=broken)


def _feed(proc: subprocess.Popen[bytes], stream: IO[bytes],
          on_bytes: Callable[[int], None]) -> bool:
    """Read ``stream`` to its end into tar's stdin; True when tar stopped reading first."""
    assert proc.stdin is not None
    stdin = proc.stdin
    with contextlib.suppress(OSError):
        fcntl.fcntl(stdin.fileno(), _F_SETPIPE_SZ, _PIPE_SIZE)
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUED_CHUNKS)
    broken: list[OSError] = []

    def feed() -> None:
        # Always drains the queue to its end marker, so the reader never blocks on a dead tar.
        try:
            while (chunk := chunks.get()) is not None:
                if not broken:
                    try:
                        stdin.write(chunk)
                    except OSError as exc:  # BrokenPipeError: tar gave up
                        broken.append(exc)
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    writer = threading.Thread(target=feed, name="untar-writer", daemon=True)
    writer.start()
    try:
        while chunk := stream.read(_CHUNK):
            if broken:
                continue  # tar gave up: read on, so a checksum mismatch (the cause) is raised
            chunks.put(chunk)
            on_bytes(len(chunk))
    except BaseException:
        _stop_group(proc)
        chunks.put(None)
        writer.join()
        raise
    chunks.put(None)
    writer.join()
    return bool(broken)


def _stop_group(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGKILL ``proc``'s process group and wait until none of it is left (tar is runuser's
    child: once runuser is gone it is reaped by init, not by us)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def refuse_links(data_dir: Path) -> None:
    """A base backup holds no links; one would be a tablespace pointing at the SOURCE's
    directories, and starting a cluster through it could write into production."""
    for root, dirs, files in os.walk(data_dir):
        for entry in (*dirs, *files):
            if os.path.islink(os.path.join(root, entry)):
                raise RepositoryError(
                    f"the backup contains a link {os.path.join(root, entry)!r}; refusing to start "
                    "a cluster that could reach the source's directories through it")


def choose_backup(
    point: RestorePoint,
    backups: list[BackupInfo],
    *,
    restore_point_lsn: object = None,
) -> BackupInfo:
    """Pick the base backup to restore ``point`` from: the newest one that ends before it.

    For an xid or an unrecorded restore point name we cannot know where it lies, so the oldest
    backup is used (longest replay, but it cannot overshoot).
    """
    if not backups:
        raise ConfigError("no base backup in the repository: run `restorekit backup` first")
    ordered = sorted(backups, key=lambda b: (b.stop_time, b.backup_id))
    if point.kind is PointKind.BACKUP:
        for backup in ordered:
            if backup.backup_id == point.value:
                return backup
        raise ConfigError(
            f"no backup {point.value!r}; available: {', '.join(b.backup_id for b in ordered)}"
        )
    if point.kind in (PointKind.LATEST, PointKind.IMMEDIATE):
        return ordered[-1]
    if point.kind is PointKind.TIME:
        assert point.time is not None
        eligible = [b for b in ordered if b.stop_time <= point.time]
        return eligible[-1] if eligible else ordered[0]
    target_lsn: str | None = None
    if point.kind is PointKind.LSN:
        target_lsn = point.value
    elif point.kind is PointKind.XID and point.commit_lsn:
        target_lsn = point.commit_lsn
    elif point.kind is PointKind.NAME and callable(restore_point_lsn):
        target_lsn = restore_point_lsn(point.value)
    if target_lsn:
        eligible = [b for b in ordered if parse_lsn(b.stop_lsn) <= parse_lsn(target_lsn)]
        return eligible[-1] if eligible else ordered[0]
    return ordered[0]



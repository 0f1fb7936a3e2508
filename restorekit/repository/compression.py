"""Compressed objects: ``put_file``/``put_stream`` with ``encoding="lz4"|"zstd"|"gzip"`` store the
bytes compressed (by the ``lz4``/``zstd``/``gzip`` programs: the standard library has no lz4 or
zstd) and every read decompresses them, so callers only ever see the original bytes.

``subprocess`` and ``threading`` are imported when a codec runs, not with the module: an
uncompressed ``archive_command`` push needs neither.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from restorekit.errors import (
    ChecksumMismatch,
    ConfigError,
    RepositoryError,
    RestoreKitError,
)
from restorekit.repository.protocol import CHUNK_SIZE, ObjectInfo

if TYPE_CHECKING:
    import subprocess
    import threading

#: Codecs a compressed object may use: the program, and its package where it is missing.
ENCODINGS = {"lz4": "lz4", "zstd": "zstd", "gzip": "gzip"}


def codec_argv(encoding: str, *, decompress: bool, level: int | None = None) -> list[str]:
    """The command line that (de)compresses ``encoding`` from stdin to stdout.

    Raises:
        ConfigError: an unknown encoding, or its program is not installed.
    """
    if encoding not in ENCODINGS:
        raise ConfigError(f"unknown compression {encoding!r}; known: {', '.join(ENCODINGS)}")
    program = _which(encoding)
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


def _which(program: str) -> str | None:
    """``shutil.which(program)``, then the same in /usr/bin and /bin (PostgreSQL may run
    archive_command with a short PATH). Not shutil itself: importing it loads zlib, bz2 and
    lzma, ~2 ms of every archive_command start, for none of which a codec program is used."""
    for directory in (*os.get_exec_path(), "/usr/bin", "/bin"):
        candidate = os.path.join(directory or os.curdir, program)
        if os.access(candidate, os.F_OK | os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


class _Decoder(io.RawIOBase):
    """The decompressed bytes of ``stored`` (an already verifying reader), through the codec's
    program. A thread feeds the program; at the end the thread's error (a checksum mismatch of
    the bytes at rest comes first: it is the real cause) or the program's failure is raised."""

    def __init__(self, stored: BinaryIO, info: ObjectInfo, url: str) -> None:
        super().__init__()
        assert info.encoding is not None
        import subprocess
        import threading

        self._info = info
        self._url = url
        self._stored = stored
        self._proc, self._stderr = _spawn(codec_argv(info.encoding, decompress=True),
                                          subprocess.PIPE)
        # Buffered (bufsize=-1, the default): a BufferedReader, which typeshed's IO[bytes]
        # does not say; readinto needs it.
        assert isinstance(self._proc.stdout, io.BufferedReader)
        self._stdout = self._proc.stdout
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
        n = self._stdout.readinto(buffer)
        if n:
            return n
        if not self._finished:
            self._finished = True
            self._thread.join()
            code = self._proc.wait()
            if self._error is not None:
                raise self._error
            if code != 0:
                raise ChecksumMismatch(
                    f"{self._info.key!r} in {self._url} could not be decompressed "
                    f"({self._info.encoding} exited {code}: {_tail(self._stderr)}); the stored "
                    "object is corrupt")
        return 0

    def close(self) -> None:
        if not self.closed:
            if self._proc.poll() is None:
                self._proc.kill()
            self._thread.join()
            self._proc.wait()
            self._stdout.close()
            self._stderr.close()
        super().close()


def _spawn(argv: list[str], stdout: IO[bytes] | int
           ) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """The codec program ``argv``, fed through a stdin pipe, writing to ``stdout``, with its
    stderr in a file of its own (:func:`_stderr_file`; closed here if the program cannot
    start)."""
    import subprocess

    stderr = _stderr_file()
    try:
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=stdout,
                                stderr=stderr), stderr
    except BaseException:
        stderr.close()
        raise


def _stderr_file() -> IO[bytes]:
    """An anonymous file for a codec program's stderr. A file, not a pipe read at the end: a
    program that fills a pipe with warnings blocks, stops reading its input, and the put or
    read that feeds it waits forever. In memory (memfd) where Linux has it, not tempfile: the
    WAL push (archive_command) would import shutil, bz2 and lzma with it."""
    if hasattr(os, "memfd_create"):
        return open(os.memfd_create("restorekit-codec-stderr"), "w+b")  # noqa: SIM115
    import tempfile

    return tempfile.TemporaryFile()


def _tail(stderr: IO[bytes]) -> str:
    """The last words a codec's program wrote to its ``stderr`` file."""
    stderr.seek(0)
    return stderr.read().decode(errors="replace").strip()[-300:]


def _decode_into(stored: BinaryIO, info: ObjectInfo, url: str, out: BinaryIO) -> None:
    """Decompress ``stored`` (a reader that verifies the bytes at rest) into the file ``out``.

    The codec's program writes ``out`` itself. Reading its output back through a pipe into
    Python cost 66 ms of CPU per 16 MiB WAL segment (lz4, 64 KiB pipe turns on both sides),
    writing the file directly 40 ms with the caller's hash of the written file included, and a
    plain copy 20 ms: the WAL fetches of a restore are what made lz4 archives replay slower.
    The caller checks the written bytes against the record.
    """
    assert info.encoding is not None
    proc, stderr = _spawn(codec_argv(info.encoding, decompress=True), out)
    with stderr:
        assert proc.stdin is not None
        try:
            try:
                while chunk := stored.read(CHUNK_SIZE):
                    proc.stdin.write(chunk)
            except BrokenPipeError:
                # The program gave up on damaged input: read the stored bytes to their end so a
                # checksum mismatch, the real cause, is what gets raised.
                while stored.read(CHUNK_SIZE):
                    pass
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code != 0:
            raise ChecksumMismatch(
                f"{info.key!r} in {url} could not be decompressed ({info.encoding} exited "
                f"{code}: {_tail(stderr)}); the stored object is corrupt")


def _finish_encoder(proc: subprocess.Popen[bytes], stderr: IO[bytes], feeder: threading.Thread,
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
        raise RepositoryError(f"{encoding} failed compressing {key!r} (exit {code}): "
                              f"{_tail(stderr)}")


@contextlib.contextmanager
def _encoder(source: Any, key: str, encoding: str, level: int | None
             ) -> Iterator[tuple[IO[bytes], Callable[[], None]]]:
    """``source``'s bytes compressed by the codec's program (a thread feeds it), and the check
    to run once the compressed stream ended (:func:`_finish_encoder`); the program is stopped
    and its pipes closed on the way out."""
    import subprocess
    import threading

    proc, stderr = _spawn(codec_argv(encoding, decompress=False, level=level), subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    failure: list[BaseException] = []

    def feed() -> None:
        assert proc.stdin is not None
        try:
            while chunk := source.read(CHUNK_SIZE):
                proc.stdin.write(chunk)
        except BaseException as exc:  # noqa: BLE001 - raised by the calling thread
            failure.append(exc)
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    feeder = threading.Thread(target=feed, name="restorekit-encode", daemon=True)
    feeder.start()
    try:
        yield proc.stdout, lambda: _finish_encoder(proc, stderr, feeder, failure, key, encoding)
    finally:
        if proc.poll() is None:
            proc.kill()
        feeder.join()
        proc.wait()
        proc.stdout.close()
        stderr.close()

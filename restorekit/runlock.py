"""A host-local lock per target that outlives nothing: the kernel drops it when its process dies.

The one-run-per-target rule is a Prefect global concurrency limit, held by a *lease* that the
run keeps renewing. A run killed with ``kill -9`` cannot release its lease, so the slot stays
taken until the lease expires (minutes), and a re-run would wait for it. This lock tells a re-run
on the same machine, at once and for certain, that the previous holder is dead: an ``flock`` is
released by the kernel when the process that took it exits, however it exits. The record inside
the lock file (the holder's pid, flow run and lease id) is cleared on a clean exit, so a record
found under a free lock is exactly what a dead run left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


class HostLock:
    """``flock`` on ``path``, with a small JSON record of who holds it.

    Args:
        path: the lock file (created 0600 with its directory).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: TextIO | None = None

    def acquire(self, wait_seconds: float, *, sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> dict[str, Any] | None:
        """Take the lock, waiting up to ``wait_seconds`` while a live process holds it.

        Returns:
            The record a dead holder left behind (it never released the lock cleanly), or None.

        Raises:
            TimeoutError: a live process still holds the lock after ``wait_seconds``.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        file = os.fdopen(fd, "r+", encoding="utf-8")
        deadline = clock() + wait_seconds
        while True:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if clock() >= deadline:
                    file.close()
                    raise TimeoutError(f"{self.path} is held by a running process") from None
                sleep(0.5)
        self._file = file
        file.seek(0)
        text = file.read().strip()
        if not text:
            return None
        try:
            left: dict[str, Any] = json.loads(text)
        except ValueError:
            return {"unreadable": text[:200]}
        return left

    def record(self, **fields: Any) -> None:
        """Write who holds the lock now (pid and host are added)."""
        assert self._file is not None, "acquire() first"
        data = {"pid": os.getpid(), "host": socket.gethostname(), **fields}
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(data, default=str))
        self._file.flush()
        os.fsync(self._file.fileno())

    def release(self) -> None:
        """Clear the record (a clean exit) and drop the lock."""
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            self._file.seek(0)
            self._file.truncate()
            self._file.flush()
        with contextlib.suppress(OSError):
            fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None

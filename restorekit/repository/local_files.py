"""Files of a local repository: directories created 0700 and files 0600 (both chowned to the
PostgreSQL OS user when running as root), and writes that land in one step.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from restorekit.repository.objects import _temp_name


def _chown(path: Path, os_user: str | None) -> None:
    if os_user is not None:
        # Imported here: restorekit.pg.tools pulls in psycopg (through pg.dsn), and
        # restorekit.wal must start fast.
        from restorekit.pg.tools import chown_for

        chown_for(path, os_user)


def _ensure_dir(directory: Path, os_user: str | None) -> None:
    """Create ``directory`` and its missing parents, 0700 (owned by ``os_user`` when given)."""
    if directory.is_dir():
        return
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        if os_user is not None:
            from restorekit.pg.tools import make_dir

            make_dir(path, os_user, mode=0o700)
        else:
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=0o700)


def _write_atomic(final: Path, write: Callable[[BinaryIO], None], os_user: str | None,
                  before_commit: Callable[[], None] | None = None) -> None:
    """Write ``final`` in one step: a temporary file in the same directory (0600, chowned to
    ``os_user``), fsync, ``before_commit``, rename, fsync the directory; on any failure the
    temporary file goes and ``final`` is untouched."""
    _ensure_dir(final.parent, os_user)
    tmp = final.parent / _temp_name(final.name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        _chown(tmp, os_user)
        if before_commit is not None:
            before_commit()
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(final.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

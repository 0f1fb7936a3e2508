"""Local files of a snapshot: private temporary directories, ownership for tools that run as
another OS user, and progress over all files.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from restorekit.pg.tools import chown_for

Progress = Callable[[str, int, "int | None"], None]


def _no_progress(phase: str, done: int, total: int | None) -> None:
    return None


def _file_progress(phase: str, offset: int, total: int, report: Progress) -> Callable[[int], None]:
    """Adapt a repository's per-file progress (byte increments) to bytes over all files."""
    done = offset

    def callback(increment: int) -> None:
        nonlocal done
        done += int(increment)
        report(phase, min(done, total), total)

    return callback


def _give_tree(root: Path, os_user: str | None) -> None:
    """Let pg_restore read a download when it runs as another OS user."""
    if os_user is None:
        return
    for path in (root, *root.rglob("*")):
        chown_for(path, os_user)


@contextmanager
def _temp_dir(work_dir: Path | None, prefix: str, os_user: str | None) -> Iterator[Path]:
    """A private temporary directory, owned by ``os_user`` when the tools run as another user;
    removed on the way out whatever happens."""
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=work_dir))
    chown_for(path, os_user)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)

"""``untar`` and ``untar_in_place`` with real GNU tar: a chatty tar does not hang the restore,
and a failing tar's own words reach the error."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from restorekit.engines.native_restore import untar, untar_in_place
from restorekit.errors import PgToolFailed
from restorekit.repository import LocalRepository

_MEMBERS = 3000  # ~100 bytes of warning each: far more than a 64 KiB pipe holds


def _chatty_archive() -> bytes:
    """Members stamped ten years ahead (tar warns once per member), then 16 MiB more for tar
    to read: more than the pipe and the read-ahead queue hold, so a tar blocked on its
    warnings would stop the feed."""
    buf = io.BytesIO()
    future = time.time() + 10 * 365 * 86400
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(_MEMBERS):
            info = tarfile.TarInfo(f"d/member-{i:05d}")
            info.size, info.mtime = 1, future
            tar.addfile(info, io.BytesIO(b"x"))
        big = tarfile.TarInfo("big")
        big.size = 16 << 20
        tar.addfile(big, io.BytesIO(bytes(big.size)))
    return buf.getvalue()


def _finishes(run: Callable[[], None], seconds: float = 60) -> None:
    failure: list[BaseException] = []
    done = threading.Event()

    def target() -> None:
        try:
            run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failure.append(exc)
        done.set()

    threading.Thread(target=target, daemon=True).start()
    assert done.wait(seconds), "tar hung (blocked writing its warnings?)"
    if failure:
        raise failure[0]


def test_a_tar_that_warns_on_every_member_does_not_hang_the_streamed_restore(
    tmp_path: Path,
) -> None:
    data = _chatty_archive()
    seen: list[int] = []
    _finishes(lambda: untar(io.BytesIO(data), tmp_path / "out", os_user=None,
                            on_bytes=seen.append))
    assert sum(seen) == len(data)
    assert len(list((tmp_path / "out" / "d").iterdir())) == _MEMBERS
    assert (tmp_path / "out" / "big").stat().st_size == 16 << 20


def test_a_tar_that_warns_on_every_member_does_not_hang_the_in_place_restore(
    tmp_path: Path,
) -> None:
    repo = LocalRepository(tmp_path / "repo")
    repo.put_bytes("base.tar", _chatty_archive())

    def run() -> None:
        with repo.open_in_place("base.tar") as stored:
            assert stored is not None
            untar_in_place(stored, tmp_path / "out", os_user=None, on_bytes=lambda n: None)

    _finishes(run)
    assert len(list((tmp_path / "out" / "d").iterdir())) == _MEMBERS


def test_a_failing_tar_says_why(tmp_path: Path) -> None:
    with pytest.raises(PgToolFailed) as failed:
        untar(io.BytesIO(b"this is not a tar archive" * 100), tmp_path / "out", os_user=None,
              on_bytes=lambda n: None)
    assert "does not look like a tar archive" in str(failed.value)  # tar's own words

"""The WAL spool: what a restore fetches ahead of PostgreSQL, and the shell restore_command that
hands it over without starting Python."""

from __future__ import annotations

import shlex
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from restorekit.repository import LocalRepository
from restorekit.wal import (
    SPOOL_FALLBACK,
    SPOOL_LISTING,
    WalSpool,
    push_wal,
    replay_plan,
    restore_command,
    spool_cleanup_command,
)

MB16 = 16 * 1024 * 1024


def seg(tli: int, n: int) -> str:
    return f"{tli:08X}{n // 256:08X}{n % 256:08X}"


def no_history(name: str) -> str:
    raise AssertionError(f"{name} should not be read")


# -- the plan ------------------------------------------------------------------------


def test_plan_follows_one_timeline_from_the_backup_to_the_end_of_the_archive() -> None:
    archived = [seg(1, n) for n in range(2, 9)] + [seg(1, 3) + ".00000028.backup"]
    plan = replay_plan(archived, 1, 3 * MB16 + 40, segment_size=MB16, read_history=no_history)
    assert plan == [seg(1, n) for n in range(3, 9)]


def test_plan_stops_at_a_gap_and_at_the_target_lsn() -> None:
    archived = [seg(1, n) for n in (3, 4, 6, 7)]
    assert replay_plan(archived, 1, 3 * MB16, segment_size=MB16,
                       read_history=no_history) == [seg(1, 3), seg(1, 4)]
    archived = [seg(1, n) for n in range(3, 9)]
    assert replay_plan(archived, 1, 3 * MB16, segment_size=MB16, end_lsn=5 * MB16 + 7,
                       read_history=no_history) == [seg(1, n) for n in (3, 4, 5)]


def test_plan_follows_later_timelines_as_postgresql_does() -> None:
    # Timeline 2 forked from 1 in segment 5, timeline 3 from 2 in segment 7; the archive also
    # holds timeline 1's own later segments, which PostgreSQL skips for the newer timeline.
    archived = ([seg(1, n) for n in range(3, 9)] + [seg(2, n) for n in range(5, 8)]
                + [seg(3, n) for n in range(7, 10)] + ["00000002.history", "00000003.history"])
    histories = {"00000003.history": "1\t0/5000100\tno recovery target specified\n"
                                     "2\t0/7000200\tno recovery target specified\n"}
    plan = replay_plan(archived, 1, 3 * MB16, segment_size=MB16,
                       read_history=histories.__getitem__)
    assert plan == ["00000002.history", "00000003.history", seg(1, 3), seg(1, 4), seg(2, 5),
                    seg(2, 6), seg(3, 7), seg(3, 8), seg(3, 9)]


def test_plan_fetches_no_segment_when_the_backup_is_not_on_the_newest_history() -> None:
    archived = [seg(1, 3), seg(2, 3), "00000002.history", "00000003.history"]
    plan = replay_plan(archived, 2, 3 * MB16, segment_size=MB16,
                       read_history=lambda name: "1\t0/2000000\tforked from 1\n")
    assert plan == ["00000002.history", "00000003.history"]


# -- the restore_command ------------------------------------------------------------------------


def expand(command: str, name: str, path: str) -> str:
    """%f, %p and %% as PostgreSQL substitutes them."""
    out, i = [], 0
    while i < len(command):
        if command[i] == "%" and i + 1 < len(command):
            out.append({"f": name, "p": path, "%": "%"}.get(command[i + 1], command[i:i + 2]))
            i += 2
        else:
            out.append(command[i])
            i += 1
    return "".join(out)


@pytest.fixture
def odd(tmp_path: Path) -> Path:
    """A directory whose name needs quoting, with a fake python that records its arguments."""
    odd = tmp_path / "it's a 50% $(odd) dir"
    (odd / "data" / "pg_wal").mkdir(parents=True)
    python = odd / "py thon"
    python.write_text(f'#!/bin/sh\necho "$@" >> {shlex.quote(str(odd / "python-ran"))}\nexit 7\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    spool = odd / "wal-spool"
    spool.mkdir()
    (spool / SPOOL_LISTING).write_text(f"00000002.history\n{seg(1, 3)}\n{seg(1, 4)}\n")
    return odd


def run(odd: Path, name: str, *, spool: bool = True) -> subprocess.CompletedProcess[str]:
    command = restore_command(f"file://{odd}/repo", python=str(odd / "py thon"),
                              spool=odd / "wal-spool" if spool else None)
    path = "pg_wal/RECOVERYXLOG"
    return subprocess.run(["/bin/sh", "-c", expand(command, name, path)], capture_output=True,
                          text=True, timeout=30, cwd=odd / "data")


def test_a_spooled_segment_is_moved_into_place_without_python(odd: Path) -> None:
    (odd / "wal-spool" / seg(1, 3)).write_bytes(b"segment 3")
    result = run(odd, seg(1, 3))
    assert result.returncode == 0, result.stderr
    assert (odd / "data" / "pg_wal" / "RECOVERYXLOG").read_bytes() == b"segment 3"
    assert not (odd / "wal-spool" / seg(1, 3)).exists()  # moved: no second copy on the disk
    assert not (odd / "python-ran").exists()


def test_a_file_marked_to_keep_is_copied_as_postgresql_asks_for_it_again(odd: Path) -> None:
    (odd / "wal-spool" / "00000002.history").write_text("1\t0/5000000\treason\n")
    (odd / "wal-spool" / ".keep-00000002.history").touch()
    for _ in range(2):
        assert run(odd, "00000002.history").returncode == 0
    assert (odd / "wal-spool" / "00000002.history").exists()
    assert not (odd / "python-ran").exists()


def test_a_file_the_archive_lacks_is_answered_without_python(odd: Path) -> None:
    for name in (seg(1, 5), "00000003.history"):
        result = run(odd, name)
        assert result.returncode == 1  # "not archived": PostgreSQL ends recovery normally
        assert f"restorekit.wal: {name} is not in the archive" in result.stderr
    assert not (odd / "python-ran").exists()


def test_a_listed_file_not_spooled_yet_is_fetched_by_python_and_noted(odd: Path) -> None:
    result = run(odd, seg(1, 4))
    assert result.returncode == 7  # whatever `get` answers is PostgreSQL's answer
    ran = (odd / "python-ran").read_text()
    assert "-m restorekit.wal get --repo" in ran and seg(1, 4) in ran
    assert (odd / "wal-spool" / SPOOL_FALLBACK).read_text().strip() == seg(1, 4)


def test_without_the_spool_every_name_goes_to_python(odd: Path) -> None:
    import shutil

    shutil.rmtree(odd / "wal-spool")  # removed at the end of recovery, or never made
    result = run(odd, seg(1, 5))
    assert result.returncode == 7 and result.stderr == ""
    assert seg(1, 5) in (odd / "python-ran").read_text()


def test_an_unreadable_listing_is_not_taken_for_an_absent_file(odd: Path) -> None:
    listing = odd / "wal-spool" / SPOOL_LISTING
    listing.unlink()
    listing.mkdir()  # grep exits 2 on it: must not read as "not in the archive"
    result = run(odd, seg(1, 5))
    assert result.returncode == 7


def test_the_cleanup_command_removes_the_spool(odd: Path) -> None:
    (odd / "wal-spool" / seg(1, 3)).write_bytes(b"x")
    command = expand(spool_cleanup_command(odd / "wal-spool"), "", "")
    assert subprocess.run(["/bin/sh", "-c", command], timeout=30).returncode == 0
    assert sorted(p.name for p in odd.iterdir()) == ["data", "py thon"]


# -- the spool thread ------------------------------------------------------------------------


@pytest.fixture
def archive(tmp_path: Path) -> LocalRepository:
    repo = LocalRepository(tmp_path / "repo")
    for n in range(3, 9):
        path = tmp_path / seg(1, n)
        path.write_bytes(bytes([n]) * 4096)
        push_wal(repo, path, seg(1, n), compression="lz4")
    return repo


def spool_for(repo: LocalRepository, tmp_path: Path, **kwargs: object) -> WalSpool:
    data_dir = tmp_path / "home" / "data"
    data_dir.mkdir(parents=True)
    names = [o.key.removeprefix("wal/") for o in repo.list("wal/")]
    return WalSpool(repo, tmp_path / "home" / "wal-spool", names, names, data_dir=data_dir,
                    poll=0.01, **kwargs)  # type: ignore[arg-type]


def spooled(spool: WalSpool) -> list[str]:
    return sorted(p.name for p in spool.directory.iterdir() if not p.name.startswith("."))


def wait_for(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def spool(archive: LocalRepository, tmp_path: Path) -> Iterator[WalSpool]:
    """A started spool (ahead=2) that has spooled its first two segments; stopped afterwards."""
    spool = spool_for(archive, tmp_path, ahead=2).start()
    try:
        wait_for(lambda: len(spooled(spool)) == 2)
        yield spool
    finally:
        spool.stop()


def test_the_spool_stays_a_bounded_number_ahead_with_verified_plain_segments(
    spool: WalSpool,
) -> None:
    time.sleep(0.1)
    assert spooled(spool) == [seg(1, 3), seg(1, 4)]  # no further than `ahead`
    assert (spool.directory / seg(1, 3)).read_bytes() == bytes([3]) * 4096  # decompressed
    (spool.directory / seg(1, 3)).unlink()  # PostgreSQL took it
    wait_for(lambda: seg(1, 5) in spooled(spool))

    def take_all() -> bool:
        names = spooled(spool)
        for name in names:
            if name != seg(1, 8):
                (spool.directory / name).unlink()
        return seg(1, 8) in names

    wait_for(take_all)
    # The last segment is kept (copied out): PostgreSQL reads it again as recovery ends.
    assert [p.name for p in spool.directory.glob(".keep-*")] == [".keep-" + seg(1, 8)]
    assert (spool.directory / SPOOL_LISTING).read_text().split() == [
        seg(1, n) for n in range(3, 9)]
    spool.stop()
    assert not spool.directory.exists()


def test_the_spool_skips_what_postgresql_fetched_itself(spool: WalSpool) -> None:
    (spool.directory / SPOOL_FALLBACK).write_text(seg(1, 5) + "\n")  # PostgreSQL got ahead
    (spool.directory / seg(1, 3)).unlink()
    wait_for(lambda: spooled(spool) == [seg(1, 6), seg(1, 7)])


def test_a_corrupt_segment_stops_the_spool_before_it_and_is_left_to_get(
    archive: LocalRepository, tmp_path: Path,
) -> None:
    stored = archive.root / "wal" / seg(1, 5)
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0x40
    stored.write_bytes(bytes(damaged))
    spool = spool_for(archive, tmp_path).start()
    spool.join(10)
    assert spooled(spool) == [seg(1, 3), seg(1, 4)]  # nothing unverified is ever handed over
    assert spool.stopped_by is not None and "checksum mismatch" in spool.stopped_by.lower()
    assert [p.name for p in spool.directory.iterdir() if p.name.startswith(".rk-tmp")] == []
    spool.stop()


def test_the_spool_ends_when_it_is_removed_or_the_restore_is(
    archive: LocalRepository, tmp_path: Path,
) -> None:
    spool = spool_for(archive, tmp_path, ahead=1).start()
    wait_for(lambda: len(spooled(spool)) == 1)
    command = expand(spool_cleanup_command(spool.directory), "", "")
    subprocess.run(["/bin/sh", "-c", command], check=True, timeout=30)  # recovery_end_command
    spool.join(10)
    assert spool.stopped_by == "spool removed"
    assert not spool.directory.exists()

    import shutil

    again = spool_for(archive, tmp_path / "again", ahead=1).start()
    wait_for(lambda: len(spooled(again)) == 1)
    (again.data_dir / "postmaster.pid").write_text("1")
    time.sleep(0.05)
    (again.data_dir / "postmaster.pid").unlink()  # the server stopped: the restore failed
    shutil.rmtree(again.data_dir)
    again.join(10)
    assert again.stopped_by in ("server stopped", "restore removed")
    # What the restore's own removal could leave behind (an emptied home) goes too.
    assert not again.directory.parent.exists()


def test_the_command_composes_with_a_wrapper_after_it(odd: Path) -> None:
    """No `exit` inside: a wrapper that times the command still sees its status."""
    (odd / "wal-spool" / seg(1, 3)).write_bytes(b"segment 3")
    command = restore_command(f"file://{odd}/repo", python=str(odd / "py thon"),
                              spool=odd / "wal-spool")
    for name, status in ((seg(1, 3), 0), (seg(1, 5), 1), (seg(1, 4), 7)):
        shell = expand(command, name, "pg_wal/RECOVERYXLOG") + "; echo status=$?"
        result = subprocess.run(["/bin/sh", "-c", shell], capture_output=True, text=True,
                                timeout=30, cwd=odd / "data")
        assert result.stdout.strip() == f"status={status}", result.stderr

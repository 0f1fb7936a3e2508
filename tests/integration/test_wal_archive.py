"""restorekit.wal as PostgreSQL runs it: a subprocess per WAL file, judged by its exit status."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from restorekit.errors import ConfigError
from restorekit.pg.cluster import LocalCluster
from restorekit.pg.tools import default_os_user
from restorekit.repository import (
    RECORD_SUFFIX,
    LocalRepository,
    Repository,
    S3Repository,
    open_repository,
)
from restorekit.wal import (
    EXIT_ABORT_RECOVERY,
    archive_command,
    last_archived,
    list_wal,
    push_wal,
    restore_command,
)

SEGMENT = "000000010000000000000007"


@pytest.fixture(params=["local", "s3"])
def repo_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_repo_url"))


@pytest.fixture
def repo(repo_url: str) -> Repository:
    return open_repository(repo_url, os_user=default_os_user())


@pytest.fixture
def segment(tmp_path: Path) -> Path:
    path = tmp_path / "pg_wal" / SEGMENT
    path.parent.mkdir()
    path.write_bytes(os.urandom(256 * 1024))
    return path


def wal(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "restorekit.wal", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_push_then_get(repo_url: str, repo: Repository, segment: Path, tmp_path: Path) -> None:
    pushed = wal("push", "--repo", repo_url, segment, SEGMENT)
    assert pushed.returncode == 0, pushed.stderr
    assert repo.get_bytes(f"wal/{SEGMENT}") == segment.read_bytes()

    dest = tmp_path / "RECOVERYXLOG"
    got = wal("get", "--repo", repo_url, SEGMENT, dest)
    assert got.returncode == 0, got.stderr
    assert dest.read_bytes() == segment.read_bytes()


def test_repush_of_identical_content_succeeds(repo_url: str, repo: Repository,
                                              segment: Path) -> None:
    first = push_wal(repo, segment, SEGMENT)
    again = wal("push", "--repo", repo_url, segment, SEGMENT)
    assert again.returncode == 0, again.stderr
    assert repo.stat(f"wal/{SEGMENT}") == first  # not rewritten


def test_conflicting_repush_is_refused(repo_url: str, repo: Repository, segment: Path,
                                       tmp_path: Path) -> None:
    original = push_wal(repo, segment, SEGMENT)
    other = tmp_path / "other"
    other.write_bytes(os.urandom(256 * 1024))
    result = wal("push", "--repo", repo_url, other, SEGMENT)
    assert result.returncode not in (0, 126)
    assert 0 < result.returncode <= 125  # >125 would crash PostgreSQL's archiver
    assert "different content" in result.stderr and "refusing to overwrite" in result.stderr
    assert repo.stat(f"wal/{SEGMENT}") == original
    assert repo.get_bytes(f"wal/{SEGMENT}") == segment.read_bytes()


def test_get_of_missing_wal_exits_1(repo_url: str, tmp_path: Path) -> None:
    result = wal("get", "--repo", repo_url, "00000002.history", tmp_path / "RECOVERYHISTORY")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "not in the archive" in result.stderr
    assert not (tmp_path / "RECOVERYHISTORY").exists()


def test_get_of_corrupt_wal_exits_126(repo_url: str, repo: Repository, segment: Path,
                                      tmp_path: Path) -> None:
    info = push_wal(repo, segment, SEGMENT)
    data = bytearray(segment.read_bytes())
    data[1000] ^= 0x01
    if isinstance(repo, LocalRepository):
        (repo.root / "wal" / SEGMENT).write_bytes(bytes(data))
    else:
        assert isinstance(repo, S3Repository)
        repo.client.put_object(Bucket=repo.bucket, Key=repo._full(f"wal/{SEGMENT}"),
                               Body=bytes(data))
    dest = tmp_path / "RECOVERYXLOG"
    result = wal("get", "--repo", repo_url, SEGMENT, dest)
    assert result.returncode == EXIT_ABORT_RECOVERY == 126
    assert "checksum mismatch" in result.stderr and info.sha256 in result.stderr
    assert not dest.exists()


def test_get_with_unreadable_repository_or_bad_arguments_exits_126(tmp_path: Path) -> None:
    bad_url = wal("get", "--repo", "relative/repo", SEGMENT, tmp_path / "x")
    assert bad_url.returncode == 126 and "relative paths" in bad_url.stderr
    missing_arg = wal("get", "--repo", f"file://{tmp_path}", SEGMENT)
    assert missing_arg.returncode == 126


def test_push_of_a_missing_file_fails_retryably(local_repo_url: str, tmp_path: Path) -> None:
    result = wal("push", "--repo", local_repo_url, tmp_path / "gone", SEGMENT)
    assert result.returncode == 1 and "cannot read" in result.stderr


def test_push_rewrites_a_rotten_copy_of_the_same_segment(local_repo_url: str,
                                                         segment: Path) -> None:
    repo = open_repository(local_repo_url, os_user=default_os_user())
    assert isinstance(repo, LocalRepository)
    push_wal(repo, segment, SEGMENT)
    (repo.root / "wal" / SEGMENT).write_bytes(b"rot")
    push_wal(repo, segment, SEGMENT)
    assert repo.verify(f"wal/{SEGMENT}").sha256 == repo.stat(f"wal/{SEGMENT}").sha256


def test_wal_names_are_checked(local_repo_url: str, segment: Path) -> None:
    repo = open_repository(local_repo_url)
    with pytest.raises(ConfigError, match="not a WAL file name"):
        push_wal(repo, segment, str(segment))
    with pytest.raises(ConfigError):
        push_wal(repo, segment, "../000000010000000000000001")


def test_last_archived_ignores_history_backup_and_partial(local_repo_url: str) -> None:
    repo = open_repository(local_repo_url, os_user=default_os_user())
    assert last_archived(repo) is None
    names = ["000000010000000000000001", "000000010000000000000002",
             "000000010000000000000002.00000028.backup", "00000002.history",
             "000000010000000000000003.partial", "000000020000000000000003"]
    for name in names:
        repo.put_bytes(f"wal/{name}", name.encode())
    repo.put_bytes("wal/000000020000000000000004", b"x")
    repo.delete("wal/000000020000000000000004")
    newest = last_archived(repo)
    assert newest is not None and newest.key == "wal/000000020000000000000003"
    assert [i.key.removeprefix("wal/") for i in list_wal(repo)] == sorted(names)


# -- command strings -------------------------------------------------------------------------------


def _expand_like_postgres(command: str, path: str, name: str) -> str:
    """PostgreSQL's %p / %f / %% expansion (src/common/percentrepl.c)."""
    out = []
    i = 0
    while i < len(command):
        if command[i] == "%" and i + 1 < len(command):
            nxt = command[i + 1]
            out.append({"p": path, "f": name, "%": "%"}.get(nxt, "%" + nxt))
            i += 2
        else:
            out.append(command[i])
            i += 1
    return "".join(out)


def test_commands_survive_postgres_expansion_and_the_shell(tmp_path: Path) -> None:
    odd = tmp_path / "it's a 50% $(odd) dir"
    odd.mkdir()
    python = odd / "py thon"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    repo_dir = odd / "repo %p"
    segment = odd / SEGMENT
    segment.write_bytes(b"wal bytes")

    push = archive_command(str(repo_dir), python=str(python))
    assert push.endswith(" %p %f")
    # Like PostgreSQL: run from the data directory, %p relative to it and inserted unquoted.
    shell = _expand_like_postgres(push, SEGMENT, SEGMENT)
    result = subprocess.run(["/bin/sh", "-c", shell], capture_output=True, text=True, timeout=60,
                            cwd=odd)
    assert result.returncode == 0, result.stderr
    assert (repo_dir / "wal" / SEGMENT).read_bytes() == b"wal bytes"
    assert (repo_dir / "wal" / (SEGMENT + RECORD_SUFFIX)).exists()

    get = restore_command(f"file://{repo_dir}", python=str(python))
    dest = odd / "RECOVERYXLOG"
    shell = _expand_like_postgres(get, dest.name, SEGMENT)
    result = subprocess.run(["/bin/sh", "-c", shell], capture_output=True, text=True, timeout=60,
                            cwd=odd)
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == b"wal bytes"


def test_commands_reject_bad_urls_early() -> None:
    with pytest.raises(ConfigError):
        archive_command("s3://key:secret@bucket/x")
    with pytest.raises(ConfigError):
        restore_command("relative")


# -- real PostgreSQL -------------------------------------------------------------------------------


def test_postgresql_archives_into_the_repository(
    local_cluster_factory: Callable[..., LocalCluster], local_repo_url: str
) -> None:
    cluster = local_cluster_factory("archiving", settings={
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": archive_command(local_repo_url),
    })
    with cluster.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10000) g")
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None
        segment = str(row[0])
        deadline = time.monotonic() + 20
        while True:
            stats = conn.execute(
                "SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver"
            ).fetchone()
            assert stats is not None
            if stats[0] is not None and stats[0] >= segment:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"{segment} not archived within 20 s: pg_stat_archiver={stats}\n"
                            f"{cluster.log_tail()}")
            time.sleep(0.1)

    repo = open_repository(local_repo_url, os_user=default_os_user())
    info = repo.verify(f"wal/{segment}")
    assert info.size == 16 * 1024 * 1024
    newest = last_archived(repo)
    assert newest is not None and newest.key >= f"wal/{segment}"
    assert isinstance(repo, LocalRepository)
    if default_os_user() is not None:
        import pwd

        owner = pwd.getpwuid((repo.root / "wal" / segment).stat().st_uid).pw_name
        assert owner == default_os_user()  # written by the server's own OS user

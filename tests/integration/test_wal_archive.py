"""restorekit.wal as PostgreSQL runs it: a subprocess per WAL file, judged by its exit status."""

from __future__ import annotations

import hashlib
import os
import shlex
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.pg import segment_bytes

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
    push_wal,
    restore_command,
    wal_names,
)

SEGMENT = "000000010000000000000007"


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
    assert wal_names(repo) == sorted(names)


# -- compressed archive ----------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["lz4", "zstd:3", "gzip"])
def test_compressed_push_then_get_gives_the_plain_segment(
        repo_url: str, repo: Repository, segment: Path, tmp_path: Path, compression: str) -> None:
    pushed = wal("push", "--repo", repo_url, "--compress", compression, segment, SEGMENT)
    assert pushed.returncode == 0, pushed.stderr
    info = repo.stat(f"wal/{SEGMENT}")
    assert info.encoding == compression.split(":")[0]
    assert (info.size, info.sha256) == (segment.stat().st_size, hashlib.sha256(
        segment.read_bytes()).hexdigest())
    dest = tmp_path / "RECOVERYXLOG"
    got = wal("get", "--repo", repo_url, SEGMENT, dest)
    assert got.returncode == 0, got.stderr
    assert dest.read_bytes() == segment.read_bytes()
    # A re-push (after a crash) compares the original bytes, compressed or not.
    assert wal("push", "--repo", repo_url, "--compress", compression, segment,
               SEGMENT).returncode == 0
    assert wal("push", "--repo", repo_url, segment, SEGMENT).returncode == 0
    segment.write_bytes(os.urandom(1000))
    refused = wal("push", "--repo", repo_url, "--compress", compression, segment, SEGMENT)
    assert refused.returncode == 1 and "different content" in refused.stderr


def test_only_segments_are_compressed(local_repo_url: str, tmp_path: Path) -> None:
    repo = open_repository(local_repo_url, os_user=default_os_user())
    for name in ("00000002.history", "000000010000000000000002.00000028.backup",
                 "000000010000000000000003.partial", "000000010000000000000004"):
        path = tmp_path / name
        path.write_bytes(b"1\t0/3000000\tno recovery target specified\n" * 50)
        push_wal(repo, path, name, compression="lz4")
        compressed = name.endswith((".partial", "4"))
        assert (repo.stat(f"wal/{name}").encoding == "lz4") is compressed, name
        assert repo.get_bytes(f"wal/{name}") == path.read_bytes()


def test_compressed_segment_with_a_flipped_byte_aborts_recovery(
        local_repo_url: str, segment: Path, tmp_path: Path) -> None:
    repo = open_repository(local_repo_url, os_user=default_os_user())
    assert isinstance(repo, LocalRepository)
    push_wal(repo, segment, SEGMENT, compression="lz4")
    stored = repo.root / "wal" / SEGMENT
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    dest = tmp_path / "RECOVERYXLOG"
    got = wal("get", "--repo", local_repo_url, SEGMENT, dest)
    assert got.returncode == EXIT_ABORT_RECOVERY and "checksum mismatch" in got.stderr
    assert not dest.exists()


def test_archive_command_carries_the_compression() -> None:
    assert "--compress zstd:3 %p %f" in archive_command("/srv/repo", compression="zstd:3")
    assert "--compress lz4 %p %f" in archive_command("/srv/repo", compression="server-lz4")
    assert "--compress" not in archive_command("/srv/repo", compression="none")
    assert "--compress" not in archive_command("/srv/repo")
    with pytest.raises(ConfigError, match="brotli"):
        archive_command("/srv/repo", compression="brotli")


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
    assert info.size == segment_bytes(cluster.dsn())
    newest = last_archived(repo)
    assert newest is not None and newest.key >= f"wal/{segment}"
    assert isinstance(repo, LocalRepository)
    if default_os_user() is not None:
        import pwd

        owner = pwd.getpwuid((repo.root / "wal" / segment).stat().st_uid).pw_name
        assert owner == default_os_user()  # written by the server's own OS user


def test_native_engine_mixes_compressed_and_older_uncompressed_backups_and_wal(
    local_cluster_factory: Callable[..., LocalCluster], local_repo_url: str, tmp_path: Path,
    pg_base_dir: Path,
) -> None:
    """A repository written before compression (plain base.tar, plain segments) keeps
    restoring after the target turns compression on: the old backup replays across plain and
    lz4 segments, the new one is base.tar.lz4; fetch_wal hands out plain verified segments."""
    from datetime import datetime

    import psycopg

    from restorekit.engines.base import SourceSpec
    from restorekit.engines.native import NativeEngine
    from restorekit.models import RestorePoint
    from restorekit.pg.cluster import switch_wal_and_wait_archived
    from restorekit.pg.tools import make_dir
    from restorekit.providers.selfhosted import SelfHostedProvider

    os_user = default_os_user()
    root = make_dir(pg_base_dir / "native-mixed", os_user, mode=0o755)
    repo = open_repository(local_repo_url, os_user=os_user)
    source = local_cluster_factory("mixed", start=False)
    spec = SourceSpec(dsn=source.dsn(), os_user=os_user, bin_dir=source.bin_dir)

    # Every Python start PostgreSQL's archive/restore commands make is recorded.
    calls = root / "python-calls"
    recording = root / "python"
    recording.write_text(f'#!/bin/sh\necho "$@" >> {shlex.quote(str(calls))}\n'
                         f'exec {shlex.quote(sys.executable)} "$@"\n')
    recording.chmod(0o755)
    calls.touch()
    calls.chmod(0o666)

    def provider(compression: str) -> SelfHostedProvider:
        engine = NativeEngine(spec, repo, repo_url=local_repo_url, work_dir=root / "work",
                              compression=compression, python=str(recording))
        return SelfHostedProvider(engine=engine, source=spec, restore_root=root / "restores",
                                  target_name="mixed")

    plain, lz4 = provider("none"), provider("lz4")
    source.write_settings(plain.engine.archive_settings())
    source.start()
    dsn = source.dsn()

    def insert(first: int, last: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO items SELECT g, repeat('x', 200) FROM "
                         "generate_series(%s::int, %s::int) g", (first, last))

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
    insert(1, 5000)
    old = plain.create_backup("before compression")
    insert(5001, 10000)
    plain_segment = switch_wal_and_wait_archived(dsn)

    source.write_settings(lz4.engine.archive_settings())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)
    insert(10001, 15000)
    with psycopg.connect(dsn, autocommit=True) as conn:
        between: datetime = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
    time.sleep(0.05)
    lz4_segment = switch_wal_and_wait_archived(dsn)
    new = lz4.create_backup("compressed")
    insert(15001, 20000)
    switch_wal_and_wait_archived(dsn)

    assert set(old.extra["objects"]) == {"base.tar", "backup_manifest"}
    assert set(new.extra["objects"]) == {"base.tar.lz4", "backup_manifest"}
    assert new.size_bytes < old.size_bytes
    assert repo.stat(f"wal/{plain_segment}").encoding is None
    assert repo.stat(f"wal/{lz4_segment}").encoding == "lz4"

    # The drill's RTO forecast counts WAL by its own size, not the compressed one.
    archived = lz4.engine.archived_wal(between)
    assert archived is not None and archived.segments >= 2 and archived.first >= between
    assert archived.bytes_after_first == (archived.segments - 1) * segment_bytes(dsn)
    fetched = tmp_path / "fetched"
    lz4.engine.fetch_wal(lz4_segment, fetched)
    assert fetched.stat().st_size == segment_bytes(dsn)
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == repo.stat(
        f"wal/{lz4_segment}").sha256

    def ids(restored_dsn: str) -> tuple[int, int]:
        with psycopg.connect(restored_dsn) as conn:
            return conn.execute("SELECT count(*), max(id) FROM items").fetchone()  # type: ignore[return-value]

    def gets() -> list[str]:
        return [line for line in calls.read_text().splitlines() if "restorekit.wal get" in line]

    latest = lz4.restore(RestorePoint.latest(), name="mixed-latest")
    try:
        assert latest.backup_id == new.backup_id
        assert ids(latest.dsn.get_secret_value()) == (20000, 20000)
        # The WAL came from the spool (fetched and verified ahead), the files the archive
        # lacks were answered by the shell: no Python start per file; the spool is gone.
        assert gets() == []
        assert not (Path(latest.handle) / "wal-spool").exists()
    finally:
        lz4.discard(latest)
    older = lz4.restore(RestorePoint.at(between), name="mixed-between")
    try:
        assert older.backup_id == old.backup_id  # the plain backup, replaying lz4 segments
        assert ids(older.dsn.get_secret_value()) == (15000, 15000)
        assert gets() == []
        assert not (Path(older.handle) / "wal-spool").exists()
    finally:
        lz4.discard(older)

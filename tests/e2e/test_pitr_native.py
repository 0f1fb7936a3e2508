"""Point-in-time recovery with the native engine, against real clusters and a real archive."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from e2e._helpers import (
    AFTER,
    check_restore_to_t,
    restored_latest,
    rows,
    write_history,
)

from restorekit.engines.base import SourceSpec
from restorekit.engines.native import NativeEngine
from restorekit.errors import ChecksumMismatch, RestorePointError
from restorekit.models import RestorePoint
from restorekit.pg.cluster import LocalCluster
from restorekit.pg.tools import default_os_user, make_dir
from restorekit.providers.selfhosted import SelfHostedProvider
from restorekit.repository import open_repository

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(pg_base_dir: Path):
    """A source cluster archiving into a repository, with a known history:

    A = rows 1..100 (before T), T, restore point 'before-cleanup', delete rows 1..10,
    B = rows 1000..1049 (after T).
    """
    os_user = default_os_user()
    root = make_dir(pg_base_dir / "native", os_user, mode=0o755)
    repo_url = f"file://{make_dir(root / 'repo', os_user, mode=0o755)}"
    repo = open_repository(repo_url, os_user=os_user)
    source_cluster = LocalCluster.create(root / "source")
    spec = SourceSpec(dsn=source_cluster.dsn(), os_user=os_user, bin_dir=source_cluster.bin_dir)
    engine = NativeEngine(spec, repo, repo_url=repo_url, work_dir=root / "work")
    source_cluster.write_settings(engine.archive_settings())
    source_cluster.start()
    provider = SelfHostedProvider(engine=engine, source=spec, restore_root=root / "restores",
                                  target_name="test")
    with psycopg.connect(source_cluster.dsn(), autocommit=True) as conn:
        backup, t_point, lsn = write_history(conn, provider, "test base")
    yield {
        "provider": provider, "source": source_cluster, "repo": repo, "root": root,
        "T": t_point, "lsn": lsn, "backup": backup,
    }
    for restored in provider.list_scratch():
        provider.discard(restored)
    source_cluster.destroy()


@pytest.mark.parametrize("kind", ["time", "lsn", "name"])
def test_pitr_restores_the_state_at_the_point(world, kind: str) -> None:
    check_restore_to_t(world, kind)


def test_latest_restores_everything_and_never_archives_into_the_source_repo(world) -> None:
    repo = world["repo"]
    with restored_latest(world) as restored:
        wal_before = {o.key for o in repo.list("wal/")}
        with psycopg.connect(restored.dsn.get_secret_value(), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO items SELECT g, 'restored' FROM generate_series(5000, 9000) g"
            )
            conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
        time.sleep(1.0)  # an archiver, had it been on, would have pushed by now
        wal_after = {o.key for o in repo.list("wal/")}
        # The source has archive_timeout off and took no writes, so any new object would have
        # come from the restored cluster (and the source's rows are checked unchanged).
        assert wal_after == wal_before


def test_a_time_after_the_last_commit_restores_the_end_of_the_archive(world) -> None:
    """No commit follows the last archived one, so PostgreSQL could never stop "at" such a time;
    the state at that time is the end of the archive, and that is what is restored."""
    provider: SelfHostedProvider = world["provider"]
    window = provider.restore_window()
    assert window.latest_commit is not None
    restored = provider.restore(RestorePoint.at(window.latest), name="after-last-commit")
    try:
        assert rows(restored.dsn.get_secret_value()) == AFTER
    finally:
        provider.discard(restored)


def test_points_outside_the_window_fail_before_anything_is_created(world) -> None:
    provider: SelfHostedProvider = world["provider"]
    window = provider.restore_window()
    assert window.earliest <= world["T"] <= window.latest
    restores = Path(provider.restore_root)
    existing = set(restores.iterdir()) if restores.exists() else set()
    cases = [
        (RestorePoint.at(datetime.now(UTC) + timedelta(hours=1)), "in the future"),
        (RestorePoint.at(window.earliest - timedelta(days=1)), "outside the restore window"),
    ]
    for point, message in cases:
        with pytest.raises(RestorePointError, match=message) as info:
            provider.restore(point, name="outside")
        assert str(window) in str(info.value)
    with pytest.raises(RestorePointError, match="no timezone"):
        RestorePoint.parse("2026-01-01T10:00:00")
    after = set(restores.iterdir()) if restores.exists() else set()
    assert after == existing


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_corrupted_backup_object_is_detected_and_nothing_is_left(world, damage: str) -> None:
    """tar reads a local base backup itself while restorekit hashes it alongside: a flipped
    byte tar extracts without complaint, a truncated archive makes tar fail first; either way
    the checksum (the cause) is what the restore reports, and nothing is left."""
    provider: SelfHostedProvider = world["provider"]
    backup = world["backup"]
    repo_root = Path(world["repo"].url.removeprefix("file://"))
    # base.tar, or base.tar.lz4 etc. as the target's [backups] compression wrote it
    stored = next(p for p in (repo_root / "backups" / backup.backup_id).glob("base.tar*")
                  if not p.name.endswith(".sha256.json"))
    original = stored.read_bytes()
    if damage == "truncated":
        stored.write_bytes(original[: len(original) // 2])
    else:
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0x01
        stored.write_bytes(bytes(flipped))
    try:
        with pytest.raises(ChecksumMismatch, match="base.tar") as failed:
            provider.restore(RestorePoint.parse(f"backup:{backup.backup_id}"), name="corrupt")
        assert "nothing was started" in str(failed.value)
        assert not (provider.restore_root / "corrupt").exists()
    finally:
        stored.write_bytes(original)


def test_missing_wal_fails_naming_the_last_reachable_point(world, tmp_path: Path) -> None:
    provider: SelfHostedProvider = world["provider"]
    repo = world["repo"]
    window = provider.restore_window()
    segments = sorted(o.key for o in repo.list("wal/") if len(o.key) == len("wal/") + 24)
    last = segments[-1]
    repo_root = Path(repo.url.removeprefix("file://"))
    hidden = tmp_path / "hidden"
    (repo_root / last).rename(hidden)
    try:
        # Just before the last archived commit: reaching it needs the segment that is gone.
        target = window.latest_commit - timedelta(microseconds=1)
        with pytest.raises(RestorePointError, match="last reachable point is LSN"):
            provider.restore(RestorePoint.at(target), name="unreachable", window=window)
        assert not (provider.restore_root / "unreachable").exists()
    finally:
        hidden.rename(repo_root / last)

"""Retention on a real repository: a native target with several backups and archived WAL,
retention with a clock 10 days ahead, then a PITR restore from the oldest kept backup."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from fixtures.retention import keep_one_backup_config
from fixtures.world import installation

from restorekit.config import BackupPolicy
from restorekit.demo import Installation
from restorekit.models import RestorePoint, parse_lsn
from restorekit.retention import expire_backups, segment_number

pytestmark = pytest.mark.slow


def mark(inst: Installation, n: int) -> datetime:
    with psycopg.connect(inst.app_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS retention_marks (n int PRIMARY KEY)")
        conn.execute("INSERT INTO retention_marks VALUES (%s)", (n,))
        time.sleep(0.05)
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]


@pytest.fixture
def inst(pg_base_dir: Path) -> Iterator[Installation]:
    """An installation of the test's own (0.8 s): each test makes the backups and marks it
    needs, so none depends on what another one expired."""
    with installation(pg_base_dir, "retention", scale=0.01) as built:
        yield built


def test_retention_expires_old_backups_and_wal_and_the_oldest_kept_backup_still_restores(
    inst: Installation, monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = inst.runtime().provider
    mark(inst, 1)
    inst.wait_archived()
    provider.create_backup("b1")
    mark(inst, 2)
    between = mark(inst, 3)  # the PITR target: after 2, before 4
    time.sleep(0.05)
    mark(inst, 4)
    inst.wait_archived()
    provider.create_backup("b2")
    mark(inst, 5)
    inst.wait_archived()
    provider.create_backup("b3")
    inst.wait_archived()
    repo = provider.engine.repo  # type: ignore[attr-defined]
    backups = provider.list_backups()
    assert [b.label for b in backups] == ["initial", "b1", "b2", "b3"]
    wal_before = {o.key.removeprefix("wal/") for o in repo.list("wal/")}
    seg_size = max(o.size for o in repo.list("wal/") if segment_number(o.key[4:]) and
                   not o.key.endswith((".backup", ".partial")))
    policy = BackupPolicy(keep_count=3, keep_days=1, pitr_days=0)
    later = datetime.now(UTC) + timedelta(days=10)

    said = expire_backups(provider, policy, later, dry_run=True)
    assert said.startswith("would keep 3 backup(s), expire 1 backup(s)"), said
    assert len(provider.list_backups()) == 4  # a dry run removes nothing

    said = expire_backups(provider, policy, later)
    kept = provider.list_backups()
    assert [b.label for b in kept] == ["b1", "b2", "b3"], said
    assert not repo.list(f"backups/{backups[0].backup_id}/")
    first_needed = parse_lsn(kept[0].start_lsn) // seg_size
    wal_after = {o.key.removeprefix("wal/") for o in repo.list("wal/")}
    gone = wal_before - wal_after
    assert gone, "WAL before the oldest kept backup should have expired"
    assert all(segment_number(n, seg_size)[1] < first_needed for n in gone)  # type: ignore[index]
    # Every segment from the oldest kept backup's start on is still there.
    assert all(n in wal_after for n in wal_before
               if (p := segment_number(n, seg_size)) is not None and p[1] >= first_needed)
    # Nothing more to do the second time, and the archive's segments are listed by name: one
    # WAL record is read (the segment size), not one per segment (a GET each on S3).
    reads: list[str] = []
    read_record = repo._read_record
    monkeypatch.setattr(repo, "_read_record", lambda key: reads.append(key) or read_record(key))
    assert expire_backups(provider, policy, later).startswith("keep 3 backup(s), expire 0")
    assert len([k for k in reads if k.startswith("wal/")]) == 1 < len(wal_after), reads
    monkeypatch.undo()

    window = provider.restore_window()
    assert window.earliest == kept[0].stop_time
    restored = provider.restore(RestorePoint.at(between), name="after-retention")
    try:
        assert restored.backup_id == kept[0].backup_id  # the oldest kept backup, then WAL replay
        with psycopg.connect(restored.dsn.get_secret_value()) as conn:
            got = {r[0] for r in conn.execute("SELECT n FROM retention_marks")}
        assert got == {1, 2, 3}
    finally:
        provider.discard(restored)


def test_a_quiet_database_restores_to_a_time_after_retention_took_the_last_commits_wal(
    inst: Installation,
) -> None:
    """Only a backup taken with no writes after it is kept, so the archive may hold no commit
    at all: a time in the window is the end of the archive, not "recovery ended before the
    target" waiting for a commit that was expired."""
    provider = inst.runtime().provider
    for n in (1, 2):
        mark(inst, n)
    newest = provider.create_backup("quiet")
    inst.wait_archived()
    expire_backups(provider, BackupPolicy(keep_count=1, keep_days=1, pitr_days=0),
                   datetime.now(UTC) + timedelta(days=10))
    assert [b.backup_id for b in provider.list_backups()] == [newest.backup_id]
    window = provider.restore_window()
    assert window.latest_commit is not None and window.latest_commit <= window.latest
    restored = provider.restore(RestorePoint.at(window.latest), name="quiet-after-retention")
    try:
        with psycopg.connect(restored.dsn.get_secret_value()) as conn:
            got = {r[0] for r in conn.execute("SELECT n FROM retention_marks")}
        assert got == {1, 2}
    finally:
        provider.discard(restored)


def test_restorekit_prune_says_what_it_would_remove_and_then_removes_it(
    inst: Installation,
) -> None:
    import json
    import subprocess

    from fixtures.cli import CLI, cli_env

    config = keep_one_backup_config(inst, "prune.toml")
    provider = inst.runtime().provider
    newest = provider.create_backup("prune")
    before = [b.backup_id for b in provider.list_backups()]
    assert len(before) >= 2

    def prune(*extra: str) -> dict:
        done = subprocess.run([*CLI, "prune", "-t", "production", "-c", str(config), "--json",
                               *extra], capture_output=True, text=True, env=cli_env(),
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    planned = prune("--dry-run")
    assert planned["result"].startswith(f"would keep 1 backup(s), expire {len(before) - 1}")
    assert [b.backup_id for b in provider.list_backups()] == before
    assert prune()["result"].startswith(f"keep 1 backup(s), expire {len(before) - 1}")
    assert [b.backup_id for b in provider.list_backups()] == [newest.backup_id]

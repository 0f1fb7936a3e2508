"""Freshness judged with a fake clock: backup age, archived WAL age, archiver failures, idle."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

from restorekit.config import BackupPolicy
from restorekit.engines.base import SourceSpec
from restorekit.engines.pgbackrest import PgBackRestEngine, retention_options
from restorekit.freshness import ArchiverStatus, judge_freshness

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
LIMITS = (timedelta(hours=26), timedelta(minutes=15))
HEALTHY = ArchiverStatus(failed_count=0, last_failed_wal=None, last_failed_time=None,
                         archived_count=40, last_archived_wal="000000010000000000000028",
                         last_archived_time=NOW - timedelta(minutes=2), archive_mode="on",
                         archive_timeout="60", unarchived_bytes=4096)


def judge(**kw: object):
    args = {"now": NOW, "limits": LIMITS, "newest_backup": NOW - timedelta(hours=10),
            "newest_wal": NOW - timedelta(minutes=2), "archiver": HEALTHY, **kw}
    return judge_freshness("production", **args)  # type: ignore[arg-type]


def test_fresh_backups_and_wal_are_ok() -> None:
    report = judge()
    assert report.ok and report.status == "ok"
    assert "newest base backup: 10.0 h old" in report.to_markdown()


def test_old_backup_is_at_risk() -> None:
    report = judge(newest_backup=NOW - timedelta(hours=30))
    assert not report.ok
    assert "newest base backup is 30.0 h old" in report.reasons[0]
    assert not judge(newest_backup=None).ok


def test_old_wal_with_pending_writes_is_at_risk() -> None:
    archiver = dataclasses.replace(HEALTHY, archive_timeout="0",
                                   last_archived_time=NOW - timedelta(minutes=40))
    report = judge(newest_wal=NOW - timedelta(minutes=40), archiver=archiver)
    assert [r for r in report.reasons if "40 min old" in r and "archive_timeout" in r]


def test_old_wal_on_an_idle_database_is_only_a_note() -> None:
    archiver = dataclasses.replace(HEALTHY, unarchived_bytes=0)
    report = judge(newest_wal=NOW - timedelta(hours=5), archiver=archiver)
    assert report.ok
    assert "idle" in report.notes[0]


def test_archiver_failure_after_the_last_success_is_at_risk_even_when_young() -> None:
    archiver = dataclasses.replace(HEALTHY, failed_count=3,
                                   last_failed_wal="000000010000000000000029",
                                   last_failed_time=NOW - timedelta(seconds=5))
    report = judge(archiver=archiver)
    assert not report.ok and "archiver is failing" in report.reasons[0]
    # An old failure, archived fine since: ok.
    recovered = dataclasses.replace(archiver, last_failed_time=NOW - timedelta(hours=3))
    assert judge(archiver=recovered).ok


def test_archive_mode_off_is_at_risk() -> None:
    report = judge(archiver=dataclasses.replace(HEALTHY, archive_mode="off"))
    assert "archive_mode = off" in report.reasons[0]


def test_unreachable_source_judges_the_repository_alone() -> None:
    assert judge(archiver=None).ok
    assert not judge(archiver=None, newest_wal=NOW - timedelta(hours=1)).ok


def test_pgbackrest_retention_maps_the_policy(tmp_path: Path) -> None:
    assert retention_options(BackupPolicy()) == (30, "time")
    assert retention_options(BackupPolicy(keep_days=3, pitr_days=7.5)) == (8, "time")
    full, kind = retention_options(BackupPolicy())
    spec = SourceSpec(dsn="host=/tmp port=5432 user=postgres", data_dir=tmp_path / "data",
                      socket_dir=tmp_path, os_user=None)
    engine = PgBackRestEngine(spec, stanza="main", repo_path=tmp_path / "repo",
                              work_dir=tmp_path / "work", repo_retention_full=full,
                              repo_retention_full_type=kind)
    conf = engine.config_file.read_text()
    assert "repo1-retention-full=30\n" in conf and "repo1-retention-full-type=time\n" in conf


def test_a_cloud_provider_is_judged_by_its_newest_restorable_point() -> None:
    report = judge(newest_backup=None, archiver=None, judge_backups=False)
    assert report.ok
    assert not judge(newest_backup=None, archiver=None, judge_backups=False,
                     newest_wal=NOW - timedelta(hours=2)).ok

"""Retention of the native engine: a pure function of backups, WAL listing, policy and a fake
clock. It removes exactly what the policy says and never the WAL a kept backup needs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from restorekit.config import BackupPolicy
from restorekit.models import BackupInfo, format_lsn
from restorekit.retention import plan_retention, segment_number

NOW = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
SEG = 16 * 1024 * 1024


def seg_name(timeline: int, number: int) -> str:
    per_log = 0x100000000 // SEG
    return f"{timeline:08X}{number // per_log:08X}{number % per_log:08X}"


def backup(days_ago: float, segment: int, timeline: int = 1) -> BackupInfo:
    stop = NOW - timedelta(days=days_ago)
    return BackupInfo(backup_id=stop.strftime("%Y%m%dT%H%M%SZ"), engine="native",
                      start_time=stop - timedelta(minutes=1), stop_time=stop,
                      start_lsn=format_lsn(segment * SEG + 0x28),
                      stop_lsn=format_lsn(segment * SEG + 0x100),
                      timeline=timeline)


def daily(days: int) -> tuple[list[BackupInfo], list[str]]:
    """One backup a day for ``days`` days (backup i at segment 10*i), WAL all along."""
    backups = [backup(days - 1 - i + 0.01, 10 * i + 1) for i in range(days)]
    wal = [seg_name(1, n) for n in range(1, 10 * days + 5)]
    return backups, wal


def test_forty_daily_backups_keep_thirty_days_and_the_wal_of_the_oldest_kept() -> None:
    backups, wal = daily(40)
    plan = plan_retention(backups, wal, BackupPolicy(), NOW)
    ages = {b.backup_id: (NOW - b.stop_time).days for b in backups}
    assert sorted(ages[k] for k in plan.kept) == list(range(30))
    assert [ages[b.backup_id] for b in plan.expired_backups] == list(range(39, 29, -1))
    oldest_kept = min((b for b in backups if b.backup_id in plan.kept), key=lambda b: b.stop_time)
    first_needed = int(oldest_kept.start_lsn.split("/")[1], 16) // SEG
    assert plan.expired_wal == tuple(seg_name(1, n) for n in range(1, first_needed))
    assert seg_name(1, first_needed) not in plan.expired_wal
    assert plan.kept_wal == len(wal) - len(plan.expired_wal)


def test_keep_count_keeps_old_backups_when_the_schedule_stopped() -> None:
    backups = [backup(100 + i, 10 * (20 - i)) for i in range(20)]  # all older than 30 days
    plan = plan_retention(backups, [seg_name(1, n) for n in range(1, 220)],
                          BackupPolicy(keep_count=3), NOW)
    assert len(plan.kept) == 3
    assert {b.backup_id for b in sorted(backups, key=lambda b: b.stop_time)[-3:]} == set(plan.kept)
    assert min(segment_number(n)[1] for n in plan.expired_wal) == 1
    # The third newest starts at segment 180.
    assert max(segment_number(n)[1] for n in plan.expired_wal) == 10 * (20 - 2) - 1


def test_pitr_days_keeps_the_backup_the_window_starts_from() -> None:
    backups = [backup(d, 100 - d) for d in (1, 3, 9, 12, 20)]
    policy = BackupPolicy(keep_days=2, keep_count=1, pitr_days=7)
    plan = plan_retention(backups, [], policy, NOW)
    kept_ages = sorted(round((NOW - b.stop_time).total_seconds() / 86400)
                       for b in backups if b.backup_id in plan.kept)
    # 1: newest and < 2 days; 3: inside the 7-day window; 9: the window's starting backup.
    assert kept_ages == [1, 3, 9]
    assert "PITR window" in plan.kept[backups[2].backup_id]


def test_fake_clock_moves_retention_along() -> None:
    backups, wal = daily(35)
    policy = BackupPolicy(keep_days=30, keep_count=7)
    assert len(plan_retention(backups, wal, policy, NOW).kept) == 30
    later = plan_retention(backups, wal, policy, NOW + timedelta(days=25))
    assert len(later.kept) == 7  # only keep_count remains after 25 more days without backups
    assert len(plan_retention(backups, wal, policy, NOW - timedelta(days=10)).expired_backups) == 0


def test_history_files_partial_and_later_timelines_stay() -> None:
    # A backup on timeline 1 at segment 50 (kept), the cluster promoted onto timeline 2 at 60,
    # a newer backup on timeline 2 at segment 70; one old backup on timeline 1 expires.
    old = backup(60, 5)
    tl1 = backup(10, 50)
    tl2 = backup(2, 70, timeline=2)
    wal = ([seg_name(1, n) for n in range(1, 61)] + [seg_name(1, 60) + ".partial"]
           + [seg_name(2, n) for n in range(60, 80)] + ["00000002.history",
           seg_name(1, 50) + ".00000028.backup", seg_name(1, 5) + ".00000028.backup"])
    plan = plan_retention([old, tl1, tl2], wal, BackupPolicy(keep_count=1), NOW)
    assert set(plan.kept) == {tl1.backup_id, tl2.backup_id}
    assert [b.backup_id for b in plan.expired_backups] == [old.backup_id]
    assert "00000002.history" not in plan.expired_wal
    assert seg_name(1, 60) + ".partial" not in plan.expired_wal
    assert seg_name(1, 50) + ".00000028.backup" not in plan.expired_wal
    assert seg_name(1, 5) + ".00000028.backup" in plan.expired_wal
    assert all(segment_number(n)[0] == 1 and segment_number(n)[1] < 50 for n in plan.expired_wal)
    assert not any(n.startswith("00000002") for n in plan.expired_wal)


def test_newer_timeline_segments_stay_below_an_older_timeline_backup() -> None:
    # Only a timeline-2 backup is kept: timeline-1 segments after its start are another branch,
    # but nothing on timeline 2 or later from its start on may go.
    tl2 = backup(1, 70, timeline=2)
    wal = [seg_name(1, n) for n in range(60, 90)] + [seg_name(2, n) for n in range(60, 90)]
    plan = plan_retention([backup(90, 10), tl2], wal, BackupPolicy(keep_count=1, pitr_days=0), NOW)
    assert list(plan.kept) == [tl2.backup_id]
    assert not any(segment_number(n)[0] == 2 and segment_number(n)[1] >= 70
                   for n in plan.expired_wal)
    assert seg_name(2, 69) in plan.expired_wal


def test_no_backup_removes_nothing_and_an_unknown_name_stays() -> None:
    assert plan_retention([], [seg_name(1, 1)], BackupPolicy(), NOW).empty
    plan = plan_retention([backup(1, 50)], [seg_name(1, 1), "README"], BackupPolicy(), NOW)
    assert plan.expired_wal == (seg_name(1, 1),)


@pytest.mark.parametrize("bad", [{"keep_count": 0}, {"keep_days": 0}, {"cron": "daily"},
                                 {"timezone": "Mars/Olympus"}])
def test_policy_rejects_nonsense(bad: dict) -> None:
    with pytest.raises(ValueError):
        BackupPolicy(**bad)


def test_freshness_limits_default_from_schedule_and_rpo() -> None:
    rpo = timedelta(minutes=15)
    assert BackupPolicy().freshness_limits(rpo) == (timedelta(hours=26), rpo)
    assert BackupPolicy(cron="0 3 * * 0").freshness_limits(rpo)[0] == timedelta(days=7, hours=2)
    assert BackupPolicy(max_backup_age_hours=5, max_wal_age_minutes=3).freshness_limits(rpo) == (
        timedelta(hours=5), timedelta(minutes=3))

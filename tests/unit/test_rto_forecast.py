"""The drill's worst-case RTO forecast: pure arithmetic over measured rates (no timing here),
and what the native engine reads of a (local) WAL archive for it."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from restorekit import drill, forecast, wal
from restorekit.engines.base import SourceSpec
from restorekit.engines.native import NativeEngine
from restorekit.forecast import (
    ARCHIVE_LOOKBACK,
    MIN_REPLAY_BYTES,
    ArchivedWal,
    RtoForecast,
    archive_wal_rate,
    forecast_rto,
    replay_rate_from_history,
    schedule_interval,
)
from restorekit.repository import RECORD_SUFFIX, LocalRepository

GB = 1_000_000_000
HOUR = timedelta(hours=1)


def _forecast(**overrides: object) -> RtoForecast:
    args: dict[str, object] = dict(
        objective=timedelta(minutes=60), base_restore_seconds=600.0,
        restored_backup_bytes=10 * GB, newest_backup_bytes=10 * GB,
        replay_seconds=100.0, replayed_bytes=1 * GB, other_seconds=120.0,
        wal_bytes_per_hour=1 * GB, interval=timedelta(hours=24), newest_backup_age=None)
    args.update(overrides)
    return forecast_rto(**args)  # type: ignore[arg-type]


def test_worst_case_is_base_restore_plus_a_full_interval_of_wal_plus_the_rest() -> None:
    f = _forecast()
    # 24 h x 1 GB/h = 24 GB at 10 MB/s (1 GB in 100 s) = 2400 s.
    assert f.wal_bytes_to_replay == pytest.approx(24 * GB)
    assert f.replay_bytes_per_second == pytest.approx(10_000_000)
    assert f.wal_replay_seconds == pytest.approx(2400)
    assert f.worst_case_seconds == pytest.approx(600 + 2400 + 120)
    assert f.within_objective is True and f.fix == ""
    assert f.replay_rate_measured
    assert f.headline() == "RTO forecast: worst case 52 min, objective 60 min"


def test_beyond_the_objective_says_how_often_base_backups_must_run() -> None:
    f = _forecast(wal_bytes_per_hour=2 * GB)  # 48 GB to replay: 4800 s
    assert f.worst_case_seconds == pytest.approx(600 + 4800 + 120)
    assert f.within_objective is False
    assert "EXCEEDS" in f.headline() and "92 min" in f.headline()
    # room = 3600 - 720 = 2880 s x 10 MB/s = 28.8 GB = 14.4 h of WAL at 2 GB/h
    assert "every 14 h" in f.fix and '"0 */14 * * *"' in f.fix
    fixed = _forecast(wal_bytes_per_hour=2 * GB, interval=timedelta(hours=14))
    assert fixed.within_objective is True  # the advice holds


def test_when_the_base_restore_alone_is_too_slow_backups_cannot_fix_it() -> None:
    f = _forecast(base_restore_seconds=4000.0)
    assert f.within_objective is False
    assert "cannot bring this within the objective" in f.fix


def test_the_base_restore_scales_to_the_newest_backup() -> None:
    # The drill restored a 5 GB backup in 300 s; the newest is 10 GB: 600 s.
    f = _forecast(base_restore_seconds=300.0, restored_backup_bytes=5 * GB)
    assert f.base_restore_seconds == pytest.approx(600)
    assert f.base_bytes_per_second == pytest.approx(5 * GB / 300)


def test_too_little_replayed_wal_uses_an_earlier_drills_rate_or_stays_unknown() -> None:
    tiny = MIN_REPLAY_BYTES // 2
    unknown = _forecast(replayed_bytes=tiny, replay_seconds=2.0)
    assert unknown.worst_case_seconds is None and unknown.replay_bytes_per_second is None
    assert unknown.within_objective is None  # 600 + 120 s is below 60 min: not judged
    assert unknown.headline().startswith("RTO forecast: worst case at least 12 min")
    assert any("not measured" in line for line in unknown.lines())
    borrowed = _forecast(replayed_bytes=tiny, replay_seconds=2.0,
                         fallback_replay_rate=(20_000_000.0, "the drill of 2026-11-30"))
    assert borrowed.wal_replay_seconds == pytest.approx(24 * GB / 20_000_000)
    assert not borrowed.replay_rate_measured
    assert any("the drill of 2026-11-30" in line for line in borrowed.lines())
    slow_base = _forecast(replayed_bytes=tiny, base_restore_seconds=4000.0)
    assert slow_base.within_objective is False  # the lower bound alone exceeds it


def test_no_schedule_forecasts_a_failure_now() -> None:
    f = _forecast(interval=None, newest_backup_age=timedelta(hours=30))
    assert f.wal_bytes_to_replay == pytest.approx(30 * GB)
    assert any("no schedule: forecast assumes the newest backup's age grows" in line
               for line in f.lines())


def test_unknown_wal_rate_is_said() -> None:
    f = _forecast(wal_bytes_per_hour=None, wal_rate_note="WAL per hour not measurable yet: x")
    assert f.worst_case_seconds is None
    assert "WAL per hour not measurable yet: x" in f.lines()


def test_replay_rate_from_history_takes_the_newest_measured_one() -> None:
    measured = _forecast().model_dump()
    borrowed = _forecast(replayed_bytes=1, fallback_replay_rate=(5.0, "x")).model_dump()
    history = [{"started_at": "2026-11-01", "rto_forecast": measured},
               {"started_at": "2026-11-08", "rto_forecast": borrowed},
               {"started_at": "2026-11-15", "rto_forecast": None}]
    assert replay_rate_from_history(history) == (pytest.approx(10_000_000),
                                                 "the drill of 2026-11-01")
    assert replay_rate_from_history([]) is None


def test_archive_wal_rate() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    seg = 16 * 1024 * 1024
    # One segment every 10 minutes for 3 hours: 6 per hour.
    rate, note = archive_wal_rate(ArchivedWal(19, 18 * seg, now - 3 * HOUR, now))
    assert rate == pytest.approx(6 * seg)
    assert "19 segments over 3.0 h" in note
    burst = ArchivedWal(5, 4 * seg, now - timedelta(seconds=4), now)
    rate, note = archive_wal_rate(burst)
    assert rate is None and "spans 4.0 s" in note
    assert archive_wal_rate(ArchivedWal(1, 0, now, now)) == (
        None, "WAL per hour not measurable yet: 1 segment(s) archived in the last 168.0 h")
    assert archive_wal_rate(None)[1].endswith(": 0 segment(s) archived in the last 168.0 h")


NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
SINCE = NOW - ARCHIVE_LOOKBACK
SEGMENT = b"wal!" * 4  # stands for a segment: every one is the same size


def _native(tmp_path: Path, times: list[datetime]) -> NativeEngine:
    """A native engine whose archive holds one segment per time in ``times``, in name order,
    each archived at its time, and a history file (not a segment)."""
    repo = LocalRepository(tmp_path / "repo")
    for number, when in enumerate(times, start=1):
        info = repo.put_bytes(wal.wal_key(wal.segment_file(1, number)), SEGMENT)
        repo._write_record(info._replace(created_at=when))
    repo.put_bytes(wal.wal_key("00000002.history"), b"1\t0/9000000\tno recovery target\n")
    return NativeEngine(SourceSpec(dsn="host=unused", bin_dir=tmp_path), repo,
                        repo_url=repo.url, work_dir=tmp_path / "work")


@pytest.mark.parametrize("hours", [
    [],  # an empty archive
    [-3],  # a single segment, older than the lookback
    [0],  # a single segment, exactly at the cutoff
    [5],  # a single segment, newer
    [-9, -5, -2, -1],  # all older
    [1, 2, 3, 8, 9],  # all newer
    [-2, -1, 0, 1, 2],  # one exactly at the cutoff: counted
    [-3, -2, -1, 1, 2, 3],
    [-1, 0, 0, 0, 1],  # several at the cutoff: the first of them starts the span
    [-1, 1],
])
def test_native_archived_wal_finds_the_first_segment_since_by_bisection(
        tmp_path: Path, hours: list[int]) -> None:
    times = [SINCE + timedelta(hours=h) for h in hours]
    recent = [t for t in times if t >= SINCE]
    expected = None if not recent else ArchivedWal(
        len(recent), (len(recent) - 1) * len(SEGMENT), recent[0], recent[-1])
    assert _native(tmp_path, times).archived_wal(SINCE) == expected


def test_the_native_forecast_reads_a_logarithmic_number_of_wal_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 64 segments, one every 6 hours for 16 days: the 7-day lookback holds the newest 29.
    times = [NOW - timedelta(hours=6 * k) for k in reversed(range(64))]
    engine = _native(tmp_path, times)
    provider = SimpleNamespace(engine=engine, list_backups=lambda: [])
    reads: list[str] = []
    read_bytes = Path.read_bytes

    def counted(path: Path) -> bytes:  # every record a repository reads, listed or stat'ed
        if path.name.endswith(RECORD_SUFFIX):
            reads.append(path.name)
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", counted)
    f = forecast.forecast_for_drill(
        provider, cron="0 2 * * *", objective=HOUR, backup_id="none", recovered_lsn=None,
        phases={"base restore": 60.0}, history=[], now_=NOW)
    monkeypatch.undo()

    assert f is not None and f.wal_bytes_per_hour == pytest.approx(len(SEGMENT) / 6)
    assert "WAL per hour from the archive: 29 segments over 168.0 h" in f.basis
    # One record per segment would be 64 (a GET each on S3); bisection reads log2(64) + 2.
    assert 0 < len(reads) <= math.log2(len(times)) + 2, reads


@pytest.mark.parametrize(("cron", "gap"), [
    ("0 2 * * *", timedelta(days=1)),
    ("0 */6 * * *", timedelta(hours=6)),
    ("0 3 * * 1", timedelta(days=7)),
    ("0 3 * * mon", timedelta(days=7)),
    ("0 2 * * 1-5", timedelta(days=3)),  # Friday to Monday
    ("0 0 1,15 * *", timedelta(days=17)),  # the 15th to the 1st of a 31-day month
    ("*/15 * * * *", timedelta(minutes=15)),
    ("0 1,13 * * *", timedelta(hours=12)),
    ("30 1 1 * *", timedelta(days=31)),
])
def test_schedule_interval_is_the_longest_gap(cron: str, gap: timedelta) -> None:
    assert schedule_interval(cron) == gap


@pytest.mark.parametrize("cron", ["", "0 2 * *", "61 * * * *", "0 2 * * funday", "@daily"])
def test_unreadable_schedules_give_none(cron: str) -> None:
    assert schedule_interval(cron) is None


def test_the_drill_report_and_history_carry_the_forecast() -> None:
    result = drill.DrillResult(target="production", tier="critical",
                               started_at=datetime(2026, 12, 1, tzinfo=UTC), point="latest",
                               rto_seconds=30, rto_objective_seconds=3600,
                               rto_forecast=_forecast(wal_bytes_per_hour=2 * GB))
    judged = drill.judge(result)
    assert not judged.passed
    assert any("worst case 92 min" in f and "every 14 h" in f for f in judged.failures)
    text = judged.to_markdown()
    assert "**RTO forecast: worst case 92 min, objective 60 min (EXCEEDS the objective)**" in text
    assert "## RTO forecast" in text and "WAL replay: 48.0 GB" in text
    row = drill.history_rows([judged.model_dump(mode="json")])[0]
    assert row["rto_forecast_s"] == pytest.approx(5520, abs=0.1)


def test_the_swap_a_real_failure_adds_is_in_the_worst_case_and_said_when_unknown() -> None:
    known = _forecast(swap=(90.0, "the complete-failure run of 2026-12-01"))
    assert known.worst_case_seconds == pytest.approx(600 + 2400 + 120 + 90)
    assert known.lower_bound_seconds == pytest.approx(600 + 120 + 90)
    assert "stop, swap, redeploy and checks: 90 s" in known.lines()
    assert any("timed by the complete-failure run of 2026-12-01" in b for b in known.basis)
    unknown = _forecast()
    assert unknown.swap_seconds is None
    assert any("not included: no completed complete-failure run" in b for b in unknown.basis)


def test_swap_seconds_come_from_the_newest_succeeded_complete_failure_run(tmp_path) -> None:
    import json

    def report(stamp: str, scenario: str, outcome: str, steps: dict[str, float]) -> None:
        (tmp_path / f"{stamp}-{scenario}.json").write_text(json.dumps({
            "scenario": scenario, "outcome": outcome, "started_at": stamp,
            "steps": [{"name": n, "seconds": s} for n, s in steps.items()]}))

    assert forecast.swap_seconds(tmp_path) is None
    report("20261201T000000Z", "complete-failure", "succeeded",
           {"stop application": 2, "restore to point in time": 500, "swap connection string": 1,
            "redeploy application": 30, "check health": 4, "smoke checks": 3})
    report("20261202T000000Z", "complete-failure", "failed", {"stop application": 99})
    report("20261203T000000Z", "partial-corruption", "succeeded", {"stop application": 77})
    (tmp_path / "20261204T000000Z-complete-failure.json").write_text("{not json")
    assert forecast.swap_seconds(tmp_path) == (40.0, "the complete-failure run of 20261201T000000Z")


def test_a_segment_expired_while_the_archive_is_read_lists_it_again(tmp_path: Path) -> None:
    # Retention removes the oldest segments between the listing and a record read: the
    # bisection starts over on a new listing instead of failing the drill's forecast.
    times = [SINCE + timedelta(hours=h) for h in (-3, -2, -1, 1, 2, 3)]
    engine = _native(tmp_path, times)
    listed = engine.wal_segments()
    for name in listed[:3]:
        engine.repo.delete(wal.wal_key(name))
    listings: list[list[str]] = []

    def wal_segments() -> list[str]:  # the first listing is the one from before retention
        listings.append(listed if not listings else NativeEngine.wal_segments(engine))
        return listings[-1]

    engine.wal_segments = wal_segments  # type: ignore[method-assign]
    got = engine.archived_wal(SINCE)

    assert [len(names) for names in listings] == [6, 3]  # listed again once
    assert got == ArchivedWal(3, 2 * len(SEGMENT), times[3], times[-1])

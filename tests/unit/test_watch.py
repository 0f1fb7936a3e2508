"""The post-restore watch's judging and sampling loop, with synthetic samples and a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fixtures.clock import FakeClock

from restorekit.config import WatchConfig, settings_from_dict
from restorekit.errors import ConfigError
from restorekit.watch import Breach, Sample, judge, sparkline, watch

T0 = datetime(2026, 12, 6, 21, 0, tzinfo=UTC)
BASE = {"public.users": 100, "public.appointments": 400}


def sample(i: int, *, health_ms: float | None = 20.0, health_ok: bool | None = True,
           db_ms: float | None = 5.0, db_ok: bool = True, counts: dict[str, int] | None = None,
           failures: dict[str, str] | None = None) -> Sample:
    return Sample(at=T0 + timedelta(seconds=30 * i), elapsed_seconds=30.0 * i,
                  health_ok=health_ok, health_ms=health_ms if health_ok is not None else None,
                  db_ok=db_ok, db_ms=db_ms if db_ok else None,
                  row_counts=dict(BASE if counts is None else counts) if db_ok else {},
                  integrity_checked=failures is not None, integrity_failures=failures or {})


LIMITS = WatchConfig(max_health_latency_ms=500, max_db_latency_ms=100, sustained_samples=2,
                     row_count_drop_fraction=0.01, max_error_rate=0.05)


def test_a_healthy_series_stays_quiet() -> None:
    samples = [sample(i, health_ms=20 + i % 3, counts={**BASE, "public.users": 100 + i})
               for i in range(60)]
    # One slow answer and one failed request in an hour are noise, not an alert.
    samples[10] = sample(10, health_ms=900)
    samples[20] = sample(20, health_ok=False, health_ms=None)
    assert judge(samples, LIMITS, BASE) == []


def test_a_latency_spike_alerts_once_where_it_started() -> None:
    samples = [sample(i) for i in range(5)]
    samples += [sample(i, health_ms=1500) for i in range(5, 12)]
    samples += [sample(i) for i in range(12, 15)]
    (breach,) = judge(samples, LIMITS, BASE)
    assert breach.kind == "health_latency" and breach.key == ("health_latency", "")
    assert breach.sample == 6  # the second slow sample in a row
    assert breach.value == 1500 and breach.limit == 500
    assert "1500 ms (limit 500 ms) on 2 samples in a row" in breach.detail


def test_database_latency_and_connection_failures() -> None:
    samples = [sample(0), sample(1, db_ms=250), sample(2, db_ms=300),
               sample(3, db_ok=False), sample(4, db_ok=False)]
    samples[3] = samples[3].model_copy(update={"db_detail": "PostgresUnavailable: refused"})
    samples[4] = samples[4].model_copy(update={"db_detail": "PostgresUnavailable: refused"})
    breaches = judge(samples, LIMITS, BASE)
    assert [(b.kind, b.sample) for b in breaches] == [("db_latency", 2), ("db_errors", 4)]
    assert "2 of 5 database connections failed (40%" in breaches[1].detail
    assert "refused" in breaches[1].detail


def test_a_row_count_drop_alerts_per_table_against_the_baseline() -> None:
    samples = [sample(0), sample(1, counts={**BASE, "public.appointments": 399}),
               sample(2, counts={**BASE, "public.appointments": 300}),
               sample(3, counts={"public.users": 50, "public.appointments": 290})]
    breaches = judge(samples, LIMITS, BASE)
    assert [(b.kind, b.subject, b.sample) for b in breaches] == [
        ("row_count_drop", "public.appointments", 2), ("row_count_drop", "public.users", 3)]
    assert "100 fewer than the baseline (400; 25.0% gone, limit 1.0%)" in breaches[0].detail


def test_without_a_baseline_the_first_sample_is_the_reference() -> None:
    samples = [sample(0), sample(1, counts={**BASE, "public.users": 90})]
    (breach,) = judge(samples, LIMITS, None)
    assert breach.subject == "public.users" and "the first sample (100" in breach.detail


def test_integrity_failures_alert_once_per_check() -> None:
    orphan = {"fk_orphans:clients_user_id_fkey": "3 orphan rows"}
    samples = [sample(0, failures={}), sample(1), sample(2, failures=orphan),
               sample(3, failures=orphan), sample(4, failures={**orphan, "custom:x": "1 row"})]
    breaches = judge(samples, LIMITS, BASE)
    assert [(b.kind, b.subject, b.sample) for b in breaches] == [
        ("integrity", "fk_orphans:clients_user_id_fkey", 2), ("integrity", "custom:x", 4)]


def test_no_health_endpoint_is_never_judged() -> None:
    samples = [sample(i, health_ok=None) for i in range(10)]
    assert judge(samples, LIMITS, BASE) == []


def test_the_loop_samples_the_window_and_announces_each_breach_once() -> None:
    clock = FakeClock()
    taken: list[tuple[float, bool]] = []

    def take(elapsed: float, full: bool) -> Sample:
        i = len(taken)
        taken.append((elapsed, full))
        clock.now += 2  # a sample takes 2 s: the next one is still due on its slot
        return sample(i, health_ms=1500 if 3 <= i <= 8 else 20,
                      counts={**BASE, "public.users": 50} if i >= 5 else BASE)

    announced: list[Breach] = []
    limits = LIMITS.model_copy(update={"integrity_every": 4})
    samples, breaches = watch(take, limits, window_seconds=300, interval_seconds=30,
                              baseline_counts=BASE, on_breach=announced.append,
                              clock=clock, sleep=clock.sleep)
    assert len(samples) == 11  # at 0, 30, ..., 300 s
    assert [e for e, _ in taken] == [30.0 * i for i in range(11)]
    assert clock.sleeps == [28.0] * 10
    assert [f for _, f in taken] == [i % 4 == 0 or i == 10 for i in range(11)]
    assert [(b.kind, b.sample) for b in announced] == [("health_latency", 4),
                                                       ("row_count_drop", 5)]
    assert breaches == announced


def test_an_overrunning_sample_is_followed_at_once() -> None:
    clock = FakeClock()

    def take(elapsed: float, full: bool) -> Sample:
        clock.now += 45  # longer than the interval
        return sample(0)

    samples, _ = watch(take, LIMITS, window_seconds=60, interval_seconds=30,
                       clock=clock, sleep=clock.sleep)
    assert len(samples) == 3 and clock.sleeps == []


def test_watch_config_defaults_and_validation() -> None:
    cfg = WatchConfig()
    assert (cfg.window_minutes, cfg.interval_seconds, cfg.max_error_rate) == (30, 30, 0.05)
    with pytest.raises(ValueError, match="longer than the window"):
        WatchConfig(window_minutes=1, interval_seconds=120)
    settings = settings_from_dict({"targets": {"p": {
        "dsn": "host=h dbname=d", "repository": "file:///r",
        "watch": {"window_minutes": 5, "max_db_latency_ms": 50}}}})
    assert settings.target("p").watch.max_db_latency_ms == 50
    with pytest.raises(ConfigError, match="watch.max_error_rate"):
        settings_from_dict({"targets": {"p": {
            "dsn": "host=h dbname=d", "repository": "file:///r",
            "watch": {"max_error_rate": 2}}}})


def test_sparkline() -> None:
    assert sparkline([1, None, 8]) == "▁×█"
    assert sparkline([None]) == ""


def test_the_sampler_records_an_unreachable_database_and_the_health_answer() -> None:
    import httpx

    from restorekit.pg.cluster import free_port
    from restorekit.watch import Sampler

    ticks = iter(x * 0.05 for x in range(100))

    def app(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"ok": False, "database": {
            "connected": False, "error": "password authentication failed for user app"}})

    with httpx.Client(transport=httpx.MockTransport(app)) as client:
        sampler = Sampler(f"host=127.0.0.1 port={free_port()} dbname=app user=app "
                          "password=s3cret", health_url="http://app.test/api/health",
                          critical_tables=["users"], client=client, timeout_seconds=2,
                          clock=lambda: next(ticks))
        s = sampler(12.5, True)
    assert (s.elapsed_seconds, s.health_ok, s.health_ms) == (12.5, False, pytest.approx(50))
    assert "database not connected" in s.health_detail
    assert not s.db_ok and s.db_ms is None and s.row_counts == {}
    assert "s3cret" not in s.db_detail and s.db_detail.startswith("Postgres")
    assert not s.integrity_checked  # nothing to check without a connection
    assert s.row()["health"] == "ERROR" and s.row()["db"] == "ERROR"

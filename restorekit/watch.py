"""The watch after a restore: the runbook's "Monitoring After Restore", with alerts.

For a window after a restore (default 30 min) :func:`watch` takes a :class:`Sample` of production
every interval and judges the series so far with :func:`judge`; each breach is announced once
(per kind and subject), not on every sample that still shows it.

One sample (:class:`Sampler`):

=================  ============================================================================
``health``         the health endpoint (:func:`restorekit.health.check_health`, one attempt):
                   ok or not, and the request's round trip in ms
``db``             a new connection as the application makes it (its own role, its own URL)
                   and ``SELECT 1``: ok or not, latency in ms
``row_counts``     exact ``count(*)`` of the critical tables, in the same session
``integrity``      every ``integrity_every`` samples (and the first and last): the failing
                   critical checks of :func:`restorekit.integrity.verify` restricted to foreign
                   keys and the configured custom checks (no amcheck, one scan at a time)
=================  ============================================================================

What is judged (:class:`restorekit.config.WatchConfig` holds the limits):

=================  ============================================================================
``health_latency`` the health request took longer than ``max_health_latency_ms`` on
                   ``sustained_samples`` samples in a row
``db_latency``     connect + ``SELECT 1`` took longer than ``max_db_latency_ms``, likewise
``health_errors``  at least ``sustained_samples`` failed health requests, more than
                   ``max_error_rate`` of those made so far
``db_errors``      the same for database connections
``row_count_drop`` a critical table has fewer rows than its baseline (or, without one, its first
                   sample) by more than ``row_count_drop_fraction``; one alert per table
``integrity``      a critical integrity check fails (an orphan row, a custom check); one alert
                   per check
=================  ============================================================================

Nothing here talks to Prefect: the clock, the sleep and what to do on a breach are injected.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field

from restorekit import integrity
from restorekit.config import CheckConfig, WatchConfig
from restorekit.errors import RestoreKitError
from restorekit.health import check_health
from restorekit.pg.catalog import TableRef
from restorekit.pg.cluster import connect as pg_connect
from restorekit.pg.dsn import redact

log = logging.getLogger(__name__)

__all__ = ["Breach", "Sample", "Sampler", "WatchBreached", "WatchReport", "judge", "watch"]

APPLICATION_NAME = "restorekit-watch"

BreachKind = Literal["health_latency", "db_latency", "health_errors", "db_errors",
                     "row_count_drop", "integrity"]


class Sample(BaseModel):
    """What production looked like at one moment of the watch. Holds no secret.

    Attributes:
        at: when the sample was taken (UTC).
        elapsed_seconds: since the watch started.
        health_ok: the health endpoint answered healthy; None when none is configured.
        health_ms: the health request's round trip; None when nothing answered in time.
        health_detail: the health check's one-line explanation.
        db_ok: a connection opened and ``SELECT 1`` answered.
        db_ms: connect + ``SELECT 1``; None when it failed.
        db_detail: the (redacted) error when it failed.
        row_counts: exact counts of the critical tables, keyed like the baseline
            (``public.users``); empty when the database was not reachable.
        integrity_checked: the integrity checks ran on this sample.
        integrity_failures: failing critical checks (``fk_orphans:...``, ``custom:...``) with
            their detail.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    elapsed_seconds: float
    health_ok: bool | None = None
    health_ms: float | None = None
    health_detail: str = ""
    db_ok: bool = True
    db_ms: float | None = None
    db_detail: str = ""
    row_counts: dict[str, int] = Field(default_factory=dict)
    integrity_checked: bool = False
    integrity_failures: dict[str, str] = Field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """One row of the samples table artifact (flat, JSON-friendly)."""
        return {
            "at": self.at.strftime("%H:%M:%S"),
            "elapsed_s": round(self.elapsed_seconds, 1),
            "health": "-" if self.health_ok is None else ("ok" if self.health_ok else "ERROR"),
            "health_ms": None if self.health_ms is None else round(self.health_ms, 1),
            "db": "ok" if self.db_ok else "ERROR",
            "db_ms": None if self.db_ms is None else round(self.db_ms, 1),
            **{f"rows:{k}": v for k, v in self.row_counts.items()},
            "integrity": ("-" if not self.integrity_checked else
                          ", ".join(self.integrity_failures) or "ok"),
        }


class Breach(BaseModel):
    """A limit crossed: where it started and by how much.

    Attributes:
        kind: what was judged (see the module docstring).
        subject: the table or check it concerns; "" for the kinds about the whole target.
        sample: index of the sample where it started.
        at: that sample's time.
        value: the observed value (ms, a rate, a row count).
        limit: the limit it crossed.
        detail: one line for a human.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: BreachKind
    subject: str = ""
    sample: int
    at: datetime
    value: float | None = None
    limit: float | None = None
    detail: str

    @property
    def key(self) -> tuple[str, str]:
        """What is alerted once: the kind, and the table or check it is about."""
        return self.kind, self.subject

    def text(self, target: str) -> str:
        return f"restorekit: post-restore watch of {target}: {self.kind} - {self.detail}"


def _ms(value: float | None) -> str:
    return "no answer" if value is None else f"{value:.0f} ms"


def _sustained_over(values: Sequence[float | None], limit: float, run: int) -> int | None:
    """The first index ending ``run`` consecutive values over ``limit`` (None never counts)."""
    streak = 0
    for i, value in enumerate(values):
        streak = streak + 1 if value is not None and value > limit else 0
        if streak >= run:
            return i
    return None


def _error_rate_breach(oks: Sequence[bool | None],
                       limits: WatchConfig) -> tuple[int, int, int] | None:
    """(index, failures, taken) where failures first reach ``sustained_samples`` and exceed
    ``max_error_rate`` of the samples taken so far (None: not configured, never judged)."""
    failures = taken = 0
    for i, ok in enumerate(oks):
        if ok is None:
            continue
        taken += 1
        failures += not ok
        if failures >= limits.sustained_samples and failures / taken > limits.max_error_rate:
            return i, failures, taken
    return None


def judge(samples: Sequence[Sample], limits: WatchConfig,
          baseline_counts: Mapping[str, int] | None = None) -> list[Breach]:
    """Every breach in ``samples``, each at the sample where it started, in that order.

    Pure: the same series gives the same breaches, so a caller can judge the series after each
    new sample and announce the breaches whose :attr:`Breach.key` it has not announced yet.

    Args:
        samples: the series so far, oldest first.
        limits: the thresholds.
        baseline_counts: the critical tables' counts to compare with (the stored baseline's
            ``exact_counts``); a table missing there is compared with its first sample.
    """
    found = [b for b in (
        _latency(samples, "health_latency", [s.health_ms for s in samples],
                 limits.max_health_latency_ms, "the health endpoint", limits),
        _latency(samples, "db_latency", [s.db_ms for s in samples], limits.max_db_latency_ms,
                 "connect + SELECT 1", limits),
        _errors(samples, "health_errors", [s.health_ok for s in samples],
                [s.health_detail for s in samples], "health requests", limits),
        _errors(samples, "db_errors", [s.db_ok for s in samples],
                [s.db_detail for s in samples], "database connections", limits),
    ) if b is not None]
    found += _row_count_drops(samples, limits, baseline_counts or {})
    seen: set[str] = set()
    for i, s in enumerate(samples):
        for name, detail in s.integrity_failures.items():
            if name not in seen:
                seen.add(name)
                found.append(Breach(kind="integrity", subject=name, sample=i, at=s.at,
                                    detail=f"{name} fails: {detail}"))
    return sorted(found, key=lambda b: b.sample)


def _latency(samples: Sequence[Sample], kind: BreachKind, values: Sequence[float | None],
             limit: float, what: str, limits: WatchConfig) -> Breach | None:
    run = limits.sustained_samples
    i = _sustained_over(values, limit, run)
    if i is None:
        return None
    return Breach(kind=kind, sample=i, at=samples[i].at, value=values[i], limit=limit,
                  detail=f"{what} took {_ms(values[i])} (limit {limit:g} ms)"
                  + (f" on {run} samples in a row" if run > 1 else ""))


def _errors(samples: Sequence[Sample], kind: BreachKind, oks: Sequence[bool | None],
            details: Sequence[str], what: str, limits: WatchConfig) -> Breach | None:
    hit = _error_rate_breach(oks, limits)
    if hit is None:
        return None
    i, failures, taken = hit
    return Breach(kind=kind, sample=i, at=samples[i].at, value=failures / taken,
                  limit=limits.max_error_rate,
                  detail=f"{failures} of {taken} {what} failed ({failures / taken:.0%}, limit "
                         f"{limits.max_error_rate:.0%}); last: {details[i]}")


def _row_count_drops(samples: Sequence[Sample], limits: WatchConfig,
                     baseline: Mapping[str, int]) -> list[Breach]:
    found: list[Breach] = []
    reference: dict[str, tuple[int, str]] = {}
    dropped: set[str] = set()
    for i, s in enumerate(samples):
        for table, count in s.row_counts.items():
            if table not in reference:
                reference[table] = ((baseline[table], "the baseline") if table in baseline
                                    else (count, "the first sample"))
            base, source = reference[table]
            floor = base * (1 - limits.row_count_drop_fraction)
            if table not in dropped and count < floor:
                dropped.add(table)
                found.append(Breach(
                    kind="row_count_drop", subject=table, sample=i, at=s.at, value=count,
                    limit=math.ceil(floor),
                    detail=f"{table} has {count} rows, {base - count} fewer than {source} "
                           f"({base}; {(base - count) / base:.1%} gone, limit "
                           f"{limits.row_count_drop_fraction:.1%})"))
    return found


class WatchReport(BaseModel):
    """A finished watch: every sample, every breach, and which were announced."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str
    started_at: datetime
    finished_at: datetime
    window_minutes: float
    interval_seconds: float
    samples: list[Sample]
    breaches: list[Breach]
    alerted: list[str] = Field(default_factory=list)  # the texts announced, in order
    undelivered: list[str] = Field(default_factory=list)  # alerts whose notice failed
    baseline: str = ""  # where the row counts were compared from

    @property
    def quiet(self) -> bool:
        return not self.breaches

    def summary(self) -> str:
        if self.quiet:
            return (f"quiet: {len(self.samples)} samples over "
                    f"{(self.finished_at - self.started_at).total_seconds():.0f} s, no limit "
                    "crossed")
        kinds = ", ".join(dict.fromkeys(
            f"{b.kind}" + (f" ({b.subject})" if b.subject else "") for b in self.breaches))
        return f"{len(self.breaches)} breach(es) in {len(self.samples)} samples: {kinds}"

    def to_markdown(self) -> str:
        lines = [f"# Post-restore watch: {self.target}", "",
                 f"**Outcome:** {self.summary()}  ",
                 f"**Window:** {self.started_at.isoformat()} to {self.finished_at.isoformat()} "
                 f"({self.window_minutes:g} min, every {self.interval_seconds:g} s)  ",
                 f"**Row counts compared with:** {self.baseline or 'the first sample'}  "]
        health = [s.health_ms for s in self.samples]
        db = [s.db_ms for s in self.samples]
        if any(v is not None for v in health):
            lines.append(f"**Health latency:** `{sparkline(health)}` max {_ms(_max(health))}  ")
        if any(v is not None for v in db):
            lines.append(f"**Database latency:** `{sparkline(db)}` max {_ms(_max(db))}  ")
        if self.breaches:
            lines += ["", "## Breaches", "", "| started | kind | subject | detail |",
                      "|---|---|---|---|"]
            lines += [f"| {b.at.strftime('%H:%M:%S')} | {b.kind} | {b.subject or '-'} | "
                      f"{b.detail.replace('|', '/')} |" for b in self.breaches]
        if self.undelivered:
            lines += ["", "## Alerts that could not be delivered", ""]
            lines += [f"- {u}" for u in self.undelivered]
        lines += ["", f"{len(self.samples)} samples: see the table artifact."]
        return "\n".join(lines) + "\n"


def _max(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None]) -> str:
    """A one-line chart (the Prefect UI renders no charts in artifacts); ``×`` = no answer."""
    present = [v for v in values if v is not None]
    if not present:
        return ""
    low, high = min(present), max(present)
    span = (high - low) or 1.0
    return "".join("×" if v is None else _BARS[int((v - low) / span * (len(_BARS) - 1))]
                   for v in values)


class WatchBreached(RestoreKitError):
    """The watch saw production cross a limit (the alerts went out as it happened)."""

    def __init__(self, report: WatchReport) -> None:
        super().__init__(f"post-restore watch of {report.target}: {report.summary()}")
        self.report = report


def watch(
    take_sample: Callable[[float, bool], Sample],
    limits: WatchConfig,
    *,
    window_seconds: float,
    interval_seconds: float,
    baseline_counts: Mapping[str, int] | None = None,
    on_breach: Callable[[Breach], None] = lambda breach: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[Sample], list[Breach]]:
    """Sample every ``interval_seconds`` for ``window_seconds``; announce each new breach once.

    Samples are due at start, start + interval, ... up to the window's end (a slow sample does
    not shift the ones after it; one that overruns its slot is followed at once by the next).

    Args:
        take_sample: ``(elapsed_seconds, with_integrity) -> Sample``.
        limits: the thresholds (and ``integrity_every``).
        window_seconds: how long to watch.
        interval_seconds: between samples.
        baseline_counts: see :func:`judge`.
        on_breach: called once per new :attr:`Breach.key`, right after the sample showing it.
        clock: monotonic seconds (tests pass a fake one that ``sleep`` advances).
        sleep: waits between samples.

    Returns:
        Every sample, and the breaches of the whole series.
    """
    samples: list[Sample] = []
    announced: set[tuple[str, str]] = set()
    breaches: list[Breach] = []
    start = clock()
    index = 0
    while True:
        last = (index + 1) * interval_seconds > window_seconds + 1e-9
        full = index % limits.integrity_every == 0 or last
        samples.append(take_sample(clock() - start, full))
        breaches = judge(samples, limits, baseline_counts)
        for breach in breaches:
            if breach.key not in announced:
                announced.add(breach.key)
                log.warning("watch: %s", breach.detail)
                on_breach(breach)
        if last:
            return samples, breaches
        index += 1
        wait = start + index * interval_seconds - clock()
        if wait > 0:
            sleep(wait)


class Sampler:
    """Takes :class:`Sample` s of one target: its health endpoint and its database.

    Args:
        dsn: the database as the application reaches it (libpq form; secret, never shown).
        health_url: the health endpoint, or None.
        critical_tables: counted exactly on every sample.
        checks: the configured custom checks (the critical ones alert).
        timeout_seconds: per health request, connect and statement.
        client: the HTTP client for the health requests (not closed here).
        clock: for the latencies (``time.perf_counter``).
        now: wall time of a sample.
    """

    def __init__(self, dsn: str, *, health_url: str | None, critical_tables: Sequence[str],
                 checks: Sequence[CheckConfig] = (), timeout_seconds: float = 10,
                 client: httpx.Client | None = None,
                 clock: Callable[[], float] = time.perf_counter,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._dsn = dsn
        self._health_url = health_url
        self._tables = [TableRef.parse(t) for t in critical_tables]
        self._checks = [integrity.CustomCheck(**c.model_dump()) for c in checks]
        self._timeout = timeout_seconds
        self._client = client
        self._clock = clock
        self._now = now

    def __call__(self, elapsed_seconds: float, with_integrity: bool) -> Sample:
        at = self._now()
        values: dict[str, Any] = {"at": at, "elapsed_seconds": elapsed_seconds}
        if self._health_url is not None:
            values.update(self._health())
        values.update(self._database())
        if with_integrity and values["db_ok"]:
            values["integrity_checked"] = True
            values["integrity_failures"] = self._integrity()
        return Sample(**values)

    def _health(self) -> dict[str, Any]:
        assert self._health_url is not None
        start = self._clock()
        report = check_health(self._health_url, timeout=self._timeout, attempts=1,
                              client=self._client)
        took = (self._clock() - start) * 1000
        return {"health_ok": report.ok, "health_detail": report.detail,
                "health_ms": took if report.status_code is not None else None}

    def _database(self) -> dict[str, Any]:
        start = self._clock()
        try:
            with pg_connect(self._dsn, autocommit=True, application_name=APPLICATION_NAME,
                            connect_timeout=max(1, math.ceil(self._timeout))) as conn:
                conn.execute("SELECT 1").fetchone()
                took = (self._clock() - start) * 1000
                counts = self._count(conn)
        except (psycopg.Error, RestoreKitError) as exc:
            return {"db_ok": False, "db_detail": redact(f"{type(exc).__name__}: {exc}")[:300]}
        return {"db_ok": True, "db_ms": took, "row_counts": counts}

    def _count(self, conn: psycopg.Connection[Any]) -> dict[str, int]:
        if not self._tables:
            return {}
        conn.execute("SELECT set_config('statement_timeout', %s, false)",
                     [str(int(self._timeout * 1000))])
        # One round trip for every table.
        query = sql.SQL("SELECT {}").format(sql.SQL(", ").join(
            sql.SQL("(SELECT count(*) FROM {})").format(t.ident) for t in self._tables))
        row = conn.execute(query).fetchone()
        assert row is not None
        return {str(t): int(n) for t, n in zip(self._tables, row, strict=True)}

    def _integrity(self) -> dict[str, str]:
        # The verification suite's own foreign-key and custom checks, one scan at a time, no
        # amcheck and no row counts (counted above): a watch must not load production.
        report = integrity.verify(
            self._dsn, custom_checks=self._checks, amcheck=False, max_workers=1,
            connect_attempts=1, statement_timeout_ms=int(self._timeout * 1000))
        return {c.name: c.detail for c in report.critical_failures
                if c.name.startswith(("fk_orphans", "custom:", "connectivity", "not_in_recovery"))}

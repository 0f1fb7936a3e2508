"""The worst-case RTO forecast of a restore drill.

A failure just before the next base backup means restoring the newest base backup and replaying
a whole backup interval of WAL, at the rates the drill measured, plus the verification and
health times it measured (:func:`forecast_rto`). A forecast beyond the tier's objective fails the
drill (it alerts through the drill's notification) and says how often base backups would have to
run instead. :func:`forecast_for_drill` gathers the inputs from a self-hosted engine: its
backups, the WAL archived per hour and the backup schedule (:func:`schedule_interval`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from restorekit.models import parse_lsn

#: Least WAL a drill must replay for its replay rate to count: below it the server's start and
#: promotion dominate the phase and the "rate" would be far too low.
MIN_REPLAY_BYTES = 64 * 1024 * 1024
#: Least span of archived WAL the production rate is read from (a few segments archived in
#: seconds say nothing about an hour).
MIN_ARCHIVE_SPAN = timedelta(hours=1)
#: How far back the archive is read for the WAL produced per hour.
ARCHIVE_LOOKBACK = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class ArchivedWal:
    """The WAL segments archived since a given time, as an engine's ``archived_wal(since)``
    sums them up for :func:`archive_wal_rate`: how many, the bytes of all but the first (before
    compression; the first one's were written before the span begins) and the archive times of
    the first and the last."""

    segments: int
    bytes_after_first: int
    first: datetime
    last: datetime


class RtoForecast(BaseModel):
    """The worst-case RTO of a target: failure just before the next base backup.

    ``worst_case_seconds`` = restore the newest base backup (``base_restore_seconds``) + replay
    a full backup interval of WAL (``wal_replay_seconds``) + the other phases the drill measured
    (``other_seconds``: verification, health) + what only a real failure does (``swap_seconds``:
    stopping the application, the swap, the redeploy and its checks, from the newest completed
    scenario-1 run; None: none recorded, left out and said so). None when the WAL part cannot
    be forecast yet (``basis`` says why). ``fix`` says what would bring it within the objective.
    """

    worst_case_seconds: float | None
    objective_seconds: float
    base_restore_seconds: float
    wal_replay_seconds: float | None
    other_seconds: float
    swap_seconds: float | None = None
    interval_seconds: float | None  # base backup interval; None: no schedule
    wal_bytes_per_hour: float | None
    wal_bytes_to_replay: float | None
    replay_bytes_per_second: float | None
    replay_rate_measured: bool = False  # by this drill (not an earlier one's, not missing)
    base_bytes_per_second: float | None
    basis: list[str] = Field(default_factory=list)
    fix: str = ""

    @property
    def lower_bound_seconds(self) -> float:
        """What the worst case is at least: the base restore and the other phases."""
        return self.base_restore_seconds + self.other_seconds + (self.swap_seconds or 0)

    @property
    def within_objective(self) -> bool | None:
        """None: the WAL part is unknown and the lower bound alone is within the objective."""
        if self.worst_case_seconds is None:
            return False if self.lower_bound_seconds > self.objective_seconds else None
        return self.worst_case_seconds <= self.objective_seconds

    def headline(self) -> str:
        objective = _duration(self.objective_seconds)
        verdict = " (EXCEEDS the objective)" if self.within_objective is False else ""
        if self.worst_case_seconds is None:
            return (f"RTO forecast: worst case at least {_duration(self.lower_bound_seconds)} "
                    f"(WAL replay not forecast yet), objective {objective}{verdict}")
        return (f"RTO forecast: worst case {_duration(self.worst_case_seconds)}, "
                f"objective {objective}{verdict}")

    def lines(self) -> list[str]:
        out = [self.headline()]
        out.append(f"base restore of the newest backup: {_duration(self.base_restore_seconds)}"
                   + (f" at {_size(self.base_bytes_per_second)}/s"
                      if self.base_bytes_per_second else ""))
        if self.wal_replay_seconds is not None and self.wal_bytes_to_replay is not None:
            out.append(f"WAL replay: {_size(self.wal_bytes_to_replay)} "
                       f"({_size(self.wal_bytes_per_hour or 0)}/h over "
                       f"{_duration(self.interval_seconds or 0)}) at "
                       f"{_size(self.replay_bytes_per_second or 0)}/s: "
                       f"{_duration(self.wal_replay_seconds)}")
        out.append(f"verification and health: {_duration(self.other_seconds)}")
        if self.swap_seconds is not None:
            out.append(f"stop, swap, redeploy and checks: {_duration(self.swap_seconds)}")
        out += self.basis
        if self.fix:
            out.append(self.fix)
        return out


def forecast_rto(
    *,
    objective: timedelta,
    base_restore_seconds: float,
    restored_backup_bytes: int | None,
    newest_backup_bytes: int | None,
    replay_seconds: float | None,
    replayed_bytes: int | None,
    other_seconds: float,
    wal_bytes_per_hour: float | None,
    interval: timedelta | None,
    newest_backup_age: timedelta | None,
    fallback_replay_rate: tuple[float, str] | None = None,
    wal_rate_note: str = "",
    swap: tuple[float, str] | None = None,
) -> RtoForecast:
    """The worst-case RTO from what a drill measured (pure arithmetic, no I/O).

    Args:
        objective: the tier's RTO objective.
        base_restore_seconds: the drill's base-restore phase.
        restored_backup_bytes: size of the backup the drill restored (scales the base restore
            to the newest backup when the drill restored an older one).
        newest_backup_bytes: size of the newest base backup.
        replay_seconds: the drill's WAL-replay phase; replayed_bytes: the WAL it replayed (from
            the backup's start LSN to the recovered LSN).
        other_seconds: verification, health and the other measured phases.
        wal_bytes_per_hour: WAL the production writes per hour (from the archive); None: not
            measurable yet (``wal_rate_note`` says why).
        interval: the longest gap between two scheduled base backups; None: no schedule, so
            the forecast is for a failure now (the newest backup's age grows).
        newest_backup_age: now minus the newest backup's end.
        fallback_replay_rate: (bytes/s, where it comes from) when this drill replayed too little
            WAL to measure the rate (an earlier drill's).
        swap: (seconds, where they come from) of the steps only a real failure runs (stop the
            application, swap, redeploy, health and smoke checks; :func:`swap_seconds`); None:
            no scenario-1 run recorded, so the forecast leaves them out and says so.
    """
    basis: list[str] = []
    base = base_restore_seconds
    base_rate = None
    if restored_backup_bytes and base_restore_seconds > 0:
        base_rate = restored_backup_bytes / base_restore_seconds
        if newest_backup_bytes and newest_backup_bytes != restored_backup_bytes:
            base = newest_backup_bytes / base_rate
    replay_rate, measured = _replay_rate(replay_seconds, replayed_bytes, fallback_replay_rate,
                                         basis)
    span = _replay_span(interval, newest_backup_age, basis)
    if wal_rate_note:
        basis.append(wal_rate_note)
    if swap is None:
        basis.append("stopping the application, the swap, the redeploy and its checks not "
                     "included: no completed complete-failure run recorded yet")
    else:
        basis.append(f"stop, swap, redeploy and checks timed by {swap[1]}")
    swap_seconds = swap[0] if swap is not None else None
    to_replay = replay = worst = None
    if wal_bytes_per_hour is not None and span is not None and replay_rate:
        to_replay = wal_bytes_per_hour * span.total_seconds() / 3600
        replay = to_replay / replay_rate
        worst = base + replay + other_seconds + (swap_seconds or 0)
    forecast = RtoForecast(
        worst_case_seconds=worst, objective_seconds=objective.total_seconds(),
        base_restore_seconds=base, wal_replay_seconds=replay, other_seconds=other_seconds,
        swap_seconds=swap_seconds,
        interval_seconds=None if interval is None else interval.total_seconds(),
        wal_bytes_per_hour=wal_bytes_per_hour, wal_bytes_to_replay=to_replay,
        replay_bytes_per_second=replay_rate, base_bytes_per_second=base_rate, basis=basis,
        replay_rate_measured=measured)
    return forecast.model_copy(update={"fix": _fix(forecast)})


def _replay_rate(replay_seconds: float | None, replayed_bytes: int | None,
                 fallback: tuple[float, str] | None,
                 basis: list[str]) -> tuple[float | None, bool]:
    """The WAL replay rate (bytes/s) and whether this drill measured it; says where it came
    from in ``basis``."""
    if replayed_bytes is not None and replay_seconds and replayed_bytes >= MIN_REPLAY_BYTES:
        basis.append(f"WAL replay rate measured by this drill ({_size(replayed_bytes)} in "
                     f"{_duration(replay_seconds)}, server start and promotion included)")
        return replayed_bytes / replay_seconds, True
    if fallback is not None:
        basis.append(f"WAL replay rate from {fallback[1]} (this drill replayed "
                     f"{_size(replayed_bytes or 0)}, too little to measure it)")
        return fallback[0], False
    basis.append(f"WAL replay rate not measured: this drill replayed "
                 f"{_size(replayed_bytes or 0)} (at least {_size(MIN_REPLAY_BYTES)} needed)")
    return None, False


def _replay_span(interval: timedelta | None, newest_backup_age: timedelta | None,
                 basis: list[str]) -> timedelta | None:
    """How much time of WAL the worst case replays: the backup interval, or without a
    schedule the newest backup's age; says which in ``basis``."""
    if interval is None:
        age = _duration(newest_backup_age.total_seconds()) if newest_backup_age else "n/a"
        basis.append("no schedule: forecast assumes the newest backup's age grows (a failure "
                     f"now replays {age} of WAL)")
        return newest_backup_age
    basis.append(f"base backups at most {_duration(interval.total_seconds())} apart "
                 "(the backup schedule): a failure just before the next one replays that "
                 "much WAL")
    return interval


def replay_rate_from_history(history: Sequence[dict[str, Any]]) -> tuple[float, str] | None:
    """The WAL replay rate the newest earlier drill measured itself, with its date."""
    for h in reversed(history):
        forecast = h.get("rto_forecast") or {}
        if forecast.get("replay_rate_measured") and forecast.get("replay_bytes_per_second"):
            return float(forecast["replay_bytes_per_second"]), f"the drill of {h['started_at']}"
    return None


_REPLAY_PHASES = ("base restore", "wal replay")
#: The steps of scenario 1 a drill does not run: the application is down through all of them.
SWAP_STEPS = ("stop application", "swap connection string", "redeploy application",
              "check health", "smoke checks")


def swap_seconds(reports_dir: Path) -> tuple[float, str] | None:
    """The time the newest succeeded complete-failure run of a target spent in
    :data:`SWAP_STEPS`, and which run it was; None when there is none (or it is unreadable)."""
    for path in sorted(reports_dir.glob("*-complete-failure.json"), reverse=True):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if report.get("outcome") != "succeeded":
            continue
        seconds = sum(float(s.get("seconds", 0)) for s in report.get("steps", [])
                      if s.get("name") in SWAP_STEPS)
        return seconds, f"the complete-failure run of {report.get('started_at', path.stem)}"
    return None


def forecast_for_drill(provider: Any, *, cron: str, objective: timedelta, backup_id: str,
                       recovered_lsn: str | None, phases: dict[str, float],
                       history: Sequence[dict[str, Any]], now_: datetime,
                       reports_dir: Path | None = None) -> RtoForecast | None:
    """Gather what :func:`forecast_rto` needs from a self-hosted provider's engine (its backups
    and its WAL archive) and the drill's phases. None when the provider restores by itself
    (no restorekit base backup and WAL archive to forecast from)."""
    engine = getattr(provider, "engine", None)
    archived = getattr(engine, "archived_wal", None)
    if not callable(archived) or "base restore" not in phases:
        return None
    backups = sorted(provider.list_backups(), key=lambda b: (b.stop_time, b.backup_id))
    newest = backups[-1] if backups else None
    restored = next((b for b in backups if b.backup_id == backup_id), None)
    replayed = None
    if restored is not None and recovered_lsn:
        replayed = max(0, parse_lsn(recovered_lsn) - parse_lsn(restored.start_lsn))
    wal_rate, note = archive_wal_rate(archived(now_ - ARCHIVE_LOOKBACK))
    return forecast_rto(
        objective=objective,
        base_restore_seconds=phases["base restore"],
        restored_backup_bytes=restored.size_bytes if restored else None,
        newest_backup_bytes=newest.size_bytes if newest else None,
        replay_seconds=phases.get("wal replay"),
        replayed_bytes=replayed,
        other_seconds=sum(v for k, v in phases.items() if k not in _REPLAY_PHASES),
        wal_bytes_per_hour=wal_rate,
        interval=schedule_interval(cron),
        newest_backup_age=(now_ - newest.stop_time) if newest else None,
        fallback_replay_rate=replay_rate_from_history(history),
        wal_rate_note=note,
        swap=swap_seconds(reports_dir) if reports_dir is not None else None,
    )


def _fix(f: RtoForecast) -> str:
    if f.within_objective is not False:
        return ""
    room = f.objective_seconds - f.lower_bound_seconds
    if room <= 0 or not f.wal_bytes_per_hour or not f.replay_bytes_per_second:
        return (f"fix: the base restore, verification and swap alone take "
                f"{_duration(f.lower_bound_seconds)}: more frequent base "
                "backups cannot bring this within the objective; restore faster (compressed "
                "backups, faster storage), keep a standby, or relax the tier")
    hours = room * f.replay_bytes_per_second / f.wal_bytes_per_hour
    if hours >= 1:
        every = math.floor(hours)
        cron = f"0 */{every} * * *" if every < 24 else "0 2 * * *"
        return (f"fix: base backups every {every} h or more often ([backups] cron = "
                f"\"{cron}\") keep the worst case within the objective")
    minutes = max(1, math.floor(hours * 60))
    return (f"fix: base backups would have to run every {minutes} min: keep a standby or "
            "restore faster instead (WAL replay dominates)")


def archive_wal_rate(archived: ArchivedWal | None, *,
                     lookback: timedelta = ARCHIVE_LOOKBACK,
                     min_span: timedelta = MIN_ARCHIVE_SPAN) -> tuple[float | None, str]:
    """WAL written per hour, from the segments archived within ``lookback`` (an engine's
    ``archived_wal(now - lookback)``): the bytes archived after the first over the time they
    took. (None, why) when the archive spans less than ``min_span``."""
    segments = archived.segments if archived is not None else 0
    if archived is None or segments < 2:
        return None, (f"WAL per hour not measurable yet: {segments} segment(s) archived in "
                      f"the last {_duration(lookback.total_seconds())}")
    span = archived.last - archived.first
    if span < min_span:
        return None, (f"WAL per hour not measurable yet: the archive spans "
                      f"{_duration(span.total_seconds())} (at least "
                      f"{_duration(min_span.total_seconds())} needed)")
    rate = archived.bytes_after_first / (span.total_seconds() / 3600)
    return rate, (f"WAL per hour from the archive: {segments} segments over "
                  f"{_duration(span.total_seconds())}")


_CRON_NAMES = {
    3: {m: i for i, m in enumerate(
        "jan feb mar apr may jun jul aug sep oct nov dec".split(), start=1)},
    4: {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())},
}
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def _cron_field(text: str, index: int) -> set[int]:
    low, high = _CRON_RANGES[index]
    values: set[int] = set()
    for part in text.lower().split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if body == "*":
            first, last = low, high
        else:
            first_text, _, last_text = body.partition("-")
            names = _CRON_NAMES.get(index, {})
            first = _cron_value(first_text, names)
            last = _cron_value(last_text, names) if last_text else first
            if step_text and not last_text:
                last = high
        if not (low <= first <= last <= high) or step < 1:
            raise ValueError(f"cron field {text!r} out of range {low}-{high}")
        values.update(range(first, last + 1, step))
    if index == 4 and 7 in values:
        values = (values - {7}) | {0}
    return values


def _cron_value(text: str, names: dict[str, int]) -> int:
    """A cron field's bound: a month or weekday name where the field has them, else a number."""
    named = names.get(text)
    return int(text) if named is None else named


def schedule_interval(cron: str) -> timedelta | None:
    """The longest gap between two consecutive runs of a 5-field cron schedule (the worst case
    for the WAL to replay). None when it cannot be read. Computed in the schedule's own clock
    (a DST shift is ignored)."""
    fields = cron.split()
    if len(fields) != 5 or not all(re.fullmatch(r"[\w*,/-]+", f) for f in fields):
        return None
    try:
        minutes, hours, days, months, weekdays = (_cron_field(f, i) for i, f in enumerate(fields))
    except ValueError:
        return None
    day_any, weekday_any = fields[2].startswith("*"), fields[4].startswith("*")
    start = datetime(2025, 1, 1)  # any year: the gaps repeat
    runs: list[datetime] = []
    for offset in range(2 * 366):
        day = start + timedelta(days=offset)
        if day.month not in months:
            continue
        in_month, in_week = day.day in days, (day.weekday() + 1) % 7 in weekdays
        if day_any or weekday_any:
            hit = in_month and in_week
        else:
            hit = in_month or in_week  # cron: either restricted day field matches
        if hit:
            runs += [day.replace(hour=h, minute=m) for h in sorted(hours) for m in sorted(minutes)]
    if len(runs) < 2:
        return None
    return max(b - a for a, b in zip(runs, runs[1:], strict=False))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"



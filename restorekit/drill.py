"""Restore drills: prove the backups restore, and measure RTO and RPO against the objectives.

The runbook asks for "regular restore testing, disaster recovery drills, backup verification"
and sets objectives per tier (RTO critical 1 h / standard 4 h / non-critical 24 h; RPO 15 min /
1 h / 24 h). A drill restores into a scratch database, verifies it, compares row counts with
production, measures each phase and judges the result against the target's tier, the worst-case
RTO forecast from the rates it measured included (:mod:`restorekit.forecast`).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from pydantic import BaseModel, Field

from restorekit.forecast import RtoForecast
from restorekit.models import RestorePoint, RestoreWindow
from restorekit.pg.catalog import TableRef


class DrillResult(BaseModel):
    """One drill of one target. Times in seconds."""

    target: str
    tier: str
    started_at: datetime
    point: str
    passed: bool = False
    phases: dict[str, float] = Field(default_factory=dict)
    rto_seconds: float = 0.0
    rto_objective_seconds: float = 0.0
    rpo_seconds: float | None = None  # see measure_rpo
    rpo_basis: str = ""  # how rpo_seconds was measured, in words
    rpo_objective_seconds: float = 0.0
    restore_gap_seconds: float | None = None  # latest restorable point - restored last commit
    row_counts: dict[str, dict[str, int]] = Field(default_factory=dict)
    failures: list[str] = Field(default_factory=list)
    restored_database: str = ""
    torn_down: bool = False
    # Backup freshness at the drill's start (restorekit.freshness): its lines, and whether the
    # tier's RPO was at risk (None: not checked). At risk fails the drill.
    freshness: list[str] = Field(default_factory=list)
    freshness_ok: bool | None = None
    # The worst-case RTO forecast (None: the provider restores by itself, nothing to forecast).
    rto_forecast: RtoForecast | None = None

    def to_markdown(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"# Restore drill: {self.target} ({self.tier}) {verdict}",
            "",
            f"**Started:** {self.started_at.isoformat()}  ",
            f"**Restore point:** {self.point}  ",
            f"**RTO:** {self.rto_seconds:.1f} s (objective {self.rto_objective_seconds:.0f} s)  ",
            f"**RPO:** {_fmt(self.rpo_seconds)} (objective {self.rpo_objective_seconds:.0f} s)"
            + (f": {self.rpo_basis}" if self.rpo_basis else "") + "  ",
            f"**Restored last commit behind the latest restorable point:** "
            f"{_fmt(self.restore_gap_seconds)}  ",
            f"**Scratch database torn down:** {'yes' if self.torn_down else 'NO'}",
            *([f"**{self.rto_forecast.headline()}**  "] if self.rto_forecast else []),
            "",
            "| phase | seconds |",
            "|---|---:|",
            *[f"| {k} | {v:.2f} |" for k, v in self.phases.items()],
        ]
        if self.rto_forecast:
            lines += ["", "## RTO forecast", ""]
            lines += [f"- {line}" for line in self.rto_forecast.lines()]
        if self.freshness:
            verdict = {True: "ok", False: "AT RISK", None: "not checked"}[self.freshness_ok]
            lines += ["", f"## Backup freshness: {verdict}", ""]
            lines += [f"- {line}" for line in self.freshness]
        if self.row_counts:
            lines += ["", "| table | production | restored |", "|---|---:|---:|"]
            lines += [f"| {t} | {c['production']} | {c['restored']} |"
                      for t, c in self.row_counts.items()]
        if self.failures:
            lines += ["", "## Failures", ""] + [f"- {f}" for f in self.failures]
        return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    # None: not measurable (e.g. no transaction was replayed after the base backup).
    return "n/a" if value is None else f"{value:.1f} s"


def choose_point(window: RestoreWindow, mode: str, *,
                 rng: random.Random | None = None) -> RestorePoint:
    """``latest``, or a random time inside the window (a drill of an arbitrary PITR target)."""
    if mode == "latest":
        return RestorePoint.latest()
    if mode != "random":
        from restorekit.errors import ConfigError

        raise ConfigError(f"drill point must be 'latest' or 'random', got {mode!r}")
    assert window.earliest is not None and window.latest is not None
    span = (window.latest - window.earliest).total_seconds()
    offset = (rng or random.Random()).uniform(0, max(span, 0))
    return RestorePoint.at(window.earliest + timedelta(seconds=offset))


_LAST_COMMIT = """
    SELECT CASE WHEN current_setting('track_commit_timestamp')::bool
                THEN (pg_last_committed_xact()).timestamp END
"""


def last_commit_time(production_dsn: str) -> datetime | None:
    """When production last committed a transaction, if PostgreSQL records commit times
    (``track_commit_timestamp = on``); None when it does not or cannot say."""
    try:
        with psycopg.connect(production_dsn, connect_timeout=10) as conn:
            row = conn.execute(_LAST_COMMIT).fetchone()
    except psycopg.Error:
        return None  # the RPO falls back to the age of the latest restorable point
    return row[0] if row else None


def measure_rpo(started_at: datetime, latest: datetime,
                last_commit: datetime | None) -> tuple[float, str]:
    """RPO as ``(seconds, basis)``: how much committed work a failure at ``started_at`` would
    lose. Without commit times it is the age of the latest restorable point, which overstates
    on an idle database (nothing new to archive, yet the point ages). When production's last
    commit is known and is not after the latest restorable point, nothing would be lost: 0."""
    age = max(0.0, (started_at - latest).total_seconds())
    if last_commit is None:
        return age, "age of the latest restorable point (commit times not tracked)"
    if last_commit <= latest:
        return 0.0, "every commit so far is restorable (last commit " \
                    f"{last_commit.isoformat()} <= latest restorable point)"
    return age, f"commits since the latest restorable point are not yet restorable " \
                f"(last commit {last_commit.isoformat()})"


def compare_row_counts(
    production_dsn: str, restored_dsn: str, tables: list[str], tolerance: float
) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Exact counts (one statement per table) on both sides; a difference beyond ``tolerance``
    (a fraction of production's count) is a failure."""
    counts: dict[str, dict[str, int]] = {}
    failures: list[str] = []
    with psycopg.connect(production_dsn) as prod, psycopg.connect(restored_dsn) as restored:
        for name in tables:
            ref = TableRef.parse(name)
            query = sql.SQL("SELECT count(*) FROM {}").format(ref.ident)
            p, r = _count(prod, query), _count(restored, query)
            counts[str(ref)] = {"production": p, "restored": r}
            if abs(p - r) > tolerance * max(p, 1):
                failures.append(f"{ref}: production {p} rows, restored {r} "
                                f"(more than {tolerance:.1%} apart)")
    return counts, failures


def _count(conn: psycopg.Connection[TupleRow], query: sql.Composed) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None  # count(*) always returns a row
    return int(row[0])


def judge(result: DrillResult) -> DrillResult:
    """Set ``passed`` from the failures so far and the objectives."""
    failures = list(result.failures)
    if result.rto_seconds > result.rto_objective_seconds:
        failures.append(f"RTO {result.rto_seconds:.0f} s exceeds the {result.tier} objective "
                        f"{result.rto_objective_seconds:.0f} s")
    forecast = result.rto_forecast
    if forecast is not None and forecast.within_objective is False:
        failures.append(f"{forecast.headline()}; {forecast.fix}")
    if result.rpo_seconds is not None and result.rpo_seconds > result.rpo_objective_seconds:
        failures.append(f"RPO {result.rpo_seconds:.0f} s exceeds the {result.tier} objective "
                        f"{result.rpo_objective_seconds:.0f} s (is WAL being archived?)")
    return result.model_copy(update={"failures": failures, "passed": not failures})


def history_path(state_dir: Path, target: str) -> Path:
    return state_dir.absolute() / "drills" / f"{target}.jsonl"


def record(state_dir: Path, result: DrillResult) -> list[dict[str, Any]]:
    """Append ``result`` to the target's drill history and return the history (oldest first)."""
    path = history_path(state_dir, result.target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(result.model_dump_json() + "\n")
    return load_history(state_dir, result.target)


def load_history(state_dir: Path, target: str) -> list[dict[str, Any]]:
    path = history_path(state_dir, target)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def history_rows(history: list[dict[str, Any]], limit: int = 52) -> list[dict[str, Any]]:
    """Rows for the drill-history table artifact: one per drill, newest last."""
    return [
        {
            "started_at": h["started_at"],
            "point": h["point"],
            "result": "pass" if h["passed"] else "FAIL",
            "rto_s": round(h["rto_seconds"], 1),
            "rpo_s": None if h.get("rpo_seconds") is None else round(h["rpo_seconds"], 1),
            "rto_forecast_s": _forecast_cell(h.get("rto_forecast")),
            "failures": "; ".join(h.get("failures", []))[:200],
        }
        for h in history[-limit:]
    ]


def _forecast_cell(forecast: dict[str, Any] | None) -> float | None:
    if not forecast or forecast.get("worst_case_seconds") is None:
        return None
    return round(float(forecast["worst_case_seconds"]), 1)


def now() -> datetime:
    return datetime.now(UTC)

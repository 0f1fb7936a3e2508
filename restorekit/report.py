"""The incident / drill report: what happened, when, and what changed.

Built step by step by a flow (each step appends to the timeline) and rendered as markdown for a
Prefect artifact and for the CLI. It holds no secrets: databases appear by display name only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Step(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    started_at: datetime
    seconds: float
    ok: bool = True
    detail: str = ""


class CheckRow(BaseModel):
    """One check in the report. ``unverified``: it ran with nothing to compare with (no
    baseline, production unreachable): neither a pass nor a failure (never ok, never critical;
    reports stored before the field existed load with it false)."""

    model_config = ConfigDict(frozen=True)
    name: str
    ok: bool
    critical: bool
    detail: str = ""
    unverified: bool = False

    @property
    def verdict(self) -> str:
        """``pass``, ``unverified``, ``FAIL`` (critical) or ``warn``."""
        if self.ok:
            return "pass"
        if self.unverified:
            return "unverified"
        return "FAIL" if self.critical else "warn"


class Change(BaseModel):
    """Rows written to one table. ``skipped``: restored rows not inserted because the key is
    live already. Left alone on purpose by scenario 2 (restorekit.recovery.TableOutcome):
    ``kept_newer`` rows whose current version committed after keep_rows_written_after,
    ``kept_deleted`` rows the audit log shows deleted after it, ``skipped_changed`` rows that
    changed while the repair ran."""

    model_config = ConfigDict(frozen=True)
    table: str
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    skipped: int = 0
    kept_newer: int = 0
    kept_deleted: int = 0
    skipped_changed: int = 0

    @property
    def left_alone(self) -> int:
        return self.kept_newer + self.kept_deleted + self.skipped_changed


class IncidentReport(BaseModel):
    """One run of a scenario flow or a drill."""

    scenario: str
    target: str
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    outcome: str = "running"  # running | succeeded | failed | dry-run
    dry_run: bool = False
    restore_point: str = ""
    #: How the restore point was found (restorekit.damage.FoundPoint.as_dict): by whom (audit
    #: log, WAL scan, bisection, operator), the xid, commit time and LSN, the evidence.
    point_found: dict[str, Any] = Field(default_factory=dict)
    recovered_to_time: datetime | None = None
    recovered_to_lsn: str | None = None
    restored_database: str = ""
    steps: list[Step] = Field(default_factory=list)
    checks: list[CheckRow] = Field(default_factory=list)
    snapshots: list[str] = Field(default_factory=list)
    changes: list[Change] = Field(default_factory=list)
    plan: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    error: str = ""
    # Scenario 1: whether the adopted production is backed up again (restorekit.production).
    protection: str = ""
    objectives: dict[str, float] = Field(default_factory=dict)  # rto_seconds, rpo_seconds

    def add_verification(self, summary: Any) -> None:
        """Add the checks of a verification summary (``checks``: CheckResult.to_dict() rows),
        keeping which ones were unverified."""
        for check in getattr(summary, "checks", None) or []:
            self.checks.append(CheckRow(
                name=check["name"], ok=bool(check["ok"]), critical=bool(check.get("critical")),
                detail=str(check.get("detail", "")), unverified=bool(check.get("unverified")),
            ))

    def add_health(self, health: Any) -> None:
        """Add the application health check (a restorekit.health.HealthReport, or None from a
        task that predates HealthReport.not_checked): pass when healthy, a warning when no
        endpoint was checked. An unhealthy application raises in the task, before this."""
        if health is None or not getattr(health, "checked", True):
            detail = (health.detail if health is not None
                      else "application health not checked: no health URL configured")
            self.checks.append(CheckRow(name="health", ok=False, critical=False, detail=detail))
            return
        self.checks.append(CheckRow(name="health", ok=bool(health.ok), critical=True,
                                    detail=f"{health.url}: {health.detail}"))

    @property
    def rto_seconds(self) -> float:
        """Achieved recovery time: from the start of the run to the end of the last step."""
        end = self.finished_at or datetime.now(UTC)
        return (end - self.started_at).total_seconds()

    @property
    def data_loss_window(self) -> timedelta | None:
        """Between the restored database's last commit and the requested point: what the
        restore could not bring back (the achieved RPO)."""
        if self.recovered_to_time is None:
            return None
        requested = _parse_time(self.restore_point) or self.started_at
        return max(requested - self.recovered_to_time, timedelta(0))

    def phase_seconds(self) -> dict[str, float]:
        return {s.name: round(s.seconds, 3) for s in self.steps}

    def to_json_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["rto_seconds"] = round(self.rto_seconds, 3)
        loss = self.data_loss_window
        data["data_loss_seconds"] = None if loss is None else loss.total_seconds()
        return data

    def to_markdown(self) -> str:
        lines = [
            f"# {self.scenario.replace('_', ' ').replace('-', ' ').title()}: {self.target}",
            "",
            f"**Outcome:** {self.outcome}"
            + (" (dry run: nothing was changed)" if self.dry_run else ""),
            f"**Started:** {self.started_at.isoformat()}  ",
            f"**Restore point:** {self.restore_point or 'n/a'}  ",
            f"**Achieved RTO:** {self.rto_seconds:.1f} s  ",
        ]
        lines += _point_found_lines(self.point_found)
        loss = self.data_loss_window
        if self.recovered_to_time is not None:
            lines.append(
                f"**Recovered to:** last commit {self.recovered_to_time.isoformat()}"
                f" (LSN {self.recovered_to_lsn}); data-loss window "
                f"{loss.total_seconds() if loss else 0:.1f} s  "
            )
        if self.restored_database:
            lines.append(f"**Restored database:** {self.restored_database}  ")
        if self.protection:
            lines.append(f"**{self.protection.replace(':', ':**', 1)}  ")
        if self.error:
            lines += ["", f"**Error:** {self.error}"]
        if self.plan:
            lines += ["", "## Plan", ""] + [f"{i}. {p}" for i, p in enumerate(self.plan, 1)]
        if self.steps:
            lines += ["", "## Timeline", "", "| step | started | seconds | result | detail |",
                      "|---|---|---:|---|---|"]
            for s in self.steps:
                lines.append(f"| {s.name} | {s.started_at.strftime('%H:%M:%S')} "
                             f"| {s.seconds:.2f} | {'ok' if s.ok else 'FAILED'} "
                             f"| {_cell(s.detail)} |")
        if self.checks:
            lines += ["", "## Checks", "", "| check | result | critical | detail |",
                      "|---|---|---|---|"]
            for c in self.checks:
                lines.append(f"| {c.name} | {c.verdict} | "
                             f"{'yes' if c.critical else 'no'} | {_cell(c.detail)} |")
        if self.changes:
            kept = any(ch.left_alone for ch in self.changes)
            lines += ["", "## What changed", "",
                      "| table | inserted | updated | deleted | skipped |"
                      + (" kept: written later | kept: deleted later | changed during repair |"
                         if kept else ""),
                      "|---|---:|---:|---:|---:|" + ("---:|---:|---:|" if kept else "")]
            for ch in self.changes:
                lines.append(f"| {ch.table} | {ch.inserted} | {ch.updated} | {ch.deleted} "
                             f"| {ch.skipped} |"
                             + (f" {ch.kept_newer} | {ch.kept_deleted} | {ch.skipped_changed} |"
                                if kept else ""))
        if self.snapshots:
            lines += ["", "## Snapshots taken before any change", ""]
            lines += [f"- {s}" for s in self.snapshots]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]


def _parse_time(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return value if value.tzinfo else None


def _point_found_lines(found: dict[str, Any]) -> list[str]:
    """The restore point's provenance: how it was found and the records that prove it."""
    if not found:
        return []
    what = found.get("what") or ""
    xid = f"transaction {found['xid']}" if found.get("xid") is not None else "the damage"
    lines = [f"**Point found by:** {found.get('found_by', 'operator')}"
             + (f": {xid} committed at {found.get('commit_time')}"
                f" (commit LSN {found.get('commit_lsn')}); {what}" if found.get("commit_time")
                or found.get("xid") is not None else (f"; {what}" if what else "")) + "  "]
    lines += [f"    {e}" for e in found.get("evidence") or []]
    lines += [f"*{n}*  " for n in found.get("notes") or []]
    return lines

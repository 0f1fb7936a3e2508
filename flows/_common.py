"""What every scenario flow shares: the step recorder, the approval gate, the report."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, Field

from restorekit.errors import RestoreKitError, SafetyError
from restorekit.pg.dsn import redact
from restorekit.report import Change, CheckRow, IncidentReport, Step
from tasks.reporting import notify, write_report

T = TypeVar("T")

#: How long a run waits for a human to approve a destructive step.
APPROVAL_TIMEOUT_SECONDS = 3600


class ScenarioParams(BaseModel):
    """Parameters every scenario takes (the Prefect UI shows them as a form)."""

    target: str = Field(description="Target name from restorekit.toml, e.g. 'production'.")
    restore_point: str = Field(
        default="latest",
        description="latest | ISO-8601 time WITH timezone (2026-11-25T13:05:00Z) | lsn:X/Y | "
        "xid:N | name:RESTORE_POINT | backup:BACKUP_ID",
    )
    incident_id: str | None = Field(
        default=None,
        description="Incident reference. A re-run with the same id reuses finished restores.",
    )
    dry_run: bool = Field(default=False, description="Print the plan and touch nothing.")
    require_approval: bool = Field(
        default=True,
        description="Pause before the first destructive step until someone approves the plan.",
    )
    config: str | None = Field(
        default=None, description="Path of restorekit.toml (default: $RESTOREKIT_CONFIG)."
    )
    lock_wait_seconds: float = Field(
        default=600, ge=0,
        description="How long to wait while another restorekit run holds this target before "
        "refusing (one restore per target at a time).",
    )


def target_lock_name(target: str) -> str:
    """The Prefect global concurrency limit that allows one restore per target at a time."""
    return f"restorekit-target-{target}"


@contextmanager
def one_run_per_target(target: str, wait_seconds: float) -> Iterator[None]:
    """Hold the target's slot for the whole run; wait up to ``wait_seconds``, then refuse."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists

    name = target_lock_name(target)
    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            pass
    try:
        ctx = concurrency(name, occupy=1, timeout_seconds=wait_seconds, strict=True)
        ctx.__enter__()
    except TimeoutError:
        raise SafetyError(
            f"another restorekit run is working on target {target!r} (concurrency limit "
            f"{name!r}); this run waited {wait_seconds:.0f} s and changed nothing. Wait for it "
            "to finish, or look at the running flow runs in the Prefect UI."
        ) from None
    try:
        yield
    finally:
        ctx.__exit__(None, None, None)


class Approval(RunInput):
    """Approve the plan shown in the run's 'restore-plan' artifact."""

    approve: bool = Field(description="Go ahead with the plan.")
    approved_by: str = Field(default="", description="Who approves (for the incident report).")


class Recorder:
    """Builds the incident report while the flow runs the steps."""

    def __init__(self, scenario: str, params: ScenarioParams) -> None:
        self.report = IncidentReport(scenario=scenario, target=params.target,
                                     restore_point=params.restore_point, dry_run=params.dry_run)
        self.params = params

    @property
    def incident_key(self) -> str:
        if self.params.incident_id:
            return self.params.incident_id
        ctx = FlowRunContext.get()
        return str(ctx.flow_run.id) if ctx and ctx.flow_run else datetime.now(UTC).strftime("%Y%m%d%H%M%S")

    def step(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one task as a named step of the timeline."""
        started_at = datetime.now(UTC)
        started = time.monotonic()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self.report.steps.append(Step(name=name, started_at=started_at,
                                          seconds=time.monotonic() - started, ok=False,
                                          detail=redact(str(exc))[:500]))
            raise
        self.report.steps.append(Step(name=name, started_at=started_at,
                                      seconds=time.monotonic() - started))
        return result

    def plan(self, lines: list[str]) -> None:
        self.report.plan = lines
        create_markdown_artifact(
            key="restore-plan",
            markdown="# Plan\n\n" + "\n".join(f"{i}. {line}" for i, line in enumerate(lines, 1)),
            description=f"{self.report.scenario} on {self.report.target}",
        )
        logger = get_run_logger()
        for i, line in enumerate(lines, 1):
            logger.info("plan %d. %s", i, line)

    def approve(self) -> None:
        """Wait for a human to approve the plan (only when require_approval is on)."""
        if not self.params.require_approval:
            return
        started = time.monotonic()
        answer = pause_flow_run(
            wait_for_input=Approval.with_initial_data(
                description="Approve the plan shown in the 'restore-plan' artifact:\n\n"
                + "\n".join(f"{i}. {p}" for i, p in enumerate(self.report.plan, 1)),
                approve=False,
            ),
            timeout=APPROVAL_TIMEOUT_SECONDS,
            poll_interval=2,  # an approval should take effect at once, not up to 10 s later
        )
        self.report.steps.append(Step(name="approval", started_at=datetime.now(UTC),
                                      seconds=time.monotonic() - started, ok=answer.approve,
                                      detail=f"by {answer.approved_by or 'unknown'}"))
        if not answer.approve:
            raise SafetyError("the plan was not approved; nothing was changed")

    def restored(self, restored: Any) -> None:
        """Record where a restore went and what it reached (a RestoredRef)."""
        self.report.restored_database = restored.display
        self.report.recovered_to_time = restored.recovered_to_time
        self.report.recovered_to_lsn = restored.recovered_to_lsn

    def add_checks(self, summary: Any) -> None:
        for check in getattr(summary, "checks", []) or []:
            self.report.checks.append(CheckRow(
                name=check["name"], ok=bool(check["ok"]), critical=bool(check.get("critical")),
                detail=str(check.get("detail", "")),
            ))

    def add_changes(self, result: dict[str, Any]) -> None:
        """Record a recovery's per-table counts (restorekit.recovery.RecoveryResult.to_dict)."""
        for t in result.get("tables") or []:
            self.report.changes.append(Change(
                table=t["table"], inserted=int(t.get("inserted", 0)),
                updated=int(t.get("updated", 0)), deleted=int(t.get("deleted", 0)),
                skipped=int(t.get("skipped_existing", 0)),
            ))

    @contextmanager
    def run(self, ref: Any) -> Iterator[IncidentReport]:
        """Hold the target for the run; notify at start and end; always write the report;
        re-raise failures."""
        with one_run_per_target(self.report.target, self.params.lock_wait_seconds):
            with self._reported(ref) as report:
                yield report

    @contextmanager
    def _reported(self, ref: Any) -> Iterator[IncidentReport]:
        notify(ref, f"restorekit: {self.report.scenario} on {self.report.target} started "
                    f"(point {self.report.restore_point}{', dry run' if self.params.dry_run else ''})")
        try:
            yield self.report
        except BaseException as exc:
            self.report.outcome = "failed"
            self.report.error = redact(f"{type(exc).__name__}: {exc}")
            if isinstance(exc, RestoreKitError) and hasattr(exc, "report"):
                self.add_checks(getattr(exc, "report"))
            self.report.finished_at = datetime.now(UTC)
            write_report(ref, self.report)
            notify(ref, f"restorekit: {self.report.scenario} on {self.report.target} FAILED: "
                        f"{self.report.error[:300]}")
            raise
        if self.report.outcome == "running":
            self.report.outcome = "succeeded"
        self.report.finished_at = datetime.now(UTC)
        write_report(ref, self.report)
        notify(ref, f"restorekit: {self.report.scenario} on {self.report.target} "
                    f"{self.report.outcome} in {self.report.rto_seconds:.0f} s")

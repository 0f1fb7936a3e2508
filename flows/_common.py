"""What every scenario flow shares: the step recorder, the approval gate, the report."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, Field

from restorekit.config import load_settings
from restorekit.errors import RestoreKitError, SafetyError
from restorekit.pg.dsn import redact
from restorekit.report import Change, CheckRow, IncidentReport, Step
from restorekit.runlock import HostLock
from tasks.reporting import notify, write_report

T = TypeVar("T")

#: How long a run waits for a human to approve a destructive step.
APPROVAL_TIMEOUT_SECONDS = 3600


class ScenarioParams(BaseModel):
    """Parameters every scenario takes (the Prefect UI shows them as a form)."""

    target: str = Field(description="Target name from restorekit.toml, e.g. 'production'.")
    restore_point: str = Field(
        default="latest",
        description="latest | auto (found from what was damaged: a WAL scan, or bisection on "
        "Neon) | ISO-8601 time WITH timezone (2026-11-25T13:05:00Z) | lsn:X/Y | xid:N | "
        "before-xid:N | name:RESTORE_POINT | backup:BACKUP_ID",
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
    where: str | None = Field(
        default=None,
        description="With restore_point auto: an SQL predicate that picks the damaged rows, "
        "evaluated read-only on a copy from before the damage (instead of ids).",
    )
    good_point: str | None = Field(
        default=None,
        description="With restore_point auto: a point surely before the damage, where the "
        "search starts (default: the newest base backup that still has the rows).",
    )


def target_lock_name(target: str) -> str:
    """The Prefect global concurrency limit that allows one restore per target at a time."""
    return f"restorekit-target-{target}"


#: How long the target's slot stays taken after its run stops renewing it (Prefect's default).
#: A run killed on THIS machine is detected at once through the host lock instead (see
#: restorekit.runlock); one killed elsewhere frees the slot when its lease expires.
LEASE_SECONDS = 300


def lock_dir(config: str | None) -> Path | None:
    """Where the host-local run locks live (``<state_dir>/locks``), or None without a usable
    config (such a run fails at preflight with the config error, having touched nothing)."""
    try:
        return load_settings(config).state_dir.absolute() / "locks"
    except RestoreKitError:
        return None


@contextmanager
def one_run_per_target(target: str, wait_seconds: float,
                       locks: Path | None = None) -> Iterator[dict[str, Any] | None]:
    """Hold the target's slot for the whole run; wait up to ``wait_seconds``, then refuse.

    The slot is a Prefect global concurrency limit held through a renewed lease. With ``locks``
    the run also holds a host lock (restorekit.runlock.HostLock) recording its pid, flow run and
    lease: when a run on this machine died without releasing (kill -9, OOM, power loss of the
    process), the next run finds that record under a free lock, releases the dead run's lease at
    once instead of waiting for it to expire, and marks the dead flow run Crashed in Prefect.

    Yields:
        The dead run's record when one was taken over, else None.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    # Prefect's public concurrency() does not yield the lease id the host lock must record.
    from tasks._prefect_shim import acquire_slot_lease, keep_lease

    name = target_lock_name(target)
    started = time.monotonic()

    def refused() -> SafetyError:
        return SafetyError(
            f"another restorekit run is working on target {target!r} (concurrency limit "
            f"{name!r}); this run waited {wait_seconds:.0f} s and changed nothing. Wait for it "
            "to finish, or look at the running flow runs in the Prefect UI (a run killed on "
            f"another machine frees the target when its lease expires, within {LEASE_SECONDS} s)."
        )

    with get_client(sync_client=True) as client:
        # Look first: creating one that exists makes the server log a constraint-violation
        # traceback on every run. Creating still tolerates losing a race with another run.
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass
    host = HostLock(locks / f"{name}.lock") if locks is not None else None
    try:
        left = host.acquire(wait_seconds) if host is not None else None
    except TimeoutError:
        raise refused() from None
    try:
        taken_over = _take_over(target, left) if left else None
        ctx = FlowRunContext.get()
        run_id = ctx.flow_run.id if ctx and ctx.flow_run else None
        try:
            lease_id = acquire_slot_lease(
                name, timeout_seconds=max(0.0, wait_seconds - (time.monotonic() - started)),
                lease_seconds=LEASE_SECONDS,
                holder=ConcurrencyLeaseHolder(type="flow_run", id=run_id) if run_id else None)
        except TimeoutError:
            raise refused() from None
        try:
            if host is not None:
                host.record(target=target, flow_run_id=str(run_id) if run_id else None,
                            lease_id=str(lease_id), since=datetime.now(UTC).isoformat())
            with keep_lease(lease_id, LEASE_SECONDS):
                yield taken_over
        finally:
            with get_client(sync_client=True) as client:
                client.release_concurrency_slots_with_lease(lease_id)
    finally:
        if host is not None:
            host.release()


def _take_over(target: str, left: dict[str, Any]) -> dict[str, Any] | None:
    """Free the slot a dead run on this machine left taken, and mark that run Crashed."""
    import socket
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    if left.get("host") not in (None, socket.gethostname()):
        return None  # a lock file shared across machines proves nothing about that process
    me = FlowRunContext.get()
    successor = str(me.flow_run.id) if me and me.flow_run else "a new run"
    with get_client(sync_client=True) as client:
        if left.get("lease_id"):
            client.release_concurrency_slots_with_lease(UUID(str(left["lease_id"])))
        if left.get("flow_run_id"):
            run = client.read_flow_run(UUID(str(left["flow_run_id"])))
            if run.state is not None and not run.state.is_final():
                client.set_flow_run_state(run.id, Crashed(message=(
                    f"the process running this flow (pid {left.get('pid')}) died without "
                    f"finishing (killed?) while it held target {target!r}; flow run {successor} "
                    "took the target over. See that run's report for what it found and did.")),
                    force=True)
    _log().warning("run %s (pid %s) died while holding target %r; its slot was released and the "
                   "run marked Crashed", left.get("flow_run_id"), left.get("pid"), target)
    return left


def _log() -> Any:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run
        import logging

        return logging.getLogger("restorekit.flows")


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
        if ctx and ctx.flow_run:
            return str(ctx.flow_run.id)
        return datetime.now(UTC).strftime("%Y%m%d%H%M%S")

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

    @staticmethod
    def sweep_line(stale: list[str]) -> list[str]:
        """The plan's line for the scratch restores earlier runs left behind (none: no line)."""
        if not stale:
            return []
        return [f"Discard {len(stale)} scratch restore(s) that earlier runs of other incidents "
                f"left behind ({', '.join(stale)}); restores adopted as production or in use by "
                "the application are never touched."]

    def restored(self, restored: Any) -> None:
        """Record where a restore went and what it reached (a RestoredRef)."""
        self.report.restored_database = restored.display
        self.report.recovered_to_time = restored.recovered_to_time
        self.report.recovered_to_lsn = restored.recovered_to_lsn
        access = getattr(restored, "access", "")
        if access and access not in self.report.notes:
            self.report.notes.append(access)

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
                kept_newer=int(t.get("kept_newer", 0)),
                kept_deleted=int(t.get("kept_deleted", 0)),
                skipped_changed=int(t.get("skipped_changed", 0)),
            ))

    @contextmanager
    def run(self, ref: Any) -> Iterator[IncidentReport]:
        """Hold the target for the run; notify at start and end; always write the report;
        re-raise failures."""
        with one_run_per_target(self.report.target, self.params.lock_wait_seconds,
                                lock_dir(ref.config)) as dead:
            with self._reported(ref) as report:
                if dead:
                    report.notes.append(
                        f"an earlier run (flow run {dead.get('flow_run_id')}, pid "
                        f"{dead.get('pid')}) died while holding this target (killed?); it is "
                        "marked Crashed in Prefect and this run took over. What it left behind: a "
                        "finished restore of the same incident is reused, an unfinished one is "
                        "redone, scratch restores of other incidents are swept.")
                yield report

    @contextmanager
    def _reported(self, ref: Any) -> Iterator[IncidentReport]:
        dry = ", dry run" if self.params.dry_run else ""
        notify(ref, f"restorekit: {self.report.scenario} on {self.report.target} started "
                    f"(point {self.report.restore_point}{dry})")
        try:
            yield self.report
        except BaseException as exc:
            self.report.outcome = "failed"
            self.report.error = redact(f"{type(exc).__name__}: {exc}")
            if isinstance(exc, RestoreKitError) and hasattr(exc, "report"):
                self.add_checks(getattr(exc, "report"))  # noqa: B009 - not on the base class
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

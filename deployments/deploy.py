"""Register every flow as a deployment against PREFECT_API_URL (`restorekit deploy`).

For each target in restorekit.toml: ``complete-failure/<target>``, ``partial-corruption/<target>``,
``accidental-deletion/<target>`` and ``backup/<target>``, with typed parameters (the UI shows a
form with the target's defaults; destructive scenarios require approval by default), plus
``restore-drill/weekly`` on the configured cron schedule. ``backup/<target>`` runs on the
target's ``[backups]`` cron (daily by default) and applies retention after each backup;
``backup-freshness/<target>`` checks the newest backup and archived WAL against the tier's RPO
several times per RPO (:func:`freshness_cron`); ``post-restore-watch/<target>`` (no schedule)
is what the scenarios start after they changed production. All run on a process work pool
(``restorekit``), served by ``prefect worker start --pool restorekit`` on a single machine.
Flows are referenced by module path (they are installed with restorekit), so no image or
remote storage is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, WorkPoolCreate
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.exceptions import ObjectAlreadyExists
from prefect.schedules import Cron

from flows._common import target_lock_name
from flows.accidental_deletion import accidental_deletion
from flows.backup import backup
from flows.backup_freshness import backup_freshness
from flows.complete_failure import complete_failure
from flows.partial_corruption import partial_corruption
from flows.post_restore_watch import post_restore_watch
from flows.restore_drill import restore_drill
from restorekit.config import Settings

WORK_POOL = "restorekit"
SCENARIOS = (
    (complete_failure, "Scenario 1: restore into a new database and switch the app over."),
    (partial_corruption, "Scenario 2: repair corrupted rows from a copy before the corruption."),
    (accidental_deletion, "Scenario 3: bring back deleted rows and their cascades."),
)


@dataclass(frozen=True)
class Planned:
    name: str
    schedule: str
    parameters: dict[str, Any]


def freshness_cron(rpo: timedelta) -> str:
    """How often the freshness check runs: about three times per RPO, every 5 to 60 minutes
    (critical, 15 min RPO: every 5 min; standard, 1 h: every 20 min; non-critical: hourly)."""
    every = max((m for m in (5, 10, 15, 20, 30) if m <= rpo.total_seconds() / 180), default=5)
    return "0 * * * *" if rpo >= timedelta(hours=3) else f"*/{every} * * * *"


def build_deployments(settings: Settings, config_path: str) -> list[RunnerDeployment]:
    deployments: list[RunnerDeployment] = []
    for target in sorted(settings.targets):
        base = {"target": target, "config": config_path}
        for flow_obj, description in SCENARIOS:
            deployments.append(flow_obj.to_deployment(
                name=target, description=description, tags=["restorekit", target],
                parameters={"params": {**base, "require_approval": True}},
                entrypoint_type=EntrypointType.MODULE_PATH,
            ))
        policy = settings.targets[target].backups
        deployments.append(backup.to_deployment(
            name=target, tags=["restorekit", target],
            description="Scheduled base backup with retention; also the manual backup before "
                        "major deployments (call it from CI).",
            parameters={"params": base}, entrypoint_type=EntrypointType.MODULE_PATH,
            schedules=[Cron(policy.cron, timezone=policy.timezone)],
        ))
        _, rpo = settings.objectives(settings.targets[target].tier)
        deployments.append(backup_freshness.to_deployment(
            name=target, tags=["restorekit", target],
            description="Is the RPO at risk? Newest backup and archived WAL age, archiver "
                        "failures; fails (and notifies) when at risk.",
            parameters={"params": {"targets": [target], "config": config_path}},
            schedules=[Cron(freshness_cron(rpo), timezone="UTC")],
            entrypoint_type=EntrypointType.MODULE_PATH,
        ))
        # Started by the scenarios (tasks.watch.start_post_restore_watch), or by hand.
        deployments.append(post_restore_watch.to_deployment(
            name=target, tags=["restorekit", target],
            description="After a restore: watch health, latency, row counts and integrity for "
                        "[targets.X.watch] window_minutes, alerting when a limit is crossed.",
            parameters={"params": base}, entrypoint_type=EntrypointType.MODULE_PATH,
        ))
    drill = settings.drill
    deployments.append(restore_drill.to_deployment(
        name="weekly", tags=["restorekit", "drill"],
        description="Weekly restore drill of every target: RTO and RPO against the tiers.",
        parameters={"params": {"config": config_path, "point": drill.point,
                               "row_count_tolerance": drill.row_count_tolerance}},
        schedules=[Cron(drill.cron, timezone=drill.timezone)],
        entrypoint_type=EntrypointType.MODULE_PATH,
    ))
    return deployments


AUTOMATION = "restorekit: failed runs"


def ensure_failure_automation(settings: Settings) -> str:
    """A Prefect automation that notifies when any restorekit flow run fails (tag restorekit).

    It needs a notification block to send through (``[notify] prefect_blocks``); without one
    there is nothing to notify and none is created. Returns what was done.
    """
    if not settings.notify.prefect_blocks:
        return "no Prefect notification block configured ([notify] prefect_blocks): skipped"
    from prefect.automations import Automation
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    # "block-type-slug/block-name" (validated by the config): the action needs the document id.
    block_type, _, block_name = settings.notify.prefect_blocks[0].partition("/")
    with get_client(sync_client=True) as client:
        block_id = client.read_block_document_by_name(block_name, block_type,
                                                      include_secrets=False).id
        for existing in client.read_automations_by_name(AUTOMATION):
            client.delete_automation(existing.id)
    Automation(
        name=AUTOMATION,
        description="Notify when a restorekit flow run (scenario, drill, backup) fails.",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match_related={"prefect.resource.id": "prefect.tag.restorekit",
                           "prefect.resource.role": "tag"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[SendNotification(
            block_document_id=block_id,
            subject="restorekit: {{ flow.name }} failed",
            body="Flow run {{ flow_run.name }} of {{ flow.name }} ended {{ flow_run.state.name }}: "
                 "{{ flow_run.state.message }}",
        )],
    ).create()
    return f"automation {AUTOMATION!r} notifies through block {settings.notify.prefect_blocks[0]!r}"


ZOMBIE_AUTOMATION = "restorekit: unresponsive runs"


def ensure_zombie_automation(within: timedelta | None = None) -> str:
    """A Prefect automation that marks a restorekit flow run Crashed once its heartbeats stop.

    A run whose machine died stays Running for ever otherwise, and its target lock is held until
    the lease expires (a run on the same machine takes the lock over at once; runlock.py).
    Prefect's own recipe (docs: "detect zombie flows"): a proactive trigger on a run's heartbeat
    not followed by another heartbeat or a final state ``within`` three heartbeat periods.
    """
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification
    from prefect.settings import get_current_settings

    every = get_current_settings().flows.heartbeat_frequency
    if within is None:
        if every is None:
            return "flow run heartbeats are off (PREFECT_FLOWS_HEARTBEAT_FREQUENCY): skipped"
        within = timedelta(seconds=3 * every)
    with get_client(sync_client=True) as client:
        for existing in client.read_automations_by_name(ZOMBIE_AUTOMATION):
            client.delete_automation(existing.id)
    Automation(
        name=ZOMBIE_AUTOMATION,
        description="Mark a restorekit flow run Crashed when its heartbeats stop (its machine or "
                    "process died), so the run does not look alive for ever.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed",
                    "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
                    "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related={"prefect.resource.id": "prefect.tag.restorekit",
                           "prefect.resource.role": "tag"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=within,
        ),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message=f"no heartbeat for {within.total_seconds():.0f}s: the process running this "
                    "flow died. Re-run it; finished restores are reused.",
        )],
    ).create()
    return (f"automation {ZOMBIE_AUTOMATION!r} marks runs Crashed after "
            f"{within.total_seconds():.0f}s without a heartbeat")


def deploy_all(settings: Settings, config_path: str) -> list[Planned]:
    """Create the work pool, the per-target concurrency limits and every deployment."""
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
        except ObjectAlreadyExists:
            pass
        for target in settings.targets:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=target_lock_name(target), limit=1))
            except ObjectAlreadyExists:
                pass
    planned = [Planned("automation", ensure_failure_automation(settings), {}),
               Planned("automation", ensure_zombie_automation(), {})]
    for deployment in build_deployments(settings, config_path):
        deployment.apply(work_pool_name=WORK_POOL)
        schedule = ", ".join(
            f"{s.schedule.cron} ({s.schedule.timezone})" for s in (deployment.schedules or [])
        )
        planned.append(Planned(f"{deployment.flow_name}/{deployment.name}", schedule,
                               deployment.parameters))
    return planned

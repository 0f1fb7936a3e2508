"""Register every flow as a deployment against PREFECT_API_URL (`restorekit deploy`).

For each target in restorekit.toml: ``complete-failure/<target>``, ``partial-corruption/<target>``,
``accidental-deletion/<target>`` and ``backup/<target>``, with typed parameters (the UI shows a
form with the target's defaults; destructive scenarios require approval by default), plus
``restore-drill/weekly`` on the configured cron schedule. All run on a process work pool
(``restorekit``), served by ``prefect worker start --pool restorekit`` on a single machine.
Flows are referenced by module path (they are installed with restorekit), so no image or
remote storage is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, WorkPoolCreate
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.exceptions import ObjectAlreadyExists
from prefect.schedules import Cron

from flows._common import target_lock_name
from flows.accidental_deletion import accidental_deletion
from flows.backup import backup
from flows.complete_failure import complete_failure
from flows.partial_corruption import partial_corruption
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
        deployments.append(backup.to_deployment(
            name=target, tags=["restorekit", target],
            description="The manual backup before major deployments (call it from CI).",
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
    from prefect.blocks.core import Block
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    block = Block.load(settings.notify.prefect_blocks[0])
    with get_client(sync_client=True) as client:
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
            block_document_id=block._block_document_id,
            subject="restorekit: {{ flow.name }} failed",
            body="Flow run {{ flow_run.name }} of {{ flow.name }} ended {{ flow_run.state.name }}: "
                 "{{ flow_run.state.message }}",
        )],
    ).create()
    return f"automation {AUTOMATION!r} notifies through block {settings.notify.prefect_blocks[0]!r}"


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
    planned = [Planned("automation", ensure_failure_automation(settings), {})]
    for deployment in build_deployments(settings, config_path):
        deployment.apply(work_pool_name=WORK_POOL)
        schedule = ", ".join(
            f"{s.schedule.cron} ({s.schedule.timezone})" for s in (deployment.schedules or [])
        )
        planned.append(Planned(f"{deployment.flow_name}/{deployment.name}", schedule,
                               deployment.parameters))
    return planned

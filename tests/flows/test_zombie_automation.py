"""The automation `restorekit deploy` creates for runs whose process died: on a real Prefect
server, a restorekit run whose heartbeats stop is marked Crashed; one that finished is left."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from deployments.deploy import ZOMBIE_AUTOMATION, ensure_zombie_automation

pytestmark = pytest.mark.slow


def _heartbeat(api: httpx.Client, run_id: str, tags: list[str]) -> None:
    """The event Prefect's flow engine emits every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds."""
    event = {
        "id": str(uuid.uuid4()), "occurred": datetime.now(UTC).isoformat(),
        "event": "prefect.flow-run.heartbeat",
        "resource": {"prefect.resource.id": f"prefect.flow-run.{run_id}"},
        "related": [{"prefect.resource.id": f"prefect.tag.{t}", "prefect.resource.role": "tag"}
                    for t in tags],
    }
    assert api.post("/events", json=[event]).status_code == 204


def _run(api: httpx.Client, tags: list[str]) -> str:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    @flow(name="zombie-candidate")
    def candidate() -> None:  # never called: only its run record matters
        pass

    with get_client(sync_client=True) as client:
        return str(client.create_flow_run(candidate, tags=tags, state=Running()).id)


def _state(api: httpx.Client, run_id: str) -> str:
    return str(api.get(f"/flow_runs/{run_id}").json()["state_type"])


def test_a_run_whose_heartbeats_stop_is_marked_crashed(prefect_server: str) -> None:
    planned = ensure_zombie_automation(within=timedelta(seconds=10))
    assert "10s without a heartbeat" in planned
    with httpx.Client(base_url=prefect_server.rstrip("/"), timeout=30) as api:
        (automation,) = api.post("/automations/filter", json={
            "automations": {"name": {"any_": [ZOMBIE_AUTOMATION]}}}).json()
        assert automation["trigger"]["posture"] == "Proactive"
        assert automation["actions"][0]["type"] == "change-flow-run-state"
        dead = _run(api, ["restorekit", "production"])
        other = _run(api, ["not-ours"])  # another team's run on the same server: left alone
        for run in (dead, other):
            _heartbeat(api, run, ["restorekit", "production"] if run == dead else ["not-ours"])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _state(api, dead) != "CRASHED":
            time.sleep(1)
        assert _state(api, dead) == "CRASHED"
        message = api.get(f"/flow_runs/{dead}").json()["state"]["message"]
        assert "no heartbeat for 10s" in message
        assert _state(api, other) == "RUNNING"

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


def _finished_flow_run() -> str:
    """A real flow run, tagged as restorekit's are, in a process that imported the tasks (so
    with restorekit's prompt heartbeats, tasks._runtime): it runs to Completed."""
    from prefect import flow, tags
    from prefect.runtime import flow_run

    import tasks._runtime  # noqa: F401 - what every flow process imports

    @flow(name="zombie-survivor")
    def survivor() -> str:
        return str(flow_run.id)

    with tags("restorekit", "production"):
        return survivor()


def _heartbeats_of(api: httpx.Client, run_id: str) -> list[dict[str, object]]:
    deadline = time.monotonic() + 30
    while True:
        found = api.post("/events/filter", json={"filter": {
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "resource": {"id": [f"prefect.flow-run.{run_id}"]}}}).json()["events"]
        if found or time.monotonic() > deadline:
            return list(found)
        time.sleep(0.5)


def test_a_run_whose_heartbeats_stop_is_marked_crashed(prefect_server: str) -> None:
    planned = ensure_zombie_automation(within=timedelta(seconds=10))
    assert "10s without a heartbeat" in planned
    finished = _finished_flow_run()
    with httpx.Client(base_url=prefect_server.rstrip("/"), timeout=30) as api:
        # The real run's own heartbeat reached the server with the tag the automation matches.
        (beat, *_) = _heartbeats_of(api, finished)
        related = {r["prefect.resource.id"] for r in beat["related"]}  # type: ignore[attr-defined]
        assert "prefect.tag.restorekit" in related
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
        # The finished run's heartbeat came before the dead run's, so its window has passed
        # too: a run that ended is left Completed (no heartbeat after its final state).
        assert _state(api, finished) == "COMPLETED"

"""Deployments against a real Prefect server: forms, schedule, pool, and a run created through
the REST API (as incident tooling does) executed by a real worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fixtures.prefect import sent_until_not_busy

from deployments.deploy import WORK_POOL, deploy_all, target_lock_name
from restorekit.config import load_settings

pytestmark = pytest.mark.slow

DEPLOYED = {
    "complete-failure/production", "partial-corruption/production",
    "accidental-deletion/production", "backup/production", "restore-drill/weekly",
    "backup-freshness/production", "post-restore-watch/production",
}


@pytest.fixture
def deployments_removed_after(prefect_server: str):
    """The session's Prefect server serves every test file on this worker: what is deployed
    here goes away afterwards (with post-restore-watch/production left behind, a later scenario
    test on this worker would see its watch start where it expects "not started")."""
    yield
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for name in DEPLOYED:
            try:
                client.delete_deployment(client.read_deployment_by_name(name).id)
            except ObjectNotFound:
                pass


def post(client: httpx.Client, url: str, body: dict) -> httpx.Response:
    """POST as incident tooling should: a 503 is Prefect saying "retry" (its SQLite database was
    busy; seen once with three test workers), and these calls are idempotent."""
    return sent_until_not_busy(lambda: client.post(url, json=body),
                               lambda response: response.status_code == 503,
                               waits=(0.5, 1, 2, 4, 8))


def test_deployments_have_forms_schedules_and_a_rest_run_executes_on_a_worker(
    prefect_server: str, world, deployments_removed_after: None
) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client

    from deployments.deploy import AUTOMATION

    block_id = CustomWebhookNotificationBlock(
        name="restorekit-test", url="http://127.0.0.1:9/hook", json_data={"text": "{{body}}"},
    ).save("restorekit-test", overwrite=True)
    config = world.config.parent / "restorekit-deploy.toml"
    config.write_text(world.config.read_text()
                      + '\n[notify]\nprefect_blocks = ["custom-webhook/restorekit-test"]\n')
    settings = load_settings(config)
    planned = deploy_all(settings, str(world.config))
    with get_client(sync_client=True) as prefect:
        (automation,) = prefect.read_automations_by_name(AUTOMATION)
    assert automation.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert automation.actions[0].type == "send-notification"
    assert automation.actions[0].block_document_id == block_id  # the block named in [notify]
    names = {p.name for p in planned} - {"automation"}
    assert names == DEPLOYED
    api = prefect_server.rstrip("/")
    with httpx.Client(base_url=api, timeout=30) as client:
        drill = client.get("/deployments/name/restore-drill/weekly").json()
        assert drill["work_pool_name"] == WORK_POOL
        assert [s["schedule"]["cron"] for s in drill["schedules"]] == ["0 3 * * 1"]
        assert drill["schedules"][0]["schedule"]["timezone"] == "UTC"
        # The [backups] policy's default: a daily base backup; freshness three times per RPO
        # (the world's tier is critical: 15 min).
        scheduled = client.get("/deployments/name/backup/production").json()
        assert [s["schedule"]["cron"] for s in scheduled["schedules"]] == ["0 2 * * *"]
        assert scheduled["schedules"][0]["active"] is True
        fresh = client.get("/deployments/name/backup-freshness/production").json()
        assert [s["schedule"]["cron"] for s in fresh["schedules"]] == ["*/5 * * * *"]
        assert fresh["parameters"]["params"]["targets"] == ["production"]
        assert fresh["work_pool_name"] == WORK_POOL
        cf = client.get("/deployments/name/complete-failure/production").json()
        schema = cf["parameter_openapi_schema"]
        form = schema["definitions"]["CompleteFailureParams"]["properties"]
        fields = {"target", "restore_point", "dry_run", "require_approval", "incident_id"}
        assert fields <= set(form)
        assert cf["parameters"]["params"]["require_approval"] is True
        assert cf["parameters"]["params"]["target"] == "production"
        limits = client.post("/v2/concurrency_limits/filter", json={}).json()
        assert target_lock_name("production") in {c["name"] for c in limits}

        # Incident tooling's call: create a run of the backup deployment over REST.
        dep = client.get("/deployments/name/backup/production").json()
        created = post(client, f"/deployments/{dep['id']}/create_flow_run", {
            "parameters": {"params": {"target": "production", "config": str(world.config),
                                      "label": "from REST"}},
            "idempotency_key": "test-rest-1",
        })
        assert created.status_code == 201
        again = post(client, f"/deployments/{dep['id']}/create_flow_run", {
            "parameters": {}, "idempotency_key": "test-rest-1"})
        assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
        run_id = created.json()["id"]

        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", WORK_POOL,
             "--type", "process", "--run-once"],
            env={**os.environ, "PREFECT_API_URL": prefect_server}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        try:
            deadline = time.monotonic() + 180
            state = None
            while time.monotonic() < deadline:
                state = client.get(f"/flow_runs/{run_id}").json()["state_type"]
                if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                    break
                time.sleep(1)
        finally:
            worker.terminate()
            output = worker.communicate(timeout=30)[0]
        assert state == "COMPLETED", output[-3000:]
    backups = world.runtime().provider.list_backups()
    assert any(b.label == "from REST" for b in backups)
    assert len(backups) >= 2  # the run applied retention, which keeps young backups

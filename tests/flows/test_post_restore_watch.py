"""The post-restore watch against the production-shaped world: quiet when healthy, one alert on a
latency spike and one on a row-count drop, and how a scenario starts it."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from uuid import UUID

import httpx
import psycopg
import pytest
from fixtures.webhook import slack_webhook
from prefect import flow

from flows.post_restore_watch import PostRestoreWatchParams, post_restore_watch
from restorekit.watch import WatchBreached
from tasks._runtime import TargetRef
from tasks.watch import start_post_restore_watch

pytestmark = pytest.mark.slow


def serve(handler: type[BaseHTTPRequestHandler]):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def alerts(monkeypatch):
    """The texts a Slack-compatible webhook on loopback is sent ($WATCH_TEST_WEBHOOK)."""
    with slack_webhook(monkeypatch, "WATCH_TEST_WEBHOOK") as received:
        yield received


def watch_config(world, tmp_path: Path, *, health_url: str | None = None, **limits: float) -> str:
    """The world's config with a [watch] section, a webhook, and optionally another health URL
    (state_dir is absolute: the world's baseline is the one compared with)."""
    text = world.config.read_text()
    if health_url:
        text = text.replace("[targets.production.app]\n",
                            f'[targets.production.app]\nhealth_url = "{health_url}"\n', 1)
    text += "\n[targets.production.watch]\n" + "".join(f"{k} = {v}\n" for k, v in limits.items())
    text += '\n[notify]\nwebhook_url_env = "WATCH_TEST_WEBHOOK"\n'
    path = tmp_path / "restorekit.toml"
    path.write_text(text)
    return str(path)


def params(config: str, seconds: float) -> PostRestoreWatchParams:
    return PostRestoreWatchParams(target="production", config=config,
                                  window_minutes=seconds / 60, interval_seconds=0.5)


def breach_alerts(texts: list[str]) -> list[str]:
    return [t for t in texts if "post-restore watch of production: " in t]


def test_a_healthy_production_stays_quiet_and_the_samples_are_published(
    prefect_server: str, world, alerts: list[str], tmp_path: Path
) -> None:
    started = time.monotonic()
    state = post_restore_watch(params(watch_config(world, tmp_path), 2.5), return_state=True)
    took = time.monotonic() - started
    report = state.result()
    assert report.quiet, report.breaches
    assert len(report.samples) == 6
    baseline = json.loads((world.runtime().settings.state_dir / "baselines"
                           / "production.json").read_text())["exact_counts"]
    for s in report.samples:
        assert s.health_ok and s.db_ok and s.health_ms and s.db_ms, s
        assert s.row_counts == baseline
    assert [s.integrity_checked for s in report.samples] == [True, False, False, False, False,
                                                               True]
    assert all(not s.integrity_failures for s in report.samples)
    assert breach_alerts(alerts) == []
    assert any("watch of production started" in t for t in alerts)
    assert any("watch of production ended quiet: 6 samples" in t for t in alerts)
    # (the sync client's read_artifacts sends nulls this server refuses: ask over REST)
    artifacts = httpx.post(f"{prefect_server.rstrip('/')}/artifacts/filter", json={
        "artifacts": {"flow_run_id": {"any_": [str(state.state_details.flow_run_id)]}}},
        timeout=30).json()
    kinds = {a["type"]: a for a in artifacts}
    assert set(kinds) == {"table", "markdown"}
    table = kinds["table"]["data"]
    rows = json.loads(table) if isinstance(table, str) else table
    assert len(rows) == 6 and rows[0]["health"] == "ok" and rows[0]["rows:public.users"] > 0
    assert kinds["table"]["key"] == "post-restore-watch-samples-production"
    assert "quiet" in kinds["markdown"]["data"] and "Health latency" in kinds["markdown"]["data"]
    print(f"quiet watch of 2.5 s took {took:.1f} s")


def test_a_latency_spike_alerts_once(
    prefect_server: str, world, alerts: list[str], tmp_path: Path
) -> None:
    answered: list[float] = []

    class SlowHealth(BaseHTTPRequestHandler):
        """The app's health endpoint, answering slowly from its third request on."""

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            answered.append(time.monotonic())
            if len(answered) > 2:
                time.sleep(0.4)
            body = json.dumps({"ok": True, "database": {"connected": True, "latency": "2ms"}})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = serve(SlowHealth)
    try:
        config = watch_config(world, tmp_path,
                              health_url=f"http://127.0.0.1:{server.server_port}/api/health",
                              max_health_latency_ms=200, sustained_samples=2)
        with pytest.raises(WatchBreached, match="health_latency") as raised:
            post_restore_watch(params(config, 3))
    finally:
        server.shutdown()
    report = raised.value.report
    assert [(b.kind, b.sample) for b in report.breaches] == [("health_latency", 3)]
    assert len(report.samples) >= 5 and all(s.health_ms > 200 for s in report.samples[2:])
    (alert,) = breach_alerts(alerts)
    assert "health_latency" in alert and "(limit 200 ms) on 2 samples in a row" in alert
    assert any("ended: 1 breach(es)" in t for t in alerts)


def test_restorekit_watch_runs_it_from_the_command_line(
    prefect_server: str, world, alerts: list[str], tmp_path: Path, capsys
) -> None:
    from restorekit import cli

    config = watch_config(world, tmp_path)
    cli.app(["watch", "-t", "production", "-c", config, "--window-minutes", "0.02",
             "--interval-seconds", "0.4", "--json"], standalone_mode=False)
    report = json.loads(capsys.readouterr().out)
    assert report["target"] == "production" and report["breaches"] == []
    assert len(report["samples"]) == 4  # at 0, 0.4, 0.8 and 1.2 s
    assert breach_alerts(alerts) == []


def test_a_row_count_drop_mid_watch_alerts_once(
    prefect_server: str, world, alerts: list[str], tmp_path: Path
) -> None:
    with psycopg.connect(world.app_dsn) as conn:
        (before,) = conn.execute("SELECT count(*) FROM appointments").fetchone()

    def delete_a_third() -> None:
        with psycopg.connect(world.app_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE watch_test_saved AS "
                         "SELECT * FROM appointments WHERE id % 3 = 0")
            conn.execute("DELETE FROM appointments WHERE id % 3 = 0")

    timer = threading.Timer(1.2, delete_a_third)
    timer.start()
    try:
        with pytest.raises(WatchBreached, match="row_count_drop") as raised:
            post_restore_watch(params(watch_config(world, tmp_path), 3))
    finally:
        timer.join()
        with psycopg.connect(world.app_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO appointments SELECT * FROM watch_test_saved")
            conn.execute("DROP TABLE watch_test_saved")
    report = raised.value.report
    (breach,) = report.breaches
    assert breach.kind == "row_count_drop" and breach.subject == "public.appointments"
    # Where the drop shows depends on how fast the flow starts (under load, after the delete):
    # the breach is at the first sample that saw it, and it is alerted once although the
    # later samples saw it too.
    seen = [s.row_counts["public.appointments"] for s in report.samples]
    drops = [i for i, count in enumerate(seen) if count < before]
    assert drops and breach.sample == drops[0], seen
    assert set(seen[:drops[0]]) <= {before}, seen
    assert len(drops) >= 2, seen
    (alert,) = breach_alerts(alerts)
    assert "public.appointments has" in alert and "fewer than the baseline" in alert


def test_a_scenario_starts_the_watch_as_its_own_run_or_says_how(
    prefect_server: str, world
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments.runner import EntrypointType

    config = str(world.config)

    @flow
    def scenario() -> str:
        return start_post_restore_watch(TargetRef(target="production", config=config),
                                        "complete-failure test-incident")

    note = scenario()
    assert "post-restore watch not started: no deployment post-restore-watch/production" in note
    assert f"restorekit watch -t production -c {config}" in note

    deployment_id = post_restore_watch.to_deployment(
        name="production", parameters={"params": {"target": "production", "config": config}},
        entrypoint_type=EntrypointType.MODULE_PATH).apply()
    try:
        started = time.monotonic()
        note = scenario()
        assert time.monotonic() - started < 15  # it does not wait for the window
        assert note.startswith("post-restore watch started: flow run ")
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(re.search(r"\(([0-9a-f-]{36})\)", note)[1]))
            assert run.deployment_id == deployment_id
            assert run.parameters["params"] == {
                "target": "production", "config": config,
                "started_by": "complete-failure test-incident"}
            assert run.state is not None and run.state.is_scheduled()
            client.delete_flow_run(run.id)
    finally:
        with get_client(sync_client=True) as client:
            client.delete_deployment(deployment_id)

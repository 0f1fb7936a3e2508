"""The restore drill and the manual backup flow, against real clusters and a real Prefect server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fixtures.webhook import slack_webhook

from flows.backup import BackupParams, backup
from flows.restore_drill import DrillFailed, RestoreDrillParams, restore_drill
from restorekit import drill

pytestmark = pytest.mark.slow


@pytest.fixture
def webhook_receiver(monkeypatch):
    """The texts a Slack-compatible webhook on loopback is sent ($DRILL_TEST_WEBHOOK)."""
    with slack_webhook(monkeypatch, "DRILL_TEST_WEBHOOK") as received:
        yield received


def scratch_dirs(world) -> list[Path]:
    root = world.runtime().provider.restore_root
    return list(root.iterdir()) if root.exists() else []


def test_backup_flow_then_a_drill_passes_records_rto_rpo_and_leaves_nothing(
    prefect_server: str, world
) -> None:
    taken = backup(BackupParams(target="production", config=str(world.config),
                                label="before migration 42"))
    assert taken["label"] == "before migration 42"
    world.wait_archived()

    results = restore_drill(RestoreDrillParams(config=str(world.config)))

    (result,) = results
    assert result.passed, result.failures
    assert result.torn_down and scratch_dirs(world) == []
    assert {"base restore", "wal replay", "verification"} <= set(result.phases)
    assert 0 < result.rto_seconds < result.rto_objective_seconds == 3600
    assert result.rpo_seconds is not None and result.rpo_seconds < 900
    assert result.rpo_basis  # says whether commit times were known
    users = result.row_counts["public.users"]
    assert users["production"] == users["restored"]
    history = drill.load_history(world.runtime().settings.state_dir, "production")
    assert history[-1]["passed"] is True
    # The worst-case RTO forecast, with numbers, in the report and in the drill history.
    assert "health" in result.phases
    forecast = result.rto_forecast
    assert forecast is not None and forecast.objective_seconds == 3600
    assert forecast.base_restore_seconds == pytest.approx(result.phases["base restore"], abs=1e-3)
    assert forecast.interval_seconds == 24 * 3600  # the backups' default cron, daily
    assert re.search(r"\*\*RTO forecast: worst case (at least )?\d+(\.\d+)? (s|min|h)"
                     r"( \(WAL replay not forecast yet\))?, objective 60 min\*\*",
                     result.to_markdown()), result.to_markdown()
    assert "## RTO forecast" in result.to_markdown()
    assert history[-1]["rto_forecast"]["objective_seconds"] == 3600
    assert "rto_forecast_s" in drill.history_rows(history)[-1]


def test_a_drill_that_fails_verification_still_tears_down_and_notifies(
    prefect_server: str, world, webhook_receiver, tmp_path: Path
) -> None:
    # The same installation, with a custom check that cannot pass and a notification webhook.
    text = world.config.read_text().replace(
        'critical_tables = ["users", "clients", "appointments"]',
        'critical_tables = ["users", "clients", "appointments"]\n'
    ) + '''
[[targets.production.verify.checks]]
name = "impossible"
sql = "SELECT 1"
expect = "zero_rows"

[notify]
webhook_url_env = "DRILL_TEST_WEBHOOK"
'''
    config = tmp_path / "restorekit.toml"
    config.write_text(text)
    with pytest.raises(DrillFailed, match="impossible"):
        restore_drill(RestoreDrillParams(config=str(config), point="random", seed=7))
    assert scratch_dirs(world) == []
    texts = webhook_receiver
    assert any("drill of production started" in t for t in texts)
    assert any("drill of production FAILED" in t and "impossible" in t for t in texts)
    history = drill.load_history(world.runtime().settings.state_dir, "production")
    assert history[-1]["passed"] is False and history[-1]["torn_down"] is True

"""After scenario 1 the adopted cluster is production and is protected again (issue 12, part 1).

The new production archives into the same repository on its new timeline and has a first base
backup; the restore window continues across the incident (a point before it restores from the
old backups, a point after it from the new one); `restorekit window`/`backups` show the history;
a drill right after the incident passes against the new production. Native engine, on its own
installation (scram-sha-256, restorekit's DSN only in dsn_env).
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fixtures.cli import CLI, cli_env
from fixtures.webhook import slack_webhook

from flows.complete_failure import CompleteFailureParams, complete_failure
from flows.restore_drill import RestoreDrillParams, restore_drill
from restorekit import production
from restorekit.demo import build_installation, teardown_installation
from restorekit.health import check_health
from restorekit.models import RestorePoint
from restorekit.pg.dsn import libpq_dsn
from restorekit.sinks.envfile import EnvFileStore

pytestmark = pytest.mark.slow


def _mark(dsn: str, label: str) -> tuple[datetime, datetime]:
    """Insert a user named ``label``; returns the server's clock just before and just after
    its commit."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        conn.execute("INSERT INTO users (name, email) VALUES (%s, %s)",
                     (label, f"{label}@incident.test"))
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return start, row[0]


def _names(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT name FROM users WHERE email LIKE '%%@incident.test'").fetchall()
    return {r[0] for r in rows}


def _cli_json(*args: str, cwd: Path) -> dict[str, Any]:
    result = subprocess.run([*CLI, *args, "--json"], cwd=cwd, env=cli_env(), capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stderr}"
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def adopted(pg_base_dir: Path, prefect_server: str):
    """An installation whose production was lost and restored by scenario 1, with one row
    written before the incident and one on the new production after it."""
    inst = build_installation(pg_base_dir / f"protect-{time.monotonic_ns()}")
    rt = inst.runtime()
    rt.app.start()  # type: ignore[union-attr]
    try:
        _, before = _mark(inst.app_dsn, "before-incident")
        inst.wait_archived()
        old_port = inst.production.port
        inst.production.stop(mode="immediate")  # the database is gone
        started = time.monotonic()
        report = complete_failure(CompleteFailureParams(
            target="production", config=str(inst.config), require_approval=False,
            incident_id="inc-protect"))
        seconds = time.monotonic() - started
        new = inst.runtime()  # reads the production adoption recorded
        after, _ = _mark(new.config.resolve_dsn(), "after-incident")
        assert new.provider.archive_pending_wal(), "the new production does not archive"
        yield {"inst": inst, "report": report, "before": before, "after": after,
               "old_port": old_port, "seconds": seconds}
    finally:
        teardown_installation(inst)


def test_the_adopted_production_archives_and_has_a_first_backup(adopted) -> None:
    inst, report = adopted["inst"], adopted["report"]
    assert report.outcome == "succeeded"
    assert report.protection.startswith("Protected again: yes, first backup at "), report.protection
    assert "timeline 2" in report.protection
    assert "**Protected again:** yes" in report.to_markdown()
    names = [s.name for s in report.steps]
    assert names.index("adopt restored database") < names.index("protect new production")

    rt = inst.runtime()
    record = production.load(rt.settings.state_dir, "production")
    assert record is not None and record.port == rt.provider.source.port != adopted["old_port"]
    assert record.incident == "inc-protect" and record.protection and record.protection.protected
    raw = production.record_path(rt.settings.state_dir, "production").read_text()
    assert inst.production.password not in raw and "password" not in raw  # secret-free
    # restorekit.toml is untouched: still the lost cluster's dsn_env line.
    assert f'dsn_env = "{inst.dsn_env}"' in inst.config.read_text()
    # Every later command acts on the adopted cluster: the target's DSN, its data directory.
    dsn = rt.config.resolve_dsn()
    assert f"port={record.port}" in dsn and str(rt.config.data_dir) == record.data_dir
    with psycopg.connect(dsn) as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('archive_mode')").fetchall())
        archiver = conn.execute(
            "SELECT archived_count, failed_count FROM pg_stat_archiver").fetchone()
    assert settings["archive_mode"] == "on"
    assert archiver[0] > 0 and archiver[1] == 0
    # The new timeline's history file and its segments are in the same repository.
    wal = {p.name for p in (inst.root / "repo" / "wal").iterdir()}
    assert "00000002.history" in wal
    assert any(n.startswith("00000002") and len(n) == 24 for n in wal)
    # The application still runs on the new production after the restart.
    assert check_health(rt.health_url(), attempts=10).ok
    print(f"\nscenario 1 with protection: {adopted['seconds']:.1f} s; "
          + ", ".join(f"{s.name} {s.seconds:.2f}s" for s in report.steps
                      if s.name in ("adopt restored database", "protect new production")))


def test_points_before_and_after_the_incident_both_restore(adopted) -> None:
    rt = adopted["inst"].runtime()
    window = rt.provider.restore_window()
    assert window.latest is not None and window.latest >= adopted["after"] > adopted["before"]
    backups = rt.provider.list_backups()
    assert [b.timeline for b in backups] == [1, 2]

    late = rt.provider.restore(RestorePoint.latest(), name="after-incident")
    try:
        assert _names(libpq_dsn(late.dsn.get_secret_value())) == {
            "before-incident", "after-incident"}
        assert late.backup_id == backups[-1].backup_id  # from the new backup
    finally:
        rt.provider.discard(late)
    early = rt.provider.restore(RestorePoint.parse(adopted["before"].isoformat()),
                                name="before-incident")
    try:
        assert _names(libpq_dsn(early.dsn.get_secret_value())) == {"before-incident"}
        assert early.backup_id == backups[0].backup_id  # from the old backup, old timeline
    finally:
        rt.provider.discard(early)


def test_window_and_backups_show_the_history_across_the_incident(adopted) -> None:
    inst = adopted["inst"]
    window = _cli_json("window", "--target", "production", "--config", str(inst.config),
                       cwd=inst.root)
    assert datetime.fromisoformat(window["latest"]) >= adopted["after"]
    assert datetime.fromisoformat(window["earliest"]) < adopted["before"]
    assert window["production"]["incident"] == "inc-protect"
    assert window["production"]["protection"]["protected"] is True
    listed = _cli_json("backups", "--target", "production", "--config", str(inst.config),
                       cwd=inst.root)["backups"]
    assert [b["timeline"] for b in listed] == [1, 2]
    assert listed[-1]["backup_id"] in adopted["report"].protection


def test_a_drill_right_after_scenario_1_passes_on_the_new_production(adopted) -> None:
    inst = adopted["inst"]
    (result,) = restore_drill(RestoreDrillParams(config=str(inst.config)))
    assert result.passed, result.failures
    live = libpq_dsn(EnvFileStore(inst.env_file, key="DIRECT_URL").read().get_secret_value())
    assert f":{production.load(inst.runtime().settings.state_dir, 'production').port}/" in live


@pytest.fixture
def protect_alerts(monkeypatch: pytest.MonkeyPatch):
    """The texts a Slack-compatible webhook on loopback is sent ($PROTECT_TEST_WEBHOOK)."""
    with slack_webhook(monkeypatch, "PROTECT_TEST_WEBHOOK") as received:
        yield received


def test_a_failure_to_protect_keeps_the_restore_and_warns(
    pg_base_dir: Path, prefect_server: str, monkeypatch: pytest.MonkeyPatch,
    protect_alerts: list[str],
) -> None:
    from restorekit.errors import PostgresError
    from restorekit.providers.selfhosted import SelfHostedProvider

    received = protect_alerts

    def stuck(self: SelfHostedProvider) -> production.Protection:
        raise PostgresError("the archiver has not stored 00000002.history after 120s")

    monkeypatch.setattr(SelfHostedProvider, "resume_protection", stuck)
    inst = build_installation(pg_base_dir / f"protect-fail-{time.monotonic_ns()}")
    inst.config.write_text(inst.config.read_text()
                           + '\n[notify]\nwebhook_url_env = "PROTECT_TEST_WEBHOOK"\n')
    rt = inst.runtime()
    rt.app.start()  # type: ignore[union-attr]
    try:
        inst.wait_archived()
        inst.production.stop(mode="immediate")
        report = complete_failure(CompleteFailureParams(
            target="production", config=str(inst.config), require_approval=False,
            incident_id="inc-unprotected"))

        assert report.outcome == "succeeded"
        assert report.protection.startswith(
            "Protected again: no — PostgresError: the archiver has not stored"), report.protection
        assert "do `restorekit backup --target production`" in report.protection
        assert check_health(rt.health_url(), attempts=5).ok  # the restore stands
        warning = [t for t in received if "NOT protected again" in t]
        assert len(warning) == 1 and "archiver has not stored" in warning[0]
        # Adopted and recorded all the same: a later `restorekit backup` acts on it.
        record = production.load(rt.settings.state_dir, "production")
        assert record is not None and record.protection and not record.protection.protected
    finally:
        teardown_installation(inst)

"""Backup freshness on a real cluster and a real Prefect server: healthy is ok; a stalled
archive (archive_command failing while WAL is written) puts the RPO at risk, fails the
freshness flow and fails the restore drill; once archiving works again it is ok."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fixtures.retention import keep_one_backup_config
from fixtures.world import installation

from flows.backup_freshness import BackupFreshnessParams, BackupsAtRisk, backup_freshness
from flows.restore_drill import DrillFailed, RestoreDrillParams, restore_drill
from restorekit import drill
from restorekit.demo import Installation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inst(pg_base_dir: Path) -> Iterator[Installation]:
    with installation(pg_base_dir, "freshness", scale=0.01) as built:
        yield built


def set_archive_command(inst: Installation, command: str | None) -> None:
    with inst.production.connect(autocommit=True) as conn:
        if command is None:
            conn.execute("ALTER SYSTEM RESET archive_command")
        else:
            conn.execute(psycopg.sql.SQL("ALTER SYSTEM SET archive_command = {}").format(
                psycopg.sql.Literal(command)))
        conn.execute("SELECT pg_reload_conf()")


def wait_for_failure(inst: Installation, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(inst.app_dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT last_failed_time > coalesce(last_archived_time, "
                               "'-infinity') FROM pg_stat_archiver").fetchone()
            if row and row[0]:
                return
            time.sleep(0.2)
    raise AssertionError("the archiver did not fail")


def test_freshness_ok_then_a_stalled_archive_fails_the_check_and_the_drill(
    prefect_server: str, inst: Installation
) -> None:
    config = str(inst.config)
    inst.wait_archived()
    (report,) = backup_freshness(BackupFreshnessParams(config=config))
    assert report.ok, report.reasons
    assert report.archiver is not None and report.archiver.archive_mode == "on"

    set_archive_command(inst, "false")
    try:
        with psycopg.connect(inst.app_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE stalled AS SELECT g FROM generate_series(1, 1000) g")
            conn.execute("SELECT pg_switch_wal()")
        wait_for_failure(inst)

        with pytest.raises(BackupsAtRisk, match="archiver is failing"):
            backup_freshness(BackupFreshnessParams(config=config))

        with pytest.raises(DrillFailed, match="backups at risk: the source's archiver is failing"):
            restore_drill(RestoreDrillParams(config=config))
        last = drill.load_history(inst.runtime().settings.state_dir, "production")[-1]
        assert last["freshness_ok"] is False and not last["passed"]
        assert any("AT RISK" in line for line in last["freshness"])
        assert last["torn_down"]
    finally:
        set_archive_command(inst, None)
    inst.wait_archived()
    (report,) = backup_freshness(BackupFreshnessParams(config=config))
    assert report.ok, report.reasons  # the old failure predates the last success


def test_the_backup_flow_applies_retention_after_a_successful_backup(
    prefect_server: str, inst: Installation
) -> None:
    from flows.backup import BackupParams, backup

    config = keep_one_backup_config(inst, "keep-one.toml")
    provider = inst.runtime().provider
    before = len(provider.list_backups())
    taken = backup(BackupParams(target="production", config=str(config), label="scheduled"))
    assert taken["retention"].startswith(f"keep 1 backup(s), expire {before}"), taken
    (kept,) = provider.list_backups()
    assert kept.backup_id == taken["backup_id"] and kept.label == "scheduled"
    inst.wait_archived()
    (report,) = backup_freshness(BackupFreshnessParams(config=str(config)))
    assert report.ok, report.reasons

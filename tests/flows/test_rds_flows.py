"""The scenario flows with target "production" on RDS: moto's RDS API, with a real PostgreSQL
cluster restored behind every instance moto restores (fakes.rds_backed), a real Prefect server,
the real demo app. The flows do not know they run on RDS: only the config says so.

The tests share one RDS world; the complete failure destroys its production, so it takes the
world as ``spent_rds_world`` and a test after it gets a new one.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fakes.rds_backed import RdsWorld, rds_world_in
from fixtures.cascade import assert_back_and_later_kept, delete_users_then_write
from fixtures.cli import CLI, cli_env
from fixtures.lost_production import recover_lost_production
from fixtures.module_world import ModuleWorld

from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
from flows.restore_drill import RestoreDrillParams, restore_drill
from restorekit.pg.checksum import database_checksums

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def _worlds(moto_server: str, pg_base_dir: Path) -> Iterator[ModuleWorld[RdsWorld]]:
    with ModuleWorld(lambda: rds_world_in(moto_server, pg_base_dir)) as worlds:
        yield worlds


@pytest.fixture
def rds_world(_worlds: ModuleWorld[RdsWorld]) -> RdsWorld:
    """The module's RDS world (shared), its production running."""
    return _worlds.get()


@pytest.fixture
def spent_rds_world(_worlds: ModuleWorld[RdsWorld]) -> Iterator[RdsWorld]:
    """The RDS world for a test that loses its production: a later test gets a new one."""
    with _worlds.spent() as world:
        yield world


def test_the_restore_drill_passes_on_rds_and_deletes_its_scratch_instance(
    prefect_server: str, rds_world
) -> None:
    rds_world.wait_archived()
    before = {i["DBInstanceIdentifier"] for i in rds_world.instances()}

    (result,) = restore_drill(RestoreDrillParams(config=str(rds_world.config)))

    assert result.passed, result.failures
    assert result.torn_down
    # The copy is reached with the source's credentials; reports show them redacted.
    assert result.restored_database.startswith("postgresql://postgres:***@127.0.0.1:")
    assert rds_world.production.password not in result.restored_database
    assert result.row_counts["public.users"]["production"] == (
        result.row_counts["public.users"]["restored"])
    assert {"restore", "base restore", "wal replay", "verification"} <= set(result.phases)
    # The drill's instance was created in moto, then deleted: no scratch instance is left.
    assert rds_world.scratch_instances() == []
    assert {i["DBInstanceIdentifier"] for i in rds_world.instances()} == before
    assert rds_world.runtime().provider.list_scratch() == []


def test_deleted_users_come_back_from_an_rds_scratch_copy_byte_for_byte(
    prefect_server: str, rds_world
) -> None:
    victims, before, later = delete_users_then_write(rds_world.app_dsn)
    rds_world.wait_archived()

    report = accidental_deletion(AccidentalDeletionParams(
        target="production", config=str(rds_world.config), require_approval=False,
        incident_id="inc-rds-ad"))

    assert report.outcome == "succeeded", report.error
    assert report.restored_database.startswith("postgresql://postgres:***@127.0.0.1:")
    assert rds_world.production.password not in report.restored_database
    with psycopg.connect(rds_world.app_dsn) as conn:
        assert_back_and_later_kept(conn, victims, before, later)
        checksums = database_checksums(conn)
    inserted = {c.table: c.inserted for c in report.changes}
    assert inserted["public.users"] == len(victims)
    assert inserted["public.appointments"] == len(before["appointments"])
    # The scratch copy was an RDS instance; it is gone, and so is the cluster behind it.
    assert rds_world.scratch_instances() == []
    assert rds_world.runtime().provider.list_scratch() == []
    backing = rds_world.inst.runtime().provider
    assert backing.list_scratch() == []
    with psycopg.connect(rds_world.app_dsn) as conn:
        assert database_checksums(conn) == checksums


def test_cli_cleanup_removes_the_rds_scratch_instance_a_killed_run_left(rds_world) -> None:
    """`restorekit cleanup` on an RDS target (it used to build the self-hosted provider for
    every target and failed): the tagged scratch instance goes, production and an instance
    restorekit did not create stay."""
    source = rds_world.source.instance_id
    for name, tags in (("restorekit-ad-left-behind",
                        [{"Key": "restorekit:scratch", "Value": "true"},
                         {"Key": "restorekit:source", "Value": source}]),
                       ("someone-elses-copy", [{"Key": "restorekit:source", "Value": source}])):
        rds_world.rds.restore_db_instance_to_point_in_time(
            SourceDBInstanceIdentifier=source, TargetDBInstanceIdentifier=name,
            UseLatestRestorableTime=True, Tags=tags)
    try:
        assert rds_world.scratch_instances() == ["restorekit-ad-left-behind"]

        done = subprocess.run(
            [*CLI, "cleanup", "--target", "production",
             "--config", str(rds_world.config), "--json"],
            capture_output=True, text=True, env=cli_env(), timeout=120, check=False)

        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["removed"] == ["restorekit-ad-left-behind"]
        assert rds_world.scratch_instances() == []
        left = {i["DBInstanceIdentifier"] for i in rds_world.instances()
                if i["DBInstanceStatus"] != "deleting"}
        assert {source, "someone-elses-copy"} <= left
    finally:  # the module's later tests count the world's instances
        with contextlib.suppress(rds_world.rds.exceptions.DBInstanceNotFoundFault):
            rds_world.rds.delete_db_instance(DBInstanceIdentifier="someone-elses-copy",
                                             SkipFinalSnapshot=True)


def test_complete_failure_restores_a_new_rds_instance_and_the_app_is_healthy(
    prefect_server: str, spent_rds_world: RdsWorld
) -> None:
    rds_world = spent_rds_world
    rt = rds_world.runtime()

    report, _ = recover_lost_production(rds_world, "inc-rds-cf")

    # The new production is an RDS instance restored with the source's configuration, adopted.
    ident = rt.provider.instance_id_for("cf-inc-rds-cf")
    (instance,) = rds_world.rds.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"]
    tags = {t["Key"]: t["Value"] for t in instance["TagList"]}
    assert "restorekit:adopted" in tags and "restorekit:scratch" not in tags
    assert instance["DBSubnetGroup"]["DBSubnetGroupName"] == rds_world.source.subnet_group
    assert [g["VpcSecurityGroupId"] for g in instance["VpcSecurityGroups"]] == (
        rds_world.source.security_groups)
    assert instance["DBParameterGroups"][0]["DBParameterGroupName"] == (
        rds_world.source.parameter_group)
    assert rt.provider.list_scratch() == [] and rds_world.scratch_instances() == []
    # The adopted instance is the target's instance now (restorekit.toml untouched), its
    # automated backups checked; later commands act on it.
    assert rds_world.runtime().provider.settings.instance_id == ident
    assert report.protection.startswith("Protected again: yes"), report.protection
    names = [s.name for s in report.steps]
    assert names.index("stop application") < names.index("restore to point in time") < (
        names.index("swap connection string")) < names.index("check health")

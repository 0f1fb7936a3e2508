"""RdsProvider against a real moto server (the session ``moto_server`` fixture).

moto accepts any RestoreTime and copies the source's security groups on a PITR restore, so the
describe output alone cannot prove the adapter passed everything explicitly (provider-apis §1.9):
a botocore ``provide-client-params`` hook records the parameters the adapter SENT. Error mapping
and identifier rules are unit-level tests at the bottom.
"""

from __future__ import annotations

import copy
import logging
import types
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
    WaiterError,
)
from fakes.rds_backed import REGION, create_source_instance, moto_clients, rds_target
from hypothesis import given
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from restorekit import production
from restorekit.config import Settings
from restorekit.errors import (
    CapabilityNotSupported,
    ConfigError,
    OperationTimedOut,
    ProviderError,
    RestorePointError,
    SafetyError,
)
from restorekit.models import RestoredDatabase, RestorePoint, RestoreWindow
from restorekit.pg.cluster import free_port
from restorekit.providers.base import Capability, DatabaseProvider, provider_class
from restorekit.providers.rds import RdsProvider, map_rds_errors, restore_identifier

PASSWORD = "s3cret-pw"
RESTORES = {"RestoreDBInstanceToPointInTime", "RestoreDBInstanceFromDBSnapshot",
            "RestoreDBClusterToPointInTime", "RestoreDBClusterFromSnapshot", "CreateDBInstance"}


class Sent:
    """Records every request the adapter's client sends: (operation name, parameters)."""

    def __init__(self, client: Any) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        client.meta.events.register("provide-client-params.rds", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, copy.deepcopy(params)))

    def named(self, operation: str) -> list[dict[str, Any]]:
        return [p for name, p in self.calls if name == operation]

    def only(self, operation: str) -> dict[str, Any]:
        (params,) = self.named(operation)
        return params

    def restores(self) -> list[str]:
        return [name for name, _ in self.calls if name in RESTORES]


@pytest.fixture
def aws(moto_server: str) -> types.SimpleNamespace:
    rds, ec2 = moto_clients(moto_server)
    return types.SimpleNamespace(rds=rds, ec2=ec2, endpoint=moto_server)


@pytest.fixture
def source(aws):
    return create_source_instance(aws.rds, aws.ec2, f"prod-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def make(aws, source, monkeypatch):
    """make(**rds_overrides) -> (provider, sent): a provider built from config, recording."""
    monkeypatch.setenv("RK_RDS_TEST_DSN",
                       f"host=prod.internal port=5432 user=app password={PASSWORD} "
                       "dbname=app sslmode=require")
    sleeps: list[float] = []

    def factory(**overrides: Any) -> tuple[RdsProvider, Sent]:
        rds = {"instance_id": source.instance_id, "region": REGION,
               "endpoint_url": aws.endpoint, "wait_delay_seconds": 0, "wait_max_attempts": 4,
               **overrides}
        target = rds_target(f"t{uuid.uuid4().hex[:6]}", rds, dsn_env="RK_RDS_TEST_DSN")
        provider = RdsProvider.from_config(target, Settings())
        provider._sleep = sleeps.append  # noqa: SLF001 - no real sleeping in tests
        return provider, Sent(provider.client)

    factory.sleeps = sleeps  # type: ignore[attr-defined]
    return factory


def describe(aws, ident: str) -> dict[str, Any]:
    return aws.rds.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("TagList", [])}


def exists(aws, ident: str) -> bool:
    try:
        describe(aws, ident)
    except aws.rds.exceptions.DBInstanceNotFoundFault:
        return False
    return True


# -- construction -------------------------------------------------------------------------------


def test_is_a_database_provider_with_its_declared_capabilities(make) -> None:
    provider, _ = make()
    assert isinstance(provider, DatabaseProvider)
    assert provider_class("rds") is RdsProvider
    assert provider.kind == "rds"
    assert provider.capabilities == {Capability.NEW_TARGET_RESTORE, Capability.POINT_IN_TIME,
                                     Capability.NAMED_BACKUPS}
    with pytest.raises(CapabilityNotSupported):
        provider.restore_in_place(RestorePoint.latest())


def test_config_is_validated_with_defaults(monkeypatch) -> None:
    target = rds_target("prod", {"instance_id": "Prod-DB", "region": "eu-west-1"},
                        dsn="host=db user=app dbname=app")
    provider = RdsProvider.from_config(target, Settings())
    s = provider.settings
    assert (s.instance_id, s.region, s.endpoint_url, s.aurora_cluster_id) == (
        "prod-db", "eu-west-1", None, None)
    assert (s.wait_delay_seconds, s.wait_max_attempts, s.scratch_tag_key) == (
        30, 60, "restorekit:scratch")

    for bad, match in [
        ({"region": "eu-west-1"}, "instance_id"),
        ({"instance_id": "db"}, "region"),
        ({"instance_id": "db", "region": "x", "password": "nope"}, "password"),
        ({"instance_id": "1db", "region": "x"}, "not an RDS identifier"),
        ({"instance_id": "a--b", "region": "x"}, "not an RDS identifier"),
        ({"instance_id": "db", "region": "x", "wait_max_attempts": 0}, "wait_max_attempts"),
        ({"instance_id": "db", "region": "x", "scratch_tag_key": "aws:x"}, "reserved"),
    ]:
        with pytest.raises(ConfigError, match=match):
            RdsProvider.from_config(rds_target("prod", bad, dsn="host=db"), Settings())
    monkeypatch.delenv("RK_UNSET_DSN", raising=False)
    with pytest.raises(ConfigError, match="RK_UNSET_DSN"):
        RdsProvider.from_config(rds_target("prod", {"instance_id": "db", "region": "x"},
                                           dsn_env="RK_UNSET_DSN"), Settings())


# -- window -------------------------------------------------------------------------------------


def test_window_ends_at_latest_restorable_time_and_starts_at_the_oldest_automated_backup(
    aws, source, make
) -> None:
    provider, sent = make()
    before = datetime.now(UTC)
    window = provider.restore_window()
    after = datetime.now(UTC)

    # moto reports LatestRestorableTime as "now" at read time (provider-apis §1.9).
    assert window.latest is not None and before - timedelta(seconds=1) <= window.latest <= after
    assert window.latest.tzinfo is not None and window.latest.utcoffset() == timedelta(0)
    (automated,) = aws.rds.describe_db_snapshots(
        DBInstanceIdentifier=source.instance_id, SnapshotType="automated")["DBSnapshots"]
    assert window.earliest == automated["SnapshotCreateTime"].astimezone(UTC)
    assert sent.only("DescribeDBInstances") == {"DBInstanceIdentifier": source.instance_id}


def test_pitr_off_is_a_clear_error_before_anything_is_restored(aws, make) -> None:
    off = create_source_instance(aws.rds, aws.ec2, f"nobackup-{uuid.uuid4().hex[:8]}",
                                 retention=0)
    provider, sent = make(instance_id=off.instance_id)
    with pytest.raises(RestorePointError, match="BackupRetentionPeriod is 0"):
        provider.restore_window()
    with pytest.raises(RestorePointError, match="point-in-time restore is off"):
        provider.restore(RestorePoint.latest(), name="inc-1")
    assert sent.restores() == []


# -- restore ------------------------------------------------------------------------------------


def test_pitr_restore_passes_the_sources_network_and_config_explicitly(
    aws, source, make, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    provider, sent = make()
    window = provider.restore_window()
    assert window.earliest is not None and window.latest is not None
    when = window.earliest + (window.latest - window.earliest) / 2
    seen: list[tuple[str, int, int | None]] = []

    restored = provider.restore(RestorePoint.at(when), name="INC 42",
                                progress=lambda *a: seen.append(a))

    ident = restored.handle
    assert ident == provider.instance_id_for("INC 42") == f"rk-{provider.target_name}-inc-42"
    params = sent.only("RestoreDBInstanceToPointInTime")
    assert params["SourceDBInstanceIdentifier"] == source.instance_id
    assert params["TargetDBInstanceIdentifier"] == ident
    assert params["RestoreTime"] == when and params["RestoreTime"].utcoffset() == timedelta(0)
    assert "UseLatestRestorableTime" not in params
    assert params["DBSubnetGroupName"] == source.subnet_group
    assert params["VpcSecurityGroupIds"] == source.security_groups
    assert params["DBParameterGroupName"] == source.parameter_group
    assert params["DBInstanceClass"] == source.instance_class
    assert params["PubliclyAccessible"] is False and params["MultiAZ"] is False
    assert params["DeletionProtection"] is False and params["CopyTagsToSnapshot"] is False
    sent_tags = {t["Key"]: t["Value"] for t in params["Tags"]}
    assert sent_tags["restorekit:scratch"] == "true"
    assert sent_tags["restorekit:target"] == provider.target_name
    assert sent_tags["restorekit:name"] == "INC 42"
    assert sent_tags["restorekit:source"] == source.instance_id

    live = describe(aws, ident)
    assert live["DBSubnetGroup"]["DBSubnetGroupName"] == source.subnet_group
    assert [g["VpcSecurityGroupId"] for g in live["VpcSecurityGroups"]] == source.security_groups
    assert live["DBParameterGroups"][0]["DBParameterGroupName"] == source.parameter_group
    assert live["DBInstanceClass"] == source.instance_class
    assert tags_of(live)["restorekit:scratch"] == "true"

    # The DSN: the source's credentials and options, the new endpoint.
    dsn = conninfo_to_dict(restored.dsn.get_secret_value())
    assert dsn["host"] == live["Endpoint"]["Address"]
    assert dsn["host"] == f"{ident}.aaaaaaaaaa.{REGION}.rds.amazonaws.com"
    assert dsn["port"] == "5432"
    assert (dsn["user"], dsn["password"], dsn["dbname"], dsn["sslmode"]) == (
        "app", PASSWORD, "app", "require")
    assert restored.scratch and restored.point == str(RestorePoint.at(when))
    assert restored.recovered_to_time == when
    assert seen and seen[0] == ("restore", 1, 4)
    assert PASSWORD not in caplog.text and PASSWORD not in repr(restored)


def test_latest_uses_latest_restorable_time_and_the_class_override(aws, make) -> None:
    provider, sent = make(db_instance_class="db.r6g.large")
    restored = provider.restore(RestorePoint.latest(), name="latest")
    params = sent.only("RestoreDBInstanceToPointInTime")
    assert params["UseLatestRestorableTime"] is True and "RestoreTime" not in params
    assert params["DBInstanceClass"] == "db.r6g.large"
    assert describe(aws, restored.handle)["DBInstanceClass"] == "db.r6g.large"
    assert restored.recovered_to_time is not None


@pytest.mark.parametrize("point, error, match", [
    (lambda w: RestorePoint.at(datetime.now(UTC) + timedelta(hours=1)), RestorePointError,
     "in the future"),
    (lambda w: RestorePoint.at(w.earliest - timedelta(days=1)), RestorePointError,
     "outside the restore window"),
    (lambda w: RestorePoint.parse("2026-01-01T00:00:00"), RestorePointError, "no timezone"),
    (lambda w: RestorePoint.parse("lsn:0/3000060"), CapabilityNotSupported, "lsn"),
    (lambda w: RestorePoint.parse("immediate"), CapabilityNotSupported, "immediate"),
    (lambda w: RestorePoint.parse("backup:rk-no-such-snapshot"), RestorePointError,
     "no RDS snapshot"),
], ids=["future", "before-window", "naive", "lsn", "immediate", "unknown-snapshot"])
def test_the_point_is_validated_before_any_restore_request(aws, make, point, error,
                                                           match) -> None:
    provider, sent = make()
    window = provider.restore_window()
    with pytest.raises(error, match=match):
        provider.restore(point(window), name="bad-point")
    assert sent.restores() == []
    assert not exists(aws, provider.instance_id_for("bad-point"))


def test_a_given_window_is_honoured(aws, make) -> None:
    provider, sent = make()
    now = datetime.now(UTC)
    stale = RestoreWindow(earliest=now - timedelta(days=1), latest=now - timedelta(hours=1))
    with pytest.raises(RestorePointError, match="outside the restore window"):
        provider.restore(RestorePoint.at(now - timedelta(minutes=30)), name="w", window=stale)
    assert sent.restores() == []


def test_snapshot_backup_and_restore_from_it(aws, source, make) -> None:
    provider, sent = make()
    backup = provider.create_backup("before migration #42")
    assert backup.label == "before migration #42" and backup.engine == "rds-snapshot"
    assert backup.backup_id.startswith(f"rk-{source.instance_id}-")
    create = sent.only("CreateDBSnapshot")
    assert create["DBInstanceIdentifier"] == source.instance_id
    assert {t["Key"]: t["Value"] for t in create["Tags"]}["restorekit:label"] == (
        "before migration _42")  # '#' is not allowed in an RDS tag value
    backups = provider.list_backups()
    assert [b.extra["type"] for b in backups] == ["automated", "manual"]  # oldest first
    assert backups[-1].backup_id == backup.backup_id and backups[-1].label

    restored = provider.restore(RestorePoint.parse(f"backup:{backup.backup_id}"), name="snap")

    params = sent.only("RestoreDBInstanceFromDBSnapshot")
    assert params["DBSnapshotIdentifier"] == backup.backup_id
    assert params["DBInstanceIdentifier"] == restored.handle
    assert params["DBSubnetGroupName"] == source.subnet_group
    assert params["VpcSecurityGroupIds"] == source.security_groups
    assert params["DBParameterGroupName"] == source.parameter_group
    assert params["DeletionProtection"] is False
    # moto does NOT copy security groups / parameter group on a snapshot restore: these are
    # there only because the adapter sent them.
    live = describe(aws, restored.handle)
    assert [g["VpcSecurityGroupId"] for g in live["VpcSecurityGroups"]] == source.security_groups
    assert live["DBParameterGroups"][0]["DBParameterGroupName"] == source.parameter_group
    assert restored.backup_id == backup.backup_id
    assert sent.restores() == ["RestoreDBInstanceFromDBSnapshot"]


def test_a_snapshot_of_another_instance_is_refused(aws, source, make) -> None:
    other = create_source_instance(aws.rds, aws.ec2, f"other-{uuid.uuid4().hex[:8]}")
    aws.rds.create_db_snapshot(DBSnapshotIdentifier=f"{other.instance_id}-snap",
                               DBInstanceIdentifier=other.instance_id)
    provider, sent = make()
    with pytest.raises(RestorePointError, match=f"not of '{source.instance_id}'"):
        provider.restore(RestorePoint.parse(f"backup:{other.instance_id}-snap"), name="x")
    assert sent.restores() == []


def test_a_rerun_reuses_the_finished_instance(aws, make) -> None:
    provider, sent = make()
    first = provider.restore(RestorePoint.latest(), name="inc-7")
    # A retried task builds its provider again from the same config.
    retried = RdsProvider(provider.settings, source_dsn=provider._source_dsn,  # noqa: SLF001
                          target_name=provider.target_name)
    sent_again = Sent(retried.client)
    second = retried.restore(RestorePoint.latest(), name="inc-7")
    assert second.handle == first.handle
    assert second.dsn.get_secret_value() == first.dsn.get_secret_value()
    assert sent.restores() == ["RestoreDBInstanceToPointInTime"] and sent_again.restores() == []
    found = retried.find_restored("inc-7")
    assert found is not None and found.handle == first.handle and found.scratch
    assert found.dsn.get_secret_value() == first.dsn.get_secret_value()
    assert found.point == "latest" and found.recovered_to_time == first.recovered_to_time
    assert retried.find_restored("inc-8") is None
    # The same name at another point is not silently the old restore.
    with pytest.raises(SafetyError, match="was restored at 'latest'"):
        retried.restore(RestorePoint.at(first.recovered_to_time - timedelta(microseconds=1)),
                        name="inc-7")
    assert sent_again.restores() == []


def test_an_instance_restorekit_did_not_create_is_never_reused(aws, source, make) -> None:
    provider, sent = make()
    ident = provider.instance_id_for("taken")
    aws.rds.create_db_instance(DBInstanceIdentifier=ident, DBInstanceClass="db.t3.micro",
                               Engine="postgres", MasterUsername="x", MasterUserPassword="y" * 8,
                               AllocatedStorage=20)
    with pytest.raises(SafetyError, match="not restorekit's scratch restore"):
        provider.restore(RestorePoint.latest(), name="taken")
    assert provider.find_restored("taken") is None
    assert sent.restores() == []


# -- polling ------------------------------------------------------------------------------------


class Statuses:
    """Rewrites what DescribeDBInstances says about one instance: a script of statuses; None
    answers DBInstanceNotFound (an instance not visible yet right after its create call)."""

    def __init__(self, client: Any, ident: str, script: list[str | None]) -> None:
        self.ident, self.script, self.asked = ident, list(script), None
        events = client.meta.events
        events.register("provide-client-params.rds.DescribeDBInstances", self._which)
        events.register("before-call.rds.DescribeDBInstances", self._not_found)
        events.register("after-call.rds.DescribeDBInstances", self._rewrite)

    def _which(self, params: dict[str, Any], **_: Any) -> None:
        self.asked = params.get("DBInstanceIdentifier")

    def _not_found(self, **_: Any) -> Any:
        if self.asked == self.ident and self.script and self.script[0] is None:
            self.script.pop(0)
            error = {"Error": {"Code": "DBInstanceNotFound",
                               "Message": f"DBInstance {self.ident} not found."},
                     "ResponseMetadata": {"HTTPStatusCode": 404}}
            return types.SimpleNamespace(status_code=404, headers={}), error
        return None

    def _rewrite(self, parsed: dict[str, Any], **_: Any) -> None:
        if self.asked != self.ident or not self.script or "DBInstances" not in parsed:
            return  # (after-call also sees the short-circuited 404 answers)
        status = self.script.pop(0)
        for instance in parsed.get("DBInstances", []):
            instance["DBInstanceStatus"] = status


def test_polls_past_not_found_and_creating_until_available(aws, make) -> None:
    provider, sent = make(wait_max_attempts=6, wait_delay_seconds=7)
    ident = provider.instance_id_for("slow")
    # describe before restoring -> not found (real); then after the restore call: not found,
    # creating, backing-up, available.
    script = Statuses(provider.client, ident, [None, None, "creating", "backing-up"])
    seen: list[tuple[str, int, int | None]] = []
    restored = provider.restore(RestorePoint.latest(), name="slow",
                                progress=lambda *a: seen.append(a))
    assert restored.handle == ident
    assert [s[1] for s in seen] == [1, 2, 3, 4] and seen[-1] == ("restore", 4, 6)
    assert make.sleeps == [7, 7, 7]
    assert script.script == []


def test_our_deadline_raises_operation_timed_out_naming_the_instance(aws, make) -> None:
    provider, _ = make(wait_max_attempts=3)
    ident = provider.instance_id_for("stuck")
    Statuses(provider.client, ident, [None] + ["creating"] * 3)
    with pytest.raises(OperationTimedOut, match=f"{ident} was not available after 3 checks") as err:
        provider.restore(RestorePoint.latest(), name="stuck")
    assert not err.value.is_retryable and "creating" in str(err.value)
    assert len(make.sleeps) == 2
    # A re-run resumes waiting for the same instance instead of restoring again.
    rerun = Sent(provider.client)
    assert provider.restore(RestorePoint.latest(), name="stuck").handle == ident
    assert rerun.restores() == [] and "DescribeDBInstances" in [n for n, _ in rerun.calls]


def test_a_failed_instance_is_a_non_retryable_error(aws, make) -> None:
    provider, _ = make()
    ident = provider.instance_id_for("broken")
    Statuses(provider.client, ident, [None, "incompatible-restore"])
    with pytest.raises(ProviderError, match="incompatible-restore") as err:
        provider.restore(RestorePoint.latest(), name="broken")
    assert not err.value.is_retryable


# -- find / adopt / discard ------------------------------------------------------------------------


def test_discard_deletes_only_scratch_instances(aws, source, make) -> None:
    provider, sent = make()
    restored = provider.restore(RestorePoint.latest(), name="drill")
    assert [r.handle for r in provider.list_scratch()] == [restored.handle]

    provider.discard(restored)

    params = sent.only("DeleteDBInstance")
    assert params == {"DBInstanceIdentifier": restored.handle, "SkipFinalSnapshot": True,
                      "DeleteAutomatedBackups": True}
    assert not exists(aws, restored.handle)
    assert provider.list_scratch() == []
    assert provider.find_restored("drill") is None
    provider.discard(restored)  # already gone: success, and nothing else is deleted
    assert len(sent.named("DeleteDBInstance")) == 1


def test_not_found_from_the_delete_call_is_success(aws, make) -> None:
    provider, sent = make()
    restored = provider.restore(RestorePoint.latest(), name="gone")

    def deleted_meanwhile(**_: Any) -> Any:
        # Someone else deletes it between our describe and our delete.
        aws.rds.delete_db_instance(DBInstanceIdentifier=restored.handle, SkipFinalSnapshot=True)
        error = {"Error": {"Code": "DBInstanceNotFound", "Message": "gone"},
                 "ResponseMetadata": {"HTTPStatusCode": 404}}
        return types.SimpleNamespace(status_code=404, headers={}), error

    provider.client.meta.events.register("before-call.rds.DeleteDBInstance", deleted_meanwhile)
    provider.discard(restored)
    assert not exists(aws, restored.handle)


def test_discard_refuses_untagged_adopted_and_the_source(aws, source, make) -> None:
    provider, sent = make()
    stranger = f"stranger-{uuid.uuid4().hex[:6]}"
    aws.rds.create_db_instance(DBInstanceIdentifier=stranger, DBInstanceClass="db.t3.micro",
                               Engine="postgres", MasterUsername="x", MasterUserPassword="y" * 8,
                               AllocatedStorage=20)
    stub = RestoredDatabase(provider="rds", handle=stranger, dsn=SecretStr(""))
    with pytest.raises(SafetyError, match="no 'restorekit:scratch' tag"):
        provider.discard(stub)
    with pytest.raises(SafetyError, match="source database"):
        provider.discard(RestoredDatabase(provider="rds", handle=source.instance_id,
                                          dsn=SecretStr("")))

    restored = provider.restore(RestorePoint.latest(), name="cf-1")
    provider.adopt(restored)
    live = tags_of(describe(aws, restored.handle))
    assert "restorekit:adopted" in live and "restorekit:scratch" not in live
    assert provider.list_scratch() == []
    found = provider.find_restored("cf-1")
    assert found is not None and not found.scratch
    with pytest.raises(SafetyError, match="adopted"):
        provider.discard(restored)
    provider.adopt(restored)  # idempotent
    with pytest.raises(SafetyError, match="adopted as the production"):
        provider.restore(RestorePoint.latest(), name="cf-1")
    assert sent.named("DeleteDBInstance") == []
    assert all(exists(aws, i) for i in (stranger, restored.handle, source.instance_id))


# -- Aurora -------------------------------------------------------------------------------------


def test_aurora_restores_a_cluster_then_an_instance_in_it(aws, source, make) -> None:
    suffix = uuid.uuid4().hex[:6]
    cluster_id = f"aurora-{suffix}"
    aws.rds.create_db_cluster_parameter_group(
        DBClusterParameterGroupName=f"cpg-{suffix}", DBParameterGroupFamily="aurora-postgresql16",
        Description="app")
    aws.rds.create_db_cluster(
        DBClusterIdentifier=cluster_id, Engine="aurora-postgresql", MasterUsername="postgres",
        MasterUserPassword="unused-pw", DBSubnetGroupName=source.subnet_group,
        VpcSecurityGroupIds=source.security_groups, DBClusterParameterGroupName=f"cpg-{suffix}",
        BackupRetentionPeriod=7, DatabaseName="app")
    aws.rds.create_db_instance(DBInstanceIdentifier=f"{cluster_id}-1", Engine="aurora-postgresql",
                               DBInstanceClass="db.r6g.large", DBClusterIdentifier=cluster_id)
    provider, sent = make(instance_id=f"{cluster_id}-1", aurora_cluster_id=cluster_id)

    window = provider.restore_window()
    cluster = aws.rds.describe_db_clusters(DBClusterIdentifier=cluster_id)["DBClusters"][0]
    assert window.earliest == cluster["EarliestRestorableTime"].astimezone(UTC)
    restored = provider.restore(RestorePoint.latest(), name="inc-a")

    ident = restored.handle
    params = sent.only("RestoreDBClusterToPointInTime")
    assert params["DBClusterIdentifier"] == ident
    assert params["SourceDBClusterIdentifier"] == cluster_id
    assert params["UseLatestRestorableTime"] is True and "RestoreToTime" not in params
    assert params["DBSubnetGroupName"] == source.subnet_group
    assert params["VpcSecurityGroupIds"] == source.security_groups
    assert params["DBClusterParameterGroupName"] == f"cpg-{suffix}"
    assert params["DeletionProtection"] is False
    create = sent.only("CreateDBInstance")
    assert (create["DBInstanceIdentifier"], create["DBClusterIdentifier"], create["Engine"],
            create["DBInstanceClass"]) == (ident, ident, "aurora-postgresql", "db.r6g.large")
    new_cluster = aws.rds.describe_db_clusters(DBClusterIdentifier=ident)["DBClusters"][0]
    assert conninfo_to_dict(restored.dsn.get_secret_value())["host"] == new_cluster["Endpoint"]
    assert sent.restores() == ["RestoreDBClusterToPointInTime", "CreateDBInstance"]

    provider.discard(restored)
    order = [n for n, _ in sent.calls if n in ("DeleteDBInstance", "DeleteDBCluster")]
    assert order == ["DeleteDBInstance", "DeleteDBCluster"]
    assert sent.only("DeleteDBCluster")["SkipFinalSnapshot"] is True
    with pytest.raises(ClientError):
        aws.rds.describe_db_clusters(DBClusterIdentifier=ident)


# -- error mapping (unit level) -------------------------------------------------------------------


def client_error(code: str, status: int, message: str = "something happened") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "req-1"}},
                       "RestoreDBInstanceToPointInTime")


@pytest.mark.parametrize("code, status, retryable", [
    ("Throttling", 400, True),
    ("ThrottlingException", 400, True),
    ("RequestLimitExceeded", 400, True),
    ("InternalFailure", 500, True),
    ("ServiceUnavailable", 503, True),
    ("SomethingNew", 502, True),
    ("DBInstanceNotFound", 404, False),
    ("InvalidRestoreFault", 400, False),
    ("PointInTimeRestoreNotEnabled", 400, False),
    ("DBInstanceAlreadyExists", 400, False),
    ("AccessDenied", 403, False),
])
def test_client_errors_map_to_provider_errors(code: str, status: int, retryable: bool) -> None:
    original = client_error(code, status)
    with pytest.raises(ProviderError) as err, map_rds_errors("restore", resource="rk-x"):
        raise original
    exc = err.value
    assert type(exc) is ProviderError and exc.__cause__ is original
    assert exc.is_retryable is retryable and exc.status_code == status
    assert (exc.provider, exc.operation) == ("rds", "restore")
    assert code in str(exc) and "something happened" in str(exc) and "rk-x" in str(exc)


def test_4xx_faults_get_clear_messages() -> None:
    for code, words in [("PointInTimeRestoreNotEnabled", "automated backups are off"),
                        ("InvalidRestoreFault", "cannot restore to that point"),
                        ("DBInstanceNotFound", "does not exist")]:
        with pytest.raises(ProviderError, match=words), map_rds_errors("restore"):
            raise client_error(code, 400)


def test_transport_and_sdk_errors_map_too() -> None:
    with pytest.raises(ProviderError) as err, map_rds_errors("describe"):
        raise EndpointConnectionError(endpoint_url="https://rds.example")
    assert err.value.is_retryable
    with pytest.raises(ProviderError) as err, map_rds_errors("describe"):
        raise ReadTimeoutError(endpoint_url="https://rds.example")
    assert err.value.is_retryable
    with pytest.raises(ProviderError, match="credential chain") as err, map_rds_errors("x"):
        raise NoCredentialsError()
    assert not err.value.is_retryable
    with pytest.raises(OperationTimedOut, match="snapshot rk-1"), \
            map_rds_errors("create_backup", resource="snapshot rk-1"):
        raise WaiterError("DBSnapshotAvailable", "Max attempts exceeded", {})
    with pytest.raises(ConfigError), map_rds_errors("restore"):
        raise ParamValidationError(report="bad")


def test_an_unreachable_endpoint_is_a_retryable_provider_error(source) -> None:
    client = boto3.client("rds", region_name=REGION,
                          endpoint_url=f"http://127.0.0.1:{free_port()}",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=2))
    settings = RdsProvider.from_config(
        rds_target("prod", {"instance_id": "db", "region": REGION}, dsn="host=db"),
        Settings()).settings
    provider = RdsProvider(settings, source_dsn="host=db", client=client)
    with pytest.raises(ProviderError) as err:
        provider.restore_window()
    assert err.value.is_retryable


# -- identifiers --------------------------------------------------------------------------------


@pytest.mark.parametrize("target, name, expected", [
    ("production", "cf-inc-1", "rk-production-cf-inc-1"),
    ("prod", "Drill 2026-11-25 / #3", "rk-prod-drill-2026-11-25-3"),
    ("", "x--y-", "rk-x-y"),
])
def test_restore_identifiers(target: str, name: str, expected: str) -> None:
    assert restore_identifier(target, name) == expected


@given(st.text(min_size=1, max_size=200), st.text(max_size=40))
def test_restore_identifiers_are_always_valid_and_deterministic(name: str, target: str) -> None:
    ident = restore_identifier(target, name)
    assert 1 <= len(ident) <= 63 and ident[0].isalpha() and "--" not in ident
    assert not ident.endswith("-") and all(c.isascii() and (c.isalnum() or c == "-") for c in ident)
    assert ident == restore_identifier(target, name)


def test_adoption_is_recorded_and_protection_checks_the_new_instances_backups(
    aws, source, make, tmp_path
) -> None:
    """Issue 12 part 1: the adopted instance becomes the target's instance (in restorekit's
    state), and its automated backups are checked: a restore can come up with other settings."""
    provider, _ = make()
    restored = provider.restore(RestorePoint.latest(), name="cf-protect")
    _, record = production.adopt(provider, restored, state_dir=tmp_path, target="t",
                                 incident="inc-rds")
    assert record is not None and record.instance_id == restored.handle
    assert record.replaced == {"instance_id": source.instance_id}
    adopted, sent = make(instance_id=restored.handle)  # as Settings.target lays the record over

    ok = production.protect(adopted, state_dir=tmp_path, target="t")
    assert ok.protected and ok.differences == (), ok.line()
    assert "retention 7 day(s)" in ok.line()

    aws.rds.modify_db_instance(DBInstanceIdentifier=restored.handle, BackupRetentionPeriod=0,
                               ApplyImmediately=True)
    bad = production.protect(adopted, state_dir=tmp_path, target="t")
    line = bad.line()
    assert not bad.protected
    assert "BackupRetentionPeriod 0" in line and "--backup-retention-period 7" in line
    assert f"backup retention (days): 7 on {source.instance_id}, 0 on {restored.handle}" in line
    assert production.load(tmp_path, "t").protection == bad
    assert sent.named("ModifyDBInstance") == []  # it says what to do, it changes nothing

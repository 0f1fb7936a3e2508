"""RDS on moto, with real PostgreSQL behind every restored instance.

moto keeps RDS's control plane (instances, snapshots, tags, endpoints) but runs no database, and
its endpoints are hostnames that do not resolve. :class:`BackedRdsProvider` is the real
:class:`~restorekit.providers.rds.RdsProvider` talking to a moto server, plus one thing: when it
restores an instance in moto, it also restores a self-hosted installation (a production cluster
with archived WAL and a base backup, :func:`restorekit.demo.build_installation`) at the same point
into a local cluster named like the instance, and its ``_connect_address`` seam maps the moto
endpoint to that cluster. Flows therefore run unchanged against "RDS" and verify, swap and
recover rows on real data.

The fixture ``rds_world`` builds it all: a moto source instance in its own subnet group, security
group and parameter group, the installation, a restorekit.toml whose target "production" has
``provider = "rds"``, and the registration of this class for the kind "rds". Test modules import
the fixture (pytest finds it under its name ``rds_world``):
``from fakes.rds_backed import rds_world_fixture  # noqa: F401``.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from fixtures.world import app_installation
from pydantic import SecretStr

from fakes._world import InstallationWorld
from restorekit.config import TargetConfig, load_settings
from restorekit.demo import Installation
from restorekit.errors import ConfigError
from restorekit.models import PointKind, RestoredDatabase, RestorePoint, RestoreWindow
from restorekit.pg.dsn import parse
from restorekit.providers import base
from restorekit.providers.base import Progress, no_progress
from restorekit.providers.rds import RdsProvider
from restorekit.providers.selfhosted import SelfHostedProvider

REGION = "us-east-1"

#: moto source instance id -> the self-hosted restorekit.toml whose target "production" holds
#: the data behind it. Filled by ``rds_world`` (flows run their tasks in this process).
BACKINGS: dict[str, Path] = {}


# -- moto helpers (also used by the contract tests) ----------------------------------------------


@dataclass
class SourceInstance:
    """A source RDS instance in moto and the network/config it was created with."""

    instance_id: str
    subnet_group: str
    security_groups: list[str]
    parameter_group: str
    instance_class: str
    other_security_group: str  # in the same VPC, NOT attached to the source


def create_source_instance(rds: Any, ec2: Any, instance_id: str, *, retention: int = 7,
                           instance_class: str = "db.t3.micro") -> SourceInstance:
    """A PostgreSQL instance with its own subnet group, security group and parameter group."""
    suffix = uuid.uuid4().hex[:8]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24",
                                 AvailabilityZone=f"{REGION}{az}")["Subnet"]["SubnetId"]
               for i, az in ((1, "a"), (2, "b"))]
    sg = ec2.create_security_group(GroupName=f"db-{suffix}", Description="database",
                                   VpcId=vpc)["GroupId"]
    other = ec2.create_security_group(GroupName=f"other-{suffix}", Description="not the db's",
                                      VpcId=vpc)["GroupId"]
    subnet_group = f"app-db-{suffix}"
    rds.create_db_subnet_group(DBSubnetGroupName=subnet_group, SubnetIds=subnets,
                               DBSubnetGroupDescription="the app database's subnets")
    parameter_group = f"app-pg16-{suffix}"
    rds.create_db_parameter_group(DBParameterGroupName=parameter_group,
                                  DBParameterGroupFamily="postgres16", Description="app")
    rds.create_db_instance(
        DBInstanceIdentifier=instance_id, DBInstanceClass=instance_class, Engine="postgres",
        MasterUsername="postgres", MasterUserPassword=f"unused-{suffix}", AllocatedStorage=20,
        DBName="app", DBSubnetGroupName=subnet_group, VpcSecurityGroupIds=[sg],
        DBParameterGroupName=parameter_group, BackupRetentionPeriod=retention,
        Tags=[{"Key": "env", "Value": "production"}],
    )
    return SourceInstance(instance_id=instance_id, subnet_group=subnet_group,
                          security_groups=[sg], parameter_group=parameter_group,
                          instance_class=instance_class, other_security_group=other)


def moto_clients(endpoint_url: str) -> tuple[Any, Any]:
    """(rds, ec2) boto3 clients for the moto server."""
    return (boto3.client("rds", endpoint_url=endpoint_url, region_name=REGION),
            boto3.client("ec2", endpoint_url=endpoint_url, region_name=REGION))


# -- the backed provider -----------------------------------------------------------------------


class BackedRdsProvider(RdsProvider):
    """:class:`RdsProvider` on moto whose restored instances are real local clusters.

    The moto restore runs first (all of the adapter's validation, tagging and polling), then the
    self-hosted installation is restored at the same point under the instance's identifier;
    ``_connect_address`` resolves ``<identifier>.<...>.rds.amazonaws.com`` to that cluster.
    """

    @property
    def backing(self) -> SelfHostedProvider:
        provider = getattr(self, "_backing", None)
        if provider is None:
            config = BACKINGS.get(self.settings.instance_id)
            if config is None:
                raise ConfigError(f"no installation backs the moto RDS instance "
                                  f"{self.settings.instance_id} (see fakes.rds_backed.BACKINGS)")
            settings = load_settings(config)
            provider = SelfHostedProvider.from_config(settings.target("production"), settings)
            self._backing = provider
        return provider

    def _connect_address(self, address: str, port: int) -> tuple[str, int]:
        found = self.backing.find_restored(address.split(".", 1)[0])
        if found is None:  # not restored (yet): the moto hostname, which does not resolve
            return address, port
        params = parse(found.dsn.get_secret_value())
        return str(params.get("host", "127.0.0.1")), int(params["port"])

    def restore(self, point: RestorePoint, *, name: str, progress: Progress = no_progress,
                window: RestoreWindow | None = None) -> RestoredDatabase:
        restored = super().restore(point, name=name, progress=progress, window=window)
        backing = self.backing.find_restored(restored.handle)
        if backing is None:
            backing = self.backing.restore(self._backing_point(point), name=restored.handle,
                                           progress=progress)
        found = self.find_restored(name)  # now with a DSN that reaches the backing cluster
        assert found is not None
        return replace(found, phases={**restored.phases, **backing.phases},
                       recovered_to_time=backing.recovered_to_time or found.recovered_to_time,
                       recovered_to_lsn=backing.recovered_to_lsn)

    def find_restored(self, name: str) -> RestoredDatabase | None:
        """None while no cluster backs the instance yet: moto has the instance (a restore RDS
        accepted although its answer was lost, see tests/reliability/test_faults_rds.py) but
        the data restore behind it never ran. On RDS that instance would hold the data; here
        a re-run's :meth:`restore` reuses the instance and restores the data behind it."""
        found = super().find_restored(name)
        if found is not None and self.backing.find_restored(found.handle) is None:
            return None
        return found

    def _backing_point(self, point: RestorePoint) -> RestorePoint:
        """The same point for the WAL archive: RDS's window reaches "now" while the archive
        ends at its last segment, and a snapshot is the state at its creation time."""
        if point.kind is PointKind.BACKUP:
            assert point.value is not None
            snapshot = self._snapshot(point.value)
            point = RestorePoint.at(snapshot["SnapshotCreateTime"])
        if point.kind is PointKind.TIME:
            latest = self.backing.restore_window().latest
            assert point.time is not None
            if latest is not None and point.time > latest:
                return RestorePoint.latest()
        return point

    def _backing_stub(self, handle: str) -> RestoredDatabase:
        return RestoredDatabase(provider="selfhosted", dsn=SecretStr(""),
                                handle=str(self.backing.restore_root / handle))

    def adopt(self, restored: RestoredDatabase) -> None:
        super().adopt(restored)
        if (self.backing.restore_root / restored.handle).exists():
            self.backing.adopt(self._backing_stub(restored.handle))

    def discard(self, restored: RestoredDatabase) -> None:
        super().discard(restored)  # the adapter's safety checks decide
        self.backing.discard(self._backing_stub(restored.handle))


# -- the fixture ---------------------------------------------------------------------------------


@dataclass
class RdsWorld(InstallationWorld):
    """An installation whose target "production" is an RDS instance in moto (``config``: the
    restorekit.toml with provider = "rds")."""

    source: SourceInstance
    rds: Any  # a boto3 RDS client for moto

    @property
    def inst(self) -> Installation:
        return self.installation

    def instances(self) -> list[dict[str, Any]]:
        pages = self.rds.get_paginator("describe_db_instances").paginate()
        return [i for page in pages for i in page["DBInstances"]]

    def scratch_instances(self) -> list[str]:
        """Instances in moto that carry restorekit's scratch tag for this world's source."""
        return sorted(
            i["DBInstanceIdentifier"] for i in self.instances()
            if {t["Key"]: t["Value"] for t in i.get("TagList", [])}.get("restorekit:source")
            == self.source.instance_id
            and any(t["Key"] == "restorekit:scratch" for t in i.get("TagList", []))
        )


def rds_config_text(selfhosted_config: str, *, instance_id: str, endpoint_url: str) -> str:
    """The installation's restorekit.toml with target "production" moved onto RDS."""
    text = re.sub(r'(?m)^provider = "selfhosted"\n', 'provider = "rds"\n', selfhosted_config)
    text = re.sub(r'(?m)^engine = "native"\n', "", text)
    return text + f"""
[targets.production.rds]
instance_id = "{instance_id}"
region = "{REGION}"
endpoint_url = "{endpoint_url}"
wait_delay_seconds = 0
wait_max_attempts = 5
"""


@pytest.fixture(scope="module", name="rds_world")
def rds_world_fixture(moto_server: str, pg_base_dir: Path) -> Iterator[RdsWorld]:
    """An :class:`RdsWorld` for one test module (its app running). Import it into the module:
    ``from fakes.rds_backed import rds_world_fixture  # noqa: F401``; tests ask for
    ``rds_world``."""
    with rds_world_in(moto_server, pg_base_dir) as world:
        yield world


@contextlib.contextmanager
def rds_world_in(moto_server: str, pg_base_dir: Path) -> Iterator[RdsWorld]:
    """An :class:`RdsWorld` under ``pg_base_dir`` (its app running), torn down on the way out."""
    rds, ec2 = moto_clients(moto_server)
    # The moto instance first: its restore window starts before any of the data exists.
    source = create_source_instance(rds, ec2, f"production-{uuid.uuid4().hex[:8]}")
    with app_installation(pg_base_dir, "rds-world") as inst:
        config = inst.root / "restorekit-rds.toml"
        config.write_text(rds_config_text(inst.config.read_text(),
                                          instance_id=source.instance_id,
                                          endpoint_url=moto_server))
        original = base._REGISTRY.get("rds")  # noqa: SLF001 - put back exactly what was there
        BACKINGS[source.instance_id] = inst.config
        base.register("rds", "fakes.rds_backed:BackedRdsProvider")
        try:
            yield RdsWorld(installation=inst, config=config, source=source, rds=rds)
        finally:
            if original is None:
                base._REGISTRY.pop("rds", None)  # noqa: SLF001
            else:
                base.register("rds", original)
            BACKINGS.pop(source.instance_id, None)

def rds_target(name: str, rds: dict[str, Any], *, dsn: str | None = None,
               dsn_env: str | None = None) -> TargetConfig:
    """A TargetConfig for provider "rds" (contract tests)."""
    return TargetConfig(name=name, provider="rds", dsn=dsn, dsn_env=dsn_env, rds=rds)


__all__ = ["BACKINGS", "BackedRdsProvider", "RdsWorld", "SourceInstance",
           "create_source_instance", "moto_clients", "rds_target", "rds_world_fixture",
           "rds_world_in"]

"""The RDS provider's plumbing: settings, the boto3 client, describe calls, endpoints."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar, Self

from botocore.config import Config
from psycopg.conninfo import make_conninfo
from pydantic import SecretStr

from restorekit.clients import boto3_session, botocore_session
from restorekit.config import Settings, TargetConfig
from restorekit.errors import (
    ConfigError,
    ProviderError,
)
from restorekit.models import RestoredDatabase
from restorekit.pg.dsn import parse
from restorekit.providers._cloud import load_section, section_name
from restorekit.providers.rds.errors import (
    PROVIDER,
    _is_not_found,
    map_rds_errors,
)
from restorekit.providers.rds.settings import (
    TAG_ADOPTED,
    TAG_BACKUP,
    TAG_POINT,
    TAG_RECOVERED_TO,
    RdsSettings,
    _tags,
    restore_identifier,
)


class RdsBase:
    """The SDK plumbing every part of :class:`~restorekit.providers.rds.RdsProvider` uses:
    construction, the boto3 client, describe calls, and the DSN of a restored instance."""

    kind: ClassVar[str]

    def __init__(
        self,
        settings: RdsSettings,
        *,
        source_dsn: str | SecretStr,
        target_name: str = "",
        database: str | None = None,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        if not isinstance(source_dsn, SecretStr):
            source_dsn = SecretStr(source_dsn)
        self._source_dsn = source_dsn
        parse(self._source_dsn.get_secret_value())  # ConfigError (redacted) when malformed
        self.target_name = target_name
        self.database = database
        self._client = client
        self._sleep = sleep

    @classmethod
    def from_config(cls, target: TargetConfig, settings: Settings) -> Self:
        """Validate ``[targets.NAME.rds]`` and read the source DSN (``dsn`` / ``dsn_env``)."""
        options = load_section(RdsSettings, target.rds, section_name(target.name, "rds"))
        return cls(options, source_dsn=target.resolve_dsn(), target_name=target.name,
                   database=target.database)

    @property
    def client(self) -> Any:
        """The boto3 RDS client (built on first use; tests hook its event system)."""
        if self._client is None:
            core = botocore_session()  # one per provider: not thread-safe
            session = boto3_session(core)
            # Throttling, 5xx and dropped connections are retried by botocore (standard mode,
            # also for the restore calls: a retried restore that RDS already accepted answers
            # DBInstanceAlreadyExists, which _restore_instance turns into "wait for it").
            # AWS_MAX_ATTEMPTS / AWS_RETRY_MODE (or the profile's max_attempts / retry_mode)
            # win over our defaults, as for the S3 repository.
            retries: dict[str, Any] = {"mode": "standard"}
            if core.get_config_variable("retry_mode") == "adaptive":
                retries["mode"] = "adaptive"
            if core.get_config_variable("max_attempts") is None:
                retries["total_max_attempts"] = 5
            self._client = session.client(
                "rds", region_name=self.settings.region, endpoint_url=self.settings.endpoint_url,
                config=Config(retries=retries, connect_timeout=10, read_timeout=60),
            )
        return self._client

    @property
    def source_id(self) -> str:
        """What restores are made from: the Aurora cluster, else the instance."""
        return self.settings.aurora_cluster_id or self.settings.instance_id

    @property
    def _aurora(self) -> bool:
        return self.settings.aurora_cluster_id is not None

    def instance_id_for(self, name: str) -> str:
        """The identifier restore ``name`` gets (and is found by on a re-run)."""
        if not name or not name.strip():
            raise ConfigError("a restore needs a name")
        return restore_identifier(self.target_name, name)

    def _connect_address(self, address: str, port: int) -> tuple[str, int]:
        """Where clients reach an endpoint. The identity in production.

        This is the seam for a tunnel (an SSH or SSM port forward to a private instance) and for
        tests, where moto's endpoint hostnames do not resolve: a subclass maps them to a real
        PostgreSQL server. Every DSN this provider hands out goes through it.
        """
        return address, port

    # -- SDK plumbing ------------------------------------------------------------------------

    def _call(self, method: str, *, resource: str = "", **params: Any) -> Any:
        with map_rds_errors(method, resource=resource):
            return getattr(self.client, method)(**params)

    def _paginate(self, method: str, key: str, *, resource: str = "",
                  **params: Any) -> list[dict[str, Any]]:
        with map_rds_errors(method, resource=resource):
            items: list[dict[str, Any]] = []
            for page in self.client.get_paginator(method).paginate(**params):
                items.extend(page.get(key) or [])
            return items

    def _describe_instance(self, ident: str) -> dict[str, Any] | None:
        return self._describe_one("describe_db_instances", "DBInstances", ident,
                                  DBInstanceIdentifier=ident)

    def _describe_cluster(self, ident: str) -> dict[str, Any] | None:
        return self._describe_one("describe_db_clusters", "DBClusters", ident,
                                  DBClusterIdentifier=ident)

    def _describe(self, what: str, ident: str) -> dict[str, Any] | None:
        """The ``what`` ("instance" or "cluster") named ``ident``, or None when there is none."""
        return (self._describe_instance(ident) if what == "instance"
                else self._describe_cluster(ident))

    def _describe_one(self, method: str, key: str, ident: str,
                      **params: Any) -> dict[str, Any] | None:
        try:
            found = self._call(method, resource=ident, **params)[key]
        except ProviderError as exc:
            if _is_not_found(exc):
                return None
            raise
        return found[0] if found else None

    def _source_instance(self) -> dict[str, Any]:
        return self._source("instance", self.settings.instance_id, "instance_id",
                            "describe_db_instances")

    def _source_cluster(self) -> dict[str, Any]:
        assert self.settings.aurora_cluster_id is not None
        return self._source("cluster", self.settings.aurora_cluster_id, "aurora_cluster_id",
                            "describe_db_clusters")

    def _source(self, what: str, ident: str, setting: str, operation: str) -> dict[str, Any]:
        """The source ``what`` (see :meth:`_describe`); missing, it is a config error to fix,
        so the message names the setting to check."""
        found = self._describe(what, ident)
        if found is None:
            kind = "RDS instance" if what == "instance" else "Aurora cluster"
            raise ProviderError(
                f"{kind} {ident} ({self.settings.region}) not found: "
                f"check {setting} and region in [targets.NAME.rds]",
                provider=PROVIDER, operation=operation, status_code=404,
            )
        return found

    def _endpoint(self, instance: dict[str, Any]) -> tuple[str, int]:
        cluster_id = instance.get("DBClusterIdentifier")
        if self._aurora and cluster_id:
            cluster = self._describe_cluster(cluster_id)
            if cluster is not None and cluster.get("Endpoint"):
                # DBCluster.Endpoint is the writer's DNS name (a string), §1.8.
                return str(cluster["Endpoint"]), int(cluster.get("Port") or 5432)
        endpoint = instance.get("Endpoint") or {}
        if not endpoint.get("Address"):
            raise ProviderError(
                f"RDS instance {instance.get('DBInstanceIdentifier')} has no endpoint yet "
                f"(status {instance.get('DBInstanceStatus')})",
                provider=PROVIDER, operation="describe_db_instances", retryable=True,
            )
        return str(endpoint["Address"]), int(endpoint.get("Port") or 5432)

    def _dsn(self, address: str, port: int) -> SecretStr:
        host, real_port = self._connect_address(address, port)
        params = parse(self._source_dsn.get_secret_value())
        params.pop("hostaddr", None)  # it would win over the new host
        params.update(host=host, port=str(real_port))
        if self.database:
            params["dbname"] = self.database
        return SecretStr(make_conninfo("", **params))

    def _restored(self, instance: dict[str, Any], *,
                  phases: dict[str, float] | None = None) -> RestoredDatabase:
        tags = _tags(instance)
        recovered = tags.get(TAG_RECOVERED_TO)
        return RestoredDatabase(
            provider=self.kind,
            handle=str(instance["DBInstanceIdentifier"]),
            dsn=self._dsn(*self._endpoint(instance)),
            point=tags.get(TAG_POINT, ""),
            backup_id=tags.get(TAG_BACKUP, ""),
            scratch=self.settings.scratch_tag_key in tags and TAG_ADOPTED not in tags,
            phases=dict(phases or {}),
            recovered_to_time=datetime.fromisoformat(recovered) if recovered else None,
        )


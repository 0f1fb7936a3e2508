"""restorekit.toml: the targets restorekit protects and how.

The file is found at ``--config``, else ``$RESTOREKIT_CONFIG``, else ``./restorekit.toml``. It
never holds secret values: a DSN in it must not carry a password (use ``dsn_env`` to name an
environment variable, or PGPASSFILE).

Example::

    [restorekit]
    state_dir = "/var/lib/restorekit"          # scratch restores, work files

    [targets.production]
    provider = "selfhosted"
    engine = "native"                          # or "pgbackrest"
    dsn = "host=127.0.0.1 port=5432 user=postgres dbname=app"
    repository = "file:///var/lib/restorekit/repo"
    tier = "critical"
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from restorekit.errors import ConfigError
from restorekit.pg.dsn import parse, redact
from restorekit.smoke import SmokeCheck
from restorekit.webhook import WebhookConfig

TierName = Literal["critical", "standard", "non-critical"]

#: The runbook's objectives: RTO critical 1 h / standard 4 h / non-critical 24 h;
#: RPO critical 15 min / standard 1 h / non-critical 24 h.
DEFAULT_TIERS: dict[str, tuple[timedelta, timedelta]] = {
    "critical": (timedelta(hours=1), timedelta(minutes=15)),
    "standard": (timedelta(hours=4), timedelta(hours=1)),
    "non-critical": (timedelta(hours=24), timedelta(hours=24)),
}

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
#: ``[targets.X.backups] compression``: pg_basebackup's --compress form.
COMPRESSION_RE = re.compile(r"(?:(?P<side>server|client)-)?(?P<method>none|lz4|zstd|gzip)"
                            r"(?::(?P<level>[0-9]{1,2}))?")


def _five_field_cron(value: str) -> str:
    if len(value.split()) != 5:
        raise ValueError(f"cron {value!r} must have 5 fields (minute hour day month weekday)")
    return value


def _iana_zone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {value!r} (use an IANA name like Europe/Berlin)") from None
    return value


#: A schedule as the backup and the drill schedules take it: a 5-field cron line in an IANA
#: time zone (both checked when the config is read, not when the schedule first fires).
Cron = Annotated[str, AfterValidator(_five_field_cron)]
TimeZone = Annotated[str, AfterValidator(_iana_zone)]


class Tier(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rto_minutes: float = Field(gt=0)
    rpo_minutes: float = Field(gt=0)


class AppConfig(BaseModel):
    """The application in front of the database (the runbook's "Stop/Restart Application")."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["local", "vercel", "none"] = "none"
    vercel: dict[str, Any] | None = None  # validated by restorekit.apps.vercel
    env_file: Path | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    health_url: str | None = None
    # Where smoke checks' paths are sent; the health URL's origin when not given.
    base_url: str | None = None
    health_attempts: int = Field(default=20, ge=1, le=600)  # 0.5 s apart: a redeploy takes time

    @model_validator(mode="after")
    def _local_needs(self) -> AppConfig:
        if self.kind == "local" and (self.env_file is None or self.port is None):
            raise ValueError("app kind 'local' needs env_file and port")
        return self


class ConnectionConfig(BaseModel):
    """Where the application's connection string lives.

    ``key`` names the one variable (``DATABASE_URL``); ``keys`` names several that move
    together, e.g. Prisma's pooled ``DATABASE_URL`` and unpooled ``DIRECT_URL`` (give one or
    the other). Every key gets its own store built from ``options``, merged with
    ``key_options[KEY]`` for that key (e.g. another Prefect Secret block per key).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["envfile", "vercel", "aws-secrets-manager", "prefect-secret", "none"] = "none"
    path: Path | None = None
    key: str = "DATABASE_URL"
    keys: tuple[str, ...] | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # validated by the store
    key_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _envfile_needs(self) -> ConnectionConfig:
        if self.kind == "envfile" and self.path is None:
            raise ValueError("connection kind 'envfile' needs path")
        if self.keys is not None:
            if "key" in self.model_fields_set:
                raise ValueError("give key (one variable) or keys (several), not both")
            if not self.keys:
                raise ValueError("keys must name at least one variable")
            doubled = sorted({k for k in self.keys if self.keys.count(k) > 1})
            if doubled:
                raise ValueError(f"keys names {', '.join(doubled)} more than once")
        unknown = sorted(set(self.key_options) - set(self.names))
        if unknown:
            raise ValueError(f"key_options for {', '.join(unknown)}, which is not in "
                             f"{'keys' if self.keys else 'key'}")
        if self.kind in _ONE_VALUE_PER and len(self.names) > 1:
            where = [tuple(self.store_options(k).get(o) for o in _ONE_VALUE_PER[self.kind])
                     for k in self.names]
            if len(set(where)) < len(where):
                raise ValueError(
                    f"connection kind {self.kind!r} keeps one value per "
                    f"{' and '.join(_ONE_VALUE_PER[self.kind])}: give each key its own in "
                    "key_options")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """The variables swapped together, in order (the first is the primary one)."""
        return self.keys if self.keys is not None else (self.key,)

    def store_options(self, key: str) -> dict[str, Any]:
        """The options of ``key``'s store: ``options`` with ``key_options[key]`` over them.

        With several keys, an AWS Secrets Manager secret is a JSON object whose keys are named
        like the variables, unless ``json_key`` says otherwise.
        """
        merged = {**self.options, **self.key_options.get(key, {})}
        if (self.kind == "aws-secrets-manager" and len(self.names) > 1
                and "json_key" not in merged):
            merged["json_key"] = key
        return merged


# Stores that hold exactly one value per (these options): several keys need distinct ones.
_ONE_VALUE_PER: dict[str, tuple[str, ...]] = {
    "prefect-secret": ("block_name",),
    "aws-secrets-manager": ("secret_id", "json_key"),
}


class CheckConfig(BaseModel):
    """A custom verification query, e.g. the runbook's "users without clients"."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    sql: str
    expect: Literal["zero_rows", "nonzero", "equals"] = "zero_rows"
    value: int | None = None
    critical: bool = True


class VerifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    critical_tables: tuple[str, ...] = ()
    row_count_tolerance: float = Field(default=0.0, ge=0, le=1)
    amcheck: bool = True
    install_amcheck: bool = False  # CREATE EXTENSION amcheck where it is missing
    checks: tuple[CheckConfig, ...] = ()


class WatchConfig(BaseModel):
    """``[targets.X.watch]``: the watch after a restore (runbook: "Monitoring After Restore").

    The ``post-restore-watch`` flow samples production every ``interval_seconds`` for
    ``window_minutes`` and alerts (once per kind and subject) when a sample crosses a limit.
    Defaults: latency a user would call slow (2 s for the app, 500 ms to open a database
    connection and answer ``SELECT 1``), errors on more than 5% of requests, any critical table
    losing more than 1% of its baseline rows (production tables grow; a drop right after a
    restore is data going missing again), any orphan row or failing critical custom check.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    window_minutes: float = Field(default=30, gt=0, le=24 * 60)
    interval_seconds: float = Field(default=30, gt=0, le=3600)
    max_health_latency_ms: float = Field(default=2000, gt=0)
    max_db_latency_ms: float = Field(default=500, gt=0)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)  # of health requests / connections
    row_count_drop_fraction: float = Field(default=0.01, ge=0, le=1)
    # Latency over its limit on this many samples in a row (one slow answer is noise), and this
    # many failed samples at least before an error rate counts.
    sustained_samples: int = Field(default=2, ge=1, le=100)
    # Foreign keys and custom checks scan tables: every Nth sample (and the first and last).
    integrity_every: int = Field(default=10, ge=1)
    timeout_seconds: float = Field(default=10, gt=0, le=600)  # per request, connect, statement

    @model_validator(mode="after")
    def _interval_within_window(self) -> WatchConfig:
        if self.interval_seconds > self.window_minutes * 60:
            raise ValueError(f"interval_seconds {self.interval_seconds:g} is longer than the "
                             f"window ({self.window_minutes:g} min)")
        return self


class BackupPolicy(BaseModel):
    """``[targets.X.backups]``: when base backups run, how long they are kept, and how old the
    newest backup and the newest archived WAL may get before the tier's RPO is at risk.

    The defaults are the runbook's: a daily backup, 30 days of backups, point-in-time recovery
    over at least the last 7 days. ``keep_count`` backups are kept whatever their age (7: a
    week of daily backups), so a schedule that stopped running never expires the last good
    backups. ``pitr_days`` keeps the backup a restore to ``now - pitr_days`` starts from (and
    every WAL segment from it on), even when ``keep_days`` is shorter.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    cron: Cron = "0 2 * * *"  # daily at 02:00
    timezone: TimeZone = "UTC"
    keep_days: float = Field(default=30, gt=0)
    keep_count: int = Field(default=7, ge=1)
    pitr_days: float = Field(default=7, ge=0)
    # Freshness limits; None: the schedule's interval plus 2 h for the backup, the tier's RPO
    # for the WAL (see :meth:`freshness_limits`).
    max_backup_age_hours: float | None = Field(default=None, gt=0)
    max_wal_age_minutes: float | None = Field(default=None, gt=0)
    # Native engine: pg_basebackup's --compress spec ("[server-|client-]METHOD[:LEVEL]", METHOD
    # one of none, lz4, zstd, gzip) for base backups; archived WAL segments are compressed with
    # METHOD[:LEVEL] by the archive_command. pgBackRest: its compress-type (and compress-level).
    # lz4 by measurement (bench/rto_bench.py, 1 GB on 2 cores): the base restore and the backup
    # are faster than uncompressed, the repository holds 0.25 GB per GB of database (1.04
    # plain); zstd is smaller still (0.16) and no faster to restore.
    compression: str = "lz4"
    # pgBackRest's process-max (parallel compression and transfer); the native engine ignores it.
    process_max: int = Field(default=2, ge=1, le=64)

    @field_validator("compression")
    @classmethod
    def _compression(cls, value: str) -> str:
        if not COMPRESSION_RE.fullmatch(value):
            raise ValueError(
                f"compression {value!r}: expected none, lz4, zstd or gzip, optionally with a "
                "level and a side, e.g. \"lz4\", \"zstd:3\", \"server-lz4\", \"client-gzip:5\"")
        return value

    def freshness_limits(self, rpo: timedelta) -> tuple[timedelta, timedelta]:
        """(max age of the newest backup, max age of the newest archived WAL)."""
        if self.max_backup_age_hours is not None:
            backup = timedelta(hours=self.max_backup_age_hours)
        else:
            _, _, day, month, weekday = self.cron.split()
            if day == month == weekday == "*":
                period = timedelta(days=1)
            elif day == "*" and month == "*":
                period = timedelta(days=7)
            else:
                period = timedelta(days=31)
            backup = period + timedelta(hours=2)
        wal = (timedelta(minutes=self.max_wal_age_minutes)
               if self.max_wal_age_minutes is not None else rpo)
        return backup, wal


class TargetConfig(BaseModel):
    """One protected database."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    provider: Literal["selfhosted", "rds", "neon", "supabase"] = "selfhosted"
    engine: Literal["native", "pgbackrest"] = "native"
    dsn: str | None = None
    dsn_env: str | None = None
    database: str | None = None
    repository: str | None = None
    data_dir: Path | None = None
    socket_dir: Path | None = None
    stanza: str | None = None
    pg_bin_dir: Path | None = None
    # Self-hosted: where restored clusters listen (postgresql.conf listen_addresses), and the
    # host name written into the application's connection string after a swap. The default,
    # loopback, suits restorekit and the application on one machine (the demo); with the
    # application on another host, listen on an address it can reach and advertise that.
    listen_addresses: str = "127.0.0.1"
    advertise_host: str | None = None
    tier: TierName = "standard"
    app: AppConfig = Field(default_factory=AppConfig)
    connection: ConnectionConfig = Field(default_factory=ConnectionConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    # [[targets.NAME.smoke]]: requests the application must answer after a restore.
    smoke: tuple[SmokeCheck, ...] = ()
    watch: WatchConfig = Field(default_factory=WatchConfig)
    backups: BackupPolicy = Field(default_factory=BackupPolicy)
    # Provider-specific settings, validated by the provider itself (its from_config):
    # [targets.NAME.rds] / [targets.NAME.neon] / [targets.NAME.supabase].
    rds: dict[str, Any] | None = None
    neon: dict[str, Any] | None = None
    supabase: dict[str, Any] | None = None
    # Set by restorekit.production.apply (never from the file): where adoption moved the
    # production, laid over the DSN's host and port by resolve_dsn.
    _adopted_location: Any = PrivateAttr(default=None)

    @field_validator("dsn")
    @classmethod
    def _no_password_in_dsn(cls, value: str | None) -> str | None:
        if value is None:
            return value
        params = parse(value)
        port = params.get("port")
        if port and not (str(port).isascii() and str(port).isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"dsn port {port!r} is not a port number (1-65535)")
        if params.get("password"):
            raise ValueError(
                f"dsn {redact(value)} contains a password; put the DSN in an environment "
                "variable and name it with dsn_env, or use a PGPASSFILE"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TargetConfig:
        if not _NAME.match(self.name):
            raise ValueError(
                f"target name {self.name!r} must be lower-case letters, digits, '-' or '_'"
            )
        if bool(self.dsn) == bool(self.dsn_env):
            raise ValueError("give exactly one of dsn or dsn_env")
        if self.provider == "selfhosted" and not self.repository and self.engine == "native":
            raise ValueError("a self-hosted target with engine 'native' needs repository")
        if self.provider != "selfhosted" and getattr(self, self.provider) is None:
            raise ValueError(
                f"provider {self.provider!r} needs a [targets.{self.name}.{self.provider}] section"
            )
        everywhere = self.listen_addresses.split(",")[0] in ("*", "0.0.0.0", "::")
        if not self.advertise_host and everywhere:
            raise ValueError(
                f"listen_addresses {self.listen_addresses!r} listens everywhere: give "
                "advertise_host, the host name the application reaches restored clusters at")
        if self.engine == "pgbackrest":
            missing = [k for k in ("data_dir", "socket_dir") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"engine 'pgbackrest' needs {', '.join(missing)}")
        return self

    @field_validator("listen_addresses")
    @classmethod
    def _addresses(cls, value: str) -> str:
        parts = [p.strip() for p in value.split(",")]
        if not all(parts) or any(not re.fullmatch(r"[A-Za-z0-9.:*_-]+", p) for p in parts):
            raise ValueError(
                f"listen_addresses {value!r} must be a comma-separated list of host names or "
                "addresses (as in postgresql.conf)")
        return ",".join(parts)

    @property
    def restored_host(self) -> str:
        """The host restored clusters are reached at (by restorekit and the application)."""
        return self.advertise_host or self.listen_addresses.split(",")[0]

    def resolve_dsn(self) -> str:
        """The DSN, read from the environment when ``dsn_env`` is used (secret: never log it),
        re-pointed at the adopted production when there is one (restorekit.production)."""
        if self.dsn:
            value = self.dsn
        else:
            assert self.dsn_env is not None
            value = os.environ.get(self.dsn_env) or ""
            if not value:
                raise ConfigError(
                    f"target {self.name!r}: environment variable {self.dsn_env} is not set"
                )
        if self._adopted_location is not None:
            from restorekit.pg.dsn import Location, location_of, repoint

            to = self._adopted_location
            value = repoint(value, Location(hosts=to.hosts or location_of(value).hosts,
                                            ports=to.ports,
                                            dbname=to.dbname or location_of(value).dbname))
        return value


class NotifyConfig(BaseModel):
    """Where start/success/failure notices go. Webhook URLs are secrets: name an env var."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    webhook_url_env: str | None = None
    # "block-type-slug/block-name", e.g. "slack-webhook/oncall"
    prefect_blocks: tuple[str, ...] = ()

    @field_validator("prefect_blocks")
    @classmethod
    def _slug_and_name(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if item.count("/") != 1 or not all(item.split("/")):
                raise ValueError(
                    f"prefect block {item!r} must be 'block-type-slug/block-name', "
                    "e.g. 'slack-webhook/oncall'"
                )
        return value


class DrillConfig(BaseModel):
    """The weekly restore drill's schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cron: Cron = "0 3 * * 1"  # Mondays 03:00
    timezone: TimeZone = "UTC"
    point: Literal["latest", "random"] = "latest"
    row_count_tolerance: float = Field(default=0.01, ge=0, le=1)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state_dir: Path = Path(".restorekit")
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    drill: DrillConfig = Field(default_factory=DrillConfig)
    webhook: WebhookConfig | None = None
    targets: dict[str, TargetConfig] = Field(default_factory=dict)
    tiers: dict[str, Tier] = Field(default_factory=dict)
    source_path: Path | None = None

    def target(self, name: str) -> TargetConfig:
        try:
            target = self.targets[name]
        except KeyError:
            known = ", ".join(sorted(self.targets)) or "none configured"
            raise ConfigError(f"unknown target {name!r}; known targets: {known}") from None
        # The production adoption recorded (scenario 1), over the file's: restorekit.production.
        from restorekit import production

        return production.apply(target, production.load(self.state_dir, name))

    def objectives(self, tier: str) -> tuple[timedelta, timedelta]:
        """(RTO, RPO) for a tier: the config's override, else the runbook's defaults."""
        if tier in self.tiers:
            t = self.tiers[tier]
            return timedelta(minutes=t.rto_minutes), timedelta(minutes=t.rpo_minutes)
        return DEFAULT_TIERS[tier]

    @property
    def restore_root(self) -> Path:
        return (self.state_dir / "restores").absolute()

    @property
    def work_dir(self) -> Path:
        return (self.state_dir / "work").absolute()


def config_path(explicit: str | Path | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("RESTOREKIT_CONFIG")
    return Path(env) if env else Path("restorekit.toml")


def load_settings(path: str | Path | None = None) -> Settings:
    """Read and validate restorekit.toml. Raises ConfigError naming the file and the problem."""
    file = config_path(path)
    try:
        raw = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"config file {file} not found; create one (see docs/configuration.md) or pass "
            "--config / set RESTOREKIT_CONFIG"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    return settings_from_dict(raw, source=file)


def settings_from_dict(raw: dict[str, object], *, source: Path | None = None) -> Settings:
    unknown = set(raw) - {"restorekit", "targets", "tiers", "notify", "drill", "webhook"}
    where = str(source) if source else "config"
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {', '.join(sorted(unknown))}")
    sections: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: [{key}] must be a table, not {type(value).__name__}")
        if key in ("targets", "tiers"):
            for name, body in value.items():
                if not isinstance(body, dict):
                    raise ConfigError(f"{where}: [{key}.{name}] must be a table")
        sections[key] = value
    base = dict(sections.get("restorekit", {}))
    targets = {}
    try:
        for name, body in sections.get("targets", {}).items():
            targets[name] = TargetConfig(name=name, **body)
        state_dir = Path(base.pop("state_dir", ".restorekit"))
        if source is not None and not state_dir.is_absolute():
            state_dir = source.parent / state_dir
        settings = Settings(
            state_dir=state_dir,
            targets=targets,
            tiers={k: Tier(**v) for k, v in sections.get("tiers", {}).items()},
            source_path=source,
            notify=NotifyConfig(**sections.get("notify", {})),
            drill=DrillConfig(**sections.get("drill", {})),
            webhook=WebhookConfig(**sections["webhook"]) if sections.get("webhook") else None,
            **base,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{where}: {redact(problems)}") from None
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    for name in settings.tiers:
        if name not in DEFAULT_TIERS:
            raise ConfigError(f"{where}: unknown tier {name!r}; tiers: {', '.join(DEFAULT_TIERS)}")
    return settings

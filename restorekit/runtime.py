"""Everything restorekit needs to act on one target, built from restorekit.toml.

Prefect tasks call :func:`target_runtime` inside the task (clients are built where they are
used, never passed between tasks) and pass only secret-free references between them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from restorekit.apps.base import AppPlatform, get_app_platform
from restorekit.config import Settings, TargetConfig, load_settings
from restorekit.errors import ConfigError, RestoreKitError, SafetyError
from restorekit.models import RestoredDatabase, RestoredRef
from restorekit.pg.dsn import display, libpq_dsn, uses_pooler
from restorekit.providers.base import DatabaseProvider, provider_from_config
from restorekit.sinks.base import ConnectionStore, get_store
from restorekit.sinks.group import StoreGroup
from restorekit.snapshot_scratch import SnapshotScratch


@dataclass
class TargetRuntime:
    settings: Settings
    config: TargetConfig

    @property
    def name(self) -> str:
        return self.config.name

    @functools.cached_property
    def provider(self) -> DatabaseProvider:
        return provider_from_config(self.config, self.settings)

    @functools.cached_property
    def app(self) -> AppPlatform | None:
        app = self.config.app
        if app.kind == "none":
            return None
        if app.kind == "local":
            assert app.env_file is not None and app.port is not None
            return get_app_platform(
                app.kind, env_file=app.env_file, port=app.port,
                state_dir=self.settings.state_dir.absolute() / "apps" / self.name,
            )
        return get_app_platform(app.kind, **(getattr(app, app.kind) or {}))

    @functools.cached_property
    def store(self) -> StoreGroup | None:
        """The application's connection string(s): one ordinary store per configured key,
        grouped so that they move together (see :mod:`restorekit.sinks.group`)."""
        conn = self.config.connection
        if conn.kind == "none":
            return None
        stores: dict[str, ConnectionStore] = {}
        for key in conn.names:
            if conn.kind == "envfile":
                stores[key] = get_store(conn.kind, path=conn.path, key=key)
                continue
            options = conn.store_options(key)
            if conn.kind == "vercel":
                # Where the previous value is kept (encrypted) for a rollback.
                options.setdefault("state_dir",
                                   self.settings.state_dir.absolute() / "connections" / self.name)
            stores[key] = get_store(conn.kind, key=key, **options)
        return StoreGroup(stores)

    def health_url(self) -> str | None:
        if self.config.app.health_url:
            return self.config.app.health_url
        return self.app.health_url() if self.app is not None else None

    def live_dsn(self) -> str:
        """The production database as the application sees it, in the form libpq reads (the
        application's own URL options, e.g. Prisma's ``schema``, left out): the connection
        store's value when there is one, else the target's own DSN. Of several keys, the first
        that does not go through a pooler (``DIRECT_URL`` beside a pooled ``DATABASE_URL``),
        else the first."""
        if self.store is None:
            return self.config.resolve_dsn()
        if len(self.store.keys) == 1:
            return libpq_dsn(self.store.read().get_secret_value())
        values = [v.get_secret_value() for v in self.store.read_all(missing_ok=True).values()
                  if v is not None]
        if not values:
            return libpq_dsn(self.store.read().get_secret_value())  # raises: says what is missing
        return libpq_dsn(next((v for v in values if not uses_pooler(v)), values[0]))

    def connection_in_use(self) -> list[str]:
        """The DSNs that must never be removed as scratch: every key of the application's
        connection store (none without one), in the form libpq reads.

        Raises:
            SafetyError: the store exists but a key cannot be read (so it is unknown what the
                application runs on: remove nothing).
        """
        if self.store is None:
            return []
        try:
            return [libpq_dsn(v.get_secret_value()) for v in self.store.read_all().values()
                    if v is not None]
        except RestoreKitError as exc:
            raise SafetyError(
                f"cannot read the application's connection string from {self.store.describe()} "
                f"({exc}); no scratch restore is removed while it is unknown which one the "
                "application uses") from exc

    def reports_dir(self) -> Path:
        path = self.settings.state_dir.absolute() / "reports" / self.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- restored databases ------------------------------------------------------------------

    def ref(self, restored: RestoredDatabase, name: str, *, reused: bool = False) -> RestoredRef:
        return RestoredRef(
            provider=restored.provider, target=self.name, name=name, handle=restored.handle,
            point=restored.point, backup_id=restored.backup_id,
            display=display(restored.dsn.get_secret_value()),
            recovered_to_time=restored.recovered_to_time,
            recovered_to_lsn=restored.recovered_to_lsn, phases=dict(restored.phases),
            reused=reused, access=restored.access,
            pooled_display=display(restored.pooled_dsn.get_secret_value())
            if restored.pooled_dsn is not None else "",
        )

    @functools.cached_property
    def snapshot_scratch(self) -> SnapshotScratch:
        """Scratch copies from logical snapshots (for providers without new-target restores)."""
        if not self.config.repository:
            raise ConfigError(
                f"target {self.name!r} has no repository: logical snapshots need one"
            )
        from restorekit.pg.tools import default_os_user
        from restorekit.repository import open_repository

        return SnapshotScratch(
            self.settings.state_dir.absolute() / "snapshot-restores" / self.name,
            open_repository(self.config.repository, os_user=default_os_user()),
        )

    def restored(self, ref: RestoredRef) -> RestoredDatabase:
        """Turn a reference back into a live restored database (starting it if needed)."""
        owner = self.snapshot_scratch if ref.provider == "snapshot" else self.provider
        found = owner.find_restored(ref.name)
        if found is None:
            raise ConfigError(
                f"restored database {ref.name!r} of target {self.name!r} no longer exists "
                f"({ref.handle}); it may have been discarded"
            )
        return found

    def dsn_for(self, ref: RestoredRef) -> SecretStr:
        return self.restored(ref).dsn

    def locations_for(self, ref: RestoredRef) -> tuple[SecretStr, SecretStr | None]:
        """(direct DSN, pooled DSN or None) of a restored database, for the connection swap."""
        restored = self.restored(ref)
        return restored.dsn, restored.pooled_dsn


def target_runtime(target: str, config_path: str | None = None) -> TargetRuntime:
    """Load the config (``config_path``, ``$RESTOREKIT_CONFIG`` or ./restorekit.toml)."""
    settings = load_settings(config_path)
    return TargetRuntime(settings=settings, config=settings.target(target))

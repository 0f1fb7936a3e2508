"""Self-hosted PostgreSQL: real base backups, a WAL archive and point-in-time recovery.

Restores always go into a NEW cluster under ``restore_root`` on this machine, on its own port,
with ``archive_mode=off``. Each one carries a scratch marker (``restorekit-scratch.json`` beside
its data directory) so that leftovers of a failed run can be listed and removed, and so that
``discard`` can never remove anything restorekit did not create.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypedDict, cast

from pydantic import SecretStr

from restorekit.config import Settings, TargetConfig
from restorekit.engines.base import BackupEngine, SourceSpec
from restorekit.engines.recovery import (
    apply_overrides,
    restored_cluster_settings,
    run_recovery,
    settle_access_rules,
    write_recovery_signal,
)
from restorekit.errors import (
    ConfigError,
    PgToolFailed,
    PostgresError,
    RestoreKitError,
    SafetyError,
)
from restorekit.models import BackupInfo, PointKind, RestoredDatabase, RestorePoint, RestoreWindow
from restorekit.pg.cluster import LocalCluster, free_port
from restorekit.pg.dsn import at_address, parse
from restorekit.pg.tools import default_os_user, find_bin_dir, make_dir
from restorekit.providers.base import (
    Capability,
    Progress,
    ProviderDefaults,
    check_restore_name,
    no_progress,
)

if TYPE_CHECKING:
    from restorekit.damage import Damage, FoundPoint, Loss
    from restorekit.production import Protection

log = logging.getLogger(__name__)

MARKER = "restorekit-scratch.json"


class _Marker(TypedDict, total=False):
    """A restore's marker file (JSON): written incomplete before the restore starts, completed
    after it, marked when adopted."""

    complete: bool
    target: str
    point: str  # the requested point
    replayed_to: str  # the point replayed to (a found xid's commit, say)
    backup_id: str
    created_at: str
    engine: str
    # Once complete:
    port: int
    database: str
    host: str
    access: str
    recovered_to_time: str | None
    recovered_to_lsn: str | None
    phases: dict[str, float]
    # Once adopted:
    adopted: bool
    adopted_at: str


class SelfHostedProvider(ProviderDefaults):
    """A PostgreSQL cluster restorekit backs up with an engine (native or pgBackRest).

    Args:
        engine: the backup engine for this target.
        source: how to reach the source cluster.
        restore_root: where restored clusters are created (one directory each).
        database: the application database inside the cluster (the restored DSN points at it).
        target_name: the config target, recorded in scratch markers.
    """

    kind: ClassVar[str] = "selfhosted"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.NEW_TARGET_RESTORE,
            Capability.POINT_IN_TIME,
            Capability.LSN_TARGET,
            Capability.XID_TARGET,
            Capability.NAMED_RESTORE_POINT,
            Capability.NAMED_BACKUPS,
            Capability.FIND_POINT,
            Capability.LOSS_REPORT,
        }
    )
    why_not = {
        Capability.IN_PLACE_RESTORE: "self-hosted restores go into a NEW cluster; in-place "
        "restore is not offered",
    }

    def __init__(
        self,
        *,
        engine: BackupEngine,
        source: SourceSpec,
        restore_root: Path,
        database: str = "postgres",
        target_name: str = "",
        listen_addresses: str = "127.0.0.1",
        restored_host: str = "127.0.0.1",
    ) -> None:
        self.engine = engine
        self.source = source
        self.restore_root = Path(restore_root).absolute()
        self.database = database
        self.target_name = target_name
        self.listen_addresses = listen_addresses
        self.restored_host = restored_host

    # -- construction from restorekit.toml -----------------------------------------------------

    @classmethod
    def from_config(cls, target: TargetConfig, settings: Settings) -> SelfHostedProvider:
        dsn = target.resolve_dsn()
        params = parse(dsn)
        os_user = default_os_user()
        bin_dir = find_bin_dir(str(target.pg_bin_dir) if target.pg_bin_dir else None)
        source = SourceSpec(
            dsn=dsn,
            data_dir=target.data_dir,
            socket_dir=target.socket_dir,
            port=int(params.get("port") or 5432),
            os_user=os_user,
            bin_dir=bin_dir,
        )
        work_dir = settings.work_dir / target.name
        engine: BackupEngine
        if target.engine == "native":
            from restorekit.engines.native import NativeEngine
            from restorekit.repository import open_repository

            assert target.repository is not None
            engine = NativeEngine(
                source,
                open_repository(target.repository, os_user=os_user),
                repo_url=target.repository,
                work_dir=work_dir,
                compression=target.backups.compression,
            )
        else:
            from restorekit.engines.pgbackrest import PgBackRestEngine, retention_options
            from restorekit.repository import parse_repository_url

            if target.repository:
                location = parse_repository_url(target.repository)
                if location.kind != "local" or location.path is None:
                    raise ConfigError(
                        f"target {target.name!r}: engine 'pgbackrest' is configured here with a "
                        f"local repository only (file:///path), got {location.url}"
                    )
                repo_path = location.path
            else:
                repo_path = settings.state_dir.absolute() / "pgbackrest" / target.name
            keep_full, keep_type = retention_options(target.backups)
            engine = PgBackRestEngine(
                source,
                stanza=target.stanza or target.name,
                repo_path=repo_path,
                work_dir=work_dir / "pgbackrest",
                repo_retention_full=keep_full,
                repo_retention_full_type=keep_type,
                compression=target.backups.compression,
                process_max=target.backups.process_max,
            )
        return cls(
            engine=engine,
            source=source,
            restore_root=settings.restore_root / target.name,
            database=target.database or str(params.get("dbname") or "postgres"),
            target_name=target.name,
            listen_addresses=target.listen_addresses,
            restored_host=target.restored_host,
        )

    # -- DatabaseProvider ----------------------------------------------------------------------

    def restore_window(self) -> RestoreWindow:
        return self.engine.restore_window()

    def list_backups(self) -> list[BackupInfo]:
        return self.engine.list_backups()

    def create_backup(self, label: str = "", *, progress: Progress = no_progress) -> BackupInfo:
        return self.engine.backup(label=label, progress=progress)

    def restore(
        self,
        point: RestorePoint,
        *,
        name: str,
        progress: Progress = no_progress,
        window: RestoreWindow | None = None,
    ) -> RestoredDatabase:
        """Restore into a new local cluster at ``point``; the source is never touched.

        Raises:
            RestorePointError: the point is outside the window (checked before anything is
                created) or the archived WAL cannot reach it (nothing is promoted).
            ConfigError: ``name`` is invalid or already used.
        """
        check_restore_name(name)
        window = window or self.restore_window()
        window.check(point)
        requested = point
        point = effective_point(point, window)
        backups = self.list_backups()
        backup = self._choose_backup(point, backups)
        port = free_port()
        dsn = self._restored_dsn(port, self.database)  # an unresolvable host fails here, first
        home = self._new_restore_home(name, requested, point, backup)
        os_user = self.source.os_user
        data_dir = make_dir(home / "data", os_user)
        phases: dict[str, float] = {}
        cluster = LocalCluster(data_dir=data_dir, port=port,
                               bin_dir=self.source.bin_dir or find_bin_dir(), os_user=os_user)
        try:
            started = time.monotonic()
            settings = self.engine.prepare_restore(point, backup, data_dir, progress=progress)
            phases["base restore"] = time.monotonic() - started
            access_settings, access = settle_access_rules(
                data_dir, os_user, listen_addresses=self.listen_addresses)
            apply_overrides(data_dir, {**restored_cluster_settings(port, self.listen_addresses),
                                       **access_settings, **settings}, os_user)
            if not (data_dir / "recovery.signal").exists():
                write_recovery_signal(data_dir, os_user)
            result = run_recovery(cluster, dsn=dsn, target_lsn=_target_lsn(point),
                                  progress=progress)
            phases["wal replay"] = result.replay_seconds
        except BaseException:
            # Never leave a half-restored cluster running: stop it; keep nothing but the log.
            with contextlib.suppress(RestoreKitError, OSError):
                cluster.stop(mode="immediate")
            shutil.rmtree(home, ignore_errors=True)
            raise
        _update_marker(home, {
            "complete": True, "port": port, "database": self.database,
            "host": self.restored_host, "access": access,
            "recovered_to_time": (result.last_commit_time.isoformat()
                                  if result.last_commit_time else None),
            "recovered_to_lsn": result.recovered_lsn, "phases": phases,
        })
        log.info("restored %s at %s into %s (port %d)", self.target_name, point, data_dir, port)
        return RestoredDatabase(
            provider=self.kind,
            handle=str(home),
            dsn=SecretStr(dsn),
            point=str(requested),
            backup_id=backup.backup_id,
            scratch=True,
            phases=phases,
            recovered_to_time=result.last_commit_time,
            recovered_to_lsn=result.recovered_lsn,
            access=access,
        )

    def _new_restore_home(self, name: str, requested: RestorePoint, point: RestorePoint,
                          backup: BackupInfo) -> Path:
        """The restore's directory under ``restore_root``, with its incomplete marker."""
        home = self.restore_root / name
        if home.exists() and not (home / MARKER).exists() and not any(home.iterdir()):
            home.rmdir()  # a run killed between creating the directory and its marker
        if home.exists():
            raise ConfigError(
                f"a restore named {name!r} already exists at {home}; discard it or pick a new name"
            )
        make_dir(self.restore_root, self.source.os_user, mode=0o755)
        make_dir(home, self.source.os_user, mode=0o755)
        _write_marker(home, {
            "complete": False,
            "target": self.target_name,
            "point": str(requested),
            "replayed_to": str(point),
            "backup_id": backup.backup_id,
            "created_at": datetime.now(UTC).isoformat(),
            "engine": self.engine.name,
        })
        return home

    def find_restored(self, name: str) -> RestoredDatabase | None:
        """A completed restore named ``name``, started if it was stopped; None if there is none.

        This is what makes a re-run after a crash reuse a finished restore instead of redoing
        it. An incomplete one (the run died mid-restore) is removed and None returned.
        """
        home = self.restore_root / name
        marker = home / MARKER
        if not marker.exists():
            return None
        meta = _read_marker(home)
        if not meta.get("complete"):
            log.warning("removing the incomplete restore %s left by an earlier run", home)
            self.discard(_stub(self.kind, home))
            return None
        cluster = self._cluster(home, int(meta["port"]))
        if not cluster.is_running():
            cluster.start()
        last = meta.get("recovered_to_time")
        return RestoredDatabase(
            provider=self.kind,
            handle=str(home),
            dsn=SecretStr(self._restored_dsn(int(meta["port"]),
                                             str(meta.get("database", self.database)))),
            point=meta.get("point", ""),
            backup_id=meta.get("backup_id", ""),
            scratch=not meta.get("adopted", False),
            phases=meta.get("phases", {}),
            recovered_to_time=datetime.fromisoformat(last) if last else None,
            recovered_to_lsn=meta.get("recovered_to_lsn"),
            access=str(meta.get("access", "")),
        )

    def _restored_dsn(self, port: int, database: str) -> str:
        """How restorekit reaches a restored cluster: the source's DSN (its role, password and
        options: the copy has the same roles and pg_hba.conf) at the restored host and port."""
        return at_address(self.source.dsn, self.restored_host, port, database)

    def adopt(self, restored: RestoredDatabase) -> None:
        """Mark a restored cluster as the new production: cleanup and discard leave it alone."""
        home = Path(restored.handle)
        _update_marker(home, {"adopted": True, "adopted_at": datetime.now(UTC).isoformat()})

    def adopted_location(self, restored: RestoredDatabase) -> dict[str, object]:
        """Where an adopted restore lives, for restorekit.production to record (secret-free):
        the host and port it listens on, its database and its data directory."""
        home = Path(restored.handle)
        meta = _read_marker(home)
        if meta.get("port") is None:
            raise ConfigError(f"{home} is not a completed restore; nothing to record")
        location: dict[str, object] = {
            "host": str(meta.get("host") or self.restored_host), "port": int(str(meta["port"])),
            "dbname": str(meta.get("database") or self.database), "data_dir": str(home / "data"),
        }
        if self.source.socket_dir is not None:
            location["socket_dir"] = str(self.source.socket_dir)  # pgBackRest connects there
        return location

    def resume_protection(self) -> Protection:
        """Protect the adopted production this provider now acts on: WAL archiving into the
        same repository (restart; the new timeline's history file and the segments written
        since promotion marked for the archiver), then a base backup at once.

        Raises:
            ConfigError: the production's data directory is unknown (not an adopted restore).
            PostgresError, PgToolFailed, RepositoryError: a step failed; the cluster keeps
                running and serving (restorekit.production.protect reports it).
        """
        from restorekit.engines.adoption import current_settings, turn_archiving_on, wait_archived
        from restorekit.pg.cluster import switch_wal_and_wait_archived
        from restorekit.production import Protection

        if self.source.data_dir is None:
            raise ConfigError(
                f"target {self.target_name!r}: the production's data directory is unknown, so "
                "archiving cannot be switched on by restorekit; set data_dir in restorekit.toml")
        cluster = LocalCluster(data_dir=Path(self.source.data_dir), port=self.source.port,
                               bin_dir=self.source.bin_dir or find_bin_dir(),
                               os_user=self.source.os_user)
        wanted = dict(self.engine.archive_settings())
        if self.source.socket_dir is not None:
            make_dir(Path(self.source.socket_dir), self.source.os_user, mode=0o755)
            wanted["unix_socket_directories"] = str(self.source.socket_dir)
        marked = turn_archiving_on(cluster, wanted, dsn=self.source.dsn)
        wait_archived(cluster, marked)
        _, timeline = current_settings(self.source.dsn, [])
        if self.engine.name == "pgbackrest":
            self.engine.check()  # stanza-create (idempotent) and an archive round trip
        backup = self.create_backup("first after adoption")
        # The archiver retries a failed push after a minute: give it a few rounds.
        switch_wal_and_wait_archived(self.source.dsn, timeout=300)
        return Protection(
            protected=True, first_backup_at=backup.stop_time, backup_id=backup.backup_id,
            detail=f"WAL archived by {self.engine.name} on timeline {timeline}")

    def discard(self, restored: RestoredDatabase) -> None:
        """Stop and remove a restored cluster; refuses anything without a scratch marker and
        anything adopted as production."""
        home = Path(restored.handle)
        if not home.exists():
            return
        if self.restore_root not in home.absolute().parents or not (home / MARKER).exists():
            raise SafetyError(
                f"refusing to remove {home}: it is not a scratch restore made by restorekit"
            )
        meta = _read_marker(home)
        if meta.get("adopted"):
            raise SafetyError(
                f"refusing to remove {home}: it was adopted as the production database"
            )
        if self._is_source(meta):
            raise SafetyError(
                f"refusing to remove {home}: it is the database target {self.target_name!r} "
                f"points at (port {meta.get('port')}); adopt it or fix the target's dsn first"
            )
        cluster = LocalCluster(data_dir=home / "data", port=0,
                               bin_dir=self.source.bin_dir or find_bin_dir(),
                               os_user=self.source.os_user)
        with contextlib.suppress(PgToolFailed):
            cluster.stop(mode="immediate")
        shutil.rmtree(home, ignore_errors=True)

    # -- scratch bookkeeping -------------------------------------------------------------------

    def list_scratch(self) -> list[RestoredDatabase]:
        """Scratch restores under ``restore_root`` (e.g. left behind by a failed run); restores
        adopted as production are not scratch and are not listed."""
        found: list[RestoredDatabase] = []
        if not self.restore_root.exists():
            return found
        for home in sorted(self.restore_root.iterdir()):
            marker = home / MARKER
            if marker.exists():
                meta = _read_marker(home)
                if meta.get("adopted") or self._is_source(meta):
                    continue
                found.append(RestoredDatabase(
                    provider=self.kind, handle=str(home), dsn=SecretStr(""),
                    point=meta.get("point", ""), backup_id=meta.get("backup_id", ""),
                ))
        return found

    def sweep(self, *, keep: Collection[str], prefixes: tuple[str, ...],
              in_use: Sequence[str] = (), dry_run: bool = False) -> list[str]:
        """Discard the scratch restores earlier runs left behind (killed, crashed, failed).

        Only restores named with one of ``prefixes`` (the names flows give their restores) are
        candidates, never one named in ``keep`` (the current incident's, which a re-run reuses),
        never one adopted as production, never the one the target's DSN reaches and never one any
        of ``in_use`` reaches (e.g. the application's current connection string: after a swap and
        before adoption the app already runs on it). Call it only while holding the target's
        one-run-per-target slot, so no other run is using what is swept.

        Returns:
            The names removed (with ``dry_run``: the names that would be).
        """
        swept: list[str] = []
        for restored in self.list_scratch():
            home = Path(restored.handle)
            if home.name in keep or not home.name.startswith(prefixes):
                continue
            meta = _read_marker(home)
            if meta.get("target") not in (None, "", self.target_name):
                continue
            if any(self._reaches(meta, dsn) for dsn in in_use):
                log.warning("keeping %s: the application's connection string points at it", home)
                continue
            if not dry_run:
                log.info("discarding the stale scratch restore %s (%s)", home,
                         "complete" if meta.get("complete") else "unfinished")
                self.discard(restored)
            swept.append(home.name)
        return swept

    def reaches(self, restored: RestoredDatabase, dsn: str) -> bool:
        """True when ``dsn`` connects to the restored cluster ``restored`` (same machine, port)."""
        return self._reaches(_read_marker(Path(restored.handle)), dsn)

    def _is_source(self, meta: _Marker) -> bool:
        """True when a restored cluster is what the target's own DSN reaches (someone pointed
        the config at a restore): never scratch, whatever its marker says."""
        return self._reaches(meta, self.source.dsn)

    @staticmethod
    def _reaches(meta: _Marker, dsn: str) -> bool:
        """True when ``dsn`` connects to the restored cluster ``meta`` describes (same machine,
        same port)."""
        params = parse(dsn)
        host = str(params.get("host") or "localhost")
        local = (host in ("localhost", "127.0.0.1", "::1", meta.get("host"))
                 or host.startswith("/"))
        port = int(str(params.get("port") or 5432))
        return local and meta.get("port") is not None and int(str(meta["port"])) == port

    def _cluster(self, home: Path, port: int) -> LocalCluster:
        return LocalCluster(data_dir=home / "data", port=port,
                            bin_dir=self.source.bin_dir or find_bin_dir(),
                            os_user=self.source.os_user)

    def find_point(self, damage: Damage, *, progress: Progress = no_progress) -> FoundPoint:
        """The transaction that did ``damage``, from a copy before it and the archived WAL
        (restorekit.providers.wal_history)."""
        from restorekit.providers.wal_history import WalHistory

        return WalHistory(self).find_point(damage, progress=progress)

    def loss_after(self, point: RestorePoint, *, progress: Progress = no_progress) -> Loss:
        """What was committed after ``point``, counted from the archived WAL."""
        from restorekit.providers.wal_history import WalHistory

        return WalHistory(self).loss_after(point, progress=progress)

    def archive_pending_wal(self, timeout: float = 60) -> bool:
        """Close the source's current WAL segment and wait until it is archived, so the commits
        of the last moments (the accident itself, on a quiet database whose segment has not
        filled) become restorable. False when the source cannot be reached or the archiver does
        not get there in ``timeout`` seconds: the window stays what it was."""
        import psycopg

        from restorekit.pg.cluster import switch_wal_and_wait_archived

        try:
            switch_wal_and_wait_archived(self.source.dsn, timeout=timeout)
        except (PostgresError, psycopg.Error) as exc:  # e.g. no EXECUTE on pg_switch_wal
            log.warning("could not archive the source's pending WAL: %s", exc)
            return False
        return True

    def create_restore_point(self, name: str) -> str:
        """Create a named restore point on the source (and record it where the engine can)."""
        creator = getattr(self.engine, "create_restore_point", None)
        if creator is None:
            from restorekit.pg.cluster import connect

            with connect(self.source.dsn, autocommit=True) as conn:
                row = conn.execute("SELECT pg_create_restore_point(%s)::text", (name,)).fetchone()
                conn.execute("SELECT pg_switch_wal()")
            assert row is not None
            return str(row[0])
        lsn, _ = creator(name)
        return str(lsn)

    def _choose_backup(self, point: RestorePoint, backups: list[BackupInfo]) -> BackupInfo:
        chooser = getattr(self.engine, "choose_backup", None)
        if chooser is not None:
            chosen: BackupInfo = chooser(point, backups)  # the engine knows better (native)
            return chosen
        from restorekit.engines.native import choose_backup

        return choose_backup(point, backups)


def effective_point(point: RestorePoint, window: RestoreWindow) -> RestorePoint:
    """The point PostgreSQL is asked to recover to.

    A time target needs a commit after it in the WAL to stop at; when the requested time is at or
    after the last archived commit there is none (PostgreSQL would end with "recovery ended
    before configured recovery target was reached"), yet the state at that time is exactly the
    end of the archive, so everything archived is replayed instead.
    """
    if (point.kind is PointKind.TIME and point.time is not None
            and window.latest_commit is not None and point.time >= window.latest_commit):
        log.info("no commit after %s in the archive: replaying all archived WAL", point)
        return RestorePoint.latest()
    return point


def _target_lsn(point: RestorePoint) -> str | None:
    return point.value if point.kind is PointKind.LSN else None


def _write_marker(home: Path, meta: _Marker) -> None:
    # Write then rename: a run killed mid-write leaves the old marker or none, never half a one.
    tmp = home / (MARKER + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(home / MARKER)


def _read_marker(home: Path) -> _Marker:
    """The marker's content; an unreadable one counts as an unfinished restore."""
    try:
        meta = json.loads((home / MARKER).read_text())
    except (OSError, ValueError):
        return {"complete": False}
    # Only restorekit writes it (_write_marker): its fields are trusted to have their types.
    return cast(_Marker, meta) if isinstance(meta, dict) else {"complete": False}


def _update_marker(home: Path, changes: _Marker) -> None:
    meta = _read_marker(home)
    meta.update(changes)
    _write_marker(home, meta)


def _stub(kind: str, home: Path) -> RestoredDatabase:
    return RestoredDatabase(provider=kind, handle=str(home), dsn=SecretStr(""))

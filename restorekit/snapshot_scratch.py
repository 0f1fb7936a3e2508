"""A scratch copy made from a logical snapshot, for providers that cannot restore into a new
database (Supabase: its API only restores in place).

Scenarios 2 and 3 need a copy of the database from before the damage to take rows from. Where
the provider cannot make one, restorekit restores the newest verified logical snapshot taken
before the point into a local scratch cluster instead, and says so in the plan: rows written
between the snapshot and the point are not in it. No in-place restore is ever done silently.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from restorekit.errors import ConfigError, PgToolFailed, SafetyError
from restorekit.models import RestoredDatabase
from restorekit.pg.cluster import LocalCluster, free_port
from restorekit.pg.tools import default_os_user, make_dir
from restorekit.repository import Repository
from restorekit.snapshot import (
    SnapshotInfo,
    list_snapshots,
    load_snapshot,
    restore_snapshot_to_new_database,
)

KIND = "snapshot"
MARKER = "restorekit-scratch.json"
PASSWORD_FILE = "superuser.password"
ACCESS = ("Access to the scratch copy: a cluster restorekit created from the snapshot, "
          "scram-sha-256 for every connection with a password only restorekit holds, on "
          "127.0.0.1.")


def snapshot_before(
    repo: Repository, when: datetime, tables: list[str] | None = None
) -> SnapshotInfo:
    """The newest complete snapshot taken at or before ``when`` that holds ``tables``."""
    wanted = set(tables or [])
    candidates = [
        s for s in list_snapshots(repo)
        if s.created_at <= when and (not s.tables or wanted <= set(s.tables))
    ]
    if not candidates:
        raise ConfigError(
            f"no verified logical snapshot in {repo.url} was taken before {when.isoformat()}"
            + (f" with tables {', '.join(sorted(wanted))}" if wanted else "")
            + ": this provider cannot restore into a new database, so there is nothing to take "
            "the rows from. Take regular snapshots (restorekit snapshot / the backup flow), or "
            "restore in place with the complete-failure scenario."
        )
    return max(candidates, key=lambda s: s.created_at)


class SnapshotScratch:
    """Local scratch clusters filled from logical snapshots, under ``root``."""

    def __init__(self, root: Path, repo: Repository) -> None:
        self.root = Path(root).absolute()
        self.repo = repo
        self.os_user = default_os_user()

    def restore(self, snapshot_id: str, *, name: str, database: str = "app") -> RestoredDatabase:
        found = self.find_restored(name)
        if found is not None:
            return found
        info = load_snapshot(self.repo, snapshot_id)
        home = self.root / name
        if home.exists():
            shutil.rmtree(home)  # an incomplete attempt of an earlier run
        make_dir(self.root, self.os_user, mode=0o755)
        make_dir(home, self.os_user, mode=0o755)
        (home / MARKER).write_text(json.dumps({"complete": False, "snapshot": snapshot_id}))
        # The copy holds production's rows: scram for every connection, with a password only
        # restorekit knows (a 0600 file of restorekit's user), never a loopback that trusts.
        password = secrets.token_urlsafe(24)
        fd = os.open(home / PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password)
        cluster = LocalCluster.create(home / "data", port=free_port(), password=password)
        try:
            cluster.start()
            dsn = restore_snapshot_to_new_database(info, self.repo, cluster.dsn(), database,
                                                   no_owner=True)
        except BaseException:
            cluster.destroy()
            shutil.rmtree(home, ignore_errors=True)
            raise
        (home / MARKER).write_text(json.dumps({
            "complete": True, "snapshot": snapshot_id, "port": cluster.port,
            "database": database, "snapshot_time": info.created_at.isoformat(),
            "created_at": datetime.now(UTC).isoformat(),
        }))
        return RestoredDatabase(provider=KIND, handle=str(home), dsn=SecretStr(dsn),
                                point=f"snapshot:{snapshot_id}", backup_id=snapshot_id,
                                recovered_to_time=info.created_at, access=ACCESS)

    def find_restored(self, name: str) -> RestoredDatabase | None:
        home = self.root / name
        marker = home / MARKER
        if not marker.exists():
            return None
        meta = json.loads(marker.read_text())
        if not meta.get("complete"):
            return None
        password_file = home / PASSWORD_FILE
        password = password_file.read_text() if password_file.exists() else None
        cluster = LocalCluster(data_dir=home / "data", port=int(meta["port"]), os_user=self.os_user,
                               password=password)
        if not cluster.is_running():
            cluster.start()
        return RestoredDatabase(
            provider=KIND, handle=str(home), dsn=SecretStr(cluster.dsn(meta["database"])),
            point=f"snapshot:{meta['snapshot']}", backup_id=meta["snapshot"],
            recovered_to_time=datetime.fromisoformat(meta["snapshot_time"]), access=ACCESS,
        )

    def discard(self, restored: RestoredDatabase) -> None:
        home = Path(restored.handle)
        if not home.exists():
            return
        if self.root not in home.parents or not (home / MARKER).exists():
            raise SafetyError(f"refusing to remove {home}: not a snapshot scratch copy")
        with contextlib.suppress(PgToolFailed):
            cluster = LocalCluster(data_dir=home / "data", port=0, os_user=self.os_user)
            cluster.stop(mode="immediate")
        shutil.rmtree(home, ignore_errors=True)

    def list_scratch(self) -> list[RestoredDatabase]:
        if not self.root.exists():
            return []
        return [RestoredDatabase(provider=KIND, handle=str(h), dsn=SecretStr(""))
                for h in sorted(self.root.iterdir()) if (h / MARKER).exists()]

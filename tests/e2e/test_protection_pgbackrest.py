"""Protection after adoption with the pgBackRest engine (issue 12, part 1): a cluster restored
from pgBackRest and adopted as production archives through pgBackRest into the same stanza on
its new timeline, gets a first full backup, and points on both sides of the incident restore.

The scenario's steps are driven through restorekit's core (restore, production.adopt,
production.protect) as the complete-failure flow's tasks do; the flow itself is covered with
the native engine in tests/flows/test_protection_after_adoption.py.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fixtures.config import local_dsn, write_config

from restorekit import production
from restorekit.config import load_settings
from restorekit.engines.pgbackrest import archive_listing
from restorekit.models import RestorePoint
from restorekit.pg.cluster import LocalCluster, free_port, switch_wal_and_wait_archived
from restorekit.pg.tools import default_os_user, make_dir
from restorekit.providers.selfhosted import SelfHostedProvider

pytestmark = [
    pytest.mark.slow,
    pytest.mark.pgbackrest,
    pytest.mark.skipif(shutil.which("pgbackrest") is None, reason="pgbackrest is not installed"),
]

TARGET = "shop"
STANZA = "rk-protect"


def _provider(config: Path) -> SelfHostedProvider:
    settings = load_settings(config)
    return SelfHostedProvider.from_config(settings.target(TARGET), settings)


def _ids(dsn: str) -> set[int]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM items")}


@pytest.fixture(scope="module")
def adopted(pg_base_dir: Path) -> Iterator[dict[str, Any]]:
    os_user = default_os_user()
    root = make_dir(pg_base_dir / f"pgbr-protect-{uuid.uuid4().hex[:6]}", os_user, mode=0o755)
    socket_dir = Path(tempfile.mkdtemp(prefix="rkpr-", dir="/tmp"))  # short: socket path limit
    make_dir(socket_dir, os_user, mode=0o755)
    repo_dir = make_dir(root / "repo", os_user, mode=0o750)
    port = free_port()
    config = write_config(root / "restorekit.toml", state=root / "state", target=TARGET,
                          provider="selfhosted", engine="pgbackrest", dsn=local_dsn(port),
                          data_dir=str(root / "source"), socket_dir=str(socket_dir),
                          stanza=STANZA, repository=f"file://{repo_dir}")
    provider = _provider(config)
    source = LocalCluster.create(root / "source", port=port, socket_dir=socket_dir,
                                 settings=provider.engine.archive_settings())
    restored = None
    try:
        source.start()
        with psycopg.connect(source.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
            conn.execute("INSERT INTO items SELECT generate_series(1, 50)")
            provider.engine.check()
            provider.create_backup("before the incident")
            conn.execute("INSERT INTO items SELECT generate_series(51, 100)")
            before_lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
            switch_wal_and_wait_archived(conn.info.dsn)
        source.stop(mode="immediate")  # the incident

        restored = provider.restore(RestorePoint.latest(), name="cf-inc-pgbr")
        _, record = production.adopt(provider, restored, state_dir=root / "state",
                                     target=TARGET, incident="inc-pgbr")
        assert record is not None and record.port == int(restored.dsn.get_secret_value()
                                                         .split("port=")[1].split()[0])
        now = _provider(config)  # as every later command builds it: on the adopted cluster
        protection = production.protect(now, state_dir=root / "state", target=TARGET)
        with psycopg.connect(now.source.dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO items SELECT generate_series(1000, 1009)")
        assert now.archive_pending_wal()
        yield {"config": config, "protection": protection, "before_lsn": before_lsn,
               "repo_dir": repo_dir, "provider": now}
    finally:
        for leftover in _provider(config).list_scratch():
            _provider(config).discard(leftover)
        if restored is not None:
            LocalCluster(data_dir=Path(restored.handle) / "data", port=0,
                         os_user=os_user).destroy()
        source.destroy()
        shutil.rmtree(socket_dir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def test_the_adopted_cluster_archives_through_pgbackrest_and_has_a_full_backup(adopted) -> None:
    protection = adopted["protection"]
    assert protection.protected, protection.line()
    assert "pgbackrest on timeline 2" in protection.line()
    provider: SelfHostedProvider = adopted["provider"]
    backups = provider.list_backups()
    assert [b.timeline for b in backups] == [1, 2]
    assert backups[-1].backup_id == protection.backup_id
    archived = archive_listing(adopted["repo_dir"], STANZA)
    assert any(name.endswith("00000002.history") for name in archived)
    assert any(Path(name).name.startswith("00000002") and ".history" not in name
               for name in archived)


def test_points_before_and_after_the_incident_restore_from_pgbackrest(adopted) -> None:
    provider: SelfHostedProvider = _provider(adopted["config"])
    late = provider.restore(RestorePoint.latest(), name="after-incident")
    try:
        assert _ids(late.dsn.get_secret_value()) == set(range(1, 101)) | set(range(1000, 1010))
    finally:
        provider.discard(late)
    early = provider.restore(RestorePoint.parse(f"lsn:{adopted['before_lsn']}"),
                             name="before-incident")
    try:
        assert _ids(early.dsn.get_secret_value()) == set(range(1, 101))
        assert early.backup_id == provider.list_backups()[0].backup_id
    finally:
        provider.discard(early)

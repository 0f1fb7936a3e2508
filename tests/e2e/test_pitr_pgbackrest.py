"""Point-in-time recovery with the pgBackRest engine, built from restorekit.toml the way a user
would: ``load_settings`` + ``SelfHostedProvider.from_config``, a real source cluster archiving
through pgBackRest into a posix repository, and real restores into NEW clusters.

The history is the same as in test_pitr_native.py:

A = rows 1..100 (before T), T, restore point 'before-cleanup', delete rows 1..10,
B = rows 1000..1049 (after T).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from e2e._helpers import (
    BEFORE_T,
    check_restore_to_t,
    restored_latest,
    rows,
    write_history,
)
from fixtures.config import local_dsn, write_config

from restorekit.config import load_settings
from restorekit.engines.pgbackrest import PgBackRestEngine, archive_listing
from restorekit.errors import RestorePointError
from restorekit.models import PointKind, RestorePoint, format_lsn, parse_lsn
from restorekit.pg.cluster import LocalCluster, free_port
from restorekit.pg.tools import default_os_user, make_dir
from restorekit.providers.selfhosted import SelfHostedProvider

pytestmark = [
    pytest.mark.slow,
    pytest.mark.pgbackrest,
    pytest.mark.skipif(
        shutil.which("pgbackrest") is None,
        reason="pgbackrest is not installed (CI installs it: apt-get install -y pgbackrest)",
    ),
]

TARGET = "shop"
STANZA = "rk-e2e"


def _entries(path: Path) -> set[Path]:
    return set(path.iterdir()) if path.exists() else set()


@pytest.fixture(scope="module")
def world(pg_base_dir: Path) -> Iterator[dict[str, Any]]:
    os_user = default_os_user()
    root = make_dir(pg_base_dir / f"pgbackrest-e2e-{uuid.uuid4().hex[:6]}", os_user, mode=0o755)
    # pgBackRest reaches the source over its Unix socket: keep that path short.
    socket_dir = Path(tempfile.mkdtemp(prefix="rke2e-", dir="/tmp"))
    repo_dir = make_dir(root / "repo", os_user, mode=0o750)
    data_dir = root / "source"
    port = free_port()
    config = write_config(
        root / "restorekit.toml", state=root / "state", target=TARGET,
        provider="selfhosted", engine="pgbackrest",
        # pgBackRest itself uses pg1-socket-path and the port; the DSN's host is what restorekit
        # (restore points, checks) connects to.
        dsn=local_dsn(port), data_dir=str(data_dir), socket_dir=str(socket_dir), stanza=STANZA,
        repository=f"file://{repo_dir}", tier="critical")
    settings = load_settings(config)
    provider = SelfHostedProvider.from_config(settings.target(TARGET), settings)
    engine = provider.engine
    assert isinstance(engine, PgBackRestEngine)
    source = LocalCluster.create(data_dir, port=port, socket_dir=socket_dir,
                                 settings=engine.archive_settings())
    try:
        source.start()
        with psycopg.connect(source.dsn(), autocommit=True) as conn:
            # The window starts a second after the backup's (whole-second) stop time.
            backup, t_point, lsn = write_history(conn, provider, "e2e base",
                                                 before_backup=engine.check,
                                                 after_backup_sleep=1.0)
        yield {
            "provider": provider, "engine": engine, "source": source, "settings": settings,
            "root": root, "socket_dir": socket_dir, "repo_dir": repo_dir, "T": t_point,
            "lsn": lsn, "backup": backup,
        }
    finally:
        for restored in provider.list_scratch():
            provider.discard(restored)
        source.destroy()
        shutil.rmtree(socket_dir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def test_the_config_builds_a_pgbackrest_provider(world) -> None:
    provider: SelfHostedProvider = world["provider"]
    engine: PgBackRestEngine = world["engine"]
    settings = world["settings"]
    assert engine.stanza == STANZA
    assert engine.repo_path == world["repo_dir"]
    assert engine.work_dir == settings.work_dir / TARGET / "pgbackrest"
    conf = engine.config_file.read_text()
    assert f"pg1-socket-path={world['socket_dir']}" in conf
    assert f"pg1-port={world['source'].port}" in conf
    assert provider.restore_root == settings.restore_root / TARGET
    backups = provider.list_backups()
    assert [b.backup_id for b in backups] == [world["backup"].backup_id]
    assert backups[0].engine == "pgbackrest" and backups[0].label == "e2e base"


def test_window_brackets_t(world) -> None:
    window = world["provider"].restore_window()
    assert window.earliest is not None and window.latest is not None
    assert window.earliest <= world["T"] <= window.latest
    assert window.latest_lsn is not None
    assert parse_lsn(world["lsn"]) < parse_lsn(window.latest_lsn)


@pytest.mark.parametrize("kind", ["time", "lsn", "name"])
def test_pitr_restores_the_state_at_the_point(world, kind: str) -> None:
    def from_the_base_backup_and_not_past_t(restored) -> None:
        assert restored.backup_id == world["backup"].backup_id
        if kind == "time":
            assert restored.recovered_to_time is not None
            assert restored.recovered_to_time <= world["T"]

    check_restore_to_t(world, kind, from_the_base_backup_and_not_past_t)


def test_latest_restores_everything_and_never_archives_into_the_source_repo(world) -> None:
    engine: PgBackRestEngine = world["engine"]
    with restored_latest(world) as restored:
        archive_before = archive_listing(engine.repo_path, engine.stanza)
        assert archive_before  # the source's WAL is there
        with psycopg.connect(restored.dsn.get_secret_value(), autocommit=True) as conn:
            assert conn.execute("SHOW archive_mode").fetchone() == ("off",)
            conn.execute(
                "INSERT INTO items SELECT g, 'restored' FROM generate_series(5000, 9000) g"
            )
            conn.execute("SELECT pg_switch_wal()")
            conn.execute(
                "INSERT INTO items SELECT g, 'restored' FROM generate_series(9001, 9100) g"
            )
            conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
            time.sleep(1.0)  # an archiver, had it been on, would have pushed by now
            stats = conn.execute(
                "SELECT archived_count, failed_count FROM pg_stat_archiver"
            ).fetchone()
        assert stats == (0, 0)
        # The source has archive_timeout off and took no writes, so any new file would have
        # come from the restored cluster (and the source's rows are checked unchanged).
        assert archive_listing(engine.repo_path, engine.stanza) == archive_before
    assert not Path(restored.handle).exists()


def test_points_outside_the_window_fail_before_anything_is_created(world) -> None:
    provider: SelfHostedProvider = world["provider"]
    window = provider.restore_window()
    assert window.earliest <= world["T"] <= window.latest
    assert window.latest_lsn is not None
    restores = Path(provider.restore_root)
    existing = _entries(restores)
    beyond = format_lsn(parse_lsn(window.latest_lsn) + 64 * 1024 * 1024)
    cases = [
        (RestorePoint.at(datetime.now(UTC) + timedelta(hours=1)), "in the future"),
        (RestorePoint.at(window.earliest - timedelta(days=1)), "outside the restore window"),
        (RestorePoint(PointKind.LSN, value=beyond), "outside the archived range"),
    ]
    for point, message in cases:
        with pytest.raises(RestorePointError, match=message) as info:
            provider.restore(point, name="outside")
        if point.kind is PointKind.TIME:
            assert str(window) in str(info.value)
        assert not (restores / "outside").exists()
    with pytest.raises(RestorePointError, match="no timezone"):
        RestorePoint.parse("2026-01-01T10:00:00")
    assert _entries(restores) == existing


def test_nothing_is_left_behind(world) -> None:
    provider: SelfHostedProvider = world["provider"]
    assert provider.list_scratch() == []
    assert _entries(Path(provider.restore_root)) == set()


def test_find_point_reads_the_deletion_from_the_pgbackrest_archive(world) -> None:
    from restorekit.damage import Damage, FoundBy

    provider: SelfHostedProvider = world["provider"]
    found = provider.find_point(Damage(table="items",
                                       keys=tuple((str(i),) for i in range(1, 11))))
    assert found.found_by is FoundBy.WAL_SCAN and found.what.startswith("DELETE")
    assert found.rows_touched == 10 and found.point.kind is PointKind.XID
    assert not found.point.inclusive
    restored = provider.restore(found.point, name="findpoint-pgbackrest")
    try:
        assert rows(restored.dsn.get_secret_value()) == BEFORE_T  # --target-exclusive
    finally:
        provider.discard(restored)
    lost = {t.table: t for t in provider.loss_after(found.point).tables}
    assert (lost["public.items"].deleted, lost["public.items"].inserted) == (10, 50)
    assert provider.list_scratch() == []

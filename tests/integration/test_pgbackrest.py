"""The pgBackRest engine end to end: real source cluster, real pgBackRest, posix repository.

One source cluster is backed up once; then rows A are inserted, the time T (and the LSN at T)
is recorded, a named restore point is created, some A rows are deleted and rows B inserted, and
the WAL is switched and archived. The source is then stopped, so the repository's archive can only
change if a restored cluster archives into it. Every restore goes into a NEW cluster through the
same steps SelfHostedProvider takes: prepare_restore, apply_overrides, recovery.signal,
run_recovery.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from restorekit.engines.base import SourceSpec
from restorekit.engines.pgbackrest import PgBackRestEngine, archive_listing
from restorekit.engines.recovery import (
    RecoveryResult,
    apply_overrides,
    restored_cluster_settings,
    run_recovery,
    write_recovery_signal,
)
from restorekit.errors import ConfigError, RestorePointError
from restorekit.models import BackupInfo, PointKind, RestorePoint, format_lsn, parse_lsn
from restorekit.pg.cluster import LocalCluster, free_port, switch_wal_and_wait_archived

pytestmark = [
    pytest.mark.pgbackrest,
    pytest.mark.skipif(
        shutil.which("pgbackrest") is None,
        reason="pgbackrest is not installed (CI installs it: apt-get install -y pgbackrest)",
    ),
]

BASE_IDS = range(1, 51)  # in the backup
A_IDS = range(101, 201)  # inserted after the backup, before T
DELETED_IDS = range(101, 131)  # A rows deleted after T
B_IDS = range(301, 351)  # inserted after T


@dataclass
class Scenario:
    engine: PgBackRestEngine
    source: LocalCluster
    backup: BackupInfo
    base_dir: Path
    t_time: datetime
    t_lsn: str
    t_xid: str  # the transaction that inserted rows A
    end_time: datetime
    archive_after_source_stop: set[str]
    timings: dict[str, float] = field(default_factory=dict)
    restored: list[LocalCluster] = field(default_factory=list)

    def restore(self, point: RestorePoint, name: str) -> tuple[LocalCluster, RecoveryResult]:
        """What SelfHostedProvider does: base restore, overrides, recovery.signal, replay."""
        data_dir = self.base_dir / f"restored-{name}-{uuid.uuid4().hex[:6]}"
        port = free_port()
        cluster = LocalCluster(data_dir=data_dir, port=port, os_user=self.engine.os_user)
        self.restored.append(cluster)
        seen: list[tuple[str, int, int | None]] = []
        started = time.monotonic()
        settings = self.engine.prepare_restore(
            point, self.backup, data_dir, progress=lambda *a: seen.append(a)
        )
        self.timings[f"base restore ({name})"] = time.monotonic() - started
        assert seen[-1] == ("base restore", 10000, 10000)
        assert [s[1] for s in seen] == sorted(s[1] for s in seen)
        # pgBackRest writes recovery.signal itself for every recovery type we use.
        assert (data_dir / "recovery.signal").exists()
        apply_overrides(data_dir, restored_cluster_settings(port) | settings, self.engine.os_user)
        if not (data_dir / "recovery.signal").exists():
            write_recovery_signal(data_dir, self.engine.os_user)
        target_lsn = point.value if point.kind is PointKind.LSN else None
        started = time.monotonic()
        result = run_recovery(cluster, target_lsn=target_lsn, timeout=60)
        self.timings[f"wal replay ({name})"] = time.monotonic() - started
        return cluster, result


def _ids(cluster: LocalCluster) -> set[int]:
    with cluster.connect() as conn:
        return {row[0] for row in conn.execute("SELECT id FROM items")}


@pytest.fixture(scope="module")
def scenario(pg_base_dir: Path) -> Iterator[Scenario]:
    base_dir = pg_base_dir / f"pgbackrest-{uuid.uuid4().hex[:6]}"
    # pgBackRest reaches the source over its Unix socket: keep that path short.
    socket_dir = Path(tempfile.mkdtemp(prefix="rkbr-", dir="/tmp"))
    port = free_port()
    spec = SourceSpec(
        dsn=f"host=127.0.0.1 port={port} user=postgres dbname=postgres",
        data_dir=base_dir / "source",
        socket_dir=socket_dir,
        port=port,
    )
    engine = PgBackRestEngine(
        spec, stanza="rk-test", repo_path=base_dir / "repo", work_dir=base_dir / "pgbackrest",
        compression="zstd:3", process_max=2,
    )
    source = LocalCluster.create(base_dir / "source", port=port, socket_dir=socket_dir,
                                 settings=engine.archive_settings())
    restored: list[LocalCluster] = []
    try:
        source.start()
        with source.connect(autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, batch text NOT NULL)")
            conn.execute("INSERT INTO items SELECT g, 'base' FROM generate_series(1, 50) g")
        timings: dict[str, float] = {}
        started = time.monotonic()
        engine.check()
        engine.check()  # idempotent: stanza-create on an existing stanza is a no-op
        timings["check x2"] = time.monotonic() - started
        started = time.monotonic()
        backup = engine.backup(label="before-migration", progress=lambda *a: None)
        timings["backup"] = time.monotonic() - started
        # The window starts a second after the backup's (whole-second) stop time; T must be in it.
        time.sleep(1.0)
        with source.connect(autocommit=True) as conn:
            with conn.transaction():
                conn.execute("INSERT INTO items SELECT g, 'A' FROM generate_series(101, 200) g")
                xid = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
                assert xid is not None
            row = conn.execute("SELECT clock_timestamp(), pg_current_wal_lsn()").fetchone()
            assert row is not None
            t_time, t_lsn = row[0], str(row[1])
            time.sleep(0.05)
            conn.execute("SELECT pg_create_restore_point('rk_test')")
            conn.execute("DELETE FROM items WHERE id BETWEEN 101 AND 130")
            conn.execute("INSERT INTO items SELECT g, 'B' FROM generate_series(301, 350) g")
            end = conn.execute("SELECT clock_timestamp()").fetchone()
            assert end is not None
        switch_wal_and_wait_archived(source.dsn(), timeout=30)
        source.stop()
        scn = Scenario(
            engine=engine, source=source, backup=backup, base_dir=base_dir, t_time=t_time,
            t_lsn=t_lsn, t_xid=xid[0], end_time=end[0],
            archive_after_source_stop=archive_listing(engine.repo_path, engine.stanza),
            timings=timings, restored=restored,
        )
        yield scn
        print("\npgbackrest timings:", {k: round(v, 2) for k, v in scn.timings.items()})
    finally:
        for cluster in restored:
            cluster.destroy()
        source.destroy()
        shutil.rmtree(base_dir, ignore_errors=True)
        shutil.rmtree(socket_dir, ignore_errors=True)


EXPECTED_AT_T = set(BASE_IDS) | set(A_IDS)
EXPECTED_LATEST = (set(BASE_IDS) | set(A_IDS) | set(B_IDS)) - set(DELETED_IDS)


def test_backup_is_listed_with_its_label(scenario: Scenario) -> None:
    backups = scenario.engine.list_backups()
    assert [b.backup_id for b in backups] == [scenario.backup.backup_id]
    backup = backups[0]
    assert backup.label == "before-migration"
    assert backup.engine == "pgbackrest" and backup.backup_id.endswith("F")
    assert backup.start_time.tzinfo is not None and backup.start_time <= backup.stop_time
    assert parse_lsn(backup.start_lsn) < parse_lsn(backup.stop_lsn)
    assert backup.size_bytes > 0 and backup.timeline == 1


def test_backups_and_wal_are_compressed_as_configured(scenario: Scenario) -> None:
    """[backups] compression = "zstd:3" reaches pgBackRest: its files carry the .zst suffix
    (and a restore below reads them back)."""
    config = scenario.engine.config_file.read_text()
    assert "compress-type=zst\n" in config and "compress-level=3\n" in config
    assert "process-max=2\n" in config
    repo = scenario.engine.repo_path

    def archived_segments() -> list[str]:
        return [p.name for p in (repo / "archive").rglob("*") if p.is_file()
                and len(p.name) > 24 and p.name[:24].isalnum() and "-" in p.name]

    segments = archived_segments()
    assert segments and all(name.endswith(".zst") for name in segments), segments
    data_files = [p for p in (repo / "backup").rglob("pg_data/*") if p.is_file()]
    assert data_files and all(p.name.endswith(".zst") for p in data_files)
    # What the drill's RTO forecast reads: one full segment per archived file, with its time,
    # of the source's own size (the suite's clusters have 1 MB segments, not the default 16).
    # The archiver may push a segment meanwhile: the count lies between two listings.
    archived = scenario.engine.archived_wal(datetime(2000, 1, 1, tzinfo=UTC))
    after = archived_segments()
    assert archived is not None
    assert len({n[:24] for n in segments}) <= archived.segments <= len({n[:24] for n in after})
    segment = next(p.stat().st_size for p in (scenario.source.data_dir / "pg_wal").iterdir()
                   if len(p.name) == 24)
    assert archived.bytes_after_first == (archived.segments - 1) * segment
    assert archived.first.tzinfo is not None and archived.first <= archived.last


def test_restore_window_brackets_t(scenario: Scenario) -> None:
    window = scenario.engine.restore_window()
    assert window.earliest is not None and window.latest is not None
    assert window.earliest <= scenario.t_time <= window.latest
    # latest is the last archived commit (the B insert), not "now" and not the backup's end.
    assert scenario.t_time < window.latest <= scenario.end_time
    assert window.earliest_lsn == scenario.backup.stop_lsn
    assert window.latest_lsn is not None
    assert parse_lsn(scenario.t_lsn) < parse_lsn(window.latest_lsn)
    window.check(RestorePoint.at(scenario.t_time))


@pytest.mark.parametrize("kind", ["time", "lsn", "name", "xid", "backup"])
def test_point_in_time_restore(scenario: Scenario, kind: str) -> None:
    point = {
        "time": RestorePoint.at(scenario.t_time),
        "lsn": RestorePoint(PointKind.LSN, value=scenario.t_lsn),
        "name": RestorePoint(PointKind.NAME, value="rk_test"),
        "xid": RestorePoint(PointKind.XID, value=scenario.t_xid),
        "backup": RestorePoint(PointKind.BACKUP, value=scenario.backup.backup_id),
    }[kind]
    cluster, result = scenario.restore(point, kind)
    ids = _ids(cluster)
    if kind == "backup":
        assert ids == set(BASE_IDS)  # the backup's consistent end: nothing after it
    else:
        assert ids == EXPECTED_AT_T  # A present, deleted A rows back, B absent
    assert result.timeline == 2
    with cluster.connect() as conn:
        assert conn.execute("SHOW archive_mode").fetchone() == ("off",)
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    if kind == "time":
        assert result.last_commit_time is not None
        assert result.last_commit_time <= scenario.t_time


def test_latest_restore_never_archives_into_the_source_repo(scenario: Scenario) -> None:
    cluster, _ = scenario.restore(RestorePoint.latest(), "latest")
    assert _ids(cluster) == EXPECTED_LATEST
    with cluster.connect(autocommit=True) as conn:
        assert conn.execute("SHOW archive_mode").fetchone() == ("off",)
        conn.execute("CREATE TABLE scratch AS SELECT g FROM generate_series(1, 10000) g")
        conn.execute("SELECT pg_switch_wal()")
        conn.execute("INSERT INTO scratch SELECT g FROM generate_series(1, 1000) g")
        conn.execute("SELECT pg_switch_wal()")
        conn.execute("CHECKPOINT")
        time.sleep(1.0)  # an archiver, if one ran, would have pushed both segments by now
        stats = conn.execute(
            "SELECT archived_count, failed_count FROM pg_stat_archiver"
        ).fetchone()
    assert stats == (0, 0)
    after = archive_listing(scenario.engine.repo_path, scenario.engine.stanza)
    assert after == scenario.archive_after_source_stop


def test_target_beyond_the_archive_fails_naming_the_last_reachable_point(
    scenario: Scenario,
) -> None:
    window = scenario.engine.restore_window()
    assert window.latest_lsn is not None
    beyond = format_lsn(parse_lsn(window.latest_lsn) + 64 * 1024 * 1024)
    with pytest.raises(RestorePointError) as raised:
        scenario.restore(RestorePoint(PointKind.LSN, value=beyond), "beyond")
    message = str(raised.value)
    assert "last reachable point is LSN" in message
    assert "Nothing was promoted" in message


def test_unknown_backup_set_is_a_config_error(scenario: Scenario) -> None:
    bogus = BackupInfo(
        backup_id="20000101-000000F", engine="pgbackrest",
        start_time=scenario.backup.start_time, stop_time=scenario.backup.stop_time,
        start_lsn="0/1", stop_lsn="0/2",
    )
    with pytest.raises(ConfigError, match=r"\[075\].*20000101-000000F"):
        scenario.engine.prepare_restore(
            RestorePoint(PointKind.IMMEDIATE), bogus,
            scenario.base_dir / f"bogus-{uuid.uuid4().hex[:6]}", progress=lambda *a: None,
        )


def test_restore_refuses_a_non_empty_directory(scenario: Scenario, tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        scenario.engine.prepare_restore(
            RestorePoint.latest(), scenario.backup, tmp_path, progress=lambda *a: None
        )


def test_missing_stanza_and_missing_binary_are_config_errors(
    scenario: Scenario, tmp_path: Path
) -> None:
    spec = scenario.engine.source
    other = PgBackRestEngine(spec, stanza="never-created", repo_path=scenario.engine.repo_path,
                             work_dir=scenario.base_dir / "other")
    with pytest.raises(ConfigError, match="check\\(\\)"):
        other.list_backups()
    missing = PgBackRestEngine(spec, stanza="x", repo_path=tmp_path / "repo",
                               work_dir=tmp_path / "work", bin="/nonexistent/pgbackrest")
    with pytest.raises(ConfigError, match="apt-get install pgbackrest"):
        missing.check()


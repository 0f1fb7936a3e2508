"""The history both PITR end-to-end suites (native and pgBackRest) write and check.

A = rows 1..100 (before T), T, restore point 'before-cleanup', delete rows 1..10,
B = rows 1000..1049 (after T).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from restorekit.models import RestorePoint
from restorekit.pg.cluster import switch_wal_and_wait_archived

BEFORE_T = set(range(1, 101))
AFTER = (set(range(1, 101)) - set(range(1, 11))) | set(range(1000, 1050))


def wait_archived(conn: psycopg.Connection, timeout: float = 30) -> None:
    """Switch WAL and wait until the archiver has stored the segment just closed."""
    switch_wal_and_wait_archived(conn.info.dsn, timeout=timeout)


def rows(dsn: str) -> set[int]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM items")}


def table_checksum(conn: psycopg.Connection) -> str:
    return conn.execute(
        "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM items t"
    ).fetchone()[0]


def write_history(conn: psycopg.Connection, provider: Any, label: str, *,
                  before_backup: Callable[[], object] = lambda: None,
                  after_backup_sleep: float = 0.0) -> tuple[Any, datetime, str]:
    """Write the history above through ``conn`` (autocommit), with a base backup labelled
    ``label`` after the first 50 rows; returns the backup, T and the LSN at T."""
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
    conn.execute("INSERT INTO items SELECT g, 'old' FROM generate_series(1, 50) g")
    before_backup()
    backup = provider.create_backup(label)
    time.sleep(after_backup_sleep)
    conn.execute("INSERT INTO items SELECT g, 'a' FROM generate_series(51, 100) g")
    time.sleep(0.05)
    t_point = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    time.sleep(0.05)
    provider.create_restore_point("before-cleanup")
    conn.execute("DELETE FROM items WHERE id <= 10")
    conn.execute("INSERT INTO items SELECT g, 'b' FROM generate_series(1000, 1049) g")
    wait_archived(conn)
    return backup, t_point, lsn


def point_at(world: dict[str, Any], kind: str) -> RestorePoint:
    """T as a time, as its LSN, or as the named restore point."""
    return {
        "time": RestorePoint.at(world["T"]),
        "lsn": RestorePoint.parse(f"lsn:{world['lsn']}"),
        "name": RestorePoint.parse("name:before-cleanup"),
    }[kind]


def assert_promoted_and_not_archiving(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        assert conn.execute("SHOW archive_mode").fetchone() == ("off",)


def check_restore_to_t(world: dict[str, Any], kind: str,
                       check: Callable[[Any], None] = lambda restored: None) -> None:
    """Restore to T given as ``kind`` into a new cluster: ``check`` on the restored ref, rows
    inserted before T present, deleted after T back, later ones absent; promoted and not
    archiving; discarded afterwards, directory and all."""
    provider = world["provider"]
    restored = provider.restore(point_at(world, kind), name=f"pitr-{kind}")
    try:
        check(restored)
        assert rows(restored.dsn.get_secret_value()) == BEFORE_T
        assert restored.recovered_to_lsn
        assert_promoted_and_not_archiving(restored.dsn.get_secret_value())
    finally:
        provider.discard(restored)
    assert not Path(restored.handle).exists()


@contextmanager
def restored_latest(world: dict[str, Any]) -> Iterator[Any]:
    """A restore of the latest point (every row: AFTER) into a new cluster, for the body to
    write on; afterwards the source's rows must be unchanged, and the restore is discarded."""
    provider, source = world["provider"], world["source"]
    with source.connect() as conn:
        before = table_checksum(conn)
    restored = provider.restore(RestorePoint.latest(), name="latest")
    try:
        assert rows(restored.dsn.get_secret_value()) == AFTER
        yield restored
        with source.connect() as conn:
            assert table_checksum(conn) == before
    finally:
        provider.discard(restored)

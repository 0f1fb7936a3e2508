"""restorekit.engines.adoption on a real stopped cluster: which WAL files archiving missed get a
``.ready`` status (history files, completed segments of the current timeline) and which never
do (the segment in use, preallocated future ones, files that already have a status)."""

from __future__ import annotations

from pathlib import Path

from restorekit.engines.adoption import mark_unarchived
from restorekit.pg.cluster import LocalCluster


def test_only_completed_segments_and_history_files_are_marked(pg_base_dir: Path) -> None:
    cluster = LocalCluster.create(pg_base_dir / f"adopt-mark-{id(object())}" / "data",
                                  settings={"archive_mode": "off", "wal_keep_size": "256MB"})
    try:
        cluster.start()
        with cluster.connect(autocommit=True) as conn:
            for _ in range(2):
                conn.execute("CREATE TABLE IF NOT EXISTS t (x int)")
                conn.execute("INSERT INTO t VALUES (1)")
                conn.execute("SELECT pg_switch_wal()")
            conn.execute("INSERT INTO t VALUES (2)")  # into the segment after the switch
            current = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        cluster.stop()
        wal = cluster.data_dir / "pg_wal"
        status = wal / "archive_status"
        completed = sorted(p.name for p in wal.iterdir()
                           if len(p.name) == 24 and p.name < current)
        assert completed, "the switches left completed segments"
        # A history file promotion wrote, one already archived, and a preallocated future
        # segment (recycled, full of old bytes) that must never reach the archive.
        (wal / "00000002.history").write_text("1\t0/3000000\tno recovery target specified\n")
        (status / f"{completed[0]}.done").touch()
        future = f"{current[:8]}{int(current[8:], 16) + 5:016X}"
        (wal / future).write_bytes(b"\0" * 16)

        marked = mark_unarchived(cluster)

        assert "00000002.history" in marked
        assert completed[0] not in marked and set(completed[1:]) <= set(marked)
        assert current not in marked and future not in marked
        assert all((status / f"{name}.ready").exists() for name in marked)
        assert mark_unarchived(cluster) == []  # twice: nothing more
    finally:
        cluster.destroy()

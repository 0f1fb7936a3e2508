"""Turn WAL archiving on for a restored cluster that was adopted as production.

A restored cluster runs with ``archive_mode=off`` (a scratch copy must never write into its
source's archive). Once adopted it is production and must archive into the same repository,
on the new timeline its promotion started. Two things PostgreSQL does not do by itself when
archiving is switched on later:

* the timeline history file (``0000000N.history``) written at promotion was never marked for
  archiving, yet a restore across the incident needs it to follow the new timeline;
* the segments completed on the new timeline while archiving was off (between promotion and
  now) have no archive status either; PostgreSQL would archive them only when a checkpoint
  recycles them, long after newer segments.

Both get a ``.ready`` status file while the server is stopped, so the archiver, started with
the new settings, stores them first (history files, then oldest segments), with the engine's
own archive_command. Only segments before the shutdown checkpoint's REDO segment are marked:
pg_wal also holds preallocated future segments full of garbage, and archiving one of those
under its future name would block the real one forever.
"""

from __future__ import annotations

import logging
import re
import time

from restorekit.engines.recovery import apply_overrides
from restorekit.errors import PostgresError
from restorekit.pg.cluster import LocalCluster, connect, wait_until_ready
from restorekit.pg.tools import chown_for

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^([0-9A-F]{8})[0-9A-F]{16}$")
_HISTORY = re.compile(r"^[0-9A-F]{8}\.history$")
_REDO_FILE = re.compile(r"^Latest checkpoint's REDO WAL file:\s*([0-9A-F]{24})\s*$", re.MULTILINE)


def current_settings(dsn: str, names: list[str]) -> tuple[dict[str, str], int]:
    """(the named settings as the server reports them, its current timeline)."""
    with connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                            (names,)).fetchall()
        row = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()
    assert row is not None
    return {str(k): str(v) for k, v in rows}, int(row[0])


def turn_archiving_on(cluster: LocalCluster, settings: dict[str, object], *, dsn: str,
                      timeout: float = 120) -> list[str]:
    """Apply ``settings`` (the engine's archive_settings, plus anything it needs such as a
    socket directory) to the adopted cluster and restart it when they differ; the WAL files
    archiving missed are marked for the archiver. Returns the names marked (none when the
    settings were already in place: a re-run).

    Raises:
        PostgresError: the cluster could not be restarted (its log tail is in the message).
    """
    have, _ = current_settings(dsn, list(settings))
    if have.get("wal_level") == "logical" and settings.get("wal_level") == "replica":
        # logical includes replica: never take logical decoding away from production.
        settings = {k: v for k, v in settings.items() if k != "wal_level"}
    if all(have.get(k) == _as_setting(v) for k, v in settings.items()):
        return []
    log.info("turning WAL archiving on for the adopted cluster in %s (restart)", cluster.data_dir)
    cluster.stop(mode="fast")
    marked = mark_unarchived(cluster)
    apply_overrides(cluster.data_dir, settings, cluster.os_user)
    cluster.start(timeout=timeout)
    wait_until_ready(dsn, timeout=timeout)
    return marked


def mark_unarchived(cluster: LocalCluster) -> list[str]:
    """On a STOPPED cluster: give every history file and every completed segment of the
    current timeline that has no archive status a ``.ready`` one."""
    out = cluster.tool.run("pg_controldata", "-D", str(cluster.data_dir), timeout=60).stdout
    match = _REDO_FILE.search(out)
    if match is None:
        raise PostgresError(f"pg_controldata of {cluster.data_dir} names no REDO WAL file")
    redo = match.group(1)
    timeline = redo[:8]
    wal = cluster.data_dir / "pg_wal"
    status = wal / "archive_status"
    marked: list[str] = []
    for path in sorted(wal.iterdir()):
        name = path.name
        segment = _SEGMENT.match(name)
        wanted = bool(_HISTORY.match(name)) or (
            segment is not None and segment.group(1) == timeline and name < redo)
        if not wanted or any((status / f"{name}{s}").exists() for s in (".ready", ".done")):
            continue
        ready = status / f"{name}.ready"
        ready.touch()
        chown_for(ready, cluster.os_user)
        marked.append(name)
    if marked:
        log.info("marked %d WAL file(s) archiving missed: %s", len(marked), ", ".join(marked))
    return marked


def wait_archived(cluster: LocalCluster, names: list[str], *, timeout: float = 120) -> None:
    """Wait until the archiver has stored every file in ``names`` (its ``.done`` status).

    Raises:
        PostgresError: some are still not archived after ``timeout`` seconds.
    """
    status = cluster.data_dir / "pg_wal" / "archive_status"
    deadline = time.monotonic() + timeout
    while True:
        left = [n for n in names if not (status / f"{n}.done").exists()
                and (status / f"{n}.ready").exists()]
        if not left:
            return
        if time.monotonic() > deadline:
            raise PostgresError(
                f"the archiver has not stored {', '.join(left)} after {timeout:.0f}s; see "
                "pg_stat_archiver.last_failed_wal and the server log "
                f"({cluster.log_file})")
        time.sleep(0.1)


def _as_setting(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


__all__ = ["current_settings", "mark_unarchived", "turn_archiving_on", "wait_archived"]

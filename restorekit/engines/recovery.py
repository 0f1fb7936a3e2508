"""Point-in-time recovery of a prepared data directory, shared by every engine.

The restored cluster is always a NEW cluster: it gets its own port, ``archive_mode=off`` (so a
drill or a scratch copy can never write into the source's WAL archive), and
``recovery_target_action=promote``. If WAL replay ends before the target, PostgreSQL (13+) stops
with "recovery ended before configured recovery target was reached"; we turn that into a
:class:`RestorePointError` naming the last reachable point instead of promoting early.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow

from restorekit.errors import (
    ChecksumMismatch,
    DatabaseMissing,
    OperationTimedOut,
    PostgresAuthError,
    PostgresError,
    PostgresUnavailable,
    RepositoryError,
    RestorePointError,
)
from restorekit.models import PointKind, RestorePoint, format_lsn, parse_lsn
from restorekit.pg.cluster import LocalCluster, connect, format_settings
from restorekit.pg.dsn import merge
from restorekit.pg.tools import chown_for
from restorekit.providers.base import Progress, no_progress

log = logging.getLogger(__name__)

_UNREACHED = "recovery ended before configured recovery target was reached"
_REDO_DONE = re.compile(r"redo done at ([0-9A-F]+/[0-9A-F]+)")
_LAST_XACT = re.compile(r"last completed transaction was at log time (.+)$", re.MULTILINE)
# What restorekit.wal (the restore_command) writes to the server log.
_WAL_MISSING = re.compile(r"restorekit\.wal: ([0-9A-F]{24}) is not in the archive")
_WAL_ABORTED = re.compile(r"restorekit\.wal: get (\S+) failed, aborting recovery: (.+)$",
                          re.MULTILINE)


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    recovered_lsn: str
    last_commit_time: datetime | None
    timeline: int
    replay_seconds: float


def target_settings(point: RestorePoint) -> dict[str, object]:
    """recovery_target_* settings for ``point`` (none for ``latest``: replay everything)."""
    if point.kind is PointKind.TIME:
        assert point.time is not None
        return {"recovery_target_time": point.time.isoformat(sep=" ")}
    if point.kind is PointKind.LSN:
        return {"recovery_target_lsn": point.value}
    if point.kind is PointKind.XID:
        return {"recovery_target_xid": point.value,
                "recovery_target_inclusive": "on" if point.inclusive else "off"}
    if point.kind is PointKind.NAME:
        return {"recovery_target_name": point.value}
    if point.kind in (PointKind.BACKUP, PointKind.IMMEDIATE):
        return {"recovery_target": "immediate"}
    return {}


def restored_cluster_settings(port: int, listen_addresses: str = "127.0.0.1") -> dict[str, object]:
    """Settings every restored cluster gets, whatever the source had."""
    return {
        "port": port,
        "listen_addresses": listen_addresses,
        "unix_socket_directories": "",
        "archive_mode": "off",
        "archive_command": "",
        "hot_standby": "on",
        "recovery_target_action": "promote",
        "recovery_target_timeline": "latest",
    }


#: Written when the backup holds no pg_hba.conf (the source kept it outside its data directory,
#: as Debian's /etc/postgresql layout does): every connection needs a scram-sha-256 password.
STRICT_HBA = """\
# Written by restorekit: the backup held no pg_hba.conf. Every connection needs a password.
host    all             all             0.0.0.0/0               scram-sha-256
host    all             all             ::/0                    scram-sha-256
host    replication     all             0.0.0.0/0               scram-sha-256
"""


def settle_access_rules(data_dir: Path, os_user: str | None, *,
                        listen_addresses: str) -> tuple[dict[str, object], str]:
    """Decide who may connect to a restored copy; returns its settings and the report's line.

    The copy keeps the source's own pg_hba.conf and pg_ident.conf from the backup: the
    application and restorekit then authenticate exactly as they did on the source (same roles,
    same passwords, same rules), and nothing is loosened for anyone. Where the source's
    configuration names other files (``hba_file = '/etc/postgresql/...'``), ``hba_file`` and
    ``ident_file`` are pinned to the copy's own, so the copy never reads the live ones.
    When the backup has no pg_hba.conf, a strict one is written (scram-sha-256 for every
    connection) and the report says so.
    """
    hba = data_dir / "pg_hba.conf"
    ident = data_dir / "pg_ident.conf"
    if hba.exists():
        rules = [line.split() for line in hba.read_text(errors="replace").splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
        trusting = sum(1 for rule in rules if "trust" in rule)
        what = (f"the source's own pg_hba.conf from the backup, unchanged ({len(rules)} rule(s)"
                + (f", {trusting} of them 'trust' as on the source" if trusting else "") + ")")
    else:
        hba.write_text(STRICT_HBA)
        chown_for(hba, os_user)
        what = ("a strict pg_hba.conf written by restorekit (the backup held none): "
                "scram-sha-256 for every connection")
    if not ident.exists():
        ident.write_text("# Written by restorekit: the backup held no pg_ident.conf.\n")
        chown_for(ident, os_user)
    line = (f"Access to the restored database: {what}; pg_ident.conf as in the backup; it "
            f"listens on {listen_addresses}.")
    # Pinned only where the source names other files: the default (the data directory's own)
    # keeps following the directory if it is ever moved.
    elsewhere = _names_other_files(data_dir)
    return {key: str(data_dir / name) for key, name in
            (("hba_file", hba.name), ("ident_file", ident.name)) if key in elsewhere}, line


_FILE_SETTING = re.compile(r"^\s*(hba_file|ident_file)\s*=", re.MULTILINE)


def _names_other_files(data_dir: Path) -> set[str]:
    found: set[str] = set()
    for conf in data_dir.glob("*.conf"):
        with contextlib.suppress(OSError):
            found.update(_FILE_SETTING.findall(conf.read_text(errors="replace")))
    return found


def apply_overrides(data_dir: Path, settings: dict[str, object], os_user: str | None) -> None:
    """Append ``settings`` to postgresql.auto.conf: the last entry wins over everything before,
    including the source's own postgresql.conf and ALTER SYSTEM settings in the backup."""
    auto = data_dir / "postgresql.auto.conf"
    existing = auto.read_text() if auto.exists() else ""
    auto.write_text(existing + "\n# restorekit: restored-cluster overrides\n"
                    + format_settings(settings))
    chown_for(auto, os_user)


def write_recovery_signal(data_dir: Path, os_user: str | None) -> None:
    for stale in ("standby.signal", "postmaster.pid", "postmaster.opts"):
        (data_dir / stale).unlink(missing_ok=True)
    signal = data_dir / "recovery.signal"
    signal.touch()
    chown_for(signal, os_user)


def run_recovery(
    cluster: LocalCluster,
    *,
    dsn: str | None = None,
    target_lsn: str | None = None,
    progress: Progress = no_progress,
    timeout: float = 3600,
    poll_interval: float = 0.05,
    refused_grace: float = 60,
) -> RecoveryResult:
    """Start ``cluster`` (recovery.signal present) and follow WAL replay until it is promoted.

    ``dsn`` reaches the restored cluster with the source's credentials: the copy has the
    source's roles, passwords and pg_hba.conf, so a password-protected source needs them.

    Raises:
        PostgresAuthError: the restored cluster refused the credentials (at once, no polling).
        RestorePointError: the WAL ended before the recovery target.
        PostgresError: the server stopped for another reason (the log tail is in the message),
            or it has said it accepts connections for ``refused_grace`` seconds while every
            connection failed (a refusal no retry cures that the taxonomy does not know).
        OperationTimedOut: replay did not finish within ``timeout`` seconds.
    """
    started = time.monotonic()
    cluster.start(wait=False)
    target = parse_lsn(target_lsn) if target_lsn else None
    deadline = started + timeout
    # One session, kept from the moment the server accepts connections (hot standby) until it
    # is promoted: a new connection per poll forked a backend 20 times a second on the machine
    # doing the replay (62 connections for a 3 s replay in bench/restore_bench.py's profile).
    conn: psycopg.Connection[TupleRow] | None = None
    poll_dsn = dsn or cluster.dsn()
    # Where the named database is gone (the replayed WAL dropped it, e.g. a drop-and-rename in
    # the source's history), the replay is followed through the maintenance databases instead.
    fallbacks = ["postgres", "template1"]
    refused_since: float | None = None  # failing to connect while the postmaster accepts
    try:
        while True:
            if time.monotonic() > deadline:
                raise OperationTimedOut(
                    f"WAL replay did not finish within {timeout:.0f}s; the restored cluster in "
                    f"{cluster.data_dir} is still recovering",
                    provider="selfhosted",
                    operation="recovery",
                )
            status = cluster.postmaster_status() if conn is None else None
            if status in _NOT_ACCEPTING:
                # Each attempt now would fork a backend only to be told "the database system
                # is starting up" (and write that FATAL into the log an operator reads): wait
                # until the postmaster says it accepts connections, as pg_ctl -w does.
                if not _postmaster_alive(cluster, started):
                    _raise_for_stopped(cluster)
                time.sleep(poll_interval)
                continue
            connecting = conn is None
            try:
                if conn is None:
                    conn = connect(poll_dsn, connect_timeout=5, autocommit=True)
                    refused_since = None
                done = _poll(conn, progress, target, started)
                if done is not None:
                    return done
            except PostgresAuthError as exc:
                raise PostgresAuthError(
                    f"the restored cluster in {cluster.data_dir} replayed its WAL but refused "
                    f"restorekit: {exc} (a restored copy keeps the source's roles, passwords and "
                    "pg_hba.conf)", role=exc.role, host=exc.host) from None
            except DatabaseMissing as exc:
                if not fallbacks:
                    raise
                poll_dsn = merge(poll_dsn, dbname=fallbacks.pop(0))
                log.warning("following WAL replay through another database: %s", exc)
                continue
            except (PostgresUnavailable, psycopg.OperationalError,
                    psycopg.errors.SerializationFailure) as exc:
                # Not accepting connections yet, the session was lost (the server stopped), or
                # the poll was cancelled by a conflict with recovery: look again on a new one.
                if conn is not None:
                    _close_quietly(conn)
                    conn = None
                if not _postmaster_alive(cluster, started):
                    _raise_for_stopped(cluster)
                if connecting:
                    refused_since = _refused(cluster, status, exc, refused_since,
                                             refused_grace)
            time.sleep(poll_interval)
    finally:
        if conn is not None:
            _close_quietly(conn)


def _refused(cluster: LocalCluster, status: str | None, exc: Exception, since: float | None,
             grace: float) -> float | None:
    """When connections began to fail while the postmaster says (``status``, read before the
    attempt) it accepts them; None when it does not say so. Past ``grace`` seconds that is a
    PostgresError: something no retry cures (a TLS or authentication refusal libpq words
    without FATAL, as a certificate that names another host was, which the restore polled
    until its timeout)."""
    if status not in ("ready", "standby"):
        return None
    now = time.monotonic()
    if since is not None and now - since > grace:
        raise PostgresError(
            f"the restored cluster in {cluster.data_dir} accepts connections (postmaster.pid: "
            f"{status}) but restorekit's have failed for {grace:.0f}s: {exc}")
    return since if since is not None else now


#: postmaster.pid statuses in which the server refuses connections (see
#: LocalCluster.postmaster_status); "standby" and "ready" accept them, None means unknown.
_NOT_ACCEPTING = frozenset({"starting", "stopping"})


def _poll(conn: psycopg.Connection[TupleRow], progress: Progress, target: int | None,
          started: float) -> RecoveryResult | None:
    """One look at the replay: progress reported; the result once the server is promoted."""
    row = conn.execute(
        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), pg_last_xact_replay_timestamp()"
    ).fetchone()
    assert row is not None
    in_recovery, replay_lsn, last_xact = row
    if replay_lsn is not None:
        progress("wal replay", parse_lsn(str(replay_lsn)), target)
    if in_recovery:
        return None
    current = conn.execute(
        "SELECT pg_current_wal_lsn(), timeline_id FROM pg_control_checkpoint()"
    ).fetchone()
    assert current is not None
    recovered = str(replay_lsn) if replay_lsn is not None else str(current[0])
    return RecoveryResult(
        recovered_lsn=recovered,
        last_commit_time=last_xact,
        timeline=int(current[1]),
        replay_seconds=time.monotonic() - started,
    )


def _close_quietly(conn: psycopg.Connection[TupleRow]) -> None:
    with contextlib.suppress(psycopg.Error, OSError):
        conn.close()


_STOPPED = ("database system is shut down", "FATAL:", "PANIC:")


def _postmaster_alive(cluster: LocalCluster, started: float, *, grace: float = 60) -> bool:
    # postmaster.pid disappears when the server exits, including after a FATAL in the startup
    # process. A server that was only just started may not have written it yet (slow on a
    # loaded machine): it counts as dead only once its log says it stopped, or after ``grace``.
    if (cluster.data_dir / "postmaster.pid").exists():
        return cluster.is_running()
    log_text = cluster.log_file.read_text(errors="replace") if cluster.log_file.exists() else ""
    if any(marker in log_text for marker in _STOPPED):
        return False
    return time.monotonic() - started < grace


def _raise_for_stopped(cluster: LocalCluster) -> None:
    log_text = cluster.log_file.read_text(errors="replace") if cluster.log_file.exists() else ""
    if _UNREACHED in log_text:
        redo = _REDO_DONE.findall(log_text)
        last = _LAST_XACT.findall(log_text)
        reachable = []
        if redo:
            reachable.append(f"LSN {redo[-1]}")
        if last:
            reachable.append(f"last commit at {last[-1].strip()}")
        where = " and ".join(reachable) or "an unknown point"
        missing = _WAL_MISSING.findall(log_text)
        gap = f" (WAL segment {missing[-1]} is not in the archive)" if missing else ""
        raise RestorePointError(
            "the archived WAL ends before the restore point: recovery ended before the "
            f"configured recovery target was reached{gap}; the last reachable point is {where}. "
            "Nothing was promoted. Choose an earlier restore point (see `restorekit window`), "
            "put the missing WAL back into the archive, or check that the source is archiving "
            "WAL (pg_stat_archiver)."
        )
    aborted = _WAL_ABORTED.findall(log_text)
    if aborted:
        name, why = aborted[-1]
        error = ChecksumMismatch if "checksum mismatch" in why else RepositoryError
        raise error(
            f"WAL replay stopped: fetching {name} from the repository failed: {why.strip()}. "
            "State: the restored cluster stopped without being promoted (nothing was promoted; "
            "the source was not touched). Next: make the repository readable"
            + (f" or repair {name} there" if error is ChecksumMismatch else "")
            + ", then restore again."
        )
    raise PostgresError(
        f"the restored cluster in {cluster.data_dir} stopped during recovery:\n{cluster.log_tail()}"
    )


__all__ = [
    "RecoveryResult",
    "apply_overrides",
    "format_lsn",
    "restored_cluster_settings",
    "run_recovery",
    "settle_access_rules",
    "target_settings",
    "write_recovery_signal",
]

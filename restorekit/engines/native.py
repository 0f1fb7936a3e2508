"""The embedded default engine: pg_basebackup and an archive_command into a restorekit repository.

Layout in the repository::

    backups/<backup_id>/base.tar        pg_basebackup -Ft (the data directory); compressed
                                        (``[backups] compression``) it is base.tar.lz4,
                                        base.tar.zst or base.tar.gz, as pg_basebackup names it
    backups/<backup_id>/pg_wal.tar      WAL for consistency, when the backup streamed it (the
                                        default --wal-method=fetch puts it inside base.tar)
    backups/<backup_id>/backup_manifest PostgreSQL's own manifest (WAL range)
    backups/<backup_id>/backup.json     restorekit's metadata; written last, so a backup without
                                        it is incomplete and ignored
    wal/<segment>                        archived by ``python -m restorekit.wal push``
    restore-points/<name>.json           restore points created through restorekit (name -> LSN)

Every object carries a checksum record (see restorekit.repository) and is read back before the
backup is declared complete. A compressed base backup is stored as pg_basebackup wrote it and
restored by GNU tar through the codec's program; from a local repository tar reads the object's
file itself while restorekit hashes it alongside (``Repository.open_in_place``), from S3 it
streams through restorekit, which hashes it on the way; either way the checksum is checked to
the end before the cluster starts. Archived WAL segments are compressed by the archive_command and
decompressed (and verified twice: at rest and decompressed) when fetched: during a restore ahead
of PostgreSQL into a spool beside the data directory (:class:`restorekit.wal.WalSpool`), which
the restore_command moves them out of without starting Python. Backups and
segments written before compression was turned on restore as before.
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from restorekit import wal
from restorekit.config import BackupPolicy
from restorekit.engines.base import SourceSpec
from restorekit.engines.native_backup import (
    BASE_FILES,
    TAR_SUFFIXES,
    backup_id_at,
    basebackup_compress,
    database_bytes,
    dump_backup,
    label_start_time,
    load_backup,
    safe_name,
)
from restorekit.engines.native_restore import (
    choose_backup,
    refuse_links,
    untar,
    untar_in_place,
)
from restorekit.engines.recovery import target_settings
from restorekit.engines.wal_scan import is_segment, last_commit
from restorekit.errors import (
    ChecksumMismatch,
    ConfigError,
    ObjectNotFound,
    PgToolFailed,
    RepositoryError,
    RestoreKitError,
    RestorePointError,
)
from restorekit.forecast import ArchivedWal
from restorekit.models import (
    BackupInfo,
    PointKind,
    RestorePoint,
    RestoreWindow,
    format_lsn,
    parse_lsn,
)
from restorekit.pg.cluster import auth_error, connect, is_auth_failure
from restorekit.pg.dsn import password_env
from restorekit.pg.tools import PgTool, make_dir, run_command
from restorekit.providers.base import Progress
from restorekit.repository import Repository, discard_unfinished
from restorekit.retention import (
    RetentionPlan,
    apply_retention,
    plan_retention,
)

log = logging.getLogger(__name__)

_PROGRESS = re.compile(r"^\s*(\d+)/(\d+) kB")
_SCAN_SEGMENTS = 8  # newest archived segments read for the last commit


class NativeEngine:
    """Base backups with pg_basebackup, WAL through ``restorekit.wal``, all in one repository.

    Args:
        source: the cluster being protected (only ``dsn`` is needed: pg_basebackup streams over
            the replication protocol, so the source may be on another machine).
        repo: the repository; ``repo_url`` is the URL PostgreSQL's archive/restore commands use.
        work_dir: local scratch space for a backup in flight.
        python: the interpreter PostgreSQL's archive_command runs; it must be executable by the
            PostgreSQL OS user.
        compression: ``[backups] compression``: pg_basebackup's ``--compress`` for base backups
            (a bare method is compressed client-side: the source's CPU is left alone) and the
            codec of archived segments; ``"none"`` (the default when the engine is built
            directly; restorekit.toml's default is BackupPolicy's) stores both as they are.
    """

    name: ClassVar[str] = "native"

    def __init__(
        self,
        source: SourceSpec,
        repo: Repository,
        *,
        repo_url: str,
        work_dir: Path,
        python: str = sys.executable,
        compression: str = "none",
    ) -> None:
        self.source = source
        self.repo = repo
        self.repo_url = repo_url
        self.work_dir = Path(work_dir)
        self.python = python
        self.compression = compression
        self.wal_encoding, _ = wal.wal_codec(compression)  # raises ConfigError on a bad value
        self.client = PgTool(source.bin_dir, os_user=None)

    # -- archiving -----------------------------------------------------------------------------

    def archive_settings(self) -> dict[str, object]:
        return {
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": wal.archive_command(self.repo_url, python=self.python,
                                                   compression=self.compression),
        }

    def check(self) -> None:
        """Source reachable, archiving configured into this repository, archiver healthy."""
        if self.source.os_user is not None:
            try:
                run_command(
                    ["runuser", "-u", self.source.os_user, "--", self.python, "-c",
                     "import restorekit.wal"],
                    timeout=60,
                )
            except PgToolFailed as exc:
                raise ConfigError(
                    f"the PostgreSQL OS user {self.source.os_user!r} cannot run {self.python} "
                    "with restorekit importable, so archive_command would fail; install restorekit "
                    "in a virtualenv built from a world-readable Python (e.g. /usr/bin/python3.11) "
                    f"in a directory that user can read ({exc})"
                ) from None
        with connect(self.source.dsn, autocommit=True) as conn:
            settings: dict[str, str] = dict(
                conn.execute(
                    "SELECT name, setting FROM pg_settings "
                    "WHERE name IN ('wal_level', 'archive_mode', 'archive_command')"
                ).fetchall()
            )
            failed = conn.execute(
                "SELECT failed_count, last_failed_wal, last_archived_wal FROM pg_stat_archiver"
            ).fetchone()
        problems = []
        if settings.get("wal_level") not in ("replica", "logical"):
            problems.append(f"wal_level is {settings.get('wal_level')!r}, needs 'replica'")
        if settings.get("archive_mode") not in ("on", "always"):
            problems.append(f"archive_mode is {settings.get('archive_mode')!r}, needs 'on'")
        if "restorekit.wal" not in (settings.get("archive_command") or ""):
            problems.append("archive_command does not archive into restorekit")
        if problems:
            wanted = "; ".join(f"{k} = {v!r}" for k, v in self.archive_settings().items())
            raise ConfigError(
                "the source is not archiving WAL into this repository: "
                + ", ".join(problems)
                + f". Set in postgresql.conf and restart: {wanted}"
            )
        if failed and failed[1] and failed[1] != failed[2]:
            log.warning("the source's archiver reports failures (last failed WAL %s)", failed[1])

    # -- backups -------------------------------------------------------------------------------

    def backup(self, *, label: str = "", progress: Progress) -> BackupInfo:
        self.check()
        started = datetime.now(UTC)
        backup_id = backup_id_at(started)
        make_dir(self.work_dir, None, mode=0o700)
        tmp = Path(tempfile.mkdtemp(prefix=f"backup-{backup_id}-", dir=self.work_dir))
        stored: list[str] = []
        try:
            while self.repo.exists(f"backups/{backup_id}/backup.json"):
                backup_id = backup_id_at(datetime.now(UTC)) + f"-{os.getpid()}"
            self._run_basebackup(tmp, backup_id, label, progress)
            manifest = json.loads((tmp / "backup_manifest").read_text())
            wal_range = manifest["WAL-Ranges"][0]
            with connect(self.source.dsn, autocommit=True) as conn:
                row = conn.execute("SELECT now(), current_setting('server_version_num')").fetchone()
            assert row is not None
            stop_time: datetime = row[0]
            base_tar = next(tmp / n for n in sorted(BASE_FILES) if n.startswith("base.tar")
                            and (tmp / n).exists())
            start_time = label_start_time(base_tar) or started
            objects, done = self._upload(tmp, backup_id, progress, stored)
            backup = BackupInfo(
                backup_id=backup_id,
                engine=self.name,
                start_time=start_time,
                stop_time=stop_time,
                start_lsn=wal_range["Start-LSN"],
                stop_lsn=wal_range["End-LSN"],
                timeline=int(wal_range["Timeline"]),
                size_bytes=done,
                label=label,
                extra={"objects": objects, "server_version_num": int(row[1]),
                       "compression": self.compression,
                       "database_bytes": database_bytes(manifest)},
            )
            stored.append(f"backups/{backup_id}/backup.json")
            self.repo.put_bytes(f"backups/{backup_id}/backup.json", dump_backup(backup))
            log.info("base backup %s stored in %s (%d bytes)", backup_id, self.repo.url, done)
            return backup
        except RepositoryError as exc:
            raise self._discard_unfinished(exc, backup_id, stored) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _run_basebackup(self, tmp: Path, backup_id: str, label: str,
                        progress: Progress) -> None:
        """pg_basebackup of the source into ``tmp`` (tar format, WAL fetched into base.tar)."""
        dsn, env = password_env(self.source.dsn)

        def on_line(line: str) -> None:
            match = _PROGRESS.match(line)
            if match:
                progress("base backup", int(match.group(1)) * 1024, int(match.group(2)) * 1024)

        try:
            self.client.run(
                "pg_basebackup", "--dbname", dsn, "--pgdata", str(tmp), "--format=tar",
                # --no-password: a replication connection that pg_hba.conf asks a password of
                # (where the role's other connections are trusted, or peer) made pg_basebackup
                # prompt on the operator's terminal and wait there (6 hours, the timeout).
                "--no-password", "--wal-method=fetch", "--checkpoint=fast", "--progress",
                "--no-sync", f"--compress={basebackup_compress(self.compression)}",
                "--label", f"restorekit {backup_id} {label}".strip(),
                env=env, on_line=on_line, timeout=6 * 3600,
            )
        except PgToolFailed as exc:
            if is_auth_failure(None, exc.stderr_tail):
                raise auth_error(dsn, exc.stderr_tail, replication=True) from None
            raise
        extra_files = {p.name for p in tmp.iterdir()} - BASE_FILES - {"backup_manifest"}
        if extra_files:
            raise ConfigError(
                "the source has tablespaces outside its data directory "
                f"({', '.join(sorted(extra_files))}); the native engine restores only a "
                "single data directory, use engine = \"pgbackrest\" for this target"
            )

    def _upload(self, tmp: Path, backup_id: str, progress: Progress,
                stored: list[str]) -> tuple[dict[str, object], int]:
        """Store every file of ``tmp`` under ``backups/<backup_id>/``, each read back; the key
        of each is appended to ``stored`` before it is sent. Returns the objects' sizes and
        checksums by name, and the bytes stored."""
        objects: dict[str, object] = {}
        total = sum(p.stat().st_size for p in tmp.iterdir())
        done = 0
        sent = 0

        def uploaded(n: int) -> None:  # the repository reports increments
            nonlocal sent
            sent += n
            progress("upload", sent, total)

        for path in sorted(tmp.iterdir()):
            key = f"backups/{backup_id}/{path.name}"
            stored.append(key)
            info = self.repo.put_file(key, path, progress=uploaded)
            done += info.size
            # Read back before the backup counts: a backup nobody can restore is not one.
            self.repo.verify(key)
            objects[path.name] = {"size": info.size, "sha256": info.sha256}
        return objects, done

    def _discard_unfinished(self, exc: RepositoryError, backup_id: str,
                            stored: list[str]) -> RepositoryError:
        """Remove what an unfinished backup stored; returns the error to raise, saying what
        failed, what state things are in and what to do."""
        # Half a backup is clutter at best: remove what was stored (backup.json first, so
        # nothing ever vouches for the rest).
        if not stored:
            state = "nothing had been uploaded"
        elif discard_unfinished(self.repo, reversed(stored), "backup"):
            state = "the objects already uploaded were removed"
        else:
            state = ("some uploaded objects could not be removed (they are ignored: no "
                     "backup.json vouches for them)")
        return type(exc)(
            f"base backup {backup_id} was NOT stored in {self.repo.url}: {exc}. State: no "
            f"backup was recorded and {state}; the source database was not changed and "
            "keeps archiving WAL. Next: fix the repository (reachable, writable, enough "
            "free space) and run the backup again.",
            retryable=exc.is_retryable,
        )

    def list_backups(self) -> list[BackupInfo]:
        metadata = [key for key in self.repo.keys("backups/") if key.endswith("/backup.json")]
        backups = [load_backup(data) for data in self.repo.get_many(metadata)]
        return sorted(backups, key=lambda b: (b.stop_time, b.backup_id))

    def expire(self, policy: BackupPolicy, now: datetime, *, dry_run: bool = False
               ) -> RetentionPlan:
        """Remove the base backups and archived WAL ``policy`` no longer keeps
        (:mod:`restorekit.retention`); the WAL a kept backup needs always stays."""
        # Names from one listing and the size from one record: a record read per segment
        # would grow with the archive (thousands of GETs on S3 for a week of WAL).
        names = wal.wal_names(self.repo)
        plan = plan_retention(self.list_backups(), names, policy, now,
                              segment_size=wal.archived_segment_size(self.repo, names))
        return apply_retention(self.repo, plan, dry_run=dry_run)

    def create_restore_point(self, name: str) -> tuple[str, datetime]:
        """``pg_create_restore_point(name)`` on the source, recorded in the repository so a
        restore to that name can pick the right base backup."""
        with connect(self.source.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT pg_create_restore_point(%s)::text, clock_timestamp()", (name,)
            ).fetchone()
            conn.execute("SELECT pg_switch_wal()")
        assert row is not None
        lsn, when = str(row[0]), row[1]
        self.repo.put_bytes(
            f"restore-points/{safe_name(name)}.json",
            json.dumps({"name": name, "lsn": lsn, "time": when.isoformat()}).encode(),
        )
        return lsn, when

    def restore_point_lsn(self, name: str) -> str | None:
        key = f"restore-points/{safe_name(name)}.json"
        if not self.repo.exists(key):
            return None
        return str(json.loads(self.repo.get_bytes(key))["lsn"])

    # -- window --------------------------------------------------------------------------------

    def restore_window(self) -> RestoreWindow:
        backups = self.list_backups()
        if not backups:
            return RestoreWindow(earliest=None, latest=None)
        first, newest = backups[0], backups[-1]
        segments = [s for s in wal.wal_names(self.repo) if is_segment(s)]
        make_dir(self.work_dir, None, mode=0o700)
        with tempfile.TemporaryDirectory(dir=self.work_dir) as tmp:
            found = last_commit(
                self.client,
                segments,
                lambda name, dest: self._fetch_wal(name, dest),
                Path(tmp),
                max_segments=_SCAN_SEGMENTS,
            )
        latest_time, latest_lsn = newest.stop_time, newest.stop_lsn
        if found and parse_lsn(found[0]) >= parse_lsn(newest.stop_lsn):
            latest_lsn, latest_time = found[0], max(found[1], newest.stop_time)
        latest_commit = found[1] if found else None
        if found is None and len(segments) <= _SCAN_SEGMENTS:
            # Every archived segment was read and none holds a commit (retention expired the
            # WAL of the last one, on a quiet database): nothing after the oldest backup changes
            # the data, so each point of the window is the end of the archive. Saying the last
            # commit lies at the window's start lets a time target replay to that end instead
            # of waiting for a commit that never comes ("recovery ended before target").
            latest_commit = first.stop_time
        return RestoreWindow(
            earliest=first.stop_time,
            latest=latest_time,
            earliest_lsn=first.stop_lsn,
            latest_lsn=latest_lsn,
            latest_commit=latest_commit,
        )

    def wal_segments(self) -> list[str]:
        return [s for s in wal.wal_names(self.repo) if is_segment(s)]

    def archived_wal(self, since: datetime) -> ArchivedWal | None:
        """The segments archived at or after ``since`` (sizes before compression), for the WAL
        written per hour; None when there are none. One listing and O(log n) records: a record
        per segment would grow with the archive (a GET each on S3)."""
        # Names sort in archive order (timeline, then segment; the archiver pushes in order), so
        # archive times grow with the name and bisection finds the first segment since `since`.
        # Where they do not (a segment stored again later, an old timeline still archiving after
        # a promotion), the count and the span are off: a rough rate, never a failure.
        try:
            return self._archived_since(self.wal_segments(), since)
        except ObjectNotFound:  # retention expired a listed segment meanwhile: list again
            return self._archived_since(self.wal_segments(), since)

    def _archived_since(self, names: list[str], since: datetime) -> ArchivedWal | None:
        record = functools.cache(lambda name: self.repo.stat(wal.wal_key(name)))
        if not names or record(names[-1]).created_at < since:
            return None
        first = bisect.bisect_left(names, since, hi=len(names) - 1,
                                   key=lambda name: record(name).created_at)
        start, end = sorted((record(names[first]).created_at, record(names[-1]).created_at))
        count = len(names) - first
        return ArchivedWal(segments=count, bytes_after_first=(count - 1) * record(names[-1]).size,
                           first=start, last=end)

    def fetch_wal(self, name: str, dest: Path) -> None:
        """The plain segment ``name`` at ``dest``, verified (decompressed when archived
        compressed)."""
        wal.fetch_wal(self.repo, name, dest)

    _fetch_wal = fetch_wal

    def check_wal_continuity(self, point: RestorePoint, backup: BackupInfo) -> None:
        """Refuse a restore the archive cannot carry: a segment missing between the backup
        and the end of the archive (``latest``) or the target LSN.

        Without this check, replay to ``latest`` simply ends at the gap and PostgreSQL
        promotes there, silently dropping everything archived after it. Time, xid and name
        targets are left to PostgreSQL, which stops with "recovery ended before configured
        recovery target was reached" when the gap lies before the target (and does not care
        about a gap after it).
        """
        if point.kind not in (PointKind.LATEST, PointKind.LSN):
            return
        segments = [s for s in wal.wal_names(self.repo) if is_segment(s)]
        timeline = f"{backup.timeline:08X}"
        mine = [name for name in segments if name.startswith(timeline)]
        if not mine or any(name[:8] > timeline for name in segments):
            return  # nothing archived yet, or a later timeline: left to PostgreSQL
        seg_size = wal.archived_segment_size(self.repo, mine)

        def number(name: str) -> int:
            return wal.segment_number(name, seg_size)

        def name_of(n: int) -> str:
            return wal.segment_file(backup.timeline, n, seg_size)

        first = parse_lsn(backup.start_lsn) // seg_size
        last = number(mine[-1])
        if point.lsn is not None:
            last = min(last, point.lsn // seg_size)
        have = {number(name) for name in mine}
        for n in range(first, last + 1):
            if n not in have:
                end = format_lsn(n * seg_size)
                raise RestorePointError(
                    f"the WAL archive in {self.repo.url} has a gap: segment {name_of(n)} is "
                    f"missing (archived up to {mine[-1]}), so replay from backup "
                    f"{backup.backup_id} cannot get past LSN {end}; a restore to {point} would "
                    "stop there and silently lose everything archived after it. Nothing was "
                    f"started. Next: put {name_of(n)} back into the archive (it may still be in "
                    f"the source's pg_wal), or restore to a point before LSN {end} "
                    f"(e.g. --point lsn:{end})."
                )

    # -- restore -------------------------------------------------------------------------------

    def choose_backup(self, point: RestorePoint, backups: list[BackupInfo]) -> BackupInfo:
        """The newest backup that ends before ``point`` (less WAL to replay)."""
        return choose_backup(point, backups, restore_point_lsn=self.restore_point_lsn)

    def prepare_restore(
        self, point: RestorePoint, backup: BackupInfo, data_dir: Path, *, progress: Progress
    ) -> dict[str, object]:
        total = int(backup.size_bytes) or None
        done = 0

        def counted(n: int) -> None:
            nonlocal done
            done += n
            progress("base restore", done, total)

        objects = backup.extra.get("objects", {})
        os_user = self.source.os_user
        self.check_wal_continuity(point, backup)
        spool = self._start_spool(point, backup, data_dir)
        try:
            self._restore_base(backup, objects, data_dir, os_user, counted)
        except BaseException:
            if spool is not None:
                spool.stop()
            raise
        if spool is None:
            return {"restore_command": wal.restore_command(self.repo_url, python=self.python),
                    **target_settings(point)}
        return {
            "restore_command": wal.restore_command(self.repo_url, python=self.python,
                                                   spool=spool.directory),
            "recovery_end_command": wal.spool_cleanup_command(spool.directory),
            **target_settings(point),
        }

    def _start_spool(self, point: RestorePoint, backup: BackupInfo,
                     data_dir: Path) -> wal.WalSpool | None:
        """Start fetching the WAL the restore replays (:class:`restorekit.wal.WalSpool`) into
        ``wal-spool`` beside the data directory, in the restore's home. None when the archive
        cannot be listed: the spool only saves time, ``get`` alone still restores (or reports
        the repository's failure where it always did)."""
        try:
            archived = wal.wal_names(self.repo)
            end = point.lsn
            plan = wal.replay_plan(
                archived, backup.timeline, parse_lsn(backup.start_lsn),
                segment_size=wal.archived_segment_size(self.repo, archived), end_lsn=end,
                read_history=lambda name: self.repo.get_bytes(wal.wal_key(name)).decode())
            spool = wal.WalSpool(self.repo, data_dir.parent / "wal-spool", archived, plan,
                                 data_dir=data_dir, os_user=self.source.os_user)
        except (RestoreKitError, OSError, ValueError) as exc:
            log.warning("not fetching WAL ahead (PostgreSQL fetches each file itself): %s", exc)
            return None
        return spool.start()

    def _restore_base(self, backup: BackupInfo, objects: dict[str, object], data_dir: Path,
                      os_user: str | None, counted: Callable[[int], None]) -> None:
        parts = [(name, dest) for stem, dest in (("base.tar", data_dir),
                                                 ("pg_wal.tar", data_dir / "pg_wal"))
                 for name in (stem + suffix for suffix in TAR_SUFFIXES) if name in objects]
        # With --wal-method=fetch the WAL is inside base.tar: pg_wal.tar is usually absent.
        for name, dest in parts:
            key = f"backups/{backup.backup_id}/{name}"
            codec = TAR_SUFFIXES[name[name.index(".tar") + 4:]]
            try:
                # A local object's file goes to tar as it is; any other streams through here.
                with self.repo.open_in_place(key) as stored:
                    if stored is not None:
                        untar_in_place(stored, dest, os_user=os_user, on_bytes=counted,
                                       codec=codec)
                if stored is None:
                    with self.repo.open_verified(key) as stream:
                        untar(stream, dest, os_user=os_user, on_bytes=counted, codec=codec)
            except RepositoryError as exc:
                others = [b.backup_id for b in self.list_backups()
                          if b.backup_id != backup.backup_id] if isinstance(
                              exc, ChecksumMismatch) else []
                hint = (f" or restore from another backup (backup:{others[-1]}; all: "
                        f"{', '.join(others)})" if others else "")
                raise type(exc)(
                    f"restoring base backup {backup.backup_id} failed while reading {key!r}: "
                    f"{exc}. State: nothing was started and the half-written data directory is "
                    "removed; the source was not touched. Next: "
                    + ("repair or replace that object" if isinstance(exc, ChecksumMismatch)
                       else "make the repository reachable and restore again")
                    + hint + ".",
                    retryable=exc.is_retryable,
                ) from exc
        refuse_links(data_dir)
        data_dir.chmod(0o700)


__all__ = ["NativeEngine", "basebackup_compress", "choose_backup", "format_lsn"]

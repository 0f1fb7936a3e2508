"""pgBackRest as the self-hosted backup engine.

pgBackRest owns the repository (full backups, WAL archive, retention); restorekit drives its CLI
and reads ``info --output=json``. Every call passes ``--config`` with a file restorekit writes into
its own work directory, so the host's /etc/pgbackrest.conf never changes what runs (pgBackRest
skips the default conf.d include when ``--config`` is given). Console logging is off and
messages go to stderr, so stdout carries only the JSON that ``info`` prints and
:func:`run_command` streams the per-file progress lines.

The restored cluster must never write into the source's repository: restores use
``--archive-mode=off``, and the caller appends :func:`recovery.restored_cluster_settings`.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

from restorekit.engines.base import SourceSpec
from restorekit.engines.pgbackrest_cli import (
    ENGINE,
    LABEL_KEY,
    archive_max_segment,
    compress_options,
    error_lines,
    last_commit,
    parse_backups,
    parse_version,
    previous_segment,
    progress_reader,
    restore_options,
    retention_options,
    segment_bytes,
    translate_error,
    validate_options,
)
from restorekit.engines.wal_scan import is_segment
from restorekit.errors import (
    ConfigError,
    PgToolFailed,
    ProviderError,
    RestoreKitError,
    SafetyError,
)
from restorekit.forecast import ArchivedWal
from restorekit.models import (
    BackupInfo,
    RestorePoint,
    RestoreWindow,
)
from restorekit.pg import dsn as dsnlib
from restorekit.pg.tools import PgTool, chown_for, default_os_user, make_dir, run_command
from restorekit.providers.base import Progress

log = logging.getLogger(__name__)

MIN_VERSION = (2, 40)
#: How many archived segments restore_window() reads back, newest first, looking for a commit.
MAX_SEGMENTS_SCANNED = 4
#: Deadline for one backup or base restore (seconds).
LONG_TIMEOUT = 24 * 3600


class PgBackRestEngine:
    """Back up and restore the source cluster with pgBackRest (posix repository).

    Args:
        source: the protected cluster; ``data_dir`` and ``socket_dir`` are required because
            pgBackRest reads the data directory and connects over the Unix socket.
        stanza: pgBackRest stanza name.
        repo_path: absolute path of the repository (created for the OS user if missing).
        work_dir: absolute path for restorekit's pgbackrest.conf, logs, locks and spool.
        repo_retention_full: full backups pgBackRest keeps (older ones and their WAL expire);
            with ``repo_retention_full_type="time"`` the number of days instead
            (see :func:`retention_options`).
        process_max: parallel processes for backup and restore (``[backups] process_max``).
        compression: ``[backups] compression`` (``lz4``, ``zstd:3``, ``none``...): pgBackRest's
            ``compress-type`` and ``compress-level`` for backups and archived WAL (see
            :func:`compress_options`; a ``server-``/``client-`` side is pg_basebackup's notion
            and ignored here). None: pgBackRest's own default (gz), as before.
        bin: the pgbackrest executable (name on PATH or absolute path).

    Raises:
        ConfigError: an option is invalid; nothing has been written.
    """

    name: ClassVar[str] = ENGINE

    def __init__(
        self,
        source: SourceSpec,
        *,
        stanza: str,
        repo_path: Path,
        work_dir: Path,
        repo_retention_full: int = 4,
        repo_retention_full_type: Literal["count", "time"] = "count",
        process_max: int = 2,
        compression: str | None = None,
        bin: str = "pgbackrest",
    ) -> None:
        validate_options(
            source, stanza, repo_path, work_dir, repo_retention_full, process_max, bin
        )
        self.compress_type: str | None = None  # None: pgBackRest's default
        self.compress_level: int | None = None
        if compression is not None:
            self.compress_type, self.compress_level = compress_options(compression)
        assert source.data_dir is not None and source.socket_dir is not None
        self.source = source
        self.stanza = stanza
        self.repo_path = Path(repo_path)
        self.work_dir = Path(work_dir)
        self.repo_retention_full = repo_retention_full
        self.repo_retention_full_type = repo_retention_full_type
        self.process_max = process_max
        self.bin = bin
        self.os_user = source.os_user or default_os_user()
        params = dsnlib.parse(source.dsn)
        self._pg_user = str(params.get("user") or "postgres")
        self._pg_database = str(params.get("dbname") or "postgres")
        self._pg_env = dsnlib.password_env(source.dsn)[1]  # PGPASSWORD for libpq, never argv
        self.config_file = self.work_dir / "pgbackrest.conf"
        self._write_config()

    # -- configuration -----------------------------------------------------------------------

    @property
    def bin_path(self) -> str:
        """The pgbackrest executable, resolved so archive_command does not depend on PATH."""
        return shutil.which(self.bin) or self.bin

    def _write_config(self) -> None:
        make_dir(self.work_dir, self.os_user, mode=0o750)
        for sub in ("log", "lock", "spool"):
            make_dir(self.work_dir / sub, self.os_user, mode=0o750)
        if not self.repo_path.exists():
            make_dir(self.repo_path, self.os_user, mode=0o750)
        source = self.source
        lines = [
            "[global]",
            f"repo1-path={self.repo_path}",
            f"repo1-retention-full={self.repo_retention_full}",
            f"repo1-retention-full-type={self.repo_retention_full_type}",
            f"process-max={self.process_max}",
            *([f"compress-type={self.compress_type}"] if self.compress_type else []),
            *([f"compress-level={self.compress_level}"] if self.compress_level is not None
              else []),
            f"log-path={self.work_dir / 'log'}",
            f"lock-path={self.work_dir / 'lock'}",
            f"spool-path={self.work_dir / 'spool'}",
            "log-level-console=off",
            "log-level-stderr=warn",
            "log-level-file=info",
            "start-fast=y",
            "",
            f"[{self.stanza}]",
            f"pg1-path={source.data_dir}",
            f"pg1-port={source.port}",
            f"pg1-socket-path={source.socket_dir}",
            f"pg1-user={self._pg_user}",
            f"pg1-database={self._pg_database}",
            "",
        ]
        self.config_file.write_text("\n".join(lines))
        self.config_file.chmod(0o640)
        chown_for(self.config_file, self.os_user)

    def archive_settings(self) -> dict[str, object]:
        command = " ".join(
            [
                shlex.quote(self.bin_path),
                shlex.quote(f"--config={self.config_file}"),
                shlex.quote(f"--stanza={self.stanza}"),
                "archive-push",
                "%p",
            ]
        )
        return {"wal_level": "replica", "archive_mode": "on", "archive_command": command}

    # -- commands ----------------------------------------------------------------------------

    def check(self) -> None:
        """Check the binary's version, create the stanza (idempotent) and run ``pgbackrest check``
        (which switches WAL and waits for it to reach the archive)."""
        version = self.version()
        if version < MIN_VERSION:
            raise ConfigError(
                f"pgBackRest {version[0]}.{version[1]} is too old: restorekit needs "
                f"{MIN_VERSION[0]}.{MIN_VERSION[1]} or newer (apt-get install pgbackrest)"
            )
        self._run("stanza-create", env=self._pg_env, timeout=300)
        self._run("check", env=self._pg_env, timeout=300)

    def version(self) -> tuple[int, int]:
        if shutil.which(self.bin) is None:
            raise ConfigError(
                f"pgbackrest not found ({self.bin!r} is not an executable on PATH): install it "
                "(Debian/Ubuntu: apt-get install pgbackrest) or set the engine's bin option"
            )
        result = run_command([self.bin_path, "version"], timeout=30)
        return parse_version(result.stdout)

    def backup(self, *, label: str, progress: Progress) -> BackupInfo:
        if any(not c.isprintable() for c in label):
            raise ConfigError(f"backup label {label!r} must be printable text")
        before = {b.backup_id for b in self.list_backups(allow_missing=True)}
        options = ["--type=full", "--log-level-stderr=detail"]
        if label:
            options.append(f"--annotation={LABEL_KEY}={label}")
        self._run(
            "backup", *options, env=self._pg_env, timeout=LONG_TIMEOUT,
            on_line=progress_reader("base backup", progress),
        )
        progress("base backup", 10000, 10000)
        new = [b for b in self.list_backups() if b.backup_id not in before]
        if not new:
            raise ProviderError(
                "pgbackrest backup succeeded but info lists no new backup",
                provider=self.name, operation="backup",
            )
        return new[-1]

    def list_backups(self, *, allow_missing: bool = False) -> list[BackupInfo]:
        """Backups in the repository, oldest first."""
        return parse_backups(self._info(allow_missing=allow_missing))

    def restore_window(self) -> RestoreWindow:
        info = self._info()
        backups = parse_backups(info)
        if not backups:
            return RestoreWindow(earliest=None, latest=None)
        oldest, newest = backups[0], backups[-1]
        # info's timestamps are whole seconds, truncated: a backup may become consistent up to a
        # second after its recorded stop, and a time target before that cannot be reached.
        earliest = oldest.stop_time + timedelta(seconds=1)
        # Fallback when no commit after the newest backup can be read back from the archive:
        # that backup's end, which a restore always reaches.
        latest_time, latest_lsn = newest.stop_time + timedelta(seconds=1), newest.stop_lsn
        latest_commit = None
        archive_max = archive_max_segment(info, newest)
        if archive_max is not None:
            found = self._last_commit(archive_max, floor=newest.extra.get("archive_start"))
            if found is not None:
                latest_commit = found[0]
            if found is not None and found[0] >= latest_time:
                latest_time, latest_lsn = found
        return RestoreWindow(
            earliest=earliest,
            latest=latest_time,
            earliest_lsn=oldest.stop_lsn,
            latest_lsn=latest_lsn,
            latest_commit=latest_commit,
        )

    def prepare_restore(
        self, point: RestorePoint, backup: BackupInfo, data_dir: Path, *, progress: Progress
    ) -> dict[str, object]:
        """Restore ``backup`` into the new, empty ``data_dir``.

        pgBackRest writes restore_command, the recovery target, ``archive_mode = 'off'`` and
        recovery.signal itself, so nothing is returned; the caller still appends
        ``restored_cluster_settings(port)``.
        """
        data_dir = Path(data_dir).absolute()
        if data_dir == Path(str(self.source.data_dir)).absolute():
            raise SafetyError(f"refusing to restore over the source data directory {data_dir}")
        if data_dir.exists() and any(data_dir.iterdir()):
            raise ConfigError(f"restore target {data_dir} is not empty; give a new directory")
        options = restore_options(point, backup, data_dir)
        existed = data_dir.exists()
        make_dir(data_dir, self.os_user, mode=0o700)
        try:
            self._run(
                "restore", *options, timeout=LONG_TIMEOUT,
                on_line=progress_reader("base restore", progress),
            )
        except RestoreKitError:
            # The directory was empty or new: leave it so, and a retry can use it again.
            if existed:
                for child in data_dir.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            else:
                shutil.rmtree(data_dir, ignore_errors=True)
            raise
        progress("base restore", 10000, 10000)
        auto_conf = data_dir / "postgresql.auto.conf"
        auto = auto_conf.read_text() if auto_conf.exists() else ""
        if "restore_command" not in auto or "archive_mode = 'off'" not in auto:
            raise ProviderError(
                f"pgbackrest restore did not write restore_command and archive_mode = 'off' "
                f"into {auto_conf}",
                provider=self.name, operation="restore",
            )
        return {}

    # -- internals ---------------------------------------------------------------------------

    def _argv(self, command: str, *args: str) -> list[str]:
        argv = [self.bin_path, f"--config={self.config_file}", f"--stanza={self.stanza}",
                *[a for a in args if a.startswith("--")], command,
                *[a for a in args if not a.startswith("--")]]
        # pgBackRest also reads options from PGBACKREST_* variables; a stray one (say
        # PGBACKREST_REPO1_PATH) must not redirect what restorekit configured.
        stray = sorted(k for k in os.environ if k.startswith("PGBACKREST_"))
        if stray:
            argv = ["env", *[arg for k in stray for arg in ("-u", k)], *argv]
        if self.os_user is not None and self.os_user != pwd.getpwuid(os.geteuid()).pw_name:
            return ["runuser", "-u", self.os_user, "--", *argv]
        return argv

    def _run(
        self,
        command: str,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float | None = 120,
        on_line: Callable[[str], None] | None = None,
    ) -> str:
        if shutil.which(self.bin) is None:
            self.version()  # raises the ConfigError that says how to install it
        try:
            result = run_command(self._argv(command, *args), env=env, timeout=timeout,
                                 on_line=on_line, cwd=self.work_dir)
        except PgToolFailed as exc:
            raise translate_error(command, exc) from exc
        return result.stdout

    def _info(self, *, allow_missing: bool = False) -> dict[str, Any]:
        stanzas = json.loads(self._run("info", "--output=json", timeout=120) or "[]")
        stanza = next((s for s in stanzas if s.get("name") == self.stanza), None)
        code = (stanza or {}).get("status", {}).get("code", 1)
        if stanza is None or code in (1, 3):
            if allow_missing:
                return {"backup": [], "archive": []}
            raise ConfigError(
                f"pgBackRest stanza {self.stanza!r} does not exist in {self.repo_path}: "
                "run the engine's check() (stanza-create) first"
            )
        return dict(stanza)

    def wal_segments(self) -> list[str]:
        """Archived segments, from the repository's file names (``<segment>-<sha1>.<ext>``)."""
        names = {Path(p).name[:24] for p in archive_listing(self.repo_path, self.stanza)}
        return sorted(n for n in names if is_segment(n))

    def archived_wal(self, since: datetime) -> ArchivedWal | None:
        """The segments archived at or after ``since``, for the WAL written per hour: each
        counts as a full one of the source's segment size (its compressed file's size says
        nothing), its time is the file's modification time; None when there are none. A walk
        of the local archive, no bisection needed."""
        seen: dict[str, datetime] = {}
        root = Path(self.repo_path) / "archive" / self.stanza
        for path in _walk(root):
            name = path.name[:24]
            if is_segment(name) and "-" in path.name:
                seen[name] = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        recent = sorted(when for when in seen.values() if when >= since)
        if not recent:
            return None
        return ArchivedWal(segments=len(recent),
                           bytes_after_first=(len(recent) - 1) * self._segment_size(),
                           first=recent[0], last=recent[-1])

    def _segment_size(self) -> int:
        """The source's WAL segment size, from pg_control (it is set at initdb: 16 MB unless
        --wal-segsize said otherwise); PostgreSQL's default when the data directory cannot be
        read, which the warning says."""
        tool = PgTool(self.source.bin_dir, self.os_user)
        try:
            out = tool.run("pg_controldata", "-D", str(self.source.data_dir),
                           env={"LC_ALL": "C"}, timeout=60).stdout
        except PgToolFailed as exc:
            out = str(exc)
        size = segment_bytes(out)
        if size is None:
            log.warning("the WAL segment size of %s is unknown (pg_controldata: %s); counting "
                        "16 MB segments", self.source.data_dir, out.strip()[-200:])
        return size or WAL_SEGMENT_BYTES

    def fetch_wal(self, name: str, dest: Path) -> None:
        """``archive-get``: pgBackRest checks and decompresses the segment."""
        self._run("archive-get", name, str(dest), timeout=300)

    def _last_commit(self, max_segment: str, *, floor: str | None) -> tuple[datetime, str] | None:
        """The time and LSN of the last COMMIT record in the archive, reading back at most
        MAX_SEGMENTS_SCANNED segments (newest first, not below ``floor``)."""
        tool = PgTool(self.source.bin_dir, self.os_user)
        scratch = Path(tempfile.mkdtemp(prefix="waldump-", dir=self.work_dir))
        chown_for(scratch, self.os_user)
        try:
            segment: str | None = max_segment
            for _ in range(MAX_SEGMENTS_SCANNED):
                if segment is None or (floor and segment < floor):
                    break
                target = scratch / segment
                try:
                    self.fetch_wal(segment, target)
                except RestoreKitError as exc:
                    log.warning("cannot read %s back from the archive: %s", segment, exc)
                    break
                # pg_waldump exits non-zero at the end of a segment that is not followed by
                # another one; the records it printed are still valid.
                result = tool.run("pg_waldump", str(target), env={"TZ": "UTC"}, check=False,
                                  timeout=300, cwd=scratch)
                found = last_commit(result.stdout)
                if found is not None:
                    return found
                segment = previous_segment(segment, target.stat().st_size)
                target.unlink()
            return None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


WAL_SEGMENT_BYTES = 16 * 1024 * 1024  # PostgreSQL's default; pgBackRest's files are compressed


def archive_listing(repo_path: Path, stanza: str) -> set[str]:
    """Names of every file in the stanza's WAL archive (for leak checks in drills and tests)."""
    root = Path(repo_path) / "archive" / stanza
    return {str(p.relative_to(root)) for p in _walk(root)}


def _walk(root: Path) -> Iterable[Path]:
    return (p for p in root.rglob("*") if p.is_file()) if root.exists() else iter(())


__all__ = ["LABEL_KEY", "MIN_VERSION", "PgBackRestEngine", "archive_listing", "archive_max_segment",
           "compress_options", "error_lines", "last_commit", "parse_backups", "parse_version",
           "previous_segment", "restore_options", "retention_options", "translate_error"]

"""pgBackRest's command line as text: the options restorekit passes (checked engine options,
compression, retention, restore targets) and what it reads back (the version, ``info
--output=json``, per-file progress, ``ERROR: [code]`` lines and exit codes, pg_waldump's
commits). Pure functions, unit-tested without pgBackRest."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from restorekit.config import BackupPolicy
from restorekit.engines.base import SourceSpec
from restorekit.errors import (
    ConfigError,
    PgToolFailed,
    PostgresUnavailable,
    ProviderError,
    RestorePointError,
)
from restorekit.models import (
    BackupInfo,
    PointKind,
    RestorePoint,
    format_lsn,
    parse_lsn,
)
from restorekit.providers.base import Progress
from restorekit.wal import segment_file, segment_number

#: The engine's name (``PgBackRestEngine.name``), on the errors and backups made here.
ENGINE = "pgbackrest"
LABEL_KEY = "restorekit-label"

_STANZA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VERSION_RE = re.compile(r"pgBackRest (\d+)\.(\d+)")
_SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
# "restore file /data/base/5/1249 (440KB, 42.17%) checksum ..." and "backup file ..." at detail.
_PERCENT_RE = re.compile(r"\b(?:restore|backup) file .*\([^()]*?, (\d+(?:\.\d+)?)%\)")
_ERROR_RE = re.compile(r"ERROR: \[(\d+)\]: (.*)")
# pg_waldump: "... lsn: 0/03000148, prev 0/03000110, desc: COMMIT 2024-05-01 10:00:00.123456 UTC"
_COMMIT_RE = re.compile(
    r"lsn: ([0-9A-F]+/[0-9A-F]+),.*desc: COMMIT(?:_PREPARED)? (?:\d+: )?"
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) ([A-Za-z]+|[+-]\d\d(?::?\d\d)?)"
)

# pgBackRest exits with its error code (src/build/error/error.yaml); these mean "fix the setup".
_CONFIG_CODES = frozenset({27, 30, 31, 32, 37, 40, 46, 48, 55, 58, 68, 72, 73, 75, 87, 88, 89, 103})
_DB_CONNECT_CODES = frozenset({56})
_RETRYABLE_CODES = frozenset({50, 82, 101})  # lock held, archive timeout, remote service

_RESTORE_TYPES = {
    PointKind.LATEST: "default",
    PointKind.TIME: "time",
    PointKind.LSN: "lsn",
    PointKind.XID: "xid",
    PointKind.NAME: "name",
    PointKind.BACKUP: "immediate",
    PointKind.IMMEDIATE: "immediate",
}


def validate_options(
    source: SourceSpec,
    stanza: str,
    repo_path: Path,
    work_dir: Path,
    repo_retention_full: int,
    process_max: int,
    bin: str,
) -> None:
    """Check the engine's options before anything runs.

    Raises:
        ConfigError: listing every problem found.
    """
    problems: list[str] = []
    if not _STANZA_RE.match(stanza or "") or stanza == "global":
        problems.append(
            f"stanza {stanza!r} must be 1-64 characters of letters, digits, '_', '.' or '-' "
            "(not 'global')"
        )
    paths = {
        "repo_path": repo_path,
        "work_dir": work_dir,
        "source.data_dir": source.data_dir,
        "source.socket_dir": source.socket_dir,
    }
    for name, path in paths.items():
        if path is None:
            problems.append(f"{name} is required for the pgbackrest engine")
        elif not Path(path).is_absolute():
            problems.append(f"{name} must be an absolute path, got {str(path)!r}")
        elif any(c in str(path) for c in "\n\r=%"):
            # '=' and newlines would break pgbackrest.conf; '%' would be read as a placeholder
            # in archive_command and restore_command.
            problems.append(f"{name} must not contain newlines, '=' or '%'")
    if source.data_dir is not None and Path(repo_path).is_absolute():
        data, repo = Path(source.data_dir).absolute(), Path(repo_path).absolute()
        if repo == data or data in repo.parents:
            problems.append("repo_path must not be inside the source data directory")
    if not 1 <= repo_retention_full <= 9999999:
        problems.append(f"repo_retention_full must be at least 1, got {repo_retention_full}")
    if not 1 <= process_max <= 999:
        problems.append(f"process_max must be between 1 and 999, got {process_max}")
    if not bin or any(c.isspace() or c == "%" for c in bin):
        problems.append(f"bin must be an executable name or path, got {bin!r}")
    if not 1 <= source.port <= 65535:
        problems.append(f"source.port {source.port} is not a TCP port")
    if problems:
        raise ConfigError("invalid pgbackrest engine options: " + "; ".join(problems))


_COMPRESS_TYPES = {"none": "none", "lz4": "lz4", "zstd": "zst", "gzip": "gz"}
_COMPRESSION_RE = re.compile(r"(?:(?:server|client)-)?(?P<method>none|lz4|zstd|gzip)"
                             r"(?::(?P<level>[0-9]{1,2}))?")


def compress_options(compression: str) -> tuple[str, int | None]:
    """``(compress-type, compress-level)`` for a ``[backups] compression`` value.

    Raises:
        ConfigError: not such a value.
    """
    match = _COMPRESSION_RE.fullmatch(compression or "")
    if match is None:
        raise ConfigError(f"compression {compression!r}: expected none, lz4, zstd or gzip, "
                          "optionally with a level (zstd:3)")
    kind = _COMPRESS_TYPES[match.group("method")]
    level = match.group("level")
    return kind, None if level is None or kind == "none" else int(level)


def retention_options(policy: BackupPolicy) -> tuple[int, Literal["count", "time"]]:
    """``(repo1-retention-full, repo1-retention-full-type)`` for a ``[targets.X.backups]``.

    pgBackRest expires on its own after every backup. Time-based retention keeps every full
    backup of the last ``max(keep_days, pitr_days)`` days plus the newest older one (so the
    whole period stays restorable) and, by default, the WAL of every kept backup; pgBackRest
    has no "at least N" floor beside it, so ``keep_count`` is not mapped (it never expires the
    newest full backup).
    """
    return max(1, math.ceil(max(policy.keep_days, policy.pitr_days))), "time"


def parse_version(text: str) -> tuple[int, int]:
    match = _VERSION_RE.search(text)
    if not match:
        raise ConfigError(f"cannot read the pgBackRest version from {text.strip()!r}")
    return int(match.group(1)), int(match.group(2))


def _lsn(text: str) -> str:
    return format_lsn(parse_lsn(text))


def parse_backups(info: dict[str, Any]) -> list[BackupInfo]:
    """BackupInfo for every backup in one stanza of ``info --output=json``, oldest first."""
    result = []
    for raw in info.get("backup", []):
        lsn = raw.get("lsn") or {}
        archive = raw.get("archive") or {}
        size = raw.get("info") or {}
        result.append(
            BackupInfo(
                backup_id=raw["label"],
                engine=ENGINE,
                start_time=datetime.fromtimestamp(raw["timestamp"]["start"], UTC),
                stop_time=datetime.fromtimestamp(raw["timestamp"]["stop"], UTC),
                start_lsn=_lsn(lsn["start"]),
                stop_lsn=_lsn(lsn["stop"]),
                timeline=int(archive["start"][:8], 16) if archive.get("start") else 1,
                size_bytes=int(size.get("size", 0)),
                label=str((raw.get("annotation") or {}).get(LABEL_KEY, "")),
                extra={
                    "type": raw.get("type"),
                    "repo_size_bytes": (size.get("repository") or {}).get("size"),
                    "archive_start": archive.get("start"),
                    "archive_stop": archive.get("stop"),
                    "database_id": (raw.get("database") or {}).get("id"),
                    "page_errors": bool(raw.get("error", False)),
                },
            )
        )
    return sorted(result, key=lambda b: (b.start_time, b.backup_id))


def archive_max_segment(info: dict[str, Any], newest: BackupInfo) -> str | None:
    """The newest archived segment of the database the newest backup belongs to."""
    db_id = newest.extra.get("database_id")
    candidates = [
        a["max"] for a in info.get("archive", [])
        if a.get("max") and (db_id is None or (a.get("database") or {}).get("id") == db_id)
    ]
    return max(candidates, default=None)


def previous_segment(segment: str, segment_size: int) -> str | None:
    """The segment before ``segment`` on the same timeline (None before the first)."""
    if not _SEGMENT_RE.match(segment) or segment_size <= 0:
        return None
    number = segment_number(segment, segment_size) - 1
    if number < 0:
        return None
    return segment_file(int(segment[:8], 16), number, segment_size)


_SEGMENT_BYTES_RE = re.compile(r"^Bytes per WAL segment:\s+(\d+)\s*$", re.MULTILINE)


def segment_bytes(controldata_output: str) -> int | None:
    """The WAL segment size pg_controldata prints ("Bytes per WAL segment"); None without it."""
    match = _SEGMENT_BYTES_RE.search(controldata_output)
    return int(match.group(1)) if match else None


def last_commit(waldump_output: str) -> tuple[datetime, str] | None:
    """The (time, LSN) of the last COMMIT record in pg_waldump's output (run with TZ=UTC)."""
    found = None
    for match in _COMMIT_RE.finditer(waldump_output):
        found = match
    if found is None:
        return None
    lsn, stamp, zone = found.groups()
    when = datetime.fromisoformat(stamp)
    if zone not in ("UTC", "GMT", "+00", "Z"):
        raise ProviderError(f"pg_waldump printed a non-UTC commit time {stamp} {zone}",
                            provider=ENGINE, operation="restore_window")
    return when.replace(tzinfo=UTC), _lsn(lsn)


def restore_options(point: RestorePoint, backup: BackupInfo, data_dir: Path) -> list[str]:
    """The ``pgbackrest restore`` options for ``point`` from ``backup`` into ``data_dir``."""
    kind = point.kind
    if kind is PointKind.BACKUP and point.value != backup.backup_id:
        raise RestorePointError(
            f"restore point {point} names another backup than the one chosen ({backup.backup_id})"
        )
    options = [
        f"--pg1-path={data_dir}",
        f"--set={backup.backup_id}",
        f"--type={_RESTORE_TYPES[kind]}",
        "--archive-mode=off",
        "--log-level-stderr=detail",
    ]
    if kind is PointKind.TIME:
        assert point.time is not None
        options.append(f"--target={point.time.astimezone(UTC).isoformat(sep=' ')}")
    elif kind in (PointKind.LSN, PointKind.XID, PointKind.NAME):
        assert point.value is not None
        # pgBackRest writes the target into postgresql.auto.conf between single quotes.
        if any(c in point.value for c in "'\\\n\r"):
            raise RestorePointError(f"restore point {point} contains quotes or newlines")
        options.append(f"--target={point.value}")
        if not point.inclusive:
            options.append("--target-exclusive")
    if kind is not PointKind.LATEST:
        options.append("--target-action=promote")
    return options


def progress_reader(phase: str, progress: Progress) -> Callable[[str], None]:
    """Turn pgBackRest's per-file detail lines into progress(phase, percent x 100, 10000),
    reporting at most once per whole percent (a cluster has thousands of files)."""
    last = -100

    def on_line(line: str) -> None:
        nonlocal last
        match = _PERCENT_RE.search(line)
        if match:
            done = min(10000, round(float(match.group(1)) * 100))
            if done // 100 != last // 100:
                last = done
                progress(phase, done, 10000)

    return on_line


def error_lines(stderr_tail: str) -> list[str]:
    return [m.group(0) for m in map(_ERROR_RE.search, stderr_tail.splitlines()) if m]


def translate_error(command: str, exc: PgToolFailed) -> Exception:
    """Map a failed pgbackrest command to the restorekit error a caller can act on."""
    errors = error_lines(exc.stderr_tail)
    detail = "; ".join(errors) or exc.stderr_tail.strip() or "(no output)"
    message = f"pgbackrest {command} failed (exit {exc.returncode}): {detail}"
    code = exc.returncode
    if code in _CONFIG_CODES:
        return ConfigError(message)
    if code in _DB_CONNECT_CODES:
        return PostgresUnavailable(message)
    if code in _RETRYABLE_CODES:
        return ProviderError(message, provider=ENGINE, operation=command,
                             retryable=True)
    return PgToolFailed(exc.argv, code, "\n".join(errors) or exc.stderr_tail)

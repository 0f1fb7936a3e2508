"""Taking a snapshot: ``pg_dump --format=directory --jobs=N`` into a private temporary directory,
every file uploaded to ``snapshots/<snapshot_id>/`` and read back (``repo.verify``: size and
SHA-256, compared with our own hash of the local file), and only then the manifest.

A snapshot that cannot be read back raises :class:`~restorekit.errors.SafetyError`: callers treat
"no verified snapshot" as "nothing destructive may run".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from restorekit.errors import (
    ConfigError,
    RepositoryError,
    SafetyError,
)
from restorekit.pg.dsn import display, password_env, redact
from restorekit.pg.tools import PgTool
from restorekit.repository import discard_unfinished, hash_file
from restorekit.snapshot.files import Progress, _file_progress, _no_progress, _temp_dir
from restorekit.snapshot.manifest import (
    APPLICATION_NAME,
    MANIFEST_NAME,
    SNAPSHOT_ROOT,
    SnapshotInfo,
    new_snapshot_id,
    snapshot_prefix,
)
from restorekit.snapshot.names import dump_pattern, format_table_name, resolve_tables

if TYPE_CHECKING:
    from restorekit.repository import Repository

log = logging.getLogger(__name__)


def take_snapshot(
    dsn: str,
    repo: Repository,
    *,
    label: str = "",
    tables: Sequence[str] | None = None,
    jobs: int = 2,
    progress: Progress | None = None,
    work_dir: Path | None = None,
    tool: PgTool | None = None,
) -> SnapshotInfo:
    """Dump ``dsn`` (or only ``tables``), store it in ``repo`` and read it back.

    Args:
        dsn: the database to snapshot (URL or key=value; a password goes to PGPASSWORD).
        repo: where the snapshot goes, under ``snapshots/<snapshot_id>/``.
        label: a human label; its slug becomes part of the id.
        tables: ``schema.table`` names (SQL quoting rules); None or empty = the whole database.
            With tables, pg_dump dumps just those tables with their indexes, constraints,
            triggers and owned sequences, but not the schemas or other objects they depend on.
        jobs: parallel pg_dump workers.
        progress: called as ``progress(phase, done, total)``; phases are "snapshot dump" and
            "snapshot upload" (bytes over all files).
        work_dir: where the temporary dump directory goes (default: the system temp dir).
        tool: the PgTool to run pg_dump with (default: current OS user).

    Returns:
        the snapshot, ``verified=True``.

    Raises:
        ConfigError: bad parameters or unknown tables, before anything is dumped or written.
        PostgresUnavailable / PgToolFailed: the database or pg_dump failed (messages redacted).
        RepositoryError: an upload failed (``retryable`` per case).
        SafetyError: an uploaded object could not be read back intact.
    """
    if jobs < 1:
        raise ConfigError(f"jobs must be at least 1, got {jobs}")
    base_dsn, env = password_env(dsn)  # raises ConfigError on a malformed DSN
    wanted = list(tables or ())
    chosen = resolve_tables(dsn, wanted) if wanted else []
    tool = tool or PgTool(os_user=None)
    report = progress or _no_progress

    try:
        snapshot_id, created_at = _unused_snapshot_id(repo, label)
    except RepositoryError as exc:
        raise _not_taken(exc, label or "(no label)", repo,
                         "nothing was dumped or uploaded") from exc
    args = _dump_args(base_dsn, jobs, chosen)

    with _temp_dir(work_dir, "restorekit-snapshot-", tool.os_user) as tmp:
        dump_dir = tmp / "dump"
        files, total = _dump(tool, args, dump_dir, env, report)
        info = _store(repo, snapshot_id, created_at, label, dsn, chosen, dump_dir, files, total,
                      report)
    log.info("snapshot %s: %d objects, %d bytes at %s", snapshot_id, len(info.objects),
             info.size_bytes, info.location)
    return info


def _dump_args(base_dsn: str, jobs: int, chosen: Sequence[tuple[str, str]]) -> list[str]:
    """pg_dump's arguments (no file yet): directory format, ``jobs`` workers, only ``chosen``
    tables when given."""
    args = [
        "--format=directory",
        f"--jobs={jobs}",
        "--no-password",
        f"--dbname={base_dsn}",
    ]
    if chosen:
        args.append("--strict-names")
        args.extend(f"--table={dump_pattern(s, t)}" for s, t in chosen)
    return args


def _dump(tool: PgTool, args: Sequence[str], dump_dir: Path, env: dict[str, str],
          report: Progress) -> tuple[list[Path], int]:
    """Run pg_dump into ``dump_dir``; its files, sorted, and their total size."""
    report("snapshot dump", 0, None)
    tool.run("pg_dump", *args, f"--file={dump_dir}",
             env={**env, "PGAPPNAME": APPLICATION_NAME})
    files = sorted(p for p in dump_dir.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    report("snapshot dump", total, total)
    return files, total


def _store(
    repo: Repository, snapshot_id: str, created_at: datetime, label: str, dsn: str,
    chosen: Sequence[tuple[str, str]], dump_dir: Path, files: Sequence[Path], total: int,
    report: Progress,
) -> SnapshotInfo:
    """Upload the dump, read every object back, then write the manifest. On any failure what
    was uploaded is removed again (the manifest, if any, first)."""
    prefix = snapshot_prefix(snapshot_id)
    uploaded: list[str] = []
    try:
        objects = _upload(repo, prefix, dump_dir, files, total, report, uploaded)
        _read_back(repo, objects)
        info = SnapshotInfo(
            snapshot_id=snapshot_id,
            label=label,
            database=display(dsn),
            tables=tuple(format_table_name(s, t) for s, t in chosen),
            created_at=created_at,
            size_bytes=sum(size for _, size, _ in objects),
            objects=tuple(objects),
            location=_location(repo, prefix),
            verified=True,
        )
        # The manifest goes last: its presence is what makes the snapshot complete.
        uploaded.append(info.manifest_key)
        repo.put_bytes(info.manifest_key, info.to_json().encode())
    except SafetyError:
        discard_unfinished(repo, reversed(uploaded), "snapshot")  # the manifest (if any) first
        raise
    except RepositoryError as exc:
        removed = discard_unfinished(repo, reversed(uploaded), "snapshot")
        raise _not_taken(exc, snapshot_id, repo,
                         "the partial upload was removed" if removed else
                         "some partial objects could not be removed (without a manifest "
                         "they are never used)") from exc
    except BaseException:
        discard_unfinished(repo, reversed(uploaded), "snapshot")
        raise
    return info


def _unused_snapshot_id(repo: Repository, label: str) -> tuple[str, datetime]:
    for _ in range(50):
        now = datetime.now(UTC)
        snapshot_id = new_snapshot_id(label, now=now)
        if not repo.list(snapshot_prefix(snapshot_id)):
            return snapshot_id, now
        time.sleep(0.002)
    raise RepositoryError(f"could not find an unused snapshot id under {SNAPSHOT_ROOT}")


def _upload(
    repo: Repository,
    prefix: str,
    root: Path,
    files: Sequence[Path],
    total: int,
    report: Progress,
    uploaded: list[str],
) -> list[tuple[str, int, str]]:
    objects: list[tuple[str, int, str]] = []
    done = 0
    report("snapshot upload", 0, total)
    for path in files:
        key = prefix + path.relative_to(root).as_posix()
        digest, size = hash_file(path)
        uploaded.append(key)
        stored = repo.put_file(key, path, progress=_file_progress("snapshot upload", done, total,
                                                                   report))
        if stored.size != size or stored.sha256 != digest:
            raise SafetyError(
                f"snapshot could not be verified; nothing destructive may run: {key} was stored "
                f"as {stored.size} bytes sha256={stored.sha256}, the dump file has {size} bytes "
                f"sha256={digest}"
            )
        done += size
        report("snapshot upload", done, total)
        objects.append((key, size, digest))
    return objects


def _read_back(repo: Repository, objects: Iterable[tuple[str, int, str]]) -> None:
    for key, size, digest in objects:
        try:
            info = repo.verify(key)
        except RepositoryError as exc:
            raise SafetyError(
                f"snapshot could not be verified; nothing destructive may run: reading back "
                f"{key} failed: {exc}"
            ) from exc
        if info.size != size or info.sha256 != digest:
            raise SafetyError(
                f"snapshot could not be verified; nothing destructive may run: {key} read back "
                f"as {info.size} bytes sha256={info.sha256}, expected {size} bytes sha256={digest}"
            )


def _not_taken(exc: RepositoryError, what: str, repo: Repository, state: str) -> RepositoryError:
    """The error for a snapshot the repository could not take: what, state, next step."""
    return type(exc)(
        f"snapshot {what} was NOT taken: {exc}. State: no snapshot was recorded (no "
        f"{MANIFEST_NAME}) and {state}; the database was not changed, and nothing destructive "
        f"may run without a verified snapshot. Next: fix the repository {redact(repo.url)} "
        "(reachable, writable, enough free space) and run again.",
        retryable=exc.is_retryable,
    )


def _location(repo: Repository, prefix: str) -> str:
    return f"{redact(repo.url).rstrip('/')}/{prefix}"

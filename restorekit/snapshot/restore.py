"""Restoring a snapshot: every object is downloaded first, checked against the repository's
checksum and the manifest, and only then ``pg_restore`` runs; a corrupt snapshot therefore never
touches the target.

Ownership: the dump keeps owners and privileges (no ``--no-owner``), so restoring as a superuser
gives back exactly what was there. Restoring into a cluster without those roles, or as a role
that cannot ``SET ROLE`` to them, needs ``restore_snapshot(..., no_owner=True)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from restorekit.errors import (
    ChecksumMismatch,
    ConfigError,
    ObjectNotFound,
    PostgresError,
    RestoreKitError,
    SafetyError,
)
from restorekit.pg.cluster import connect
from restorekit.pg.dsn import merge, parse, password_env, redact
from restorekit.pg.tools import PgTool
from restorekit.snapshot.files import Progress, _file_progress, _give_tree, _no_progress, _temp_dir
from restorekit.snapshot.manifest import APPLICATION_NAME, SnapshotInfo
from restorekit.snapshot.names import parse_table_name
from restorekit.snapshot.toc import _drop_dangling_foreign_keys, read_toc, select_tables

if TYPE_CHECKING:
    from restorekit.repository import Repository

log = logging.getLogger(__name__)


def restore_snapshot(
    info: SnapshotInfo,
    repo: Repository,
    dsn: str,
    *,
    jobs: int = 2,
    tables: Sequence[str] | None = None,
    clean: bool = False,
    schema_only: bool = False,
    data_only: bool = False,
    no_owner: bool = False,
    progress: Progress | None = None,
    work_dir: Path | None = None,
    tool: PgTool | None = None,
) -> None:
    """Restore ``info`` into the existing database ``dsn``.

    Every object is downloaded and checked (repository checksum and the manifest's size and
    SHA-256) before pg_restore starts, so a corrupt snapshot leaves the target untouched.

    ``clean`` drops the snapshot's objects in the target first (``--clean --if-exists``): that is
    destructive, and the caller must hold a verified snapshot of the target before asking for it.
    ``tables`` restores only those tables (SQL name rules, as in :func:`take_snapshot`; an
    unqualified name means the snapshot's one table of that name, else ``public``), with their
    data, indexes, constraints, triggers, owned sequences, comments and grants; foreign keys to
    tables that the target will not have are skipped (logged). Schemas of restored tables are
    created when missing (owned by the connecting role). A table-level snapshot is always
    restored this way.

    Raises:
        ConfigError: bad options, or tables the snapshot does not hold (before any download).
        ChecksumMismatch / ObjectNotFound: the snapshot is damaged; nothing was restored.
        PgToolFailed: pg_restore failed (argv and output redacted).
    """
    wanted = _check_restore_options(info, jobs, tables, clean, schema_only, data_only)
    base_dsn, env = password_env(dsn)
    tool = tool or PgTool(os_user=None)
    with _downloaded(info, repo, work_dir, tool, progress) as dump_dir:
        _run_restore(info, dump_dir, dsn, base_dsn, env, tool, wanted, jobs=jobs, clean=clean,
                     schema_only=schema_only, data_only=data_only, no_owner=no_owner)


def restore_snapshot_to_new_database(
    info: SnapshotInfo,
    repo: Repository,
    server_dsn: str,
    dbname: str,
    *,
    jobs: int = 2,
    tables: Sequence[str] | None = None,
    no_owner: bool = False,
    progress: Progress | None = None,
    work_dir: Path | None = None,
    tool: PgTool | None = None,
) -> str:
    """Create the empty database ``dbname`` (from template0) on ``server_dsn``'s server and
    restore ``info`` into it. Returns the new database's DSN (``server_dsn`` with ``dbname``).

    The snapshot is downloaded and checked before the database is created; if the restore fails
    the new database is dropped again.

    Raises:
        ConfigError: bad name, or the database already exists (it is never overwritten).
        ChecksumMismatch / ObjectNotFound / PgToolFailed: as :func:`restore_snapshot`.
    """
    if not dbname or len(dbname.encode()) > 63 or "\x00" in dbname:
        raise ConfigError(f"database name {dbname!r} must be 1 to 63 bytes")
    wanted = _check_restore_options(info, jobs, tables, False, False, False)
    parse(server_dsn)
    target_dsn = merge(server_dsn, dbname=dbname)
    base_dsn, env = password_env(target_dsn)
    tool = tool or PgTool(os_user=None)
    with _downloaded(info, repo, work_dir, tool, progress) as dump_dir:
        create_database(server_dsn, dbname)
        try:
            _run_restore(info, dump_dir, target_dsn, base_dsn, env, tool, wanted, jobs=jobs,
                         clean=False, schema_only=False, data_only=False, no_owner=no_owner)
        except BaseException:
            _drop_database_quietly(server_dsn, dbname)
            raise
    return target_dsn


@contextmanager
def _downloaded(info: SnapshotInfo, repo: Repository, work_dir: Path | None, tool: PgTool,
                progress: Progress | None) -> Iterator[Path]:
    """``info`` downloaded and checked (:func:`download_snapshot`) into a private temporary
    directory that ``tool``'s OS user may read, removed on the way out."""
    with _temp_dir(work_dir, "restorekit-restore-", tool.os_user) as tmp:
        dump_dir = download_snapshot(info, repo, tmp / "dump", progress=progress)
        _give_tree(tmp, tool.os_user)
        yield dump_dir


def download_snapshot(
    info: SnapshotInfo, repo: Repository, dest: Path, *, progress: Progress | None = None
) -> Path:
    """Download every object of ``info`` into ``dest`` (created), checked against the
    repository's checksum and the manifest. Returns ``dest``."""
    report = progress or _no_progress
    if not info.objects:
        raise ConfigError(f"snapshot {info.snapshot_id} has no objects")
    dest.mkdir(parents=True, exist_ok=True)
    total = sum(size for _, size, _ in info.objects)
    done = 0
    report("snapshot download", 0, total)
    for key, size, digest in info.objects:
        target = dest / _relative_path(info, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            got = repo.get_file(key, target, progress=_file_progress("snapshot download", done,
                                                                      total, report))
        except ChecksumMismatch as exc:
            raise ChecksumMismatch(
                f"snapshot {info.snapshot_id} is damaged: {key} failed its checksum ({exc}); "
                "nothing was restored"
            ) from exc
        except ObjectNotFound as exc:
            raise ObjectNotFound(
                f"snapshot {info.snapshot_id} is incomplete: {key} is missing; nothing was restored"
            ) from exc
        if got.size != size or got.sha256 != digest:
            raise ChecksumMismatch(
                f"snapshot {info.snapshot_id} is damaged: {key} is {got.size} bytes "
                f"sha256={got.sha256} but the manifest recorded {size} bytes sha256={digest}; "
                "nothing was restored"
            )
        done += size
        report("snapshot download", done, total)
    if not (dest / "toc.dat").is_file():
        raise ChecksumMismatch(
            f"snapshot {info.snapshot_id} has no toc.dat: not a pg_dump directory; nothing was "
            "restored"
        )
    return dest


def create_database(server_dsn: str, dbname: str) -> None:
    """CREATE DATABASE ``dbname`` TEMPLATE template0. ConfigError when it already exists."""
    with connect(server_dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(
                sql.Identifier(dbname)))
        except psycopg.errors.DuplicateDatabase:
            raise ConfigError(
                f"database {dbname!r} already exists; pick another name (it is never overwritten)"
            ) from None
        except psycopg.Error as exc:
            raise PostgresError(
                f"could not create database {dbname!r}: {redact(str(exc)).strip()}"
            ) from None


def _drop_database_quietly(server_dsn: str, dbname: str) -> None:
    try:
        with connect(server_dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(dbname)))
    except (psycopg.Error, RestoreKitError) as exc:
        log.warning("could not drop the half-restored database %s: %s", dbname,
                    redact(str(exc)).strip())


def _check_restore_options(
    info: SnapshotInfo,
    jobs: int,
    tables: Sequence[str] | None,
    clean: bool,
    schema_only: bool,
    data_only: bool,
) -> list[tuple[str, str]]:
    """Check options before anything is downloaded; return the (schema, table)s to restore
    (empty = everything in the snapshot)."""
    if jobs < 1:
        raise ConfigError(f"jobs must be at least 1, got {jobs}")
    if schema_only and data_only:
        raise ConfigError("schema_only and data_only exclude each other")
    if clean and data_only:
        raise ConfigError("clean cannot be combined with data_only (it would drop the tables)")
    if not info.verified:
        raise SafetyError(f"snapshot {info.snapshot_id} was never verified; refusing to restore it")
    held: list[tuple[str, str]] = []
    for text in info.tables:
        schema, name = parse_table_name(text)
        held.append((schema or "public", name))
    if not tables:
        # A table-level snapshot is restored through the same selection, so that foreign keys
        # to tables it does not hold can be left out.
        return held
    wanted: list[tuple[str, str]] = []
    missing: list[str] = []
    for text in tables:
        schema, name = parse_table_name(text)
        if schema is None:
            # Unqualified: the one table of that name the snapshot holds, else public.
            matches = [s for s, n in held if n == name]
            if len(matches) > 1:
                raise ConfigError(f"table {text!r} is ambiguous in snapshot {info.snapshot_id}: "
                                  "name it with its schema")
            schema = matches[0] if matches else "public"
        if held and (schema, name) not in held:
            missing.append(repr(text))
        wanted.append((schema, name))
    if missing:
        raise ConfigError(
            f"snapshot {info.snapshot_id} does not hold " + ", ".join(missing)
            + "; it holds " + ", ".join(info.tables) + "; nothing was restored"
        )
    return list(dict.fromkeys(wanted))


def _relative_path(info: SnapshotInfo, key: str) -> PurePosixPath:
    if not key.startswith(info.prefix):
        raise ConfigError(f"snapshot {info.snapshot_id}: object {key!r} is outside its prefix")
    rel = PurePosixPath(key[len(info.prefix):])
    if rel.is_absolute() or not rel.parts or any(p in ("", ".", "..") for p in rel.parts):
        raise ConfigError(f"snapshot {info.snapshot_id}: unsafe object name {key!r}")
    return rel


def _run_restore(
    info: SnapshotInfo,
    dump_dir: Path,
    dsn: str,
    base_dsn: str,
    env: dict[str, str],
    tool: PgTool,
    wanted: Sequence[tuple[str, str]],
    *,
    jobs: int,
    clean: bool,
    schema_only: bool,
    data_only: bool,
    no_owner: bool,
) -> None:
    args = [f"--jobs={jobs}", "--exit-on-error", "--no-password", f"--dbname={base_dsn}"]
    if clean:
        args += ["--clean", "--if-exists"]
    if schema_only:
        args.append("--schema-only")
    if data_only:
        args.append("--data-only")
    if no_owner:
        args += ["--no-owner", "--no-privileges"]
    tool_env = {**env, "PGAPPNAME": APPLICATION_NAME}
    if wanted:
        toc = read_toc(tool, dump_dir)
        selected = select_tables(toc, wanted, info.snapshot_id)
        selected = _drop_dangling_foreign_keys(tool, dump_dir, dsn, selected, wanted)
        list_file = dump_dir.parent / "restore.list"
        list_file.write_text("".join(entry.line + "\n" for entry in selected))
        args.append(f"--use-list={list_file}")
        if not data_only:
            _ensure_schemas(dsn, sorted({schema for schema, _ in wanted}))
    tool.run("pg_restore", *args, str(dump_dir), env=tool_env)


def _ensure_schemas(dsn: str, schemas: Sequence[str]) -> None:
    """A table-level dump does not carry its schema; create the missing ones."""
    with connect(dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
        try:
            for schema in schemas:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(schema)))
        except psycopg.Error as exc:
            raise PostgresError(f"could not create schemas: {redact(str(exc)).strip()}") from None

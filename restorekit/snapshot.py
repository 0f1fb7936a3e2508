"""Logical snapshots: the runbook's "Create Backup of Current State", done properly.

The runbook says ``pg_dump $DATABASE_URL > backup_before_restore.sql``. Here that becomes:

1. check the parameters and the chosen tables against the catalog (nothing is written yet);
2. ``pg_dump --format=directory --jobs=N`` into a private temporary directory;
3. upload every file to ``snapshots/<snapshot_id>/`` in a repository (:mod:`restorekit.repository`);
4. read every object back (``repo.verify``: size and SHA-256, compared with our own hash of the
   local file);
5. only then write ``snapshots/<snapshot_id>/snapshot.json``, the manifest. The manifest is the
   marker of a complete snapshot: a snapshot interrupted before it is never listed or loaded.

A snapshot that cannot be read back raises :class:`~restorekit.errors.SafetyError`: callers treat
"no verified snapshot" as "nothing destructive may run".

Restores download every object first, checking each against the repository's checksum and the
manifest, and only then run ``pg_restore``; a corrupt snapshot therefore never touches the target.

Table names follow SQL rules, the same as ``psql``/``pg_dump``: ``schema.table`` or ``table``
(resolved through the server's ``search_path``); unquoted names are folded to lower case; a
double-quoted name is taken verbatim (``""`` for a quote inside it), e.g. ``public."Weird; Name"``.
A snapshot records its tables in that canonical, quoted-where-needed form.

Ownership: the dump keeps owners and privileges (no ``--no-owner``), so restoring as a superuser
gives back exactly what was there. Restoring into a cluster without those roles, or as a role
that cannot ``SET ROLE`` to them, needs ``restore_snapshot(..., no_owner=True)``.

Passwords never reach a command line: pg_dump/pg_restore get the DSN without its password and the
password in ``PGPASSWORD`` (:func:`restorekit.pg.dsn.password_env`); ``SnapshotInfo.database`` is
a redacted display form.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from restorekit.errors import (
    ChecksumMismatch,
    ConfigError,
    ObjectNotFound,
    PostgresError,
    RepositoryError,
    RestoreKitError,
    SafetyError,
)
from restorekit.pg.catalog import split_qualified
from restorekit.pg.cluster import connect
from restorekit.pg.dsn import display, merge, parse, password_env, redact
from restorekit.pg.tools import PgTool, chown_for

if TYPE_CHECKING:
    from restorekit.repository import Repository

log = logging.getLogger(__name__)

Progress = Callable[[str, int, "int | None"], None]

SNAPSHOT_ROOT = "snapshots/"
MANIFEST_NAME = "snapshot.json"
MANIFEST_VERSION = 1
APPLICATION_NAME = "restorekit-snapshot"

_ID_RE = re.compile(r"^\d{8}T\d{6}\.\d{3}Z(?:-[a-z0-9]+(?:-[a-z0-9]+)*)?$")
_PLAIN_IDENT = re.compile(r"[a-z_][a-z0-9_$]*")  # used with fullmatch: `$` would allow a trailing newline
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_HASH_CHUNK = 1024 * 1024
# Relation kinds pg_dump --table selects: table, partitioned table, view, materialized view,
# foreign table, sequence.
_DUMPABLE_RELKINDS = {"r": "table", "p": "table", "v": "view", "m": "materialized view",
                      "f": "foreign table", "S": "sequence"}
_RELKIND_NAMES = {**_DUMPABLE_RELKINDS, "i": "index", "I": "index", "c": "composite type",
                  "t": "TOAST table"}


# -- the snapshot record ---------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotInfo:
    """A complete logical snapshot in a repository. Holds no secret.

    ``objects`` are ``(key, size, sha256)`` of every dump file (the manifest itself excluded);
    ``verified`` is True when every object was read back after upload (always True for a
    snapshot loaded from its manifest, because the manifest is written only after that).
    """

    snapshot_id: str
    label: str
    database: str
    tables: tuple[str, ...]
    created_at: datetime
    size_bytes: int
    objects: tuple[tuple[str, int, str], ...]
    location: str
    verified: bool = False

    @property
    def prefix(self) -> str:
        return snapshot_prefix(self.snapshot_id)

    @property
    def manifest_key(self) -> str:
        return self.prefix + MANIFEST_NAME

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest_version": MANIFEST_VERSION,
            "snapshot_id": self.snapshot_id,
            "label": self.label,
            "database": self.database,
            "tables": list(self.tables),
            "created_at": self.created_at.isoformat(),
            "size_bytes": self.size_bytes,
            "objects": [{"key": k, "size": s, "sha256": h} for k, s, h in self.objects],
            "location": self.location,
            "verified": self.verified,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SnapshotInfo:
        try:
            version = int(data.get("manifest_version", MANIFEST_VERSION))
            if version > MANIFEST_VERSION:
                raise ConfigError(
                    f"snapshot manifest version {version} is newer than this restorekit "
                    f"understands ({MANIFEST_VERSION}); upgrade restorekit"
                )
            created_at = datetime.fromisoformat(data["created_at"])
            if created_at.tzinfo is None:
                created_at = created_at.replace(tzinfo=UTC)
            objects = tuple(
                (str(o["key"]), int(o["size"]), str(o["sha256"])) if isinstance(o, dict)
                else (str(o[0]), int(o[1]), str(o[2]))
                for o in data["objects"]
            )
            return cls(
                snapshot_id=str(data["snapshot_id"]),
                label=str(data.get("label", "")),
                database=str(data.get("database", "")),
                tables=tuple(str(t) for t in data.get("tables", ())),
                created_at=created_at,
                size_bytes=int(data["size_bytes"]),
                objects=objects,
                location=str(data.get("location", "")),
                verified=bool(data.get("verified", False)),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigError(f"not a valid snapshot manifest: {exc!r}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def snapshot_prefix(snapshot_id: str) -> str:
    return f"{SNAPSHOT_ROOT}{snapshot_id}/"


def new_snapshot_id(label: str = "", *, now: datetime | None = None) -> str:
    """A sortable id: UTC time to the millisecond, then a slug of the label."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    stamp = f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z"
    slug = slugify(label)
    return f"{stamp}-{slug}" if slug else stamp


def slugify(label: str, max_length: int = 40) -> str:
    ascii_text = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_length].rstrip("-")


def _check_snapshot_id(snapshot_id: str) -> None:
    if not _ID_RE.match(snapshot_id):
        raise ConfigError(
            f"not a snapshot id: {snapshot_id!r} (expected e.g. "
            "20261125T131019.482Z-before-restore; see `list_snapshots`)"
        )


# -- table names -------------------------------------------------------------------------------


def parse_table_name(text: str) -> tuple[str | None, str]:
    """Split ``schema.table`` / ``table`` with SQL identifier rules into (schema or None, table).

    Unquoted parts are folded to lower case (ASCII only, as PostgreSQL does for UTF-8);
    double-quoted parts are verbatim, with ``""`` standing for one quote.
    """
    # One identifier grammar for the whole project: the catalog's.
    parts = split_qualified(text)
    if len(parts) > 2:
        raise ConfigError(f"table name {text!r} has too many dotted parts (expected schema.table)")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def quote_ident(name: str, *, always: bool = False) -> str:
    if not always and _PLAIN_IDENT.fullmatch(name):
        return name
    return '"' + name.replace('"', '""') + '"'


def format_table_name(schema: str, table: str) -> str:
    """The canonical ``schema.table`` form stored in snapshots (quoted where needed)."""
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def dump_pattern(schema: str, table: str) -> str:
    """An exact pg_dump ``--table`` pattern: inside double quotes ``* ? .`` and regex characters
    are literal, so any name matches only itself."""
    return f"{quote_ident(schema, always=True)}.{quote_ident(table, always=True)}"


def resolve_tables(dsn: str, names: Sequence[str]) -> list[tuple[str, str]]:
    """Resolve ``names`` to (schema, table) with one catalog query.

    Raises:
        ConfigError: a name is malformed, unknown (all unknown ones are named, with a hint when
            only the case differs), or is not something pg_dump --table can dump.
    """
    parsed = [parse_table_name(name) for name in names]
    # to_regclass parses the same SQL syntax and applies search_path to unqualified names; we
    # hand it fully quoted text so nothing in the name can change how it is read.
    qualified = [
        (quote_ident(s, always=True) + "." if s is not None else "") + quote_ident(t, always=True)
        for s, t in parsed
    ]
    query = """
        SELECT u.ord, n.nspname, c.relname, c.relkind
        FROM unnest(%(names)s::text[]) WITH ORDINALITY AS u(name, ord)
        LEFT JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(u.name)
        LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        ORDER BY u.ord
    """
    hints_query = """
        SELECT n.nspname, c.relname
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE lower(c.relname) = ANY(%(names)s::text[]) AND c.relkind = ANY(%(kinds)s::"char"[])
        ORDER BY 1, 2
    """
    with connect(dsn, application_name=APPLICATION_NAME) as conn:
        try:
            rows = conn.execute(query, {"names": qualified}).fetchall()
            unknown = [i for i, row in enumerate(rows) if row[1] is None]
            hints: list[tuple[str, str]] = []
            if unknown:
                hints = conn.execute(hints_query, {
                    "names": [parsed[i][1].lower() for i in unknown],
                    "kinds": list(_DUMPABLE_RELKINDS),
                }).fetchall()
        except psycopg.Error as exc:
            raise PostgresError(f"could not look up tables: {redact(str(exc)).strip()}") from None
    resolved: list[tuple[str, str]] = []
    problems: list[str] = []
    for (_, nspname, relname, relkind), name in zip(rows, names, strict=True):
        if nspname is None:
            continue
        if relkind not in _DUMPABLE_RELKINDS:
            kind = _RELKIND_NAMES.get(relkind, f"relkind {relkind!r}")
            problems.append(f"{name!r} is a {kind}, not a table")
            continue
        resolved.append((nspname, relname))
    if unknown or problems:
        parts = []
        if unknown:
            parts.append("unknown table(s): " + ", ".join(repr(names[i]) for i in unknown))
        parts.extend(problems)
        message = "; ".join(parts)
        if hints:
            message += "; did you mean " + ", ".join(format_table_name(s, t) for s, t in hints)
            message += " (quote mixed-case names)"
        raise ConfigError(message + "; nothing was dumped")
    # The same table named twice (e.g. with and without schema) is dumped once.
    return list(dict.fromkeys(resolved))


# -- taking a snapshot -------------------------------------------------------------------------


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
    prefix = snapshot_prefix(snapshot_id)
    args = [
        "--format=directory",
        f"--jobs={jobs}",
        "--no-password",
        f"--dbname={base_dsn}",
    ]
    if chosen:
        args.append("--strict-names")
        args.extend(f"--table={dump_pattern(s, t)}" for s, t in chosen)

    with _temp_dir(work_dir, "restorekit-snapshot-", tool.os_user) as tmp:
        dump_dir = tmp / "dump"
        report("snapshot dump", 0, None)
        tool.run("pg_dump", *args, f"--file={dump_dir}",
                 env={**env, "PGAPPNAME": APPLICATION_NAME})
        files = sorted(p for p in dump_dir.rglob("*") if p.is_file())
        total = sum(p.stat().st_size for p in files)
        report("snapshot dump", total, total)
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
            _discard(repo, reversed(uploaded))  # the manifest (if any) first
            raise
        except RepositoryError as exc:
            removed = _discard(repo, reversed(uploaded))
            raise _not_taken(exc, snapshot_id, repo,
                             "the partial upload was removed" if removed else
                             "some partial objects could not be removed (without a manifest "
                             "they are never used)") from exc
        except BaseException:
            _discard(repo, reversed(uploaded))
            raise
    log.info("snapshot %s: %d objects, %d bytes at %s", snapshot_id, len(objects),
             info.size_bytes, info.location)
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
        size, digest = _hash_file(path)
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


def _discard(repo: Repository, keys: Iterable[str]) -> bool:
    """Best effort: remove what an unfinished snapshot uploaded (it is unusable without a
    manifest, so leftovers are only clutter). Stops at the first failure (the repository is
    failing: waiting out its retries for every key helps nobody). True when all went."""
    for key in keys:
        try:
            repo.delete(key)
        except Exception as exc:  # noqa: BLE001 - the original error matters more
            log.warning("could not remove %s of an unfinished snapshot: %s", key, exc)
            return False
    return True


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


# -- finding snapshots -------------------------------------------------------------------------


def list_snapshots(repo: Repository) -> list[SnapshotInfo]:
    """Complete snapshots (those with a manifest), oldest first. Unreadable manifests are
    skipped with a warning."""
    found: list[SnapshotInfo] = []
    for obj in repo.list(SNAPSHOT_ROOT):
        rest = obj.key[len(SNAPSHOT_ROOT):] if obj.key.startswith(SNAPSHOT_ROOT) else ""
        snapshot_id, _, name = rest.partition("/")
        if name != MANIFEST_NAME or not _ID_RE.match(snapshot_id):
            continue
        try:
            found.append(load_snapshot(repo, snapshot_id))
        except (RepositoryError, ConfigError) as exc:
            log.warning("skipping snapshot %s: %s", snapshot_id, exc)
    return sorted(found, key=lambda s: s.snapshot_id)


def load_snapshot(repo: Repository, snapshot_id: str) -> SnapshotInfo:
    """The snapshot ``snapshot_id``.

    Raises:
        ConfigError: malformed id or manifest.
        ObjectNotFound: no complete snapshot with that id (an unfinished one has no manifest).
    """
    _check_snapshot_id(snapshot_id)
    key = snapshot_prefix(snapshot_id) + MANIFEST_NAME
    try:
        raw = repo.get_bytes(key)
    except ObjectNotFound:
        raise ObjectNotFound(
            f"no complete snapshot {snapshot_id} in {redact(repo.url)} (no {MANIFEST_NAME}; "
            "an interrupted snapshot is never usable)"
        ) from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"snapshot {snapshot_id}: manifest is not JSON: {exc}") from exc
    info = SnapshotInfo.from_dict(data)
    if info.snapshot_id != snapshot_id:
        raise ConfigError(f"snapshot {snapshot_id}: manifest names {info.snapshot_id!r}")
    return info


def verify_snapshot(info: SnapshotInfo, repo: Repository) -> SnapshotInfo:
    """Re-read every object of ``info`` (size + SHA-256). For drills and before relying on an
    old snapshot. Raises SafetyError when an object is missing or differs."""
    _read_back(repo, info.objects)
    return info


def delete_snapshot(repo: Repository, snapshot_id: str) -> None:
    """Remove a snapshot: the manifest first (so it stops being a snapshot at once), then its
    objects. Deleting one that is already gone is not an error."""
    _check_snapshot_id(snapshot_id)
    prefix = snapshot_prefix(snapshot_id)
    repo.delete(prefix + MANIFEST_NAME)
    for obj in repo.list(prefix):
        repo.delete(obj.key)


# -- restoring ---------------------------------------------------------------------------------


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
    with _temp_dir(work_dir, "restorekit-restore-", tool.os_user) as tmp:
        dump_dir = download_snapshot(info, repo, tmp / "dump", progress=progress)
        _give_tree(tmp, tool.os_user)
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
    with _temp_dir(work_dir, "restorekit-restore-", tool.os_user) as tmp:
        dump_dir = download_snapshot(info, repo, tmp / "dump", progress=progress)
        _give_tree(tmp, tool.os_user)
        create_database(server_dsn, dbname)
        try:
            _run_restore(info, dump_dir, target_dsn, base_dsn, env, tool, wanted, jobs=jobs,
                         clean=False, schema_only=False, data_only=False, no_owner=no_owner)
        except BaseException:
            _drop_database_quietly(server_dsn, dbname)
            raise
    return target_dsn


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


# -- the archive's table of contents -----------------------------------------------------------

# Entries that belong to one table and come along when the table is restored.
_ATTACHED = frozenset({
    "TABLE DATA", "MATERIALIZED VIEW DATA", "SEQUENCE", "SEQUENCE SET", "SEQUENCE OWNED BY",
    "DEFAULT", "CONSTRAINT", "CHECK CONSTRAINT", "FK CONSTRAINT", "INDEX", "INDEX ATTACH",
    "TRIGGER", "RULE", "POLICY", "ROW SECURITY", "COMMENT", "SECURITY LABEL", "ACL",
    "STATISTICS", "TABLE ATTACH",
})
# Entries that are relations themselves (a dependency on one that is not selected means the
# entry would reference something missing, e.g. a foreign key to a table left out).
_RELATIONS = frozenset({
    "TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE", "SEQUENCE", "INDEX", "CONSTRAINT",
    "FK CONSTRAINT", "CHECK CONSTRAINT", "TRIGGER", "RULE", "DEFAULT", "TABLE ATTACH",
    "INDEX ATTACH", "POLICY",
})
_TABLE_DESCS = ("MATERIALIZED VIEW", "FOREIGN TABLE", "TABLE", "VIEW")
_OTHER_DESCS = frozenset({
    "DEFAULT ACL", "EVENT TRIGGER", "FOREIGN DATA WRAPPER", "FOREIGN SERVER", "USER MAPPING",
    "LARGE OBJECT", "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA", "SHELL TYPE",
    "PROCEDURAL LANGUAGE", "ACCESS METHOD", "OPERATOR CLASS", "OPERATOR FAMILY",
    "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER",
    "TEXT SEARCH TEMPLATE", "DATABASE PROPERTIES",
})
_KNOWN_DESCS = sorted(_ATTACHED | _RELATIONS | _OTHER_DESCS | set(_TABLE_DESCS), key=len,
                      reverse=True)
_TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
_DEPENDS = re.compile(r"^;\s*depends on:((?: \d+)*)\s*$")


@dataclass
class TocEntry:
    dump_id: int
    desc: str
    rest: str  # "<schema> <tag> <owner>" as pg_restore prints it (names are not quoted)
    line: str
    deps: list[int] = field(default_factory=list)


def read_toc(tool: PgTool, dump_dir: Path) -> list[TocEntry]:
    """``pg_restore --list --verbose``: entries with their dependencies."""
    out = tool.run("pg_restore", "--list", "--verbose", str(dump_dir)).stdout
    entries: list[TocEntry] = []
    for line in out.splitlines():
        match = _TOC_LINE.match(line)
        if match:
            text = match.group(4)
            desc = next((d for d in _KNOWN_DESCS if text.startswith(d + " ")), text.split(" ")[0])
            entries.append(TocEntry(int(match.group(1)), desc, text[len(desc) + 1:], line))
            continue
        deps = _DEPENDS.match(line)
        if deps and entries:
            entries[-1].deps.extend(int(d) for d in deps.group(1).split())
    return entries


def select_tables(
    toc: Sequence[TocEntry], wanted: Sequence[tuple[str, str]], snapshot_id: str
) -> list[TocEntry]:
    """The entries that restore the ``wanted`` (schema, table)s, in archive order: each table
    with what hangs off it alone (data, indexes, constraints, defaults, triggers, owned
    sequences, comments, grants). A foreign key to a table left out is left out too."""
    tables = [e for e in toc if e.desc in _TABLE_DESCS]
    chosen: set[int] = set()
    missing: list[str] = []
    for schema, name in wanted:
        # pg_restore prints "<schema> <name> <owner>" unquoted, so a name with spaces can also
        # look like a shorter name plus owner; an owner without spaces breaks the tie.
        head = f"{schema} {name} "
        hits = [e for e in tables if e.rest.startswith(head)]
        if len(hits) > 1:
            hits = [e for e in hits if " " not in e.rest[len(head):]]
        label = format_table_name(schema, name)
        if not hits:
            missing.append(label)
        elif len(hits) > 1:
            raise ConfigError(f"table {label} is ambiguous in snapshot {snapshot_id}")
        else:
            chosen.add(hits[0].dump_id)
    if missing:
        raise ConfigError(f"snapshot {snapshot_id} does not hold " + ", ".join(missing)
                          + "; nothing was restored")
    by_id = {e.dump_id: e for e in toc}
    changed = True
    while changed:
        changed = False
        for entry in toc:
            if entry.dump_id in chosen or entry.desc not in _ATTACHED or not entry.deps:
                continue
            if not chosen.intersection(entry.deps):
                continue
            if all(d in chosen or by_id.get(d) is None or by_id[d].desc not in _RELATIONS
                   for d in entry.deps):
                chosen.add(entry.dump_id)
                changed = True
    return [e for e in toc if e.dump_id in chosen]


def _drop_dangling_foreign_keys(
    tool: PgTool,
    dump_dir: Path,
    dsn: str,
    selected: list[TocEntry],
    wanted: Sequence[tuple[str, str]],
) -> list[TocEntry]:
    """Leave out foreign keys whose referenced table will not exist in the target: neither
    restored now nor already there. (A table-level dump keeps foreign keys to tables it does not
    hold; restoring it into a new database would otherwise fail on them.)"""
    fks = [e for e in selected if e.desc == "FK CONSTRAINT"]
    if not fks:
        return selected
    list_file = dump_dir.parent / "fk.list"
    list_file.write_text("".join(e.line + "\n" for e in fks))
    script = tool.run("pg_restore", f"--use-list={list_file}", "--file=-", str(dump_dir)).stdout
    refs = referenced_tables(script)
    if len(refs) != len(fks):
        log.warning("could not match %d foreign keys to their SQL; restoring all of them", len(fks))
        return selected
    restored = set(wanted)
    outside = sorted({ref for ref in refs if ref not in restored})
    existing = set(_existing_tables(dsn, outside)) if outside else set()
    dropped = {fk.dump_id for fk, ref in zip(fks, refs, strict=True)
               if ref not in restored and ref not in existing}
    for fk, ref in zip(fks, refs, strict=True):
        if fk.dump_id in dropped:
            log.warning("not restoring foreign key %s: it references %s, which the target "
                        "does not have", fk.rest, format_table_name(*ref))
    return [e for e in selected if e.dump_id not in dropped]


_SQL_TOKEN = re.compile(
    r"""\s+|--[^\n]*|/\*.*?\*/|"(?:[^"]|"")*"|'(?:[^']|'')*'|[^\W\d][\w$]*|\d+|.""",
    re.S,
)


def referenced_tables(script: str) -> list[tuple[str, str]]:
    """The table after REFERENCES in each statement of a pg_restore script that has one."""
    refs: list[tuple[str, str]] = []
    statement: list[str] = []
    for match in _SQL_TOKEN.finditer(script):
        token = match.group(0)
        if token.isspace() or token.startswith("--") or token.startswith("/*"):
            continue
        if token != ";":
            statement.append(token)
            continue
        upper = [t.upper() for t in statement]
        if "REFERENCES" in upper:
            i = upper.index("REFERENCES") + 1
            parts = [_ident(statement[i])] if i < len(statement) else []
            if i + 2 < len(statement) and statement[i + 1] == ".":
                parts.append(_ident(statement[i + 2]))
            if parts:
                refs.append((parts[0], parts[1]) if len(parts) == 2 else ("public", parts[0]))
        statement = []
    return refs


def _ident(token: str) -> str:
    if token.startswith('"'):
        return token[1:-1].replace('""', '"')
    return token.translate(_ASCII_LOWER)


def _existing_tables(dsn: str, tables: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    names = [f"{quote_ident(s, always=True)}.{quote_ident(t, always=True)}" for s, t in tables]
    with connect(dsn, application_name=APPLICATION_NAME) as conn:
        try:
            rows = conn.execute(
                "SELECT u.ord FROM unnest(%(names)s::text[]) WITH ORDINALITY AS u(name, ord) "
                "WHERE pg_catalog.to_regclass(u.name) IS NOT NULL",
                {"names": names},
            ).fetchall()
        except psycopg.Error as exc:
            raise PostgresError(f"could not look up tables: {redact(str(exc)).strip()}") from None
    return [tables[int(ord_) - 1] for (ord_,) in rows]


# -- small helpers -----------------------------------------------------------------------------


def _no_progress(phase: str, done: int, total: int | None) -> None:
    return None


def _file_progress(phase: str, offset: int, total: int, report: Progress) -> Callable[[int], None]:
    """Adapt a repository's per-file progress (byte increments) to bytes over all files."""
    done = offset

    def callback(increment: int) -> None:
        nonlocal done
        done += int(increment)
        report(phase, min(done, total), total)

    return callback


def _give_tree(root: Path, os_user: str | None) -> None:
    """Let pg_restore read a download when it runs as another OS user."""
    if os_user is None:
        return
    for path in (root, *root.rglob("*")):
        chown_for(path, os_user)


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


@contextmanager
def _temp_dir(work_dir: Path | None, prefix: str, os_user: str | None) -> Iterator[Path]:
    """A private temporary directory, owned by ``os_user`` when the tools run as another user;
    removed on the way out whatever happens."""
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=work_dir))
    chown_for(path, os_user)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)

"""PostgreSQL's archive_command and restore_command, backed by a restorekit repository.

PostgreSQL runs these through ``/bin/sh`` as its own OS user, once per WAL file, so this module
imports only the standard library, :mod:`restorekit.errors` and :mod:`restorekit.repository`
(boto3 is loaded only for S3 repositories)::

    python -m restorekit.wal push --repo URL [--compress lz4[:LEVEL]] %p %f  # archive_command
    python -m restorekit.wal get  --repo URL %f %p                         # restore_command

WAL files are stored under ``wal/<name>`` (segments, ``.history``, ``.backup``, ``.partial``).
With ``--compress`` (``lz4``, ``zstd`` or ``gzip``, the target's ``[backups] compression``)
segments and ``.partial`` files are stored compressed under the same key (the checksum record
says so, see :mod:`restorekit.repository`); ``get`` and :func:`fetch_wal` always write the
plain, verified segment, from a compressed or an older uncompressed archive alike.

Exit codes, chosen for what PostgreSQL does with them:

``push``
    0   stored, or already stored with the same sha256 (a re-push after a crash is normal)
    1   failed; PostgreSQL keeps the segment and retries. A *different* file already archived
        under the same name is refused this way, never overwritten: two clusters writing into one
        archive, or a restored copy archiving into its source's archive.
    2   bad arguments
``get``
    0   fetched and verified
    1   not in the archive: normal at the end of the archive and for ``.history`` probes
    126 anything else (corrupt object, unreadable repository, bad arguments): PostgreSQL aborts
        recovery on an exit status above 125 instead of treating the file as missing and
        promoting early at the wrong point.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from restorekit.errors import (
    ChecksumMismatch,
    ConfigError,
    ObjectNotFound,
    RepositoryError,
    RestoreKitError,
)
from restorekit.repository import (
    IncompleteObject,
    ObjectInfo,
    Repository,
    hash_file,
    open_repository,
    parse_repository_url,
)

__all__ = [
    "EXIT_ABORT_RECOVERY",
    "WAL_PREFIX",
    "WalConflict",
    "archive_command",
    "fetch_wal",
    "wal_codec",
    "last_archived",
    "list_wal",
    "main",
    "push_wal",
    "restore_command",
    "wal_key",
]

WAL_PREFIX = "wal/"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_ABORT_RECOVERY = 126

SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
_COMPRESSION_RE = re.compile(r"(?:(?:server|client)-)?(?P<method>none|lz4|zstd|gzip)"
                             r"(?::(?P<level>[0-9]{1,2}))?")
_WAL_NAME_RE = re.compile(
    r"^(?:[0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)$"
)


class WalConflict(RepositoryError):
    """A different file is already archived under this WAL name; it is never overwritten."""


def wal_key(name: str) -> str:
    """The repository key of WAL file ``name`` (as PostgreSQL's ``%f`` gives it)."""
    if not _WAL_NAME_RE.match(name):
        raise ConfigError(
            f"{name!r} is not a WAL file name (expected e.g. 000000010000000000000001, "
            "00000002.history, ...backup or ...partial): pass %f, not %p, as the name"
        )
    return WAL_PREFIX + name


def wal_codec(compression: str | None) -> tuple[str | None, int | None]:
    """(encoding, level) for archived segments from a ``[backups] compression`` value such as
    ``"lz4"``, ``"zstd:3"`` or ``"server-lz4"`` (the side only matters to pg_basebackup).

    Raises:
        ConfigError: not such a value.
    """
    if compression is None:
        return None, None
    match = _COMPRESSION_RE.fullmatch(compression)
    if match is None:
        raise ConfigError(f"compression {compression!r}: expected none, lz4, zstd or gzip, "
                          "optionally with a level (zstd:3)")
    method, level = match.group("method"), match.group("level")
    if method == "none":
        return None, None
    return method, None if level is None else int(level)


def push_wal(repo: Repository, path: Path, name: str, *,
             compression: str | None = None) -> ObjectInfo:
    """Archive the WAL file at ``path`` as ``name``; idempotent for identical content (a
    compressed copy is compared by its original bytes). ``compression`` (e.g. ``"lz4"``)
    applies to segments and ``.partial`` files; the small text files stay plain.

    Raises:
        WalConflict: a different file is already archived under ``name``.
        RepositoryError: the repository could not be written (PostgreSQL will retry).
    """
    key = wal_key(name)
    try:
        existing: ObjectInfo | None = repo.stat(key)
    except ObjectNotFound:  # includes IncompleteObject: an interrupted earlier push
        existing = None
    if existing is not None:
        try:
            sha, size = hash_file(path)
        except OSError as exc:
            raise RepositoryError(f"cannot read {path}: {exc.strerror}") from exc
        if sha != existing.sha256 or size != existing.size:
            raise WalConflict(
                f"{key} already exists in {repo.url} with different content (stored sha256 "
                f"{existing.sha256}, {existing.size} bytes; this file sha256 {sha}, {size} bytes); "
                "refusing to overwrite. Is another cluster (or a restored copy) archiving into "
                "this repository? Give each cluster its own archive."
            )
        try:
            return repo.verify(key)
        except ChecksumMismatch:
            pass  # the stored copy rotted; the record vouches for exactly these bytes: rewrite
    encoding, level = wal_codec(compression)
    if encoding is None or not (SEGMENT_RE.match(name) or name.endswith(".partial")):
        return repo.put_file(key, path)
    return repo.put_file(key, path, encoding=encoding, level=level)


def fetch_wal(repo: Repository, name: str, dest: Path) -> ObjectInfo:
    """Fetch WAL file ``name`` to ``dest``, verified (ObjectNotFound when not archived)."""
    return repo.get_file(wal_key(name), dest)


def list_wal(repo: Repository) -> list[ObjectInfo]:
    """Every archived WAL file (segments, .history, .backup, .partial), sorted by name."""
    return repo.list(WAL_PREFIX)


def last_archived(repo: Repository) -> ObjectInfo | None:
    """The newest archived WAL *segment* (highest timeline, then highest segment), or None."""
    segments = [info for info in list_wal(repo) if SEGMENT_RE.match(info.key[len(WAL_PREFIX):])]
    return max(segments, key=lambda info: info.key, default=None)


# -- command strings -------------------------------------------------------------------------


def _pg_quote(arg: str) -> str:
    """Quote for /bin/sh, then escape '%' so PostgreSQL's placeholder expansion leaves it alone."""
    return shlex.quote(arg).replace("%", "%%")


def archive_command(repo_url: str, python: str = sys.executable, *,
                    compression: str | None = None) -> str:
    """The ``archive_command`` setting that pushes WAL into ``repo_url``, compressed with
    ``compression`` (a ``[backups] compression`` value; none: stored as is)."""
    url = parse_repository_url(repo_url).url
    encoding, level = wal_codec(compression)
    compress = [] if encoding is None else [
        "--compress", encoding if level is None else f"{encoding}:{level}"]
    return " ".join([_pg_quote(python), "-m", "restorekit.wal", "push", "--repo", _pg_quote(url),
                     *compress, "%p", "%f"])


def restore_command(repo_url: str, python: str = sys.executable) -> str:
    """The ``restore_command`` setting that fetches WAL from ``repo_url``."""
    url = parse_repository_url(repo_url).url
    return " ".join([_pg_quote(python), "-m", "restorekit.wal", "get", "--repo", _pg_quote(url),
                     "%f", "%p"])


# -- CLI -----------------------------------------------------------------------------------------


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m restorekit.wal",
                     description="PostgreSQL archive_command / restore_command for restorekit.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    push = sub.add_parser("push",
                          help="archive a WAL file (archive_command: push --repo URL %%p %%f)")
    push.add_argument("--repo", required=True, help="repository URL")
    push.add_argument("--compress", default=None,
                      help="store segments compressed: lz4, zstd or gzip, optionally :LEVEL")
    push.add_argument("path", help="the WAL file to archive (%%p)")
    push.add_argument("name", help="its file name (%%f)")
    get = sub.add_parser("get", help="fetch a WAL file (restore_command: get --repo URL %%f %%p)")
    get.add_argument("--repo", required=True, help="repository URL")
    get.add_argument("name", help="the WAL file name (%%f)")
    get.add_argument("dest", help="where to write it (%%p)")
    return parser


def _say(message: str) -> None:
    print(f"restorekit.wal: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    fetching = bool(args_list) and args_list[0] == "get"
    try:
        args = _parser().parse_args(args_list)
    except _UsageError as exc:
        _say(f"usage error: {exc}")
        return EXIT_ABORT_RECOVERY if fetching else EXIT_USAGE
    if args.command == "push":
        return _push(args.repo, Path(args.path), args.name, args.compress)
    return _get(args.repo, args.name, Path(args.dest))


def _push(url: str, path: Path, name: str, compression: str | None = None) -> int:
    try:
        push_wal(open_repository(url), path, name, compression=compression)
    except RestoreKitError as exc:
        _say(f"push {name} failed: {exc}")
        return EXIT_FAILED
    except Exception as exc:  # PostgreSQL only sees the exit status; keep the cause in its log
        _say(f"push {name} failed: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    return EXIT_OK


def _get(url: str, name: str, dest: Path) -> int:
    try:
        fetch_wal(open_repository(url), name, dest)
    except IncompleteObject as exc:
        _say(f"{name}: treated as not archived: {exc}")
        return EXIT_NOT_FOUND
    except ObjectNotFound:
        _say(f"{name} is not in the archive")
        return EXIT_NOT_FOUND
    except RestoreKitError as exc:
        _say(f"get {name} failed, aborting recovery: {exc}")
        return EXIT_ABORT_RECOVERY
    except Exception as exc:
        _say(f"get {name} failed, aborting recovery: {type(exc).__name__}: {exc}")
        return EXIT_ABORT_RECOVERY
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

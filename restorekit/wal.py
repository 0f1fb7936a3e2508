"""PostgreSQL's archive_command and restore_command, backed by a restorekit repository.

PostgreSQL runs these through ``/bin/sh`` as its own OS user, once per WAL file, so this module
imports only the standard library, :mod:`restorekit.errors` and :mod:`restorekit.repository`
(boto3 is loaded only for S3 repositories)::

    python -m restorekit.wal push --repo URL [--compress lz4[:LEVEL]] %p %f  # archive_command
    python -m restorekit.wal get  --repo URL %f %p                         # restore_command

A restore by the native engine does not start Python per file: a :class:`WalSpool` thread
fetches, verifies and decompresses the WAL the restore will replay into a spool directory in the
restore's home, ahead of PostgreSQL (a bounded number of segments), and
``restore_command(..., spool=...)`` is a shell command that moves a spooled file into place,
answers a name absent from the archive's listing itself, and runs ``get`` for anything else.
``recovery_end_command`` (:func:`spool_cleanup_command`) removes the spool.

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

import contextlib
import os
import re
import shlex
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, NoReturn

from restorekit.errors import (
    ChecksumMismatch,
    ConfigError,
    ObjectNotFound,
    RepositoryError,
    RestoreKitError,
    WalConflict,
)
from restorekit.repository import (
    IncompleteObject,
    ObjectInfo,
    Repository,
    hash_file,
    open_repository,
    parse_repository_url,
)

if TYPE_CHECKING:
    import argparse

__all__ = [
    "EXIT_ABORT_RECOVERY",
    "WAL_PREFIX",
    "WalConflict",
    "WalSpool",
    "archive_command",
    "fetch_wal",
    "wal_codec",
    "last_archived",
    "main",
    "push_wal",
    "replay_plan",
    "restore_command",
    "spool_cleanup_command",
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


#: The default WAL segment size (initdb --wal-segsize can change it; archived files say theirs).
SEGMENT_SIZE = 16 * 1024 * 1024


def segment_number(name: str, segment_size: int = SEGMENT_SIZE) -> int:
    """The position of segment ``name`` in the WAL (its start LSN // segment_size)."""
    return int(name[8:16], 16) * (0x100000000 // segment_size) + int(name[16:24], 16)


def segment_file(timeline: int, number: int, segment_size: int = SEGMENT_SIZE) -> str:
    """The file name of segment ``number`` on ``timeline`` (the inverse of segment_number)."""
    per_id = 0x100000000 // segment_size
    return f"{timeline:08X}{number // per_id:08X}{number % per_id:08X}"


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
    match = _COMPRESSION_RE.fullmatch("none" if compression is None else compression)
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


def wal_names(repo: Repository) -> list[str]:
    """The names of every archived WAL file, sorted: one listing, no record read."""
    return [key[len(WAL_PREFIX):] for key in repo.keys(WAL_PREFIX)]


def last_archived(repo: Repository, names: list[str] | None = None) -> ObjectInfo | None:
    """The record of the newest archived WAL *segment* (highest timeline, then highest segment:
    the names sort so) among ``names`` (default: the archive's listing), or None."""
    listed = wal_names(repo) if names is None else names
    segments = [name for name in listed if SEGMENT_RE.match(name)]
    return repo.stat(wal_key(max(segments))) if segments else None


def archived_segment_size(repo: Repository, names: list[str]) -> int:
    """The WAL segment size (before compression), from the record of the newest archived
    segment among ``names``; PostgreSQL's default when there is none."""
    newest = last_archived(repo, names)
    return newest.size if newest is not None else SEGMENT_SIZE


# -- command strings -------------------------------------------------------------------------


def _pg_quote(arg: str) -> str:
    """Quote for /bin/sh, then escape '%' so PostgreSQL's placeholder expansion leaves it alone."""
    return shlex.quote(arg).replace("%", "%%")


def _invocation(python: str, command: str, repo_url: str, *args: str) -> str:
    """``python -m restorekit.wal COMMAND --repo URL ARGS``, as :func:`_as_written` reads it."""
    url = parse_repository_url(repo_url).url
    return " ".join([_pg_quote(python), "-m", "restorekit.wal", command, "--repo", _pg_quote(url),
                     *args])


def archive_command(repo_url: str, python: str = sys.executable, *,
                    compression: str | None = None) -> str:
    """The ``archive_command`` setting that pushes WAL into ``repo_url``, compressed with
    ``compression`` (a ``[backups] compression`` value; none: stored as is)."""
    encoding, level = wal_codec(compression)
    compress = [] if encoding is None else [
        "--compress", encoding if level is None else f"{encoding}:{level}"]
    return _invocation(python, "push", repo_url, *compress, "%p", "%f")


def restore_command(repo_url: str, python: str = sys.executable, *,
                    spool: Path | None = None) -> str:
    """The ``restore_command`` setting that fetches WAL from ``repo_url``.

    With ``spool`` (a :class:`WalSpool` directory) it is a shell command that starts no Python
    in the common cases: a file the spool holds (already verified) is moved into place (copied
    when the spool marked it to keep: ``.history`` files and the plan's last segment, which
    PostgreSQL asks for again at the end of recovery); a name absent from
    the spool's listing of the archive is answered "not in the archive" (exit 1, with the same
    message ``get`` writes); anything else (not fetched yet, the spool gone or stopped) runs
    ``get``, which also leaves the name in the spool's ``.fallback`` so the spool skips ahead.
    """
    get = _invocation(python, "get", repo_url, "%f", "%p")
    if spool is None:
        return get
    held = _pg_quote(str(spool)) + "/%f"
    keep = _pg_quote(str(spool)) + "/" + SPOOL_KEEP + "%f"
    listing = _pg_quote(str(spool / SPOOL_LISTING))
    fallback = _pg_quote(str(spool / SPOOL_FALLBACK))
    # A failed mv/cp falls through to `get`: exit 1 would tell PostgreSQL "not archived" and
    # end recovery early. grep's exit 2 (an unreadable listing) falls through too. One
    # if/elif/else and no `exit`, so the command composes (a wrapper can time it).
    return (
        f"if test -f {held} && {{ if test -f {keep}; then cp {held} %p; "
        f"else mv -f {held} %p; fi; }}; then :; "
        f"elif test -f {listing} && {{ grep -qxF -e %f {listing}; test $? -eq 1; }}; then "
        f"echo 'restorekit.wal: '%f' is not in the archive' >&2; false; "
        f"else (echo %f > {fallback}) 2>/dev/null; {get}; fi"
    )


def spool_cleanup_command(spool: Path) -> str:
    """The ``recovery_end_command`` that removes ``spool`` once recovery has ended. The
    directory is renamed first, so a :class:`WalSpool` thread still writing cannot add to it
    while it is being removed (its writes go by the old path and fail)."""
    gone = _pg_quote(str(spool.with_name(spool.name + ".removed")))
    return f"mv -f {_pg_quote(str(spool))} {gone}; rm -rf {gone} {_pg_quote(str(spool))}"


# -- spool: WAL fetched ahead of PostgreSQL ----------------------------------------------------

SPOOL_LISTING = ".listing"
SPOOL_FALLBACK = ".fallback"
SPOOL_KEEP = ".keep-"  # + name: hand over a copy, PostgreSQL asks for this file again


def replay_plan(archived: Collection[str], timeline: int, start_lsn: int, *,
                segment_size: int, end_lsn: int | None = None,
                read_history: Callable[[str], str]) -> list[str]:
    """The WAL files PostgreSQL will ask for, in order, replaying from ``start_lsn`` on
    ``timeline`` with ``recovery_target_timeline = latest``: the history files, then per
    segment the newest timeline that holds it (PostgreSQL's XLogFileReadAnyTLI: a timeline
    from the segment it begins at, never going back to an older one), up to the segment of
    ``end_lsn`` or the end of the archive. A guess that only decides what is fetched ahead:
    a file PostgreSQL asks for outside it is fetched by ``get`` as before.
    """
    names = set(archived)
    newest = timeline
    while f"{newest + 1:08X}.history" in names:  # PostgreSQL probes upwards the same way
        newest += 1
    histories = [f"{t:08X}.history" for t in range(timeline, newest + 1)
                 if f"{t:08X}.history" in names]
    begins = {timeline: 0}
    if newest > timeline:
        begins = _timeline_begins(read_history(f"{newest:08X}.history"), newest)
        if timeline not in begins:
            return histories  # not an ancestor: PostgreSQL refuses the target timeline anyway
    tles = sorted(((tli, begin // segment_size) for tli, begin in begins.items()
                   if tli >= timeline), reverse=True)
    plan = list(histories)
    current = timeline
    segno = start_lsn // segment_size
    last = None if end_lsn is None else end_lsn // segment_size
    while last is None or segno <= last:
        for tli, begin in tles:
            name = segment_file(tli, segno, segment_size)
            if tli >= current and segno >= begin and name in names:
                plan.append(name)
                current = tli
                break
        else:
            break
        segno += 1
    return plan


def _timeline_begins(history: str, newest: int) -> dict[int, int]:
    """Where each timeline of ``newest``'s history begins (LSN), from its history file."""
    begins: dict[int, int] = {}
    begin = 0
    for line in history.splitlines():
        fields = line.split()
        if len(fields) < 2 or not fields[0].isdigit():
            continue
        high, _, low = fields[1].partition("/")
        begins[int(fields[0])] = begin
        begin = (int(high, 16) << 32) | int(low, 16)
    begins[newest] = begin
    return begins


class WalSpool:
    """Fetches the WAL a restore will replay into ``directory`` ahead of PostgreSQL, verified
    and decompressed, at most ``ahead`` segments at a time, in a daemon thread.

    PostgreSQL takes them through :func:`restore_command` (``spool=directory``). Every file
    appears under its own name only once verified (fetched under a hidden name, then renamed); a
    file the spool cannot fetch (not there, corrupt, the repository failing) stops the thread
    and leaves that file to ``get``, which reports it as it always did. The thread ends at the
    end of ``plan``, when ``directory`` or its listing disappears (the ``recovery_end_command``
    or the caller removed it), when ``data_dir`` disappears or its server stops after having
    started (the restore failed; the spool is then removed), or on :meth:`stop`.

    Args:
        repo: the repository holding the archive.
        directory: the spool, created here (owned by ``os_user``) with the archive's listing.
        archived: every WAL file name in the archive (the listing).
        plan: the names to fetch, in PostgreSQL's order (:func:`replay_plan`).
        data_dir: the restored cluster's data directory, watched to notice a failed restore.
    """

    def __init__(self, repo: Repository, directory: Path, archived: Collection[str],
                 plan: Sequence[str], *, data_dir: Path, os_user: str | None = None,
                 ahead: int = 64, poll: float = 0.02) -> None:
        self.repo = repo
        self.directory = Path(directory)
        self.plan = list(plan)
        self.data_dir = Path(data_dir)
        self.os_user = os_user
        self.ahead = ahead
        self.poll = poll
        self.stopped_by: str | None = None
        self._index = {name: i for i, name in enumerate(self.plan)}
        self._cleared = -1  # stale spooled files removed up to this plan index
        import threading  # here, not at import: archive_command has no use for it

        self._stop = threading.Event()
        self._server_seen = False
        self._remove = False  # the spool is removed when the thread ends
        self._thread = threading.Thread(target=self._run, name="wal-spool", daemon=True)
        if self.directory.exists():
            _rmtree(self.directory)
        self.directory.mkdir(mode=0o700)
        self._chown(self.directory)
        listing = self.directory / (".part" + SPOOL_LISTING)
        listing.write_text("".join(f"{name}\n" for name in sorted(archived)))
        self._chown(listing)
        listing.rename(self.directory / SPOOL_LISTING)

    def start(self) -> WalSpool:
        self._thread.start()
        return self

    def stop(self, *, remove: bool = True, timeout: float = 5) -> None:
        """Stop the thread (waiting up to ``timeout`` s for a fetch in flight); ``remove``
        the spool too (a restore that failed before its server started). A fetch still in
        flight after ``timeout`` (a hanging repository) removes the spool when it ends."""
        self._remove = self._remove or remove
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if remove:
            _rmtree(self.directory, ignore_errors=True)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            done = -1
            for index, name in enumerate(self.plan):
                done = max(done, self._consumed())
                if index <= done:
                    continue  # PostgreSQL fetched it itself: it is past this one
                if not self._wait_for_room():
                    return
                self._fetch(name)
            self.stopped_by = "end of plan"
        except Exception as exc:  # noqa: BLE001 - the thread must never die noisily: `get` is there
            self.stopped_by = f"{type(exc).__name__}: {exc}"
            import logging  # here, not at import: archive_command and get never log

            logging.getLogger(__name__).info(
                "WAL spool stopped, PostgreSQL fetches the rest itself: %s", exc)
        finally:
            if self._gone() in ("restore removed", "server stopped"):
                self._remove = True
                self.stopped_by = self._gone()
            if self._remove:
                _rmtree(self.directory, ignore_errors=True)
                if self.stopped_by in ("restore removed", "server stopped"):
                    with contextlib.suppress(OSError):
                        self.directory.parent.rmdir()  # only when the restore removed the rest

    def _fetch(self, name: str) -> None:
        part = self.directory / f".part-{name}"
        fetch_wal(self.repo, name, part)
        self._chown(part)
        if not SEGMENT_RE.match(name) or name == self.plan[-1]:
            (self.directory / (SPOOL_KEEP + name)).touch()
        os.rename(part, self.directory / name)  # ENOENT once the spool was removed: stops

    def _wait_for_room(self) -> bool:
        while True:
            if self._stop.is_set():
                self.stopped_by = "stopped"
                return False
            gone = self._gone()
            if gone:
                self.stopped_by = gone
                self._remove = self._remove or gone != "spool removed"
                return False
            try:
                held = sum(1 for entry in os.scandir(self.directory)
                           if SEGMENT_RE.match(entry.name))
            except FileNotFoundError:
                self.stopped_by = "spool removed"
                return False
            if held < self.ahead:
                return True
            self._stop.wait(self.poll)

    def _gone(self) -> str | None:
        if not self.data_dir.exists():  # first: the restore's removal may race a fetch
            return "restore removed"
        if not (self.directory / SPOOL_LISTING).exists():
            return "spool removed"
        running = (self.data_dir / "postmaster.pid").exists()
        if self._server_seen and not running:
            return "server stopped"
        self._server_seen = self._server_seen or running
        return None

    def _consumed(self) -> int:
        """The plan index of the last file PostgreSQL had to fetch itself (-1: none); spooled
        files before it are stale and removed."""
        try:
            name = (self.directory / SPOOL_FALLBACK).read_text().strip()
        except OSError:
            return -1
        index = self._index.get(name, -1)
        for stale in self.plan[self._cleared + 1:index + 1]:
            if SEGMENT_RE.match(stale):
                with contextlib.suppress(OSError):
                    (self.directory / stale).unlink()
        self._cleared = max(self._cleared, index)
        return index

    def _chown(self, path: Path) -> None:
        if self.os_user is not None:
            from restorekit.pg.tools import chown_for  # psycopg: not on `get`'s start path

            chown_for(path, self.os_user)


def _rmtree(path: Path, *, ignore_errors: bool = False) -> None:
    import shutil  # ~2 ms (zlib, bz2, lzma) that archive_command and get do without

    shutil.rmtree(path, ignore_errors=ignore_errors)


# -- CLI -----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    import argparse  # only for what _as_written leaves: see there

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise ConfigError(message)

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


def _as_written(argv: list[str]) -> SimpleNamespace | None:
    """The arguments, as the parser would give them, when ``argv`` has exactly the shape
    :func:`archive_command` and :func:`restore_command` write and no value could be taken for an
    option (none starts with ``-``); None sends everything else through the parser.

    PostgreSQL starts one of these per WAL file, and argparse (with the ``shutil``, ``locale``
    and ``gettext`` it loads to build the parser) was ~8 ms of CPU of each ~65 ms push.
    """
    match argv:
        case ["push", "--repo", repo, "--compress", compress, path, name]:
            args = SimpleNamespace(command="push", repo=repo, compress=compress, path=path,
                                   name=name)
        case ["push", "--repo", repo, path, name]:
            args = SimpleNamespace(command="push", repo=repo, compress=None, path=path,
                                   name=name)
        case ["get", "--repo", repo, name, dest]:
            args = SimpleNamespace(command="get", repo=repo, name=name, dest=dest)
        case _:
            return None
    if any(isinstance(value, str) and value.startswith("-") for value in vars(args).values()):
        return None
    return args


def _say(message: str) -> None:
    print(f"restorekit.wal: {message}", file=sys.stderr, flush=True)


def _cause(exc: Exception) -> str:
    """For PostgreSQL's log: restorekit's errors say what failed; any other is named too."""
    return str(exc) if isinstance(exc, RestoreKitError) else f"{type(exc).__name__}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    fetching = bool(args_list) and args_list[0] == "get"
    args: SimpleNamespace | argparse.Namespace | None = _as_written(args_list)
    if args is None:
        try:
            args = _parser().parse_args(args_list)
        except ConfigError as exc:
            _say(f"usage error: {exc}")
            return EXIT_ABORT_RECOVERY if fetching else EXIT_USAGE
    if args.command == "push":
        return _push(args.repo, Path(args.path), args.name, args.compress)
    return _get(args.repo, args.name, Path(args.dest))


def _push(url: str, path: Path, name: str, compression: str | None = None) -> int:
    try:
        push_wal(open_repository(url), path, name, compression=compression)
    except Exception as exc:  # PostgreSQL only sees the exit status; keep the cause in its log
        _say(f"push {name} failed: {_cause(exc)}")
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
    except Exception as exc:
        _say(f"get {name} failed, aborting recovery: {_cause(exc)}")
        return EXIT_ABORT_RECOVERY
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

"""Read archived WAL as a stream of the records that matter for finding damage.

``pg_waldump`` decodes the WAL; this module turns its lines into :class:`WalRecord` values:
heap row changes (the row's block and line pointer, and where an update moved it), commits
and aborts (time, subtransactions, the files dropped at commit) and file creations. No access
to the database is needed: only the archive.

Segments are staged once from the archive (verified, uncompressed) into a work directory and
read by one ``pg_waldump`` run per filter; nothing here holds more than a line at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from restorekit.engines.wal_scan import is_segment
from restorekit.errors import PgToolFailed, RestorePointError
from restorekit.models import format_lsn, parse_lsn
from restorekit.pg.tools import PgTool, chown_for, make_dir
from restorekit.wal import SEGMENT_SIZE, segment_file, segment_number

log = logging.getLogger(__name__)

DEFAULT_TABLESPACE = 1663
GLOBAL_TABLESPACE = 1664

#: A relation's file: (tablespace oid, database oid, relfilenode), as pg_waldump prints it.
RelFile = tuple[int, int, int]

_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)(?: ([A-Z]+|[+-]\d\d(?::?\d\d)?))?")
_SUBXACTS = re.compile(r"subxacts:((?: \d+)+)")
_RELS = re.compile(r"\brels:((?: [^ ;]+)+)")

#: Heap operations that change or remove a row version, and those that add one.
ROW_CHANGES = frozenset({"DELETE", "UPDATE", "HOT_UPDATE"})
ROW_INSERTS = frozenset({"INSERT", "MULTI_INSERT"})
#: What following rows needs: their changes, commits, aborts, new files.
TRACE_OPS = ROW_CHANGES | {"COMMIT", "ABORT", "CREATE"}


@dataclass(slots=True)  # not frozen: built once per WAL record, frozen costs 2x
class WalRecord:
    """One decoded record. ``blk``/``off`` locate the row the record acts on (an update's OLD
    version); ``new_blk``/``new_off`` where an update put the new one."""

    lsn: int
    xid: int
    op: str  # DELETE UPDATE HOT_UPDATE INSERT MULTI_INSERT COMMIT ABORT CREATE
    rel: RelFile | None = None
    blk: int = -1
    off: int = -1
    new_blk: int = -1
    new_off: int = -1
    ntuples: int = 0
    time: datetime | None = None
    subxacts: tuple[int, ...] = ()
    dropped: tuple[RelFile, ...] = ()  # files a COMMIT (or ABORT) removes
    size: int = 0  # the record's total length in the WAL
    line: str = ""  # as pg_waldump printed it: the evidence a report quotes

    @property
    def tid(self) -> tuple[int, int]:
        return (self.blk, self.off)

    @property
    def new_tid(self) -> tuple[int, int]:
        return (self.new_blk, self.new_off)

    @property
    def lsn_text(self) -> str:
        return format_lsn(self.lsn)


def rel_path(path: str) -> RelFile | None:
    """``base/5/16384`` / ``pg_tblspc/16400/PG_15_x/5/16384`` / ``global/1262`` -> RelFile."""
    parts = path.split("/")
    try:
        if parts[0] == "base" and len(parts) == 3:
            return (DEFAULT_TABLESPACE, int(parts[1]), int(parts[2]))
        if parts[0] == "global" and len(parts) == 2:
            return (GLOBAL_TABLESPACE, 0, int(parts[1]))
        if parts[0] == "pg_tblspc" and len(parts) == 5:
            return (int(parts[1]), int(parts[3]), int(parts[4]))
    except ValueError:
        return None
    return None


def _time(text: str) -> datetime | None:
    match = _TS.match(text)
    if not match:
        return None
    zone = match.group(2)
    stamp = match.group(1)
    if zone in (None, "UTC", "GMT"):
        return datetime.fromisoformat(stamp + "+00:00")
    if zone[0] in "+-":
        return datetime.fromisoformat(stamp + (zone if ":" in zone or len(zone) == 3 else
                                               zone[:3] + ":" + zone[3:]))
    return None  # a zone name pg_waldump was not asked for (it runs with TZ=UTC)


def parse_line(line: str, wanted: frozenset[str] | None = None) -> WalRecord | None:
    """A record from one pg_waldump line, or None when it is not one this module uses (or
    its operation is not in ``wanted``).

    Hot path: a scan parses every heap line of the WAL, so the line is split on whitespace
    once (one C call) and read by position, not matched with regular expressions (about 3x
    faster; see bench/walscan_bench.py).
    """
    if not line.startswith("rmgr: "):
        return None
    tokens = line.split()
    # rmgr: Heap len (rec/tot): 54/ 54, tx: 730, lsn: 0/01536EB0, prev 0/0153.., desc: OP ...
    # ("54/ 54," is one token when the numbers are wide enough to leave no space).
    i = 12 if len(tokens) > 13 and tokens[12] == "desc:" else _index(tokens, "desc:")
    if i < 0 or i + 1 >= len(tokens):
        return None
    op = tokens[i + 1]
    plus = op.find("+")
    if plus > 0:
        op = op[:plus]  # INSERT+INIT is an INSERT
    if wanted is not None and op not in wanted:
        return None
    rmgr = tokens[1]
    try:
        size = int(tokens[i - 7].rstrip(",").rpartition("/")[2])
        xid = int(tokens[i - 5].rstrip(","))
        hi, _, lo = tokens[i - 3].rstrip(",").partition("/")
        lsn = (int(hi, 16) << 32) | int(lo, 16)
    except ValueError:
        return None
    if rmgr == "Heap" or rmgr == "Heap2":
        if op not in ROW_CHANGES and op not in ROW_INSERTS:
            return None
        return _heap(tokens, i, op, lsn, xid, size, line)
    if rmgr == "Transaction":
        if op not in ("COMMIT", "ABORT"):
            return None
        body = line[line.find(" desc: ") + 7 + len(tokens[i + 1]):].lstrip()
        subx = _SUBXACTS.search(body) if "subxacts:" in body else None
        rels = _RELS.search(body) if "rels:" in body else None
        paths = rels.group(1).split() if rels else ()
        return WalRecord(lsn, xid, op, time=_time(body),
                         subxacts=tuple(int(x) for x in subx.group(1).split()) if subx else (),
                         dropped=tuple(r for r in map(rel_path, paths) if r), size=size,
                         line=line)
    if rmgr == "Storage" and op == "CREATE":
        return WalRecord(lsn, xid, op, rel=rel_path(tokens[i + 2]), size=size, line=line)
    return None


def _index(tokens: list[str], word: str, start: int = 0) -> int:
    try:
        return tokens.index(word, start)
    except ValueError:
        return -1


def _heap(tokens: list[str], i: int, op: str, lsn: int, xid: int, size: int, line: str
          ) -> WalRecord | None:
    ref0 = _blkref(tokens, "#0:", i)
    if ref0 is None:
        return None
    rel, blk0 = ref0
    if op == "MULTI_INSERT":  # MULTI_INSERT 12 tuples ...
        return WalRecord(lsn, xid, op, rel=rel, blk=blk0, ntuples=int(tokens[i + 2]),
                         size=size, line=line)
    off = int(tokens[i + 3]) if tokens[i + 2] == "off" else -1
    if op == "UPDATE" or op == "HOT_UPDATE":
        # UPDATE off 150 xmax 726 flags 0x00 ; new off 21 xmax 0, blkref #0: ... blk NEW,
        # blkref #1: ... blk OLD: the new page is block 0, the old one block 1 when they
        # differ (a HOT update never leaves its page).
        ref1 = _blkref(tokens, "#1:", i)
        new = _index(tokens, "new", i)
        new_off = int(tokens[new + 2]) if new > 0 and tokens[new + 1] == "off" else -1
        return WalRecord(lsn, xid, op, rel=rel, blk=ref1[1] if ref1 else blk0, off=off,
                         new_blk=blk0, new_off=new_off, size=size, line=line)
    return WalRecord(lsn, xid, op, rel=rel, blk=blk0, off=off, size=size, line=line)


def _blkref(tokens: list[str], tag: str, start: int) -> tuple[RelFile, int] | None:
    """``blkref #0: rel 1663/5/16384 blk 4`` -> ((1663, 5, 16384), 4); None for another fork
    (``rel 1663/5/16384 fork fsm blk 0``): not the table's rows."""
    j = _index(tokens, tag, start)
    if j < 0 or j + 4 >= len(tokens) or tokens[j + 3] != "blk":
        return None
    t, d, r = tokens[j + 2].split("/")
    return (int(t), int(d), int(r)), int(tokens[j + 4].rstrip(","))


# -- reading the archive ----------------------------------------------------------------------


def segment_name(timeline: int, lsn: int, segment_size: int = SEGMENT_SIZE) -> str:
    """The segment file on ``timeline`` that holds ``lsn``."""
    return segment_file(timeline, lsn // segment_size, segment_size)


@dataclass(frozen=True, slots=True)
class StagedWal:
    """Archived segments copied into ``directory`` for pg_waldump: ``first`` .. ``last``."""

    directory: Path
    timeline: int
    first: str
    last: str
    bytes: int
    segment_size: int = SEGMENT_SIZE

    @property
    def end_lsn(self) -> int:
        """Just past the last staged segment: where pg_waldump must stop (without an end it
        waits five seconds for a next segment that will never come)."""
        return (segment_number(self.last, self.segment_size) + 1) * self.segment_size


#: WAL segment sizes initdb allows (``--wal-segsize``), PostgreSQL's default first.
SEGMENT_SIZES: tuple[int, ...] = (
    SEGMENT_SIZE, *(2 ** n * 1024 * 1024 for n in range(11) if 2 ** n != 16))


def stage_segments(
    names: Sequence[str], fetch: Callable[[str, Path], None], directory: Path, *,
    timeline: int, start_lsn: int, os_user: str | None,
    progress: Callable[[int, int], None] | None = None,
) -> StagedWal:
    """Copy the contiguous run of ``timeline``'s archived segments from the one holding
    ``start_lsn`` into ``directory`` (each read from the archive once, verified by ``fetch``).

    The archive does not say its segment size (pgBackRest's files are compressed), so the
    first segment decides it: the name holding ``start_lsn`` under each size initdb allows,
    until a segment of that name is archived and is that size (16 MB first, then RDS's 64 MB
    and the rest).

    Raises:
        RestorePointError: the segment holding ``start_lsn`` is not in the archive.
    """
    mine = sorted(n for n in names if is_segment(n) and n[:8] == f"{timeline:08X}")
    make_dir(directory, os_user, mode=0o700)
    size = _first_segment(mine, fetch, directory, timeline, start_lsn)
    first = segment_name(timeline, start_lsn, size)
    run = [first]
    for name in (n for n in mine if n > first):  # stop at a gap: pg_waldump could not cross it
        if segment_number(name, size) != segment_number(run[-1], size) + 1:
            log.warning("the archive has a gap after %s: the WAL scan ends there", run[-1])
            break
        run.append(name)
    total = 0
    for i, name in enumerate(run, 1):
        dest = directory / name
        if i > 1:
            fetch(name, dest)
        chown_for(dest, os_user)
        total += dest.stat().st_size
        if progress:
            progress(i, len(run))
    return StagedWal(directory, timeline, run[0], run[-1], total, size)


def _first_segment(names: Sequence[str], fetch: Callable[[str, Path], None], directory: Path,
                   timeline: int, start_lsn: int) -> int:
    """Fetch the archived segment holding ``start_lsn`` into ``directory``; its size."""
    archived = set(names)
    for size in SEGMENT_SIZES:
        name = segment_name(timeline, start_lsn, size)
        if name not in archived:
            continue
        dest = directory / name
        fetch(name, dest)
        if dest.stat().st_size == size:
            return size
        dest.unlink()
    first = segment_name(timeline, start_lsn)
    raise RestorePointError(
        f"WAL segment {first} (LSN {format_lsn(start_lsn)}) is not in the archive: the "
        "damage cannot be traced from there")


def waldump_chunks(tool: PgTool, staged: StagedWal, start_lsn: int, filters: Sequence[str],
                   *, end_lsn: int | None = None) -> Generator[str, None, None]:
    """What ``pg_waldump`` prints for ``staged`` from ``start_lsn``, streamed in blocks of
    whole lines (a block at a time lets a caller use C-speed string and regex scans).

    pg_waldump ends with an error at the end of valid WAL ("invalid record length"): that
    is the end of the archive, not a failure. Any other error is raised as
    :class:`PgToolFailed`.
    """
    argv = tool.argv("pg_waldump", f"--path={staged.directory}",
                     f"--timeline={staged.timeline}", f"--start={format_lsn(start_lsn)}",
                     f"--end={format_lsn(end_lsn or staged.end_lsn)}", *filters)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "TZ": "UTC", "LC_ALL": "C"})
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.extend(proc.stderr or ()), daemon=True)
    reader.start()
    assert proc.stdout is not None
    _widen_pipe(proc.stdout.fileno())
    try:
        rest = b""
        while block := proc.stdout.read(1 << 20):
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                rest += block
                continue
            yield (rest + block[:cut]).decode("utf-8", "replace")
            rest = block[cut:]
        if rest:
            yield rest.decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=5)
    tail = b"".join(errors[-3:]).decode("utf-8", "replace").strip()
    if proc.returncode not in (0, 1, -9) or (proc.returncode == 1 and not _end_of_wal(tail)):
        raise PgToolFailed(argv, proc.returncode, tail)


def changes_by(tool: PgTool, staged: StagedWal, start_lsn: int, end_lsn: int,
               relation: RelFile, xids: Iterable[int]) -> int:
    """How many row versions of ``relation`` the transactions ``xids`` deleted or updated
    between ``start_lsn`` and ``end_lsn`` (pg_waldump filters by xid and file itself)."""
    total = 0
    for xid in xids:
        for chunk in waldump_chunks(
                tool, staged, start_lsn,
                [f"--relation={relation[0]}/{relation[1]}/{relation[2]}", "--fork=main",
                 f"--xid={xid}", "--rmgr=Heap"], end_lsn=end_lsn):
            total += sum(chunk.count(f"desc: {op} ") for op in ROW_CHANGES)
    return total


def _widen_pipe(fd: int) -> None:
    """Let pg_waldump run up to a megabyte ahead while Python reads a block (Linux: a pipe
    holds 64 KB by default, so the two would mostly take turns)."""
    try:
        size = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        fcntl.fcntl(fd, 1031, min(size, 1 << 20))  # F_SETPIPE_SZ
    except (OSError, ValueError):
        pass


def waldump_lines(tool: PgTool, staged: StagedWal, start_lsn: int, filters: Sequence[str],
                  ) -> Generator[str, None, None]:
    """:func:`waldump_chunks`, line by line (without the newline)."""
    chunks = waldump_chunks(tool, staged, start_lsn, filters)
    try:
        for chunk in chunks:
            yield from chunk.splitlines()
    finally:
        chunks.close()


def _end_of_wal(message: str) -> bool:
    return any(m in message for m in ("could not find file", "invalid record length",
                                       "invalid magic number", "invalid record offset",
                                       "record with incorrect prev-link", "end of WAL")) \
        or not message


def scan(tool: PgTool, staged: StagedWal, start_lsn: int, *,
         relation: RelFile | None = None, wanted: frozenset[str] | None = None,
         keep: Callable[[str], bool] | None = None) -> Generator[WalRecord, None, None]:
    """The records from ``start_lsn`` to the end of ``staged``, in LSN order.

    One pg_waldump run reads every segment once, keeping the heap, transaction and storage
    resource managers. With ``relation``, heap records of other files (and those ``keep``
    refuses) are dropped on a substring test before any parsing (pg_waldump's own
    ``--relation`` would also drop the commit records, and a second run beside it costs more
    than the test: measured in bench/walscan_bench.py).
    """
    # Heap2 holds pruning, vacuum and MULTI_INSERT: not needed to follow row changes.
    heap2 = [] if wanted is not None and not wanted & ROW_INSERTS else ["--rmgr=Heap2"]
    lines = waldump_lines(tool, staged, start_lsn,
                          ["--rmgr=Heap", *heap2, "--rmgr=Transaction", "--rmgr=Storage"])
    try:
        if relation is None:
            yield from _records(lines, wanted)
            return
        mine = f"rel {relation[0]}/{relation[1]}/{relation[2]} "
        other = ("rmgr: Transaction", "rmgr: Storage")
        yield from _records((line for line in lines
                             if (mine in line and (keep is None or keep(line)))
                             or line.startswith(other)), wanted)
    finally:  # a caller that stops early: pg_waldump is stopped now, not at exit
        lines.close()


def block_filter(blocks: set[int]) -> Callable[[str], bool]:
    """A ``keep`` for :func:`scan`: lines whose row is on one of ``blocks`` (a set the caller
    may grow while the scan runs, as followed rows move). The row's block is the last ``blk``
    of a line: a DELETE's or a HOT update's only one, an update's old page (``blkref #1``)."""
    names: set[str] = set()
    seen = -1

    def keep(line: str) -> bool:
        nonlocal seen
        if len(blocks) != seen:  # the set only grows
            names.update(str(b) for b in blocks)
            seen = len(blocks)
        tail = line[line.rfind(" blk ") + 5:]
        cut = tail.find(" ")
        return (tail if cut < 0 else tail[:cut]).rstrip(",") in names

    return keep


def _records(lines: Iterable[str], wanted: frozenset[str] | None = None
             ) -> Iterator[WalRecord]:
    for line in lines:
        record = parse_line(line, wanted)
        if record is not None:
            yield record


@contextlib.contextmanager
def staging_dir(work_dir: Path, os_user: str | None) -> Iterator[Path]:
    """A private directory for staged segments, removed afterwards."""
    make_dir(work_dir, os_user, mode=0o700)
    path = Path(tempfile.mkdtemp(prefix="walscan-", dir=work_dir))
    chown_for(path, os_user)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


__all__ = ["RelFile", "StagedWal", "WalRecord", "block_filter", "changes_by", "parse_line",
           "parse_lsn", "rel_path", "scan", "segment_name", "stage_segments", "staging_dir",
           "waldump_chunks", "waldump_lines"]

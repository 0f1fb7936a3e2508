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
import heapq
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from restorekit.errors import PgToolFailed, RestorePointError
from restorekit.models import format_lsn, parse_lsn
from restorekit.pg.tools import PgTool, chown_for, make_dir

log = logging.getLogger(__name__)

DEFAULT_TABLESPACE = 1663
GLOBAL_TABLESPACE = 1664

#: A relation's file: (tablespace oid, database oid, relfilenode), as pg_waldump prints it.
RelFile = tuple[int, int, int]

_HEADER = re.compile(
    r"rmgr: (\w+)\s+len \(rec/tot\):\s*\d+/\s*(\d+), tx:\s*(\d+), "
    r"lsn: ([0-9A-F]+)/([0-9A-F]+), prev [0-9A-F]+/[0-9A-F]+, desc: (.*)$")
_BLKREF = re.compile(r"blkref #(\d+): rel (\d+)/(\d+)/(\d+)(?: fork (\w+))? blk (\d+)")
_OFF = re.compile(r"\boff (\d+)")
_NEW_OFF = re.compile(r"; new off (\d+)")
_NTUPLES = re.compile(r"(\d+) tuples")
_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)(?: ([A-Z]+|[+-]\d\d(?::?\d\d)?))?")
_SUBXACTS = re.compile(r"subxacts:((?: \d+)+)")
_RELS = re.compile(r"\brels:((?: [^ ;]+)+)")
_SEGMENT = re.compile(r"^[0-9A-F]{24}$")

#: Heap operations that change or remove a row version, and those that add one.
ROW_CHANGES = frozenset({"DELETE", "UPDATE", "HOT_UPDATE"})
ROW_INSERTS = frozenset({"INSERT", "MULTI_INSERT"})


@dataclass(frozen=True, slots=True)
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


def parse_line(line: str) -> WalRecord | None:
    """A record from one pg_waldump line, or None when it is not one this module uses."""
    match = _HEADER.match(line)
    if match is None:
        return None
    rmgr, size, xid, hi, lo, desc = match.groups()
    lsn = (int(hi, 16) << 32) | int(lo, 16)
    op = desc.split(" ", 1)[0].split("+", 1)[0]  # INSERT+INIT is an INSERT
    if rmgr == "Transaction":
        if op not in ("COMMIT", "ABORT"):
            return None
        body = desc[len(op):].lstrip()
        subx = _SUBXACTS.search(body)
        rels = _RELS.search(body)
        paths = rels.group(1).split() if rels else ()
        dropped = tuple(r for r in map(rel_path, paths) if r)
        return WalRecord(lsn, int(xid), op, time=_time(body),
                         subxacts=tuple(int(x) for x in subx.group(1).split()) if subx else (),
                         dropped=dropped, size=int(size), line=line)
    if rmgr == "Storage":
        if op != "CREATE":
            return None
        return WalRecord(lsn, int(xid), op, rel=rel_path(desc.split(" ", 2)[1]),
                         size=int(size), line=line)
    if rmgr not in ("Heap", "Heap2") or (op not in ROW_CHANGES and op not in ROW_INSERTS):
        return None
    refs = _BLKREF.findall(desc)
    if not refs or (refs[0][4] and refs[0][4] != "main"):
        return None
    rel = (int(refs[0][1]), int(refs[0][2]), int(refs[0][3]))
    blk0 = int(refs[0][5])
    if op == "MULTI_INSERT":
        nt = _NTUPLES.search(desc)
        return WalRecord(lsn, int(xid), op, rel=rel, blk=blk0,
                         ntuples=int(nt.group(1)) if nt else 1, size=int(size), line=line)
    off_match = _OFF.search(desc)
    off = int(off_match.group(1)) if off_match else -1
    if op in ("UPDATE", "HOT_UPDATE"):
        # heap_update logs the new page as block 0 and the old page as block 1 when they
        # differ (a HOT update never leaves its page).
        new = _NEW_OFF.search(desc)
        old_blk = next((int(r[5]) for r in refs if r[0] == "1"), blk0)
        return WalRecord(lsn, int(xid), op, rel=rel, blk=old_blk, off=off, new_blk=blk0,
                         new_off=int(new.group(1)) if new else -1, size=int(size), line=line)
    return WalRecord(lsn, int(xid), op, rel=rel, blk=blk0, off=off, size=int(size), line=line)


# -- reading the archive ----------------------------------------------------------------------


def segment_name(timeline: int, lsn: int, segment_size: int = 16 * 1024 * 1024) -> str:
    per_id = 0x100000000 // segment_size
    number = lsn // segment_size
    return f"{timeline:08X}{number // per_id:08X}{number % per_id:08X}"


@dataclass(frozen=True, slots=True)
class StagedWal:
    """Archived segments copied into ``directory`` for pg_waldump: ``first`` .. ``last``."""

    directory: Path
    timeline: int
    first: str
    last: str
    bytes: int


def stage_segments(
    names: Sequence[str], fetch: Callable[[str, Path], None], directory: Path, *,
    timeline: int, start_lsn: int, os_user: str | None,
    progress: Callable[[int, int], None] | None = None,
) -> StagedWal:
    """Copy the contiguous run of ``timeline``'s archived segments from the one holding
    ``start_lsn`` into ``directory`` (each read from the archive once, verified by ``fetch``).

    Raises:
        RestorePointError: the segment holding ``start_lsn`` is not in the archive.
    """
    first = segment_name(timeline, start_lsn)
    mine = sorted(n for n in names if _SEGMENT.match(n) and n[:8] == f"{timeline:08X}"
                  and n >= first)
    if not mine or mine[0] != first:
        raise RestorePointError(
            f"WAL segment {first} (LSN {format_lsn(start_lsn)}) is not in the archive: the "
            "damage cannot be traced from there")
    run = [mine[0]]
    for name in mine[1:]:  # stop at a gap: pg_waldump could not cross it either
        if int(name[8:], 16) != int(run[-1][8:], 16) + 1 and not _next_id(run[-1], name):
            log.warning("the archive has a gap after %s: the WAL scan ends there", run[-1])
            break
        run.append(name)
    make_dir(directory, os_user, mode=0o700)
    total = 0
    for i, name in enumerate(run, 1):
        dest = directory / name
        fetch(name, dest)
        chown_for(dest, os_user)
        total += dest.stat().st_size
        if progress:
            progress(i, len(run))
    return StagedWal(directory, timeline, run[0], run[-1], total)


def _next_id(prev: str, name: str) -> bool:
    # 000000010000000100000000 follows 0000000100000000000000FF (16 MB segments).
    return int(name[8:16], 16) == int(prev[8:16], 16) + 1 and int(name[16:], 16) == 0


def waldump_lines(tool: PgTool, staged: StagedWal, start_lsn: int, filters: Sequence[str],
                  ) -> Iterator[str]:
    """The lines ``pg_waldump`` prints for ``staged`` from ``start_lsn`` (streamed).

    pg_waldump ends with an error at the end of the last segment ("could not find file" or
    "invalid record length"): that is the end of the archive, not a failure. Any other
    error is raised as :class:`PgToolFailed`.
    """
    argv = tool.argv("pg_waldump", f"--path={staged.directory}",
                     f"--timeline={staged.timeline}", f"--start={format_lsn(start_lsn)}",
                     *filters)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
                            bufsize=1 << 20)
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(proc.stderr or ()), daemon=True)
    reader.start()
    try:
        assert proc.stdout is not None
        yield from proc.stdout
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=5)
    tail = "".join(errors[-3:]).strip()
    if proc.returncode not in (0, 1, -9) or (proc.returncode == 1 and not _end_of_wal(tail)):
        raise PgToolFailed(argv, proc.returncode, tail)


def _end_of_wal(message: str) -> bool:
    return any(m in message for m in ("could not find file", "invalid record length",
                                       "invalid magic number", "invalid record offset",
                                       "record with incorrect prev-link", "end of WAL")) \
        or not message


def scan(tool: PgTool, staged: StagedWal, start_lsn: int, *,
         relation: RelFile | None = None) -> Iterator[WalRecord]:
    """The records from ``start_lsn`` to the end of ``staged``, in LSN order.

    With ``relation``, heap records of that file only: pg_waldump filters them itself
    (``--relation``), and a second pg_waldump run beside it reads the transaction and storage
    records (a relation filter would drop those); the two streams are merged by LSN.
    """
    if relation is None:
        yield from _records(waldump_lines(
            tool, staged, start_lsn,
            ["--rmgr=Heap", "--rmgr=Heap2", "--rmgr=Transaction", "--rmgr=Storage"]))
        return
    heap = waldump_lines(
        tool, staged, start_lsn,
        [f"--relation={relation[0]}/{relation[1]}/{relation[2]}", "--fork=main",
         "--rmgr=Heap", "--rmgr=Heap2"])
    xact = waldump_lines(tool, staged, start_lsn, ["--rmgr=Transaction", "--rmgr=Storage"])
    try:
        yield from heapq.merge(_records(heap), _records(xact), key=lambda r: r.lsn)
    finally:  # a caller that stops early: both pg_waldump runs are stopped now, not at exit
        heap.close()
        xact.close()


def _records(lines: Iterable[str]) -> Iterator[WalRecord]:
    for line in lines:
        record = parse_line(line)
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


__all__ = ["RelFile", "StagedWal", "WalRecord", "parse_line", "parse_lsn", "rel_path", "scan",
           "segment_name", "stage_segments", "staging_dir", "waldump_lines"]

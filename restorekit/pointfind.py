"""Follow rows through the WAL to the transaction that damaged them.

Pure logic over :class:`restorekit.walscan.WalRecord` streams (no database, no pg_waldump):

* :func:`trace_rows` follows given row versions (block, line pointer) from a copy made at a
  good point: an update that commits moves a row to its new place (HOT or not, across
  blocks); the first committed transaction that deletes one of them (or, for changed rows,
  updates one) is the damage. Records are told apart by transaction, so other writers on the
  same pages do not matter; an aborted transaction (or rolled-back subtransaction) moves
  nothing and damages nothing.
* :func:`trace_table` finds whole-table damage: the transaction with the most deletes of the
  table's rows, or the commit that removes the table's file (TRUNCATE, DROP TABLE, and also
  VACUUM FULL / CLUSTER, which the caller tells apart with a copy after it).
* :func:`count_writes` counts what was committed after a point: what a restore to it loses.

Records before ``after_lsn`` are read too: a transaction in flight at the good point may have
changed rows before it and commit after it; its commit is what counts.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from restorekit.walscan import ROW_CHANGES, RelFile, WalRecord, parse_line

Tid = tuple[int, int]
#: What a caller keeps per followed row (its key, say): moved along, never read.
_Row = TypeVar("_Row")

#: How many matched records a finding quotes as evidence.
EVIDENCE = 5


@dataclass(frozen=True, slots=True)
class Finding:
    """The damaging transaction as the WAL shows it."""

    xid: int
    commit_lsn: int
    commit_time: datetime | None
    rows_touched: int  # row versions of the table it deleted or updated
    matched: int  # of the followed rows
    what: str
    evidence: tuple[str, ...]
    subxacts: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class FileDropped:
    """A committed transaction removed the followed file: TRUNCATE or DROP TABLE (damage) or
    a rewrite (VACUUM FULL, CLUSTER, ALTER TABLE ... TYPE): only a copy after it can tell."""

    xid: int
    commit_lsn: int
    commit_time: datetime | None
    evidence: str


@dataclass(slots=True)
class Pending:
    """Row changes of transactions that have not committed yet, per xid."""

    ops: dict[int, list[WalRecord]] = field(default_factory=lambda: defaultdict(list))
    touched: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    #: New row versions a transaction's own updates of followed rows made (it may change
    #: them again before it commits).
    moved: dict[int, set[Tid]] = field(default_factory=lambda: defaultdict(set))

    def take(self, xids: Iterable[int]) -> tuple[list[WalRecord], int]:
        ops: list[WalRecord] = []
        touched = 0
        for xid in xids:
            ops.extend(self.ops.pop(xid, ()))
            touched += self.touched.pop(xid, 0)
            self.moved.pop(xid, None)
        ops.sort(key=lambda r: r.lsn)
        return ops, touched


def _commits(records: Iterable[WalRecord], pending: Pending, after_lsn: int,
             file_change: Callable[[WalRecord], None],
             ) -> Iterator[tuple[WalRecord, list[WalRecord], int]]:
    """Each COMMIT at or after ``after_lsn`` with the changes its transaction and its
    subtransactions filed (``file_change`` files every other record into ``pending``); an
    ABORT discards what its transaction filed; a commit before ``after_lsn`` is already in the
    copy made at the good point, so its changes are dropped."""
    for record in records:
        if record.op == "ABORT":
            pending.take((record.xid, *record.subxacts))
        elif record.op != "COMMIT":
            file_change(record)
        else:
            ops, touched = pending.take((record.xid, *record.subxacts))
            if record.lsn >= after_lsn:
                yield record, ops, touched


def trace_rows(
    records: Iterable[WalRecord], rel: RelFile, rows: dict[Tid, _Row], *,
    after_lsn: int, changed: bool = False, pending: Pending | None = None,
    blocks: set[int] | None = None,
) -> Finding | FileDropped | None:
    """The first transaction committed at or after ``after_lsn`` that deleted (``changed``:
    or updated) one of ``rows`` (where each followed row version is at the good point).

    ``rows`` is updated in place as committed updates move the rows, so a caller that meets a
    :class:`FileDropped` rewrite can re-read the rows on a copy and go on with the same
    stream, and a caller that finds a change was not the damage (another column) can call it
    again on the same stream with the same ``pending``. None when the stream ends first.
    ``blocks`` (the blocks of the followed rows, which a scan may filter lines on) grows with
    every place a followed row moves to; with such a filter ``rows_touched`` counts only the
    lines it let through (walscan.changes_by counts them all).
    """
    pending = pending if pending is not None else Pending()

    def file_change(record: WalRecord) -> None:
        if record.op in ROW_CHANGES and record.rel == rel:
            xid = record.xid
            pending.touched[xid] += 1
            # Only changes of followed rows are kept (a DELETE of the whole table must not be
            # held in memory row by row).
            if record.tid in rows or record.tid in pending.moved.get(xid, ()):
                pending.ops[xid].append(record)
                if record.op != "DELETE":
                    pending.moved[xid].add(record.new_tid)
                    if blocks is not None:
                        blocks.add(record.new_blk)

    for record, ops, touched in _commits(records, pending, after_lsn, file_change):
        hits: list[WalRecord] = []
        for change in ops:
            if change.tid not in rows:
                continue
            key = rows.pop(change.tid)
            if change.op == "DELETE":
                hits.append(change)
            else:  # the row moved to its new version (in this transaction, so it committed)
                if changed:
                    hits.append(change)
                rows[change.new_tid] = key
        if hits:
            kinds = sorted({h.op for h in hits})
            return Finding(
                xid=record.xid, commit_lsn=record.lsn, commit_time=record.time,
                rows_touched=touched, matched=len(hits),
                what=f"{'/'.join(kinds)} of {len(hits)} followed row version(s)",
                evidence=tuple(h.line.strip() for h in hits[:EVIDENCE])
                + (record.line.strip(),), subxacts=record.subxacts)
        if rel in record.dropped:
            return FileDropped(record.xid, record.lsn, record.time, record.line.strip())
    return None


@dataclass(slots=True)
class TableTrace:
    """State of :func:`trace_table` across a followed rewrite."""

    best: Finding | None = None


def trace_table(
    records: Iterable[WalRecord], rel: RelFile, *, after_lsn: int, state: TableTrace,
) -> Finding | FileDropped | None:
    """Whole-table damage: returns a :class:`FileDropped` at the first committed removal of
    the file (the caller decides: rewrite, then call again with the new file and the same
    ``state``; or damage); at the end of the stream, the committed transaction that deleted
    the most of the table's rows (``state.best``), or None when none deleted any.

    A transaction that deleted at least half the rows the table had at the good point, before
    a drop, is the damage rather than the drop (DELETE without WHERE, then DROP TABLE).
    """
    pending = Pending()

    def file_delete(record: WalRecord) -> None:
        if record.op == "DELETE" and record.rel == rel:
            pending.touched[record.xid] += 1
            if len(pending.ops[record.xid]) < EVIDENCE:  # the evidence, not every row
                pending.ops[record.xid].append(record)

    for record, ops, deleted in _commits(records, pending, after_lsn, file_delete):
        if deleted and (state.best is None or deleted > state.best.rows_touched):
            state.best = Finding(
                xid=record.xid, commit_lsn=record.lsn, commit_time=record.time,
                rows_touched=deleted, matched=deleted, what=f"DELETE of {deleted} row(s)",
                evidence=tuple(r.line.strip() for r in ops[:EVIDENCE]) + (record.line.strip(),))
        if rel in record.dropped:
            return FileDropped(record.xid, record.lsn, record.time, record.line.strip())
    return state.best


def mass_delete_first(state: TableTrace, rows_at_start: int) -> Finding | None:
    """The DELETE that emptied most of the table before it was dropped, if one did."""
    best = state.best
    if best is not None and rows_at_start and best.rows_touched * 2 >= rows_at_start:
        return best
    return None


# -- what a restore would lose ----------------------------------------------------------------

# One heap record: its transaction, operation, tuples (MULTI_INSERT) and file ("1663/5/16384").
# Read from whole blocks of pg_waldump's output at once (the regex engine skips to "tx: " in C),
# not per line. (No "^": a leading literal lets the engine jump; [^\n#]* cannot run into the
# next line.) Four groups, and [^,]+ for the LSNs: 0.75 s for 960k records where six groups
# and [0-9A-F/]+ took 0.97 s; this regex is most of what the loss count costs.
_HEAP_LINE = re.compile(
    r"tx: +(\d+), lsn: [^,]+, prev [^,]+, "
    r"desc: (INSERT|MULTI_INSERT|UPDATE|HOT_UPDATE|DELETE)(?:\+INIT)?(?: (\d+) tuples)?"
    r"[^\n#]*#0: rel (\S+) blk")
_XACT_LINE = re.compile(r"rmgr: Transaction [^\n]*")
_KIND = {"INSERT": 0, "MULTI_INSERT": 0, "UPDATE": 1, "HOT_UPDATE": 1, "DELETE": 2}


def count_writes(chunks: Iterable[str], *, after: Callable[[WalRecord], bool]) -> Writes:
    """Count the row changes of every transaction whose COMMIT satisfies ``after`` (a commit
    after the point), from blocks of pg_waldump output; aborted and unfinished transactions
    (and rolled-back subtransactions) lose nothing.

    The heap lines are tallied by a C-level regex and Counter, never a Python statement per
    line: this keeps pace with pg_waldump itself (bench/walscan_bench.py). A MULTI_INSERT's
    tuple count is part of its key and multiplied out per distinct key at the end."""
    counts: Counter[tuple[str, str, str, str]] = Counter()  # (xid, op, tuples, file) -> records
    commits: list[WalRecord] = []
    aborted: set[int] = set()
    for chunk in chunks:
        counts.update(_HEAP_LINE.findall(chunk))
        for line in _XACT_LINE.findall(chunk):
            record = parse_line(line)
            if record is None:
                continue
            if record.op == "ABORT":
                aborted.update((record.xid, *record.subxacts))
            else:
                commits.append(record)
    out = Writes()
    kept: dict[int, int] = {}  # xid (or subxact) -> the top-level xid whose commit is after
    for record in commits:
        if not after(record):
            continue
        out.transactions += 1
        if record.time is not None:
            out.first_commit = out.first_commit or record.time
            out.last_commit = record.time
        out.dropped.update(record.dropped)
        for x in (record.xid, *record.subxacts):
            if x not in aborted:
                kept[x] = record.xid
    for (xid, op, tuples, file), records in counts.items():
        if int(xid) in kept:
            t, d, r = file.split("/")
            out.per_file[(int(t), int(d), int(r))][_KIND[op]] += (
                records * int(tuples) if tuples else records)
    return out


@dataclass(slots=True)
class Writes:
    """Committed writes after a point, per file: inserted / updated / deleted row versions."""

    transactions: int = 0
    first_commit: datetime | None = None
    last_commit: datetime | None = None
    per_file: dict[RelFile, list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    dropped: set[RelFile] = field(default_factory=set)


__all__ = ["FileDropped", "Finding", "Pending", "TableTrace", "Writes", "count_writes",
           "mass_delete_first", "trace_rows", "trace_table"]

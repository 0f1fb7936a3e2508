"""pg_waldump lines (as PostgreSQL 15 prints them) into records, and the row-following logic
over record streams: the cases a real cluster cannot easily stage on demand (a transaction in
flight at the good point, a subtransaction rolled back, a record too wide for the padding)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from restorekit.errors import RestorePointError
from restorekit.models import RestorePoint
from restorekit.pointfind import (
    FileDropped,
    Finding,
    TableTrace,
    count_writes,
    mass_delete_first,
    trace_rows,
    trace_table,
)
from restorekit.walscan import TRACE_OPS, WalRecord, block_filter, parse_line, rel_path

REL = (1663, 5, 16384)
DELETE = ("rmgr: Heap        len (rec/tot):     54/    54, tx:        729, lsn: 0/01535730, "
          "prev 0/01535308, desc: DELETE off 2 flags 0x00 KEYS_UPDATED , blkref #0: rel "
          "1663/5/16384 blk 6")
UPDATE = ("rmgr: Heap        len (rec/tot):    290/   290, tx:        726, lsn: 0/02050CC0, "
          "prev 0/02050C88, desc: UPDATE off 150 xmax 726 flags 0x00 ; new off 51 xmax 0, "
          "blkref #0: rel 1663/5/16385 blk 270, blkref #1: rel 1663/5/16385 blk 42")
HOT = ("rmgr: Heap        len (rec/tot):     65/  4037, tx:        727, lsn: 0/0152FD78, "
       "prev 0/0152FD00, desc: HOT_UPDATE off 2 xmax 727 flags 0x20 ; new off 17 xmax 0, "
       "blkref #0: rel 1663/5/16384 blk 3 FPW")
MULTI = ("rmgr: Heap2       len (rec/tot):     57/  8229, tx:        724, lsn: 0/01504378, "
         "prev 0/01502368, desc: MULTI_INSERT+INIT 12 tuples flags 0x03, blkref #0: rel "
         "1663/5/2608 blk 3 FPW")
COMMIT = ("rmgr: Transaction len (rec/tot):     46/    46, tx:        728, lsn: 0/01537540, "
          "prev 0/01537508, desc: COMMIT 2026-12-06 22:19:01.617699 UTC; subxacts: 730 731")
DROP = ("rmgr: Transaction len (rec/tot):    361/   361, tx:        731, lsn: 0/0153D828, "
        "prev 0/0153D798, desc: COMMIT 2026-12-06 22:19:01.620149 UTC; rels: base/5/16388 "
        "pg_tblspc/16400/PG_15_202209061/5/16384; inval msgs: catcache 55 relcache 16384")
VM = ("rmgr: Heap2       len (rec/tot):     64/  8256, tx:          0, lsn: 0/04C57B10, "
      "prev 0/04C579E8, desc: VISIBLE cutoff xid 12993 flags 0x01, blkref #0: rel "
      "1663/5/16385 fork vm blk 0 FPW, blkref #1: rel 1663/5/16385 blk 1")
WIDE = ("rmgr: Heap        len (rec/tot):  123456/123456, tx:        729, lsn: 0/01535730, "
        "prev 0/01535308, desc: DELETE off 9 flags 0x00 KEYS_UPDATED , blkref #0: rel "
        "1663/5/16384 blk 6 FPW")


def test_heap_lines_give_the_row_and_where_an_update_moved_it() -> None:
    d = parse_line(DELETE)
    assert (d.op, d.xid, d.rel, d.tid, d.lsn_text, d.size) == (
        "DELETE", 729, REL, (6, 2), "0/1535730", 54)
    u = parse_line(UPDATE)
    assert (u.op, u.tid, u.new_tid) == ("UPDATE", (42, 150), (270, 51))  # old page is #1
    h = parse_line(HOT)
    assert (h.op, h.tid, h.new_tid) == ("HOT_UPDATE", (3, 2), (3, 17))  # FPW does not confuse
    m = parse_line(MULTI)
    assert (m.op, m.ntuples, m.rel) == ("MULTI_INSERT", 12, (1663, 5, 2608))
    assert parse_line(WIDE).tid == (6, 9)  # "123456/123456," has no space in it
    assert parse_line(VM) is None  # not a row change
    assert parse_line(DELETE, TRACE_OPS) is not None and parse_line(MULTI, TRACE_OPS) is None
    assert parse_line("pg_waldump: error: something") is None


def test_commit_lines_give_time_subtransactions_and_dropped_files() -> None:
    c = parse_line(COMMIT)
    assert c.time == datetime(2026, 12, 6, 22, 19, 1, 617699, tzinfo=UTC)
    assert c.subxacts == (730, 731)
    assert parse_line(DROP).dropped == ((1663, 5, 16388), (16400, 5, 16384))
    assert rel_path("global/1262") == (1664, 0, 1262) and rel_path("nonsense") is None


def test_block_filter_follows_a_growing_set() -> None:
    blocks = {6}
    keep = block_filter(blocks)
    assert keep(DELETE) and not keep(UPDATE)
    blocks.add(42)
    assert keep(UPDATE)  # the old page of the update


def rec(lsn: int, xid: int, op: str, tid: tuple[int, int] = (-1, -1),
        new: tuple[int, int] = (-1, -1), **kw: object) -> WalRecord:
    return WalRecord(lsn, xid, op, rel=REL if op not in ("COMMIT", "ABORT") else None,
                     blk=tid[0], off=tid[1], new_blk=new[0], new_off=new[1],
                     line=f"{op} {xid}", **kw)  # type: ignore[arg-type]


def test_a_transaction_in_flight_at_the_good_point_is_judged_by_its_commit() -> None:
    # xid 10 deleted the row BEFORE the good point (lsn 100) and committed after it: the copy
    # still shows the row, so 10 is the damage. xid 9 committed before: already in the copy.
    stream = [rec(50, 9, "UPDATE", (0, 1), (0, 7)), rec(60, 9, "COMMIT"),
              rec(70, 10, "DELETE", (0, 2)), rec(150, 11, "DELETE", (0, 3)),
              rec(160, 11, "ABORT"), rec(170, 10, "COMMIT")]
    found = trace_rows(iter(stream), REL, {(0, 2): ("k",), (0, 3): ("j",)}, after_lsn=100)
    assert isinstance(found, Finding) and found.xid == 10 and found.matched == 1


def test_updates_move_rows_and_a_rolled_back_savepoint_does_nothing() -> None:
    rows = {(0, 1): ("k",)}
    stream = [rec(110, 20, "HOT_UPDATE", (0, 1), (0, 5)), rec(111, 20, "COMMIT"),
              rec(120, 22, "DELETE", (0, 5)), rec(121, 22, "ABORT"),  # subxact rolled back
              rec(130, 23, "UPDATE", (0, 5), (4, 1)), rec(131, 23, "DELETE", (4, 1)),
              rec(140, 21, "COMMIT", subxacts=(22, 23))]
    found = trace_rows(iter(stream), REL, rows, after_lsn=100)
    assert isinstance(found, Finding) and found.xid == 21
    assert "DELETE" in found.what and rows == {}


def test_changed_rows_stop_at_the_first_committed_update() -> None:
    stream = [rec(110, 30, "UPDATE", (0, 1), (2, 2)), rec(111, 30, "COMMIT")]
    assert trace_rows(iter(stream), REL, {(0, 1): ("k",)}, after_lsn=100) is None
    found = trace_rows(iter(stream), REL, {(0, 1): ("k",)}, after_lsn=100, changed=True)
    assert isinstance(found, Finding) and found.xid == 30


def test_a_dropped_file_is_handed_back_and_whole_table_damage_picks_the_big_delete() -> None:
    dropped = rec(200, 40, "COMMIT", dropped=(REL,))
    assert isinstance(trace_rows(iter([dropped]), REL, {(0, 1): ("k",)}, after_lsn=100),
                      FileDropped)
    state = TableTrace()
    stream = [rec(110, 50, "DELETE", (0, 1)), rec(111, 50, "COMMIT"),
              *[rec(120 + i, 51, "DELETE", (1, i)) for i in range(1, 8)], rec(130, 51, "COMMIT"),
              dropped]
    result = trace_table(iter(stream), REL, after_lsn=100, state=state)
    assert isinstance(result, FileDropped)
    assert state.best is not None and state.best.xid == 51 and state.best.rows_touched == 7
    assert mass_delete_first(state, rows_at_start=10) is state.best  # DELETE all, then DROP
    assert mass_delete_first(state, rows_at_start=100) is None  # the drop is the damage


def test_count_writes_counts_only_what_committed_after_the_point() -> None:
    lines = "\n".join([
        UPDATE.replace("tx:        726", "tx:        800"),
        DELETE.replace("tx:        729", "tx:        801"),
        MULTI.replace("tx:        724", "tx:        801"),
        COMMIT.replace("tx:        728", "tx:        800").replace("; subxacts: 730 731", ""),
        "rmgr: Transaction len (rec/tot):     34/    34, tx:        801, lsn: 0/0A000000, "
        "prev 0/01537540, desc: ABORT 2026-12-06 22:20:00.000000 UTC",
    ]) + "\n"
    writes = count_writes([lines], after=lambda r: True)
    assert writes.transactions == 1
    assert dict(writes.per_file) == {(1663, 5, 16385): [0, 1, 0]}  # the aborted 801 is not lost
    assert count_writes([lines], after=lambda r: False).transactions == 0


def test_count_writes_adds_up_repeated_records_and_multi_insert_tuples() -> None:
    """Records of one transaction, kind and file are counted as often as they occur, and a
    MULTI_INSERT as its tuples (12 each); a subtransaction's writes count for its parent."""
    commit = COMMIT.replace("tx:        728", "tx:        724")
    lines = "\n".join([
        MULTI, MULTI,
        DELETE.replace("tx:        729", "tx:        724"),
        DELETE.replace("tx:        729", "tx:        724"),
        DELETE.replace("tx:        729", "tx:        731"),  # subxact 731 of 724
        HOT.replace("tx:        727", "tx:        730"),  # subxact 730 of 724
        commit,
    ]) + "\n"
    writes = count_writes([lines], after=lambda r: True)
    assert writes.transactions == 1
    assert dict(writes.per_file) == {(1663, 5, 2608): [24, 0, 0], (1663, 5, 16384): [0, 1, 3]}


def test_before_xid_points_round_trip_with_their_commit_lsn() -> None:
    point = RestorePoint.before_xid(733, commit_lsn="0/15498D8")
    assert str(point) == "before-xid:733@0/15498D8"
    assert RestorePoint.parse(str(point)) == point and not point.inclusive
    assert RestorePoint.parse("before-xid:733").commit_lsn is None
    with pytest.raises(Exception, match="xid must be a number"):
        RestorePoint.parse("before-xid:abc")


@pytest.mark.parametrize("mb", [1, 16, 64])
def test_staging_reads_the_segment_size_from_the_archive(tmp_path, mb: int) -> None:
    """The archive of a cluster with ``mb`` MB segments: the segment holding the start LSN is
    found (another size's name for that LSN may be archived too, and is refused by its size),
    and the staged run ends just past the last segment."""
    from restorekit.wal import segment_file
    from restorekit.walscan import stage_segments

    size = mb * 1024 * 1024
    names = [segment_file(1, n, size) for n in range(0, 40)]
    fetched: list[str] = []

    def fetch(name: str, dest) -> None:
        fetched.append(name)
        with open(dest, "wb") as segment:  # sparse: only its size matters here
            segment.truncate(size)

    start = 13 * size + 40  # in segment 13 at this size; in another one at any other size
    staged = stage_segments(names, fetch, tmp_path / "staged", timeline=1, start_lsn=start,
                            os_user=None)
    assert staged.first == segment_file(1, 13, size) and staged.last == names[-1]
    assert staged.segment_size == size and staged.end_lsn == 40 * size
    assert fetched[-27:] == names[13:]
    assert len(fetched) <= 27 + 2  # at most the wrong-sized guesses before it
    with pytest.raises(RestorePointError, match="not in the archive"):
        stage_segments(names[14:], fetch, tmp_path / "none", timeline=1, start_lsn=start,
                       os_user=None)

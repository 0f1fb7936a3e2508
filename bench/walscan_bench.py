"""WAL scan benchmark: finding the damaging transaction, and counting what a restore would
lose, against pg_waldump alone reading the same archived segments, at two WAL volumes.

A local cluster archives its WAL (archive_command cp) while a write workload runs on a table
of --rows rows: set-based updates (HOT and not), inserts and deletes in each transaction, every
13th rolled back, until --wal-mb of WAL was written after a "good point" (where the followed rows'
ctids are read, as restorekit reads them on a copy). Then one transaction deletes the followed
rows (the damage) and a little more traffic follows. Then, --repeat times, rotating the order:

  pg_waldump     : pg_waldump over the archived segments from the good point to the end of
                   the last one, every record printed, to /dev/null (the tool alone)
  find point     : restorekit's scan as find_point runs it: stage the segments from the archive
                   (a copy, as the repository's verified fetch makes), one pg_waldump of the
                   heap, transaction and storage records, lines of other tables and of blocks
                   holding no followed row dropped unparsed, and the rows followed
                   (trace_rows); must find the damage's xid
  what is lost   : restorekit's loss count: the same staging, one pg_waldump of the heap,
                   transaction and storage records, every row change counted per transaction
                   and file (count_writes); must count the traffic after the damage

Prints MB of WAL per second and each ratio to pg_waldump (target: within 1.5x), at --wal-mb and
4x, with how each time grew against the WAL (exponent: 1 = linear in the WAL, which is what a
scan that reads each segment once should show; the database size does not enter).

    python bench/walscan_bench.py                    # 48 MB and 192 MB of WAL, 3 rounds
    python bench/walscan_bench.py --wal-mb 256 --repeat 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # bench/_common.py, beside this script
import psycopg

from restorekit.models import parse_lsn
from restorekit.pg.cluster import LocalCluster
from restorekit.pg.tools import PgTool, default_os_user, make_dir
from restorekit.pointfind import count_writes, trace_rows
from restorekit.providers.wal_history import LOSS_FILTERS
from restorekit.walscan import (
    TRACE_OPS,
    StagedWal,
    block_filter,
    scan,
    stage_segments,
    waldump_chunks,
)

VARIANTS = ("pg_waldump", "find point", "what is lost")
SEED = 7


def workload(conn: psycopg.Connection, rows: int, wal_bytes: int) -> None:
    """Mixed writes until ``wal_bytes`` of WAL were written: per transaction, HOT and non-HOT
    updates of a range of rows, inserts and deletes (set-based, so the WAL grows quickly);
    every 13th transaction rolls back."""
    start = parse_lsn(str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]))
    i = 0
    while True:
        i += 1
        k = (i * 7919) % rows + 1
        with conn.transaction(force_rollback=i % 13 == 0):
            conn.execute("UPDATE busy SET balance = balance + 1 WHERE id BETWEEN %s AND %s",
                         (k, k + 40))
            conn.execute("UPDATE busy SET note = repeat('u', 200 + %s %% 50) WHERE id BETWEEN "
                         "%s AND %s", (i, k + 41, k + 60))
            conn.execute("INSERT INTO busy (balance, note) SELECT 0, 'new' FROM "
                         "generate_series(1, 20)")
            # The 20 rows just inserted, by their ids: finding them as "the newest 'new' rows"
            # walked every dead index entry the earlier rounds left (quadratic: a 960 MB run
            # spent over 15 min in this statement).
            last = conn.execute("SELECT currval(pg_get_serial_sequence('busy', 'id'))"
                                ).fetchone()[0]
            conn.execute("DELETE FROM busy WHERE id > %s", (last - 20,))  # an index range
        if i % 20 == 0:
            now = parse_lsn(str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]))
            if now - start >= wal_bytes:
                return


def build(root: Path, rows: int, wal_mb: int) -> dict[str, Any]:
    os_user = default_os_user()
    archive = make_dir(root / "archive", os_user, mode=0o755)
    cluster = LocalCluster.create(root / "data", settings={
        "wal_level": "replica", "archive_mode": "on",
        "archive_command": f"test ! -f {archive}/%f && cp %p {archive}/%f",
        "max_wal_size": "4GB", "checkpoint_timeout": "30min", "shared_buffers": "256MB"})
    cluster.start()
    with cluster.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE busy (id bigserial PRIMARY KEY, balance int, note text)")
        conn.execute("INSERT INTO busy (balance, note) SELECT 0, 'x' FROM "
                     "generate_series(1, %s)", (rows,))
        conn.execute("CHECKPOINT")
        good = parse_lsn(str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]))
        victims = conn.execute("SELECT ctid::text, id FROM busy WHERE id % 997 = 0").fetchall()
        rel = conn.execute(
            "SELECT coalesce(nullif(reltablespace, 0), 1663), (SELECT oid FROM pg_database "
            "WHERE datname = current_database()), pg_relation_filenode('busy') FROM pg_class "
            "WHERE relname = 'busy'").fetchone()
        workload(conn, rows, wal_mb * 1024 * 1024)
        with conn.transaction():
            damage = int(conn.execute("SELECT txid_current()").fetchone()[0])
            conn.execute("DELETE FROM busy WHERE id % 997 = 0")
        conn.execute("INSERT INTO busy (balance, note) SELECT 1, 'after' FROM "
                     "generate_series(1, 100)")
        end = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        end_lsn = parse_lsn(str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]))
        conn.execute("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 120
    while not (archive / end).exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{end} was not archived")
        time.sleep(0.2)
    cluster.stop()
    shutil.rmtree(cluster.data_dir)
    tids = {tuple(int(x) for x in t.strip("()").split(",")): (str(k),) for t, k in victims}
    return {"archive": archive, "good": good, "rel": tuple(int(x) for x in rel),
            "tids": tids, "damage": damage, "os_user": os_user, "wal_after_good": end_lsn - good}


def run_variant(variant: str, world: dict[str, Any], tool: PgTool, work: Path) -> float:
    archive: Path = world["archive"]
    names = sorted(p.name for p in archive.iterdir() if len(p.name) == 24)
    if variant == "pg_waldump":
        started = time.perf_counter()
        with open("/dev/null", "w") as devnull:
            end = StagedWal(archive, 1, names[0], names[-1], 0).end_lsn
            subprocess.run(tool.argv("pg_waldump", f"--path={archive}",
                                     f"--start={_lsn(world['good'])}", f"--end={_lsn(end)}"),
                           stdout=devnull, stderr=subprocess.DEVNULL, check=False)
        return time.perf_counter() - started
    stage = Path(tempfile.mkdtemp(dir=work))
    try:
        started = time.perf_counter()
        staged = stage_segments(names, lambda n, d: shutil.copyfile(archive / n, d), stage,
                                timeline=1, start_lsn=world["good"], os_user=world["os_user"])
        if variant == "find point":
            rows = dict(world["tids"])
            blocks = {b for b, _ in rows}
            found = trace_rows(scan(tool, staged, world["good"], relation=world["rel"],
                                    wanted=TRACE_OPS, keep=block_filter(blocks)),
                               world["rel"], rows, after_lsn=world["good"], blocks=blocks)
            took = time.perf_counter() - started
            if getattr(found, "xid", None) != world["damage"]:
                raise SystemExit(f"find point found {found}, expected xid {world['damage']}")
            return took
        writes = count_writes(waldump_chunks(tool, staged, world["good"], LOSS_FILTERS),
                              after=lambda r: r.xid >= world["damage"])
        took = time.perf_counter() - started
        if writes.transactions < 2:
            raise SystemExit(f"what is lost counted {writes.transactions} transactions")
        return took
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wal-mb", type=int, default=48, help="WAL after the good point")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    load_before = _common.loadavg()
    results = []
    root = Path(tempfile.mkdtemp(prefix="walscan-bench-"))
    make_dir(root, default_os_user(), mode=0o755)
    tool = PgTool(os_user=default_os_user())
    try:
        for size in (args.wal_mb, args.wal_mb * 4):
            print(f"\n== {size} MB of WAL after the good point ==", flush=True)
            world = build(root / f"w{size}", args.rows, size)
            wal_bytes = world["wal_after_good"]
            times, _ = _common.timed_rounds(
                VARIANTS, args.repeat, lambda v, w=world: run_variant(v, w, tool, root))
            median = {v: statistics.median(t) for v, t in times.items()}
            mb = wal_bytes / 1e6
            print(f"{'variant':<14}{'median s':>10}{'MB/s':>9}{'vs pg_waldump':>15}")
            for v in VARIANTS:
                print(f"{v:<14}{median[v]:>10.3f}{mb / median[v]:>9.1f}"
                      f"{median[v] / median['pg_waldump']:>15.2f}")
            results.append({"scale": size, "wal_bytes_after_good_point": wal_bytes, "times": times,
                            "median_seconds": median,
                            "ratio_to_pg_waldump": {v: median[v] / median["pg_waldump"]
                                                    for v in VARIANTS}})
            shutil.rmtree(root / f"w{size}", ignore_errors=True)
        growth = _common.print_growth(results, VARIANTS, lambda r: r["wal_bytes_after_good_point"],
                                      "WAL MB")
        out = {"benchmark": "walscan", "when": time.time(), "loadavg_before": load_before,
               "loadavg_after": _common.loadavg(), "rows": args.rows, "results": results,
               "growth": growth}
        _common.save("walscan", out, args.out, load_before)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

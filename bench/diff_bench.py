"""Row-diff benchmark: restorekit's range-checksum diff of a mostly-equal table against
restorekit's full diff, reladiff (PyPI) and a lower bound, all in the same run.

Two local clusters hold the sample schema generated with the same seed at --scale: "copy" (the
restored copy) and "live". Then --fraction of the live ``appointments`` rows change: a third
updated (``notes``), a third deleted, a third inserted (new ids). Then, --repeat times, rotating
the order each round, each variant diffs ``appointments`` between the two clusters:

  restorekit range : diff_table(live, copy, appointments, method="range"): per-range count and
                     hash sum on both servers at once, only the ranges that differ split and
                     re-summed, then only their (key, md5) pairs streamed and full-joined on live
  restorekit full  : diff_table(..., method="full"): every (key, md5) pair of the copy streamed
                     into a live temp table, one full join
  reladiff         : the reladiff CLI (its own process; default bisection factor 32 and
                     threshold 16384, one thread per database), ``-k id -c %`` so every column
                     is compared, ``--stats --json``; ``--skip-sort-results`` because 0.6.0 fails
                     sorting rows that hold NULLs ("'<' not supported between 'str' and
                     'NoneType'"). Its process start is timed too (reported on its own line)
  lower bound      : one sequential scan of each side, both at once:
                     SELECT count(*), sum(hashtext(t::text)) FROM appointments t
  record-hash scan : (for reference, not a target) the same scan hashing typed values with
                     hash_record_extended(t, 0), as restorekit's first pass does for columns whose
                     equality is identity of their text (every column of appointments): the
                     cheapest pass over both tables that still reads every row

Every run is checked before its time is kept: missing, extra and changed must equal the rows
deleted, inserted and updated (and restorekit's key samples the lowest of those keys; the range
result must equal the full one); the lower bound's row counts must match. A wrong answer stops
the benchmark with a non-zero exit before any time is printed. Nothing here asserts on time.

Connections are open before the clock starts (reladiff opens its own). The caches are warm (each
variant reads both tables once before the timed rounds). Other work on the machine shows up in
the numbers: the load average before and after is recorded.

With --scales S1,S2,... the whole comparison runs at each scale and each variant's time growth
is printed next to the data's growth. Results go to bench/results/diff-<UTC timestamp>.json.

reladiff pins its own dependency versions; install it into a throwaway virtualenv and point
--reladiff at it:

    python -m venv /tmp/reladiff && /tmp/reladiff/bin/pip install reladiff psycopg2-binary
    python bench/diff_bench.py --reladiff /tmp/reladiff/bin/reladiff --scale 10 --repeat 5
    python bench/diff_bench.py --reladiff /tmp/reladiff/bin/reladiff --scales 5,20 --repeat 3
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import _common  # bench/_common.py, beside this script
import psycopg

from restorekit.diff import SAMPLE_SIZE, TableDiff, diff_table
from restorekit.pg.catalog import TableRef
from restorekit.pg.cluster import LocalCluster

DB = "app"
SEED = 42
APPOINTMENTS = TableRef("public", "appointments")
VARIANTS = ("restorekit range", "restorekit full", "reladiff", "lower bound", "record-hash scan")
LOWER_BOUND = "SELECT count(*), sum(hashtext(t::text)) FROM public.appointments AS t"
RECORD_HASH_SCAN = "SELECT count(*), sum(hash_record_extended(t, 0)) FROM public.appointments AS t"
# Production-like: fsync on (LocalCluster default), room for the data in shared buffers.
SETTINGS = {"max_wal_size": "8GB", "checkpoint_timeout": "30min", "shared_buffers": "512MB"}




# -- the data ------------------------------------------------------------------------------------


def build(cluster: LocalCluster, scale: float) -> dict[str, int]:
    return _common.build_sample(cluster, scale, db=DB, seed=SEED)


class Truth:
    """The changes made on live, which every variant must find exactly."""

    def __init__(self, deleted: list[int], inserted: list[int], updated: list[int],
                 live_rows: int, copy_rows: int) -> None:
        self.missing, self.extra, self.changed = sorted(deleted), sorted(inserted), sorted(updated)
        self.live_rows, self.copy_rows = live_rows, copy_rows

    @property
    def counts(self) -> tuple[int, int, int]:
        return len(self.missing), len(self.extra), len(self.changed)

    def check_restorekit(self, variant: str, diff: TableDiff) -> None:
        got = (diff.missing, diff.extra, diff.changed)
        if got != self.counts:
            raise SystemExit(f"{variant}: (missing, extra, changed) = {got}, expected "
                             f"{self.counts}")
        for name, keys, sample_keys in (("missing", self.missing, diff.missing_keys_sample),
                                        ("extra", self.extra, diff.extra_keys_sample),
                                        ("changed", self.changed, diff.changed_keys_sample)):
            if [k for (k,) in sample_keys] != keys[:SAMPLE_SIZE]:
                raise SystemExit(f"{variant}: {name} sample {sample_keys} is not the lowest "
                                 f"{SAMPLE_SIZE} of {keys[:SAMPLE_SIZE]}...")

    def to_dict(self) -> dict[str, Any]:
        return {"missing": len(self.missing), "extra": len(self.extra),
                "changed": len(self.changed), "live_rows": self.live_rows,
                "copy_rows": self.copy_rows}


def change_live(conn: psycopg.Connection, rows: int, fraction: float) -> Truth:
    """Update, delete and insert a third of ``fraction`` of the appointments each (disjoint,
    spread at random over the key space; the inserts get new ids at its end)."""
    n = max(3, round(rows * fraction)) // 3
    ids = random.Random(SEED).sample(range(1, rows + 1), 2 * n)
    updated, deleted = ids[:n], ids[n:]
    with conn.transaction():
        conn.execute("UPDATE appointments SET notes = 'bench: changed ' || id "
                     "WHERE id = ANY(%s)", [updated])
        conn.execute("DELETE FROM appointments WHERE id = ANY(%s)", [deleted])
        inserted = [r[0] for r in conn.execute(
            "INSERT INTO appointments (user_id, client_id, starts_at, notes) "
            "SELECT user_id, id, timestamptz '2025-06-01 09:00+00' + id * interval '1 hour', "
            "'bench: new' FROM clients ORDER BY id LIMIT %s RETURNING id", [n]).fetchall()]
    conn.execute("VACUUM ANALYZE appointments")
    return Truth(deleted, inserted, updated, rows - len(deleted) + len(inserted), rows)


# -- the variants --------------------------------------------------------------------------------


class Context:
    def __init__(self, live: LocalCluster, copy: LocalCluster, live_conn: psycopg.Connection,
                 copy_conn: psycopg.Connection, truth: Truth, reladiff: str | None) -> None:
        self.live, self.copy, self.live_conn, self.copy_conn = live, copy, live_conn, copy_conn
        self.truth, self.reladiff = truth, reladiff
        self.pool = ThreadPoolExecutor(2)
        self.last: dict[str, Any] = {}


def run_range(ctx: Context) -> float:
    started = time.perf_counter()
    diff = diff_table(ctx.live_conn, ctx.copy_conn, APPOINTMENTS, method="range")
    elapsed = time.perf_counter() - started
    ctx.truth.check_restorekit("restorekit range", diff)
    assert diff.stats is not None
    ctx.last["restorekit range"] = diff.stats.to_dict()
    ctx.last["range result"] = diff
    return elapsed


def run_full(ctx: Context) -> float:
    started = time.perf_counter()
    diff = diff_table(ctx.live_conn, ctx.copy_conn, APPOINTMENTS, method="full")
    elapsed = time.perf_counter() - started
    ctx.truth.check_restorekit("restorekit full", diff)
    if "range result" in ctx.last and ctx.last["range result"] != diff:
        raise SystemExit(f"range and full results differ: {ctx.last['range result']} != {diff}")
    assert diff.stats is not None
    ctx.last["restorekit full"] = diff.stats.to_dict()
    return elapsed


def reladiff_argv(ctx: Context) -> list[str]:
    assert ctx.reladiff is not None
    return [ctx.reladiff, ctx.live.url(DB), "appointments", ctx.copy.url(DB), "appointments",
            "-k", "id", "-c", "%", "--stats", "--json", "--skip-sort-results"]


def run_reladiff(ctx: Context) -> float:
    started = time.perf_counter()
    done = subprocess.run(reladiff_argv(ctx), capture_output=True, text=True, timeout=3600)
    elapsed = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"reladiff exited {done.returncode}: {done.stderr[-2000:]}")
    stats = json.loads(done.stdout)
    # A is live, B the copy: rows only in A are extra, rows only in B missing. (Its rows_A
    # leaves out the rows above the copy's highest key, though it does report them as
    # exclusive to A; so only the three counts are checked.)
    got = (stats["exclusive_B"], stats["exclusive_A"], stats["updated"])
    if got != ctx.truth.counts:
        raise SystemExit(f"reladiff: (missing, extra, changed) = {got}, expected "
                         f"{ctx.truth.counts}; {stats}")
    ctx.last["reladiff"] = stats
    return elapsed


def scan_both(ctx: Context, query: str) -> float:
    """``query`` on both sides at once; its time, after checking the row counts."""
    started = time.perf_counter()
    futures = [ctx.pool.submit(lambda c=c: c.execute(query).fetchone())
               for c in (ctx.live_conn, ctx.copy_conn)]
    (live_n, _), (copy_n, _) = (f.result() for f in futures)
    elapsed = time.perf_counter() - started
    if (live_n, copy_n) != (ctx.truth.live_rows, ctx.truth.copy_rows):
        raise SystemExit(f"{query}: counted {live_n}/{copy_n} rows, expected "
                         f"{ctx.truth.live_rows}/{ctx.truth.copy_rows}")
    return elapsed


RUNNERS: dict[str, Callable[[Context], float]] = {
    "restorekit range": run_range, "restorekit full": run_full, "reladiff": run_reladiff,
    "lower bound": lambda ctx: scan_both(ctx, LOWER_BOUND),
    "record-hash scan": lambda ctx: scan_both(ctx, RECORD_HASH_SCAN),
}


# -- one comparison at one scale -----------------------------------------------------------------


def compare(live: LocalCluster, copy: LocalCluster, scale: float, fraction: float, repeat: int,
            reladiff: str | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    rows = _common.build_both(live, copy, lambda c: build(c, scale))
    variants = [v for v in VARIANTS if reladiff or v != "reladiff"]
    with psycopg.connect(live.dsn(DB), autocommit=True) as live_conn, \
            psycopg.connect(copy.dsn(DB), autocommit=True) as copy_conn:
        truth = change_live(live_conn, rows["appointments"], fraction)
        setup = time.perf_counter() - t0
        print(f"scale {scale:g}: {rows} generated in both clusters; on live "
              f"{truth.to_dict()} ({setup:.0f}s)", flush=True)
        database_bytes = live_conn.execute(
            "SELECT pg_total_relation_size('appointments')").fetchone()[0]
        ctx = Context(live, copy, live_conn, copy_conn, truth, reladiff)
        for variant in variants:  # warm the caches; and a wrong answer stops here already
            RUNNERS[variant](ctx)
        # Each runner checks its result before it returns its time.
        times, runs_wall = _common.timed_rounds(variants, repeat,
                                                lambda variant: RUNNERS[variant](ctx))
        plan = [r[0] for r in live_conn.execute("EXPLAIN " + LOWER_BOUND).fetchall()]
        jit = live_conn.execute("SHOW jit").fetchone()[0]
        ctx.pool.shutdown()
    medians = {v: statistics.median(ts) for v, ts in times.items()}
    base = medians["restorekit range"]
    result: dict[str, Any] = {
        "scale": scale, "rows": rows, "appointments_bytes": database_bytes,
        "changes": truth.to_dict(), "fraction": fraction, "repeat": repeat,
        "setup_seconds": setup, "runs_wall_seconds": runs_wall,
        "seconds": times, "median_seconds": medians,
        "ratio_vs_restorekit_range": {v: medians[v] / base for v in variants},
        "restorekit_range_stats": ctx.last["restorekit range"],
        "restorekit_full_stats": ctx.last["restorekit full"],
        "lower_bound_plan": plan, "jit": jit,
    }
    if reladiff:
        result["reladiff_stats"] = ctx.last["reladiff"]
        started = time.perf_counter()
        subprocess.run([reladiff, "--version"], capture_output=True, check=True)
        result["reladiff_process_start_seconds"] = time.perf_counter() - started
    return result


def print_table(r: dict[str, Any]) -> None:
    m, ratio = r["median_seconds"], r["ratio_vs_restorekit_range"]
    ch = r["changes"]
    print(f"\nscale {r['scale']:g}: appointments {r['rows']['appointments']:,} rows "
          f"({r['appointments_bytes'] / 2**20:.0f} MiB); live changed: {ch['changed']} updated, "
          f"{ch['missing']} deleted, {ch['extra']} inserted ({100 * r['fraction']:g} %)")
    _common.print_medians(list(m), m, ratio, width=18, ratio_title="x restorekit range",
                          ratio_width=20)
    lb = m["lower bound"]
    print(f"restorekit range / lower bound = {m['restorekit range'] / lb:.2f}  (target <= 2); "
          f"/ record-hash scan = {m['restorekit range'] / m['record-hash scan']:.2f}")
    if "reladiff" in m:
        print(f"reladiff / restorekit range = {ratio['reladiff']:.1f}  (target >= 3); reladiff "
              f"downloaded {r['reladiff_stats']['stats'].get('rows_downloaded')} rows, its "
              f"process start takes {r['reladiff_process_start_seconds']:.2f}s")
    s = r["restorekit_range_stats"]
    print(f"restorekit range: first pass by {s['first_pass']}, {s['levels']} levels, "
          f"{s['ranges_compared']} ranges summed per side, {s['leaf_ranges']} fetched, "
          f"{s['rows_staged']} (key, md5) pairs streamed (full: "
          f"{r['restorekit_full_stats']['rows_staged']})")


def print_growth(results: list[dict[str, Any]]) -> dict[str, Any]:
    return _common.print_growth(results, list(results[0]["median_seconds"]),
                                lambda r: r["rows"]["appointments"],
                                "same fraction changed", width=20)


def main() -> None:
    parser = _common.argument_parser(__doc__)
    _common.add_scale_arguments(parser, default=10.0, example="5,20",
                                help="sample scale (1 = 60k appointments); default 10 (600k "
                                     "appointments, a few minutes in all on 2 cores)")
    parser.add_argument("--fraction", type=float, default=0.001,
                        help="share of appointments changed on live (default 0.1 %%)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each variant")
    parser.add_argument("--reladiff", default=shutil.which("reladiff"),
                        help="the reladiff executable (default: reladiff on PATH)")
    parser.add_argument("--no-reladiff", action="store_true", help="leave reladiff out")
    _common.add_out_argument(parser, "diff")
    args = parser.parse_args()
    reladiff = None if args.no_reladiff else args.reladiff
    if not args.no_reladiff and not reladiff:
        raise SystemExit("reladiff not found: install it into a throwaway virtualenv (see the "
                         "module docstring) and pass --reladiff, or pass --no-reladiff")
    scales = _common.scales(args)
    with _common.started_clusters("restorekit-diff-bench-", ["live", "copy"],
                                  SETTINGS) as (_, (live, copy)):
        load_before = _common.loadavg()
        results = []
        for scale in scales:
            r = compare(live, copy, scale, args.fraction, args.repeat, reladiff)
            print_table(r)
            results.append(r)
        reladiff_version = None
        if reladiff:
            reladiff_version = subprocess.run([reladiff, "--version"], capture_output=True,
                                              text=True, check=True).stdout.strip()
        out: dict[str, Any] = {
            "benchmark": "row diff of a mostly-equal table (appointments) between two clusters: "
                         "restorekit range vs restorekit full vs reladiff vs one sequential "
                         "scan of each side",
            **_common.run_header(live, load_before, SETTINGS, SEED),
            "reladiff": reladiff_version,
            "reladiff_argv": reladiff and ["reladiff", "LIVE_URL", "appointments", "COPY_URL",
                                           "appointments", "-k", "id", "-c", "%", "--stats",
                                           "--json", "--skip-sort-results"],
            "lower_bound_query": LOWER_BOUND, "record_hash_scan_query": RECORD_HASH_SCAN,
            "repeat": args.repeat, "fraction": args.fraction,
            "scales": scales, "results": results,
        }
        _common.save_with_growth("diff", out, results, print_growth, args.out, load_before)

if __name__ == "__main__":
    main()

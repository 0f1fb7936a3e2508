"""Recovery benchmark: runbook scenario 3 (K deleted users, with the clients and appointments the
ON DELETE CASCADE took) put back by `recover_deleted_rows`, against two baselines in the same run.

Two local clusters hold the sample schema generated with the same seed at --scale: "copy" (what
a point-in-time restore from before the deletion contains) and "live" (production). K users
(random, fixed seed) are deleted on live, which cascades. Then, --repeat times, rotating the
order each round, each variant puts the rows back and is checked before its time is kept:

  restorekit  : recover_deleted_rows(live, copy, users, keys) (keys sent to the copy, the cascade
                closure selected there, streamed with COPY into live staging tables, one
                INSERT ... ON CONFLICT per table, sequences checked, one live transaction)
  runbook     : the runbook's way: pg_dump -Fc -t users -t clients -t appointments from the copy;
                CREATE SCHEMA backup with CREATE TABLE backup.x (LIKE public.x) (no indexes, no
                constraints: the cheapest load); pg_restore --data-only | sed 's/COPY public./COPY
                backup./' | psql; INSERT INTO public.x SELECT * FROM backup.x WHERE ... IN (ids)
                parents first, in one transaction; DROP SCHEMA backup CASCADE
  lower bound : COPY of exactly the K users' rows and their cascade rows from the copy straight
                into the live tables (restorekit.pg.copy.copy_rows with WHERE filters, one
                transaction): the bytes that must move plus the inserts, no diff, no checks

Timed: only the recovery (connections to both databases are open before the clock starts; the
runbook's tools open their own). Not timed: CHECKPOINT on both clusters before each run, the
check after it, and the reset (the recovered users are deleted again, which cascades again,
then VACUUM). The check: for each table, restorekit.pg.checksum.table_checksum of the affected
rows (a temp view) must equal the copy's, and every table's row count must equal the copy's; a
wrong result stops the benchmark (SystemExit) before its time is printed. At the end of each
scale the three tables are compared whole (table_checksum live == copy).

With --scales S1,S2,... the whole comparison runs at each scale (same K) and the growth of each
variant's time relative to the smallest scale is reported next to the growth of the data.
Then one extra (untimed, checked) restorekit recovery runs with every server round trip timed
(grouped by what it does and on which side) and under cProfile, to show where its time goes
(--no-trace skips it).

Results are written to bench/results/recovery-<timestamp>.json. Nothing here asserts on time.

    python bench/recovery_bench.py --scale 20 --k 100 --repeat 5
    python bench/recovery_bench.py --scales 4,16 --repeat 3
"""

from __future__ import annotations

import cProfile
import os
import pstats
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _common  # bench/_common.py, beside this script
import psycopg
from psycopg import sql

from restorekit import sample
from restorekit.pg import catalog
from restorekit.pg.catalog import TableRef
from restorekit.pg.checksum import table_checksum
from restorekit.pg.cluster import LocalCluster
from restorekit.pg.copy import copy_rows
from restorekit.pg.tools import default_os_user, find_bin_dir, make_dir
from restorekit.recovery import recover_deleted_rows

DB = "app"
SEED = 42
USERS = TableRef("public", "users")
CLIENTS = TableRef("public", "clients")
APPOINTMENTS = TableRef("public", "appointments")
TABLES = (USERS, CLIENTS, APPOINTMENTS)  # parents first
VARIANTS = ("restorekit", "runbook", "lower bound")

# The rows a DELETE of users `k` removes: the users, their clients, and the appointments that
# reference either (ON DELETE CASCADE from users and from clients).
AFFECTED = {
    USERS: sql.SQL("id = ANY({k})"),
    CLIENTS: sql.SQL("user_id = ANY({k})"),
    APPOINTMENTS: sql.SQL("user_id = ANY({k}) OR client_id IN "
                          "(SELECT id FROM public.clients WHERE user_id = ANY({k}))"),
}
# The runbook's INSERT ... SELECT filters (the id list pasted in) and the lower bound's COPY
# filters: the column holding the user id (an appointment's user_id is its client's user_id).
USER_COLUMN = {USERS: "id", CLIENTS: "user_id", APPOINTMENTS: "user_id"}

# Production-like: fsync stays on (LocalCluster default); WAL room so that no checkpoint is
# forced in the middle of a timed run (an explicit CHECKPOINT precedes each run instead).
SETTINGS = {"max_wal_size": "8GB", "checkpoint_timeout": "30min"}


# -- helpers -------------------------------------------------------------------------------------


def keys_literal(keys: Sequence[int]) -> sql.Composable:
    return sql.SQL("{}::bigint[]").format(sql.Literal("{" + ",".join(map(str, keys)) + "}"))


def affected_checksums(conn: psycopg.Connection, keys: Sequence[int]) -> dict[str, tuple[int, str]]:
    """(row count, table_checksum) of the affected rows of each table, through temp views."""
    result: dict[str, tuple[int, str]] = {}
    for table in TABLES:
        view = TableRef("pg_temp", f"bench_affected_{table.name}")
        cond = AFFECTED[table].format(k=keys_literal(keys))
        conn.execute(sql.SQL("CREATE OR REPLACE TEMP VIEW {} AS SELECT * FROM {} WHERE {}")
                     .format(sql.Identifier(view.name), table.ident, cond))
        n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(view.ident)).fetchone()[0]
        result[table.name] = (int(n), table_checksum(conn, view))
        conn.execute(sql.SQL("DROP VIEW {}").format(view.ident))
    return result


def table_counts(conn: psycopg.Connection) -> dict[str, int]:
    counts = sample.row_counts(conn)
    return {t.name: counts[t.name] for t in TABLES}


def whole_checksums(conn: psycopg.Connection) -> dict[str, str]:
    return {t.name: table_checksum(conn, t) for t in TABLES}


def sequence_states(conn: psycopg.Connection) -> dict[str, tuple[int, bool]]:
    """(last_value, is_called) of each table's identity sequence: no variant may move them
    (they are ahead of every restored id)."""
    result = {}
    for t in TABLES:
        seq = conn.execute("SELECT pg_get_serial_sequence(%s, 'id')", [f"{t.schema}.{t.name}"]
                           ).fetchone()[0]
        row = conn.execute(f"SELECT last_value, is_called FROM {seq}").fetchone()
        result[t.name] = (int(row[0]), bool(row[1]))
    return result


def delete_users(conn: psycopg.Connection, keys: Sequence[int]) -> None:
    """The accident (and the reset between runs): cascades to clients and appointments."""
    conn.execute("DELETE FROM users WHERE id = ANY(%s)", [list(keys)])
    conn.execute("VACUUM users, clients, appointments")


def checkpoint(*conns: psycopg.Connection) -> None:
    for conn in conns:
        conn.execute("CHECKPOINT")




# -- the variants --------------------------------------------------------------------------------


def run_restorekit(ctx: Context) -> dict[str, float]:
    started = time.perf_counter()
    result = recover_deleted_rows(ctx.live_conn, ctx.copy_conn, USERS, [(k,) for k in ctx.keys])
    elapsed = time.perf_counter() - started
    if result.inserted != ctx.rows_moved or result.keys_not_in_copy:
        raise SystemExit(f"restorekit inserted {result.inserted} rows, expected {ctx.rows_moved}"
                         f" ({result.keys_not_in_copy} keys not in the copy): {result.to_dict()}")
    return {"total": elapsed}


def run_runbook(ctx: Context) -> dict[str, float]:
    """pg_dump -Fc of the three tables from the copy, load into schema backup of live, INSERT
    ... SELECT ... WHERE ... IN (ids) parents first in one transaction, DROP SCHEMA backup."""
    bins = find_bin_dir()
    dump = ctx.work / "runbook-tables.dump"
    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    subprocess.run(
        [str(bins / "pg_dump"), "-d", ctx.copy.dsn(DB), "-Fc", "-f", str(dump),
         *(a for t in TABLES for a in ("-t", f"{t.schema}.{t.name}"))],
        check=True, capture_output=True,
    )
    t1 = time.perf_counter()
    phases["pg_dump"] = t1 - t0
    ctx.live_conn.execute("CREATE SCHEMA backup; " + " ".join(
        f"CREATE TABLE backup.{t.name} (LIKE {t.schema}.{t.name});" for t in TABLES))
    # Only the COPY data goes to backup.*; the dump's SEQUENCE SET lines (setval on the live
    # sequences) are dropped, as an operator loading into a side schema must.
    restore = subprocess.Popen([str(bins / "pg_restore"), "--data-only", "-f", "-", str(dump)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rewrite = subprocess.Popen(
        ["sed", "-e", r"s/^COPY public\./COPY backup./", "-e", r"/^SELECT pg_catalog\.setval(/d"],
        stdin=restore.stdout, stdout=subprocess.PIPE)
    load = subprocess.Popen(
        [str(bins / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", ctx.live.dsn(DB)],
        stdin=rewrite.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert restore.stdout is not None and rewrite.stdout is not None
    # The next process holds each pipe now: a reader that dies gives its writer SIGPIPE.
    restore.stdout.close()
    rewrite.stdout.close()
    load_err = load.communicate()[1]
    rewrite.wait()
    restore_err = restore.communicate()[1]
    if restore.returncode or rewrite.returncode or load.returncode:
        raise SystemExit(f"runbook load failed: pg_restore {restore.returncode} "
                         f"{restore_err!r}, sed {rewrite.returncode}, psql {load.returncode} "
                         f"{load_err!r}")
    t2 = time.perf_counter()
    phases["load into backup schema"] = t2 - t1
    ids = ", ".join(str(int(k)) for k in ctx.keys)
    with ctx.live_conn.transaction():
        for table in TABLES:
            ctx.live_conn.execute(
                f"INSERT INTO {table.schema}.{table.name} SELECT * FROM backup.{table.name} "
                f"WHERE {USER_COLUMN[table]} IN ({ids})"
            )
    t3 = time.perf_counter()
    phases["INSERT ... SELECT"] = t3 - t2
    ctx.live_conn.execute("DROP SCHEMA backup CASCADE")
    dump.unlink()
    t4 = time.perf_counter()
    phases["drop schema"] = t4 - t3
    phases["total"] = t4 - t0
    return phases


def run_lower_bound(ctx: Context) -> dict[str, float]:
    started = time.perf_counter()
    with ctx.live_conn.transaction():
        for table in TABLES:
            cols = ctx.columns[table]
            query = sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s)").format(
                sql.SQL(", ").join(map(sql.Identifier, cols)), table.ident,
                sql.Identifier(USER_COLUMN[table]))
            copy_rows(ctx.copy_conn, ctx.live_conn, query, [list(ctx.keys)], table, cols)
    return {"total": time.perf_counter() - started}


RUNNERS: dict[str, Callable[[Context], dict[str, float]]] = {
    "restorekit": run_restorekit, "runbook": run_runbook, "lower bound": run_lower_bound,
}


class Context:
    """The two databases, the keys, and what a correct recovery must produce (read from the
    copy once): per table the affected rows' count and checksum, whole-table counts, and live's
    sequence states."""

    def __init__(self, live: LocalCluster, copy: LocalCluster, live_conn: psycopg.Connection,
                 copy_conn: psycopg.Connection, work: Path, keys: list[int]) -> None:
        self.live, self.copy, self.live_conn, self.copy_conn = live, copy, live_conn, copy_conn
        self.work, self.keys = work, keys
        self.columns = {t: [c.name for c in catalog.columns(copy_conn, t) if not c.generated]
                        for t in TABLES}
        self.expected = affected_checksums(copy_conn, keys)
        self.rows_moved = sum(n for n, _ in self.expected.values())
        self.copy_counts = table_counts(copy_conn)
        self.sequences = sequence_states(live_conn)

    def check_deleted(self) -> None:
        got = affected_checksums(self.live_conn, self.keys)
        if any(n for n, _ in got.values()):
            raise SystemExit(f"live still holds affected rows before a run: {got}")
        want = {t: self.copy_counts[t] - self.expected[t][0] for t in self.copy_counts}
        if table_counts(self.live_conn) != want:
            raise SystemExit(f"live row counts {table_counts(self.live_conn)} != {want}")

    def verify(self, variant: str) -> None:
        got = affected_checksums(self.live_conn, self.keys)
        if got != self.expected:
            raise SystemExit(f"{variant} produced wrong data: live {got} != copy {self.expected}")
        counts = table_counts(self.live_conn)
        if counts != self.copy_counts:
            raise SystemExit(f"{variant} left wrong row counts: live {counts} != copy "
                             f"{self.copy_counts}")
        sequences = sequence_states(self.live_conn)
        if sequences != self.sequences:
            raise SystemExit(f"{variant} moved live sequences: {sequences} != {self.sequences}")


# -- one comparison at one scale -----------------------------------------------------------------


def build(cluster: LocalCluster, scale: float) -> dict[str, int]:
    return _common.build_sample(cluster, scale, db=DB, seed=SEED)


def _category(statement: str) -> str:
    text = " ".join(statement.split())
    head = text.upper()
    if "SET_CONFIG" in head or "CURRENT_SETTING" in head:
        return "pin/unpin output settings"
    if "PG_CATALOG" in head or "PG_ATTRIBUTE" in head or "PG_CONSTRAINT" in head:
        return "catalog query"
    if head.startswith("CREATE TEMP TABLE"):
        return "CREATE TEMP TABLE"
    if head.startswith("ANALYZE"):
        return "ANALYZE temp table"
    if head.startswith('INSERT INTO "PG_TEMP"'):
        return "select affected rows into temp"
    if head.startswith("INSERT INTO"):
        return "INSERT ... ON CONFLICT DO NOTHING"
    if head.startswith("DROP"):
        return "DROP temp tables"
    if "LAST_VALUE" in head:
        return "sequence check"
    if head.startswith("SELECT COUNT(*)"):
        return "count keys not in copy"
    return text[:50]


def trace_restorekit(ctx: Context) -> dict[str, Any]:
    """One (untimed) recovery with every server round trip timed: Connection.execute, the COPY
    streams (copy_rows, the key list) and BEGIN/COMMIT/ROLLBACK, grouped by what they do and by
    side. The remainder is Python. A cProfile of the same run says how much of the wall time is
    spent waiting in psycopg."""
    from restorekit.recovery import recover_deleted

    # Every module of the recovery (and the diff blocks it stages through) that streams rows.
    streaming = [m for name, m in sorted(sys.modules.items())
                 if name.startswith(("restorekit.recovery.", "restorekit.diff."))
                 and hasattr(m, "copy_rows")]
    live_id = id(ctx.live_conn)
    spans: list[tuple[str, str, float]] = []

    def side(conn: Any) -> str:
        return "live" if id(conn) == live_id else "copy"

    orig_execute = psycopg.Connection.execute
    orig_enter, orig_exit = psycopg.Transaction.__enter__, psycopg.Transaction.__exit__
    orig_copy_rows, orig_write_keys = streaming[0].copy_rows, recover_deleted._write_keys

    execute = _common.timed_execute(orig_execute, lambda conn, text, _t, seconds, _a, _kw:
                                    spans.append((side(conn), _category(text), seconds)))

    def enter(self: Any) -> Any:
        t = time.perf_counter()
        try:
            return orig_enter(self)
        finally:
            spans.append((side(self._conn), "BEGIN", time.perf_counter() - t))

    def exit_(self: Any, *exc: Any) -> Any:
        t = time.perf_counter()
        try:
            return orig_exit(self, *exc)
        finally:
            what = "ROLLBACK" if self.force_rollback or exc[0] else "COMMIT"
            spans.append((side(self._conn), what, time.perf_counter() - t))

    def copy_rows(src: Any, dst: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return orig_copy_rows(src, dst, *a, **kw)
        finally:
            spans.append((f"{side(src)}->{side(dst)}", "COPY stream", time.perf_counter() - t))

    def write_keys(conn: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return orig_write_keys(conn, *a, **kw)
        finally:
            spans.append((side(conn), "COPY key list in", time.perf_counter() - t))

    profiler = cProfile.Profile()
    psycopg.Connection.execute = execute  # type: ignore[method-assign]
    psycopg.Transaction.__enter__ = enter  # type: ignore[method-assign]
    psycopg.Transaction.__exit__ = exit_  # type: ignore[method-assign]
    for module in streaming:
        module.copy_rows = copy_rows
    recover_deleted._write_keys = write_keys  # type: ignore[assignment]
    try:
        profiler.enable()
        started = time.perf_counter()
        recover_deleted_rows(ctx.live_conn, ctx.copy_conn, USERS, [(k,) for k in ctx.keys])
        total = time.perf_counter() - started
        profiler.disable()
    finally:
        psycopg.Connection.execute = orig_execute  # type: ignore[method-assign]
        psycopg.Transaction.__enter__ = orig_enter  # type: ignore[method-assign]
        psycopg.Transaction.__exit__ = orig_exit  # type: ignore[method-assign]
        for module in streaming:
            module.copy_rows = orig_copy_rows
        recover_deleted._write_keys = orig_write_keys
    groups: dict[tuple[str, str], list[float]] = {}
    for where, what, seconds in spans:
        groups.setdefault((where, what), []).append(seconds)
    # No span nests in another: the COPY streams use cursor.copy, not Connection.execute.
    rows = sorted(((sum(v), len(v), where, what) for (where, what), v in groups.items()),
                  reverse=True)
    traced = sum(r[0] for r in rows)
    stats = pstats.Stats(profiler)
    waiting = sum(st[3] for fn, st in stats.stats.items()  # type: ignore[attr-defined]
                  if fn[0].endswith(os.path.join("psycopg", "connection.py")) and fn[2] == "wait")
    return {
        "total_seconds": total,
        "round_trips": len(spans),
        "groups": [{"seconds": t, "count": n, "side": w, "what": c} for t, n, w, c in rows],
        "untraced_seconds": total - traced,
        "cprofile_psycopg_wait_seconds": waiting,
    }


def print_trace(trace: dict[str, Any], over: float) -> None:
    total = trace["total_seconds"]
    print(f"\nwhere restorekit's time goes (it is {over:.2f}x the lower bound): one extra, "
          f"untimed, checked recovery, traced: {total:.3f}s, {trace['round_trips']} server "
          "round trips")
    print(f"{'seconds':>9}{'share':>7}{'n':>5}  {'side':11}what")
    for g in trace["groups"]:
        print(f"{g['seconds']:9.4f}{100 * g['seconds'] / total:6.1f}%{g['count']:5d}  "
              f"{g['side']:11}{g['what']}")
    print(f"{trace['untraced_seconds']:9.4f}{100 * trace['untraced_seconds'] / total:6.1f}%"
          f"{'':5}  {'':11}Python outside round trips (tracing overhead included)")
    print(f"cProfile: {trace['cprofile_psycopg_wait_seconds']:.3f}s of the profiled run inside "
          f"psycopg's wait loop (waiting on a server)")


def compare(live: LocalCluster, copy: LocalCluster, work: Path, scale: float, k: int,
            repeat: int, trace: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    rows = _common.build_both(live, copy, lambda c: build(c, scale))
    print(f"scale {scale:g}: generated {rows} in both clusters in {time.perf_counter() - t0:.1f}s",
          flush=True)
    if k > rows["users"]:
        raise SystemExit(f"--k {k} is more than the {rows['users']} users at scale {scale:g}")
    keys = sorted(random.Random(SEED).sample(range(1, rows["users"] + 1), k))
    result: dict[str, Any] = {"scale": scale, "k": k, "repeat": repeat, "rows": rows,
                              "setup_seconds": time.perf_counter() - t0}
    with psycopg.connect(live.dsn(DB), autocommit=True) as live_conn, \
            psycopg.connect(copy.dsn(DB), autocommit=True) as copy_conn:
        copy_whole = whole_checksums(copy_conn)
        if whole_checksums(live_conn) != copy_whole:
            raise SystemExit("live and copy differ before the deletion (same seed, same scale?)")
        ctx = Context(live, copy, live_conn, copy_conn, work, keys)
        result["database_bytes"] = live_conn.execute(
            "SELECT pg_database_size(current_database())").fetchone()[0]
        result["rows_moved"] = {t: n for t, (n, _) in ctx.expected.items()}
        result["rows_moved_total"] = ctx.rows_moved
        t = time.perf_counter()
        delete_users(live_conn, keys)
        print(f"deleted {k} users on live ({ctx.rows_moved} rows with the cascade) in "
              f"{time.perf_counter() - t:.2f}s", flush=True)
        runs_started = time.perf_counter()
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        phases: list[dict[str, float]] = []
        for i, order in _common.rotated(VARIANTS, repeat):
            line = []
            for variant in order:
                ctx.check_deleted()
                checkpoint(copy_conn, live_conn)
                took = RUNNERS[variant](ctx)
                ctx.verify(variant)  # raises before a wrong result's time is kept or printed
                times[variant].append(took["total"])
                if variant == "runbook":
                    phases.append(took)
                line.append(f"{variant} {took['total']:.3f}s")
                delete_users(live_conn, keys)
            print(f"run {i + 1}: " + "  ".join(line), flush=True)
        result["runs_wall_seconds"] = time.perf_counter() - runs_started
        medians = {v: statistics.median(ts) for v, ts in times.items()}
        result["seconds"] = times
        result["median_seconds"] = medians
        result["ratio_vs_restorekit"] = {v: medians[v] / medians["restorekit"] for v in VARIANTS}
        result["runbook_phases_median"] = {
            p: statistics.median(ph[p] for ph in phases) for p in phases[0]}
        result["restorekit_over_lower_bound"] = medians["restorekit"] / medians["lower bound"]
        if trace:
            ctx.check_deleted()
            checkpoint(copy_conn, live_conn)
            result["restorekit_trace"] = trace_restorekit(ctx)
            ctx.verify("restorekit (traced)")
            delete_users(live_conn, keys)
        # Leave live as the copy, then compare whole tables: nothing else was touched.
        recover_deleted_rows(live_conn, copy_conn, USERS, [(k,) for k in keys])
        if whole_checksums(live_conn) != copy_whole or whole_checksums(copy_conn) != copy_whole:
            raise SystemExit("after the runs, live and copy tables are not identical")
    result["whole_tables_identical_at_end"] = True
    return result


def print_table(r: dict[str, Any]) -> None:
    users = r["rows"]["users"]
    total = sum(r["rows"].values())
    moved = r["rows_moved"]
    print(f"\nscale {r['scale']:g}: {total:,} rows ({users:,} users), "
          f"{r['database_bytes'] / 2**20:.0f} MiB; K = {r['k']} users = "
          f"{100 * r['k'] / users:.3g} % of users; rows moved {r['rows_moved_total']:,} "
          f"(users {moved['users']}, clients {moved['clients']}, appointments "
          f"{moved['appointments']}) = {100 * r['rows_moved_total'] / total:.3g} % of rows")
    _common.print_medians(VARIANTS, r["median_seconds"], r["ratio_vs_restorekit"], width=14,
                          ratio_title="ratio vs restorekit", ratio_width=22)
    m = r["median_seconds"]
    print(f"restorekit / lower bound = {m['restorekit'] / m['lower bound']:.2f}; "
          f"runbook / restorekit = {m['runbook'] / m['restorekit']:.1f}")
    print("runbook phases (median s): " + ", ".join(
        f"{p} {s:.3f}" for p, s in r["runbook_phases_median"].items() if p != "total"))
    print(f"wall time: setup {r['setup_seconds']:.0f}s, {r['repeat']} rounds of the three "
          f"variants with checks and resets {r['runs_wall_seconds']:.0f}s")


def print_growth(results: list[dict[str, Any]]) -> dict[str, Any]:
    return _common.print_growth(results, VARIANTS, lambda r: sum(r["rows"].values()),
                                f"K = {results[0]['k']} at every scale")


def main() -> None:
    parser = _common.argument_parser(__doc__)
    _common.add_scale_arguments(parser, default=20.0, example="4,16",
                                help="sample scale (1 = 100k rows); default 20 (2M rows, the "
                                     "timed runs take about a minute on 2 cores)")
    parser.add_argument("--k", type=int, default=100, help="deleted users to recover")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each variant")
    parser.add_argument("--no-trace", action="store_true",
                        help="skip the extra traced restorekit run (where its time goes)")
    _common.add_out_argument(parser, "recovery")
    args = parser.parse_args()
    scales = _common.scales(args)
    with _common.started_clusters("restorekit-recovery-bench-", ["live", "copy"],
                                  SETTINGS) as (base, (live, copy)):
        work = make_dir(base / "work", default_os_user(), mode=0o755)
        load_before = _common.loadavg()
        results = []
        for scale in scales:
            r = compare(live, copy, work, scale, args.k, args.repeat, not args.no_trace)
            print_table(r)
            if "restorekit_trace" in r:
                print_trace(r["restorekit_trace"], r["restorekit_over_lower_bound"])
            results.append(r)
        out: dict[str, Any] = {
            "benchmark": "scenario 3 recovery of K deleted users: restorekit vs runbook "
                         "(pg_dump/pg_restore/INSERT ... SELECT) vs lower bound (COPY only)",
            **_common.run_header(live, load_before, SETTINGS, SEED),
            "repeat": args.repeat, "k": args.k, "scales": scales, "results": results,
        }
        _common.save_with_growth("recovery", out, results, print_growth, args.out, load_before)

if __name__ == "__main__":
    main()

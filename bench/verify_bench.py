"""Verification benchmark: the whole verification suite the flows run (restorekit.integrity.verify)
against the same checks written by hand and run one after another, measured in the same run on
the same database.

One local cluster holds the sample schema (users, clients, appointments, audit_log) generated at
--scale with a fixed seed; a baseline is captured from it as the flows do (`capture-baseline`),
and amcheck is installed before anything is timed. Then, --repeat times, rotating the order each
round, each variant runs and is checked before its time is kept:

  verify          : integrity.verify(dsn, baseline=..., critical_tables=users, clients,
                    appointments, row_count_tolerance=0.05, the demo's custom check
                    "appointments have a client", amcheck on): connectivity, not_in_recovery,
                    schema fingerprint vs the baseline, expected tables, exact counts of the
                    critical tables, planner estimates of the others, an orphan check for every
                    foreign key, the custom check, bt_index_check of every B-tree index; its own
                    connections (the main one and a bounded pool), as in the flows. The report
                    must be ok and its exact counts must equal the baseline's
  verify, one session : the same with max_workers=1: the scans one after another on one pool
                    session, which then keeps PostgreSQL's parallel query workers (the
                    alternative to running checks side by side without them)
  verify, no custom : the same without the custom check (operator SQL, not restorekit's)
  verify, no amcheck : the same with amcheck=False (how much of the suite amcheck is)
  by hand         : the baseline (issue #14): the checks a DBA writes as a psql script, run one
                    after another on one session opened before the clock starts, server
                    defaults: count(*) of every table, one anti-join per foreign key (NOT EXISTS
                    the parent), the same custom check as written (its rows fetched),
                    bt_index_check of every B-tree index. Counts must equal the generated rows,
                    no orphans, at least one index checked. The custom check's own time is kept
                    apart, so "verify, no custom" is compared with the rest as well.
                    It does a little more than the suite (an exact count of audit_log, which the
                    suite only estimates) and none of its fixed cost (catalog, fingerprint)
  by hand, serial : the same with max_parallel_workers_per_gather = 0
  seq scan        : (reference, the old lower bound) SELECT count(*) of every table, one after
                    the other on one connection; the counts must equal the generated rows
  seq scan, serial : the same with max_parallel_workers_per_gather = 0
  seq scan, concurrent : (reference) the same count(*)s each on its own connection at once

Target (issue #14): verify / by hand <= 0.7 on 2 cores, "by hand" being the faster (median) of
"by hand" and "by hand, serial": the suite runs its checks side by side, so on 2 cores it can at
best take about half of the one-after-another time plus its fixed cost. The count(*) ratio is
still printed (and saved as ratio_vs_lower_bound) for comparison with earlier runs.

Then one extra, untimed verification runs with every statement traced (which connection, how
long), and each statement that reads table or index data is run alone under EXPLAIN (ANALYZE,
BUFFERS) or timed alone (bt_index_check): the profile says which checks cost what, and how much of
the suite is fixed cost (connections, catalog, fingerprint) that does not grow with the data
(--no-profile skips it). The profile also times, alone, the one-scan alternative for each table with
foreign keys (its exact count and every orphan check folded into one statement: LEFT JOIN each
parent, count(*) FILTER (...) per key) against the separate statements the suite runs, which is
why the suite keeps them separate.

With --scales S1,S2,... the whole comparison runs at each scale and the growth of each variant's
time is printed next to the growth of the data. Results go to bench/results/verify-<UTC
timestamp>.json (or --out). Nothing here asserts on time.

    python bench/verify_bench.py --scale 10 --repeat 5
    python bench/verify_bench.py --scales 2.5,10 --repeat 3
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import _common  # bench/_common.py, beside this script
import psycopg
from psycopg import sql

from restorekit import integrity
from restorekit.integrity import Baseline, CustomCheck, VerificationReport
from restorekit.pg.catalog import TableRef, list_tables
from restorekit.pg.cluster import LocalCluster

DB = "app"
SEED = 42
CRITICAL = ("users", "clients", "appointments")
TOLERANCE = 0.05
# The demo installation's configuration (restorekit/demo.py), i.e. what the flows run.
CUSTOM = CustomCheck(
    name="appointments have a client",
    sql="SELECT a.id FROM appointments a LEFT JOIN clients c ON c.id = a.client_id "
        "WHERE c.id IS NULL",
    expect="zero_rows",
)
VARIANTS = ("verify", "verify, one session", "verify, no custom", "verify, no amcheck",
            "by hand", "by hand, serial", "seq scan", "seq scan, serial", "seq scan, concurrent")
#: The baseline (issue #14): the same checks written by hand, run one after another.
BY_HAND = ("by hand", "by hand, serial")
#: count(*) of every table alone: the old lower bound, kept as a reference (it reads no index and
#: checks no key, so the suite could never come near it).
LOWER_BOUNDS = ("seq scan", "seq scan, serial")
#: verify / by hand on 2 cores (the suite runs its checks side by side).
TARGET = 0.7
# Production-like: fsync on (LocalCluster default), room for the data in shared buffers.
SETTINGS = {"max_wal_size": "8GB", "checkpoint_timeout": "30min", "shared_buffers": "512MB"}


# -- the variants --------------------------------------------------------------------------------


class Context:
    def __init__(self, cluster: LocalCluster, conn: psycopg.Connection, baseline: Baseline,
                 rows: dict[str, int]) -> None:
        self.cluster, self.conn, self.baseline = cluster, conn, baseline
        self.dsn = cluster.dsn(DB)
        self.tables = list_tables(conn)
        self.expected = {TableRef("public", t): n for t, n in rows.items()}
        self.extra = [psycopg.connect(self.dsn, autocommit=True) for _ in self.tables]
        self.serial = psycopg.connect(self.dsn, autocommit=True)
        self.serial.execute("SET max_parallel_workers_per_gather = 0")
        self.pool = ThreadPoolExecutor(len(self.tables))
        self.last_report: VerificationReport | None = None
        self.hand = hand_script(conn, self.tables)
        self.hand_custom_seconds: dict[str, list[float]] = {}

    def close(self) -> None:
        self.pool.shutdown()
        for c in [*self.extra, self.serial]:
            c.close()


def run_verify(ctx: Context, *, amcheck: bool = True, custom: bool = True,
               max_workers: int | None = None) -> float:
    started = time.perf_counter()
    report = integrity.verify(ctx.dsn, baseline=ctx.baseline, critical_tables=CRITICAL,
                              row_count_tolerance=TOLERANCE,
                              custom_checks=[CUSTOM] if custom else [], amcheck=amcheck,
                              max_workers=max_workers)
    elapsed = time.perf_counter() - started
    if not report.ok or report.warnings:
        raise SystemExit(f"the verification of a clean database did not pass:\n"
                         f"{report.to_markdown()}")
    if report.check("row_counts").observed["exact"] != dict(ctx.baseline.exact_counts):
        raise SystemExit(f"exact counts {report.check('row_counts').observed} differ from the "
                         f"baseline {ctx.baseline.exact_counts}")
    if amcheck and not report.check("amcheck").observed.get("indexes_checked"):
        raise SystemExit(f"amcheck checked no index: {report.check('amcheck')}")
    ctx.last_report = report
    return elapsed


def _count(conn: psycopg.Connection, table: TableRef) -> int:
    return int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.ident)).fetchone()[0])


def _check_counts(counts: dict[TableRef, int], ctx: Context) -> None:
    for table, n in ctx.expected.items():
        if counts.get(table) != n:
            raise SystemExit(f"seq scan counted {counts.get(table)} rows in {table}, expected {n}")


def run_seq_scan(ctx: Context, serial: bool = False) -> float:
    conn = ctx.serial if serial else ctx.conn
    started = time.perf_counter()
    counts = {t: _count(conn, t) for t in ctx.tables}
    elapsed = time.perf_counter() - started
    _check_counts(counts, ctx)
    return elapsed


def run_concurrent_scan(ctx: Context) -> float:
    started = time.perf_counter()
    futures = {t: ctx.pool.submit(_count, c, t) for t, c in zip(ctx.tables, ctx.extra, strict=True)}
    counts = {t: f.result() for t, f in futures.items()}
    elapsed = time.perf_counter() - started
    _check_counts(counts, ctx)
    return elapsed


def hand_script(conn: psycopg.Connection, tables: list[TableRef]) -> list[tuple[str, str]]:
    """The checks a DBA writes by hand for this schema, as (kind, statement): count(*) of every
    table, one anti-join per foreign key (the rows whose parent is missing), the demo's custom
    check, and bt_index_check of every B-tree index (amcheck). Written once, before any clock
    starts, from the catalog, as a psql script would be."""
    from restorekit.pg.catalog import foreign_keys

    out = [("count", f"SELECT count(*) FROM {t.ident.as_string(conn)}") for t in tables]
    for fk in foreign_keys(conn):
        on = " AND ".join(f"p.{sql.Identifier(pc).as_string(conn)} = "
                          f"c.{sql.Identifier(cc).as_string(conn)}"
                          for pc, cc in zip(fk.parent_columns, fk.child_columns, strict=True))
        set_ = " AND ".join(f"c.{sql.Identifier(cc).as_string(conn)} IS NOT NULL"
                            for cc in fk.child_columns)
        out.append(("orphans", f"SELECT count(*) FROM {fk.child.ident.as_string(conn)} c "
                               f"WHERE {set_} AND NOT EXISTS (SELECT 1 FROM "
                               f"{fk.parent.ident.as_string(conn)} p WHERE {on})"))
    out.append(("custom", CUSTOM.sql))  # as written: it lists the offending ids
    for (name,) in conn.execute(
            "SELECT format('%I.%I', n.nspname, i.relname) FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am a ON a.oid = i.relam "
            "JOIN pg_namespace n ON n.oid = i.relnamespace "
            "WHERE a.amname = 'btree' AND x.indisvalid AND i.relpersistence <> 't' "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
            "ORDER BY 1").fetchall():
        out.append(("amcheck", f"SELECT bt_index_check('{name}'::regclass)"))
    return out


def run_by_hand(ctx: Context, serial: bool = False) -> float:
    """The hand-written checks one after another on one session (opened before the clock);
    the custom check's share is kept apart (ctx.hand_custom_seconds) to compare the suite
    without it against the rest."""
    conn = ctx.serial if serial else ctx.conn
    answers = []
    custom = 0.0
    started = time.perf_counter()
    for kind, text in ctx.hand:
        t = time.perf_counter()
        answers.append((kind, conn.execute(text).fetchall()))
        if kind == "custom":
            custom += time.perf_counter() - t
    elapsed = time.perf_counter() - started
    counts = [int(rows[0][0]) for kind, rows in answers if kind == "count"]
    if sorted(counts) != sorted(ctx.expected[t] for t in ctx.tables if t in ctx.expected):
        raise SystemExit(f"by hand: counts {counts}, expected {ctx.expected}")
    bad = [(kind, rows) for kind, rows in answers
           if (kind == "orphans" and rows != [(0,)]) or (kind == "custom" and rows)]
    if bad or sum(1 for kind, _ in answers if kind == "amcheck") == 0:
        raise SystemExit(f"by hand: found orphans {bad} or checked no index")
    ctx.hand_custom_seconds.setdefault("by hand, serial" if serial else "by hand",
                                       []).append(custom)
    return elapsed


RUNNERS: dict[str, Callable[[Context], float]] = {
    "verify": run_verify,
    "verify, one session": lambda ctx: run_verify(ctx, max_workers=1),
    "verify, no custom": lambda ctx: run_verify(ctx, custom=False),
    "verify, no amcheck": lambda ctx: run_verify(ctx, amcheck=False),
    "by hand": run_by_hand,
    "by hand, serial": lambda ctx: run_by_hand(ctx, serial=True),
    "seq scan": run_seq_scan,
    "seq scan, serial": lambda ctx: run_seq_scan(ctx, serial=True),
    "seq scan, concurrent": run_concurrent_scan,
}


# -- the profile ---------------------------------------------------------------------------------


def _category(text: str) -> str:
    head = " ".join(text.split()).upper()
    if "BT_INDEX_CHECK" in head:
        return "amcheck"
    if "RESTOREKIT_ROWS" in head:
        return "custom check"
    if "NOT EXISTS" in head and 'AS "C" WHERE' in head:
        return "orphan anti-join" if "LIMIT" not in head else "orphan sample"
    if head.startswith("SELECT COUNT(*) FROM") and "PG_" not in head:
        return "exact count"
    if "SET_CONFIG" in head:
        return "session setup"
    return "catalog / fingerprint / other"


def trace_verify(ctx: Context) -> dict[str, Any]:
    """One verification with every Connection.execute timed (thread, statement, seconds)."""
    spans: list[dict[str, Any]] = []
    lock = threading.Lock()
    orig_execute = psycopg.Connection.execute
    orig_connect = psycopg.connect

    def record(conn: Any, text: str, t: float, seconds: float, a: tuple[Any, ...],
               kw: dict[str, Any]) -> None:
        with lock:
            spans.append({"thread": threading.current_thread().name, "statement": text,
                          "start": t, "seconds": seconds,
                          "params": a[0] if a else kw.get("params")})

    execute = _common.timed_execute(orig_execute, record)

    def connect(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return orig_connect(*a, **kw)
        finally:
            with lock:
                spans.append({"thread": threading.current_thread().name, "statement": "(connect)",
                              "start": t, "seconds": time.perf_counter() - t, "params": None})

    psycopg.Connection.execute = execute  # type: ignore[method-assign]
    psycopg.connect = connect  # restorekit.pg.cluster.connect calls psycopg.connect
    try:
        started = time.perf_counter()
        run_verify(ctx)
        total = time.perf_counter() - started
    finally:
        psycopg.Connection.execute = orig_execute  # type: ignore[method-assign]
        psycopg.connect = orig_connect
    assert ctx.last_report is not None
    groups: dict[str, dict[str, float]] = {}
    for s in spans:
        what = "connect" if s["statement"] == "(connect)" else _category(s["statement"])
        g = groups.setdefault(what, {"seconds": 0.0, "count": 0})
        g["seconds"] += s["seconds"]
        g["count"] += 1
    # The suite's wall time split: before the first scan starts (connect, catalog, fingerprint),
    # the scans, and after the last one ends (report).
    scan_spans = [s for s in spans if _category(s["statement"]) in
                  ("amcheck", "orphan anti-join", "exact count", "orphan sample")]
    phases = {}
    if scan_spans:
        first = min(s["start"] for s in scan_spans)
        last = max(s["start"] + s["seconds"] for s in scan_spans)
        phases = {"before_scans": first - started, "scans": last - first,
                  "after_scans": started + total - last}
    checks = [{"name": c.name, "ms": c.duration_ms} for c in ctx.last_report.checks]
    statements = [{"category": _category(s["statement"]), "seconds": s["seconds"],
                   "thread": s["thread"], "statement": s["statement"], "params": s["params"]}
                  for s in spans if s["statement"] != "(connect)"]
    return {"total_seconds": total, "statements": len(spans),
            "connections": sum(1 for s in spans if s["statement"] == "(connect)"),
            "groups": groups, "phases": phases, "checks": checks,
            "scan_statements": [s for s in statements if s["category"] in
                                ("orphan anti-join", "exact count", "custom check",
                                 "amcheck")]}


def _time_alone(conn: psycopg.Connection, text: str, params: Any, runs: int = 3) -> float:
    """The fastest of ``runs`` executions, in ms (the data is cached: the least disturbed run)."""
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        conn.execute(text, params).fetchall()
        best = min(best, time.perf_counter() - t)
    return 1000 * best


def one_scan_alternative(ctx: Context) -> list[dict[str, Any]]:
    """For each child table with foreign keys: its count and its orphan checks as the separate
    statements the suite runs, against all of them folded into one scan of the child (LEFT JOIN
    each parent; a parent's key column is NULL exactly when the child row has no parent).
    Both timed alone, serial; both must find the same numbers."""
    from restorekit.pg.catalog import foreign_keys

    fks: dict[TableRef, list[Any]] = {}
    for fk in foreign_keys(ctx.conn):
        fks.setdefault(fk.child, []).append(fk)
    out = []
    conn = ctx.serial
    for child, keys in sorted(fks.items()):
        separate = [sql.SQL("SELECT count(*) FROM {}").format(child.ident)]
        separate += [integrity.orphan_query(fk) for fk in keys]
        joins, filters = [], [sql.SQL("count(*)")]
        for i, fk in enumerate(keys):
            p = sql.Identifier(f"p{i}")
            on = sql.SQL(" AND ").join(
                sql.SQL("{}.{} = c.{}").format(p, sql.Identifier(pc), sql.Identifier(cc))
                for pc, cc in zip(fk.parent_columns, fk.child_columns, strict=True))
            joins.append(sql.SQL("LEFT JOIN ONLY {} AS {} ON {}").format(fk.parent.ident, p, on))
            set_ = sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(cc))
                                         for cc in fk.child_columns)
            filters.append(sql.SQL("count(*) FILTER (WHERE {} AND {}.{} IS NULL)").format(
                set_, p, sql.Identifier(fk.parent_columns[0])))
        combined = sql.SQL("SELECT {} FROM ONLY {} AS c {}").format(
            sql.SQL(", ").join(filters), child.ident, sql.SQL(" ").join(joins))
        got_separate = [conn.execute(q).fetchone()[0] for q in separate]
        got_combined = list(conn.execute(combined).fetchone())
        if got_separate != got_combined:
            raise SystemExit(f"{child}: combined scan found {got_combined}, separate "
                             f"statements {got_separate}")
        separate_ms = sum(_time_alone(conn, q.as_string(conn), None) for q in separate)
        combined_ms = _time_alone(conn, combined.as_string(conn), None)
        out.append({"table": str(child), "foreign_keys": [fk.name for fk in keys],
                    "separate_ms": separate_ms, "combined_ms": combined_ms,
                    "combined_sql": combined.as_string(conn)})
    return out


def explain_alone(ctx: Context, trace: dict[str, Any]) -> list[dict[str, Any]]:
    """Every scanning statement of the traced run, run alone: EXPLAIN (ANALYZE, BUFFERS) for the
    scans, a plain timing for bt_index_check (a function call: its plan says nothing)."""
    out = []
    conn = ctx.serial  # the suite's sessions run without parallel workers
    names = dict(conn.execute("SELECT oid::int, oid::regclass::text FROM pg_class "
                              "WHERE relkind = 'i'").fetchall())
    for s in trace["scan_statements"]:
        text, params = s["statement"], s["params"]
        if s["category"] == "amcheck":
            oid = int(params[0]) if params else 0
            alone = _time_alone(conn, text, params)
            size = conn.execute("SELECT pg_relation_size(%s::oid::regclass)", [oid]).fetchone()[0]
            out.append({"category": "amcheck", "what": names.get(oid, str(oid)),
                        "alone_ms": alone, "bytes": int(size)})
            continue
        alone = _time_alone(conn, text, params)
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + text, params
                            ).fetchone()[0][0]
        top = plan["Plan"]
        nodes = []

        def walk(node: dict[str, Any], depth: int = 0, nodes: list[Any] = nodes) -> None:
            kind = f"{node['Join Type']} " if node.get("Join Type") not in (None, "Inner") else ""
            label = kind + node["Node Type"] + (f" on {node['Relation Name']}"
                                         if "Relation Name" in node else "")
            if node.get("Index Name"):
                label += f" using {node['Index Name']}"
            nodes.append({"depth": depth, "node": label,
                          "ms": node.get("Actual Total Time"),
                          "rows": node.get("Actual Rows"),
                          "batches": node.get("Hash Batches"),
                          "workers": node.get("Workers Launched")})
            for child in node.get("Plans", ()):
                walk(child, depth + 1, nodes)

        walk(top)
        out.append({"category": s["category"], "what": " ".join(text.split())[:160],
                    "alone_ms": alone, "explain_analyze_ms": plan["Execution Time"],
                    "shared_hit": top.get("Shared Hit Blocks"),
                    "shared_read": top.get("Shared Read Blocks"),
                    "temp_written": top.get("Temp Written Blocks"), "plan": nodes})
    return out


def print_profile(r: dict[str, Any]) -> None:
    trace, alone = r["profile"]["trace"], r["profile"]["alone"]
    total = trace["total_seconds"]
    print(f"\nwhere the suite's time goes (one extra, untimed, traced run: {total:.3f}s, "
          f"{trace['statements']} statements on {trace['connections']} connections):")
    if trace["phases"]:
        p = trace["phases"]
        print(f"  before the first scan (connect, catalog, fingerprint) {p['before_scans']:.3f}s;"
              f" scans {p['scans']:.3f}s; after the last scan {p['after_scans']:.3f}s")
    print(f"{'seconds':>9}{'n':>5}  statements (summed over connections; they overlap; "
          "connect = opening a connection)")
    for what, g in sorted(trace["groups"].items(), key=lambda kv: -kv[1]["seconds"]):
        print(f"{g['seconds']:9.3f}{g['count']:5d}  {what}")
    print("\neach scanning statement run alone (EXPLAIN ANALYZE; amcheck timed):")
    by_cat: dict[str, float] = {}
    for a in alone:
        by_cat[a["category"]] = by_cat.get(a["category"], 0.0) + a["alone_ms"]
    for a in sorted(alone, key=lambda a: -a["alone_ms"]):
        if a["category"] == "amcheck":
            print(f"{a['alone_ms']:9.1f} ms  amcheck {a['what']} ({a['bytes'] / 2**20:.1f} MiB)")
        else:
            extra = f", temp written {a['temp_written']} blocks" if a.get("temp_written") else ""
            print(f"{a['alone_ms']:9.1f} ms  {a['category']}: {a['what'][:110]}{extra}")
            for n in a["plan"]:
                batches = f" batches={n['batches']}" if n.get("batches") else ""
                workers = f" workers={n['workers']}" if n.get("workers") is not None else ""
                print(f"{'':14}{'  ' * n['depth']}{n['node']}: {n['ms']:.1f} ms, "
                      f"{n['rows']} rows{batches}{workers}")
    seq = r["lower_bound_seconds"] * 1000
    print("sum alone by kind: " + ", ".join(f"{k} {v:.0f} ms ({v / seq:.2f}x seq scan)"
                                             for k, v in sorted(by_cat.items(),
                                                                key=lambda kv: -kv[1])))
    hand = r["by_hand_seconds"] * 1000
    print(f"the same checks by hand, one after another: {hand:.0f} ms; the suite's scans alone "
          f"sum to {sum(by_cat.values()) / hand:.2f}x that")
    print(f"sum of every scanning statement alone: {sum(by_cat.values()):.0f} ms = "
          f"{sum(by_cat.values()) / seq:.2f}x the lower bound; on {os.cpu_count()} cores at best "
          f"{sum(by_cat.values()) / seq / (os.cpu_count() or 1):.2f}x; data read by the seq scan "
          f"{r['table_bytes'] / 2**20:.1f} MiB, B-tree indexes {r['index_bytes'] / 2**20:.1f} MiB")
    print("\none scan per child table (count + every orphan check in one statement) vs the "
          "separate statements, alone, serial:")
    for a in r["profile"]["one_scan"]:
        print(f"  {a['table']} ({len(a['foreign_keys'])} foreign keys): separate "
              f"{a['separate_ms']:.1f} ms, one scan {a['combined_ms']:.1f} ms "
              f"({a['combined_ms'] / a['separate_ms']:.2f}x)")


# -- one comparison at one scale -----------------------------------------------------------------


def compare(cluster: LocalCluster, scale: float, repeat: int, profile: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    rows = _common.build_sample(cluster, scale, db=DB, seed=SEED)
    with psycopg.connect(cluster.dsn(DB), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        rows = {**rows, **{t: int(conn.execute(sql.SQL("SELECT count(*) FROM {}")
                                               .format(sql.Identifier(t))).fetchone()[0])
                           for t in ("audit_log",)}}
        with conn.transaction():
            baseline = integrity.capture_baseline(conn, CRITICAL)
        setup = time.perf_counter() - t0
        print(f"scale {scale:g}: {rows} generated, baseline captured ({setup:.0f}s)", flush=True)
        table_bytes = int(conn.execute(
            "SELECT sum(pg_table_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'"
        ).fetchone()[0])
        index_bytes = int(conn.execute(
            "SELECT sum(pg_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'i'"
        ).fetchone()[0])
        ctx = Context(cluster, conn, baseline, rows)
        try:
            for variant in VARIANTS:  # warm the caches; a wrong answer stops here already
                RUNNERS[variant](ctx)
            # Each runner checks its result before it returns its time.
            times, runs_wall = _common.timed_rounds(VARIANTS, repeat,
                                                    lambda variant: RUNNERS[variant](ctx))
            medians = {v: statistics.median(ts) for v, ts in times.items()}
            lower = min(medians[v] for v in LOWER_BOUNDS)
            hand = min(medians[v] for v in BY_HAND)
            by_hand = min(BY_HAND, key=lambda v: medians[v])
            # The same rounds, the custom check's share taken out (per run, then the median).
            without = statistics.median(
                t - c for t, c in zip(times[by_hand], ctx.hand_custom_seconds[by_hand][-repeat:],
                                      strict=True))
            result: dict[str, Any] = {
                "scale": scale, "rows": rows, "table_bytes": table_bytes,
                "index_bytes": index_bytes, "repeat": repeat, "setup_seconds": setup,
                "runs_wall_seconds": runs_wall, "seconds": times, "median_seconds": medians,
                "lower_bound_seconds": lower,
                "lower_bound": min(LOWER_BOUNDS, key=lambda v: medians[v]),
                "ratio_vs_lower_bound": {v: medians[v] / lower for v in VARIANTS},
                "by_hand_seconds": hand, "by_hand": by_hand,
                "ratio_vs_by_hand": {v: medians[v] / hand for v in VARIANTS},
                "by_hand_without_custom_seconds": without,
                "ratio_no_custom_vs_by_hand_without_custom":
                    medians["verify, no custom"] / without,
                "by_hand_statements": {k: sum(1 for kind, _ in ctx.hand if kind == k)
                                       for k in ("count", "orphans", "custom", "amcheck")},
                "checks": [c.name for c in ctx.last_report.checks] if ctx.last_report else [],
            }
            if profile:
                trace = trace_verify(ctx)
                result["profile"] = {"trace": trace, "alone": explain_alone(ctx, trace),
                                     "one_scan": one_scan_alternative(ctx)}
        finally:
            ctx.close()
    return result


def print_table(r: dict[str, Any]) -> None:
    m, ratio, hand = r["median_seconds"], r["ratio_vs_lower_bound"], r["ratio_vs_by_hand"]
    print(f"\nscale {r['scale']:g}: {sum(r['rows'].values()):,} rows in {len(r['rows'])} tables "
          f"({r['table_bytes'] / 2**20:.0f} MiB of tables, {r['index_bytes'] / 2**20:.0f} MiB "
          f"of B-tree indexes); {len(r['checks'])} checks; by hand: "
          + ", ".join(f"{n} {k}" for k, n in r["by_hand_statements"].items()))
    print(f"{'variant':22}{'median s':>10}{'x by hand':>11}{'x count(*)':>12}")
    for v in m:
        print(f"{v:22}{m[v]:10.3f}{hand[v]:11.2f}{ratio[v]:12.2f}")
    met = "met" if hand["verify"] <= TARGET else "missed"
    print(f"verify / by hand ({r['by_hand']}) = {hand['verify']:.2f} (target <= {TARGET} on "
          f"{os.cpu_count()} cores: {met}); verify, no custom / by hand without the custom "
          f"check ({r['by_hand_without_custom_seconds']:.3f}s) = "
          f"{r['ratio_no_custom_vs_by_hand_without_custom']:.2f}; verify / count(*) of every "
          f"table ({r['lower_bound']}, reference) = {ratio['verify']:.2f}")


def main() -> None:
    parser = _common.argument_parser(__doc__)
    _common.add_scale_arguments(parser, default=10.0, example="2.5,10",
                                help="sample scale (1 = 100k rows); default 10 (1M rows)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each variant")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the traced run and the EXPLAIN ANALYZE of each statement")
    _common.add_out_argument(parser, "verify")
    args = parser.parse_args()
    scales = _common.scales(args)
    with _common.started_clusters("restorekit-verify-bench-", ["db"],
                                  SETTINGS) as (_, (cluster,)):
        load_before = _common.loadavg()
        results = []
        for scale in scales:
            r = compare(cluster, scale, args.repeat, not args.no_profile)
            print_table(r)
            if "profile" in r:
                print_profile(r)
            results.append(r)
        out: dict[str, Any] = {
            "benchmark": "verification suite (restorekit.integrity.verify, as the flows run it) "
                         "vs the same checks written by hand and run one after another",
            **_common.run_header(cluster, load_before, SETTINGS, SEED),
            "critical_tables": CRITICAL, "custom_check": CUSTOM.sql, "repeat": args.repeat,
            "target": f"verify / by hand <= {TARGET} (by hand: the same checks written by "
                      "hand, one after another on one session, the faster of with and without "
                      "parallel workers)", "scales": scales, "results": results,
        }
        _common.save_with_growth("verify", out, results, lambda rs: _common.print_growth(
            rs, VARIANTS, lambda r: sum(r["rows"].values()), "same schema, more rows",
            width=22), args.out, load_before)

if __name__ == "__main__":
    main()

"""RTO at a real size: scenario 1's restore of a database of --gb GB, phase by phase, each phase
against its lower bound measured in the same run, with and without compressed backups.

What it does, in one run:

1. builds a source cluster with a database ``app`` of about --gb GB: the sample schema (users,
   clients, appointments with their foreign keys, at a small scale) plus an ``events`` table
   filled with generated rows until the database reaches the size (archiving discards WAL while
   it loads);
2. for each --compression variant (default ``none,lz4``) in its own repository: points the
   archive_command there, takes a native base backup (``[backups] compression`` = the variant:
   pg_basebackup --compress client-side, segments compressed by the archive_command), then runs a
   write workload (INSERT/UPDATE batches into ``events``) until --wal-gb GB of WAL is written and
   archived after the backup;
3. times scenario 1's steps on each variant (median of --repeat, rotated):

   ============  =====================================================  ==========================
   phase         restorekit                                             lower bound, same run
   ============  =====================================================  ==========================
   base restore  ``restorekit restore --to-new --point latest``'s       ``tar -x`` of the stored
                 own phase (repository read + checksum + untar)         base object (through the
                                                                        codec's program) as the
                                                                        PostgreSQL OS user
   WAL replay    the same command's phase (server start, restore_       ``pg_waldump --stats``
                 command per segment, redo, promotion)                  reading the same WAL
                                                                        (plain, already fetched)
   verification  ``restorekit.integrity.verify`` (counts, one           the same checks written
                 anti-join per foreign key, bt_index_check per index,   by hand, one psql script
                 schema fingerprint), as scenario 1 runs it             run start to end
   swap          the env-file connection store's atomic write and       printf > tmp && mv
                 read-back (scenario 1's swap)
   health        ``restorekit.health.check_health`` against a local     ``psql -c 'SELECT 1'``
                 HTTP health endpoint that queries the restored DB
   ============  =====================================================  ==========================

   plus the whole command (``restore --to-new`` wall time, CLI start included) and, per variant,
   the bytes in the repository per GB of database (base object, WAL at rest against the WAL's
   own size) and the backup's time.

Prints a table and writes bench/results/rto-<UTC time>.json. Nothing here asserts on time.
The machine's other work shows in the figures: the load average before and after is printed.

Sizes (disk: about 3x --gb for the source, the restores and the plain repository, plus the
compressed one; time grows about linearly with --gb and --wal-gb)::

    python bench/rto_bench.py                            # 1 GB, 0.5 GB of WAL: ~5 min on 2 cores
    python bench/rto_bench.py --gb 10 --wal-gb 5         # 10 GB: ~40 min, ~40 GB of disk
    python bench/rto_bench.py --gb 50 --wal-gb 20 --compression lz4 --repeat 1
                                                         # 50 GB: hours, ~150 GB of disk
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _common  # bench/_common.py, beside this script
import psycopg
from pydantic import SecretStr
from restore_bench import _as_user, _run_timed, base_object, lower_bounds

from restorekit import integrity, sample
from restorekit.engines.base import SourceSpec
from restorekit.engines.native import NativeEngine
from restorekit.health import check_health
from restorekit.models import parse_lsn
from restorekit.pg.cluster import LocalCluster, switch_wal_and_wait_archived
from restorekit.pg.tools import default_os_user, make_dir
from restorekit.providers.selfhosted import SelfHostedProvider
from restorekit.repository import open_repository
from restorekit.sinks.envfile import EnvFileStore

GB = 1_000_000_000
CRITICAL_TABLES = ["users", "clients", "appointments", "events"]
PHASES = ["base restore", "wal replay", "verification", "swap", "health"]
BOUNDS = {"base restore": "tar -x of the base object", "wal replay": "pg_waldump --stats",
          "verification": "the checks as one psql script", "swap": "printf > tmp && mv",
          "health": "psql SELECT 1"}

_EVENTS = """
CREATE TABLE events (
    id bigserial PRIMARY KEY,
    user_id int NOT NULL REFERENCES users (id),
    at timestamptz NOT NULL,
    kind text NOT NULL,
    payload text NOT NULL
);
CREATE INDEX events_user_at ON events (user_id, at);
"""
# Rows of about 300 bytes: a repeated hash (compresses like JSON-ish text does) and a kind.
_FILL = """
INSERT INTO events (user_id, at, kind, payload)
SELECT 1 + (g %% %(users)s), now() - g * interval '1 second',
       (ARRAY['login','view','edit','pay'])[1 + g %% 4],
       repeat(md5(g::text || %(salt)s), 7)
FROM generate_series(1, %(rows)s) g
"""


def build_database(source: LocalCluster, gb: float, seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    with source.connect(autocommit=True) as conn:
        conn.execute("CREATE DATABASE app")
    with psycopg.connect(source.dsn("app"), autocommit=True) as conn:
        sample.create_schema(conn)
        counts = sample.generate(conn, scale=1.0, seed=seed)
        conn.execute(_EVENTS)
        users = counts.get("users") or 1000
        batch, salt = 500_000, 0
        while _db_size(conn) < gb * GB:
            salt += 1
            conn.execute(_FILL, {"users": users, "salt": str(salt), "rows": batch})
        conn.execute("VACUUM ANALYZE")
        size = _db_size(conn)
    return {"database_bytes": size, "sample_rows": counts,
            "build_seconds": time.perf_counter() - started}


def _db_size(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("SELECT pg_database_size('app')").fetchone()[0])  # type: ignore[index]


def write_workload(dsn: str, wal_gb: float) -> dict[str, Any]:
    """INSERT and UPDATE batches until ``wal_gb`` GB of WAL was written."""
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        first = _lsn(conn)
        salt = 1000
        while _lsn(conn) - first < wal_gb * GB:
            salt += 1
            conn.execute(_FILL, {"users": 1000, "salt": str(salt), "rows": 100_000})
            conn.execute("UPDATE events SET kind = kind || '!' WHERE id %% 97 = %s",
                         (salt % 97,))
        written = _lsn(conn) - first
    return {"wal_bytes": written, "seconds": time.perf_counter() - started}


def _lsn(conn: psycopg.Connection[Any]) -> int:
    return parse_lsn(str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]))  # type: ignore[index]


def _du(path: Path, prefix: str) -> int:
    root = path / prefix
    return sum(p.stat().st_size for p in root.rglob("*")
               if p.is_file() and not p.name.endswith(".sha256.json"))


# -- the phases after the restore -------------------------------------------------------------


def checks_script(dsn: str, tables: list[str]) -> str:
    """The verification written by hand: exact counts, one anti-join per single-column foreign
    key, bt_index_check per B-tree index, one after another."""
    lines = ["\\set ON_ERROR_STOP on", "\\o /dev/null"]
    lines += [f"SELECT count(*) FROM {t};" for t in tables]
    with psycopg.connect(dsn) as conn:
        fks = conn.execute("""
            SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text, b.attname
            FROM pg_constraint c
            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
            JOIN pg_attribute b ON b.attrelid = c.confrelid AND b.attnum = c.confkey[1]
            WHERE c.contype = 'f' AND cardinality(c.conkey) = 1
              AND c.connamespace = 'public'::regnamespace""").fetchall()
        indexes = conn.execute("""
            SELECT i.indexrelid::regclass::text FROM pg_index i
            JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
            WHERE am.amname = 'btree' AND c.relnamespace = 'public'::regnamespace""").fetchall()
    for child, col, parent, pcol in fks:
        lines.append(f"SELECT count(*) FROM {child} c LEFT JOIN {parent} p ON p.{pcol} = c.{col} "
                     f"WHERE c.{col} IS NOT NULL AND p.{pcol} IS NULL;")
    lines += [f"SELECT bt_index_check('{name}'::regclass);" for (name,) in indexes]
    return "\n".join(lines) + "\n"


class _Health(http.server.BaseHTTPRequestHandler):
    dsn = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        started = time.perf_counter()
        with psycopg.connect(self.dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
        body = json.dumps({"ok": True, "database": {
            "connected": True, "latency": f"{(time.perf_counter() - started) * 1000:.0f}ms"}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


def after_restore(dsn: str, work: Path, psql: str) -> tuple[dict[str, float], dict[str, float]]:
    """Scenario 1's verification, swap and health on the restored database, each next to its
    lower bound."""
    ours: dict[str, float] = {}
    bound: dict[str, float] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
    script = work / "checks.sql"
    script.write_text(checks_script(dsn, CRITICAL_TABLES))
    started = time.perf_counter()
    report = integrity.verify(dsn, critical_tables=CRITICAL_TABLES, amcheck=True)
    ours["verification"] = time.perf_counter() - started
    assert report.ok, [c.name for c in report.critical_failures]
    bound["verification"] = _run_timed([psql, "-X", "-q", "-d", dsn, "-f", str(script)],
                                       stdout=subprocess.DEVNULL)

    env_file = work / "app.env"
    env_file.write_text("DATABASE_URL=postgresql://postgres@127.0.0.1:1/app\n")
    store = EnvFileStore(env_file)
    started = time.perf_counter()
    store.write(SecretStr(dsn))
    assert store.read().get_secret_value() == dsn
    ours["swap"] = time.perf_counter() - started
    bound["swap"] = _run_timed(["sh", "-c", 'printf "DATABASE_URL=%s\\n" "$1" > "$2.tmp" && '
                                'mv "$2.tmp" "$2"', "sh", dsn, str(work / "hand.env")])

    _Health.dsn = dsn
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        started = time.perf_counter()
        health = check_health(f"http://127.0.0.1:{server.server_address[1]}/api/health")
        ours["health"] = time.perf_counter() - started
        assert health.ok and health.connected, health
    finally:
        server.shutdown()
    bound["health"] = _run_timed([psql, "-X", "-Atq", "-d", dsn, "-c", "SELECT 1"],
                                 stdout=subprocess.DEVNULL)
    return ours, bound


def wal_read(engine: NativeEngine, start_lsn: str, work: Path, pg_bin: Path,
             os_user: str | None) -> tuple[float, float, int]:
    """The WAL a restore replays, fetched plain (untimed), then read by pg_waldump from the
    backup's start to the end of the archive (timed; it exits non-zero there: expected)."""
    folder = make_dir(work / f"wal-{time.monotonic_ns()}", os_user, mode=0o755)
    try:
        for name in engine.wal_segments():
            engine.fetch_wal(name, folder / name)
        for path in folder.iterdir():
            if os_user:
                shutil.chown(path, os_user)
        started = time.perf_counter()
        subprocess.run(_as_user([str(pg_bin / "pg_waldump"), "--stats", "--path", str(folder),
                                 "--start", start_lsn], os_user),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        took = time.perf_counter() - started
        segments = sorted(str(p) for p in folder.iterdir())
        cat = _run_timed(["cat", *segments], stdout=subprocess.DEVNULL) if segments else 0.0
        size = sum(p.stat().st_size for p in folder.iterdir())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return took, cat, size


def restore_once(config: Path, name: str) -> tuple[float, dict[str, Any]]:
    exe = str(Path(sys.executable).parent / "restorekit")
    started = time.perf_counter()
    out = subprocess.run([exe, "restore", "-c", str(config), "-t", "bench", "--to-new",
                          "--point", "latest", "--name", name, "--json"],
                         check=True, capture_output=True, text=True)
    return time.perf_counter() - started, json.loads(out.stdout)


def cleanup(config: Path) -> None:
    exe = str(Path(sys.executable).parent / "restorekit")
    subprocess.run([exe, "cleanup", "-c", str(config), "-t", "bench", "--json"], check=True,
                   capture_output=True)


def prepare_variant(variant: str, base: Path, source: LocalCluster, settings: dict[str, Any],
                    spec: SourceSpec, wal_gb: float, os_user: str | None) -> dict[str, Any]:
    """The variant's repository: archiving pointed there, a base backup with its compression,
    then ``wal_gb`` GB of writes archived after it."""
    slug = variant.replace(":", "-")
    repo_dir = make_dir(base / f"repo-{slug}", os_user, mode=0o755)
    repo_url = f"file://{repo_dir}"
    engine = NativeEngine(spec, open_repository(repo_url, os_user=os_user), repo_url=repo_url,
                          work_dir=base / f"work-{slug}", compression=variant)
    source.write_settings({**settings, **engine.archive_settings()})
    with psycopg.connect(source.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)
    switch_wal_and_wait_archived(source.dsn())
    provider = SelfHostedProvider(engine=engine, source=spec,
                                  restore_root=base / f"restores-{slug}", target_name="bench")
    started = time.perf_counter()
    backup = provider.create_backup(f"rto bench {variant}")
    backup_seconds = time.perf_counter() - started
    workload = write_workload(source.dsn("app"), wal_gb)
    switch_wal_and_wait_archived(source.dsn("app"), timeout=1800)
    base_obj = base_object(repo_dir, backup.backup_id)
    wal_at_rest = _du(repo_dir, "wal")
    wal_logical = sum(o.size for o in engine.repo.list("wal/"))
    config = base / f"restorekit-{slug}.toml"
    config.write_text(_common.NATIVE_CONFIG.format(state=base / f"state-{slug}", port=source.port,
                                    repo=repo_dir))
    print(f"[{variant}] backup {backup_seconds:.1f} s, {base_obj.name} "
          f"{base_obj.stat().st_size / GB:.2f} GB; WAL after it "
          f"{workload['wal_bytes'] / GB:.2f} GB written, archive {wal_logical / GB:.2f} GB"
          f" ({wal_at_rest / GB:.2f} GB at rest)", flush=True)
    return {"engine": engine, "config": config, "base_object": base_obj,
            "work": make_dir(base / f"bounds-{slug}", os_user, mode=0o755),
            "backup_seconds": backup_seconds, "backup_id": backup.backup_id,
            "backup_start_lsn": backup.start_lsn, "wal_written_bytes": workload["wal_bytes"],
            "workload_seconds": workload["seconds"], "wal_archive_bytes": wal_logical,
            "wal_archive_bytes_at_rest": wal_at_rest}


def measure_restore(setup: dict[str, Any], name: str, pg_bin: Path, psql: str,
                    os_user: str | None) -> dict[str, Any]:
    """One scenario-1 restore of a variant, each phase next to its lower bound."""
    total, report = restore_once(setup["config"], name)
    phases = dict(report.get("phases_seconds") or {})
    try:
        ours, bound = after_restore(report["dsn"], setup["work"], psql)
    finally:
        cleanup(setup["config"])
    bound["base restore"] = lower_bounds(setup["base_object"], setup["work"], os_user)["tar -x"]
    bound["wal replay"], cat_wal, read_bytes = wal_read(
        setup["engine"], setup["backup_start_lsn"], setup["work"], pg_bin, os_user)
    return {"restore_to_new_seconds": total, "phases": {**phases, **ours},
            "lower_bounds": bound, "wal_bytes_read_by_pg_waldump": read_bytes,
            "cat_wal_seconds": cat_wal}


def main() -> None:
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--gb", type=float, default=1.0, help="database size in GB (default 1)")
    parser.add_argument("--wal-gb", type=float, default=0.5,
                        help="WAL written after the base backup, GB (default 0.5)")
    parser.add_argument("--compression", default="none,lz4",
                        help="[backups] compression values to compare, comma-separated "
                             "(default none,lz4; e.g. none,lz4,zstd,server-lz4)")
    parser.add_argument("--repeat", type=int, default=1, help="restores per variant (default 1)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/rto-*.json)")
    args = parser.parse_args()
    variants = [v.strip() for v in args.compression.split(",") if v.strip()]
    os_user = default_os_user()
    load_before = _common.loadavg()
    base = Path(tempfile.mkdtemp(prefix="restorekit-rto-bench-",
                                 dir=os.environ.get("RESTOREKIT_TEST_TMP")))
    make_dir(base, os_user, mode=0o755)
    source: LocalCluster | None = None
    try:
        source = LocalCluster.create(base / "source")
        settings = {"wal_level": "replica", "archive_mode": "on", "archive_command": "/bin/true",
                    "max_wal_size": "4GB", "checkpoint_timeout": "15min"}
        source.write_settings(settings)
        source.start()
        pg_bin = Path(source.bin_dir) if source.bin_dir else Path("/usr/lib/postgresql/15/bin")
        psql = str(pg_bin / "psql")
        built = build_database(source, args.gb, args.seed)
        print(f"database app: {built['database_bytes'] / GB:.2f} GB in "
              f"{built['build_seconds']:.0f} s", flush=True)
        spec = SourceSpec(dsn=source.dsn("app"), os_user=os_user, bin_dir=source.bin_dir)
        results: dict[str, Any] = {}
        setups: dict[str, dict[str, Any]] = {}
        for variant in variants:
            setups[variant] = prepare_variant(variant, base, source, settings, spec, args.wal_gb,
                                              os_user)
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        # Rounds rotate the variants, so none always runs first (on cold caches) or while the
        # machine's other work happens to peak.
        for i, order in _common.rotated(variants, args.repeat):
            for variant in order:
                run = measure_restore(setups[variant], f"rto-{i}", pg_bin, psql, os_user)
                runs[variant].append(run)
                print(f"run {i + 1} [{variant}]: restore --to-new "
                      f"{run['restore_to_new_seconds']:.1f} s; " + ", ".join(
                          f"{k} {run['phases'].get(k, float('nan')):.2f}/"
                          f"{run['lower_bounds'].get(k, float('nan')):.2f} s" for k in PHASES),
                      flush=True)
        for variant in variants:
            setup, vruns = setups[variant], runs[variant]
            base_bytes = setup["base_object"].stat().st_size
            results[variant] = {
                **{k: v for k, v in setup.items() if k not in ("base_object", "engine",
                                                               "config", "work")},
                "base_object": setup["base_object"].name, "base_object_bytes": base_bytes,
                # GB in the repository per GB of database (the base object; with the WAL
                # archived after it, which depends on --wal-gb).
                "base_gb_per_gb_of_database": base_bytes / built["database_bytes"],
                "repository_gb_per_gb_of_database":
                    (base_bytes + setup["wal_archive_bytes_at_rest"]) / built["database_bytes"],
                "runs": vruns,
                "median_phases": {k: statistics.median(r["phases"].get(k, float("nan"))
                                                       for r in vruns) for k in PHASES},
                "median_lower_bounds": {k: statistics.median(
                    r["lower_bounds"].get(k, float("nan")) for r in vruns) for k in PHASES},
                "median_restore_to_new": statistics.median(r["restore_to_new_seconds"]
                                                           for r in vruns),
            }
        out = {"benchmark": "rto: scenario 1 phases at size, against their lower bounds",
               **_common.run_header(source, load_before, settings, args.seed),
               "gb": args.gb, "wal_gb": args.wal_gb, "repeat": args.repeat, **built,
               "variants": results}
        print_table(out)
        _common.save("rto", out, args.out, load_before)
    finally:
        if source is not None:
            source.destroy()
        shutil.rmtree(base, ignore_errors=True)


def print_table(out: dict[str, Any]) -> None:
    db = out["database_bytes"] / GB
    print(f"\nRTO benchmark: database {db:.2f} GB, WAL after the base backup ~{out['wal_gb']:g} GB,"
          f" {out['cores']} cores, median of {out['repeat']}")
    head = f"{'phase':14}{'lower bound':>34}"
    for v in out["variants"]:
        head += f"{v + ' s':>14}{'x bound':>9}{'bound s':>9}"
    print(head)
    for phase in PHASES:
        row = f"{phase:14}{BOUNDS[phase]:>34}"
        for r in out["variants"].values():
            ours, bound = r["median_phases"][phase], r["median_lower_bounds"][phase]
            row += f"{ours:14.2f}{ours / bound if bound else float('nan'):9.2f}{bound:9.2f}"
        print(row)
    row = f"{'total':14}{'restore --to-new + the rest':>34}"
    for r in out["variants"].values():
        total = r["median_restore_to_new"] + sum(r["median_phases"][p] for p in PHASES[2:])
        row += f"{total:14.1f}{'':18}"
    print(row)
    print("\nper variant: backup s | base object GB | base GB per GB of database | WAL at rest / "
          "WAL | pg_waldump / cat of the WAL s")
    for v, r in out["variants"].items():
        waldump = statistics.median(x["lower_bounds"]["wal replay"] for x in r["runs"])
        cat = statistics.median(x["cat_wal_seconds"] for x in r["runs"])
        print(f"  {v:12} {r['backup_seconds']:7.1f} | {r['base_object_bytes'] / GB:6.2f} | "
              f"{r['base_gb_per_gb_of_database']:6.2f} | "
              f"{r['wal_archive_bytes_at_rest'] / max(r['wal_archive_bytes'], 1):.2f} | "
              f"{waldump:.2f} / {cat:.2f}")


if __name__ == "__main__":
    main()

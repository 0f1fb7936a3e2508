"""RTO at a real size: scenario 1 (the complete-failure flow) end to end on a database of --gb
GB, each phase of the flow's own report next to its lower bound measured in the same run, with
and without compressed backups.

What it does, in one run:

1. builds the installation `restorekit demo` and the flow tests use
   (restorekit.demo.build_installation: a production cluster with scram auth, the app's role and
   env file, the local app, restorekit.toml, WAL archiving, a base backup), adds ``events``
   to its database as the app's role (rows of ~300 bytes, a foreign key to ``users``, two
   B-tree indexes) until the database reaches --gb GB, puts ``events`` in the verified critical
   tables and captures the baseline again; starts one Prefect server (Prefect's test harness)
   for the whole run (its start is not timed);
2. runs rounds of the --compression variants (default ``none,lz4``), rotated, --repeat of each.
   A round: ``[backups] compression`` set to the variant (WAL archiving switched over to it),
   a fresh base backup, writes (INSERT batches into ``events`` and DELETE of the same rows:
   the row counts the baseline holds stay right) until --wal-gb GB of WAL is written after the
   backup and archived; then production fails (its cluster stopped at once and its data
   directory removed) and the complete-failure flow runs in this process, as an operator's run
   without approval: stop the app, restore the latest point into a new cluster, verify it,
   swap the app's connection string, redeploy, check health, smoke checks, adopt the restored
   cluster as production, protect it (archiving on its new timeline, a base backup), capture
   the baseline, start the post-restore watch (no deployment here: a note). The adopted
   cluster is the next round's production, so every round restores the same data;
3. reads each run's steps and rto_seconds from the report JSON the flow wrote
   (<state_dir>/reports/production/) and the restore's own split (base restore / WAL replay)
   from the restored cluster's marker, and measures the lower bounds on the same objects:

   =====================  ============================================  =======================
   phase                  restorekit (the flow's step)                  lower bound, same round
   =====================  ============================================  =======================
   base restore           "restore to point in time": repository        ``tar -x`` of the stored
                          read, checksum, untar                         base object (through the
                                                                        codec's program) as the
                                                                        PostgreSQL OS user
   wal replay             the same step: server start, restore_command  ``pg_waldump --stats``
                          per segment, redo, promotion                  of the same WAL, fetched
                                                                        plain beforehand
   verify integrity       "verify integrity" (counts, one anti-join     the same checks by hand,
                          per foreign key, bt_index_check per index,    one psql script on the
                          schema against the baseline, custom check)    restored database
   swap connection        "swap connection string" (env file, atomic    printf > tmp && mv
   string                 write and read-back)
   check health           "check health" (the redeployed app's          psql -c 'SELECT 1'
                          /api/health)
   =====================  ============================================  =======================

   pg_waldump only decodes the records: the WAL-replay ratio also holds the restored
   server's start, the redo itself and the promotion. The other steps (stop application,
   redeploy, smoke checks, adopt, protect new production, capture baseline, ...) are
   reported with their time and no bound.

Timed: the flow run from its start to its report's finished_at (rto_seconds; it includes
protecting the new production: a base backup of the whole database), and "application back"
(from the run's start to the end of its smoke checks). Not timed: noticing the failure and
starting the run (the outage before the flow starts), the Prefect server's start, the fresh
backup and the writes of each round (the backup's time is reported), the lower bounds. The
verification bound runs after the flow on the restored cluster restarted (shared buffers empty,
the OS cache as the restore left it), and so does the flow's verification task once more,
alone, without Prefect around it ("the task alone": what the step costs beyond the checks);
the flow runs its checks on min(4, cores) connections, the bound on one.

Prints a table and writes bench/results/rto-<UTC time>.json. Nothing here asserts on time.
The machine's other work shows in the figures: the load average before and after is printed.

Sizes (disk: the database, its restore and a base backup per round in the repository; time
grows about linearly with --gb and --wal-gb)::

    python bench/rto_bench.py --gb 0.02 --wal-gb 0.01 --repeat 1   # a smoke run, 1-2 min
    python bench/rto_bench.py --gb 0.25 --wal-gb 0.125            # ~6 min at load 20 (2 cores)
    python bench/rto_bench.py                                     # 1 GB, 0.5 GB of WAL
    python bench/rto_bench.py --gb 10 --wal-gb 2 --repeat 1       # 10 GB (not run yet; tens
                                                                  # of GB of disk)
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import _common  # bench/_common.py, beside this script
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from restore_bench import _as_user, _run_timed, base_object, lower_bounds

from restorekit import baseline as baselines
from restorekit import integrity
from restorekit.demo import APP_ROLE, Installation, build_installation, teardown_installation
from restorekit.engines.adoption import turn_archiving_on
from restorekit.models import format_lsn, parse_lsn
from restorekit.pg.cluster import LocalCluster, switch_wal_and_wait_archived
from restorekit.pg.tools import default_os_user, find_bin_dir, make_dir
from restorekit.runtime import TargetRuntime
from restorekit.wal import SEGMENT_SIZE, segment_number
from restorekit.walscan import segment_name

GB = 1_000_000_000
CRITICAL_TABLES = ["users", "clients", "appointments", "events"]
#: The flow's steps that have a lower bound, and the bound. The restore step is split in two.
PHASES = ["base restore", "wal replay", "verify integrity", "swap connection string",
          "check health"]
BOUNDS = {"base restore": "tar -x of the base object", "wal replay": "pg_waldump --stats",
          "verify integrity": "the checks as one psql script",
          "swap connection string": "printf > tmp && mv", "check health": "psql SELECT 1"}
RESTORE_STEP = "restore to point in time"

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
WITH u AS (SELECT array_agg(id ORDER BY id) AS ids FROM users)
INSERT INTO events (user_id, at, kind, payload)
SELECT u.ids[1 + g %% cardinality(u.ids)], now() - g * interval '1 second',
       (ARRAY['login','view','edit','pay'])[1 + g %% 4],
       repeat(md5(g::text || %(salt)s), 7)
FROM u, generate_series(1, %(rows)s) g
"""
_ROW_BYTES = 400  # heap and index bytes (and about the WAL) per events row


# -- the installation -----------------------------------------------------------------------


def superuser_dsn(rt: TargetRuntime, dbname: str = "app") -> str:
    """restorekit's own (superuser) DSN of the current production, the adopted one after a
    round."""
    params = conninfo_to_dict(rt.provider.source.dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)


def production_cluster(inst: Installation, rt: TargetRuntime) -> LocalCluster:
    """The current production's cluster: the installation's at first, then the adopted one."""
    source = rt.provider.source
    if source.data_dir is None:
        return inst.production
    password = conninfo_to_dict(source.dsn).get("password")
    return LocalCluster(data_dir=Path(source.data_dir), port=source.port,
                        bin_dir=source.bin_dir or find_bin_dir(), os_user=source.os_user,
                        password=str(password) if password else None)


def grow(rt: TargetRuntime, gb: float) -> dict[str, Any]:
    """``events`` filled as the app's role (it owns its tables) until the database is ``gb``
    GB."""
    started = time.perf_counter()
    with psycopg.connect(superuser_dsn(rt), autocommit=True) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(APP_ROLE)))
        conn.execute(_EVENTS)
        salt = 0
        while (size := _db_size(conn)) < gb * GB:
            salt += 1
            rows = int(min(500_000, max(10_000, (gb * GB - size) / _ROW_BYTES)))
            conn.execute(_FILL, {"salt": str(salt), "rows": rows})
        conn.execute("RESET ROLE")
        conn.execute("VACUUM ANALYZE events")
        size = _db_size(conn)
    return {"database_bytes": size, "build_seconds": time.perf_counter() - started}


def _db_size(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("SELECT pg_database_size('app')").fetchone()[0])  # type: ignore[index]


def configure(inst: Installation, base_config: str, variant: str) -> TargetRuntime:
    """restorekit.toml with ``events`` verified and ``[backups] compression = variant``, and the
    current production archiving that way (restarted when its archive settings change)."""
    tables = ", ".join(f'"{t}"' for t in CRITICAL_TABLES)
    text = base_config.replace('critical_tables = ["users", "clients", "appointments"]',
                               f"critical_tables = [{tables}]")
    assert "events" in text, "restorekit.demo.CONFIG's critical_tables line changed"
    inst.config.write_text(f'{text}\n[targets.production.backups]\ncompression = "{variant}"\n')
    rt = inst.runtime()
    cluster = production_cluster(inst, rt)
    wanted = dict(rt.provider.engine.archive_settings())
    if rt.provider.source.socket_dir is not None:
        wanted["unix_socket_directories"] = str(rt.provider.source.socket_dir)
    turn_archiving_on(cluster, wanted, dsn=superuser_dsn(rt))
    return rt


def capture_baseline(rt: TargetRuntime) -> None:
    """What the flow verifies the restore against, now with ``events`` (as build_installation
    and the flow's own capture-baseline step store it)."""
    with psycopg.connect(superuser_dsn(rt)) as conn:
        baseline = integrity.capture_baseline(conn, CRITICAL_TABLES)
    baselines.save_baseline(baseline, target=rt.name, state_dir=rt.settings.state_dir,
                            repository=baselines.target_repository(rt.config.repository))


def write_workload(dsn: str, wal_gb: float) -> dict[str, Any]:
    """INSERT batches into ``events`` and DELETE of the same rows (by the ids just taken from
    the sequence: an index range) until ``wal_gb`` GB of WAL was written; the row counts stay
    as the baseline has them."""
    started = time.perf_counter()
    rows = int(min(100_000, max(1_000, wal_gb * GB / _ROW_BYTES / 4)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(APP_ROLE)))
        first = _lsn(conn)
        salt = 1000
        while _lsn(conn) - first < wal_gb * GB:
            salt += 1
            last = conn.execute("SELECT nextval('events_id_seq')").fetchone()[0]  # type: ignore[index]
            conn.execute(_FILL, {"salt": str(salt), "rows": rows})
            conn.execute("DELETE FROM events WHERE id > %s", (last,))
        written = _lsn(conn) - first
    return {"wal_bytes": written, "seconds": time.perf_counter() - started}


def _lsn(conn: psycopg.Connection[Any]) -> int:
    return parse_lsn(str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]))  # type: ignore[index]


def segment_end(name: str) -> str:
    """The LSN just after segment ``name``."""
    return format_lsn((segment_number(name) + 1) * SEGMENT_SIZE)


def segments_after(names: list[str], timeline: int, start_lsn: str) -> list[str]:
    """The segments a restore from a backup starting at ``start_lsn`` on ``timeline`` replays:
    that timeline's, from the backup's first segment on."""
    first = segment_name(timeline, parse_lsn(start_lsn))
    return [n for n in names if n[:8] == first[:8] and n >= first]


# -- the lower bounds -----------------------------------------------------------------------


def checks_script(dsn: str, tables: list[str]) -> str:
    """The verification written by hand: exact counts, one anti-join per single-column foreign
    key, bt_index_check per B-tree index, the config's custom check, one after another."""
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
    # restorekit.demo.CONFIG's custom check.
    lines.append("SELECT a.id FROM appointments a LEFT JOIN clients c ON c.id = a.client_id "
                 "WHERE c.id IS NULL;")
    return "\n".join(lines) + "\n"


def _psql(dsn: str) -> tuple[list[str], dict[str, str]]:
    """``-d`` and the environment for psql: the password through PGPASSWORD, never argv."""
    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    env = {**os.environ, **({"PGPASSWORD": str(password)} if password else {})}
    return ["-d", make_conninfo(**params)], env


def wal_read(rt: TargetRuntime, names: list[str], timeline: int, start_lsn: str, work: Path,
             pg_bin: Path, os_user: str | None) -> tuple[float, int]:
    """The WAL the restore replayed, fetched plain (untimed), then read by pg_waldump from the
    backup's start to the end of the last segment (timed). Without ``--end`` pg_waldump
    retries opening the next, missing segment for 5 s before it gives up: that wait was part
    of this bound before 2026-12-07."""
    folder = make_dir(work / f"wal-{time.monotonic_ns()}", os_user, mode=0o755)
    try:
        for name in names:
            rt.provider.engine.fetch_wal(name, folder / name)
            if os_user:
                shutil.chown(folder / name, os_user)
        started = time.perf_counter()
        subprocess.run(_as_user([str(pg_bin / "pg_waldump"), "--stats", "--path", str(folder),
                                 "--timeline", str(timeline), "--start", start_lsn,
                                 "--end", segment_end(names[-1])], os_user),
                       stdout=subprocess.DEVNULL, check=True)
        took = time.perf_counter() - started
        size = sum(p.stat().st_size for p in folder.iterdir())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return took, size


def cold_buffers(inst: Installation, rt: TargetRuntime) -> None:
    """Restart the restored cluster: shared buffers empty, the OS page cache as the restore
    left it. The flow verified a cluster just out of WAL replay; a bound run after that
    verification, on the buffers it filled, would be measured on a warmer cache (it was, before
    2026-12-07)."""
    cluster = production_cluster(inst, rt)
    cluster.stop()
    cluster.start()


def after_flow_bounds(inst: Installation, rt: TargetRuntime, work: Path,
                      psql: str) -> dict[str, float]:
    """Verification, swap and health by hand on the restored database the flow adopted, and
    the flow's verification task alone (no Prefect around it), each on cold shared buffers."""
    from tasks._runtime import TargetRef
    from tasks.database import verify_integrity

    dsn = superuser_dsn(rt)
    script = work / "checks.sql"
    script.write_text(checks_script(dsn, CRITICAL_TABLES))
    target, env = _psql(dsn)
    cold_buffers(inst, rt)
    bound = {"verify integrity": _run_timed([psql, "-X", "-q", *target, "-f", str(script)],
                                            stdout=subprocess.DEVNULL, env=env)}
    cold_buffers(inst, rt)
    started = time.perf_counter()
    verify_integrity.fn(TargetRef(target="production", config=str(inst.config)))
    bound["verify integrity, the task alone"] = time.perf_counter() - started
    bound["swap connection string"] = _run_timed(
        ["sh", "-c", 'printf "DATABASE_URL=%s\\n" "$1" > "$2.tmp" && mv "$2.tmp" "$2"', "sh",
         "postgresql://app@127.0.0.1:1/app", str(work / "hand.env")])
    app_target, app_env = _psql(rt.live_dsn())  # the app's role, as its health endpoint
    bound["check health"] = _run_timed([psql, "-X", "-Atq", *app_target, "-c", "SELECT 1"],
                                       stdout=subprocess.DEVNULL, env=app_env)
    return bound


# -- one round --------------------------------------------------------------------------------


def prepare(inst: Installation, base_config: str, variant: str,
            wal_gb: float) -> dict[str, Any]:
    """The variant's compression, a fresh base backup, then ``wal_gb`` GB of writes archived
    after it."""
    rt = configure(inst, base_config, variant)
    dsn = superuser_dsn(rt)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # The last round's deleted rows: their space is reused, the database stays its size.
        conn.execute("VACUUM events")
        size = _db_size(conn)
    started = time.perf_counter()
    backup = rt.provider.create_backup(f"rto bench {variant}")
    backup_seconds = time.perf_counter() - started
    workload = write_workload(dsn, wal_gb)
    switch_wal_and_wait_archived(dsn, timeout=1800)
    repo = Path(rt.config.repository.removeprefix("file://"))
    names = segments_after(rt.provider.engine.wal_segments(), backup.timeline, backup.start_lsn)
    # A segment as stored: plain or with its codec's suffix (not .backup files, not sidecars).
    at_rest = sum(p.stat().st_size for n in names for p in (repo / "wal").glob(f"{n}*")
                  if p.name == n or p.name in (f"{n}.lz4", f"{n}.zst", f"{n}.gz"))
    obj = base_object(repo, backup.backup_id)
    return {"rt": rt, "database_bytes": size, "backup_id": backup.backup_id,
            "backup_seconds": backup_seconds, "timeline": backup.timeline,
            "start_lsn": backup.start_lsn, "base_object": obj,
            "base_object_bytes": obj.stat().st_size, "wal_segments": names,
            "wal_written_bytes": workload["wal_bytes"],
            "workload_seconds": workload["seconds"], "wal_bytes_at_rest": at_rest}


def fail_production(inst: Installation, rt: TargetRuntime) -> None:
    """Scenario 1's "the database is gone": the cluster stopped at once, its data removed."""
    cluster = production_cluster(inst, rt)
    cluster.stop(mode="immediate")
    shutil.rmtree(cluster.data_dir)


def run_flow(inst: Installation, incident: str) -> tuple[dict[str, Any], dict[str, float]]:
    """The complete-failure flow, in this process; its report as written to the reports
    directory, and the restore's own phases (from the restored cluster's marker)."""
    from flows.complete_failure import CompleteFailureParams, complete_failure
    from tasks.database import restore_name

    reports = inst.runtime().reports_dir()
    before = set(reports.glob("*-complete-failure.json"))
    complete_failure(CompleteFailureParams(target="production", config=str(inst.config),
                                           require_approval=False, incident_id=incident))
    (path,) = set(reports.glob("*-complete-failure.json")) - before
    report: dict[str, Any] = json.loads(path.read_text())
    if report["outcome"] != "succeeded":
        raise SystemExit(f"complete-failure {incident}: {report['outcome']}: {report['error']}")
    restored = inst.runtime().provider.find_restored(restore_name("cf", incident))
    assert restored is not None, incident
    return report, dict(restored.phases)


def measure(inst: Installation, base_config: str, variant: str, incident: str, wal_gb: float,
            work: Path, pg_bin: Path, os_user: str | None) -> dict[str, Any]:
    """One round: prepare, fail production, run the flow, then the lower bounds."""
    setup = prepare(inst, base_config, variant, wal_gb)
    fail_production(inst, setup.pop("rt"))
    report, restore_phases = run_flow(inst, incident)
    steps = {s["name"]: s["seconds"] for s in report["steps"]}
    started = _time(report["started_at"])
    smoke = next((s for s in report["steps"] if s["name"] == "smoke checks"), None)
    app_back = (_time(smoke["started_at"]) - started + smoke["seconds"]) if smoke else None
    phases = {**restore_phases, **{p: steps[p] for p in PHASES[2:] if p in steps}}
    rt = inst.runtime()  # now on the adopted production
    written = wal_since_promotion(rt)
    bound = after_flow_bounds(inst, rt, work, str(pg_bin / "psql"))
    bound["base restore"] = lower_bounds(setup["base_object"], work, os_user)["tar -x"]
    bound["wal replay"], read = wal_read(rt, setup["wal_segments"], setup["timeline"],
                                         setup["start_lsn"], work, pg_bin, os_user)
    return {**{k: v for k, v in setup.items() if k != "wal_segments"},
            "base_object": setup["base_object"].name, "incident": incident,
            "rto_seconds": report["rto_seconds"], "app_back_seconds": app_back,
            "protection": report.get("protection", ""),
            "steps": steps, "restore_phases": restore_phases, "phases": phases,
            "lower_bounds": bound, "wal_bytes_replayed": read, "wal_since_promotion": written}


def wal_since_promotion(rt: TargetRuntime) -> dict[str, int]:
    """The WAL the restored cluster wrote after its promotion (its statistics start empty after
    archive recovery), full-page images apart, against the app database's pages. The flow's
    verification is the first reader of the replayed rows: setting their hint bits with data
    checksums on writes a full-page image of each page it dirties first after a checkpoint,
    which is what makes the flow's step slower than the bounds measured after it."""
    with psycopg.connect(superuser_dsn(rt)) as conn:
        fpi, wal_bytes = conn.execute("SELECT wal_fpi, wal_bytes FROM pg_stat_wal").fetchone()
        pages = conn.execute("SELECT sum(pg_relation_size(oid)) / 8192 FROM pg_class "
                             "WHERE relkind IN ('r', 'i', 't', 'm')").fetchone()[0]
    return {"full_page_images": int(fpi), "bytes": int(wal_bytes), "database_pages": int(pages)}


def _time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# -- the run ----------------------------------------------------------------------------------


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(get: Any) -> float | None:
        values = [v for v in (get(r) for r in runs) if v is not None]
        return statistics.median(values) if values else None

    steps = list(dict.fromkeys(name for r in runs for name in r["steps"]))
    db = med(lambda r: r["database_bytes"])
    base = med(lambda r: r["base_object_bytes"])
    wal = med(lambda r: r["wal_bytes_at_rest"])
    return {
        "runs": runs,
        "median_database_bytes": db,
        "median_phases": {p: med(lambda r, p=p: r["phases"].get(p)) for p in PHASES},
        "median_lower_bounds": {p: med(lambda r, p=p: r["lower_bounds"].get(p)) for p in PHASES},
        "median_full_page_images_since_promotion": med(
            lambda r: (r.get("wal_since_promotion") or {}).get("full_page_images")),
        "median_pages": med(lambda r: (r.get("wal_since_promotion") or {}).get("database_pages")),
        "median_verify_task_alone": med(
            lambda r: r["lower_bounds"].get("verify integrity, the task alone")),
        "median_steps": {s: med(lambda r, s=s: r["steps"].get(s)) for s in steps},
        "median_rto_seconds": med(lambda r: r["rto_seconds"]),
        "median_app_back_seconds": med(lambda r: r["app_back_seconds"]),
        "median_restore_seconds": med(lambda r: r["steps"].get(RESTORE_STEP)),
        "median_backup_seconds": med(lambda r: r["backup_seconds"]),
        # GB in the repository per GB of database: the base object, and with the WAL archived
        # after it (which depends on --wal-gb).
        "base_gb_per_gb_of_database": base / db if base and db else None,
        "repository_gb_per_gb_of_database": (base + (wal or 0)) / db if base and db else None,
        "wal_at_rest_per_wal_written": wal / med(lambda r: r["wal_written_bytes"])
        if wal else None,
    }


def main() -> None:
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--gb", type=float, default=1.0, help="database size in GB (default 1)")
    parser.add_argument("--wal-gb", type=float, default=0.5,
                        help="WAL written after each fresh base backup, GB (default 0.5)")
    parser.add_argument("--compression", default="none,lz4",
                        help="[backups] compression values to compare, comma-separated "
                             "(default none,lz4; e.g. none,lz4,zstd)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="flow runs per variant (default 1)")
    parser.add_argument("--sample-scale", type=float, default=0.2,
                        help="the sample schema's scale in the installation (1 = 100k rows; "
                             "default 0.2); events makes up the rest of --gb")
    _common.add_out_argument(parser, "rto")
    args = parser.parse_args()
    variants = [v.strip() for v in args.compression.split(",") if v.strip()]
    # The flow's INFO lines would bury the table; set before Prefect is imported.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    os_user = default_os_user()
    load_before = _common.loadavg()
    base = Path(tempfile.mkdtemp(prefix="restorekit-rto-bench-",
                                 dir=os.environ.get("RESTOREKIT_TEST_TMP")))
    make_dir(base, os_user, mode=0o755)
    inst: Installation | None = None
    try:
        started = time.perf_counter()
        inst = build_installation(base / "install", scale=args.sample_scale)
        base_config = inst.config.read_text()
        # The fill's WAL is archived too (untimed): compressed, as by default, to spare disk.
        rt = configure(inst, base_config, "lz4")
        assert rt.app is not None
        built = grow(rt, args.gb)
        capture_baseline(rt)
        rt.app.start()  # type: ignore[attr-defined]
        print(f"installation with database app: {built['database_bytes'] / GB:.2f} GB in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        pg_bin = production_cluster(inst, rt).bin_dir
        work = make_dir(base / "bounds", os_user, mode=0o755)
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        with prefect_test_harness(server_startup_timeout=120):
            # Rounds rotate the variants, so none always runs first or while the machine's
            # other work happens to peak.
            for i, order in _common.rotated(variants, args.repeat):
                for variant in order:
                    run = measure(inst, base_config, variant, f"rto-{i}-{variant}", args.wal_gb,
                                  work, pg_bin, os_user)
                    runs[variant].append(run)
                    print(f"run {i + 1} [{variant}]: RTO {run['rto_seconds']:.1f} s, app back "
                          f"after {run['app_back_seconds'] or float('nan'):.1f} s; " + ", ".join(
                              f"{k} {run['phases'].get(k, float('nan')):.2f}/"
                              f"{run['lower_bounds'].get(k, float('nan')):.2f} s"
                              for k in PHASES), flush=True)
        results = {v: summarise(runs[v]) for v in variants}
        # build_installation generates the sample with restorekit.sample's default seed, 42.
        header = _common.run_header(production_cluster(inst, inst.runtime()), load_before,
                                    {}, 42)
        out = {"benchmark": "rto: scenario 1 end to end through the flow, each phase against "
                            "its lower bound",
               **header, "gb": args.gb, "wal_gb": args.wal_gb, "repeat": args.repeat,
               "sample_scale": args.sample_scale, "build": built,
               "database_bytes": statistics.median(
                   r["median_database_bytes"] for r in results.values()),
               "default_variant": "lz4" if "lz4" in variants else variants[0],
               "variants": results}
        print_table(out)
        _common.save("rto", out, args.out, load_before)
    finally:
        if inst is not None:
            teardown_installation(inst)
        shutil.rmtree(base, ignore_errors=True)


def _f(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(out: dict[str, Any]) -> None:
    db = out["database_bytes"] / GB
    print(f"\nRTO benchmark, scenario 1 through the complete-failure flow: database {db:.2f} GB, "
          f"WAL after the base backup ~{out['wal_gb']:g} GB, {out['cores']} cores, median of "
          f"{out['repeat']}")
    variants = out["variants"]
    head = f"{'phase':24}{'lower bound':>32}"
    for v in variants:
        head += f"{v + ' s':>12}{'x bound':>9}{'bound s':>9}"
    print(head)
    for phase in PHASES:
        row = f"{phase:24}{BOUNDS[phase]:>32}"
        for r in variants.values():
            ours, bound = r["median_phases"][phase], r["median_lower_bounds"][phase]
            ratio = ours / bound if ours is not None and bound else None
            row += f"{_f(ours, '.2f'):>12}{_f(ratio, '.2f'):>9}{_f(bound, '.2f'):>9}"
        print(row)
    row = f"{'  the task alone':24}{'the checks as one psql script':>32}"
    for r in variants.values():
        alone, bound = r.get("median_verify_task_alone"), r["median_lower_bounds"][PHASES[2]]
        ratio = alone / bound if alone is not None and bound else None
        row += f"{_f(alone, '.2f'):>12}{_f(ratio, '.2f'):>9}{_f(bound, '.2f'):>9}"
    print(row)
    print(f"{'  full-page images after promotion / pages of the database':64}" + "".join(
        f"{_f(r['median_full_page_images_since_promotion'], '.0f')} / "
        f"{_f(r['median_pages'], '.0f')}   " for r in variants.values()))
    steps = list(dict.fromkeys(s for r in variants.values() for s in r["median_steps"]))
    print("\nevery step of the flow's report (s):")
    for step in steps:
        print(f"  {step:38}" + "".join(f"{_f(r['median_steps'].get(step), '.2f'):>12}"
                                       for r in variants.values()))
    for label, key in (("application back after (s)", "median_app_back_seconds"),
                       ("RTO: the flow run, end to end (s)", "median_rto_seconds")):
        print(f"{label:40}" + "".join(f"{_f(r[key], '.1f'):>12}" for r in variants.values()))
    print("\nper variant: base backup s | base object GB per GB of database | with the WAL after "
          "it | WAL at rest / written")
    for v, r in variants.items():
        print(f"  {v:12} {_f(r['median_backup_seconds'], '7.1f')} | "
              f"{_f(r['base_gb_per_gb_of_database'], '.2f')} | "
              f"{_f(r['repository_gb_per_gb_of_database'], '.2f')} | "
              f"{_f(r['wal_at_rest_per_wal_written'], '.2f')}")


if __name__ == "__main__":
    main()

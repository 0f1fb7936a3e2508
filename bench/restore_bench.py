"""Restore benchmark: `restorekit restore --to-new` against the same steps done by hand.

Builds the sample schema at --scale in a source cluster that archives WAL into a restorekit
repository, takes a base backup, writes more rows (so there is WAL to replay), then measures in
the same run, alternating, --repeat times each:

  restorekit : `restorekit restore --to-new --point latest` (CLI process: repository download
               with checksum verification, tar extraction, recovery settings, WAL replay, promote)
  by hand    : the same base backup taken by hand (pg_basebackup -Ft at the same moment) untarred
               with tar into a new data directory, recovery.signal + restore_command, pg_ctl
               start, wait until promoted (both replay the same archived WAL)

and prints the ratio restorekit / by hand (orchestration overhead is the ratio minus one).
Results are written to bench/results/restore-<timestamp>.json. Nothing here asserts on time.

    python bench/restore_bench.py --scale 5 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from restorekit import sample
from restorekit.engines.recovery import apply_overrides, restored_cluster_settings, run_recovery, write_recovery_signal
from restorekit.pg.cluster import LocalCluster, free_port, switch_wal_and_wait_archived
from restorekit.pg.tools import PgTool, default_os_user, make_dir
from restorekit.wal import restore_command

CONFIG = """[restorekit]
state_dir = "{state}"
[targets.bench]
provider = "selfhosted"
engine = "native"
dsn = "host=127.0.0.1 port={port} user=postgres dbname=app"
repository = "file://{repo}"
"""




def take_hand_backup(source: LocalCluster, folder: Path, os_user: str | None) -> Path:
    """What an operator does by hand: pg_basebackup -Ft into a folder (same moment, same WAL
    method as restorekit's backup, so both restores replay the same WAL)."""
    make_dir(folder, os_user)
    PgTool(source.bin_dir, os_user=os_user).run(
        "pg_basebackup", "-d", source.dsn(), "-D", str(folder), "-Ft", "--wal-method=fetch",
        "--checkpoint=fast", "--no-sync")
    return folder


def by_hand(source: LocalCluster, hand_backup: Path, repo_url: str, work: Path,
            os_user: str | None) -> float:
    """Untar the base backup into a new data directory, recovery settings, start, wait for the
    promotion: the runbook's restore done by hand, from a backup on local disk."""
    data = work / f"hand-{time.monotonic_ns()}"
    make_dir(data, os_user)
    started = time.perf_counter()
    subprocess.run(["runuser", "-u", os_user, "--", "tar", "-xf", str(hand_backup / "base.tar"),
                    "-C", str(data)] if os_user else
                   ["tar", "-xf", str(hand_backup / "base.tar"), "-C", str(data)], check=True)
    port = free_port()
    apply_overrides(data, {**restored_cluster_settings(port),
                           "restore_command": restore_command(repo_url)}, os_user)
    write_recovery_signal(data, os_user)
    cluster = LocalCluster(data_dir=data, port=port, bin_dir=source.bin_dir, os_user=os_user)
    run_recovery(cluster)
    elapsed = time.perf_counter() - started
    cluster.destroy()
    return elapsed


def with_restorekit(config: Path, name: str) -> float:
    started = time.perf_counter()
    out = subprocess.run(
        [str(Path(sys.executable).parent / "restorekit"), "restore", "-c", str(config), "-t",
         "bench", "--to-new", "--point", "latest", "--name", name, "--json"],
        check=True, capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - started
    handle = json.loads(out.stdout)["handle"]
    subprocess.run([str(Path(sys.executable).parent / "restorekit"), "cleanup", "-c",
                    str(config), "-t", "bench", "--json"], check=True, capture_output=True)
    assert not Path(handle).exists()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=5.0,
                        help="sample scale (1 = 100k rows); default 5")
    parser.add_argument("--repeat", type=int, default=3,
                        help="restores of each kind, alternating (default 3)")
    parser.add_argument("--out", type=Path,
                        help="write the JSON here (default bench/results/restore-<UTC time>.json)")
    args = parser.parse_args()
    os_user = default_os_user()
    base = Path(tempfile.mkdtemp(prefix="restorekit-bench-"))
    make_dir(base, os_user, mode=0o755)
    try:
        repo = make_dir(base / "repo", os_user, mode=0o755)
        source = LocalCluster.create(base / "source")
        config = base / "restorekit.toml"
        config.write_text(CONFIG.format(state=base / "state", port=source.port, repo=repo))
        from restorekit.config import load_settings
        from restorekit.providers.selfhosted import SelfHostedProvider

        settings = load_settings(config)
        provider = SelfHostedProvider.from_config(settings.target("bench"), settings)
        source.write_settings({**provider.engine.archive_settings(), "max_wal_size": "4GB"})
        source.start()
        with source.connect(autocommit=True) as conn:
            conn.execute("CREATE DATABASE app")
        t0 = time.perf_counter()
        with psycopg.connect(source.dsn("app"), autocommit=True) as conn:
            sample.create_schema(conn)
            counts = sample.generate(conn, scale=args.scale)
        print(f"loaded scale {args.scale}: {counts} in {time.perf_counter() - t0:.1f}s", flush=True)
        provider.create_backup("bench")
        hand_backup = take_hand_backup(source, base / "hand-backup", os_user)
        with psycopg.connect(source.dsn("app"), autocommit=True) as conn:
            # WAL to replay after the backup: rewrite a tenth of the appointments.
            conn.execute("UPDATE appointments SET notes = coalesce(notes, '') || ' (rescheduled)' "
                         "WHERE id % 10 = 0")
            size = conn.execute("SELECT pg_database_size('app')").fetchone()[0]
        switch_wal_and_wait_archived(source.dsn("app"))
        work = make_dir(base / "hand", os_user, mode=0o755)
        hand, ours = [], []
        for i in range(args.repeat):
            hand.append(by_hand(source, hand_backup, f"file://{repo}", work, os_user))
            ours.append(with_restorekit(config, f"bench-{i}"))
            print(f"run {i + 1}: by hand {hand[-1]:.2f}s  restorekit {ours[-1]:.2f}s", flush=True)
        h, o = statistics.median(hand), statistics.median(ours)
        result = {
            "benchmark": "restore --to-new vs pg_basebackup + recovery by hand",
            "when": datetime.now(UTC).isoformat(), "scale": args.scale, "rows": counts,
            "database_bytes": size, "repeat": args.repeat, "cores": os.cpu_count(),
            "by_hand_seconds": hand, "restorekit_seconds": ours,
            "median_by_hand": h, "median_restorekit": o, "ratio": o / h,
        }
        print(f"\n{'':12}{'median s':>10}\n{'by hand':12}{h:10.2f}\n{'restorekit':12}{o:10.2f}"
              f"\nratio restorekit / by hand = {o / h:.2f}  (overhead {100 * (o / h - 1):+.0f} %)")
        out = args.out or (Path(__file__).parent / "results" / f"restore-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(f"saved {out}")
        source.destroy()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

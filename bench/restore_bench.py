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

In the same rounds it measures the lower bound of the base-restore phase on the same bytes (the
base.tar restorekit's repository holds, read by the OS tools alone):

  read        : cat base.tar > /dev/null (the bytes come from the page cache, as restorekit's do)
  sha256sum   : the checksum of the same bytes in C (what verifying the object costs at least)
  tar -x      : tar -xf base.tar into a new directory as the PostgreSQL OS user (a sequential
                copy of the backup onto the disk: the base restore's lower bound)

and splits restorekit's time into its phases from the CLI's own JSON (``phases_seconds``: base
restore, WAL replay) plus the rest (CLI start, repository metadata, settings, cleanup of the
report), next to ``restorekit --help`` (the CLI process's start alone).

Then (unless --no-profile) one extra, untimed restore runs in this process under cProfile, with
the restore_command wrapped so that every call PostgreSQL makes is timed, and the server log's
timestamps read: where the base restore goes (reading the repository, sha256, writing to tar,
Python per chunk, repository metadata), where the WAL replay phase goes (server start, each
restore_command call: how many, how long each, against a plain cp of the same segment, redo, end
of recovery), and how long run_recovery took to notice the promotion after the server logged
it (polling latency).

Results are written to bench/results/restore-<timestamp>.json. Nothing here asserts on time.

    python bench/restore_bench.py --scale 5 --repeat 3
    python bench/restore_bench.py --scale 20 --repeat 3
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common  # bench/_common.py, beside this script
import psycopg

from restorekit import sample
from restorekit.engines.recovery import (
    apply_overrides,
    restored_cluster_settings,
    run_recovery,
    write_recovery_signal,
)
from restorekit.pg.cluster import LocalCluster, free_port, switch_wal_and_wait_archived
from restorekit.pg.tools import PgTool, default_os_user, make_dir
from restorekit.wal import restore_command


def take_hand_backup(source: LocalCluster, folder: Path, os_user: str | None) -> Path:
    """What an operator does by hand: pg_basebackup -Ft into a folder (same moment, same WAL
    method as restorekit's backup, so both restores replay the same WAL)."""
    make_dir(folder, os_user)
    PgTool(source.bin_dir, os_user=os_user).run(
        "pg_basebackup", "-d", source.dsn(), "-D", str(folder), "-Ft", "--wal-method=fetch",
        "--checkpoint=fast", "--no-sync")
    return folder


def by_hand(source: LocalCluster, hand_backup: Path, repo_url: str, work: Path,
            os_user: str | None, extra: dict[str, object] | None = None) -> float:
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
                           "restore_command": restore_command(repo_url), **(extra or {})},
                    os_user)
    write_recovery_signal(data, os_user)
    cluster = LocalCluster(data_dir=data, port=port, bin_dir=source.bin_dir, os_user=os_user)
    run_recovery(cluster)
    elapsed = time.perf_counter() - started
    cluster.destroy()
    return elapsed


def _as_user(argv: list[str], os_user: str | None) -> list[str]:
    return ["runuser", "-u", os_user, "--", *argv] if os_user else argv


def _run_timed(argv: list[str], **kwargs: Any) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, **kwargs)
    return time.perf_counter() - started


_CODECS = {".lz4": "lz4", ".zst": "zstd", ".gz": "gzip"}


def base_object(repo: Path, backup_id: str) -> Path:
    """The backup's base.tar in the repository as stored (base.tar, or .lz4/.zst/.gz)."""
    (found,) = [p for p in (repo / "backups" / backup_id).iterdir()
                if p.name == "base.tar" or p.name.startswith("base.tar.")
                and p.suffix in _CODECS]
    return found


def lower_bounds(base_tar: Path, work: Path, os_user: str | None) -> dict[str, float]:
    """The OS tools alone on the same bytes: read, checksum, sequential copy onto the disk."""
    out = {"read": _run_timed(["cat", str(base_tar)], stdout=subprocess.DEVNULL),
           "sha256sum": _run_timed(["sha256sum", str(base_tar)], stdout=subprocess.DEVNULL)}
    dest = work / f"copy-{time.monotonic_ns()}"
    make_dir(dest, os_user)
    codec = _CODECS.get(base_tar.suffix)  # a compressed backup: tar through the codec's program
    argv = ["tar", "-xf", str(base_tar), "-C", str(dest), *([f"--use-compress-program={codec}"]
                                                            if codec else [])]
    out["tar -x"] = _run_timed(_as_user(argv, os_user))
    shutil.rmtree(dest, ignore_errors=True)
    return out


def cli_start() -> float:
    """The restorekit CLI process alone (imports, argument parsing): ``restorekit --help``."""
    return _run_timed([str(Path(sys.executable).parent / "restorekit"), "--help"],
                      stdout=subprocess.DEVNULL)


#: What ``restorekit restore --to-new`` imports before it does anything (typer CLI, config,
#: the self-hosted provider and native engine, psycopg).
RESTORE_IMPORTS = ("restorekit.cli", "restorekit.config", "restorekit.providers.selfhosted",
                   "restorekit.engines.native", "psycopg")


def restore_imports() -> float:
    """A Python process importing what the restore command needs, and nothing else."""
    return _run_timed([sys.executable, "-c", "import " + ", ".join(RESTORE_IMPORTS)])


# -- the profile ---------------------------------------------------------------------------------

_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (\S+) ")
_EVENTS = {
    "server start": "starting PostgreSQL",
    "redo starts": "redo starts at",
    "redo done": "redo done at",
    "ready": "database system is ready to accept connections",
}


def server_timeline(log_text: str) -> dict[str, float]:
    """Unix times of the recovery's milestones in a server log (log_line_prefix '%m ...')."""
    found: dict[str, float] = {}
    for line in log_text.splitlines():
        m = _LOG_TIME.match(line)
        if not m:
            continue
        for name, marker in _EVENTS.items():
            if marker in line:
                stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
                zone = m.group(2)
                if zone not in ("UTC", "GMT"):
                    continue  # the restored clusters here log in UTC (initdb's default here)
                found[name] = stamp.replace(tzinfo=UTC).timestamp()
    return found


def timing_wrapper(command: str, calls: Path) -> str:
    """``command`` (a restore_command with %f %p) run through sh, appending one line per call
    to ``calls``: start, end (unix seconds), exit status, file name."""
    script = (f'a=$(date +%s.%N); {command}; rc=$?; '
              f'echo "$a $(date +%s.%N) $rc %f" >> {shlex.quote(str(calls))}; exit $rc')
    return "sh -c " + shlex.quote(script).replace("%", "%%").replace("%%f", "%f").replace(
        "%%p", "%p")


def read_calls(calls: Path) -> list[dict[str, Any]]:
    out = []
    if calls.exists():
        for line in calls.read_text().splitlines():
            a, b, rc, name = line.split(" ", 3)
            out.append({"start": float(a), "seconds": float(b) - float(a), "rc": int(rc),
                        "file": name})
    return out


def _cp_segment(repo: Path, work: Path) -> float | None:
    """A plain cp of one archived WAL segment: what a restore_command costs at least."""
    segments = sorted(p for p in repo.rglob("*") if p.is_file()
                      and re.fullmatch(r"[0-9A-F]{24}", p.name))
    if not segments:
        return None
    times = [_run_timed(["cp", str(segments[-1]), str(work / "segment-copy")]) for _ in range(3)]
    (work / "segment-copy").unlink(missing_ok=True)
    return min(times)


_GROUPS = {  # cProfile rows (file substring, function) summed per category, tottime
    "sha256 (hashlib update)": [("~", "<method 'update' of '_hashlib.HASH' objects>")],
    "write to tar's stdin (pipe)": [("~", "<method 'write' of '_io.BufferedWriter' objects>")],
    "read the repository file": [("~", "<method 'read' of '_io.BufferedReader' objects>"),
                                 ("~", "<method 'readinto' of '_io.BufferedReader' objects>"),
                                 ("~", "<method 'readinto' of '_io.FileIO' objects>"),
                                 ("~", "<method 'read' of '_io.FileIO' objects>")],
    "sleep (polls)": [("~", "<built-in method time.sleep>")],
    "subprocess waits (pg_ctl, tar's exit)": [("~", "<built-in method posix.waitpid>"),
                                              ("~", "<built-in method posix.read>")],
}


def profile_summary(stats: pstats.Stats) -> dict[str, Any]:
    raw = stats.stats  # type: ignore[attr-defined]
    groups: dict[str, dict[str, float]] = {}
    for name, keys in _GROUPS.items():
        tot, calls = 0.0, 0
        for (file, _line, func), (_cc, nc, tt, _ct, _callers) in raw.items():
            if any(file == k[0] and func == k[1] for k in keys):
                tot += tt
                calls += nc
        groups[name] = {"seconds": tot, "calls": calls}
    cumulative = {}
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in raw.items():
        short = f"{Path(file).name}:{func}" if file != "~" else func
        if "restorekit" in file or func in ("prepare_restore", "run_recovery"):
            cumulative[short] = max(cumulative.get(short, 0.0), ct)
    top = sorted(cumulative.items(), key=lambda kv: -kv[1])[:25]
    # Connections opened while following the replay (each one a backend forked on the server).
    connects = sum(nc for (file, _line, func), (_cc, nc, _tt, _ct, _callers) in raw.items()
                   if file.endswith("restorekit/pg/cluster.py") and func == "connect")
    return {"groups": groups, "connections_opened": connects,
            "restorekit_cumulative": [{"function": f, "seconds": s} for f, s in top]}


def profile_restore(provider: Any, repo: Path, work: Path) -> dict[str, Any]:
    """One restore in this process under cProfile, restore_command calls timed, server log
    read; the restore is discarded afterwards."""
    import restorekit.wal as wal_module
    from restorekit.models import RestorePoint

    calls = work / f"restore-command-calls-{time.monotonic_ns()}.txt"
    calls.touch()
    calls.chmod(0o666)
    real = wal_module.restore_command
    wal_module.restore_command = lambda *a, **kw: timing_wrapper(real(*a, **kw), calls)  # type: ignore[assignment]
    marks: dict[str, list[float]] = {}

    def progress(phase: str, done: Any = None, total: Any = None) -> None:
        now = time.time()
        span = marks.setdefault(phase, [now, now])
        span[1] = now

    profiler = cProfile.Profile()
    started = time.time()
    try:
        profiler.enable()
        restored = provider.restore(RestorePoint.latest(), name=f"profile-{time.monotonic_ns()}",
                                    progress=progress)
        profiler.disable()
    finally:
        wal_module.restore_command = real  # type: ignore[assignment]
    returned = time.time()
    home = Path(restored.handle)
    log_file = home / "data.log"
    log_text = log_file.read_text(errors="replace") if log_file.exists() else ""
    timeline = server_timeline(log_text)
    provider.discard(restored)
    stats = pstats.Stats(profiler)
    summary = profile_summary(stats)
    fetches = read_calls(calls)
    phases = dict(restored.phases)
    replay_started = returned - phases.get("wal replay", 0.0)
    out: dict[str, Any] = {
        "total_seconds": returned - started, "phases": phases,
        "profile": summary, "restore_command_calls": fetches,
        "restore_command": {"calls": len(fetches), "failed": sum(1 for f in fetches if f["rc"]),
                            "seconds": sum(f["seconds"] for f in fetches),
                            "mean_seconds": statistics.mean(f["seconds"] for f in fetches)
                            if fetches else None},
        "cp_one_segment_seconds": _cp_segment(repo, work),
        "server_timeline": {k: v - replay_started for k, v in timeline.items()},
        "progress_marks": {k: [v[0] - started, v[1] - started] for k, v in marks.items()},
        "server_log": log_text.splitlines()[:80],
    }
    if "ready" in timeline:
        out["promotion_noticed_after_seconds"] = returned - timeline["ready"]
    return out


def print_profile(p: dict[str, Any]) -> None:
    ph = p["phases"]
    print(f"\nprofile of one restore in this process ({p['total_seconds']:.2f}s; base restore "
          f"{ph.get('base restore', 0):.2f}s, WAL replay {ph.get('wal replay', 0):.2f}s):")
    for name, g in p["profile"]["groups"].items():
        print(f"  {g['seconds']:8.3f}s {g['calls']:7d} calls  {name}")
    print(f"  {p['profile']['connections_opened']} connection(s) opened to the restored server")
    print("  restorekit functions, cumulative:")
    for row in p["profile"]["restorekit_cumulative"][:15]:
        print(f"  {row['seconds']:8.3f}s  {row['function']}")
    t = p["server_timeline"]
    if t:
        print("  WAL replay phase, from its start (run_recovery), server log times: "
              + ", ".join(f"{k} {v:.2f}s" for k, v in t.items()))
    rc = p["restore_command"]
    cp = p["cp_one_segment_seconds"]
    if rc["calls"]:
        print(f"  restore_command: {rc['calls']} calls ({rc['failed']} 'not in the archive'), "
              f"{rc['seconds']:.2f}s in all, {rc['mean_seconds'] * 1000:.0f} ms each"
              + (f" (a cp of one segment: {cp * 1000:.1f} ms)" if cp is not None else ""))
    if "promotion_noticed_after_seconds" in p:
        print(f"  run_recovery returned {p['promotion_noticed_after_seconds'] * 1000:.0f} ms after "
              "the server logged 'ready to accept connections'")


def with_restorekit(config: Path, name: str) -> tuple[float, dict[str, float]]:
    """``restorekit restore --to-new`` as a user runs it; its time and its own phases."""
    started = time.perf_counter()
    out = subprocess.run(
        [str(Path(sys.executable).parent / "restorekit"), "restore", "-c", str(config), "-t",
         "bench", "--to-new", "--point", "latest", "--name", name, "--json"],
        check=True, capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - started
    report = json.loads(out.stdout)
    handle = report["handle"]
    subprocess.run([str(Path(sys.executable).parent / "restorekit"), "cleanup", "-c",
                    str(config), "-t", "bench", "--json"], check=True, capture_output=True)
    assert not Path(handle).exists()
    return elapsed, dict(report.get("phases_seconds") or {})


def main() -> None:
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--scale", type=float, default=5.0,
                        help="sample scale (1 = 100k rows); default 5")
    parser.add_argument("--repeat", type=int, default=3,
                        help="restores of each kind, alternating (default 3)")
    parser.add_argument("--syncfs", action="store_true",
                        help="also time the by-hand restore with recovery_init_sync_method = "
                             "syncfs (the restored server's start-up sync of its data directory "
                             "as one syncfs() instead of an fsync per file)")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the profiled in-process restore")
    _common.add_out_argument(parser, "restore")
    args = parser.parse_args()
    os_user = default_os_user()
    load_before = _common.loadavg()
    base = Path(tempfile.mkdtemp(prefix="restorekit-bench-"))
    make_dir(base, os_user, mode=0o755)
    try:
        repo = make_dir(base / "repo", os_user, mode=0o755)
        source = LocalCluster.create(base / "source")
        config = base / "restorekit.toml"
        config.write_text(_common.NATIVE_CONFIG.format(state=base / "state", port=source.port,
                                                       repo=repo))
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
        backup = provider.create_backup("bench")
        base_tar = base_object(repo, backup.backup_id)
        hand_backup = take_hand_backup(source, base / "hand-backup", os_user)
        with psycopg.connect(source.dsn("app"), autocommit=True) as conn:
            # WAL to replay after the backup: rewrite a tenth of the appointments.
            conn.execute("UPDATE appointments SET notes = coalesce(notes, '') || ' (rescheduled)' "
                         "WHERE id % 10 = 0")
            size = conn.execute("SELECT pg_database_size('app')").fetchone()[0]
        switch_wal_and_wait_archived(source.dsn("app"))
        work = make_dir(base / "hand", os_user, mode=0o755)
        print(f"{base_tar.name} in the repository: {base_tar.stat().st_size / 2**20:.0f} MiB; the "
              f"by-hand backup's: {(hand_backup / 'base.tar').stat().st_size / 2**20:.0f} MiB",
              flush=True)
        hand, ours, starts, imports, syncfs = [], [], [], [], []
        phases: dict[str, list[float]] = {}
        bounds: dict[str, list[float]] = {}
        for i in range(args.repeat):
            # Rotated so that no kind always runs first (after another's page-cache churn).
            kinds = ["by hand", "restorekit", "lower bound"] + (["syncfs"] if args.syncfs else [])
            for kind in kinds[i % len(kinds):] + kinds[:i % len(kinds)]:
                if kind == "syncfs":
                    syncfs.append(by_hand(source, hand_backup, f"file://{repo}", work, os_user,
                                          {"recovery_init_sync_method": "syncfs"}))
                elif kind == "by hand":
                    hand.append(by_hand(source, hand_backup, f"file://{repo}", work, os_user))
                elif kind == "restorekit":
                    took, phase = with_restorekit(config, f"bench-{i}")
                    ours.append(took)
                    for k, v in phase.items():
                        phases.setdefault(k, []).append(v)
                    phases.setdefault("rest (CLI start, metadata, report)", []).append(
                        took - sum(phase.values()))
                else:
                    for k, v in lower_bounds(base_tar, work, os_user).items():
                        bounds.setdefault(k, []).append(v)
                    starts.append(cli_start())
                    imports.append(restore_imports())
            print(f"run {i + 1}: by hand {hand[-1]:.2f}s  restorekit {ours[-1]:.2f}s (base restore "
                  f"{phases.get('base restore', [0])[-1]:.2f}s, WAL replay "
                  f"{phases.get('wal replay', [0])[-1]:.2f}s)  tar -x {bounds['tar -x'][-1]:.2f}s  "
                  f"sha256sum {bounds['sha256sum'][-1]:.2f}s  cat {bounds['read'][-1]:.2f}s",
                  flush=True)
        h, o = statistics.median(hand), statistics.median(ours)
        mp = {k: statistics.median(v) for k, v in phases.items()}
        mb = {k: statistics.median(v) for k, v in bounds.items()}
        base_restore = mp.get("base restore")
        result: dict[str, Any] = {
            "benchmark": "restore --to-new vs pg_basebackup + recovery by hand; base restore vs "
                         "tar -x of the same bytes",
            "when": datetime.now(UTC).isoformat(), "scale": args.scale, "rows": counts,
            "database_bytes": size, "base_object": base_tar.name,
            "base_object_bytes": base_tar.stat().st_size,
            "repeat": args.repeat, "cores": os.cpu_count(), "loadavg_before": load_before,
            "by_hand_seconds": hand, "restorekit_seconds": ours,
            "median_by_hand": h, "median_restorekit": o, "ratio": o / h,
            "restorekit_phases_seconds": phases, "median_restorekit_phases": mp,
            "lower_bound_seconds": bounds, "median_lower_bound": mb,
            "cli_start_seconds": starts, "median_cli_start": statistics.median(starts),
            "restore_imports_seconds": imports,
            "median_restore_imports": statistics.median(imports),
            "base_restore_vs_tar_x": base_restore / mb["tar -x"] if base_restore else None,
            "base_restore_mib_per_second": base_tar.stat().st_size / 2**20 / base_restore
            if base_restore else None,
            "tar_x_mib_per_second": base_tar.stat().st_size / 2**20 / mb["tar -x"],
        }
        if syncfs:
            result["by_hand_syncfs_seconds"] = syncfs
            result["median_by_hand_syncfs"] = statistics.median(syncfs)
            print(f"by hand with recovery_init_sync_method = syncfs: "
                  f"{statistics.median(syncfs):.2f}s (by hand, fsync per file: {h:.2f}s; "
                  f"{', '.join(f'{x:.2f}' for x in syncfs)})")
        print(f"\n{'':40}{'median s':>10}\n{'by hand':40}{h:10.2f}\n{'restorekit':40}{o:10.2f}")
        for k, v in mp.items():
            print(f"{'  ' + k:40}{v:10.2f}")
        print(f"{'  of the rest: restorekit --help alone':40}{result['median_cli_start']:10.2f}")
        print(f"{'    python importing the restore path':40}"
              f"{result['median_restore_imports']:10.2f}")
        for k, v in mb.items():
            print(f"{'lower bound: ' + k:40}{v:10.2f}")
        print(f"ratio restorekit / by hand = {o / h:.2f}  (overhead {100 * (o / h - 1):+.0f} %; "
              "target <= 1.1)")
        if base_restore:
            print(f"base restore / tar -x of the same bytes = {result['base_restore_vs_tar_x']:.2f}"
                  f" (target <= 1.2): {result['base_restore_mib_per_second']:.0f} MiB/s against "
                  f"{result['tar_x_mib_per_second']:.0f} MiB/s")
        if not args.no_profile:
            result["profile"] = profile_restore(provider, repo, work)
            print_profile(result["profile"])
        result["loadavg_after"] = _common.loadavg()
        _common.save("restore", result, args.out, load_before)
        source.destroy()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Every benchmark at scale S and 4S, one table of the ratios they measured.

Runs, each as its own process (its own clusters, its progress printed as it goes), each building
the sample data set (restorekit.sample, the same seed) at scale S and at 4S:

  restore   bench/restore_bench.py   restorekit restore --to-new vs the same restore by hand
  recovery  bench/recovery_bench.py  scenario 3 recovery vs the runbook's way and vs a COPY of
                                     exactly the rows (K = --k users at both scales)
  diff      bench/diff_bench.py      row diff vs reladiff (when --reladiff is given and works)
                                     and vs one hashing scan of both sides
  verify    bench/verify_bench.py    the verification suite vs the same checks by hand
  prefect   bench/prefect_bench.py   a flow run's fixed cost, a task's cost, and the
                                     accidental-deletion flow vs its task bodies called
                                     directly (on a tiny installation at scale S/50 and 4S/50)
  walscan   bench/walscan_bench.py   finding the damaging transaction and counting what a
                                     restore would lose vs pg_waldump alone over the same
                                     WAL (48 x S MB and 4x that after the good point)
  rto       bench/rto_bench.py       scenario 1 end to end through the complete-failure flow,
                                     each phase against its lower bound, without and with lz4
                                     compression (a database of 0.05 x S GB and 4x that, half
                                     that of WAL after the base backup; one build per size;
                                     at most 2 rounds per variant whatever --repeat says)

then prints one table: every ratio at S and at 4S, and for each benchmark how restorekit's time
grew from S to 4S against the data (the exponent b in time ~ rows^b: 0 = independent of the
data, 1 = linear; above ~1 it grows faster than the data). Every figure is read from the JSON the
benchmarks wrote in this run; nothing is carried over from earlier runs.

Writes bench/results/run_all-<UTC time>.json (the table and every benchmark's own JSON), a PNG
chart of the ratios against the scale next to it (bench/chart.py, run with --plot-python, a
Python that has matplotlib: `make bench` builds .bench-plot for it; without one the chart is
skipped and the table says so), and, unless --no-docs (or its older name --no-readme), puts the
table into docs/benchmarks.md between the `<!-- bench-table:begin -->` and
`<!-- bench-table:end -->` markers.

    python bench/run_all.py --scale 1                # a few minutes on 2 cores
    python bench/run_all.py --scale 10 --repeat 5    # the real measurement (make bench SCALE=10)
    python bench/run_all.py --scale 0.2 --only verify,prefect --no-docs
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common  # bench/_common.py, beside this script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCHMARKS = ("restore", "recovery", "diff", "verify", "prefect", "walscan", "rto")
BEGIN, END = "<!-- bench-table:begin -->", "<!-- bench-table:end -->"
#: The page holding the latest table between BEGIN and END (README.md before the docs split).
TABLE_PAGE = ROOT / "docs" / "benchmarks.md"


def run(name: str, argv: list[str], out: Path) -> dict[str, Any] | None:
    """One benchmark process; its JSON, or None (with the reason printed) when it failed."""
    cmd = [sys.executable, str(HERE / f"{name}_bench.py"), *argv, "--out", str(out)]
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT)
    took = time.perf_counter() - started
    if done.returncode or not out.exists():
        print(f"=== {name} FAILED (exit {done.returncode}) after {took:.0f}s", flush=True)
        return None
    print(f"=== {name} done in {took:.0f}s", flush=True)
    data: dict[str, Any] = json.loads(out.read_text())
    data["_wall_seconds"] = took
    return data


def reladiff_works(path: str | None) -> str | None:
    """The reladiff version when ``path`` runs, else None."""
    if not path:
        return None
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return done.stdout.strip() or "reladiff" if done.returncode == 0 else None


def exponent(t0: float | None, t1: float | None, d0: float, d1: float) -> float | None:
    if not t0 or not t1 or t0 <= 0 or t1 <= 0 or d1 <= d0:
        return None
    return math.log(t1 / t0) / math.log(d1 / d0)


# -- the table -----------------------------------------------------------------------------------


def rows_of(r: dict[str, Any]) -> int:
    return int(sum(v for v in r["rows"].values()))


def figures(results: dict[str, Any], scales: list[float]) -> list[dict[str, Any]]:
    """The table's rows: a benchmark, a figure, its value at each scale, a target."""
    out: list[dict[str, Any]] = []

    def add(benchmark: str, figure: str, values: list[float | None], *, kind: str,
            target: str = "", unit: str = "x") -> None:
        out.append({"benchmark": benchmark, "figure": figure, "values": values, "kind": kind,
                    "target": target, "unit": unit})

    def growth(benchmark: str, what: str, times: list[float | None],
               data: list[float]) -> None:
        ratio = times[1] / times[0] if times[0] and times[1] else None
        out.append({"benchmark": benchmark, "figure": f"growth S->4S: {what}",
                    "values": [None, ratio], "kind": "growth",
                    "data_ratio": data[1] / data[0] if data[0] else None,
                    "exponent": exponent(times[0], times[1], data[0], data[1]),
                    "target": "exponent <= ~1", "unit": "x"})

    restore = [results.get(f"restore@{s:g}") for s in scales]
    if all(restore):
        add("restore", "restorekit / by hand", [r["ratio"] for r in restore], kind="ratio",
            target="<= 1.1 at scale 20+")
        add("restore", "base restore / tar -x of the same bytes",
            [r.get("base_restore_vs_tar_x") for r in restore], kind="ratio", target="<= 1.2")
        growth("restore", "restorekit restore time", [r["median_restorekit"] for r in restore],
               [rows_of(r) for r in restore])
    else:
        add("restore", "not measured (failed or skipped)", [None, None], kind="missing")

    recovery = results.get("recovery")
    if recovery:
        rs = recovery["results"]
        add("recovery", "runbook way / restorekit", [r["ratio_vs_restorekit"]["runbook"]
                                                     for r in rs], kind="ratio",
            target="> 1 (faster than the runbook)")
        add("recovery", "restorekit / COPY of the rows", [r["restorekit_over_lower_bound"]
                                                          for r in rs], kind="ratio",
            target="small; fixed cost")
        growth("recovery", f"restorekit time (K = {rs[0]['k']} users both times)",
               [r["median_seconds"]["restorekit"] for r in rs], [rows_of(r) for r in rs])
    else:
        add("recovery", "not measured (failed or skipped)", [None, None], kind="missing")

    diff = results.get("diff")
    if diff:
        rs = diff["results"]
        if diff.get("reladiff"):
            add("diff", "reladiff / restorekit range", [r["ratio_vs_restorekit_range"]["reladiff"]
                                                        for r in rs], kind="ratio",
                target=">= 3")
        else:
            add("diff", "reladiff: not available in this run (no figure)", [None, None],
                kind="missing", target=">= 3")
        add("diff", "restorekit range / seq scan of both sides",
            [r["median_seconds"]["restorekit range"] / r["median_seconds"]["lower bound"]
             for r in rs], kind="ratio", target="<= 2")
        growth("diff", "restorekit range diff time",
               [r["median_seconds"]["restorekit range"] for r in rs],
               [r["rows"]["appointments"] for r in rs])
    else:
        add("diff", "not measured (failed or skipped)", [None, None], kind="missing")

    verify = results.get("verify")
    if verify:
        rs = verify["results"]
        add("verify", "verification suite / the same checks by hand, one after another",
            [r["ratio_vs_by_hand"]["verify"] for r in rs], kind="ratio", target="<= 0.7")
        add("verify", "  without the custom check / by hand without it",
            [r["ratio_no_custom_vs_by_hand_without_custom"] for r in rs], kind="ratio",
            target="")
        growth("verify", "verification suite time", [r["median_seconds"]["verify"] for r in rs],
               [rows_of(r) for r in rs])
    else:
        add("verify", "not measured (failed or skipped)", [None, None], kind="missing")

    prefect = [results.get(f"prefect@{s:g}") for s in scales]
    if all(prefect):
        add("prefect", "fixed cost per flow run (s)",
            [p["trivial"]["fixed_cost_per_flow_run_seconds"] for p in prefect], kind="seconds",
            target="< 0.3 s", unit="s")
        add("prefect", "  with Prefect's own heartbeats (s)",
            [p["trivial"].get("fixed_cost_prefects_heartbeats_seconds") for p in prefect],
            kind="seconds", unit="s")
        add("prefect", "  without heartbeats (s)",
            [p["trivial"]["fixed_cost_without_heartbeat_join_seconds"] for p in prefect],
            kind="seconds", unit="s")
        add("prefect", "cost per task (ms)",
            [p["trivial"]["cost_per_task_seconds"] * 1000 for p in prefect], kind="seconds",
            target="< 50 ms", unit="ms")
        add("prefect", "  extra wait of a flow run started right after another (s)",
            [p["trivial"]["extra_wait_back_to_back_seconds"] for p in prefect],
            kind="seconds", unit="s", target="per run, not per task")
        if all("scenario" in p for p in prefect):
            add("prefect", "accidental-deletion flow / same task bodies called directly",
                [p["scenario"]["ratio_flow_vs_direct"] for p in prefect], kind="ratio")
            add("prefect", "  difference per flow run (s)",
                [p["scenario"]["overhead_per_flow_run_seconds"] for p in prefect],
                kind="seconds", unit="s", target="per run, not per row")
            # No growth row: these are per-run costs on a tiny world (S/50, 4S/50), not a
            # function of the data; their spread between the two runs is noise.
    else:
        add("prefect", "not measured (failed or skipped)", [None, None], kind="missing")

    walscan = results.get("walscan")
    if walscan:
        rs = walscan["results"]
        for variant in ("find point", "what is lost"):
            add("walscan", f"{variant} / pg_waldump alone (same WAL)",
                [r["ratio_to_pg_waldump"][variant] for r in rs], kind="ratio", target="<= 1.5")
        growth("walscan", "find point time against the WAL scanned",
               [r["median_seconds"]["find point"] for r in rs],
               [r["wal_bytes_after_good_point"] for r in rs])
    else:
        add("walscan", "not measured (failed or skipped)", [None, None], kind="missing")

    rto = [results.get(f"rto@{s:g}") for s in scales]
    if all(rto):
        variant = rto[0]["default_variant"]
        by = [r["variants"][variant] for r in rto]
        add("rto", "database (GB; 0.05 GB x scale)", [r["database_bytes"] / 1e9 for r in rto],
            kind="size", unit="GB")
        for phase, bound, target in RTO_PHASES:
            add("rto", f"{phase} / {bound} ({variant})",
                [_over(v["median_phases"][phase], v["median_lower_bounds"][phase]) for v in by],
                kind="ratio", target=target)
        add("rto", f"  verify integrity, the task alone / the checks as one psql script "
                   f"({variant})",
            [_over(v.get("median_verify_task_alone"), v["median_lower_bounds"]["verify integrity"])
             for v in by], kind="ratio", target="<= 0.7")
        add("rto", f"scenario 1 RTO end to end, the flow run (s; {variant})",
            [v["median_rto_seconds"] for v in by], kind="seconds", unit="s")
        add("rto", "  application back after (s)", [v["median_app_back_seconds"] for v in by],
            kind="seconds", unit="s")
        for name in ("none", "lz4"):
            if all(name in r["variants"] for r in rto):
                add("rto", f"repository GB per GB of database (base + WAL after it): {name}",
                    [r["variants"][name]["repository_gb_per_gb_of_database"] for r in rto],
                    kind="size")
        if all({"none", "lz4"} <= set(r["variants"]) for r in rto):
            add("rto", "restore time (flow step) none / lz4",
                [_over(r["variants"]["none"]["median_restore_seconds"],
                       r["variants"]["lz4"]["median_restore_seconds"]) for r in rto],
                kind="ratio")
        growth("rto", f"scenario 1 RTO against database bytes ({variant})",
               [v["median_rto_seconds"] for v in by], [r["database_bytes"] for r in rto])
    else:
        add("rto", "not measured (failed or skipped)", [None, None], kind="missing")
    return out


#: The rto benchmark's phases with a lower bound: (phase, bound, target).
RTO_PHASES = (("base restore", "tar -x of the base object", "<= 1.2"),
              ("wal replay", "pg_waldump --stats of the same WAL", ""),
              ("verify integrity", "the checks as one psql script", "<= 0.7"),
              ("swap connection string", "printf > tmp && mv", ""),
              ("check health", "psql SELECT 1", ""))


def _over(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _cell(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "ms":
        return f"{v:.1f}"
    if unit == "s":
        return f"{v:.2f}"
    return f"{v:.3g}"


def table_markdown(agg: dict[str, Any]) -> str:
    s0, s1 = agg["scales"]
    lines = [
        f"`python bench/run_all.py --scale {s0:g}` on {agg['when'][:16].replace('T', ' ')} UTC,"
        f" {agg['cores']} cores, load average {agg['loadavg_before']} before and "
        f"{agg['loadavg_after']} after (other work on the machine shows in the numbers); "
        f"repeat {agg['repeat']}, medians. Written by the script.",
        "",
        f"| benchmark | figure | scale {s0:g} | scale {s1:g} | S->4S: time x / data x, "
        "exponent | target |",
        "|---|---|---|---|---|---|",
    ]
    for row in agg["rows"]:
        if row["kind"] == "growth":
            e, d, t = row["exponent"], row["data_ratio"], row["values"][1]
            g = (f"{t:.2f} / {d:.2f}, **{e:.2f}**" if e is not None and t is not None and d
                 else "-")
            lines.append(f"| {row['benchmark']} | {row['figure']} | | | {g} | {row['target']} |")
        else:
            a, b = (_cell(v, row["unit"]) for v in row["values"])
            lines.append(f"| {row['benchmark']} | {row['figure']} | {a} | {b} | | "
                         f"{row['target']} |")
    if agg.get("chart"):
        lines += ["", f"Chart: `{agg['chart']}`; every benchmark's JSON: `{agg['json']}`."]
    else:
        lines += ["", f"No chart in this run ({agg.get('chart_note', 'matplotlib missing')}); "
                      f"JSON: `{agg['json']}`."]
    return "\n".join(lines) + "\n"


def print_table(agg: dict[str, Any]) -> None:
    s0, s1 = agg["scales"]
    print(f"\n{'benchmark':10}{'figure':62}{f'S={s0:g}':>10}{f'4S={s1:g}':>10}"
          f"{'time x':>9}{'data x':>9}{'exp':>7}  target")
    for row in agg["rows"]:
        if row["kind"] == "growth":
            t, d, e = row["values"][1], row["data_ratio"], row["exponent"]
            print(f"{row['benchmark']:10}{row['figure'][:61]:62}{'':20}"
                  f"{_cell(t, 'x'):>9}{_cell(d, 'x'):>9}"
                  f"{(f'{e:.2f}' if e is not None else '-'):>7}  {row['target']}")
        else:
            a, b = (_cell(v, row["unit"]) for v in row["values"])
            print(f"{row['benchmark']:10}{row['figure'][:61]:62}{a:>10}{b:>10}{'':25}  "
                  f"{row['target']}")


def write_readme(readme: Path, text: str) -> bool:
    content = readme.read_text()
    if BEGIN not in content or END not in content:
        print(f"bench table: no {BEGIN} ... {END} markers in {readme}; not written")
        return False
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
    print(f"bench table: written into {readme} between the bench-table markers")
    return True


def chart(plot_python: str | None, json_path: Path, png: Path) -> str | None:
    """Draw the PNG with bench/chart.py; the reason it was not drawn, or None."""
    candidates = [plot_python] if plot_python else [
        str(ROOT / ".bench-plot" / "bin" / "python"), sys.executable]
    for python in candidates:
        if not python or not (Path(python).exists() or shutil.which(python)):
            continue
        ok = subprocess.run([python, "-c", "import matplotlib"], capture_output=True)
        if ok.returncode:
            continue
        done = subprocess.run([python, str(HERE / "chart.py"), str(json_path), str(png)])
        return None if done.returncode == 0 else f"bench/chart.py exited {done.returncode}"
    return ("no Python with matplotlib: `make bench` builds .bench-plot, or pass "
            "--plot-python")


def main() -> None:
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="S: every benchmark runs at S and 4S (1 = 100k rows; default 1, "
                             "a few minutes on 2 cores; 10 for the real measurement)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each variant")
    parser.add_argument("--k", type=int, default=100,
                        help="users deleted in the recovery benchmark (at most 10000 x S)")
    parser.add_argument("--reladiff", default=None,
                        help="the reladiff executable for the diff benchmark (default: "
                             ".bench-reladiff/bin/reladiff, else reladiff on PATH)")
    parser.add_argument("--only", type=lambda s: [x for x in s.split(",") if x],
                        default=list(BENCHMARKS),
                        help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--plot-python", help="a Python with matplotlib to draw the chart")
    parser.add_argument("--no-docs", "--no-readme", dest="no_readme", action="store_true",
                        help="do not write the table into docs/benchmarks.md")
    parser.add_argument("--results", type=Path, default=HERE / "results",
                        help="where the aggregate JSON and the PNG go (default bench/results)")
    args = parser.parse_args()
    unknown = set(args.only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    s = args.scale
    scales = [s, 4 * s]
    k = min(args.k, int(10_000 * s))
    reladiff = args.reladiff or next(
        (str(p) for p in (ROOT / ".bench-reladiff" / "bin" / "reladiff",) if p.exists()),
        shutil.which("reladiff"))
    reladiff_version = reladiff_works(reladiff)
    started = time.perf_counter()
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    agg: dict[str, Any] = {
        "benchmark": "run_all: every benchmark at S and 4S",
        "when": datetime.now(UTC).isoformat(), "cores": os.cpu_count(),
        "loadavg_before": _common.loadavg(), "scales": scales, "repeat": args.repeat,
        "k": k, "reladiff": reladiff_version,
    }
    results: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="restorekit-run-all-"))
    try:
        r = str(args.repeat)
        scale_list = ",".join(f"{x:g}" for x in scales)
        if "restore" in args.only:
            for x in scales:
                results[f"restore@{x:g}"] = run("restore", ["--scale", f"{x:g}", "--repeat", r],
                                                work / f"restore-{x:g}.json")
        if "recovery" in args.only:
            results["recovery"] = run("recovery", ["--scales", scale_list, "--k", str(k),
                                                   "--repeat", r, "--no-trace"],
                                      work / "recovery.json")
        if "diff" in args.only:
            argv = ["--scales", scale_list, "--repeat", r]
            argv += ["--reladiff", reladiff] if reladiff_version and reladiff else ["--no-reladiff"]
            if not reladiff_version:
                print(f"\nreladiff not available ({reladiff or 'not found'}): the diff benchmark "
                      "runs without it and the table says so")
            results["diff"] = run("diff", argv, work / "diff.json")
        if "verify" in args.only:
            results["verify"] = run("verify", ["--scales", scale_list, "--repeat", r],
                                    work / "verify.json")
        if "prefect" in args.only:
            for x in scales:
                results[f"prefect@{x:g}"] = run(
                    "prefect", ["--repeat", r, "--scenario-scale", f"{x / 50:g}",
                                "--scenario-repeat", r], work / f"prefect-{x:g}.json")
        if "walscan" in args.only:
            # S=1: 48 MB and 192 MB of WAL after the good point (the database stays small:
            # the scan's time is a function of the WAL, not of the data).
            results["walscan"] = run("walscan", ["--wal-mb", f"{max(8, int(48 * s))}",
                                                 "--repeat", r], work / "walscan.json")
        if "rto" in args.only:
            # S=5: 0.25 GB and 1 GB, each a build of its own (one Prefect server per size).
            # At most 2 rounds per variant: each round is a whole flow run plus a base backup
            # and the writes, which keeps S=5 near 10 minutes on 2 cores.
            for x in scales:
                gb = 0.05 * x
                results[f"rto@{x:g}"] = run(
                    "rto", ["--gb", f"{gb:g}", "--wal-gb", f"{gb / 2:g}", "--compression",
                            "none,lz4", "--repeat", str(min(args.repeat, 2))],
                    work / f"rto-{x:g}.json")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    agg["loadavg_after"] = _common.loadavg()
    agg["wall_seconds"] = time.perf_counter() - started
    agg["rows"] = figures(results, scales)
    agg["failed"] = [name for name, v in results.items() if v is None]
    agg["results"] = results
    args.results.mkdir(parents=True, exist_ok=True)
    json_path = args.results / f"run_all-{stamp}.json"
    png = args.results / f"run_all-{stamp}.png"
    agg["json"] = str(json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path)
    json_path.write_text(json.dumps(agg, indent=2, default=str))
    note = chart(args.plot_python, json_path, png)
    if note is None:
        agg["chart"] = str(png.relative_to(ROOT) if png.is_relative_to(ROOT) else png)
    else:
        agg["chart_note"] = note
        print(f"chart: {note}")
    json_path.write_text(json.dumps(agg, indent=2, default=str))
    print_table(agg)
    text = table_markdown(agg)
    if not args.no_readme:
        write_readme(TABLE_PAGE, text)
    print(f"\nall done in {agg['wall_seconds']:.0f}s; load average before "
          f"{agg['loadavg_before']}, after {agg['loadavg_after']}\nsaved {json_path}")
    if agg["failed"]:
        print(f"FAILED: {', '.join(agg['failed'])}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()

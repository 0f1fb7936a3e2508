"""Prefect benchmark: what running restorekit's work as Prefect flows and tasks costs on top of
calling the same functions directly, measured in the same run.

A temporary Prefect server is started (prefect.testing.utilities.prefect_test_harness: its own
SQLite database, as the flow tests use; its start-up time is reported, not counted). Then:

1. Trivial work, --repeat rounds, rotating the order each round:
     empty flow    : a @flow whose body does nothing, run against the server, default settings
                     (heartbeats every 180 s) and restorekit's heartbeats, as every restorekit
                     flow runs (importing the tasks installs tasks._prefect_shim.prompt_heartbeats:
                     the same events, from a thread that stops as soon as the run ends)
     empty flow, Prefect's heartbeats : the same with Prefect 3.8's own heartbeat context: the
                     end of a flow run joins the heartbeat thread (timeout 2 s), which sleeps in
                     1 s steps: about 1 s per short run of waiting, not work
     empty flow, Prefect's heartbeats every 30 s : the same at the shortest period Prefect
                     allows (the frequency does not shorten the 1 s steps)
     empty flow, no heartbeat : PREFECT_FLOWS_HEARTBEAT_FREQUENCY unset: no heartbeats, so no
                     crash detection by the "unresponsive runs" automation; the floor
     N tasks, no heartbeat : a @flow calling a @task (cache_policy=NO_CACHE, as every restorekit
                     task) --tasks times in sequence, each returning its argument (no heartbeat,
                     so that the join's noise does not drown the tasks' cost)
     N direct      : the same N calls of the task's function (task.fn), no Prefect
   fixed cost per flow run  = median(empty flow) - median(direct call of the empty body)
   cost per task            = (median(N tasks, no heartbeat) - median(empty flow, no heartbeat)
                               - median(N direct)) / N
   The empty flows are timed in rounds of their own, before the task flows, and each N-task
   flow starts after an untimed 3 s pause: a flow run's task events are sent in the background,
   and the next flow run started right away waits: a cProfile of it (restorekit's heartbeats)
   shows ~2.2 s of create_flow_run in time.sleep, the client's retry back-off
   (prefect/client/base.py, 2**try seconds) after a retryable status or error from the
   SQLite-backed test server, presumably busy with the previous run's events. Not a per-run
   cost in production (one process per deployment run). That back-to-back case is timed apart
   and reported on its own lines.
   Targets: fixed cost per flow run < 0.3 s with crash detection kept (issue #14; was < 1 s in
   issue #6), per task < 50 ms. After the rounds, one tagged flow run with restorekit's
   heartbeats must have sent its heartbeat event to the server (what the automation matches).

2. A real scenario on a tiny database (--scenario-scale, default 0.02: 2,000 rows), unless
   --no-scenario: the installation `restorekit demo` and the flow tests build
   (restorekit.demo.build_installation: a production cluster archiving WAL into a local
   repository, a base backup, a baseline, the local app). Each round deletes the same --k users
   (their clients and appointments cascade), waits until the WAL is archived, and brings them
   back either way, alternating which goes first:
     flow          : flows.accidental_deletion.accidental_deletion(params) against the server
                     (identify the deletion scope, preflight, PITR restore of a scratch copy,
                     recover rows, verify, health check, drop the copy, new baseline; plus what
                     the flow itself adds: one-run-per-target lease, plan artifact, report)
     direct        : the same task bodies called as plain functions (task.fn) in the same order,
                     no Prefect (and none of the flow's own bookkeeping)
   The rows must come back byte for byte (users, clients, appointments equal to the state
   before the deletion) before a time is kept. The flow's per-step times (its report's
   timeline, measured around each task call) are compared with the same steps called directly:
   the difference is each task run's overhead.

Results go to bench/results/prefect-<UTC timestamp>.json (or --out). Nothing here asserts on
time.

    python bench/prefect_bench.py --repeat 7 --tasks 20
    python bench/prefect_bench.py --no-scenario
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common  # bench/_common.py, beside this script
import psycopg
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

import tasks._runtime  # noqa: F401 - installs restorekit's heartbeats, as in every flow process
from restorekit.pg.tools import default_os_user, make_dir

SETTLE_SECONDS = 3.0
ROWS = {
    "users": "SELECT u::text FROM users u ORDER BY id",
    "clients": "SELECT c::text FROM clients c ORDER BY id",
    "appointments": "SELECT a::text FROM appointments a ORDER BY id",
}


# -- 1. trivial flows and tasks ------------------------------------------------------------------


@task(name="noop", cache_policy=NO_CACHE)
def noop(i: int) -> int:
    return i


def _empty_body() -> None:
    return None


@flow(name="bench-empty")
def empty_flow() -> None:
    return _empty_body()


@flow(name="bench-n-tasks")
def n_tasks_flow(n: int) -> int:
    return sum(noop(i) for i in range(n))


def no_heartbeat(fn: Callable[..., Any], *args: Any) -> Any:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return fn(*args)


def prefects_heartbeats(fn: Callable[..., Any], *args: Any, every: int | None = None) -> Any:
    """``fn`` with Prefect's own heartbeat context (its thread sleeps in 1 s steps and the end of
    the run joins it), optionally at another frequency; restorekit's is put back afterwards."""
    from prefect import flow_engine
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from tasks import _prefect_shim as shim

    shim.restore_prefect_heartbeats()
    assert flow_engine._send_heartbeats is shim.PREFECT_SEND_HEARTBEATS
    try:
        if every is None:
            return fn(*args)
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: every}):
            return fn(*args)
    finally:
        shim.install_prompt_heartbeats()


def direct_calls(n: int) -> int:
    return sum(noop.fn(i) for i in range(n))


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _rounds(variants: dict[str, Callable[[], Any]], repeat: int,
            times: dict[str, list[float]]) -> None:
    names = list(variants)
    for i, order in _common.rotated(names, repeat):
        for v in order:
            took = _timed(variants[v])
            if v.startswith("flow of"):
                took -= SETTLE_SECONDS  # the untimed pause before it
            times.setdefault(v, []).append(took)
        print(f"round {i + 1}: " + "  ".join(f"{v} {times[v][-1]:.3f}s" for v in names),
              flush=True)


def heartbeat_check() -> dict[str, Any]:
    """Crash detection kept: a flow run with restorekit's heartbeats sends its heartbeat event
    (with the run's tags, which the "unresponsive runs" automation matches) to the server."""
    import httpx
    from prefect import tags
    from prefect.settings import PREFECT_API_URL

    @flow(name="bench-heartbeat-check")
    def tagged() -> str:
        from prefect.runtime import flow_run

        return str(flow_run.id)

    with tags("restorekit", "bench"):
        run_id = tagged()
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=str(PREFECT_API_URL.value()).rstrip("/"), timeout=30) as api:
        while True:
            found = api.post("/events/filter", json={"filter": {
                "event": {"name": ["prefect.flow-run.heartbeat"]},
                "resource": {"id": [f"prefect.flow-run.{run_id}"]}}}).json()["events"]
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    related = sorted(r["prefect.resource.id"] for e in found for r in e.get("related", ()))
    if not found or "prefect.tag.restorekit" not in related:
        raise SystemExit(f"no heartbeat event with the restorekit tag for flow run {run_id}: "
                         f"{found}")
    print(f"heartbeat check: flow run {run_id} sent {len(found)} heartbeat event(s) tagged "
          "restorekit", flush=True)
    return {"flow_run": run_id, "heartbeats": len(found)}


def trivial(repeat: int, n: int) -> dict[str, Any]:
    """Flow runs first on their own, then the N-task flow, then (apart, as it is not steady
    state) an empty flow right after an N-task flow: the tasks' events are still being sent,
    and the heartbeat thread's join at the end of that run waits for them (up to its 2 s
    timeout)."""
    flows_only: dict[str, Callable[[], Any]] = {
        "empty flow": empty_flow,
        "empty flow, Prefect's heartbeats": lambda: prefects_heartbeats(empty_flow),
        "empty flow, Prefect's heartbeats every 30 s": lambda: prefects_heartbeats(empty_flow,
                                                                                  every=30),
        "empty flow, no heartbeat": lambda: no_heartbeat(empty_flow),
        "empty body, direct": _empty_body,
    }
    def settled_n_tasks() -> float:
        # Untimed pause first: the previous N-task flow's events are sent in the background;
        # back to back, each flow run would also wait for the last one's (timed apart below).
        time.sleep(SETTLE_SECONDS)
        return _timed(lambda: no_heartbeat(n_tasks_flow, n))

    with_tasks: dict[str, Callable[[], Any]] = {
        f"flow of {n} tasks, no heartbeat": settled_n_tasks,
        f"{n} direct calls": lambda: direct_calls(n),
    }
    for fn in [*flows_only.values(), *with_tasks.values()]:  # warm up: imports, API client
        fn()
    _timed(lambda: time.sleep(3))  # let the warm-up's events drain
    times: dict[str, list[float]] = {}
    _rounds(flows_only, repeat, times)
    _rounds(with_tasks, repeat, times)
    after = "empty flow right after the N-task flow"
    back = "flow of N tasks right after another"
    for _ in range(max(1, repeat // 2)):
        time.sleep(SETTLE_SECONDS)
        no_heartbeat(n_tasks_flow, n)
        times.setdefault(back, []).append(_timed(lambda: no_heartbeat(n_tasks_flow, n)))
        times.setdefault(after, []).append(_timed(empty_flow))
    print(f"{back}: " + "  ".join(f"{t:.3f}s" for t in times[back]), flush=True)
    print(f"{after}: " + "  ".join(f"{t:.3f}s" for t in times[after]), flush=True)
    if n_tasks_flow(3) != 3:  # the tasks really ran and returned their values
        raise SystemExit("the N-task flow returned a wrong sum")
    m = {v: statistics.median(ts) for v, ts in times.items()}
    per_flow = m["empty flow"] - m["empty body, direct"]
    per_task = (m[f"flow of {n} tasks, no heartbeat"] - m["empty flow, no heartbeat"]
                - m[f"{n} direct calls"]) / n
    return {"tasks": n, "repeat": repeat, "seconds": times, "median_seconds": m,
            "fixed_cost_per_flow_run_seconds": per_flow, "cost_per_task_seconds": per_task,
            "fixed_cost_without_heartbeat_join_seconds":
                m["empty flow, no heartbeat"] - m["empty body, direct"],
            "fixed_cost_prefects_heartbeats_seconds":
                m["empty flow, Prefect's heartbeats"] - m["empty body, direct"],
            "fixed_cost_prefects_heartbeats_every_30s_seconds":
                m["empty flow, Prefect's heartbeats every 30 s"] - m["empty body, direct"],
            "heartbeat_check": heartbeat_check(),
            "fixed_cost_range_seconds": [min(times["empty flow"]), max(times["empty flow"])],
            "fixed_cost_right_after_tasks_seconds": m[after] - m["empty body, direct"],
            "extra_wait_back_to_back_seconds": m[back] - m[f"flow of {n} tasks, no heartbeat"]}


# -- 2. a scenario flow on a tiny database -------------------------------------------------------


def _rows(dsn: str) -> dict[str, list[str]]:
    with psycopg.connect(dsn) as conn:
        return {t: [r[0] for r in conn.execute(q)] for t, q in ROWS.items()}


def _direct_accidental_deletion(ref: Any, since: datetime, key: str) -> dict[str, float]:
    """The accidental-deletion flow's task bodies in its order, as plain functions."""
    from tasks.application import check_health
    from tasks.data import identify_deletion_scope, recover_rows
    from tasks.database import (
        capture_baseline,
        discard_restored,
        preflight,
        restore_name,
        restore_to_point_in_time,
        sweep_stale_restores,
        verify_integrity,
    )

    steps: dict[str, float] = {}

    def step(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            steps[name] = time.perf_counter() - started

    found = step("identify deletion scope", identify_deletion_scope.fn, ref, "users", None, since)
    point = found["point_before"]
    step("preflight", preflight.fn, ref, point, snapshot_copy_allowed=True)
    name = restore_name("ad", key)
    step("find stale restores", sweep_stale_restores.fn, ref, [name], True)
    restored = step("restore scratch copy", restore_to_point_in_time.fn, ref, point, name)
    result = step("recover rows", recover_rows.fn, ref, restored, "users", found["keys"], True)
    if not any(t["inserted"] for t in result.get("tables", ())):
        raise SystemExit(f"direct: nothing recovered: {result}")
    step("verify integrity", verify_integrity.fn, ref, None, use_baseline=False)
    step("check health", check_health.fn, ref)
    step("drop scratch copy", discard_restored.fn, ref, restored)
    step("capture baseline", capture_baseline.fn, ref)
    return steps


def scenario(base: Path, scale: float, k: int, repeat: int) -> dict[str, Any]:
    from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
    from restorekit.demo import build_installation, teardown_installation
    from tasks._runtime import TargetRef

    t0 = time.perf_counter()
    inst = build_installation(base / "world", scale=scale)
    try:
        rt = inst.runtime()
        if rt.app is not None:
            rt.app.start()  # type: ignore[attr-defined]
        before = _rows(inst.app_dsn)
        with psycopg.connect(inst.app_dsn) as conn:
            victims = [r[0] for r in conn.execute(
                "SELECT id FROM users WHERE id IN (SELECT user_id FROM appointments) "
                "ORDER BY id LIMIT %s", [k])]
        rows = {t: len(v) for t, v in before.items()}
        print(f"scenario: installation at scale {scale:g} ({rows}) built in "
              f"{time.perf_counter() - t0:.0f}s; {len(victims)} users deleted per round",
              flush=True)
        ref = TargetRef(target="production", config=str(inst.config))
        times: dict[str, list[float]] = {"flow": [], "direct": []}
        flow_steps: list[dict[str, float]] = []
        direct_steps: list[dict[str, float]] = []
        runs = 0

        def accident() -> datetime:
            with psycopg.connect(inst.app_dsn, autocommit=True) as conn:
                since = conn.execute("SELECT clock_timestamp()").fetchone()[0]
                time.sleep(0.05)
                conn.execute("DELETE FROM users WHERE id = ANY(%s)", [victims])
            inst.wait_archived()
            return since

        def run(variant: str) -> float:
            nonlocal runs
            runs += 1
            since = accident()
            key = f"bench-{variant}-{runs}-{time.monotonic_ns()}"
            started = time.perf_counter()
            if variant == "flow":
                report = accidental_deletion(AccidentalDeletionParams(
                    target="production", config=str(inst.config), require_approval=False,
                    incident_id=key, deleted_since=since))
                elapsed = time.perf_counter() - started
                if report.outcome != "succeeded":
                    raise SystemExit(f"the flow did not succeed: {report.outcome}")
                flow_steps.append({s.name: s.seconds for s in report.steps})
            else:
                direct_steps.append(_direct_accidental_deletion(ref, since, key))
                elapsed = time.perf_counter() - started
            after = _rows(inst.app_dsn)
            if after != before:
                raise SystemExit(f"{variant}: the rows did not come back byte for byte "
                                 f"({ {t: len(v) for t, v in after.items()} } != {rows})")
            return elapsed

        for variant in ("flow", "direct"):  # warm up (imports, first restore); checked
            run(variant)
        flow_steps.clear()
        direct_steps.clear()
        for i in range(repeat):
            order = ("flow", "direct") if i % 2 == 0 else ("direct", "flow")
            for variant in order:
                times[variant].append(run(variant))
            print(f"round {i + 1}: flow {times['flow'][-1]:.2f}s  direct "
                  f"{times['direct'][-1]:.2f}s", flush=True)
        m = {v: statistics.median(ts) for v, ts in times.items()}
        steps = {}
        for name in direct_steps[0]:
            f = [s[name] for s in flow_steps if name in s]
            d = [s[name] for s in direct_steps]
            if f:
                steps[name] = {"flow": statistics.median(f), "direct": statistics.median(d),
                               "overhead": statistics.median(f) - statistics.median(d)}
        flow_only = sorted({n for s in flow_steps for n in s} - set(direct_steps[0]))
        return {"scale": scale, "rows": rows, "k": len(victims), "repeat": repeat,
                "seconds": times, "median_seconds": m,
                "overhead_per_flow_run_seconds": m["flow"] - m["direct"],
                "ratio_flow_vs_direct": m["flow"] / m["direct"], "steps": steps,
                "flow_only_steps": flow_only}
    finally:
        teardown_installation(inst)


def print_results(out: dict[str, Any]) -> None:
    t = out["trivial"]
    n = t["tasks"]
    print(f"\ntrivial work, median of {t['repeat']}:")
    for v, s in t["median_seconds"].items():
        print(f"  {v:32}{s * 1000:10.1f} ms")
    lo, hi = t["fixed_cost_range_seconds"]
    print(f"fixed cost per flow run: {t['fixed_cost_per_flow_run_seconds'] * 1000:.0f} ms "
          f"(runs {lo * 1000:.0f}-{hi * 1000:.0f} ms; "
          f"{t['fixed_cost_right_after_tasks_seconds'] * 1000:.0f} ms right after a flow of "
          f"{n} tasks) "
          f"(target < 300 ms); per task: {t['cost_per_task_seconds'] * 1000:.1f} ms "
          f"(target < 50 ms; flow of {n} tasks minus the empty flow minus {n} direct calls, "
          f"/ {n}, both without heartbeat)")
    print(f"a flow of {n} tasks started right after another takes "
          f"{t['extra_wait_back_to_back_seconds'] * 1000:.0f} ms longer (a wait per run, not per "
          "task: the server has not caught up with the previous run's task events)")
    print(f"fixed cost per flow run by heartbeat kind (target < 300 ms; crash detection needs "
          f"heartbeats): restorekit's (stop at once) "
          f"{t['fixed_cost_per_flow_run_seconds'] * 1000:.0f} ms, Prefect's "
          f"{t['fixed_cost_prefects_heartbeats_seconds'] * 1000:.0f} ms, Prefect's every 30 s "
          f"{t['fixed_cost_prefects_heartbeats_every_30s_seconds'] * 1000:.0f} ms, none "
          f"{t['fixed_cost_without_heartbeat_join_seconds'] * 1000:.0f} ms")
    s = out.get("scenario")
    if s:
        m = s["median_seconds"]
        print(f"\naccidental-deletion on a tiny database (scale {s['scale']:g}, {s['k']} users "
              f"deleted), median of {s['repeat']}: flow {m['flow']:.2f}s, direct "
              f"{m['direct']:.2f}s; Prefect and the flow's bookkeeping add "
              f"{s['overhead_per_flow_run_seconds']:+.2f}s per run "
              f"({s['ratio_flow_vs_direct']:.2f}x)")
        print(f"{'step':28}{'flow s':>9}{'direct s':>10}{'overhead':>10}")
        for name, st in s["steps"].items():
            print(f"{name:28}{st['flow']:9.3f}{st['direct']:10.3f}{st['overhead']:+10.3f}")
        if s["flow_only_steps"]:
            print("steps only the flow runs: " + ", ".join(s["flow_only_steps"]))


def main() -> None:
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--repeat", type=int, default=7,
                        help="rounds of each trivial variant (default 7: flow runs against a "
                             "SQLite-backed test server stall now and then; medians)")
    parser.add_argument("--tasks", type=int, default=20,
                        help="trivial tasks in the N-task flow (default 20, about what a "
                             "scenario flow runs)")
    parser.add_argument("--scenario-scale", type=float, default=0.02,
                        help="sample scale of the scenario's installation (default 0.02)")
    parser.add_argument("--k", type=int, default=5, help="users deleted per scenario round")
    parser.add_argument("--scenario-repeat", type=int, default=3,
                        help="rounds of the scenario (default 3; each restores a copy)")
    parser.add_argument("--no-scenario", action="store_true",
                        help="only the trivial flows (no PostgreSQL needed)")
    _common.add_out_argument(parser, "prefect")
    args = parser.parse_args()
    # The flows log every step to the console; the benchmark prints its own lines.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # The temporary server (a subprocess) would try to send telemetry from a machine that may
    # have no network, and log the failure.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    import prefect
    from prefect.testing.utilities import prefect_test_harness

    load_before = _common.loadavg()
    out: dict[str, Any] = {
        "benchmark": "Prefect's overhead: trivial flows/tasks vs direct calls; the "
                     "accidental-deletion flow vs its task bodies called directly",
        "when": datetime.now(UTC).isoformat(), "cores": os.cpu_count(),
        "prefect": prefect.__version__, "loadavg_before": load_before,
        "targets": {"fixed_cost_per_flow_run_seconds": 0.3, "cost_per_task_seconds": 0.05},
    }
    base = Path(tempfile.mkdtemp(prefix="restorekit-prefect-bench-"))
    make_dir(base, default_os_user(), mode=0o755)
    try:
        started = time.perf_counter()
        print("starting a temporary Prefect server (prefect_test_harness) ...", flush=True)
        with prefect_test_harness(server_startup_timeout=120):
            out["server_start_seconds"] = time.perf_counter() - started
            print(f"server up in {out['server_start_seconds']:.1f}s", flush=True)
            logging.getLogger("prefect").setLevel(logging.WARNING)
            out["trivial"] = trivial(args.repeat, args.tasks)
            if not args.no_scenario:
                out["scenario"] = scenario(base, args.scenario_scale, args.k,
                                           args.scenario_repeat)
        out["loadavg_after"] = _common.loadavg()
        print_results(out)
        _common.save("prefect", out, args.out, load_before)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

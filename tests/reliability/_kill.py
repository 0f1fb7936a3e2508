"""Helpers for the kill -9 tests: run a scenario flow in a child process against the test Prefect
server, stop it at a chosen step, SIGKILL it from outside, and look at what is left.

How a kill point is reached without a fault hook in production code: the child script (below,
test code) appends a Prefect state hook to the chosen task object (``on_running`` = the task has
started, its body not yet; ``on_completion`` = the task finished and Prefect recorded it). The
hook prints ``KILLPOINT`` and blocks; the test sees the line, checks through the Prefect API that
the task run is in that state, and sends SIGKILL. Kills in the MIDDLE of a task body (a restore
replaying WAL, a repair transaction that has written rows) are reached by watching the outside
world instead (a scratch cluster's postmaster.pid, a lock wait in pg_locks); no hook at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from restorekit.pg.checksum import database_checksums
from restorekit.pg.dsn import libpq_dsn
from restorekit.processes import is_zombie, pid_alive

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, os, sys, time
spec = json.loads(sys.argv[1])
import tasks
from prefect import tags

def block(where):
    def hook(task, task_run, state):
        # os.write, not print: the flows log prints through Prefect's logger (log_prints).
        os.write(1, f"KILLPOINT {task.name} {where} {task_run.id}\n".encode())
        while True:
            time.sleep(60)
    return hook

pause = spec.get("pause")
if pause:
    for name in tasks.__all__:
        t = getattr(tasks, name)
        if t.name == pause["task"]:
            hooks = t.on_running_hooks if pause["when"] == "running" else t.on_completion_hooks
            hooks.append(block(pause["when"]))
            break
    else:
        raise SystemExit(f"no task named {pause['task']}")

module = __import__(f"flows.{spec['flow']}", fromlist=["x"])
flow_fn = getattr(module, spec["flow"])
params_cls = getattr(module, spec["params_cls"])
with tags(spec["tag"]):
    report = flow_fn(params_cls(**spec["params"]))
os.write(1, f"FLOW-DONE {report.outcome}\n".encode())
"""

FLOW_PARAMS = {
    "complete_failure": "CompleteFailureParams",
    "partial_corruption": "PartialCorruptionParams",
    "accidental_deletion": "AccidentalDeletionParams",
}


@dataclass
class Child:
    """A flow running in a child process."""

    proc: subprocess.Popen[str]
    tag: str
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_line(self, prefix: str, timeout: float = 300) -> str:
        """The first output line starting with ``prefix``; fails (with the output) when the
        child exits or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the flow exited ({self.proc.wait()}) before {prefix!r}:\n"
                                     + self.output())
            if line.startswith(prefix):
                return line.strip()
        raise AssertionError(f"no {prefix!r} line within {timeout} s:\n" + self.output())

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 300,
                   interval: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"the flow exited ({self.proc.returncode}) before {what}:\n"
                                     + self.output())
            time.sleep(interval)
        raise AssertionError(f"not reached within {timeout} s: {what}\n" + self.output())

    def kill9(self) -> None:
        """SIGKILL the flow process (its own process group too: nothing of it survives but what
        it detached on purpose, such as a PostgreSQL server started with pg_ctl)."""
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(30) == -signal.SIGKILL

    def output(self) -> str:
        return "\n".join(self.lines[-80:])

    def flow_run(self) -> Any:
        return flow_run_by_tag(self.tag)


def start_flow(flow: str, params: dict[str, Any], api_url: str,
               pause: tuple[str, str] | None = None) -> Child:
    """Start ``flows.<flow>`` in a child process; ``pause`` = (task name, 'running'|'completed')."""
    tag = f"killtest-{uuid.uuid4().hex[:10]}"
    spec = {"flow": flow, "params_cls": FLOW_PARAMS[flow], "params": params, "tag": tag,
            "pause": {"task": pause[0], "when": pause[1]} if pause else None}
    env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONUNBUFFERED": "1"}
    env.pop("RESTOREKIT_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    child = Child(proc=proc, tag=tag)
    threading.Thread(target=child._pump, daemon=True).start()
    return child


# -- the Prefect API ----------------------------------------------------------------------------

def flow_run_by_tag(tag: str) -> Any:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=5)
    assert len(runs) == 1, runs
    return runs[0]


def task_run_states(flow_run_id: Any) -> dict[str, str]:
    """Task name -> state type of the flow run's task runs (the last run of each name)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=200)
    states: dict[str, str] = {}
    for run in runs:
        name = run.name.rsplit("-", 1)[0]  # task run names are "<task name>-<suffix>"
        states[name] = run.state.type.value if run.state else "NONE"
    return states


def wait_task_state(flow_run_id: Any, task: str, state: str, timeout: float = 60) -> dict[str, str]:
    """Wait until the API shows ``task`` in ``state`` (task states reach the API as events, a
    moment after the fact); returns every task's state."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = task_run_states(flow_run_id)
        if states.get(task) == state:
            return states
        time.sleep(0.2)
    raise AssertionError(f"the API never showed {task} {state}: {states}")


def flow_run_state(flow_run_id: Any) -> Any:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state


# -- PostgreSQL ---------------------------------------------------------------------------------

def checksums(dsn: str) -> dict[str, str]:
    """Every table's checksum in one snapshot; ``dsn`` may be the application's own URL (its
    Prisma options are left out, as restorekit does: libpq refuses them)."""
    with psycopg.connect(libpq_dsn(dsn)) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return database_checksums(conn)


def postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int | None) -> bool:
    return pid is not None and pid_alive(pid)  # a zombie is dead for our purposes


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc/<n>/stat)."""
    found: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int((proc / "stat").read_text().rsplit(") ", 1)[1].split()[1]) == pid:
                found.append(int(proc.name))
    return found


def kill9_postgres(data_dir: Path) -> int:
    """SIGKILL a PostgreSQL server: the postmaster and every process it started (a hard crash,
    as the OOM killer or a power cut of the process tree leaves it). Returns the postmaster pid."""
    pid = postmaster_pid(data_dir)
    assert pid is not None and alive(pid), f"no running server in {data_dir}"
    victims = [pid, *children(pid)]
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(alive(v) for v in victims) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_zombie(pid):
        # PID 1 of this sandbox does not reap orphans, so the dead postmaster stays a zombie and
        # PostgreSQL would take its stale lock file for a live server. On a real machine init
        # reaps it and PostgreSQL ignores the stale file on its own; do what init would.
        (data_dir / "postmaster.pid").unlink(missing_ok=True)
    return pid


def waiting_writer(dsn: str, table: str) -> int | None:
    """The pid of a backend that has written in its transaction (it holds an xid) and now waits
    for a lock on ``table``; None if there is none yet."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE NOT l.granted AND l.relation = %s::regclass AND a.backend_xid IS NOT NULL",
            (table,)).fetchone()
    return row[0] if row else None


def backend_gone(dsn: str, pid: int) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                            (pid,)).fetchone()[0] == 0

"""Helpers for the kill -9 tests: run a scenario flow in a child process against the test Prefect
server, stop it at a chosen step, SIGKILL it from outside, and look at what is left.

How a kill point is reached without a fault hook in production code: the flow process (``ZYGOTE``
below, test code) appends a Prefect state hook to the chosen task object (``on_running`` = the
task has started, its body not yet; ``on_completion`` = the task finished and Prefect recorded
it). The hook prints ``KILLPOINT`` and blocks; the test sees the line, checks through the Prefect
API that the task run is in that state, and sends SIGKILL. Kills in the MIDDLE of a task body (a
restore replaying WAL, a repair transaction that has written rows) are reached by watching the
outside world instead (a scratch cluster's postmaster.pid, a lock wait in pg_locks); no hook at
all.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
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
from fixtures.cli import cli_env

from restorekit.pg.checksum import database_checksums
from restorekit.pg.dsn import libpq_dsn
from restorekit.processes import is_zombie, pid_alive

ROOT = Path(__file__).resolve().parents[2]

# The flow process. Starting a fresh interpreter per kill point spent ~2-4 s of CPU importing
# Prefect and the flows before each flow even began, so one "zygote" process per Prefect server
# imports them once (before any thread exists: it checks) and forks a fresh process per flow. The
# forked process is a separate process in its own process group, with the test's current
# environment; it appends the kill-point hook, runs the flow, and is SIGKILLed by the test.
ZYGOTE = r"""
import atexit, json, os, signal, socket, sys, threading, time, traceback
sock = socket.socket(fileno=int(sys.argv[1]))
import tasks
import prefect.settings
from prefect import tags
FLOWS = ("complete_failure", "partial_corruption", "accidental_deletion")
modules = {f: __import__(f"flows.{f}", fromlist=["x"]) for f in FLOWS}
threads = os.listdir("/proc/self/task")
if threading.active_count() != 1 or len(threads) != 1:
    sys.exit(f"threads in the zygote before any fork: {threading.enumerate()} {threads}")

def block(where):
    def hook(task, task_run, state):
        # os.write, not print: the flows log prints through Prefect's logger (log_prints).
        os.write(1, f"KILLPOINT {task.name} {where} {task_run.id}\n".encode())
        while True:
            time.sleep(60)
    return hook

def run(spec):
    os.environ.clear()
    os.environ.update(spec["env"])
    api = str(prefect.settings.get_current_settings().api.url)
    if api != spec["api_url"]:
        raise SystemExit(f"the zygote talks to {api}, not {spec['api_url']}")
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
    module = modules[spec["flow"]]
    flow_fn = getattr(module, spec["flow"])
    params_cls = getattr(module, spec["params_cls"])
    with tags(spec["tag"]):
        report = flow_fn(params_cls(**spec["params"]))
    os.write(1, f"FLOW-DONE {report.outcome}\n".encode())

def child(spec, out):
    code = 1
    try:
        sock.close()
        os.setpgid(0, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        run(spec)
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)

done, live = {}, set()

def reap(pid, flags):
    if pid in done:
        return done[pid]
    got, status = os.waitpid(pid, flags)
    if got == 0:
        return None
    live.discard(pid)
    done[pid] = os.waitstatus_to_exitcode(status)
    return done[pid]

sock.send(b"READY")
while True:
    msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 1)
    if not msg:
        break
    cmd, _, arg = msg.partition(b" ")
    if cmd == b"RUN":
        spec = json.loads(arg)
        pid = os.fork()
        if pid == 0:
            child(spec, fds[0])
        os.close(fds[0])
        live.add(pid)
        sock.send(b"PID %d" % pid)
    elif cmd == b"WAIT":
        pid, timeout = arg.split()
        pid, deadline = int(pid), time.monotonic() + float(timeout)
        while (code := reap(pid, os.WNOHANG)) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        sock.send(b"STATUS %s" % str(code).encode())
for pid in list(live):
    os.kill(pid, signal.SIGKILL)
    reap(pid, 0)
"""

FLOW_PARAMS = {
    "complete_failure": "CompleteFailureParams",
    "partial_corruption": "PartialCorruptionParams",
    "accidental_deletion": "AccidentalDeletionParams",
}


class Zygote:
    """The forking parent of the flow processes (``ZYGOTE``), talked to over a socket pair."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = cli_env(api_url, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE, str(theirs.fileno())],
                                     cwd=ROOT, env=env, pass_fds=[theirs.fileno()],
                                     stdin=subprocess.DEVNULL)
        theirs.close()
        self._lock = threading.Lock()
        self._ready = False

    def _ask(self, msg: bytes, fds: list[int] | None = None) -> bytes:
        with self._lock:
            if not self._ready:
                self._recv(b"READY")
                self._ready = True
            socket.send_fds(self.sock, [msg], fds or [])
            return self._recv(msg.split()[0])

    def _recv(self, what: bytes) -> bytes:
        self.sock.settimeout(300)
        reply = self.sock.recv(1 << 16)
        if not reply:
            raise AssertionError(f"the zygote exited ({self.proc.wait(30)}) before {what!r}")
        return reply

    def run(self, spec: dict[str, Any], out: int) -> int:
        """Fork a flow process whose stdout and stderr are ``out``; its pid."""
        reply = self._ask(b"RUN " + json.dumps(spec).encode(), [out])
        assert reply.startswith(b"PID "), reply
        return int(reply.split()[1])

    def wait(self, pid: int, timeout: float) -> int | None:
        """The flow process's exit code (``-signal`` if a signal ended it), or None if it is
        still running after ``timeout`` seconds."""
        reply = self._ask(b"WAIT %d %f" % (pid, timeout))
        assert reply.startswith(b"STATUS "), reply
        value = reply.split()[1]
        return None if value == b"None" else int(value)

    def close(self) -> None:
        """End the zygote; it SIGKILLs whatever flow process is still running."""
        self.sock.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_zygotes: dict[str, Zygote] = {}


def zygote(api_url: str) -> Zygote:
    if api_url not in _zygotes:
        _zygotes[api_url] = Zygote(api_url)
    return _zygotes[api_url]


def close_zygotes() -> None:
    while _zygotes:
        _zygotes.popitem()[1].close()


@dataclass
class FlowProcess:
    """A flow process forked by the zygote, with what tests used of ``subprocess.Popen``."""

    pid: int
    zygote: Zygote
    stdout: Any
    returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.wait(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float = 300) -> int:
        if self.returncode is None:
            self.returncode = self.zygote.wait(self.pid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(f"flow process {self.pid}", timeout)
        return self.returncode


@dataclass
class Child:
    """A flow running in a child process."""

    proc: FlowProcess
    tag: str
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
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
        """SIGKILL the flow process, and only it: what it started and detached (a PostgreSQL
        server started with pg_ctl) lives on, as after a real kill -9 of the runner."""
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
    env = cli_env(api_url, PYTHONUNBUFFERED="1")
    spec = {"flow": flow, "params_cls": FLOW_PARAMS[flow], "params": params, "tag": tag,
            "pause": {"task": pause[0], "when": pause[1]} if pause else None,
            "env": env, "api_url": api_url}
    read, write = os.pipe()
    try:
        pid = zygote(api_url).run(spec, write)
    finally:
        os.close(write)
    child = Child(proc=FlowProcess(pid=pid, zygote=zygote(api_url),
                                   stdout=os.fdopen(read, encoding="utf-8", errors="replace")),
                  tag=tag)
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

"""The demo application as a local process: the application platform of the embedded default.

"Deploying" is starting ``python -m restorekit.apps.demo_app`` detached from us (its own session,
so it outlives the flow run that started it), with a pid file and a log file in ``state_dir``.
A redeploy is stop + start, which makes the app read its env file again, the way a new Vercel
deployment picks up a new DATABASE_URL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import httpx

from restorekit.apps.base import AppState
from restorekit.clients import http_client
from restorekit.errors import ConfigError, ProviderError
from restorekit.pg.dsn import redact
from restorekit.processes import pid_alive

log = logging.getLogger(__name__)

_MODULE = "restorekit.apps.demo_app"
# Not imported from demo_app: importing it here would load it twice under `python -m`.
HEALTH_PATH = "/api/health"
# libpq reads these; a deployment must be defined by its env file alone, not by our environment.
_DROPPED_ENV_PREFIXES = ("PG",)
_DROPPED_ENV = {"DATABASE_URL"}


class LocalProcessApp:
    """The demo app on this machine (see :class:`restorekit.apps.base.AppPlatform`).

    One app per ``state_dir``. ``stop``/``redeploy`` return the state from before they acted;
    ``resume(state)`` starts the app again when ``state`` says it ran. A rollback of the
    connection string is the store's ``restore`` followed by ``redeploy``.

    Args:
        env_file: The dotenv file the app reads DATABASE_URL from.
        port: The TCP port it listens on.
        state_dir: Where the pid file and the log file live (created 0700).
        python: The interpreter to run it with (one where restorekit is importable).
        host: The address it listens on.
        start_timeout: Seconds to wait for ``/api/health`` to answer at all.
        stop_timeout: Seconds to wait after SIGTERM before SIGKILL.
    """

    kind: ClassVar[str] = "local"

    def __init__(
        self,
        env_file: Path,
        port: int,
        state_dir: Path,
        python: str = sys.executable,
        *,
        host: str = "127.0.0.1",
        start_timeout: float = 15.0,
        stop_timeout: float = 5.0,
    ) -> None:
        if not 0 < port < 65536:
            raise ConfigError(f"port must be between 1 and 65535, got {port}")
        self.env_file = Path(env_file).absolute()
        self.port = port
        self.state_dir = Path(state_dir).absolute()
        self.python = python
        self.host = host
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"LocalProcessApp(port={self.port}, env_file={str(self.env_file)!r})"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "demo-app.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "demo-app.log"

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- AppPlatform -------------------------------------------------------------------------

    def describe(self) -> str:
        return f"local process {_MODULE} on {self.base_url} (env file {self.env_file})"

    def health_url(self) -> str:
        return self.base_url + HEALTH_PATH

    def stop(self, *, reason: str) -> AppState:
        pid = self.running_pid()
        if pid is None:
            self._remove_pid_file()
            log.info("%s is not running; nothing to stop (%s)", self.describe(), reason)
            return self._state(None)
        log.info("stopping %s, pid %d: %s", self.describe(), pid, reason)
        self._terminate(pid)
        return self._state(pid)

    def resume(self, state: AppState) -> None:
        if state.platform != self.kind or state.location != self.describe():
            raise ConfigError(f"state of {state.platform} {state.location!r} cannot be resumed "
                              f"on {self.describe()}")
        if state.running and not self.is_running():
            self.start()

    def redeploy(self, *, reason: str) -> AppState:
        before = self.stop(reason=f"redeploy: {reason}")
        self.start()
        return before

    # -- process control ---------------------------------------------------------------------

    def is_running(self) -> bool:
        return self.running_pid() is not None

    def running_pid(self) -> int | None:
        """The pid of our running app, or None (also for a stale pid file)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if self._exited(pid) or not self._is_our_app(pid):
            return None
        return pid

    def start(self) -> AppState:
        """Start the app unless it already runs; return the state it is in now.

        Raises:
            ProviderError: It exited while starting, or did not answer within ``start_timeout``.
        """
        pid = self.running_pid()
        if pid is not None:
            return self._state(pid)
        self._check_port_free()
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        argv = [self.python, "-m", _MODULE, "--env-file", str(self.env_file),
                "--port", str(self.port), "--host", self.host]
        log_fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=subprocess.STDOUT,
                cwd=self.state_dir, env=_child_env(), start_new_session=True,
            )
        except OSError as exc:
            raise ProviderError(f"{self.describe()}: cannot run {self.python}: {exc.strerror}",
                                provider=self.kind, operation="start") from exc
        finally:
            os.close(log_fd)
        self._proc = proc
        _write_atomically(self.pid_file, f"{proc.pid}\n")
        self._wait_until_answering(proc)
        log.info("started %s, pid %d", self.describe(), proc.pid)
        return self._state(proc.pid)

    def _check_port_free(self) -> None:
        # Otherwise the start-up probe would talk to whatever holds the port, not to our app.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
            try:
                probe.bind((self.host, self.port))
            except OSError as exc:
                raise ProviderError(
                    f"{self.describe()}: cannot listen on port {self.port}: "
                    f"{exc.strerror or exc} (another process holds it?)",
                    provider=self.kind, operation="start",
                ) from exc

    def _wait_until_answering(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.start_timeout
        # trust_env=False: an HTTP(S)_PROXY from the environment must not catch loopback calls.
        with http_client(timeout=5.0, trust_env=False) as client:
            while True:
                returncode = proc.poll()
                if returncode is not None:
                    self._remove_pid_file()
                    raise ProviderError(
                        f"{self.describe()}: the app exited with status {returncode} while "
                        f"starting; last log lines:\n{self.log_tail()}",
                        provider=self.kind, operation="start",
                    )
                try:
                    client.get(self.health_url())
                    return  # any answer, healthy or not: the process serves
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self._terminate(proc.pid)
                    raise ProviderError(
                        f"{self.describe()}: no answer from {self.health_url()} within "
                        f"{self.start_timeout:g} s; last log lines:\n{self.log_tail()}",
                        provider=self.kind, operation="start",
                    )
                time.sleep(0.05)

    def _terminate(self, pid: int) -> None:
        for sig, wait in ((signal.SIGTERM, self.stop_timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while not self._exited(pid):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            else:
                self._remove_pid_file()
                return
            if sig == signal.SIGTERM:
                log.warning("%s, pid %d, ignored SIGTERM for %g s; killing it",
                            self.describe(), pid, wait)
        raise ProviderError(f"{self.describe()}: pid {pid} survived SIGKILL",
                            provider=self.kind, operation="stop")

    def _exited(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is not None
        try:
            # Reap it if it is our child (started by another instance in this process), so it
            # does not linger as a zombie that still answers kill(pid, 0).
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        return not pid_alive(pid)

    def _is_our_app(self, pid: int) -> bool:
        # A stale pid file may name a pid that now belongs to something else: never signal that.
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return not Path("/proc/self").exists()  # no procfs: trust the pid file
        except OSError:
            return False
        return _MODULE.encode() in argv and str(self.port).encode() in argv

    def _remove_pid_file(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def _state(self, pid: int | None) -> AppState:
        return AppState(platform=self.kind, running=pid is not None,
                        deployment=None if pid is None else str(pid), location=self.describe())

    def log_tail(self, lines: int = 20) -> str:
        """The end of the app's log (it never holds secrets; redacted again to be sure)."""
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return redact("\n".join(text.splitlines()[-lines:]))


def _child_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in _DROPPED_ENV and not key.startswith(_DROPPED_ENV_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the log file as they happen
    return env


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

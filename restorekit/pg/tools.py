"""One wrapper for every external PostgreSQL tool (pg_basebackup, pg_dump, pg_ctl, pgbackrest).

Commands take an argv list (never a shell), a timeout, extra environment, and optionally run as
another OS user: PostgreSQL refuses to run as root, so when restorekit runs as root the server
and its tools run as ``postgres`` through ``runuser``.
"""

from __future__ import annotations

import collections
import logging
import os
import pwd
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

from restorekit.errors import ConfigError, PgToolFailed
from restorekit.pg.dsn import redact

log = logging.getLogger(__name__)

DEFAULT_OS_USER = "postgres"


@lru_cache(maxsize=8)
def find_bin_dir(preferred: str | None = None) -> Path:
    """Locate the PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup, ...).

    Order: the argument, ``$RESTOREKIT_PG_BIN``, ``pg_config --bindir`` when it holds ``initdb``,
    then the newest ``/usr/lib/postgresql/<N>/bin`` (Debian's layout).
    """
    candidates: list[Path] = []
    for value in (preferred, os.environ.get("RESTOREKIT_PG_BIN")):
        if value:
            candidates.append(Path(value))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            )
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.CalledProcessError):
            pass
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted(
            (p for p in debian.iterdir() if p.name.isdigit()),
            key=lambda p: int(p.name),
            reverse=True,
        )
        candidates.extend(v / "bin" for v in versions)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    raise ConfigError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install them "
        "(Debian: apt-get install postgresql-15) or set RESTOREKIT_PG_BIN"
    )


def default_os_user() -> str | None:
    """The OS user servers and tools must run as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(DEFAULT_OS_USER)
    except KeyError:
        raise ConfigError(
            "running as root needs an OS user 'postgres' to run PostgreSQL "
            "(PostgreSQL refuses to run as root); create it or run restorekit as another user"
        ) from None
    return DEFAULT_OS_USER


def chown_for(path: Path, os_user: str | None) -> None:
    """Give ``path`` to ``os_user`` (no-op when we already are that user)."""
    if os_user is None or os.geteuid() != 0:
        return
    entry = pwd.getpwnam(os_user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def make_dir(path: Path, os_user: str | None, mode: int = 0o700) -> Path:
    """Create ``path`` (and parents) owned by ``os_user``."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    chown_for(path, os_user)
    return path


class PgTool:
    """Runs PostgreSQL tools with redacted errors.

    Args:
        bin_dir: where the PostgreSQL binaries are; found with :func:`find_bin_dir` when None.
        os_user: run commands as this OS user (``runuser``), None for the current user.
    """

    def __init__(self, bin_dir: Path | None = None, os_user: str | None = None) -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        self.os_user = os_user

    def path(self, tool: str) -> str:
        candidate = self.bin_dir / tool
        if candidate.exists():
            return str(candidate)
        found = shutil.which(tool)
        if not found:
            raise ConfigError(f"{tool} not found in {self.bin_dir} or on PATH")
        return found

    def argv(self, tool: str, *args: str) -> list[str]:
        full = [self.path(tool), *args]
        if self.os_user is not None:
            return ["runuser", "-u", self.os_user, "--", *full]
        return full

    def run(
        self,
        tool: str,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        on_line: Callable[[str], None] | None = None,
        cwd: Path | None = None,
        stdout: int | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``tool`` with ``args``; stream its stderr lines to ``on_line`` and the log.

        Raises:
            PgToolFailed: non-zero exit, with the redacted argv and the last stderr lines.
        """
        argv = self.argv(tool, *args)
        return run_command(argv, env=env, timeout=timeout, on_line=on_line, cwd=cwd, check=check)


def run_command(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` without a shell, capturing output; stderr is streamed line by line."""
    full_env = {**os.environ, **(env or {})}
    safe_argv = [redact(a) for a in argv]
    log.debug("running %s", " ".join(safe_argv))
    tail: collections.deque[str] = collections.deque(maxlen=20)
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,  # no tool reads restorekit's input (or waits on it)
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            cwd=cwd,
        )
    except OSError as exc:
        raise PgToolFailed(safe_argv, 127, str(exc)) from exc
    out_chunks: list[str] = []

    def read_stdout() -> None:
        assert proc.stdout is not None
        out_chunks.append(proc.stdout.read())

    def read_stderr() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = redact(raw.rstrip("\n"))
            tail.append(line)
            if on_line is not None:
                on_line(line)

    readers = [threading.Thread(target=fn, daemon=True) for fn in (read_stdout, read_stderr)]
    for reader in readers:
        reader.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        detail = f"timed out after {timeout}s; " + "\n".join(tail)
        raise PgToolFailed(safe_argv, -9, detail) from None
    for reader in readers:
        reader.join()
    stdout = "".join(out_chunks)
    if check and proc.returncode != 0:
        raise PgToolFailed(safe_argv, proc.returncode, "\n".join(tail))
    return subprocess.CompletedProcess(safe_argv, proc.returncode, stdout, "\n".join(tail))

"""Shared machinery for the fault-injection tests (test_faults_storage.py, test_faults_provider.py).

* :class:`FaultProxy`: a tiny HTTP proxy in front of an upstream (moto's server) that forwards
  requests, answers 500 for the next N matching requests (or all of them), *hangs* on them
  (reads the request, never answers), or is *down* (its port closed, connections dropped): the
  ways an object store fails.
* :func:`build_s3_world`: the demo installation with its repository moved to S3 behind a proxy
  (WAL archiving, base backups, snapshots and restores all go through it);
  :func:`archiving_with_env` runs its archive_command with extra environment variables.
* :func:`checksums` (:func:`without_audit`), :func:`postgres_under`, :func:`assert_no_secret`:
  the evidence.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from restorekit.demo import Installation, build_installation
from restorekit.pg.checksum import database_checksums
from restorekit.pg.dsn import libpq_dsn

_ERROR_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
               b"<Message>injected by the test proxy</Message></Error>")
#: The status a hang rule records in ``served``: no answer was ever sent.
HANG = 0
#: The status a down_when() rule records in ``served``: the proxy went down on that request.
DOWN = -1
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "expect",
        "te", "trailer", "upgrade", "content-length"}


@dataclass
class _Rule:
    remaining: int | None  # None: for ever
    method: str | None
    path: str | None  # a regex searched in the request path
    status: int


@dataclass
class FaultProxy:
    """Forward HTTP to ``upstream`` on a fixed local port, with faults on demand."""

    upstream: str
    port: int = 0
    rules: list[_Rule] = field(default_factory=list)
    served: list[tuple[str, str, int]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Hung requests wait on this; heal() and down() set it (dropping them) and start a new one.
    _released: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- controls -----------------------------------------------------------------------------

    def fail(self, times: int | None = 1, *, method: str | None = None, path: str | None = None,
             status: int = 500) -> None:
        """Answer ``status`` to the next ``times`` requests matching (None: all of them)."""
        with self._lock:
            self.rules.append(_Rule(times, method, path, status))

    def hang(self, times: int | None = 1, *, method: str | None = None,
             path: str | None = None) -> None:
        """Read the next ``times`` matching requests (None: all of them) and never answer: the
        connection stays open and silent, as with an S3 endpoint that accepts connections and
        then stalls, until the client gives up or :meth:`heal` / :meth:`down` drops it."""
        with self._lock:
            self.rules.append(_Rule(times, method, path, HANG))

    def down_when(self, *, method: str | None = None, path: str | None = None) -> None:
        """Go :meth:`down` when the next matching request arrives (it gets no answer either):
        an outage that starts in the middle of an operation, at a chosen request."""
        with self._lock:
            self.rules.append(_Rule(1, method, path, DOWN))

    def hangs(self) -> int:
        """How many requests were left hanging since the last :meth:`heal`."""
        return self.failures(HANG)

    def _release_hung(self) -> None:
        with self._lock:
            released, self._released = self._released, threading.Event()
        released.set()

    def down(self) -> None:
        """Stop answering: the port is closed and open connections are dropped."""
        self._release_hung()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def heal(self) -> None:
        """No more faults; serving again."""
        with self._lock:
            self.rules.clear()
            self.served.clear()
        self._release_hung()
        if self._server is None:
            self.start()

    def failures(self, status: int = 500) -> int:
        """How many injected (or upstream) answers with ``status`` were served since the last
        :meth:`heal`."""
        return sum(1 for _, _, s in self.served if s == status)

    # -- serving ------------------------------------------------------------------------------

    def handler_class(self) -> type[_Handler]:
        """The request handler (a subclass speaks another protocol's errors)."""
        return _Handler

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(self.handler_class()):  # type: ignore[misc]
            owner = proxy

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def _fault_for(self, method: str, path: str) -> int | None:
        return self._match(method, path)[0]

    def _match(self, method: str, path: str) -> tuple[int | None, threading.Event]:
        """The fault for a request, and the event that releases it if it hangs (taken under the
        same lock, so a heal() in between cannot leave it waiting on the next outage's event)."""
        with self._lock:
            return self._fault_locked(method, path), self._released

    def _fault_locked(self, method: str, path: str) -> int | None:
        """The first matching rule's status, counting it down (the caller holds ``_lock``)."""
        for rule in self.rules:
            if rule.remaining == 0:
                continue
            if rule.method and rule.method != method:
                continue
            if rule.path and not re.search(rule.path, path):
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
            return rule.status
        return None


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: the headers and the body go out in two writes, and with Nagle the second
    # waited for the client's delayed ACK: 48 ms per GET through the proxy, 4 ms without (moto
    # alone: 3-4 ms). A third of test_faults_storage.py's time was that wait.
    disable_nagle_algorithm = True

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = bytearray()
            while True:
                line = self.rfile.readline()
                raw += line
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        trailer = self.rfile.readline()
                        raw += trailer
                        if trailer in (b"\r\n", b"\n", b""):
                            return bytes(raw)
                raw += self.rfile.read(size + 2)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        body = self._body()
        if self.owner._server is None:  # down: drop the connection without an answer
            self.close_connection = True
            return
        status, released = self.owner._match(self.command, self.path)
        if status == DOWN:
            self.owner.served.append((self.command, self.path, DOWN))
            self.owner.down()  # from this handler thread: serve_forever runs in another one
            self.close_connection = True
            return
        if status == HANG:
            self.owner.served.append((self.command, self.path, HANG))
            released.wait()  # until heal() or down(); then drop the connection unanswered
            self.close_connection = True
            return
        if status is not None:
            self.owner.served.append((self.command, self.path, status))
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(_ERROR_BODY)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(_ERROR_BODY)
            return
        target = urlsplit(self.owner.upstream)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            headers["Transfer-Encoding"] = "chunked"
        elif body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        self.owner.served.append((self.command, self.path, response.status))
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in _HOP:
                self.send_header(key, value)
        if self.command == "HEAD":
            self.send_header("Content-Length", response.getheader("Content-Length") or "0")
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        return None


# -- worlds ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def archiving_with_env(inst: Installation, env: dict[str, str]) -> Iterator[None]:
    """Run production's archive_command with ``env`` added (``VAR=value command`` through
    /bin/sh, as an operator would set them for the PostgreSQL service), then put it back.

    The server's own environment was fixed when it started, so this is how a test gives the
    archiver a setting such as RESTOREKIT_S3_READ_TIMEOUT. The archiver reloads at once when idle.
    """
    settings = inst.runtime().provider.engine.archive_settings()
    command = str(settings["archive_command"])
    prefix = " ".join(f"{name}={shlex.quote(value)}".replace("%", "%%")  # PostgreSQL's escape
                      for name, value in env.items())

    def apply(archive_command: str) -> None:
        inst.production.write_settings({**settings, "archive_command": archive_command})
        with psycopg.connect(inst.app_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")

    apply(f"{prefix} {command}")
    try:
        yield
    finally:
        apply(command)


def build_s3_world(root: Path, repo_url: str) -> Installation:
    """The demo installation (production archiving WAL, sample data, app config), then moved
    onto the S3 repository ``repo_url``: archive_command pushes there from now on, and a base
    backup is taken there. The AWS test credentials must already be in the environment (the
    ``moto_server`` fixture), so the PostgreSQL server inherits them."""
    inst = build_installation(root, scale=0.01)
    text = inst.config.read_text()
    text = re.sub(r'^repository = ".*"$', f'repository = "{repo_url}"', text, flags=re.MULTILINE)
    inst.config.write_text(text)
    rt = inst.runtime()
    inst.production.write_settings(rt.provider.engine.archive_settings())
    with psycopg.connect(inst.app_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    inst.wait_archived()
    rt.provider.create_backup("s3 initial")
    return inst


# -- evidence --------------------------------------------------------------------------------------


def checksums(dsn: str) -> dict[str, str]:
    """Every table's content checksum (restorekit.pg.checksum), in one consistent snapshot.

    ``dsn`` may be the application's own URL (Prisma's ``schema``, ``connection_limit``, ...
    in its query, which libpq refuses): those options are left out, as restorekit does."""
    with psycopg.connect(libpq_dsn(dsn)) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return database_checksums(conn)


def postgres_under(path: Path) -> list[str]:
    """Command lines of running postgres servers whose data directory is under ``path``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "postgres" in cmd and str(path) in cmd:
                found.append(cmd)
    return found


def files_under(path: Path) -> list[str]:
    """Every file below ``path`` (relative), to prove nothing was left behind."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def without_audit(sums: dict[str, str]) -> dict[str, str]:
    """Table checksums without the audit log, which remembers a repaired deletion."""
    return {t: c for t, c in sums.items() if t != "public.audit_log"}


def assert_no_secret(message: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in message, f"a secret leaked into: {message}"


def mount_tmpfs(directory: Path, size: str) -> None:
    """Mount a tmpfs of ``size`` on ``directory``; raises RuntimeError with the reason."""
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                             str(directory)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip() or f"mount exited {result.returncode}")


def remount_tmpfs(directory: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(directory)], check=True,
                   capture_output=True)


def unmount(directory: Path) -> None:
    subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def delete_users(dsn: str, n: int) -> tuple[list[int], str]:
    """Scenario 3's accident: delete the ``n`` highest users that have appointments (their
    clients and appointments cascade). Returns (their ids, the time just before, ISO-8601)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        since = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        victims = [r[0] for r in conn.execute(
            "SELECT id FROM users WHERE id IN (SELECT user_id FROM appointments) "
            "ORDER BY id DESC LIMIT %s", (n,))]
        time.sleep(0.05)
        conn.execute("DELETE FROM users WHERE id = ANY(%s)", (victims,))
    return victims, since.isoformat()

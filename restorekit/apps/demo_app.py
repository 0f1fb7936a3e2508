"""The small application of the embedded default: what a restore stops, re-points and checks.

Run it as ``python -m restorekit.apps.demo_app --env-file PATH --port N [--host 127.0.0.1]``.
It reads DATABASE_URL from the env file once at start, like a deployed app reads its
environment, so a new connection string takes effect only after a redeploy. Endpoints:

* ``GET /api/health``: the runbook's shape. 200 ``{"ok": true, "database": {"connected": true,
  "latency": "15ms"}}`` when ``SELECT 1`` works (latency = connect + query, as the app has no
  pool), else 503 ``{"ok": false, "database": {"connected": false, "error": "..."}}``.
* ``GET /api/users/count``: the runbook's "critical functionality" probe: ``{"ok": true,
  "table": "users", "count": N}``, 404 when there is no ``users`` table, 503 when the database
  fails.
* ``POST /api/login``: the smoke checks' login. A JSON or form body with ``email`` and
  ``password``, checked against table ``app_users`` (restorekit.sample.create_login_account):
  200 ``{"ok": true, "user": EMAIL}``, 401 ``{"ok": false, ...}`` for a wrong email or password.
* ``GET /api/users?limit=5``: a page that reads data: ``{"ok": true, "users": [{"id": .., "name":
  ..}, ...]}``, the first users by id (limit 1-100).

DATABASE_URL may carry Prisma's own query options (``?schema=public&connection_limit=5&
pool_timeout=10&pgbouncer=true``): like Prisma, the app takes ``schema`` as its search path and
ignores the options libpq does not know, instead of failing on them.

The DSN and its password never leave the process: errors are redacted before they are logged or
returned, and the startup line shows the DSN in :func:`restorekit.pg.dsn.display` form.
Standard library HTTP server plus psycopg only; SIGTERM and SIGINT stop it cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from restorekit.errors import RestoreKitError
from restorekit.pg.dsn import display, redact, split_app_url
from restorekit.sample import check_password
from restorekit.sinks.envfile import EnvFileStore

# Named explicitly: run with -m, __name__ is "__main__".
log = logging.getLogger("restorekit.apps.demo_app")

HEALTH_PATH = "/api/health"
USERS_COUNT_PATH = "/api/users/count"
USERS_PATH = "/api/users"
LOGIN_PATH = "/api/login"
_MAX_BODY = 64 * 1024
# Below the health checker's default 5 s timeout, so a dead database gives a 503, not a timeout.
CONNECT_TIMEOUT_S = 3
_MAX_ERROR_CHARS = 300


class Scrubber:
    """Removes a DSN's secrets from any text before it leaves the process."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._secrets: list[str] = []
        try:
            params = conninfo_to_dict(split_app_url(dsn)[0])
        except Exception:  # psycopg.ProgrammingError; an invalid DSN is reported elsewhere
            params = {}
        for key in ("password", "sslpassword"):
            value = params.get(key)
            if value:
                # URLs carry the percent-encoded form, libpq messages the decoded one.
                self._secrets += sorted({str(value), quote(str(value), safe="")}, key=len,
                                        reverse=True)

    def __call__(self, text: str) -> str:
        if self._dsn:
            text = text.replace(self._dsn, display(self._dsn))
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact(text)


class Database:
    """The app's view of its database: one short connection per request."""

    def __init__(self, dsn: str, scrub: Scrubber) -> None:
        # Prisma-style options: libpq gets its own part; ``schema`` becomes the search path.
        self._dsn, options = split_app_url(dsn)
        self._valid = _is_valid_dsn(dsn)
        self._schema = dict(options).get("schema")
        self.scrub = scrub

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        if not self._valid:
            # psycopg's message for a malformed DSN quotes the DSN itself.
            raise psycopg.OperationalError("DATABASE_URL is not a valid connection string")
        conn = psycopg.connect(self._dsn, connect_timeout=CONNECT_TIMEOUT_S,
                               application_name="restorekit-demo-app", autocommit=True)
        if self._schema:
            try:
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self._schema)))
            except BaseException:
                conn.close()
                raise
        return conn

    def ping(self) -> float:
        """Connect and run ``SELECT 1``; return the milliseconds it took."""
        started = time.perf_counter()
        with self._connect() as conn:
            conn.execute("SELECT 1").fetchone()
        return (time.perf_counter() - started) * 1000

    def users_count(self) -> int | None:
        """``count(*)`` of table ``users``, or None when there is no such table."""
        with self._connect() as conn:
            row = conn.execute("SELECT to_regclass('users') IS NOT NULL").fetchone()
            if not row or not row[0]:
                return None
            count = conn.execute("SELECT count(*) FROM users").fetchone()
        return int(count[0]) if count else 0

    def users(self, limit: int) -> list[dict[str, Any]]:
        """The first ``limit`` users by id (id and name)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT id, name FROM users ORDER BY id LIMIT %s",
                                [limit]).fetchall()
        return [{"id": int(r[0]), "name": str(r[1])} for r in rows]

    def login(self, email: str, password: str) -> bool | None:
        """Whether the account exists and the password matches; None without ``app_users``."""
        with self._connect() as conn:
            row = conn.execute("SELECT to_regclass('app_users') IS NOT NULL").fetchone()
            if not row or not row[0]:
                return None
            found = conn.execute("SELECT password_hash FROM app_users WHERE email = %s",
                                 [email]).fetchone()
        return found is not None and check_password(password, str(found[0]))

    def error_text(self, exc: BaseException) -> str:
        """A one-line, secret-free message for ``exc``."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        return self.scrub(text)[:_MAX_ERROR_CHARS]


def _is_valid_dsn(dsn: str) -> bool:
    try:
        conninfo_to_dict(split_app_url(dsn)[0])
    except Exception:
        return False
    return True


def format_latency(ms: float) -> str:
    """Milliseconds in the runbook's style: ``15ms``, ``2.3ms``."""
    return f"{round(ms, 1):g}ms"


class DemoServer(ThreadingHTTPServer):
    """The HTTP server; handlers reach the database through ``self.database``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], database: Database) -> None:
        self.database = database
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback; exception text may hold what we never show.
        exc = sys.exc_info()[1]
        log.error("request from %s failed: %s", client_address[0],
                  self.database.error_text(exc) if exc else "unknown error")


class Handler(BaseHTTPRequestHandler):
    server: DemoServer
    server_version = "restorekit-demo-app"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK wait

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        if path == HEALTH_PATH:
            self._health()
        elif path == USERS_COUNT_PATH:
            self._users_count()
        elif path == USERS_PATH:
            self._users(urlsplit(self.path).query)
        else:
            self._send(404, {"ok": False, "error": f"no route {path or '/'}"})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        if path == LOGIN_PATH:
            self._login()
        else:
            self._send(404, {"ok": False, "error": f"no route {path or '/'}"})

    def _form(self) -> dict[str, str] | None:
        """The request's JSON or form body as strings; None when it is neither."""
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= _MAX_BODY:
            return None
        raw = self.rfile.read(length)
        if "application/x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
            return {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else None

    def _login(self) -> None:
        db = self.server.database
        form = self._form()
        if not form or not form.get("email") or "password" not in form:
            self._send(400, {"ok": False, "error": "send email and password (JSON or form)"})
            return
        with self._database_errors_as_503("login"):
            ok = db.login(form["email"], form["password"])
            if ok is None:
                self._send(500, {"ok": False, "error": "table app_users does not exist"})
            elif ok:
                self._send(200, {"ok": True, "user": form["email"]})
            else:
                self._send(401, {"ok": False, "error": "wrong email or password"})

    def _users(self, query: str) -> None:
        db = self.server.database
        try:
            limit = int(parse_qs(query).get("limit", ["5"])[0])
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            self._send(400, {"ok": False, "error": "limit must be 1-100"})
            return
        with self._database_errors_as_503("users page"):
            users = db.users(limit)
            self._send(200, {"ok": True, "users": users})

    def _health(self) -> None:
        db = self.server.database
        try:
            latency = db.ping()
        except psycopg.Error as exc:
            error = db.error_text(exc)
            log.warning("health: database unavailable: %s", error)
            self._send(503, {"ok": False, "database": {"connected": False, "error": error}})
            return
        self._send(200, {"ok": True,
                         "database": {"connected": True, "latency": format_latency(latency)}})

    def _users_count(self) -> None:
        with self._database_errors_as_503("users count"):
            count = self.server.database.users_count()
            if count is None:
                self._send(404, {"ok": False, "error": "table users does not exist"})
            else:
                self._send(200, {"ok": True, "table": "users", "count": count})

    @contextlib.contextmanager
    def _database_errors_as_503(self, what: str) -> Iterator[None]:
        """A database error inside is logged as ``what`` failing and answered 503 with its
        (scrubbed) text: the application is up, its database is not."""
        try:
            yield
        except psycopg.Error as exc:
            error = self.server.database.error_text(exc)
            log.warning("%s failed: %s", what, error)
            self._send(503, {"ok": False, "error": error})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


def serve(env_file: Path, host: str, port: int) -> int:
    """Read the DSN, serve until SIGTERM/SIGINT; return the process exit status."""
    try:
        dsn = EnvFileStore(env_file).read().get_secret_value()
    except RestoreKitError as exc:  # ConfigError/ProviderError messages never hold the value
        log.error("cannot start: %s", exc)
        return 2
    scrub = Scrubber(dsn)
    try:
        server = DemoServer((host, port), Database(dsn, scrub))
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        # shutdown() waits for serve_forever() to return: call it off the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    shown = display(dsn) if _is_valid_dsn(dsn) else "(not a valid connection string)"
    log.info("demo app serving on http://%s:%d (database %s, from %s)", host, port,
             scrub(shown), env_file)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    log.info("demo app stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m restorekit.apps.demo_app",
                                     description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--env-file", type=Path, required=True,
                        help="dotenv file with DATABASE_URL")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(args.env_file, args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())

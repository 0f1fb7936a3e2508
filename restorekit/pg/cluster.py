"""Local PostgreSQL clusters driven by initdb and pg_ctl.

Used for the embedded self-hosted default (a "production" cluster on one machine), for every
restored cluster, and by the tests. A cluster listens on loopback TCP only (no Unix socket, so
paths never hit the 107-byte socket limit) on a free port.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import shutil
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

from restorekit.errors import (
    DatabaseMissing,
    PgToolFailed,
    PostgresAuthError,
    PostgresError,
    PostgresUnavailable,
)
from restorekit.pg.initdb import SUPERUSER, initdb
from restorekit.pg.tools import PgTool, default_os_user, find_bin_dir, make_dir
from restorekit.processes import pid_alive

log = logging.getLogger(__name__)

CONF_FILE = "restorekit.conf"


_PORTS = random.Random()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now, below the kernel's ephemeral
    range: a port the kernel hands out (bind to 0) is also what it gives the next outgoing
    connection of any process, which then holds it when the server starts ("could not bind
    ... Address already in use", seen on a busy machine)."""
    below = range(10000, _ephemeral_low())
    # A generator of its own: drawing from the global one would move the state that the caller
    # (a seeded sample, a property test) relies on, from whatever thread starts a cluster.
    for port in _PORTS.sample(below, k=min(50, len(below))):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _quote_setting(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    text = str(value).replace("\\", "\\\\").replace("'", "''")
    return f"'{text}'"


def format_settings(settings: Mapping[str, object]) -> str:
    """Render settings as postgresql.conf lines."""
    return "".join(f"{key} = {_quote_setting(value)}\n" for key, value in settings.items())


@dataclass
class LocalCluster:
    """A PostgreSQL cluster in ``data_dir`` that restorekit starts and stops itself."""

    data_dir: Path
    port: int
    bin_dir: Path = field(default_factory=find_bin_dir)
    os_user: str | None = field(default_factory=default_os_user)
    host: str = "127.0.0.1"
    socket_dir: Path | None = None  # Unix socket directory, when one is wanted (pgBackRest)
    #: The superuser's password when the cluster authenticates with scram-sha-256 (clusters the
    #: tests and the demo build); restored clusters are reached with the source's credentials.
    password: str | None = field(default=None, repr=False)

    @property
    def tool(self) -> PgTool:
        return PgTool(self.bin_dir, self.os_user)

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER,
            password: str | None = None) -> str:
        password = password if password is not None else (
            self.password if user == SUPERUSER else None)
        return make_conninfo(host=self.host, port=self.port, user=user, dbname=dbname,
                             **({"password": password} if password else {}))

    def url(self, dbname: str = "postgres", user: str = SUPERUSER,
            password: str | None = None) -> str:
        password = password if password is not None else (
            self.password if user == SUPERUSER else None)
        auth = (f"{quote(user, safe='')}:{quote(password, safe='')}" if password
                else quote(user, safe=''))
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        data_dir: Path,
        *,
        port: int | None = None,
        settings: Mapping[str, object] | None = None,
        bin_dir: Path | None = None,
        os_user: str | None = None,
        use_default_user: bool = True,
        socket_dir: Path | None = None,
        password: str | None = None,
    ) -> LocalCluster:
        """initdb a new cluster with data checksums on.

        Without ``password`` every local connection is trusted (quick scratch clusters); with
        one, every connection (TCP and socket, replication included) needs scram-sha-256 and
        the superuser ``postgres`` gets that password, as a production cluster would. The WAL
        segment size is initdb's default (16 MB) unless ``$RESTOREKIT_WAL_SEGMENT_MB`` says
        otherwise (RDS runs 64 MB; the tests run 1 MB, so every segment they archive, copy,
        compress and replay is 16 times smaller, and nothing may assume 16 MB).
        """
        if os_user is None and use_default_user:
            os_user = default_os_user()
        data_dir = Path(data_dir).absolute()
        if data_dir.exists() and any(data_dir.iterdir()):
            raise PostgresError(f"{data_dir} is not empty; refusing to initdb over it")
        make_dir(data_dir.parent, os_user, mode=0o755) if not data_dir.parent.exists() else None
        make_dir(data_dir, os_user)
        cluster = cls(data_dir=data_dir, port=port or free_port(),
                      bin_dir=bin_dir or find_bin_dir(), os_user=os_user, socket_dir=socket_dir,
                      password=password)
        if socket_dir is not None:
            make_dir(socket_dir, os_user, mode=0o755)
        initdb(cluster.tool, data_dir, password)
        cluster.write_settings({"listen_addresses": "127.0.0.1", "port": cluster.port,
                                "unix_socket_directories": str(socket_dir or ""),
                                "fsync": True,
                                **(settings or {})})
        return cluster

    def write_settings(self, settings: Mapping[str, object]) -> None:
        """Replace restorekit's settings file and include it from postgresql.conf.

        The include comes last in postgresql.conf, so these settings win over the file's own;
        postgresql.auto.conf (ALTER SYSTEM) still wins over both.
        """
        conf = self.data_dir / "postgresql.conf"
        ours = self.data_dir / CONF_FILE
        current = self.read_settings_file()
        current.update(settings)
        self._write_as_owner(ours, format_settings(current))
        text = conf.read_text()
        include = f"include_if_exists = '{CONF_FILE}'\n"
        if include not in text:
            self._write_as_owner(conf, text + "\n" + include)
        if "port" in settings:
            self.port = int(str(settings["port"]))

    def read_settings_file(self) -> dict[str, object]:
        ours = self.data_dir / CONF_FILE
        result: dict[str, object] = {}
        if ours.exists():
            for line in ours.read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    value = value.strip()
                    if value.startswith("'") and value.endswith("'"):
                        value = value[1:-1].replace("''", "'").replace("\\\\", "\\")
                    result[key.strip()] = value
        return result

    def _write_as_owner(self, path: Path, text: str) -> None:
        existed = path.exists()
        path.write_text(text)
        if not existed:
            path.chmod(0o600)
            from restorekit.pg.tools import chown_for

            chown_for(path, self.os_user)

    def start(self, *, wait: bool = True, timeout: float = 60) -> None:
        """Start the server. With ``wait``, return once it accepts connections."""
        args = ["start", "-D", str(self.data_dir), "-l", str(self.log_file), "-s"]
        if not self.log_file.exists():
            self.log_file.touch()
            from restorekit.pg.tools import chown_for

            chown_for(self.log_file, self.os_user)
        args += ["-w", "-t", str(int(timeout))] if wait else ["-W"]
        try:
            self.tool.run("pg_ctl", *args, timeout=timeout + 10)
        except PgToolFailed as exc:
            raise PostgresError(f"{exc}\n--- server log ---\n{self.log_tail()}") from exc

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        if not self.is_running():
            return
        self.tool.run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-s", "-w",
                      "-t", str(int(timeout)), timeout=timeout + 10)

    def is_running(self) -> bool:
        """Whether a postmaster runs (or is starting) on this data directory.

        Read from postmaster.pid rather than ``pg_ctl status``: the postmaster creates the file
        first and writes its pid afterwards, and ``pg_ctl status`` calls an empty file "not
        running" -- a restored cluster polled in that instant was once reported as stopped.
        """
        try:
            pid = self.postmaster_pid()
        except PermissionError:  # the data directory is not ours to read: ask pg_ctl
            result = self.tool.run("pg_ctl", "status", "-D", str(self.data_dir), check=False,
                                   timeout=30)
            return result.returncode == 0
        if pid is None:
            return (self.data_dir / "postmaster.pid").exists()  # created, pid not written yet
        return pid_alive(pid)  # a stale file after kill -9 names a dead pid

    def postmaster_pid(self) -> int | None:
        """The pid in postmaster.pid, or None when there is no file or no pid in it yet."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text(errors="replace").split("\n", 1)[0]
        except (FileNotFoundError, NotADirectoryError):
            return None
        return int(first) if first.strip().isdigit() else None

    def postmaster_status(self) -> str | None:
        """What the postmaster says it is doing (postmaster.pid, line 8, as pg_ctl reads it):
        ``starting``, ``standby`` (a hot standby accepting read-only connections), ``ready``
        or ``stopping``; None when there is no file, no status in it yet, or it is unreadable."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text(errors="replace").split("\n")
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return None
        status = lines[7].strip() if len(lines) > 7 else ""
        return status or None

    def destroy(self) -> None:
        """Stop the server (immediate) and remove its data directory and log."""
        with contextlib.suppress(PgToolFailed):
            self.stop(mode="immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.log_file.unlink()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no server log)"

    # -- connections -------------------------------------------------------------------------

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[TupleRow]:
        return connect(self.dsn(dbname), **kwargs)

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until_ready(self.dsn(), timeout=timeout)


#: SQLSTATEs at connect time that a retry can cure: cannot_connect_now (a server still starting
#: or recovering), too_many_connections, admin/crash shutdown in progress.
_TRANSIENT_CONNECT = {"57P03", "53300", "57P01", "57P02"}


def connect(dsn: str, *, whole_tables: bool = False, **kwargs: Any
            ) -> psycopg.Connection[TupleRow]:
    """Connect, mapping failures onto the taxonomy; ``whole_tables``: for reading or writing
    whole tables (:func:`whole_table_session`).

    A refused or timed-out connection and "the database system is starting up" are
    PostgresUnavailable (retryable); a missing database or a rejected password is a
    non-retryable PostgresError, so tasks do not retry what cannot get better.
    """
    from restorekit.pg.dsn import redact

    try:
        conn = psycopg.connect(dsn, **kwargs)
        return whole_table_session(conn) if whole_tables else conn
    except psycopg.OperationalError as exc:
        message = redact(str(exc)).strip()
        if is_auth_failure(exc.sqlstate, message):
            raise auth_error(dsn, message) from None
        if _tls_failure(message):
            raise PostgresError(
                f"cannot connect: {message}. The TLS settings of the connection string (sslmode, "
                "sslrootcert, the host name the certificate is checked against) do not fit this "
                "server; nothing was retried.") from None
        if _transient_connect_failure(exc.sqlstate, message):
            raise PostgresUnavailable(message) from None
        if exc.sqlstate == "3D000" or _DATABASE_MISSING.search(message):
            raise DatabaseMissing(f"cannot connect: {message}") from None
        raise PostgresError(f"cannot connect: {message}") from None


def whole_table_session(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """Set up ``conn`` for reading or writing whole tables, as pg_dump sets up its own session.

    - statement_timeout, idle_in_transaction_session_timeout and idle_session_timeout off
      (the last where the server has it): a production commonly bounds them for its web
      requests (``ALTER DATABASE ... SET``, a role's settings, an RDS parameter group) and a
      restored copy inherits them; a diff scan of a large table outlasts such a timeout, and
      the recovery's transaction on production sits idle while rows are read from the copy.
      lock_timeout stays as configured.
    - row_security off: where row-level security would hide rows from this role, a query fails
      (SQLSTATE 42501) instead of reading the table in part, which a diff would take for
      missing rows.

    Committed at once on a connection that is not in autocommit, so a later rollback keeps it.
    ``conn`` is closed when it cannot be set up.
    """
    try:
        conn.execute("SELECT set_config(name, CASE name WHEN 'row_security' THEN 'off' ELSE "
                     "'0' END, false) FROM pg_settings WHERE name IN ('statement_timeout', "
                     "'idle_in_transaction_session_timeout', 'idle_session_timeout', "
                     "'row_security')")  # idle_session_timeout: PostgreSQL 14 and later
        if not conn.autocommit:
            conn.commit()
    except BaseException:
        conn.close()
        raise
    return conn


# The server refused the credentials: no retry can cure these (a restored cluster inherits the
# source's pg_hba.conf and roles, so a missing password used to look like "not ready yet" and
# a restore polled for an hour). libpq says "no password supplied" without a FATAL.
_AUTH_SQLSTATES = {"28P01", "28000"}
_AUTH_TEXT = ("no password supplied", "password authentication failed", "no pg_hba.conf entry",
              "peer authentication failed", "ident authentication failed",
              "scram authentication", "authentication failed for user", "channel binding")
_ROLE_MISSING = re.compile(r'role "[^"]*" does not exist')
_DATABASE_MISSING = re.compile(r'database "[^"]*" does not exist')


def is_auth_failure(sqlstate: str | None, message: str) -> bool:
    """Whether a failed connection (``message``: libpq's, or a PostgreSQL tool's) was refused
    credentials."""
    if sqlstate in _AUTH_SQLSTATES:
        return True
    lowered = message.lower()
    return any(text in lowered for text in _AUTH_TEXT) or bool(_ROLE_MISSING.search(message))


_REPLICATION_LINES = "'s replication connections (its 'replication' lines, for pg_basebackup)"


def auth_error(dsn: str, message: str, *, replication: bool = False) -> PostgresAuthError:
    """The one message for refused credentials: who, where, and what to fix (``replication``:
    a replication connection, which pg_hba.conf matches on its own lines)."""
    from restorekit.pg.dsn import parse

    try:
        params = parse(dsn)
    except Exception:  # noqa: BLE001 - the DSN already connected as far as the server
        params = {}
    role = str(params.get("user") or "(the OS user's name)")
    host = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
    why = message.rsplit("failed:", 1)[-1].strip() if "failed:" in message else message
    return PostgresAuthError(
        f"authentication failed for role {role!r} at {host}: {why}. Check the password "
        "restorekit was given for this role (the target's dsn_env, or PGPASSFILE) and that "
        f"pg_hba.conf allows this role{_REPLICATION_LINES if replication else ''} from this "
        "host; nothing was retried.",
        role=role, host=host,
    )


# libpq reports server-side connect failures as text, usually without a SQLSTATE; a FATAL from
# the server is permanent (no such database, bad password) unless it says the server is busy
# starting, stopping or full.
_TRANSIENT_TEXT = ("starting up", "shutting down", "in recovery mode", "not yet accepting",
                   "too many clients", "remaining connection slots", "not accepting connections")


# libpq's TLS refusals carry no FATAL either, and no retry cures them: a certificate that names
# another host or does not verify, a missing root certificate, a server without TLS. (An "SSL
# SYSCALL error", a connection cut during the handshake, stays transient.)
_TLS_TEXT = ("certificate", "does not support SSL")


def _tls_failure(message: str) -> bool:
    return any(text in message for text in _TLS_TEXT)


def _transient_connect_failure(sqlstate: str | None, message: str) -> bool:
    if sqlstate is not None:
        return sqlstate in _TRANSIENT_CONNECT
    if "FATAL:" not in message:
        return True  # refused, unreachable, timed out: nothing answered
    return any(text in message for text in _TRANSIENT_TEXT)


def wait_until_ready(dsn: str, *, timeout: float = 60, interval: float = 0.1) -> None:
    """Poll until ``dsn`` accepts connections (e.g. a freshly restored cluster)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with connect(dsn, connect_timeout=5):
                return
        except PostgresUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)


def _archive_status(conn: psycopg.Connection[TupleRow], segment: str) -> str:
    """``done``, ``ready``, ``removed`` (no status and no file: a segment is removed only once
    archived) or ``none``, from the archive status directory; needs superuser or pg_monitor."""
    names = {str(r[0]) for r in conn.execute(
        "SELECT name FROM pg_ls_archive_statusdir() WHERE name IN (%s, %s) "
        "UNION ALL SELECT name FROM pg_ls_waldir() WHERE name = %s",
        (f"{segment}.done", f"{segment}.ready", segment))}
    if f"{segment}.done" in names:
        return "done"
    if f"{segment}.ready" in names:
        return "ready"
    return "none" if segment in names else "removed"


def switch_wal_and_wait_archived(dsn: str, *, timeout: float = 60) -> str:
    """Close the current WAL segment and wait until the source's archiver has stored it (so
    everything committed so far is restorable). Returns the segment's name.

    The segment's ``.done`` status is the proof. pg_stat_archiver alone is not: it names the
    file archived last, not the highest, and a backup history file written after the stop
    backup's switch is archived after the segment that switch closed (CI runs waited 300 s on
    a segment already in the repository). Without the privilege to list the status directory,
    one more segment is completed and archived to move the counters past it.

    Raises:
        PostgresError: the archiver did not get there within ``timeout`` seconds (check
            pg_stat_archiver.last_failed_wal and the archive_command).
    """
    with connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None
        segment = str(row[0])
        deadline = time.monotonic() + timeout
        can_list, nudge_at = True, time.monotonic() + 5
        seen: tuple[object, ...] = ()
        status = "unknown (no privilege to list pg_wal/archive_status)"
        while time.monotonic() < deadline:
            seen = conn.execute(
                "SELECT last_archived_wal, failed_count, last_failed_wal, last_failed_time "
                "FROM pg_stat_archiver").fetchone() or ()
            # The 24-character segment part: a .backup or .partial file names its segment.
            if seen and seen[0] and str(seen[0])[:24] >= segment:
                return segment
            if can_list:
                try:
                    status = _archive_status(conn, segment)
                except psycopg.errors.InsufficientPrivilege:
                    can_list = False
                if status in ("done", "removed"):
                    return segment
            elif time.monotonic() > nudge_at:
                nudge_at = time.monotonic() + 30
                conn.execute("SELECT pg_current_xact_id()")  # a commit record: the switch is real
                conn.execute("SELECT pg_switch_wal()")
            time.sleep(0.05)
        # What the archiver is doing: a command still running shows as its wait event.
        archiver = conn.execute(
            "SELECT wait_event_type, wait_event, now() - state_change FROM pg_stat_activity "
            "WHERE backend_type = 'archiver'").fetchone()
    archived, failed, failed_wal, failed_at = (list(seen) + [None] * 4)[:4]
    doing = (f"archiver waiting on {archiver[0]}/{archiver[1]}" if archiver else
             "no archiver process")
    raise PostgresError(
        f"WAL segment {segment} was not archived within {timeout:.0f}s (pg_stat_archiver: last "
        f"archived {archived}, {failed} failure(s), last failed {failed_wal} at {failed_at}; "
        f"{doing}; archive status {status}); check the archive_command and the server log"
    )

"""pgbench workloads for the load tests: scripts that keep a ledger, a runner that keeps pgbench
busy for exactly as long as a flow runs, and pgbench's own figures parsed from its output.

Every workload transaction writes its ledger row in the SAME transaction as its change, so a
ledger row exists if and only if the change committed. Afterwards the checks are set-based
anti-joins: no ledgered change may be missing, and every row keeps the value of its latest
ledgered write.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from restorekit.pg.tools import find_bin_dir

# -- workload 1: pgbench's own schema (TPC-B) with a ledger --------------------------------------

TPCB_LEDGER_DDL = """
CREATE TABLE pgbench_ledger (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client int NOT NULL,
    txid   bigint NOT NULL,
    aid    int NOT NULL,
    tid    int NOT NULL,
    bid    int NOT NULL,
    delta  int NOT NULL,
    mtime  timestamp NOT NULL,
    at     timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

# pgbench's built-in tpcb-like transaction, plus the ledger row in the same transaction.
TPCB_LEDGER_SCRIPT = """\
\\set aid random(1, 100000 * :scale)
\\set bid random(1, 1 * :scale)
\\set tid random(1, 10 * :scale)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)
  VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
INSERT INTO pgbench_ledger (client, txid, aid, tid, bid, delta, mtime)
  VALUES (:client_id, txid_current(), :aid, :tid, :bid, :delta, CURRENT_TIMESTAMP);
END;
"""

# Each query returns the number of violations; all must be 0. pgbench -i starts every balance
# at 0, so a balance equals the sum of its ledgered deltas iff no committed write was lost (or
# reverted) and no uncommitted one appeared.
TPCB_CHECKS: dict[str, str] = {
    "ledgered transactions without their history row": """
        SELECT count(*) FROM pgbench_ledger l
        WHERE NOT EXISTS (SELECT FROM pgbench_history h WHERE h.aid = l.aid AND h.tid = l.tid
                          AND h.bid = l.bid AND h.delta = l.delta AND h.mtime = l.mtime)""",
    "history rows without a ledgered transaction": """
        SELECT count(*) FROM pgbench_history h
        WHERE NOT EXISTS (SELECT FROM pgbench_ledger l WHERE h.aid = l.aid AND h.tid = l.tid
                          AND h.bid = l.bid AND h.delta = l.delta AND h.mtime = l.mtime)""",
    "accounts whose balance is not the sum of their ledgered deltas": """
        SELECT count(*) FROM pgbench_accounts a
        LEFT JOIN (SELECT aid, sum(delta) AS s FROM pgbench_ledger GROUP BY aid) l USING (aid)
        WHERE a.abalance <> coalesce(l.s, 0)""",
    "tellers whose balance is not the sum of their ledgered deltas": """
        SELECT count(*) FROM pgbench_tellers t
        LEFT JOIN (SELECT tid, sum(delta) AS s FROM pgbench_ledger GROUP BY tid) l USING (tid)
        WHERE t.tbalance <> coalesce(l.s, 0)""",
    "branches whose balance is not the sum of their ledgered deltas": """
        SELECT count(*) FROM pgbench_branches b
        LEFT JOIN (SELECT bid, sum(delta) AS s FROM pgbench_ledger GROUP BY bid) l USING (bid)
        WHERE b.bbalance <> coalesce(l.s, 0)""",
}

# -- workload 2: the sample schema (users, clients, appointments) with a ledger ------------------

SAMPLE_LEDGER_DDL = """
CREATE TABLE load_ledger (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tbl      text NOT NULL,
    row_id   bigint NOT NULL,
    old_text text,            -- the version an UPDATE or DELETE changed (NULL for an INSERT)
    row_text text,            -- the version the change wrote (NULL for a DELETE)
    txid     bigint NOT NULL DEFAULT txid_current(),
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

# Each script is ONE statement (one transaction): the change and its ledger rows together; the
# ledger row is written after the changed row is locked, so for one row the ledger's id order
# is the order of its writes. An UPDATE locks the row first (FOR UPDATE returns the newest
# committed version) and records the version it changed, so the ledger is a chain per row: a
# write that something else reverted in between breaks it, even when a later write hides the
# revert in the final state. Users at or below :vmax are the victims and are never touched.
SAMPLE_SCRIPTS: dict[str, str] = {
    # A new user signs up with a client and an appointment.
    "new_user": """\
WITH u AS (INSERT INTO users AS x (name, email)
           VALUES ('load ' || :client_id, 'load-' || txid_current() || '@example.com')
           RETURNING x.id, x::text AS t),
     c AS (INSERT INTO clients AS x (user_id, name, phone)
           SELECT id, 'load client', '+1-555-0000000' FROM u
           RETURNING x.id, x::text AS t),
     a AS (INSERT INTO appointments AS x (user_id, client_id, starts_at, notes)
           SELECT u.id, c.id, now() + interval '7 days', 'load' FROM u, c
           RETURNING x.id, x::text AS t)
INSERT INTO load_ledger (tbl, row_id, row_text)
SELECT 'users', id, t FROM u UNION ALL SELECT 'clients', id, t FROM c
UNION ALL SELECT 'appointments', id, t FROM a;
""",
    # An existing (non-victim) user's client changes phone number.
    "update_client": """\
\\set uid random(:vmax + 1, :nusers)
\\set r random(0, 9999999)
WITH o AS (SELECT x.id, x::text AS t FROM clients x
           WHERE x.id = (SELECT min(id) FROM clients WHERE user_id = :uid) FOR UPDATE),
     c AS (UPDATE clients AS x SET phone = '+1-555-' || lpad((:r)::text, 7, '0')
           FROM o WHERE x.id = o.id RETURNING x.id, o.t AS old, x::text AS t)
INSERT INTO load_ledger (tbl, row_id, old_text, row_text)
SELECT 'clients', id, old, t FROM c;
""",
    # An existing user books an appointment for one of their clients.
    "new_appointment": """\
\\set uid random(:vmax + 1, :nusers)
WITH a AS (INSERT INTO appointments AS x (user_id, client_id, starts_at, notes)
           SELECT c.user_id, c.id, now() + interval '3 days', 'load booking'
           FROM clients c WHERE c.user_id = :uid ORDER BY c.id LIMIT 1
           RETURNING x.id, x::text AS t)
INSERT INTO load_ledger (tbl, row_id, row_text) SELECT 'appointments', id, t FROM a;
""",
    # A booking the workload made is cancelled by deleting it (must stay deleted).
    "delete_appointment": """\
\\set uid random(:vmax + 1, :nusers)
WITH d AS (DELETE FROM appointments AS x
           WHERE x.id = (SELECT max(id) FROM appointments
                         WHERE user_id = :uid AND notes = 'load booking')
           RETURNING x.id, x::text AS t)
INSERT INTO load_ledger (tbl, row_id, old_text, row_text)
SELECT 'appointments', id, t, NULL FROM d;
""",
    # An existing user's earliest appointment changes status.
    "update_appointment": """\
\\set uid random(:vmax + 1, :nusers)
\\set r random(0, 999999)
WITH o AS (SELECT x.id, x::text AS t FROM appointments x
           WHERE x.id = (SELECT min(id) FROM appointments WHERE user_id = :uid) FOR UPDATE),
     a AS (UPDATE appointments AS x
           SET status = CASE WHEN :r % 2 = 0 THEN 'completed' ELSE 'cancelled' END,
               notes = 'load ' || :r
           FROM o WHERE x.id = o.id RETURNING x.id, o.t AS old, x::text AS t)
INSERT INTO load_ledger (tbl, row_id, old_text, row_text)
SELECT 'appointments', id, old, t FROM a;
""",
}


def sample_check(table: str) -> sql.Composed:
    """Rows of ``table`` that are not what the workload last wrote: missing or different when
    the latest ledgered write stored a version, present again when it was a DELETE. One
    statement (anti-joins)."""
    return sql.SQL(
        "SELECT count(*) FROM ("
        " SELECT DISTINCT ON (row_id) row_id, row_text FROM load_ledger"
        " WHERE tbl = {name} ORDER BY row_id, id DESC) l"
        " WHERE CASE WHEN l.row_text IS NULL"
        "  THEN EXISTS (SELECT FROM {table} x WHERE x.id = l.row_id)"
        "  ELSE NOT EXISTS (SELECT FROM {table} x WHERE x.id = l.row_id"
        "                   AND x::text = l.row_text) END"
    ).format(name=sql.Literal(table), table=sql.Identifier(table))


SAMPLE_CHECKS: dict[str, Any] = {
    f"{t} rows not as the workload last wrote them": sample_check(t)
    for t in ("users", "clients", "appointments")
}
SAMPLE_CHECKS[
    "ledgered updates and deletes that did not start from the previous ledgered version"] = """
    SELECT count(*) FROM (
        SELECT old_text, lag(row_text) OVER (PARTITION BY tbl, row_id ORDER BY id) AS previous
        FROM load_ledger) l
    WHERE l.previous IS NOT NULL AND l.old_text IS DISTINCT FROM l.previous"""


def violations(dsn: str, checks: dict[str, Any]) -> dict[str, int]:
    """Run each check; return only those that found something."""
    found: dict[str, int] = {}
    with psycopg.connect(dsn) as conn:
        for name, query in checks.items():
            n = conn.execute(query).fetchone()[0]  # type: ignore[index]
            if n:
                found[name] = int(n)
    return found


def committed_between(dsn: str, ledger: str, start: Any, end: Any) -> int:
    """Workload transactions that committed a change between ``start`` and ``end`` (distinct
    transaction ids in the ledger)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(DISTINCT txid) FROM {} WHERE at >= %s AND at <= %s").format(
                sql.Identifier(ledger)), (start, end)).fetchone()
    return int(row[0]) if row else 0


# -- running pgbench -----------------------------------------------------------------------------


def pgbench_path() -> str:
    """pgbench next to the server binaries the tests use, else the one on PATH."""
    candidate = find_bin_dir() / "pgbench"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("pgbench")
    if not found:
        raise RuntimeError("pgbench not found (Debian: apt-get install postgresql-15)")
    return found


@dataclass(frozen=True)
class PgbenchRun:
    """One pgbench run: its exit code and its own figures."""

    returncode: int
    seconds: int
    processed: int
    failed: int
    tps: float
    latency_ms: float
    output: str
    max_latency_ms: float = 0.0  # the slowest transaction, from pgbench's per-transaction log

    @classmethod
    def parse(cls, returncode: int, seconds: int, output: str,
              max_latency_ms: float = 0.0) -> PgbenchRun:
        def number(pattern: str, cast: type = float) -> Any:
            m = re.search(pattern, output)
            if m is None:
                raise AssertionError(f"pgbench printed no {pattern!r}:\n{output[-3000:]}")
            return cast(m.group(1))

        return cls(
            returncode=returncode, seconds=seconds,
            processed=number(r"number of transactions actually processed: (\d+)", int),
            failed=number(r"number of failed transactions: (\d+)", int),
            tps=number(r"tps = ([\d.]+)"),
            latency_ms=number(r"latency average = ([\d.]+) ms"),
            output=output, max_latency_ms=max_latency_ms,
        )


@dataclass(frozen=True)
class PgbenchCommand:
    """A pgbench command line and its environment: the password travels in PGPASSWORD, as
    libpq tools are given one in production, never in argv (where ``ps`` would show it)."""

    argv: list[str]
    env: dict[str, str] = field(repr=False)


def _connection(dsn: str) -> tuple[list[str], str, dict[str, str]]:
    """pgbench's connection options, database and environment for ``dsn`` (key=value or URL)."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    env = {**os.environ}
    env.pop("PGPASSWORD", None)
    if params.get("password"):
        env["PGPASSWORD"] = str(params["password"])
    return (["-h", str(params["host"]), "-p", str(params["port"]),
             "-U", str(params.get("user", "postgres"))], str(params["dbname"]), env)


def pgbench_init(dsn: str, *, scale: int) -> None:
    """``pgbench -i --foreign-keys -s scale`` in the DSN's database, as the DSN's role."""
    conn_args, dbname, env = _connection(dsn)
    subprocess.run([pgbench_path(), "-i", "--foreign-keys", "-s", str(scale), "-q", *conn_args,
                    dbname], check=True, capture_output=True, timeout=300, env=env)


def pgbench_command(dsn: str, scripts: list[Path], *, clients: int, seconds: int,
                    defines: dict[str, object] | None = None,
                    rate: int | None = None) -> PgbenchCommand:
    """pgbench running ``scripts`` for ``seconds``; ``rate``: at most that many transactions
    per second in all (pgbench's ``-R``, spread over the clients), None: as fast as it can."""
    conn_args, dbname, env = _connection(dsn)
    argv = [pgbench_path(), *conn_args, "-n", "-c", str(clients), "-j", str(clients),
            "-T", str(seconds)]
    if rate is not None:
        argv += ["-R", str(rate)]
    for name, value in (defines or {}).items():
        argv += ["-D", f"{name}={value}"]
    for script in scripts:
        argv += ["-f", str(script)]
    return PgbenchCommand([*argv, dbname], env)


def run_pgbench(command: PgbenchCommand, seconds: int) -> PgbenchRun:
    """Run pgbench (a command from :func:`pgbench_command`) with its per-transaction log, for
    the slowest transaction's latency (the log's third field, in microseconds)."""
    argv = command.argv
    with tempfile.TemporaryDirectory(prefix="pgbench-log-") as logs:
        proc = subprocess.run([*argv[:-1], "-l", f"--log-prefix={logs}/txn", argv[-1]],
                              capture_output=True, text=True, timeout=seconds + 120,
                              env=command.env)
        slowest = 0
        for path in Path(logs).iterdir():
            for line in path.read_text().splitlines():
                fields = line.split()
                if len(fields) > 2 and fields[2].isdigit():
                    slowest = max(slowest, int(fields[2]))
    return PgbenchRun.parse(proc.returncode, seconds, proc.stdout + proc.stderr,
                            max_latency_ms=slowest / 1000)


@dataclass
class Workload:
    """Keeps pgbench running, in back-to-back runs of ``chunk`` seconds, until :meth:`stop`; the
    run in progress when stop() is called is completed, so the workload outlasts what it is
    measured against. (pgbench prints its figures only when -T runs out, hence the chunks.)"""

    command_for: Any  # Callable[[int], PgbenchCommand]
    chunk: int = 3
    runs: list[PgbenchRun] = field(default_factory=list)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Workload:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self.runs.append(run_pgbench(self.command_for(self.chunk), self.chunk))
        except BaseException as exc:  # noqa: BLE001 - re-raised by stop()
            self.error = exc

    def wait_writing(self, dsn: str, ledger: str, timeout: float = 60) -> None:
        """Return once the workload commits a transaction after this call (a new row in its
        ``ledger``): it is writing now. Polls; fails on a pgbench error or after ``timeout``."""
        newest = sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(sql.Identifier(ledger))
        with psycopg.connect(dsn, autocommit=True) as conn:
            mark = conn.execute(newest).fetchone()[0]  # type: ignore[index]
            deadline = time.monotonic() + timeout
            while conn.execute(newest).fetchone()[0] <= mark:  # type: ignore[index]
                if self.error is not None:
                    raise self.error
                assert time.monotonic() < deadline, f"the workload wrote nothing to {ledger}"
                time.sleep(0.02)

    def stop(self) -> list[PgbenchRun]:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(self.chunk + 180)
        if self.error is not None:
            raise self.error
        return self.runs

    @property
    def processed(self) -> int:
        return sum(r.processed for r in self.runs)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.runs)

    def summary(self) -> dict[str, float]:
        seconds = sum(r.seconds for r in self.runs)
        return {
            "runs": len(self.runs),
            "seconds": seconds,
            "processed": self.processed,
            "failed": self.failed,
            "tps": round(self.processed / seconds, 1) if seconds else 0.0,
            "latency_ms": round(sum(r.latency_ms * r.processed for r in self.runs)
                                / max(self.processed, 1), 3),
            "max_latency_ms": max((r.max_latency_ms for r in self.runs), default=0.0),
        }

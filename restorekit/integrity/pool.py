"""The worker pool the scans run on, its size, and the order the scans start in."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import Connection, sql

from restorekit.errors import RestoreKitError
from restorekit.integrity._format import (
    _error_text,
    _ms,
)
from restorekit.pg.catalog import SYSTEM_SCHEMAS, TableRef

log = logging.getLogger(__name__)

MAX_WORKERS = 4


@dataclass(frozen=True, slots=True)
class _Outcome:
    value: Any = None
    error: str | None = None
    sqlstate: str | None = None
    duration_ms: float = 0.0


class _OpenedAhead:
    """Pool connections being opened in background threads while the main connection reads
    the catalog that plans the scans (connecting and the session setup are ~5 ms each, a
    sixth of the suite's fixed cost at bench/verify_bench.py's scale 5).

    :meth:`take` hands each one out once; one that failed to open gives None, and the scan
    that asked opens its own, whose error it then reports as before.
    """

    def __init__(self, connect: Callable[[], Connection[Any]], count: int) -> None:
        executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix="rk-verify-open")
        self._pending = [executor.submit(connect) for _ in range(count)]
        executor.shutdown(wait=False)
        self._lock = threading.Lock()

    def take(self) -> Connection[Any] | None:
        with self._lock:
            if not self._pending:
                return None
            future = self._pending.pop()
        try:
            return future.result()
        except (psycopg.Error, RestoreKitError) as exc:
            log.debug("a pool connection opened ahead failed: %s", _error_text(exc))
            return None

    def close(self) -> None:
        """Close the ones no scan took."""
        while self._pending:
            if (conn := self.take()) is not None:
                conn.close()


class _Workers:
    """A bounded thread pool, each thread borrowing one of at most ``size`` connections.

    Connections are taken from ``ahead`` or opened on first use (a suite with two foreign keys
    opens two), set to
    read-only with the statement timeout, and closed by :meth:`close`. A job never raises:
    psycopg and restorekit errors come back as an :class:`_Outcome` with ``error`` set, and a
    broken connection is dropped rather than handed to the next job.
    """

    def __init__(self, connect: Callable[[], Connection[Any]], size: int,
                 ahead: _OpenedAhead | None = None) -> None:
        self._connect = connect
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="rk-verify")
        self._idle: queue.SimpleQueue[Connection[Any]] = queue.SimpleQueue()
        self._opened: list[Connection[Any]] = []
        self._lock = threading.Lock()
        self._ahead = ahead

    def submit(self, job: Callable[[Connection[Any]], Any]) -> Future[_Outcome]:
        return self._executor.submit(self._run, job)

    def _run(self, job: Callable[[Connection[Any]], Any]) -> _Outcome:
        start = time.perf_counter()
        try:
            conn = self._acquire()
        except (psycopg.Error, RestoreKitError) as exc:
            return _Outcome(error=_error_text(exc), duration_ms=_ms(start))
        start = time.perf_counter()
        try:
            return _Outcome(value=job(conn), duration_ms=_ms(start))
        except psycopg.Error as exc:
            return _Outcome(error=_error_text(exc), sqlstate=exc.sqlstate, duration_ms=_ms(start))
        finally:
            if conn.closed or conn.broken:
                conn.close()
            else:
                self._idle.put(conn)

    def _acquire(self) -> Connection[Any]:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            conn = (self._ahead.take() if self._ahead is not None else None) or self._connect()
            with self._lock:
                self._opened.append(conn)
            return conn

    def cancel(self) -> None:
        """Ask the server to cancel whatever the workers are running (on an interruption)."""
        with self._lock:
            opened = list(self._opened)
        for conn in opened:
            try:
                conn.cancel_safe(timeout=5)
            except (psycopg.Error, OSError):
                pass  # best effort: close() follows and drops the connection anyway

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._ahead is not None:
            self._ahead.close()
        with self._lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()


_RELATION_SIZES = sql.SQL(
    """
    SELECT c.oid, n.nspname, c.relname, c.relkind,
           CASE c.relkind WHEN 'p' THEN (SELECT coalesce(sum(pg_relation_size(t.relid)), 0)
                                         FROM pg_partition_tree(c.oid) AS t)
                          ELSE pg_relation_size(c.oid) END
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'i')
      AND c.relpersistence <> 't'
      AND n.nspname <> ALL(%(system)s::text[])
    """
)


def _relation_sizes(conn: Connection[Any]) -> dict[TableRef | int, int]:
    """Bytes of every user table (by :class:`TableRef`) and index (by oid), to schedule the
    biggest scans first. Only an ordering hint: on an error the scans keep their listed order."""
    sizes: dict[TableRef | int, int] = {}
    try:
        rows = conn.execute(_RELATION_SIZES, {"system": list(SYSTEM_SCHEMAS)}).fetchall()
    except psycopg.Error as exc:
        log.info("relation sizes unavailable, scans keep their listed order: %s",
                 _error_text(exc))
        return sizes
    for oid, schema, name, kind, size in rows:
        sizes[int(oid) if kind == "i" else TableRef(schema, name)] = int(size or 0)
    return sizes


# The server's connection slots a client without superuser rights can still take.
_FREE_SLOTS = sql.SQL(
    """
    SELECT current_setting('max_connections')::int
           - current_setting('superuser_reserved_connections')::int
           - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')
    """
)


def _free_connection_slots(conn: Connection[Any]) -> int | None:
    try:
        row = conn.execute(_FREE_SLOTS).fetchone()
    except psycopg.Error as exc:
        log.info("free connection slots unknown: %s", _error_text(exc))
        return None
    return int(row[0]) if row else None


def _pool_size(jobs: int, *, max_workers: int | None, cores: int,
               free_slots: int | None) -> int:
    """Connections for ``jobs`` scans: ``max_workers`` (default ``min(4, cores)``), never more
    than the jobs, nor more than half the server's free connection slots (the application
    being verified needs the others), and at least one."""
    size = min(max_workers or min(MAX_WORKERS, cores), jobs)
    if free_slots is not None:
        size = min(size, free_slots // 2)
    return max(size, 1)

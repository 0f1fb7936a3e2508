"""Connections of the suite: one session setup, one attempt, and the retry while a server starts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import Connection

from restorekit.errors import PostgresUnavailable
from restorekit.pg.cluster import connect as pg_connect
from restorekit.pg.dsn import parse

log = logging.getLogger(__name__)

APPLICATION_NAME = "restorekit-verify"


def _session_setup(conn: Connection[Any], statement_timeout_ms: int, *, read_only: bool,
                   serial: bool = False) -> None:
    # One round trip. serial: the pool already runs one scan per core; parallel workers on top
    # of that only oversubscribe the cores (and take the server's max_worker_processes slots).
    conn.execute(
        "SELECT set_config('statement_timeout', %(timeout)s, false), "
        "CASE WHEN %(read_only)s THEN set_config('default_transaction_read_only', 'on', false) "
        "END, "
        "CASE WHEN %(serial)s THEN set_config('max_parallel_workers_per_gather', '0', false) END",
        {"timeout": str(int(statement_timeout_ms)), "read_only": read_only, "serial": serial},
    )


def _open(dsn: str, statement_timeout_ms: int, *, read_only: bool,
          serial: bool = False) -> Connection[Any]:
    """One connection for the suite: autocommit, tagged, with the timeout (single attempt)."""
    params = parse(dsn)
    extra: dict[str, Any] = {"autocommit": True}
    if "application_name" not in params:
        extra["application_name"] = APPLICATION_NAME
    if "connect_timeout" not in params:
        extra["connect_timeout"] = 10
    conn = pg_connect(dsn, **extra)
    try:
        _session_setup(conn, statement_timeout_ms, read_only=read_only, serial=serial)
    except psycopg.Error:
        conn.close()
        raise
    return conn


def connect_with_retry(
    connect: Callable[[], Connection[Any]],
    *,
    attempts: int = 5,
    backoff: float = 0.5,
    max_backoff: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Connection[Any], int]:
    """Call ``connect`` until it works, retrying only :class:`PostgresUnavailable`.

    A freshly restored cluster answers "the database system is starting up" (57P03) for a
    while; a wrong password or a missing database will not get better and fails at once.

    Returns:
        The connection and the number of attempts it took.

    Raises:
        PostgresUnavailable: still unavailable after ``attempts`` tries.
        PostgresError: a failure a retry cannot cure.
    """
    delay = backoff
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return connect(), attempt
        except PostgresUnavailable:
            if attempt >= attempts:
                raise
            log.info("database unavailable (attempt %d of %d); retrying in %.1fs",
                     attempt, attempts, delay)
            sleep(delay)
            delay = min(delay * 2, max_backoff)
    raise AssertionError("unreachable")  # pragma: no cover

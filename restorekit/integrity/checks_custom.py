"""The ``custom:<name>`` checks: operator-configured queries (:class:`CustomCheck`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any, Literal

import psycopg
from psycopg import Connection, sql

from restorekit.errors import ConfigError
from restorekit.integrity._format import (
    SAMPLE_ROWS,
    _jsonable,
    _n,
)
from restorekit.integrity.checks import _check
from restorekit.integrity.pool import _Outcome
from restorekit.integrity.report import CheckResult

Expectation = Literal["zero_rows", "nonzero", "equals"]
_EXPECTATIONS: tuple[str, ...] = ("zero_rows", "nonzero", "equals")


@dataclass(frozen=True, slots=True)
class CustomCheck:
    """An operator-configured query, e.g. the runbook's "users without clients".

    The SQL is **trusted configuration** written by whoever owns restorekit's config, like a
    migration file; it is never built from user or incident input. It still runs in a
    ``READ ONLY`` transaction with ``statement_timeout`` and is always rolled back, so a wrong
    query cannot change the restored database or hang the verification.

    The query must be one SELECT (or ``WITH``/``VALUES``/``TABLE``) statement: it is run as a
    subquery so that only a count and a few example rows leave the server. For ``zero_rows``
    the count comes first, as ``SELECT count(*) FROM (<sql>) AS q``, and the example rows are
    fetched only when it is not zero: a passing check costs one statement, which the planner
    can run like the query written by hand (an index-only merge anti-join, say). A window count
    beside a ``LIMIT`` in one statement steered it away from that (bench/verify_bench.py: 501 ms
    against 124 ms at scale 10). For ``nonzero``/``equals`` (one row expected) the rows come
    first and the count only when there are :data:`SAMPLE_ROWS` or more. Both statements read
    one snapshot (``REPEATABLE READ``) and share the one ``statement_timeout``.

    Expectations:
        ``zero_rows``: the query returns no rows (e.g. "users without clients").
        ``nonzero``: the query returns one row whose first value is not 0, NULL or false
            (e.g. ``SELECT count(*) FROM users``).
        ``equals``: the query returns one row whose first value equals ``value`` (e.g. a
            marker row planted before a drill).

    Attributes:
        name: shown as ``custom:<name>``.
        sql: the query.
        expect: one of the expectations above.
        value: the expected value for ``equals``.
        critical: whether a failure fails the verification.
    """

    name: str
    sql: str
    expect: Expectation = "zero_rows"
    value: Any = None
    critical: bool = True

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ConfigError("a custom check needs a name")
        if not self.sql or not self.sql.strip().rstrip(";").strip():
            raise ConfigError(f"custom check {self.name!r} has no SQL")
        if self.expect not in _EXPECTATIONS:
            raise ConfigError(
                f"custom check {self.name!r}: expect must be one of {', '.join(_EXPECTATIONS)}, "
                f"got {self.expect!r}"
            )
        if self.expect == "equals" and self.value is None:
            raise ConfigError(f"custom check {self.name!r}: expect='equals' needs a value")

    @property
    def check_name(self) -> str:
        return f"custom:{self.name}"

    def count_query(self) -> psycopg.sql.Composed:  # plain "sql" is the field in this class body
        """The statement that counts the query's rows: ``SELECT count(*) FROM (<sql>) AS q``."""
        # The alias marks the statement in pg_stat_activity and in bench/verify_bench.py's profile.
        return sql.SQL("SELECT count(*) AS restorekit_rows FROM (\n{}\n) AS q").format(
            self._body()
        )

    def sample_query(self) -> psycopg.sql.Composed:
        """The statement that fetches the first :data:`SAMPLE_ROWS` rows of the query."""
        return sql.SQL("SELECT * FROM (\n{}\n) AS q LIMIT {}").format(
            self._body(), sql.Literal(SAMPLE_ROWS)
        )

    def _body(self) -> psycopg.sql.SQL:
        # The one place a str becomes SQL text: trusted configuration (see the class
        # docstring), never request or incident data. The callers put newlines around it: a
        # trailing "-- comment" must not swallow the closing parenthesis.
        return sql.SQL(self.sql.strip().rstrip(";").rstrip())

    def evaluate(self, total: int, first_values: Sequence[Any]) -> tuple[bool, str]:
        """Judge a result: ``total`` rows, of which ``first_values`` are the first columns."""
        sample = ", ".join(repr(_jsonable(v)) for v in first_values)
        if self.expect == "zero_rows":
            if total == 0:
                return True, "no rows"
            return False, f"{_n(total, 'row')}, expected none (first values: {sample})"
        if total != 1:
            return False, f"{_n(total, 'row')}, expected exactly one"
        got = first_values[0]
        if self.expect == "nonzero":
            if got is None or got is False or (isinstance(got, int | float | Decimal) and got == 0):
                return False, f"value is {_jsonable(got)!r}, expected nonzero"
            return True, f"value {_jsonable(got)!r}"
        if _equal(got, self.value):
            return True, f"value {_jsonable(got)!r} as expected"
        return False, f"value is {_jsonable(got)!r}, expected {_jsonable(self.value)!r}"


def _equal(got: Any, expected: Any) -> bool:
    if got == expected:
        return True
    # Config files hold strings where the database returns numbers, dates, UUIDs.
    return got is not None and str(_jsonable(got)) == str(expected)


def _custom(
    conn: Connection[Any], check: CustomCheck, statement_timeout_ms: int, serial: bool = False
) -> tuple[bool, str, Mapping[str, Any]]:
    # Operator SQL (trusted config): still read-only, time-limited and always rolled back. Its
    # statements share one snapshot (the count and the rows agree) and one timeout.
    deadline = time.perf_counter() + statement_timeout_ms / 1000

    def second(query: sql.Composed) -> list[tuple[Any, ...]]:
        # Only what the first statement left of the timeout: the check as a whole stays
        # within statement_timeout, as when it was one statement.
        left = max(1, math.ceil((deadline - time.perf_counter()) * 1000))
        conn.execute("SELECT set_config('statement_timeout', %s, true)", [str(left)])
        return conn.execute(query).fetchall()

    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # serial: it runs beside the pool's scans, which already use the cores.
        conn.execute(
            "SELECT set_config('statement_timeout', %(timeout)s, true), "
            "CASE WHEN %(serial)s "
            "THEN set_config('max_parallel_workers_per_gather', '0', true) END",
            {"timeout": str(int(statement_timeout_ms)), "serial": serial},
        )
        if check.expect == "zero_rows":
            count = conn.execute(check.count_query()).fetchone()
            total = int(count[0]) if count else 0
            rows = second(check.sample_query()) if total else []
        else:
            rows = conn.execute(check.sample_query()).fetchall()
            total = len(rows)
            if total >= SAMPLE_ROWS:
                total = int(second(check.count_query())[0][0])
    # Only the first column leaves the report (usually an id): rows may hold personal data.
    first = [row[0] if row else None for row in rows]
    ok, detail = check.evaluate(total, first)
    observed: dict[str, Any] = {"expect": check.expect, "rows": total,
                                "first_values": _jsonable(first)}
    if check.expect == "equals":
        observed["expected_value"] = _jsonable(check.value)
    return ok, detail, observed


def _custom_job(check: CustomCheck, statement_timeout_ms: int,
                serial: bool) -> Callable[[Connection[Any]], CheckResult]:
    """A custom check as a pool job (read-only session, its own READ ONLY transaction)."""

    def job(conn: Connection[Any]) -> CheckResult:
        return _check(check.check_name, check.critical,
                      partial(_custom, conn, check, statement_timeout_ms, serial))

    return job


def _custom_result(check: CustomCheck, outcome: _Outcome) -> CheckResult:
    if isinstance(outcome.value, CheckResult):
        return outcome.value
    # The job never got a connection (its errors are caught by _check inside the job).
    return CheckResult(check.check_name, False, check.critical, f"error: {outcome.error}", {},
                       outcome.duration_ms)

"""Find where a damage began by bisection over copies of the database at points in time.

For providers that make a copy at any time cheaply (a Neon branch) but cannot read their
history as WAL: the damage is a predicate over a copy (:class:`DamageCheck`: "the tracked rows
are all there, unchanged"), true at a good point and false at the end of the window; halving the
interval between the last good and the first bad time finds the damage to ``precision`` in
``log2(window / precision)`` copies.

Three layers, each usable alone:

* :func:`bisect_times`: the pure loop over a predicate on datetimes (no database at all);
* :class:`DamageCheck`: what "undamaged" means, read on a copy at the good point, then
  evaluated on any other copy;
* :func:`find_by_bisection`: both, over a ``copy_at(time)`` context manager the provider
  supplies (it makes a scratch copy, yields its DSN, removes it on exit).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, LiteralString, cast

import psycopg
from psycopg import Connection, sql

from restorekit.damage import Damage, DamageKind, FoundBy, FoundPoint
from restorekit.errors import ConfigError, PostgresError, RestorePointError
from restorekit.integrity import connect_with_retry
from restorekit.models import PointKind, RestorePoint
from restorekit.pg import catalog
from restorekit.pg.catalog import TableRef
from restorekit.pg.checksum import pinned_output_settings
from restorekit.pg.cluster import connect
from restorekit.pg.dsn import redact
from restorekit.providers.base import Progress, no_progress

log = logging.getLogger(__name__)

APPLICATION_NAME = "restorekit-find-point"
#: More tracked rows than this make every probe a large query: narrow the predicate instead.
MAX_TRACKED_ROWS = 100_000

#: copy_at(time) -> a context manager yielding the DSN of a scratch copy at ``time``, removed
#: when the block exits (also on an error).
CopyAt = Callable[[datetime], AbstractContextManager[str]]


# -- the pure loop -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    at: datetime
    good: bool


@dataclass(frozen=True, slots=True)
class Bisection:
    """The narrowed interval: undamaged at ``last_good``, damaged at ``first_bad``."""

    last_good: datetime
    first_bad: datetime
    probes: tuple[Probe, ...]
    precision: timedelta

    @property
    def width(self) -> timedelta:
        return self.first_bad - self.last_good

    @property
    def converged(self) -> bool:
        """False when the budget ran out before the interval shrank to ``precision``."""
        return self.width <= self.precision


def bisect_times(
    is_good: Callable[[datetime], bool],
    last_good: datetime,
    first_bad: datetime,
    *,
    precision: timedelta = timedelta(seconds=1),
    budget: int,
) -> Bisection:
    """Halve ``[last_good, first_bad]`` until it is at most ``precision`` wide or ``budget``
    probes were made; the caller has already seen ``is_good`` true at ``last_good`` and false
    at ``first_bad`` (those two evaluations are not counted here).

    A predicate that is not monotonic (damage undone and redone) still ends in an interval
    with a good left end and a bad right end: one such transition, not necessarily the first.

    Raises:
        ValueError: the interval is empty or reversed, or precision is not positive.
    """
    if first_bad <= last_good:
        raise ValueError(f"nothing to bisect: {last_good.isoformat()} is not before "
                         f"{first_bad.isoformat()}")
    if precision <= timedelta(0):
        raise ValueError("precision must be positive")
    probes: list[Probe] = []
    lo, hi = last_good, first_bad
    while hi - lo > precision and len(probes) < budget:
        mid = lo + (hi - lo) / 2
        if not lo < mid < hi:  # a microsecond apart: nothing left between them
            break
        good = bool(is_good(mid))
        probes.append(Probe(mid, good))
        if good:
            lo = mid
        else:
            hi = mid
    return Bisection(lo, hi, tuple(probes), precision)


# -- what "undamaged" means --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observation:
    """The damage predicate on one copy, with what was seen, in words."""

    good: bool
    what: str
    damaged_rows: int = 0


@dataclass(frozen=True, slots=True)
class DamageCheck:
    """The damage predicate, fixed at the good point.

    * DELETED with keys: every key is present. With ``where``: the rows the predicate selects
      at the good point (their keys) are all still present, whatever the predicate says later.
    * CHANGED: those rows are present and their text (the given column's, else the whole
      row's, as ``md5(ROW(...)::text)`` under pinned output settings) is unchanged; a schema
      change of the table counts as a change of every row.
    * TABLE: the table exists and has at least one row. Not "as many rows as at the good point":
      rows legitimately deleted since would then look like the damage.

    Keys are compared as their column types (the given text is cast by PostgreSQL), and are
    kept in PostgreSQL's canonical text form after the good point was read.
    """

    damage: Damage
    table: TableRef
    key: tuple[str, ...] = ()
    key_types: tuple[str, ...] = ()
    tracked: tuple[tuple[str, ...], ...] = ()
    digests: tuple[str, ...] = ()  # CHANGED: one per tracked row, same order
    rows_at_good: int = 0

    @classmethod
    def read(cls, conn: Connection[Any], damage: Damage, *, at: str) -> DamageCheck:
        """Read the reference on a copy at the good point (``at`` names it in errors).

        Raises:
            ConfigError: the table does not exist there, has no primary key, a key or the
                predicate is invalid, or the damage is already there (before the good point).
        """
        table = TableRef.parse(damage.table)
        if not _exists(conn, table):
            raise ConfigError(f"table {table} does not exist at the good point {at}: check the "
                              "name (--table), or give a good point when it existed")
        earlier = "the damage is before it: give an earlier good point"
        if damage.kind is DamageKind.TABLE:
            count = _count(conn, table)
            if count == 0:
                raise ConfigError(f"table {table} is already empty at the good point {at}; "
                                  f"{earlier}")
            return cls(damage, table, rows_at_good=count)
        key = catalog.primary_key(conn, table)
        if not key:
            raise ConfigError(f"table {table} has no primary key; restorekit cannot tell its "
                              "rows apart to find the damage")
        types = {c.name: c.data_type for c in catalog.columns(conn, table)}
        if damage.column and damage.column not in types:
            raise ConfigError(f"table {table} has no column {damage.column!r}")
        check = cls(damage, table, key, tuple(types[k] for k in key))
        if damage.keys:
            wanted = tuple(dict.fromkeys(damage.keys))
            if bad := [k for k in wanted if len(k) != len(key)]:
                raise ConfigError(f"{table} keys have {len(key)} column(s) ({', '.join(key)}); "
                                  f"got {bad[0]!r}")
            try:
                rows = check._rows(conn, wanted)
            except psycopg.DataError as exc:
                raise ConfigError(f"a key of {table} is not a valid "
                                  f"{'/'.join(check.key_types)}: {_text(exc)}") from None
            if len(rows) < len(wanted):
                found = {k for k, _ in rows}
                shown = ", ".join(repr(k) for k in wanted if k not in found)
                raise ConfigError(f"{len(wanted) - len(rows)} of {len(wanted)} key(s) are not in "
                                  f"{table} at the good point {at} ({shown[:200]}): {earlier}, "
                                  "or the keys are wrong")
        else:
            try:
                rows = check._rows(conn, None)
            except (psycopg.ProgrammingError, psycopg.DataError) as exc:
                raise ConfigError(f"the predicate {damage.where!r} fails on {table}: "
                                  f"{_text(exc)}") from None
            if not rows:
                raise ConfigError(f"the predicate {damage.where!r} selects no row of {table} at "
                                  f"the good point {at}: {earlier}, or the predicate is wrong")
        if len(rows) > MAX_TRACKED_ROWS:
            raise ConfigError(f"{len(rows)} rows of {table} to track; narrow the damage to at "
                              f"most {MAX_TRACKED_ROWS}")
        return cls(damage, table, key, check.key_types, tuple(k for k, _ in rows),
                   tuple(d for _, d in rows) if damage.kind is DamageKind.CHANGED else (),
                   len(rows))

    def observe(self, conn: Connection[Any]) -> Observation:
        """The predicate on another copy."""
        if not _exists(conn, self.table):
            return Observation(False, f"table {self.table} does not exist",
                               self.rows_at_good)
        if self.damage.kind is DamageKind.TABLE:
            rows = _count(conn, self.table)
            if rows == 0:
                return Observation(False, f"table {self.table} is empty", self.rows_at_good)
            return Observation(True, f"table {self.table} has {rows} row(s)")
        found = dict(self._rows(conn, self.tracked))
        missing = [k for k in self.tracked if k not in found]
        changed = [k for k, d in zip(self.tracked, self.digests, strict=False)
                   if k in found and found[k] != d]  # digests: CHANGED only
        n = len(self.tracked)
        if not missing and not changed:
            return Observation(True, f"all {n} tracked row(s) of {self.table} as at the good point")
        parts = [f"{len(missing)} of {n} tracked row(s) deleted" if missing else "",
                 f"{len(changed)} of {n} changed" if changed else ""]
        what = ", ".join(p for p in parts if p)
        if changed and self.damage.column:
            what += f" (column {self.damage.column})"
        return Observation(False, f"{what} from {self.table}", len(missing) + len(changed))

    def _rows(self, conn: Connection[Any],
              keys: Sequence[tuple[str, ...]] | None) -> list[tuple[tuple[str, ...], str]]:
        """(key as text, row digest or "") for the given keys, else for ``where``."""
        t = sql.Identifier("t")
        key_text = sql.SQL(", ").join(sql.SQL("{}.{}::text").format(t, sql.Identifier(k))
                                      for k in self.key)
        digest: sql.Composable = sql.SQL("''")
        if self.damage.kind is DamageKind.CHANGED:
            what = (sql.SQL("{}.{}").format(t, sql.Identifier(self.damage.column))
                    if self.damage.column else sql.SQL("{}.*").format(t))
            digest = sql.SQL("md5(ROW({})::text)").format(what)
        if keys is not None:
            # The given text is cast to each key column's type (format_type() text from the
            # catalog), so '007' finds integer 7 and an upper-case uuid its row.
            cols = [sql.Identifier(f"k{i}") for i in range(len(self.key))]
            cond: sql.Composable = sql.SQL("({}) IN (SELECT {} FROM unnest({}) AS u({}))").format(
                sql.SQL(", ").join(sql.SQL("{}.{}").format(t, sql.Identifier(k))
                                   for k in self.key),
                # key_types are format_type() text read from the catalog, not operator input.
                sql.SQL(", ").join(sql.SQL("u.{}::{}").format(c, sql.SQL(ty))
                                   for c, ty in zip(cols, self.key_types, strict=True)),
                sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in cols),
                sql.SQL(", ").join(cols))
            params: list[Any] = [[k[i] for k in keys] for i in range(len(self.key))]
        else:
            # The operator's own predicate: SQL text by definition, run on a read-only copy.
            # LIMIT: one row more than may be tracked is enough to refuse.
            cond = sql.SQL("({}) LIMIT {}").format(
                sql.SQL(cast(LiteralString, self.damage.where)), MAX_TRACKED_ROWS + 1)
            params = []
        query = sql.SQL("SELECT {}, {} FROM {} AS {} WHERE {}").format(
            key_text, digest, self.table.ident, t, cond)
        with conn.transaction(), pinned_output_settings(conn):
            rows = conn.execute(query, params).fetchall()
        return [(tuple(r[:-1]), str(r[-1])) for r in rows]


def _exists(conn: Connection[Any], table: TableRef) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
        "AND c.relkind IN ('r', 'p')", (table.schema, table.name)).fetchone()
    return row is not None


def _count(conn: Connection[Any], table: TableRef) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.ident)).fetchone()
    return int(row[0]) if row else 0


def _text(exc: BaseException) -> str:
    return redact(str(exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@contextmanager
def _session(dsn: str) -> Iterator[Connection[Any]]:
    """A read-only session on a copy: nothing the check runs (the operator's predicate
    included) can write."""
    # A compute that was just created may still be starting (57P03): retried a few times.
    conn, _ = connect_with_retry(lambda: connect(dsn, autocommit=True, connect_timeout=10,
                                                 application_name=APPLICATION_NAME))
    with conn:
        conn.execute("SELECT set_config('default_transaction_read_only', 'on', false)")
        yield conn


# -- the search --------------------------------------------------------------------------------


def _iso(when: datetime) -> str:
    return when.isoformat()  # to the microsecond: the interval's ends are exact


def _seconds(span: timedelta) -> str:
    value = span.total_seconds()
    return f"{value:.3g} s" if value < 1000 else f"{value:,.0f} s"


def find_by_bisection(
    damage: Damage,
    *,
    copy_at: CopyAt,
    earliest: datetime,
    latest: datetime,
    precision: timedelta = timedelta(seconds=1),
    budget: int = 12,
    progress: Progress = no_progress,
    noun: str = "copies",
) -> FoundPoint:
    """Find the last time before ``damage`` within ``[good point, latest]``.

    The good point is ``damage.good_point`` (a time), else ``earliest``. One copy there reads
    the :class:`DamageCheck`, one at ``latest`` must show the damage, and the rest of
    ``budget`` (copies in all, these two included) halves the interval.

    Returns:
        A :class:`FoundPoint` at the last good time; ``commit_time`` stays None (the damage
        committed somewhere in the final interval, which ``what`` and ``notes`` give).

    Raises:
        ConfigError: a bad budget or good point, the table/keys/predicate are wrong, the
            damage is before the good point, or no damage is visible at ``latest``.
        RestorePointError: the good point is outside ``[earliest, latest]``.
    """
    start = _bisection_start(damage, earliest, latest, budget=budget, noun=noun)
    made = 0

    def observe(when: datetime) -> Observation:
        nonlocal made
        made += 1
        try:
            with copy_at(when) as dsn, _session(dsn) as conn:
                return check.observe(conn)
        except psycopg.Error as exc:
            raise PostgresError(f"reading {damage.table} on the copy at {_iso(when)} failed: "
                                f"{_text(exc)}") from None
        finally:
            progress("find point", made, budget)

    made += 1
    try:
        with copy_at(start) as dsn, _session(dsn) as conn:
            check = DamageCheck.read(conn, damage, at=_iso(start))
    except psycopg.Error as exc:
        raise PostgresError(f"reading {damage.table} at the good point failed: "
                            f"{_text(exc)}") from None
    finally:
        progress("find point", made, budget)
    end = observe(latest)
    if end.good:
        raise ConfigError(f"no damage found: at the end of the window ({_iso(latest)}) "
                          f"{end.what}; check the table, the keys or the predicate and the "
                          "kind of damage (or the rows were put back since)")
    last_bad = end

    def is_good(when: datetime) -> bool:
        nonlocal last_bad
        seen = observe(when)
        if not seen.good:
            last_bad = seen
        return seen.good

    found = bisect_times(is_good, start, latest, precision=precision, budget=budget - 2)
    return _found_point(found, last_bad, check, damage, start=start, made=made, budget=budget,
                        precision=precision, noun=noun)


def _bisection_start(damage: Damage, earliest: datetime, latest: datetime, *, budget: int,
                     noun: str) -> datetime:
    """Where :func:`find_by_bisection` starts: the good point, checked against the window."""
    if budget < 2:
        raise ConfigError(f"a bisection needs at least 2 {noun} (the good point and the end); "
                          f"the budget is {budget}")
    good_point = damage.good_point
    if good_point is not None and good_point.kind is not PointKind.TIME:
        raise ConfigError(f"the good point must be a time to bisect over, not {good_point}")
    start = good_point.time if good_point is not None and good_point.time else earliest
    if not earliest <= start < latest:
        raise RestorePointError(f"the good point {_iso(start)} is outside the window "
                                f"[{_iso(earliest)} .. {_iso(latest)}]")
    return start


def _found_point(found: Bisection, last_bad: Observation, check: DamageCheck, damage: Damage,
                 *, start: datetime, made: int, budget: int, precision: timedelta,
                 noun: str) -> FoundPoint:
    """What :func:`find_by_bisection` reports once the interval is narrowed."""
    tracked = "row(s) in" if damage.kind is DamageKind.TABLE else "tracked row(s) of"
    notes = [f"{made} {noun}, interval {_seconds(found.width)}",
             f"good point {_iso(start)}: {check.rows_at_good} {tracked} {check.table}"]
    if not found.converged:
        notes.append(f"the budget of {budget} {noun} ran out before the precision of "
                     f"{_seconds(precision)}: the damage lies somewhere in the "
                     f"{_seconds(found.width)} after the point (raise the budget for a closer "
                     "point)")
    log.info("found the damage (%s) between %s and %s with %d %s", last_bad.what,
             _iso(found.last_good), _iso(found.first_bad), made, noun)
    return FoundPoint(
        point=RestorePoint.at(found.last_good),
        found_by=FoundBy.BISECTION,
        rows_touched=last_bad.damaged_rows,
        what=f"{last_bad.what}, committed after {_iso(found.last_good)} and by "
             f"{_iso(found.first_bad)}",
        notes=tuple(notes),
        copies=made,
    )

"""The ``range`` method: the key space is cut into ranges at keys sampled on the live side
(``TABLESAMPLE BERNOULLI``); both servers compute, in one statement each and at the same time
(two threads, one connection each), ``count(*)`` and the sum of a 64-bit hash of every row
(key included) per range. Only ranges whose pair differs are looked at again: split at live
keys into smaller ranges (a k-way bisection) and re-summed, until they hold at most
:attr:`~restorekit.diff.models.RangeTuning.leaf_rows` rows. Then only those ranges'
``(key, md5)`` pairs are streamed to the live side and classified with the same FULL JOIN as
``full``. Mostly-equal tables therefore cost about one index-ordered pass over each side, run in
parallel. The row hash is ``hash_record_extended`` over the typed values where a type's
equality means identical text (integers, text, timestamps, uuid, ...) and over the text of
every other column, so it changes exactly when the full method's md5 of the row text does (up
to 64-bit collisions) at a third of the cost of hashing the whole row's text.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from functools import partial
from itertools import pairwise
from typing import Any, TypeVar

from psycopg import Connection, sql
from psycopg.pq import TransactionStatus

from restorekit.diff.compose import ALIAS, idents, row_hash, where_clause
from restorekit.diff.counting import _classify
from restorekit.diff.models import DiffStats, RangeTuning, TableDiff
from restorekit.diff.range_facts import _RangeFacts
from restorekit.diff.shape import TableShape
from restorekit.diff.staging import (
    _stage_hashes,
    _table_source,
    drop_temp,
    hashes_query,
    pinned_both,
)

_T = TypeVar("_T")
_U = TypeVar("_U")


# A range is [lo, hi) in primary-key order; lo None means "from the lowest key", hi None "to
# the highest". Bounds are key values as text (printed by the live side with pinned settings)
# and reach SQL as array literals: ``(ARRAY[(NULL::tbl).col] || '{...}')[2:]`` makes the server
# parse them with the key column's own input function, on each side, so no type name is ever
# written as text and an int key on one side compares with a bigint key on the other.

_Bound = tuple[str, ...]
_Sums = tuple[int, Any]


@dataclass(frozen=True, slots=True)
class _Range:
    path: tuple[int, ...]  # position in the split tree; sorting by path sorts by key
    lo: _Bound | None
    hi: _Bound | None


def _text_key(shape: TableShape, alias: sql.Identifier) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL("{}.{}::text").format(alias, sql.Identifier(c)) for c in shape.key)


def _sample_bounds(
    live_conn: Connection[Any], shape: TableShape, rows: int,
    key_filter: sql.Composable | None, tuning: RangeTuning,
) -> list[_Bound]:
    """Keys of a Bernoulli sample of live rows (about one per ``leaf_rows`` rows), sorted: the
    first pass's range bounds. Bernoulli reads every page but only prints sampled keys, which
    costs a few percent of one hashing pass."""
    wanted = min(tuning.max_ranges, rows // tuning.leaf_rows)
    if wanted < 1:
        return []
    percent = min(100.0, 100.0 * wanted / max(rows, 1))
    query = sql.SQL(
        "SELECT {text_key} FROM {table} AS {t} TABLESAMPLE BERNOULLI ({p}) REPEATABLE ({seed})"
        "{where} ORDER BY {key}"
    ).format(text_key=_text_key(shape, ALIAS), table=shape.table.ident, t=ALIAS,
             p=sql.Literal(percent), seed=sql.Literal(tuning.seed),
             where=where_clause(key_filter), key=shape.key_idents(ALIAS))
    return [tuple(r) for r in live_conn.execute(query).fetchall()]


def _array_literal(values: Iterable[str | None]) -> str:
    """PostgreSQL array-literal text of ``values`` (every element quoted, None as NULL)."""
    def quote(v: str | None) -> str:
        if v is None:
            return "NULL"
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "{" + ",".join(map(quote, values)) + "}"


def _key_array(shape: TableShape, column: str, values: Iterable[str | None]) -> sql.Composed:
    """An array of ``column``'s own type holding ``values`` (text), parsed by the server."""
    return sql.SQL("(ARRAY[(NULL::{table}).{col}] || {values})[2:]").format(
        table=shape.table.ident, col=sql.Identifier(column),
        values=sql.Literal(_array_literal(values)))


def _row(items: Sequence[sql.Composable]) -> sql.Composable:
    return sql.SQL("({})").format(sql.SQL(", ").join(items))


def _common_prefix(r: _Range) -> int:
    """How many leading key columns ``r.lo`` and ``r.hi`` share (at most all but one)."""
    if r.lo is None or r.hi is None:
        return 0
    width = len(r.lo)
    return next((n for n in range(width - 1) if r.lo[n] != r.hi[n]), width - 1)


def _over_ranges(
    shape: TableShape,
    ranges: Sequence[_Range],
    items: sql.Composable,
    outer: sql.Composable,
    key_filter: sql.Composable | None,
    *,
    steps: Sequence[int] | None = None,
    outer_where: sql.Composable | None = None,
) -> sql.Composed:
    """``SELECT {outer} FROM <the ranges> AS v CROSS JOIN LATERAL (SELECT {items} FROM table
    AS t WHERE <t's key in v's range> AND key_filter) AS x``: one index range scan per range.

    ``v.i`` is the range's position in ``ranges``, ``v.step`` its entry in ``steps``. Ranges
    of different shapes cannot share one index condition, so each shape gets its own arm of a
    UNION ALL: open below, open above, and closed ranges by how many leading key columns their
    bounds share. The shared columns become equalities and only the rest a row comparison,
    because a btree scan (before PostgreSQL 18) stops at a row comparison's upper bound only
    when its *first* column passes it: ``(a, b) < (3, 'x')`` would read the rest of ``a = 3``.
    ``OFFSET 0`` keeps the planner from flattening the LATERAL subquery into a join: it cannot
    estimate range conditions against a parameter list and would then scan the whole index.
    """
    v, x = sql.Identifier("v"), sql.Identifier("x")
    width = len(shape.key)
    cols = [sql.SQL("{}.{}").format(ALIAS, sql.Identifier(c)) for c in shape.key]
    lo_names = [sql.Identifier(f"lo{n}") for n in range(width)]
    hi_names = [sql.Identifier(f"hi{n}") for n in range(width)]
    lo_vals = [sql.SQL("{}.{}").format(v, name) for name in lo_names]
    hi_vals = [sql.SQL("{}.{}").format(v, name) for name in hi_names]
    shapes: dict[tuple[bool, bool, int], list[int]] = {}
    for i, r in enumerate(ranges):
        shapes.setdefault((r.lo is not None, r.hi is not None, _common_prefix(r)), []).append(i)
    extra = sql.SQL("") if key_filter is None else sql.SQL(" AND ({})").format(key_filter)
    arms: list[sql.Composable] = []
    for (has_lo, has_hi, prefix), members in sorted(shapes.items(), reverse=True):
        arrays: list[sql.Composable] = [
            sql.SQL("{}::int[]").format(sql.Literal(_array_literal(str(i) for i in members)))]
        names: list[sql.Composable] = [sql.Identifier("i")]
        if steps is not None:
            arrays.append(sql.SQL("{}::bigint[]").format(
                sql.Literal(_array_literal(str(steps[i]) for i in members))))
            names.append(sql.Identifier("step"))
        conditions: list[sql.Composable] = [
            sql.SQL("{} = {}").format(cols[n], lo_vals[n]) for n in range(prefix)]
        for present, bound, column_names, op, vals in (
                (has_lo, "lo", lo_names, ">=", lo_vals), (has_hi, "hi", hi_names, "<", hi_vals)):
            if not present:
                continue
            for n, col in enumerate(shape.key):
                values = (getattr(ranges[i], bound)[n] for i in members)
                arrays.append(_key_array(shape, col, values))
            names.extend(column_names)
            conditions.append(sql.SQL("{} {} {}").format(
                _row(cols[prefix:]), sql.SQL(op), _row(vals[prefix:])))
        condition = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("TRUE")
        arms.append(sql.SQL(
            "SELECT {outer} FROM unnest({arrays}) AS {v}({names}) "
            "CROSS JOIN LATERAL (SELECT {items} FROM {table} AS {t} WHERE {condition}{extra}"
            " OFFSET 0) AS {x}{outer_where}"
        ).format(outer=outer, arrays=sql.SQL(", ").join(arrays), v=v,
                 names=sql.SQL(", ").join(names), items=items, table=shape.table.ident, t=ALIAS,
                 condition=condition, extra=extra, x=x, outer_where=where_clause(outer_where)))
    return sql.SQL(" UNION ALL ").join(arms)


def _range_sums(
    conn: Connection[Any], shape: TableShape, ranges: Sequence[_Range],
    key_filter: sql.Composable | None, tuning: RangeTuning, checksum: sql.Composable, *,
    bucket_scan: bool = False,
) -> list[_Sums]:
    """``(count, sum of the 64-bit ``checksum`` of each row)`` per range, in ``ranges`` order
    (a sum, unlike xor, cannot cancel out a pair of equal rows).

    Normally one index range scan per range (about as fast as a sequential scan where the heap
    is in key order), one statement per :attr:`RangeTuning.max_ranges` ranges. With
    ``bucket_scan`` (``ranges`` is the whole key space cut at its bounds; one fixed-width key
    column scattered over the heap, like random uuids) it is one sequential scan grouped by
    ``width_bucket``, a binary search over the bounds, so no page is read twice.
    """
    hashed = sql.SQL("count(*) AS n, sum({}) AS h").format(checksum)
    if bucket_scan:
        bounds = sql.SQL("{}").format(_key_array(
            shape, shape.key[0], (r.lo[0] for r in ranges[1:] if r.lo is not None)))
        query = sql.SQL("SELECT width_bucket({key}, {bounds}), {hashed} FROM {table} AS {t}"
                        "{where} GROUP BY 1").format(
            key=shape.key_idents(ALIAS), bounds=bounds, hashed=hashed, table=shape.table.ident,
            t=ALIAS, where=where_clause(key_filter))
        found = {int(i): (int(n), h) for i, n, h in conn.execute(query).fetchall()}
        return [found.get(i, (0, None)) for i in range(len(ranges))]
    sums: list[_Sums] = []
    for start in range(0, len(ranges), tuning.max_ranges):
        chunk = ranges[start:start + tuning.max_ranges]
        query = _over_ranges(shape, chunk, hashed, sql.SQL("v.i, x.n, x.h"), key_filter)
        with _session_settings(conn, _INDEX_SCANS):
            found = {int(i): (int(n), h) for i, n, h in conn.execute(query).fetchall()}
        sums.extend(found[i] for i in range(len(chunk)))
    return sums


def _split(
    live_conn: Connection[Any], shape: TableShape, ranges: Sequence[tuple[_Range, int, int]],
    key_filter: sql.Composable | None, tuning: RangeTuning,
) -> tuple[list[_Range], list[_Range]]:
    """Cut each ``(range, live rows, rows on the fuller side)`` at every ``step``-th live key
    (one statement on live) into pieces of about ``leaf_rows`` rows, at most ``max_fanout``.
    Only live keys can be cut points, so a range the copy holds far more rows of (rows deleted
    live) is cut into at most as many pieces as it has live rows.

    Returns:
        The pieces, and the ranges that could not be cut (no live key inside).
    """
    steps = []
    for _, live_rows, rows in ranges:
        wanted = min(tuning.max_fanout, math.ceil(rows / tuning.leaf_rows), live_rows)
        steps.append(max(1, math.ceil(live_rows / max(wanted, 2))))
    names = [sql.Identifier(f"k{n}") for n in range(len(shape.key))]
    items = sql.SQL("{keys}, row_number() OVER (ORDER BY {key}) AS rn").format(
        keys=sql.SQL(", ").join(sql.SQL("{}.{} AS {}").format(ALIAS, sql.Identifier(k), n)
                                for k, n in zip(shape.key, names, strict=True)),
        key=shape.key_idents(ALIAS))
    x = sql.Identifier("x")
    outer = sql.SQL("v.i, x.rn, {}").format(sql.SQL(", ").join(
        sql.SQL("{}.{}::text").format(x, n) for n in names))
    query = sql.SQL("{} ORDER BY 1, 2").format(_over_ranges(
        shape, [r for r, _, _ in ranges], items, outer, key_filter, steps=steps,
        outer_where=sql.SQL("mod(x.rn, v.step) = 0")))
    cuts: dict[int, list[_Bound]] = {}
    with _session_settings(live_conn, _INDEX_SCANS):
        found = live_conn.execute(query).fetchall()
    for i, _, *key in found:
        cuts.setdefault(int(i), []).append(tuple(key))
    pieces: list[_Range] = []
    whole: list[_Range] = []
    for i, (r, _, _) in enumerate(ranges):
        bounds = [b for b in cuts.get(i, []) if b != r.lo]
        if not bounds:
            whole.append(r)
            continue
        edges = [r.lo, *bounds, r.hi]
        pieces.extend(_Range((*r.path, j), lo, hi)
                      for j, (lo, hi) in enumerate(pairwise(edges)))
    return pieces, whole


def _merge(ranges: Iterable[_Range]) -> list[_Range]:
    """Sorted, with neighbours (one's hi is the next one's lo) joined into one range."""
    merged: list[_Range] = []
    for r in sorted(ranges, key=lambda r: r.path):
        if merged and merged[-1].hi is not None and merged[-1].hi == r.lo:
            merged[-1] = _Range(merged[-1].path, merged[-1].lo, r.hi)
        else:
            merged.append(r)
    return merged


@contextmanager
def _session_settings(conn: Connection[Any], settings: Mapping[str, str]) -> Iterator[None]:
    """Set ``settings`` for the block and put the previous values back (as
    :func:`~restorekit.pg.checksum.pinned_output_settings` does for output settings)."""
    names, values = list(settings), list(settings.values())
    row = conn.execute("SELECT array_agg(current_setting(n) ORDER BY o) FROM unnest(%s::text[]) "
                       "WITH ORDINALITY AS s(n, o)", [names]).fetchone()
    previous = list(row[0]) if row and row[0] else []
    apply = "SELECT set_config(n, v, false) FROM unnest(%s::text[], %s::text[]) AS s(n, v)"
    conn.execute(apply, [names, values])
    try:
        yield
    finally:
        if conn.info.transaction_status != TransactionStatus.INERROR and previous:
            conn.execute(apply, [names, previous])


# The range statements are big nested loops whose estimated cost would switch JIT compilation
# on; compiling them takes longer than running them.
_RANGE_SETTINGS = {"jit": "off"}
# Each range is meant to be one index range scan. The planner estimates a row comparison
# against a parameter at a ninth of the table, so it would pick bitmap or sequential scans
# (for every one of thousands of ranges); these settings only make those plans look expensive.
_INDEX_SCANS = {"enable_seqscan": "off", "enable_bitmapscan": "off"}


@contextmanager
def _snapshot(conn: Connection[Any], *, read_only: bool) -> Iterator[None]:
    """A REPEATABLE READ transaction for the block when ``conn`` is idle (the range method
    reads each side several times and needs one snapshot); the caller's transaction otherwise.
    A read-only transaction is rolled back at the end: nothing was written."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        with conn.transaction():
            yield
        return
    with conn.transaction(force_rollback=read_only):
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ" +
                     (", READ ONLY" if read_only else ""))
        yield


def _on_both(pool: ThreadPoolExecutor, live_task: Callable[[], _T], copy_task: Callable[[], _U]
             ) -> tuple[_T, _U]:
    """Run the copy's statement in the pool's thread while the live one runs here."""
    copy_future = pool.submit(copy_task)
    try:
        live_result = live_task()
    except BaseException:
        with contextlib.suppress(BaseException):
            copy_future.result()  # never leave the copy connection busy behind us
        raise
    return live_result, copy_future.result()


@dataclass
class _Search:
    """Where the range search ended: the ranges whose pairs must be fetched (merged, in key
    order), or None when they hold so many rows that the whole table is fetched instead."""

    leaves: list[_Range] | None
    first_pass: str
    levels: int
    compared: int


def _search(
    live_conn: Connection[Any], copy_conn: Connection[Any], shape: TableShape,
    key_filter: sql.Composable | None, tuning: RangeTuning, rows: int, facts: _RangeFacts,
    pool: ThreadPoolExecutor,
) -> _Search:
    """Sum ranges on both sides at once, keep the ones that differ, split those at live keys,
    and repeat until each is small (or cannot be split)."""
    bounds = _sample_bounds(live_conn, shape, rows, key_filter, tuning)
    edges: list[_Bound | None] = [None, *bounds, None]
    pending = [_Range((j,), lo, hi) for j, (lo, hi) in enumerate(pairwise(edges))]
    # width_bucket wants at least one bound; one range is the whole table anyway.
    bucket_scan = facts.bucket_scan and len(pending) > 1
    first_pass = "bucket scan" if bucket_scan else "index ranges"
    leaves: list[_Range] = []
    leaf_rows = total_rows = levels = compared = 0
    while pending:
        levels += 1
        compared += len(pending)
        first = levels == 1 and bucket_scan
        live_sums, copy_sums = _on_both(
            pool,
            partial(_range_sums, live_conn, shape, pending, key_filter, tuning, facts.checksum,
                    bucket_scan=first),
            partial(_range_sums, copy_conn, shape, pending, key_filter, tuning, facts.checksum,
                    bucket_scan=first),
        )
        if levels == 1:
            total_rows = max(sum(n for n, _ in live_sums), sum(n for n, _ in copy_sums))
        to_split: list[tuple[_Range, int, int]] = []
        for r, mine, theirs in zip(pending, live_sums, copy_sums, strict=True):
            if mine == theirs:
                continue
            largest = max(mine[0], theirs[0])
            if largest <= tuning.leaf_rows or mine[0] < 2 or levels >= tuning.max_levels:
                leaves.append(r)
                leaf_rows += largest
            else:
                to_split.append((r, mine[0], largest))
        if leaf_rows > tuning.full_fraction * total_rows:
            # Most rows differ: one plain full join is cheaper than a long list of ranges.
            return _Search(None, first_pass, levels, compared)
        pending = []
        if to_split:
            pending, whole = _split(live_conn, shape, to_split, key_filter, tuning)
            leaves.extend(whole)
            leaf_rows += sum(n for r, _, n in to_split if r in whole)
    return _Search(_merge(leaves), first_pass, levels, compared)


def _diff_ranges(
    live_conn: Connection[Any], copy_conn: Connection[Any], shape: TableShape,
    key_filter: sql.Composable | None, tuning: RangeTuning, rows: int, facts: _RangeFacts,
    reason: str,
) -> TableDiff:
    with ExitStack() as stack:
        stack.enter_context(_snapshot(live_conn, read_only=False))
        stack.enter_context(_snapshot(copy_conn, read_only=True))
        stack.enter_context(pinned_both(live_conn, copy_conn))
        stack.enter_context(_session_settings(live_conn, _RANGE_SETTINGS))
        stack.enter_context(_session_settings(copy_conn, _RANGE_SETTINGS))
        pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="restorekit-diff"))
        found = _search(live_conn, copy_conn, shape, key_filter, tuning, rows, facts, pool)
        stats = DiffStats("range", reason, found.first_pass, found.levels, found.compared,
                          len(found.leaves) if found.leaves is not None else 0)
        if found.leaves == []:
            return TableDiff(shape.table, shape.key, 0, 0, 0, stats=stats)
        if found.leaves is None:
            hashes, staged = _stage_hashes(live_conn, copy_conn, shape,
                                           hashes_query(shape, key_filter))
            result = _classify(live_conn, shape, hashes, _table_source(shape), key_filter,
                               key_filter, replace(stats, rows_staged=staged))
            drop_temp(live_conn, hashes)
            return result
        # Only the ranges that differ, on both sides: the copy's pairs are streamed to live,
        # and live's rows of the same ranges are the other side of the full join.
        copy_query = _over_ranges(
            shape, found.leaves,
            sql.SQL("{}, {} AS {}").format(shape.key_idents(ALIAS), row_hash(shape.columns),
                                           sql.Identifier(shape.hash_column)),
            sql.SQL("x.*"), key_filter)
        live_columns = tuple(dict.fromkeys([*shape.key, *shape.columns]))
        source = sql.SQL("({}) AS {}").format(
            _over_ranges(shape, found.leaves, idents(live_columns, ALIAS), sql.SQL("x.*"),
                         key_filter), ALIAS)
        with _session_settings(copy_conn, _INDEX_SCANS):
            hashes, staged = _stage_hashes(live_conn, copy_conn, shape, copy_query)
        with _session_settings(live_conn, _INDEX_SCANS):
            result = _classify(live_conn, shape, hashes, source, None, key_filter,
                               replace(stats, rows_staged=staged))
        drop_temp(live_conn, hashes)
        return result

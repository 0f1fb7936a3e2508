"""The ``fk_orphans:<fk>`` checks: child rows whose parent row is missing."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import Connection, sql

from restorekit.integrity._format import (
    SAMPLE_ROWS,
    _jsonable,
    _n,
)
from restorekit.integrity.pool import _Outcome
from restorekit.integrity.report import CheckResult
from restorekit.pg.catalog import SYSTEM_SCHEMAS, ForeignKey, TableRef


@dataclass(frozen=True, slots=True)
class _FkInfo:
    """What catalog.foreign_keys() does not say but an orphan check needs."""

    validated: bool = True
    match_full: bool = False
    child_partitioned: bool = False
    parent_partitioned: bool = False
    #: The child's key columns declared NOT NULL (their IS NOT NULL test is left out).
    not_null: frozenset[str] = frozenset()


_FK_INFO = sql.SQL(
    """
    SELECT cn.nspname, cc.relname, con.conname, con.convalidated, con.confmatchtype = 'f',
           cc.relkind = 'p', pc.relkind = 'p',
           ARRAY(SELECT a.attname::text FROM pg_attribute a
                 WHERE a.attrelid = con.conrelid AND a.attnum = ANY(con.conkey)
                   AND a.attnotnull
                   -- PostgreSQL 18: a NOT NULL ... NOT VALID constraint sets attnotnull over
                   -- older rows that may still hold NULLs
                   AND NOT EXISTS (SELECT 1 FROM pg_constraint nn
                                   WHERE nn.conrelid = a.attrelid AND nn.contype = 'n'
                                     AND a.attnum = ANY(nn.conkey) AND NOT nn.convalidated))
    FROM pg_constraint con
    JOIN pg_class cc ON cc.oid = con.conrelid
    JOIN pg_namespace cn ON cn.oid = cc.relnamespace
    JOIN pg_class pc ON pc.oid = con.confrelid
    WHERE con.contype = 'f' AND con.conparentid = 0
      AND cn.nspname <> ALL(%(system)s::text[])
    """
)


def _fk_info(conn: Connection[Any]) -> dict[tuple[TableRef, str], _FkInfo]:
    return {
        (TableRef(schema, table), name): _FkInfo(bool(valid), bool(full), bool(cp), bool(pp),
                                                 frozenset(not_null or ()))
        for schema, table, name, valid, full, cp, pp, not_null in conn.execute(
            _FK_INFO, {"system": list(SYSTEM_SCHEMAS)}
        )
    }


def orphan_query(fk: ForeignKey, *, match_full: bool = False, child_partitioned: bool = False,
                 parent_partitioned: bool = False, not_null: Collection[str] = (),
                 sample: int | None = None) -> sql.Composed:
    """The anti-join counting the rows of ``fk.child`` that have no parent row.

    ``SELECT count(*) FROM child c WHERE <key set> AND NOT EXISTS (SELECT 1 FROM parent p
    WHERE p.k1 = c.k1 AND ...)``: one scan of the child and an index probe (or a hash anti-join)
    into the parent, however many rows there are.

    MATCH SIMPLE (PostgreSQL's default): a row with any NULL key column references nothing and
    is never an orphan. ``match_full``: a row with some but not all key columns NULL is a
    violation too. A foreign key does not extend to inheritance children, so plain tables are
    read with ONLY; on a partitioned table it covers every partition, which is read through the
    parent. With ``sample``, the statement returns up to that many orphan keys instead.

    ``not_null``: the child's key columns declared NOT NULL, which need no ``IS NOT NULL``
    test. PostgreSQL 15 keeps that redundant test and costs it per row, which tipped its choice
    from an index-only merge anti-join to a hash anti-join spilling to disk (bench/verify_bench.py's
    data at scale 20, appointments -> clients, serial: 447 ms against 252 ms; -> users: 343 ms
    against 121 ms).
    """
    c, p = sql.Identifier("c"), sql.Identifier("p")
    child_cols = [sql.SQL("{}.{}").format(c, sql.Identifier(col)) for col in fk.child_columns]
    nullable = [ref for col, ref in zip(fk.child_columns, child_cols, strict=True)
                if col not in not_null]
    pairs = sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}").format(p, sql.Identifier(pcol), ccol)
        for pcol, ccol in zip(fk.parent_columns, child_cols, strict=True)
    )
    missing = sql.SQL("NOT EXISTS (SELECT 1 FROM {only}{parent} AS {p} WHERE {pairs})").format(
        only=sql.SQL("" if parent_partitioned else "ONLY "), parent=fk.parent.ident, p=p,
        pairs=pairs,
    )
    all_set = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(col) for col in nullable)
    if not nullable:  # every key column is set on every row
        where = missing
    elif match_full and len(child_cols) > 1:
        any_set = sql.SQL(" OR ").join(sql.SQL("{} IS NOT NULL").format(col) for col in child_cols)
        any_null = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(col) for col in child_cols)
        where = sql.SQL("({}) AND ({} OR {})").format(any_set, any_null, missing)
    else:
        where = sql.SQL("{} AND {}").format(all_set, missing)
    source = sql.SQL("{only}{child} AS {c}").format(
        only=sql.SQL("" if child_partitioned else "ONLY "), child=fk.child.ident, c=c
    )
    if sample is None:
        return sql.SQL("SELECT count(*) FROM {} WHERE {}").format(source, where)
    return sql.SQL("SELECT {} FROM {} WHERE {} LIMIT {}").format(
        sql.SQL(", ").join(child_cols), source, where, sql.Literal(sample)
    )


def _fk_check_names(fks: Sequence[ForeignKey]) -> list[str]:
    # Constraint names are unique per table only; qualify the ones that clash.
    seen = Counter(fk.name for fk in fks)
    return [
        f"fk_orphans:{fk.name}" if seen[fk.name] == 1 else f"fk_orphans:{fk.child}:{fk.name}"
        for fk in fks
    ]


def _fk_job(fk: ForeignKey, info: _FkInfo) -> Callable[[Connection[Any]], tuple[int, list[Any]]]:
    query = functools.partial(
        orphan_query, fk, match_full=info.match_full, child_partitioned=info.child_partitioned,
        parent_partitioned=info.parent_partitioned, not_null=info.not_null)

    def job(conn: Connection[Any]) -> tuple[int, list[Any]]:
        row = conn.execute(query()).fetchone()
        count = int(row[0]) if row else 0
        sample: list[Any] = []
        if count:
            sample = [
                _jsonable(list(r))
                for r in conn.execute(query(sample=SAMPLE_ROWS)).fetchall()
            ]
        return count, sample

    return job


def _fk_result(name: str, fk: ForeignKey, info: _FkInfo, outcome: _Outcome) -> CheckResult:
    # Every foreign key is critical. A NOT VALID one most of all: PostgreSQL enforces it on
    # new writes but never checked the rows it was added over, so it is the only kind whose
    # orphans can exist without corruption, and a restore must not pass over them unseen.
    critical = True
    relation = (
        f"{fk.child} ({', '.join(fk.child_columns)}) -> {fk.parent} "
        f"({', '.join(fk.parent_columns)})"
    )
    observed: dict[str, Any] = {
        "child": str(fk.child), "child_columns": list(fk.child_columns),
        "parent": str(fk.parent), "parent_columns": list(fk.parent_columns),
        "match": "full" if info.match_full else "simple", "validated": info.validated,
    }
    note = "" if info.validated else (
        " (constraint is NOT VALID: rows older than it were never checked; validate it, "
        "ALTER TABLE ... VALIDATE CONSTRAINT, once its orphans are resolved)")
    if outcome.error is not None:
        return CheckResult(name, False, critical, f"error: {outcome.error}", observed,
                           outcome.duration_ms)
    count, sample = outcome.value
    observed["orphans"] = count
    if count == 0:
        return CheckResult(name, True, critical, f"no orphans: {relation}{note}", observed,
                           outcome.duration_ms)
    keys = list(dict.fromkeys(tuple(map(str, key)) for key in sample))
    observed["sample_keys"] = sample
    if len(fk.child_columns) == 1:
        examples = ", ".join(f"{fk.child_columns[0]}={key[0]}" for key in keys)
    else:
        examples = ", ".join(
            f"({', '.join(fk.child_columns)})=({', '.join(key)})" for key in keys
        )
    detail = (
        f"{_n(count, 'orphan row')} in {fk.child} ({', '.join(fk.child_columns)}) with no "
        f"parent in {fk.parent} ({', '.join(fk.parent_columns)}), constraint {fk.name}; "
        f"e.g. {examples}{note}"
    )
    return CheckResult(name, False, critical, detail, observed, outcome.duration_ms)

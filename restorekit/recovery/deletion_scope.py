"""Which rows were deleted (runbook scenario 3, step 2: "identify deletion scope"): from the audit
log, or every key the copy has and live lacks (the anti-diff).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import Connection, sql

from restorekit.diff import (
    create_temp_like,
    drop_temp,
    idents,
    missing_keys_query,
    no_primary_key,
    resolve_shape,
)
from restorekit.errors import ConfigError
from restorekit.pg import catalog
from restorekit.pg.catalog import TableRef
from restorekit.recovery.commit_times import _newer
from restorekit.recovery.options import _aware
from restorekit.recovery.stage import _stage_copy_keys

log = logging.getLogger(__name__)


_AUDIT_COLUMNS = ("table_name", "action", "old_row", "created_at")


def deleted_keys_from_audit(
    live_conn: Connection[Any],
    table: TableRef,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    audit_table: TableRef | None = None,
) -> list[tuple[Any, ...]] | None:
    """The keys of ``table`` rows that the audit log recorded as deleted (runbook scenario 3,
    step 2: "identify deletion scope").

    The audit log is the sample application's ``audit_log`` (``table_name``, ``action``,
    ``old_row`` jsonb, ``created_at``): the key is read from ``old_row`` with the table's own
    row type, so it has the key columns' real types. Cascaded deletes are in the log too (one
    row per deleted row, per table).

    Args:
        live_conn: the production database.
        table: the table whose deleted keys are wanted.
        since: only deletions at or after this time (timezone required).
        until: only deletions before this time (timezone required).
        audit_table: where the log is; default ``audit_log`` in the table's schema.

    Returns:
        Distinct keys (tuples in primary-key order), sorted; None when there is no audit table,
        so the caller falls back to the anti-diff (:func:`missing_keys`). A key is returned even
        when a row with that key has been written again since.

    Raises:
        ConfigError: naive timestamps, no primary key, or an audit table without the expected
            columns.
    """
    _aware("since", since)
    _aware("until", until)
    audit = audit_table or TableRef(table.schema, "audit_log")
    if audit not in catalog.list_tables(live_conn, [audit.schema]):
        log.info("no audit table %s; the deletion scope must come from the anti-diff", audit)
        return None
    have = {c.name for c in catalog.columns(live_conn, audit)}
    lacking = [c for c in _AUDIT_COLUMNS if c not in have]
    if lacking:
        raise ConfigError(
            f"audit table {audit} has no column(s) {', '.join(lacking)}; expected "
            f"{', '.join(_AUDIT_COLUMNS)} (old_row holding the deleted row as json)"
        )
    key = catalog.primary_key(live_conn, table)
    if not key:
        raise no_primary_key(table)
    r = sql.Identifier("r")
    a = sql.Identifier("a")
    not_null = _not_null(key, r)
    query = sql.SQL(
        """
        SELECT DISTINCT {rkey}
        FROM {audit} AS {a}
        CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, {a}.old_row::jsonb) AS {r}
        WHERE upper({a}.action) = 'DELETE'
          AND {a}.table_name = ANY(%(names)s::text[])
          AND (%(since)s::timestamptz IS NULL OR {a}.created_at >= %(since)s::timestamptz)
          AND (%(until)s::timestamptz IS NULL OR {a}.created_at < %(until)s::timestamptz)
          AND {not_null}
        ORDER BY {order}
        """
    ).format(
        rkey=idents(key, r), audit=audit.ident, a=a, table=table.ident, r=r, not_null=not_null,
        order=sql.SQL(", ").join(sql.Literal(i) for i in range(1, len(key) + 1)),
    )
    names = _audit_names(table)
    rows = live_conn.execute(query, {"names": names, "since": since, "until": until}).fetchall()
    return [tuple(row) for row in rows]


def _audit_names(table: TableRef) -> list[str]:
    """The names an audit log may record ``table`` under."""
    # Triggers record TG_TABLE_NAME (unqualified); some logs record schema.table.
    return list(dict.fromkeys([table.name, f"{table.schema}.{table.name}", str(table)]))


def _not_null(key: Sequence[str], alias: sql.Identifier) -> sql.Composed:
    """``r.a IS NOT NULL AND r.b IS NOT NULL``: a key read back from a logged row."""
    return sql.SQL(" AND ").join(
        sql.SQL("{}.{} IS NOT NULL").format(alias, sql.Identifier(c)) for c in key
    )


def missing_keys(
    live_conn: Connection[Any], copy_conn: Connection[Any], table: TableRef
) -> list[tuple[Any, ...]]:
    """Keys of ``table`` that are in the copy but not live: the anti-diff.

    The copy's key set is streamed into a live temp table and anti-joined with the live table
    in one statement. This is every deletion since the restore point, intended or not; prefer
    :func:`deleted_keys_from_audit` when an audit log can narrow it down.

    Returns:
        The keys, sorted.

    Raises:
        ConfigError: no primary key, or the table differs between the two sides.
    """
    shape = resolve_shape(live_conn, copy_conn, table)
    with live_conn.transaction():
        staged = _stage_copy_keys(live_conn, copy_conn, shape)
        order = sql.SQL(", ").join(sql.Literal(i) for i in range(1, len(shape.key) + 1))
        rows = live_conn.execute(
            sql.SQL("{} ORDER BY {}").format(missing_keys_query(shape, staged), order)
        ).fetchall()
        drop_temp(live_conn, staged)
    return [tuple(row) for row in rows]


def _deleted_after(live_conn: Connection[Any], table: TableRef, key: tuple[str, ...],
                   after: datetime) -> TableRef | None:
    """A live temp table of the keys whose deletion the audit log (``audit_log`` next to the
    table, as :func:`deleted_keys_from_audit` reads it) records in a transaction committed
    after ``after``; None when there is no usable audit log (then such deletions cannot be told
    from corruption)."""
    audit = TableRef(table.schema, "audit_log")
    if audit not in catalog.list_tables(live_conn, [audit.schema]):
        log.info("no %s: rows of %s deleted after %s cannot be told from corruption", audit,
                 table, after.isoformat())
        return None
    if not {c.name for c in catalog.columns(live_conn, audit)}.issuperset(_AUDIT_COLUMNS):
        log.warning("%s lacks %s; deletions of %s are not looked up", audit,
                    ", ".join(_AUDIT_COLUMNS), table)
        return None
    temp = create_temp_like(live_conn, table, key, "deleted")
    r, a = sql.Identifier("r"), sql.Identifier("a")
    not_null = _not_null(key, r)
    live_conn.execute(sql.SQL(
        "INSERT INTO {temp} SELECT DISTINCT {rkey} FROM {audit} AS {a} "
        "CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, {a}.old_row::jsonb) AS {r} "
        "WHERE upper({a}.action) = 'DELETE' AND {a}.table_name = ANY(%s::text[]) "
        "AND {newer} AND {not_null}"
    ).format(temp=temp.ident, rkey=idents(key, r), audit=audit.ident, a=a, table=table.ident,
             r=r, newer=_newer(after, a), not_null=not_null),
        [_audit_names(table)])
    live_conn.execute(sql.SQL("ANALYZE {}").format(temp.ident))
    return temp

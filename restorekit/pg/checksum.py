"""Content checksums of tables, computed inside PostgreSQL in one statement per table.

Used to prove that a database was left untouched (the source of a restore, a production database
next to a scratch copy) and that a copy holds exactly the rows of its original.

How a table is hashed: each row's text form (``ROW(t.*)::text``, the same text ``psql`` shows)
is hashed, the per-row digests are sorted and concatenated, and that is hashed again. Sorting by
the digest, rather than by primary key, is deliberate:

* the result does not depend on collation, so a scratch cluster initialised with another locale
  gives the same checksum for the same rows;
* it works for tables without a primary key and for column types with no ordering (json,
  point, xml), where "ORDER BY every column" would fail;
* only 16 or 32 bytes per row are aggregated, not the row text, which keeps the statement far
  from PostgreSQL's 1 GB value limit (about 30 million rows for md5).

The checksum is therefore one of the *multiset* of rows: equal checksums mean the same rows
(duplicates counted), in any physical order. Pass ``order_by`` to hash in a given order instead.

Text forms depend on session settings, so these are pinned for the duration of the statement
(TimeZone, DateStyle, IntervalStyle, extra_float_digits, bytea_output, lc_monetary) and
restored afterwards. They still depend on the server encoding and on the PostgreSQL major version
for a few types (floats before 12): compare checksums of like with like.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

from psycopg import Connection, sql
from psycopg.pq import TransactionStatus

from restorekit.errors import ConfigError
from restorekit.pg.catalog import TableRef, list_tables

Algorithm = Literal["md5", "sha256"]

# Settings that change how a value prints, pinned so checksums from two sessions (or two
# servers configured differently) compare.
PINNED_SETTINGS: Mapping[str, str] = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "lc_monetary": "C",
}

# Per-row digest (bytea), final aggregate expression over the concatenated digests.
_ROW_DIGEST: Mapping[str, sql.SQL] = {
    "md5": sql.SQL("decode(md5(ROW(t.*)::text), 'hex')"),
    "sha256": sql.SQL("sha256(convert_to(ROW(t.*)::text, 'UTF8'))"),
}
_FINAL_DIGEST: Mapping[str, sql.SQL] = {
    "md5": sql.SQL("md5({agg})"),
    "sha256": sql.SQL("encode(sha256({agg}), 'hex')"),
}

_CHECKSUM = sql.SQL(
    "SELECT {final} FROM (SELECT {row_digest} AS h{order_cols} FROM {table} AS t) AS d"
)


@contextlib.contextmanager
def pinned_output_settings(conn: Connection[Any]) -> Iterator[None]:
    """Set :data:`PINNED_SETTINGS` for the block, then put the previous values back.

    Session-level ``set_config`` is used (not ``SET LOCAL``) so the caller's transaction is not
    changed; if the caller's transaction later rolls back, PostgreSQL undoes both changes.
    """
    names = list(PINNED_SETTINGS)
    # Read the previous values and pin in one round trip: two statements in one simple query
    # (no parameters, so psycopg sends them together), run by the server in order.
    read_then_pin = sql.SQL(
        "SELECT array_agg(current_setting(n) ORDER BY o) FROM unnest({names}::text[]) "
        "WITH ORDINALITY AS s(n, o); "
        "SELECT set_config(n, v, false) FROM unnest({names}::text[], {values}::text[]) AS s(n, v)"
    ).format(names=sql.Literal(names), values=sql.Literal(list(PINNED_SETTINGS.values())))
    row = conn.execute(read_then_pin).fetchone()
    previous = list(row[0]) if row else []
    apply = "SELECT set_config(n, v, false) FROM unnest(%s::text[], %s::text[]) AS s(n, v)"
    try:
        yield
    finally:
        # After an error inside a transaction nothing can run; the caller's rollback restores
        # the settings anyway.
        if conn.info.transaction_status != TransactionStatus.INERROR and previous:
            conn.execute(apply, [names, previous])


def _checksum_query(
    table: TableRef, order_by: Sequence[str] | None, algorithm: Algorithm
) -> sql.Composed:
    if algorithm not in _ROW_DIGEST:
        raise ConfigError(f"unknown checksum algorithm {algorithm!r}; use 'md5' or 'sha256'")
    order_cols: sql.Composable = sql.SQL("")
    order: list[sql.Composable] = []
    if order_by:
        # Carried through the subquery as o1, o2, ... so a column named "h" cannot clash.
        order_cols = sql.SQL("").join(
            sql.SQL(", t.{} AS {}").format(sql.Identifier(col), sql.Identifier(f"o{i}"))
            for i, col in enumerate(order_by, 1)
        )
        order = [sql.Identifier(f"o{i}") for i in range(1, len(order_by) + 1)]
    order.append(sql.Identifier("h"))
    # coalesce: string_agg over no rows is NULL, and an empty table still deserves a checksum.
    agg = sql.SQL("coalesce(string_agg(h, ''::bytea ORDER BY {order}), ''::bytea)").format(
        order=sql.SQL(", ").join(order)
    )
    return _CHECKSUM.format(
        final=_FINAL_DIGEST[algorithm].format(agg=agg),
        row_digest=_ROW_DIGEST[algorithm],
        order_cols=order_cols,
        table=table.ident,
    )


def table_checksum(
    conn: Connection[Any],
    table: TableRef,
    order_by: Sequence[str] | None = None,
    *,
    algorithm: Algorithm = "md5",
) -> str:
    """The hex digest of every row of ``table`` (partitions included for a partitioned table).

    Args:
        conn: an open connection; run inside a REPEATABLE READ transaction to checksum several
            tables from one snapshot.
        table: the table.
        order_by: hash rows in this column order (ties by row digest) instead of the
            order-independent default; the same table then only matches under the same collation.
        algorithm: ``"md5"`` (fast) or ``"sha256"``.

    Raises:
        ConfigError: an unknown algorithm.
        psycopg.Error: the table or a column does not exist, or the server failed.
    """
    query = _checksum_query(table, order_by, algorithm)
    with pinned_output_settings(conn):
        row = conn.execute(query).fetchone()
    assert row is not None  # an aggregate always returns one row
    return str(row[0])


def database_checksums(
    conn: Connection[Any],
    schemas: Sequence[str] | None = None,
    *,
    algorithm: Algorithm = "md5",
) -> dict[str, str]:
    """:func:`table_checksum` of every table, keyed by ``str(TableRef)`` (``public.users``).

    One statement per table. Run it in a REPEATABLE READ transaction for a consistent picture
    of a database that is being written to.
    """
    result: dict[str, str] = {}
    with pinned_output_settings(conn):
        for table in list_tables(conn, schemas):
            row = conn.execute(_checksum_query(table, None, algorithm)).fetchone()
            assert row is not None
            result[str(table)] = str(row[0])
    return result

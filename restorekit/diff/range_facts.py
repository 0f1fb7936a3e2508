"""What the range method must know about a table from both catalogs: whether the two sides order
the key the same way, how the first pass reads, the row checksum, and about how many rows there
are.

Each range is read through the primary-key index (``key >= lo AND key < hi`` inside a LATERAL
join over the list of ranges), so both sides must order keys the same way: ``auto`` (the
default) uses ``full`` when a key column's collation or type differs between the sides, and for
tables below :attr:`~restorekit.diff.models.RangeTuning.min_rows` rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg import Connection, sql

from restorekit.diff.compose import ALIAS, idents
from restorekit.diff.shape import TableShape
from restorekit.pg import catalog

# Per column: type, storage width, whether it is an array, (for collatable types) everything
# that decides its sort order (the collation's provider, locale, determinism and the version
# the library reports now: a copy restored onto another OS may sort differently under the same
# collation name), and whether its own hash function can stand in for its text (see _FAITHFUL).
_COLUMN_FACTS = sql.SQL(
    """
    SELECT a.attname, format_type(a.atttypid, a.atttypmod), ty.typlen, ty.typcategory = 'A',
           CASE WHEN a.attcollation = 0 THEN NULL
                WHEN co.collprovider = 'd' THEN
                    (SELECT to_jsonb(d) || jsonb_build_object(
                                'actual_version', pg_database_collation_actual_version(d.oid))
                     FROM pg_database d WHERE d.datname = current_database())
                ELSE to_jsonb(co) || jsonb_build_object(
                         'actual_version', pg_collation_actual_version(co.oid))
           END,
           ty.typnamespace = 'pg_catalog'::regnamespace AND ty.typname = ANY(%(faithful)s)
               AND (a.attcollation = 0 OR co.collisdeterministic)
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_type ty ON ty.oid = a.atttypid
    LEFT JOIN pg_collation co ON co.oid = a.attcollation
    WHERE n.nspname = %(schema)s AND c.relname = %(name)s AND a.attname = ANY(%(columns)s)
    """
)
# Types whose equality is identity of their text form (under the pinned output settings), so
# their built-in hash may replace hashing the text, which costs a third of the time. Left out on
# purpose: numeric (1.0 = 1.00), float (-0 = 0), interval ('1 day' = '24 hours'), json(b),
# bpchar (trailing blanks), enums and oids (hashed by OID, which differs between clusters).
_FAITHFUL = ("int2", "int4", "int8", "bool", "text", "varchar", "date", "time", "timestamp",
             "timestamptz", "uuid", "bytea")
_INTEGERS = frozenset({"smallint", "integer", "bigint"})


@dataclass(frozen=True, slots=True)
class _RangeFacts:
    """What the range method needs to know about a table, from both catalogs."""

    obstacle: str | None  # why the two sides might order the key differently
    # One key column of a fixed-width type (bigint, uuid, timestamptz, ...) whose order is not
    # the heap's: the first pass buckets a sequential scan instead of reading by index.
    bucket_scan: bool
    checksum: sql.Composable  # a 64-bit hash of a row of ALIAS, the same on both sides


def _scattered(live_conn: Connection[Any], shape: TableShape) -> bool:
    """Whether the planner's statistics say the key's order is far from the heap's (random
    uuids): reading such a table range by range through the index jumps between pages."""
    row = live_conn.execute(
        "SELECT max(abs(correlation)) FROM pg_stats "
        "WHERE schemaname = %s AND tablename = %s AND attname = %s",
        [shape.table.schema, shape.table.name, shape.key[0]]).fetchone()
    return row is not None and row[0] is not None and row[0] < 0.5


def _sort_order(info: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """What decides a collation's order, from a pg_collation or pg_database row (as json);
    column names vary between PostgreSQL versions, so the first present is taken."""
    if info is None:
        return ()

    def pick(*names: str) -> Any:
        return next((info[n] for n in names if info.get(n) is not None), None)

    provider = pick("collprovider", "datlocprovider")
    collate = pick("collcollate", "datcollate")
    if provider == "c" and collate in ("C", "POSIX"):
        return ("C",)  # byte order, whatever the server
    return (provider, collate, pick("colliculocale", "colllocale", "daticulocale", "datlocale"),
            pick("collicurules", "daticurules"), info.get("collisdeterministic", True),
            info.get("actual_version"))


def _checksum_columns(shape: TableShape) -> tuple[str, ...]:
    # The key is always hashed: two rows swapping their other values must change the sum.
    return tuple(dict.fromkeys([*shape.columns, *shape.key]))


def _range_facts(
    live_conn: Connection[Any], copy_conn: Connection[Any], shape: TableShape
) -> _RangeFacts:
    """Whether both sides order the key the same way (ranges must hold the same rows), how
    the first pass reads, and the row checksum both sides compute.

    The checksum must change whenever the row's text changes, since the full method compares
    md5s of row text: a column is hashed by its own type's hash function only when its type is
    in :data:`_FAITHFUL` and the same on both sides, otherwise as text (collation "C", so no
    nondeterministic collation can make two texts hash alike).
    """
    columns = _checksum_columns(shape)
    params = {"schema": shape.table.schema, "name": shape.table.name, "columns": list(columns),
              "faithful": list(_FAITHFUL)}
    live = {r[0]: r[1:] for r in live_conn.execute(_COLUMN_FACTS, params)}
    copy = {r[0]: r[1:] for r in copy_conn.execute(_COLUMN_FACTS, params)}
    if min(live_conn.info.server_version, copy_conn.info.server_version) >= 140000:
        parts = [sql.SQL("{}.{}").format(ALIAS, sql.Identifier(c))
                 if live[c][4] and copy[c][4] and live[c][0] == copy[c][0] else
                 sql.SQL('{}.{}::text COLLATE "C"').format(ALIAS, sql.Identifier(c))
                 for c in columns]
        checksum: sql.Composable = sql.SQL("hash_record_extended(ROW({}), 0)").format(
            sql.SQL(", ").join(parts))
    else:  # hash_record_extended is PostgreSQL 14+
        checksum = sql.SQL("hashtextextended(ROW({})::text, 0)").format(idents(columns, ALIAS))
    bucket = len(shape.key) == 1 and live[shape.key[0]][1] > 0 and _scattered(
        live_conn, shape)
    obstacle = None
    for col in shape.key:
        (live_type, _, is_array, live_coll, _), (copy_type, _, _, copy_coll, _) = \
            live[col], copy[col]
        if is_array:
            obstacle = f"key column {col} is an array ({live_type})"
        elif live_type != copy_type and not {live_type, copy_type} <= _INTEGERS:
            obstacle = f"key column {col} is {live_type} live but {copy_type} in the copy"
        elif _sort_order(live_coll) != _sort_order(copy_coll):
            obstacle = f"key column {col} is sorted by a different collation in the copy"
        if obstacle:
            break
    return _RangeFacts(obstacle, bucket, checksum)


def _live_rows_at_least(live_conn: Connection[Any], shape: TableShape, wanted: int) -> int:
    """The planner's row estimate, or, when that is below ``wanted`` (never analyzed, small),
    the exact count up to ``wanted`` (a scan of at most that many rows)."""
    estimate = catalog.estimated_rows(live_conn, [shape.table])[shape.table]
    if estimate >= wanted:
        return estimate
    query = sql.SQL("SELECT count(*) FROM (SELECT FROM {} LIMIT {}) AS s").format(
        shape.table.ident, sql.Literal(wanted))
    row = live_conn.execute(query).fetchone()
    return max(estimate, int(row[0]) if row else 0)

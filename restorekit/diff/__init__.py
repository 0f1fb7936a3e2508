"""Which rows differ between a live database and a restored copy of it.

The two databases live in different clusters (production and a restored scratch copy), so no
query can join them. Each row is classified by primary key:

* **missing**: the key is in the copy but not live (deleted since the restore point);
* **extra**: the key is live but not in the copy (written since the restore point);
* **changed**: the key is on both sides and the row hashes differ.


Two methods give exactly the same answer:

* ``full`` (:mod:`restorekit.diff.compare`): every key's ``(primary key, md5 of the row)`` pair
  of the copy is streamed to the live side and classified there with one FULL JOIN.
* ``range`` (:mod:`restorekit.diff.ranges`): checksums over key ranges on both sides at once;
  only the ranges that differ are split again and, once small, fetched and classified the same
  way. ``auto`` (the default) picks ``range`` for big tables whose key sorts alike on both sides.

Only keys, counts and hashes cross the wire; the live database gets no write outside its own
session's temp tables and the copy is only read. Row text depends on session settings
(TimeZone, DateStyle, ...), so both sessions are pinned to
:data:`restorekit.pg.checksum.PINNED_SETTINGS` while hashing.

A table without a primary key cannot be diffed row by row (two identical rows cannot be told
apart), and is refused with a :class:`~restorekit.errors.ConfigError`.

The package, by subject:

* :mod:`~restorekit.diff.models`: :class:`TableDiff`, :class:`DiffStats`, :class:`RangeTuning`;
* :mod:`~restorekit.diff.shape`: :class:`TableShape` and :func:`resolve_shape` (key, columns,
  COPY formats both sides agree on);
* :mod:`~restorekit.diff.compose`: SQL pieces (identifier lists, key matches, the row hash);
* :mod:`~restorekit.diff.staging`: live temp tables and the copy's hashes streamed into them;
* :mod:`~restorekit.diff.counting`: counting and sampling missing, extra and changed keys;
* :mod:`~restorekit.diff.range_facts` and :mod:`~restorekit.diff.ranges`: the range method;
* :mod:`~restorekit.diff.compare`: :func:`diff_table`, :func:`diff_tables` and the full method.

The building blocks (:func:`resolve_shape`, :func:`stage_copy_hashes`, ...) are shared with
:mod:`restorekit.recovery`.
"""

from __future__ import annotations

from restorekit.diff.compare import diff_table, diff_tables
from restorekit.diff.compose import ALIAS, idents, key_match, row_hash, where_clause
from restorekit.diff.counting import (
    changed_keys_query,
    count_differences,
    extra_keys_query,
    missing_keys_query,
)
from restorekit.diff.models import (
    SAMPLE_SIZE,
    DiffStats,
    Method,
    RangeTuning,
    TableDiff,
    jsonable_key,
)
from restorekit.diff.shape import TableShape, no_primary_key, resolve_shape, resolve_shapes
from restorekit.diff.staging import (
    create_temp_like,
    drop_temp,
    pinned_both,
    stage_copy_hashes,
    stage_query,
    temp_table,
)

__all__ = [
    "ALIAS",
    "SAMPLE_SIZE",
    "DiffStats",
    "Method",
    "RangeTuning",
    "TableDiff",
    "TableShape",
    "changed_keys_query",
    "count_differences",
    "create_temp_like",
    "diff_table",
    "diff_tables",
    "drop_temp",
    "extra_keys_query",
    "idents",
    "jsonable_key",
    "key_match",
    "missing_keys_query",
    "no_primary_key",
    "pinned_both",
    "resolve_shape",
    "resolve_shapes",
    "row_hash",
    "stage_copy_hashes",
    "stage_query",
    "temp_table",
    "where_clause",
]

"""Production as the reference when there is no baseline: its fingerprint and exact counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import psycopg

from restorekit.errors import RestoreKitError
from restorekit.integrity._format import (
    _error_text,
)
from restorekit.integrity.baseline_model import _exact_count
from restorekit.integrity.connections import _open
from restorekit.integrity.fingerprint import SchemaFingerprint, fingerprint
from restorekit.pg.catalog import TableRef, list_tables


@dataclass(frozen=True, slots=True)
class _Reference:
    """What the restored counts are compared with when there is no baseline: production's."""

    counts: Mapping[str, int] = field(default_factory=dict)
    fingerprint: SchemaFingerprint | None = None
    #: Why production could not be read (redacted); empty when it was.
    error: str = ""


def _read_production(reference_dsn: str, tables: Sequence[TableRef],
                     statement_timeout_ms: int) -> _Reference:
    """Production's schema fingerprint and the exact counts of ``tables``, on one snapshot
    (one attempt, read only)."""
    counts: dict[str, int] = {}
    try:
        with _open(reference_dsn, statement_timeout_ms, read_only=True) as conn:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                fp = fingerprint(conn)
                present = set(list_tables(conn))
                for table in tables:
                    if table in present:
                        counts[str(table)] = _exact_count(conn, table)
    except (psycopg.Error, RestoreKitError) as exc:
        return _Reference(error=_error_text(exc))
    return _Reference(counts, fp)

"""The :class:`Baseline` model: a healthy database's schema and row counts.

The store that keeps baselines is :mod:`restorekit.baseline`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg import Connection, sql

from restorekit.errors import ConfigError
from restorekit.integrity.fingerprint import SchemaFingerprint, fingerprint
from restorekit.integrity.prisma import prisma_migrations
from restorekit.pg.catalog import TableRef, estimated_rows, list_tables


@dataclass(frozen=True, slots=True)
class Baseline:
    """What a healthy database looked like: its schema and its row counts.

    Captured from the source (production, or the database right after a known-good restore) and
    stored as JSON (:mod:`restorekit.baseline`: in the repository beside the backups, and
    locally); :func:`verify` compares a restored database against it.

    Attributes:
        fingerprint: the schema.
        exact_counts: ``count(*)`` of each critical table, keyed by ``str(TableRef)``.
        estimated_counts: the planner's estimate for every other table (0 when never analyzed).
        captured_at: when it was captured (UTC).
        prisma: Prisma's applied migrations, ``{"latest": name, "count": n}``; None when the
            database has no ``_prisma_migrations``.
    """

    fingerprint: SchemaFingerprint
    exact_counts: Mapping[str, int] = field(hash=False)
    estimated_counts: Mapping[str, int] = field(hash=False)
    captured_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    prisma: Mapping[str, Any] | None = field(default=None, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "captured_at": self.captured_at.isoformat(),
            "exact_counts": dict(sorted(self.exact_counts.items())),
            "estimated_counts": dict(sorted(self.estimated_counts.items())),
            "fingerprint": self.fingerprint.to_dict(),
            **({"prisma": dict(self.prisma)} if self.prisma is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Baseline:
        """Rebuild a stored baseline.

        Raises:
            ConfigError: malformed data, an unknown format, or a damaged fingerprint.
        """
        if data.get("format", 1) != 1:
            raise ConfigError(f"unsupported baseline format {data.get('format')!r} (expected 1)")
        try:
            captured_at = datetime.fromisoformat(str(data["captured_at"]))
            exact = {str(k): int(v) for k, v in data["exact_counts"].items()}
            estimated = {str(k): int(v) for k, v in data.get("estimated_counts", {}).items()}
            fp = data["fingerprint"]
            prisma = data.get("prisma")
            if prisma is not None:
                prisma = {"latest": prisma.get("latest"), "count": int(prisma["count"])}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"not a verification baseline: {exc!r}") from exc
        return cls(SchemaFingerprint.from_dict(fp), exact, estimated, captured_at, prisma)


def _parse_tables(names: Iterable[str]) -> list[TableRef]:
    if isinstance(names, str):  # one name, not a sequence of one-letter names
        names = [names]
    return list(dict.fromkeys(TableRef.parse(n) for n in names))


def _count_query(table: TableRef) -> sql.Composed:
    return sql.SQL("SELECT count(*) FROM {}").format(table.ident)


def _exact_count(conn: Connection[Any], table: TableRef) -> int:
    """``count(*)`` of ``table``: a full scan."""
    row = conn.execute(_count_query(table)).fetchone()
    return int(row[0]) if row else 0


def capture_baseline(conn: Connection[Any], critical_tables: Sequence[str]) -> Baseline:
    """Capture a :class:`Baseline` from the database ``conn`` is connected to.

    Exact counts cost one ``count(*)`` per critical table (a full scan each); every other
    table gets the planner's estimate. Everything is read in one transaction.

    Args:
        conn: an open connection.
        critical_tables: names as in the config (``users``, ``public.users``, ``"Crm"."T"``).

    Raises:
        ConfigError: a name is malformed or a critical table does not exist.
    """
    critical = _parse_tables(critical_tables)
    captured_at = datetime.now(UTC)
    with conn.transaction():
        fp = fingerprint(conn)
        present = set(list_tables(conn))
        missing = [str(t) for t in critical if t not in present]
        if missing:
            raise ConfigError(f"critical table not found: {', '.join(missing)}")
        exact: dict[str, int] = {}
        for table in critical:
            exact[str(table)] = _exact_count(conn, table)
        others = sorted(present - set(critical))
        estimated = {str(t): n for t, n in estimated_rows(conn, others).items()}
        migrations = prisma_migrations(conn)
    prisma = None if migrations is None else {"latest": migrations.latest,
                                               "count": len(migrations.applied)}
    return Baseline(fp, exact, estimated, captured_at, prisma)

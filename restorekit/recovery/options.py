"""A recovery's options checked before anything happens: timezones, the corrupted columns, the time
after which rows are kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg import Connection

from restorekit.errors import ConfigError
from restorekit.models import PointKind, RestorePoint
from restorekit.pg import catalog
from restorekit.pg.catalog import TableRef
from restorekit.recovery.commit_times import require_commit_timestamps


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ConfigError(
            f"{name}={value.isoformat()} has no timezone; give one, e.g. 2026-11-25T13:05:00+00:00"
        )


def parse_columns(specs: Sequence[str], tables: Sequence[TableRef]
                  ) -> dict[TableRef, list[str]]:
    """Read ``column``, ``table.column`` or ``schema.table.column`` (quoted parts as
    PostgreSQL reads them) into columns per table; a bare column needs exactly one table.

    Raises:
        ConfigError: a malformed spec, or a bare column with no or several tables.
    """
    result: dict[TableRef, list[str]] = {}
    for spec in specs:
        parts = catalog.split_qualified(spec.strip()) if spec.strip() else []
        if len(parts) == 1:
            if len(tables) != 1:
                raise ConfigError(
                    f"column {spec!r} names no table; write it as table.column (a bare column "
                    "is only accepted when exactly one table is repaired)")
            table, column = tables[0], parts[0]
        elif len(parts) in (2, 3):
            table = TableRef(parts[0], parts[1]) if len(parts) == 3 else TableRef("public",
                                                                                  parts[0])
            column = parts[-1]
        else:
            raise ConfigError(f"column {spec!r}: expected column, table.column or "
                              "schema.table.column")
        result.setdefault(table, [])
        if column not in result[table]:
            result[table].append(column)
    return result


def check_keep_after(point: RestorePoint, keep_rows_written_after: datetime | None, *,
                     now: datetime | None = None) -> None:
    """Refuse a ``keep_rows_written_after`` that cannot be the end of a corruption which began
    after ``point``: at or before a time restore point every row written since would be left
    alone (nothing repaired), and a future time leaves nothing alone (a typo, most likely).
    Other restore point kinds cannot be compared before the restore; only the future is
    checked for them.

    Raises:
        ConfigError: saying which bound is broken and what to give instead.
    """
    keep = keep_rows_written_after
    _aware("keep_rows_written_after", keep)
    if keep is None:
        return
    now = now or datetime.now(UTC)
    if keep > now:
        raise ConfigError(
            f"keep_rows_written_after={keep.isoformat()} is in the future (now "
            f"{now.astimezone(UTC).isoformat(timespec='seconds')}); give the time the "
            "corruption ended")
    if point.kind is PointKind.TIME and point.time is not None and keep <= point.time:
        raise ConfigError(
            f"keep_rows_written_after={keep.isoformat()} is not after the restore point "
            f"{point.time.isoformat()}: every row written since the restore point would be left "
            "alone and nothing repaired. Give the time the corruption ENDED (after the restore "
            "point), or leave it empty")


def check_repair_options(
    live_conn: Connection[Any], tables: Sequence[TableRef],
    columns: Mapping[TableRef, Sequence[str]], keep_rows_written_after: datetime | None,
) -> None:
    """Check a repair's options against the live database before anything happens: the
    columns exist and can be written, their tables are being repaired, the time has a
    timezone and the server records commit times when it is given.

    Raises:
        ConfigError: naming the table, column or setting.
    """
    _aware("keep_rows_written_after", keep_rows_written_after)
    outside = [str(t) for t in columns if t not in tables]
    if outside:
        raise ConfigError(f"columns given for table(s) not being repaired: {', '.join(outside)} "
                          f"(repaired: {', '.join(map(str, tables)) or 'none'})")
    if columns:
        known = catalog.load_columns(live_conn, list(columns))
        keys = catalog.load_primary_keys(live_conn, list(columns))
        for table, wanted in columns.items():
            writable = {c.name for c in known[table] if not c.generated}
            bad = [c for c in wanted if c not in writable]
            if bad:
                raise ConfigError(
                    f"table {table} has no column(s) {', '.join(bad)} that can be repaired "
                    f"(unknown or generated); its columns: "
                    f"{', '.join(c.name for c in known[table])}")
            if all(c in keys[table] for c in wanted):
                raise ConfigError(f"columns {', '.join(wanted)} of {table} are its primary key, "
                                  "which a repair does not rewrite; name the corrupted columns")
    if keep_rows_written_after is not None:
        require_commit_timestamps(live_conn)

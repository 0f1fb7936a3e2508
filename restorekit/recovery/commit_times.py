"""What PostgreSQL's commit timestamps say about a row: whether its current version committed after
a given time (``keep_rows_written_after``), and the check that the server records them at all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import Connection, sql

from restorekit.diff import ALIAS
from restorekit.errors import ConfigError


def require_commit_timestamps(conn: Connection[Any]) -> None:
    """Refuse (before any side effect) when the server does not record commit times.

    Raises:
        ConfigError: ``track_commit_timestamp`` is off.
    """
    row = conn.execute("SELECT current_setting('track_commit_timestamp')::bool").fetchone()
    if not (row and row[0]):
        raise ConfigError(
            "keep_rows_written_after needs track_commit_timestamp = on on the production server, "
            "and it is off: PostgreSQL records no commit times, so rows written after the "
            "corruption cannot be told from it. Turn it on (takes a restart; only later commits "
            "get a time) or leave keep_rows_written_after empty and narrow the repair with columns."
        )


def _newer(after: datetime | None, alias: sql.Identifier = ALIAS) -> sql.Composable:
    """True for a row whose current version committed after ``after``; a frozen or untracked
    xmin has no commit time and counts as old."""
    if after is None:
        return sql.SQL("false")
    return sql.SQL("coalesce(pg_xact_commit_timestamp({}.xmin) > {}, false)").format(
        alias, sql.Literal(after))

"""Find the last commit in archived WAL with pg_waldump.

The restore window's upper bound must be the last *commit* the archive holds: a time target after
it cannot be reached (PostgreSQL stops with "recovery ended before configured recovery target
was reached"), so calling "now" the latest restorable time would be a lie.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from restorekit.pg.tools import PgTool

# rmgr: Transaction len (rec/tot): 34/34, tx: 735, lsn: 0/03000160, prev ...,
#   desc: COMMIT 2026-11-25 13:20:01.123456 UTC
_COMMIT = re.compile(
    r"lsn: (?P<lsn>[0-9A-F]+/[0-9A-F]+).*desc: (?:COMMIT|ABORT) "
    r"(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?: [A-Z]+|[+-]\d\d(?::?\d\d)?)?)"
)
_SEGMENT = re.compile(r"^[0-9A-F]{24}$")


def is_segment(name: str) -> bool:
    return bool(_SEGMENT.match(name))


def _parse_ts(text: str) -> datetime:
    text = text.strip()
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    return datetime.fromisoformat(text)


def last_commit_in(tool: PgTool, segment_path: Path) -> tuple[str, datetime] | None:
    """The (LSN, time) of the last commit/abort record in one WAL segment file, or None."""
    result = tool.run(
        "pg_waldump", "--rmgr=Transaction", str(segment_path), check=False, timeout=120
    )
    last: tuple[str, datetime] | None = None
    for match in _COMMIT.finditer(result.stdout):
        last = (match.group("lsn"), _parse_ts(match.group("ts")))
    return last


def last_commit(
    tool: PgTool,
    segments: Sequence[str],
    fetch: Callable[[str, Path], None],
    work_dir: Path,
    *,
    max_segments: int = 8,
) -> tuple[str, datetime] | None:
    """Scan the newest ``segments`` backwards (at most ``max_segments``) for the last commit.

    ``fetch(name, dest)`` copies one archived segment to ``dest`` (verified).
    """
    for name in list(reversed(sorted(s for s in segments if is_segment(s))))[:max_segments]:
        dest = work_dir / name
        try:
            fetch(name, dest)
            found = last_commit_in(tool, dest)
        finally:
            dest.unlink(missing_ok=True)
        if found:
            return found
    return None

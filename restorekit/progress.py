"""Rich progress display for long steps (base backup, base restore, WAL replay)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from restorekit.models import format_lsn
from restorekit.providers.base import Progress as ProgressFn


@contextmanager
def rich_progress(console: Console, *, enabled: bool = True) -> Iterator[ProgressFn]:
    """Yield a Progress callback that draws one bar per phase.

    Byte phases show sizes and an ETA; the "wal replay" phase shows the replayed LSN against the
    target LSN when one is known.
    """
    if not enabled:
        yield lambda phase, done, total: None
        return
    bars = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, TaskID] = {}
    firsts: dict[str, int] = {}

    def update(phase: str, done: int, total: int | None) -> None:
        if phase == "wal replay":
            # LSNs are byte positions in the WAL stream: show progress from where replay began.
            first = firsts.setdefault(phase, done)
            detail = f"replayed {format_lsn(done)}" + (f" / {format_lsn(total)}" if total else "")
            done, total = done - first, (total - first if total else None)
        else:
            detail = ""
        if phase not in tasks:
            tasks[phase] = bars.add_task(phase, total=total, detail=detail)
        bars.update(tasks[phase], completed=done, total=total, detail=detail)

    with bars:
        yield update

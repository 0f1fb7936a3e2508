"""Are the backups fresh enough for the tier's RPO?

Three signals, judged against ``[targets.X.backups]`` (see
:meth:`restorekit.config.BackupPolicy.freshness_limits`):

* the age of the newest base backup (a schedule that stopped running),
* the age of the newest archived WAL (the repository listing, else the restore window's
  latest point),
* the source's archiver (``pg_stat_archiver``), when the source answers: a failure newer than
  the last success means archiving is failing now, whatever the ages say.

An old archive on an idle database is no risk: when the source has written no WAL since the
end of the last archived segment there is nothing to lose, and the report says so instead.
:func:`judge_freshness` is pure (unit-tested with a fake clock); :func:`check_freshness`
gathers the inputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, LiteralString

import psycopg

from restorekit.config import BackupPolicy
from restorekit.models import parse_lsn
from restorekit.retention import segment_number

log = logging.getLogger(__name__)

ARCHIVER_QUERY: LiteralString = """
    SELECT a.failed_count, a.last_failed_wal, a.last_failed_time,
           a.archived_count, a.last_archived_wal, a.last_archived_time,
           current_setting('archive_mode'), current_setting('archive_timeout'),
           pg_current_wal_lsn()::text,
           (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')
      FROM pg_stat_archiver a
"""


@dataclass(frozen=True, slots=True)
class ArchiverStatus:
    """The source's ``pg_stat_archiver`` and how much WAL waits behind the last archived."""

    failed_count: int
    last_failed_wal: str | None
    last_failed_time: datetime | None
    archived_count: int
    last_archived_wal: str | None
    last_archived_time: datetime | None
    archive_mode: str
    archive_timeout: str
    unarchived_bytes: int | None  # WAL written after the end of the last archived segment

    @property
    def failing(self) -> bool:
        """A failure newer than the last success: archiving is failing now."""
        if self.last_failed_time is None:
            return False
        return self.last_archived_time is None or self.last_failed_time > self.last_archived_time


@dataclass(frozen=True, slots=True)
class FreshnessReport:
    """``ok`` unless a reason says the tier's RPO is at risk; ``notes`` explain, never fail."""

    target: str
    checked_at: datetime
    max_backup_age: timedelta
    max_wal_age: timedelta
    newest_backup: datetime | None = None
    newest_wal: datetime | None = None
    archiver: ArchiverStatus | None = None
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.reasons

    @property
    def status(self) -> str:
        return "ok" if self.ok else "at-risk"

    def lines(self) -> list[str]:
        def age(when: datetime | None) -> str:
            if when is None:
                return "none"
            return f"{_human(self.checked_at - when)} old ({when.isoformat()})"

        rows = [f"newest base backup: {age(self.newest_backup)}, "
                f"limit {_human(self.max_backup_age)}",
                f"newest archived WAL: {age(self.newest_wal)}, limit {_human(self.max_wal_age)}"]
        if self.archiver is not None:
            a = self.archiver
            rows.append(f"archiver: {a.archived_count} archived, {a.failed_count} failed"
                        + (f" (last failed {a.last_failed_wal} at {a.last_failed_time})"
                           if a.last_failed_wal else ""))
        return rows + [f"AT RISK: {r}" for r in self.reasons] + list(self.notes)

    def to_markdown(self) -> str:
        head = f"# Backup freshness: {self.target} {self.status.upper()}\n\n"
        return head + "\n".join(f"- {line}" for line in self.lines()) + "\n"


def _human(delta: timedelta) -> str:
    seconds = max(delta.total_seconds(), 0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def judge_freshness(
    target: str,
    *,
    now: datetime,
    limits: tuple[timedelta, timedelta],
    newest_backup: datetime | None,
    newest_wal: datetime | None,
    archiver: ArchiverStatus | None,
    notes: tuple[str, ...] = (),
    judge_backups: bool = True,
) -> FreshnessReport:
    """Judge the three signals (pure: ``now`` is given). ``judge_backups=False`` for providers
    that protect the database continuously themselves (RDS, Neon, Supabase): their base
    backups are reported, and the RPO is judged by the newest restorable point alone."""
    max_backup, max_wal = limits
    reasons: list[str] = []
    extra = list(notes)
    if judge_backups and newest_backup is None:
        reasons.append("there is no base backup: run the backup flow")
    elif judge_backups and newest_backup is not None and now - newest_backup > max_backup:
        reasons.append(f"the newest base backup is {_human(now - newest_backup)} old, more "
                       f"than {_human(max_backup)}: is the backup schedule running?")
    if archiver is not None:
        if archiver.archive_mode not in ("on", "always"):
            reasons.append(f"the source has archive_mode = {archiver.archive_mode}: no WAL is "
                           "archived, so no point after the newest backup can be restored")
        if archiver.failing:
            reasons.append(
                f"the source's archiver is failing: {archiver.failed_count} failure(s), last "
                f"{archiver.last_failed_wal} at {archiver.last_failed_time}"
                + (f", after the last success ({archiver.last_archived_wal} at "
                   f"{archiver.last_archived_time})" if archiver.last_archived_wal else "")
                + "; see the PostgreSQL log for archive_command's error")
    idle = archiver is not None and archiver.unarchived_bytes == 0 and not archiver.failing
    if newest_wal is None:
        if not idle:
            reasons.append("no WAL has been archived: point-in-time recovery is impossible")
    elif now - newest_wal > max_wal:
        if idle:
            extra.append(f"the newest archived WAL is {_human(now - newest_wal)} old, but the "
                         "source has written nothing since (idle): nothing to lose")
        else:
            pending = (f" while {archiver.unarchived_bytes} bytes of WAL wait"
                       if archiver is not None and archiver.unarchived_bytes else "")
            hint = (f" (archive_timeout = {archiver.archive_timeout}: set it below the RPO so a "
                    "quiet database's commits are archived in time)"
                    if archiver is not None and archiver.archive_timeout in ("0", "0s", "0ms")
                    else "")
            reasons.append(f"the newest archived WAL is {_human(now - newest_wal)} old, more "
                           f"than the {_human(max_wal)} RPO allows{pending}{hint}")
    return FreshnessReport(target=target, checked_at=now, max_backup_age=max_backup,
                           max_wal_age=max_wal, newest_backup=newest_backup,
                           newest_wal=newest_wal, archiver=archiver, reasons=tuple(reasons),
                           notes=tuple(extra))


def read_archiver(dsn: str) -> ArchiverStatus:
    """``pg_stat_archiver`` of the source and the WAL written after the last archived segment.

    Raises:
        psycopg.Error: the source cannot be reached or queried.
    """
    with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
        row: Any = conn.execute(ARCHIVER_QUERY).fetchone()
    assert row is not None
    current, seg_size = parse_lsn(row[8]), int(row[9])
    unarchived: int | None = None
    position = segment_number(row[4], seg_size) if row[4] else None
    if position is not None:
        unarchived = max(0, current - (position[1] + 1) * seg_size)
    return ArchiverStatus(
        failed_count=int(row[0]), last_failed_wal=row[1], last_failed_time=row[2],
        archived_count=int(row[3]), last_archived_wal=row[4], last_archived_time=row[5],
        archive_mode=str(row[6]), archive_timeout=str(row[7]), unarchived_bytes=unarchived)


def newest_archived_wal(provider: Any) -> datetime | None:
    """When the newest WAL segment reached the repository (native engine), else the restore
    window's latest point."""
    repo = getattr(getattr(provider, "engine", None), "repo", None)
    if repo is not None:
        from restorekit import wal

        last = wal.last_archived(repo)
        return last.created_at if last is not None else None
    latest: datetime | None = provider.restore_window().latest
    return latest


def check_freshness(
    target: str,
    provider: Any,
    policy: BackupPolicy,
    rpo: timedelta,
    *,
    now: datetime,
    source_dsn: str | None,
) -> FreshnessReport:
    """Gather the signals from ``provider`` (and the source, when ``source_dsn`` answers) and
    judge them. An unreachable source is a note, not a reason: the drill and the restore
    flows say loudly when production is down."""
    selfhosted = getattr(provider, "kind", "") == "selfhosted"
    backups = provider.list_backups()
    newest_backup = max((b.stop_time for b in backups), default=None)
    archiver = None
    notes: list[str] = []
    if not selfhosted:
        notes.append(f"{getattr(provider, 'kind', 'the provider')} takes its own backups: the "
                     "newest restorable point is what is judged")
    if source_dsn is not None and selfhosted:
        try:
            archiver = read_archiver(source_dsn)
        except psycopg.Error as exc:
            notes.append(f"the source's archiver was not checked (unreachable: "
                         f"{type(exc).__name__})")
    return judge_freshness(target, now=now, limits=policy.freshness_limits(rpo),
                           newest_backup=newest_backup, newest_wal=newest_archived_wal(provider),
                           archiver=archiver, notes=tuple(notes), judge_backups=selfhosted)


__all__ = ["ArchiverStatus", "FreshnessReport", "check_freshness", "judge_freshness",
           "newest_archived_wal", "read_archiver"]

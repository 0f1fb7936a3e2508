"""Retention for the native engine: which base backups and archived WAL files may go.

The runbook keeps 30 days of daily backups and point-in-time recovery over the last 7 days.
:func:`plan_retention` is a pure function of the backups, the archive listing, the policy and
``now``; :func:`apply_retention` deletes what a plan says. pgBackRest targets keep their own
retention (``repo1-retention-full``), written into the pgbackrest.conf restorekit generates.

A backup is kept when any of these holds (the union, so no rule can shorten another):

* it is one of the newest ``keep_count`` (whatever their age: a schedule that stopped must
  not expire the last good backups),
* it ended within the last ``keep_days``,
* it ended within the last ``pitr_days``, or it is the newest backup that ended before that
  window (the backup a restore to ``now - pitr_days`` starts from).

An archived WAL file is kept when a kept backup may need it: every segment (and ``.partial``,
``.backup`` file) at or after the segment of a kept backup's start LSN, on that backup's
timeline or a later one. Timeline ``.history`` files and names restorekit does not recognise
always stay. With no backup at all nothing is removed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from restorekit import wal
from restorekit.config import BackupPolicy
from restorekit.models import BackupInfo, parse_lsn
from restorekit.repository import Repository

log = logging.getLogger(__name__)

# 24 hex digits (timeline, log, segment), optionally .partial or .<offset>.backup.
_SEGMENT_FILE = re.compile(r"^[0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?$")


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """What retention keeps and removes. ``kept`` maps each kept backup id to why."""

    kept: dict[str, str] = field(default_factory=dict)
    expired_backups: tuple[BackupInfo, ...] = ()
    expired_wal: tuple[str, ...] = ()  # WAL file names (as PostgreSQL's %f)
    kept_wal: int = 0

    @property
    def empty(self) -> bool:
        return not self.expired_backups and not self.expired_wal

    def summary(self) -> str:
        return (f"keep {len(self.kept)} backup(s), expire {len(self.expired_backups)} "
                f"backup(s) ({', '.join(b.backup_id for b in self.expired_backups) or 'none'}) "
                f"and {len(self.expired_wal)} WAL file(s); {self.kept_wal} WAL file(s) stay")


def segment_number(name: str, segment_size: int = wal.SEGMENT_SIZE) -> tuple[int, int] | None:
    """``(timeline, segment number)`` of a WAL segment-like file name, None for others."""
    if not _SEGMENT_FILE.match(name):
        return None
    return int(name[:8], 16), wal.segment_number(name, segment_size)


def plan_retention(
    backups: Sequence[BackupInfo],
    wal_names: Sequence[str],
    policy: BackupPolicy,
    now: datetime,
    *,
    segment_size: int = wal.SEGMENT_SIZE,
) -> RetentionPlan:
    """Decide what to keep (see the module docstring for the rules).

    Args:
        backups: every complete base backup in the repository.
        wal_names: every archived WAL file name (segments, .partial, .backup, .history).
        policy: the target's ``[targets.X.backups]``.
        now: the time retention is judged at (tz-aware).
        segment_size: the cluster's WAL segment size (bytes).
    """
    if not backups:
        return RetentionPlan(kept_wal=len(wal_names))
    ordered = sorted(backups, key=lambda b: (b.stop_time, b.backup_id))
    kept: dict[str, str] = {}

    def keep(backup: BackupInfo, why: str) -> None:
        kept.setdefault(backup.backup_id, why)

    for backup in ordered[-policy.keep_count:]:
        keep(backup, f"one of the newest {policy.keep_count}")
    keep_since = now - timedelta(days=policy.keep_days)
    pitr_since = now - timedelta(days=policy.pitr_days)
    for backup in ordered:
        if backup.stop_time >= keep_since:
            keep(backup, f"younger than {policy.keep_days:g} days")
        elif backup.stop_time >= pitr_since:
            keep(backup, f"inside the {policy.pitr_days:g}-day PITR window")
    before_window = [b for b in ordered if b.stop_time < pitr_since]
    if before_window:
        keep(before_window[-1],
             f"restores to the start of the {policy.pitr_days:g}-day PITR window")
    kept_backups = [b for b in ordered if b.backup_id in kept]
    # Per kept backup: (its timeline, the segment its start LSN lies in).
    floors = [(b.timeline, parse_lsn(b.start_lsn) // segment_size) for b in kept_backups]
    expired_wal = []
    for name in wal_names:
        position = segment_number(name, segment_size)
        if position is None:
            continue  # .history and anything unknown stay
        timeline, number = position
        if not any(tl <= timeline and number >= first for tl, first in floors):
            expired_wal.append(name)
    return RetentionPlan(
        kept={b.backup_id: kept[b.backup_id] for b in kept_backups},
        expired_backups=tuple(b for b in ordered if b.backup_id not in kept),
        expired_wal=tuple(sorted(expired_wal)),
        kept_wal=len(wal_names) - len(expired_wal),
    )


def apply_retention(repo: Repository, plan: RetentionPlan, *,
                    dry_run: bool = False) -> RetentionPlan:
    """Delete what ``plan`` expires from a native repository: each backup's ``backup.json``
    first (so nothing vouches for a half-removed backup), then its other objects, then WAL.
    A missing object counts as removed. Returns ``plan``."""
    if dry_run or plan.empty:
        return plan
    for backup in plan.expired_backups:
        prefix = f"backups/{backup.backup_id}/"
        repo.delete(prefix + "backup.json")
        for obj in repo.list(prefix):
            repo.delete(obj.key)
        log.info("expired base backup %s (ended %s)", backup.backup_id, backup.stop_time)
    for name in plan.expired_wal:
        repo.delete(f"wal/{name}")
    if plan.expired_wal:
        log.info("expired %d archived WAL file(s): %s .. %s", len(plan.expired_wal),
                 plan.expired_wal[0], plan.expired_wal[-1])
    return plan


def expire_backups(provider: object, policy: BackupPolicy, now: datetime, *,
                   dry_run: bool = False) -> str:
    """Apply ``policy`` to a target's backups and say what happened, in one line.

    Only an engine with its own ``expire`` (the native engine) is acted on; pgBackRest expires
    after each backup by the ``repo1-retention-full*`` options restorekit writes, and cloud
    providers keep their own backup retention.
    """
    engine = getattr(provider, "engine", None)
    expire = getattr(engine, "expire", None)
    if not callable(expire):
        kind = getattr(engine, "name", None) or getattr(provider, "kind", "the provider")
        return f"retention is kept by {kind} itself"
    plan: RetentionPlan = expire(policy, now, dry_run=dry_run)
    return ("would " if dry_run else "") + plan.summary()


__all__ = ["RetentionPlan", "apply_retention", "expire_backups", "plan_retention",
           "segment_number"]

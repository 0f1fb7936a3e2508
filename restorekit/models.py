"""Frozen value objects passed between the core, tasks and flows.

None of them holds a secret: a database is named by a :class:`DatabaseRef` or carries its DSN in
a ``SecretStr`` that reprs as ``**********``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from restorekit.errors import RestorePointError

_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(text: str) -> int:
    """Parse a PostgreSQL LSN (``16/B374D848``) into an integer byte position."""
    match = _LSN_RE.match(text.strip())
    if not match:
        raise RestorePointError(f"not an LSN: {text!r} (expected the form 0/3000060)")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value: int) -> str:
    """Format an integer byte position as a PostgreSQL LSN."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


class PointKind(enum.StrEnum):
    LATEST = "latest"
    TIME = "time"
    LSN = "lsn"
    XID = "xid"
    NAME = "name"
    BACKUP = "backup"
    IMMEDIATE = "immediate"  # the end of a base backup: the earliest consistent point


@dataclass(frozen=True, slots=True)
class RestorePoint:
    """Where a restore should stop.

    ``latest`` replays every archived WAL record; ``time`` needs a timezone; ``lsn``, ``xid`` and
    ``name`` (a restore point created with ``pg_create_restore_point``) are self-hosted only;
    ``backup`` restores one base backup to its consistent end.
    """

    kind: PointKind
    time: datetime | None = None
    value: str | None = None
    #: False for ``before-xid:N``: the state just before transaction N committed, with
    #: everything committed before it (recovery_target_inclusive = off).
    inclusive: bool = True
    #: Where N's COMMIT record lies, when known (a point found in the WAL): picks the newest
    #: base backup that ends before it. Not part of the point's text or identity.
    commit_lsn: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.kind is PointKind.TIME:
            if self.time is None:
                raise RestorePointError("a time restore point needs a timestamp")
            if self.time.tzinfo is None or self.time.utcoffset() is None:
                raise RestorePointError(
                    f"restore time {self.time.isoformat()} has no timezone; "
                    "give one, e.g. 2026-11-25T13:05:00+00:00 or ...Z"
                )
            try:
                self.time.astimezone(UTC)
            except OverflowError:
                raise RestorePointError(
                    f"restore time {self.time.isoformat()} is out of range") from None
        elif self.kind in (PointKind.LSN, PointKind.XID, PointKind.NAME, PointKind.BACKUP):
            if not self.value:
                raise RestorePointError(f"a {self.kind.value} restore point needs a value")
            if self.kind is PointKind.LSN:
                parse_lsn(self.value)
            if self.kind is PointKind.XID and not (self.value.isascii() and self.value.isdigit()):
                raise RestorePointError(f"xid must be a number, got {self.value!r}")
        if not self.inclusive and self.kind is not PointKind.XID:
            raise RestorePointError("only an xid restore point can be exclusive (before-xid:N)")
        if self.commit_lsn is not None:
            parse_lsn(self.commit_lsn)

    @property
    def lsn(self) -> int | None:
        """The byte position of an ``lsn`` point (checked when it was made); None for any
        other kind."""
        if self.kind is PointKind.LSN and self.value is not None:
            return parse_lsn(self.value)
        return None

    @classmethod
    def latest(cls) -> RestorePoint:
        return cls(PointKind.LATEST)

    @classmethod
    def at(cls, when: datetime) -> RestorePoint:
        return cls(PointKind.TIME, time=when)

    @classmethod
    def before_xid(cls, xid: int | str, *, commit_lsn: str | None = None) -> RestorePoint:
        """Just before transaction ``xid`` committed: what a found damage is undone to."""
        return cls(PointKind.XID, value=str(xid), inclusive=False, commit_lsn=commit_lsn)

    @classmethod
    def parse(cls, text: str) -> RestorePoint:
        """Parse the CLI / UI form of a restore point.

        Accepted: ``latest``, ``immediate``, an ISO-8601 timestamp with a timezone,
        ``lsn:0/3000060`` (or a bare LSN), ``xid:1234`` (up to and including its commit),
        ``before-xid:1234`` (everything committed before it; either may end in ``@LSN``, where
        the transaction committed, which picks the base backup), ``name:before-migration``,
        ``backup:<backup id>``. ``auto`` is not a point: the flows find one
        (restorekit.damage) before parsing.
        """
        raw = (text or "").strip()
        if not raw:
            raise RestorePointError("empty restore point; use 'latest' or a timestamp")
        lowered = raw.lower()
        if lowered == "latest":
            return cls.latest()
        if lowered == "immediate":
            return cls(PointKind.IMMEDIATE)
        if lowered == "auto":
            raise RestorePointError(
                "'auto' is found by the flow (a WAL scan), not parsed: this path takes a point")
        prefix, sep, rest = raw.partition(":")
        if sep and prefix.lower() in ("before-xid", "xid") and "@" in rest:
            # xid:N@LSN names where N committed (a found point carries it through the flows).
            xid, _, lsn = rest.partition("@")
            return cls(PointKind.XID, value=xid.strip(), commit_lsn=lsn.strip(),
                       inclusive=prefix.lower() == "xid")
        if sep and prefix.lower() == "before-xid":
            return cls(PointKind.XID, value=rest.strip(), inclusive=False)
        if sep and prefix.lower() in ("lsn", "xid", "name", "backup"):
            return cls(PointKind(prefix.lower()), value=rest.strip())
        if _LSN_RE.match(raw):
            return cls(PointKind.LSN, value=raw)
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise RestorePointError(
                f"cannot read restore point {raw!r}: expected 'latest', an ISO-8601 timestamp "
                "with a timezone, lsn:X/Y, xid:N, before-xid:N, name:NAME or backup:ID"
            ) from None
        return cls.at(when)

    def __str__(self) -> str:
        if self.kind is PointKind.TIME and self.time is not None:
            return self.time.astimezone(UTC).isoformat()
        if self.kind is PointKind.XID:
            at = f"@{self.commit_lsn}" if self.commit_lsn else ""
            return f"{'xid' if self.inclusive else 'before-xid'}:{self.value}{at}"
        if self.value is not None:
            return f"{self.kind.value}:{self.value}"
        return self.kind.value


@dataclass(frozen=True, slots=True)
class RestoreWindow:
    """The span a restore can reach: from the oldest consistent backup to the last archived
    commit. ``latest`` is the real last restorable point, not "now"."""

    earliest: datetime | None
    latest: datetime | None
    earliest_lsn: str | None = None
    latest_lsn: str | None = None
    #: The last commit found in the archive. A time target at or after it has no later commit
    #: to stop at, so it is restored by replaying all archived WAL (the same state).
    latest_commit: datetime | None = None

    def __str__(self) -> str:
        def fmt(value: datetime | None) -> str:
            return value.astimezone(UTC).isoformat() if value else "unknown"

        return f"[{fmt(self.earliest)} .. {fmt(self.latest)}]"

    def check(self, point: RestorePoint, *, now: datetime | None = None) -> None:
        """Raise :class:`RestorePointError` unless ``point`` lies inside this window."""
        now = now or datetime.now(UTC)
        if self.earliest is None:
            raise RestorePointError(
                "no backup to restore from: take a base backup first (restorekit backup)",
                window=self,
            )
        if point.kind is PointKind.TIME:
            assert point.time is not None
            if point.time > now:
                raise RestorePointError(
                    f"restore time {point} is in the future (now {now.isoformat()}); "
                    f"the restore window is {self}",
                    window=self,
                )
            if point.time < self.earliest or (self.latest is not None and point.time > self.latest):
                raise RestorePointError(
                    f"restore time {point} is outside the restore window {self}", window=self
                )
        if point.kind is PointKind.LSN and self.earliest_lsn and self.latest_lsn:
            assert point.value is not None
            target = parse_lsn(point.value)
            if not parse_lsn(self.earliest_lsn) <= target <= parse_lsn(self.latest_lsn):
                raise RestorePointError(
                    f"restore LSN {point.value} is outside the archived range "
                    f"[{self.earliest_lsn} .. {self.latest_lsn}]",
                    window=self,
                )


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """A base (physical) backup in a repository."""

    backup_id: str
    engine: str
    start_time: datetime
    stop_time: datetime
    start_lsn: str
    stop_lsn: str
    timeline: int = 1
    size_bytes: int = 0
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RestoredRef:
    """A secret-free reference to a restored database, safe to keep in Prefect state and
    reports. The provider turns it back into a connection (``provider.dsn_for(ref)``)."""

    provider: str
    target: str
    name: str
    handle: str
    point: str = ""
    backup_id: str = ""
    display: str = ""  # e.g. postgresql://postgres@127.0.0.1:5433/app (never a password)
    recovered_to_time: datetime | None = None
    recovered_to_lsn: str | None = None
    phases: dict[str, float] = field(default_factory=dict)
    reused: bool = False
    access: str = ""  # how clients authenticate to it (pg_hba.conf choice), for the report
    pooled_display: str = ""  # the pooled location in display form, when it has one


@dataclass(frozen=True, slots=True)
class RestoredDatabase:
    """A database restorekit restored into a NEW place (cluster, instance, branch)."""

    provider: str
    handle: str  # provider-specific id: data directory, instance id, branch id
    dsn: SecretStr = field(repr=True)
    point: str = ""
    backup_id: str = ""
    scratch: bool = True
    # Timing of the phases the report shows (seconds) and the achieved recovery point.
    phases: dict[str, float] = field(default_factory=dict)
    recovered_to_time: datetime | None = None
    recovered_to_lsn: str | None = None
    access: str = ""  # how clients authenticate to it (pg_hba.conf choice), for the report
    # The same database through the provider's connection pooler (Neon's ``-pooler`` host),
    # when it has one: application keys that went through a pooler are re-pointed here.
    pooled_dsn: SecretStr | None = None

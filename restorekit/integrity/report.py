"""The report: :class:`CheckResult` per check and the :class:`VerificationReport` of a run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from restorekit.errors import VerificationFailed
from restorekit.integrity._format import (
    _jsonable,
    _n,
)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one named check.

    Attributes:
        name: the check's name, e.g. ``connectivity`` or ``fk_orphans:clients_user_id_fkey``.
        ok: the check passed. A check that could not run (``skipped``) is not ok when the
            report cannot vouch for what it covers.
        critical: a failure of this check makes the whole report fail.
        detail: one human-readable line (or a few) for the report table. Never holds secrets.
        observed: what the check measured, JSON-serialisable (counts, latency, differences).
        duration_ms: time spent in the check's statements.
        skipped: the check did not run (connectivity failed, amcheck not installed, ...).
        unverified: the check ran but had nothing to compare with (no baseline, production
            unreachable): it neither passes nor fails. Such a result is never ok and never
            critical, so it cannot fail a report, and every reader that only knows ``ok`` and
            ``critical`` (an older restorekit, the incident report) shows it as a warning.
    """

    name: str
    ok: bool
    critical: bool
    detail: str = ""
    observed: Mapping[str, Any] = field(default_factory=dict, hash=False)
    duration_ms: float = 0.0
    skipped: bool = False
    unverified: bool = False

    def __post_init__(self) -> None:
        if self.unverified and (self.ok or self.critical):
            raise ValueError(f"check {self.name!r}: an unverified result is neither ok nor "
                             "critical")

    @property
    def status(self) -> Literal["pass", "FAIL", "warn", "unverified"]:
        """``pass``; ``FAIL`` (not ok, critical); ``warn`` (not ok, non-critical);
        ``unverified`` (ran, but had nothing to compare with)."""
        if self.ok:
            return "pass"
        if self.unverified:
            return "unverified"
        return "FAIL" if self.critical else "warn"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "critical": self.critical,
            "detail": self.detail,
            "observed": _jsonable(dict(self.observed)),
            "duration_ms": self.duration_ms,
            "skipped": self.skipped,
            "unverified": self.unverified,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        return cls(
            name=str(data["name"]),
            ok=bool(data["ok"]),
            critical=bool(data["critical"]),
            detail=str(data.get("detail", "")),
            observed=dict(data.get("observed") or {}),
            duration_ms=float(data.get("duration_ms", 0.0)),
            skipped=bool(data.get("skipped", False)),
            unverified=bool(data.get("unverified", False)),  # absent in older reports
        )


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """Every check run against one database, in a stable order.

    Attributes:
        database: the database for display (:func:`restorekit.pg.dsn.display`; no password).
        checks: the results, in the order they are listed in this module's docstring.
        started_at: when verification started (UTC).
        duration_ms: wall-clock time of the whole verification.
    """

    database: str
    checks: tuple[CheckResult, ...]
    started_at: datetime
    duration_ms: float

    @property
    def ok(self) -> bool:
        """No critical check failed (warnings and unverified checks do not count). Not the
        same as :attr:`verified`: a report can be ok with nothing compared."""
        return not self.critical_failures

    @property
    def verified(self) -> bool:
        """Ok, and no check was left unverified: the database was compared with something."""
        return self.ok and not self.unverified

    @property
    def critical_failures(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if c.critical and not c.ok)

    @property
    def warnings(self) -> tuple[CheckResult, ...]:
        """Non-critical checks that failed or were skipped (unverified ones are apart)."""
        return tuple(c for c in self.checks if not c.critical and not c.ok and not c.unverified)

    @property
    def unverified(self) -> tuple[CheckResult, ...]:
        """Checks that ran with nothing to compare with (see :attr:`CheckResult.unverified`)."""
        return tuple(c for c in self.checks if c.unverified)

    def check(self, name: str) -> CheckResult:
        """The result named ``name``.

        Raises:
            KeyError: no check of that name ran.
        """
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(name)

    def raise_for_failures(self) -> None:
        """Raise :class:`~restorekit.errors.VerificationFailed` when a critical check failed.

        Raises:
            VerificationFailed: carrying this report; its message names the failing checks.
        """
        if not self.ok:
            raise VerificationFailed(self)

    def to_markdown(self) -> str:
        """A heading line and a ``check | result | detail`` table (for artifacts and reports)."""
        verdict = "FAILED" if not self.ok else "NOT VERIFIED" if self.unverified else "PASSED"
        summary = _n(len(self.checks), "check")
        if self.critical_failures:
            summary += f", {_n(len(self.critical_failures), 'critical failure')}"
        if self.unverified:
            summary += f", {len(self.unverified)} unverified"
        if self.warnings:
            summary += f", {_n(len(self.warnings), 'warning')}"
        lines = [
            f"**Verification {verdict}** for `{self.database}` "
            f"({summary}, {self.duration_ms:.0f} ms, started {self.started_at.isoformat()})",
            "",
            "| check | result | detail |",
            "|---|---|---|",
        ]
        for c in self.checks:
            result = c.status + (" (skipped)" if c.skipped else "")
            lines.append(f"| {_md_cell(c.name)} | {result} | {_md_cell(c.detail)} |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "ok": self.ok,
            "verified": self.verified,  # derived, like ok: from_dict reads the checks
            "started_at": self.started_at.isoformat(),
            "duration_ms": self.duration_ms,
            "checks": [c.to_dict() for c in self.checks],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VerificationReport:
        return cls(
            database=str(data["database"]),
            checks=tuple(CheckResult.from_dict(c) for c in data["checks"]),
            started_at=datetime.fromisoformat(str(data["started_at"])),
            duration_ms=float(data["duration_ms"]),
        )

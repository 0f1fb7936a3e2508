"""Determine the restore point (the runbook's first checklist item) and what a restore to it
would lose: thin over the provider's find_point / loss_after (restorekit.damage)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from restorekit.damage import Damage, DamageKind, FoundBy
from restorekit.errors import CapabilityNotSupported, RestoreKitError, RestorePointError
from restorekit.models import RestorePoint
from restorekit.providers.base import loss_reporter, point_finder
from tasks._runtime import RETRY_DELAYS, TargetRef, logger, retry_if_transient, runtime


def _progress(phase: str, done: int, total: int | None) -> None:
    if total:
        logger().info("%s: %d/%d", phase, done, total)


@task(name="find-restore-point", cache_policy=NO_CACHE, retries=1,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient)
def find_restore_point(ref: TargetRef, table: str, kind: str = "deleted",
                       keys: list[list[str]] | None = None, where: str | None = None,
                       column: str | None = None, good_point: str | None = None
                       ) -> dict[str, Any]:
    """The transaction that did the damage and the point just before it (FoundPoint.as_dict).

    Raises:
        CapabilityNotSupported: the provider cannot look into its history (RDS, Supabase: no
            WAL access); the operator gives the point.
    """
    provider = runtime(ref).provider
    finder = point_finder(provider)
    if finder is None:
        raise CapabilityNotSupported(
            f"provider {provider.kind!r} gives no access to its WAL or to branches at any "
            "point, so restorekit cannot find where the damage began: give the restore point "
            "(--point <time just before the damage>); no guess is made")
    damage = Damage(table=table, kind=DamageKind(kind),
                    keys=tuple(tuple(str(v) for v in k) for k in keys or ()), where=where,
                    column=column,
                    good_point=RestorePoint.parse(good_point) if good_point else None)
    logger().info("finding where %s began", damage.describe())
    found = finder.find_point(damage, progress=_progress)
    logger().info("found: %s", found.summary())
    return found.as_dict()


@task(name="what-a-restore-would-lose", cache_policy=NO_CACHE, retries=1,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient)
def writes_after_point(ref: TargetRef, point: str) -> list[str]:
    """The plan's lines on what was committed after ``point`` (empty where the provider
    cannot tell: the plan then says so)."""
    provider = runtime(ref).provider
    reporter = loss_reporter(provider)
    if reporter is None:
        return [f"What was committed after {point} cannot be listed on {provider.kind} (no "
                "WAL access): everything written after it is lost by a restore to it."]
    try:
        loss = reporter.loss_after(RestorePoint.parse(point), progress=_progress)
    except RestoreKitError as exc:  # the plan says so; the restore itself may still be right
        if isinstance(exc, RestorePointError) and "not located" in str(exc):
            return [f"What was committed after {point} is not counted: {exc}"]
        logger().warning("could not count the writes after %s: %s", point, exc)
        return [f"What was committed after {point} could not be counted ({exc})."]
    return loss.lines()


def operator_point(point: str) -> dict[str, Any]:
    """The provenance of a point the operator gave."""
    return {"found_by": FoundBy.OPERATOR.value, "point": point}


def audit_log_point(point_before: datetime | str, source: str) -> dict[str, Any]:
    when = point_before.isoformat() if isinstance(point_before, datetime) else point_before
    return {"found_by": FoundBy.AUDIT_LOG.value, "point": when,
            "what": f"just before the first deletion recorded in {source}"}


__all__ = ["audit_log_point", "find_restore_point", "operator_point", "writes_after_point"]

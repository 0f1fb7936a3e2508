"""Project statuses: what a restore does with each one (provider-apis.md §4.4)."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from restorekit.providers.supabase.settings import SUPPORT_URL

log = logging.getLogger(__name__)

# What restore_in_place does with a project status, before the restore call (``before``) and
# while it waits for the restore (``during``); ``advice`` is what the operator must do when the
# status stops the restore. Values: provider-apis.md §4.4.
START, START_PITR, WAIT, REFUSE = "start", "start_pitr", "wait", "refuse"
DONE, UP, RESTORING, SIGN, PASSING, FAILED = "done", "up", "restoring", "sign", "passing", "failed"

_SUPPORT = (f"Only Supabase support can repair a project in this state: open a ticket at "
            f"{SUPPORT_URL} with the project ref.")


class StatusRule(NamedTuple):
    """``before``: START, START_PITR (a PITR restore starts, a backup restore is refused), WAIT
    (passing: poll until it settles) or REFUSE. ``during``: DONE (finished, once a start was
    seen), UP (up but unhealthy: keep polling), RESTORING (the restore runs), SIGN (the
    database goes down or comes up: a restore has started), PASSING (keep polling, not a sign of
    a restore) or FAILED (the project will not leave this state on its own)."""

    before: str
    during: str
    advice: str = ""


STATUS_RULES: dict[str, StatusRule] = {
    "ACTIVE_HEALTHY": StatusRule(START, DONE),
    "ACTIVE_UNHEALTHY": StatusRule(START_PITR, UP, (
        "The Supabase dashboard offers a backup restore only on an ACTIVE_HEALTHY project. "
        "Restart the project (dashboard: Project Settings > General > Restart project) and run "
        "again once it is ACTIVE_HEALTHY, or restore to a time if the project has PITR.")),
    "RESTORING": StatusRule(REFUSE, RESTORING, (
        "A restore is already running (an earlier attempt, or one started in the dashboard): do "
        "not start another. Wait until the project is ACTIVE_HEALTHY, then check its data; "
        f"contact Supabase support ({SUPPORT_URL}) if it stays RESTORING.")),
    "COMING_UP": StatusRule(WAIT, SIGN),
    "GOING_DOWN": StatusRule(WAIT, SIGN),
    "RESTARTING": StatusRule(WAIT, PASSING),
    "RESIZING": StatusRule(WAIT, PASSING),
    "UPGRADING": StatusRule(WAIT, PASSING),
    "PAUSING": StatusRule(WAIT, PASSING),
    "UNKNOWN": StatusRule(WAIT, PASSING),
    "INACTIVE": StatusRule(REFUSE, FAILED, (
        "The project is paused. A paused project cannot be restored from a backup: un-pause it "
        "first (dashboard: Restore project; or POST /v1/projects/{ref}/restore, the un-pause "
        "call, not a backup restore), wait until it is ACTIVE_HEALTHY, then run again. A "
        "project paused for more than 90 days can no longer be un-paused: download its backup "
        "from the dashboard instead.")),
    "PAUSE_FAILED": StatusRule(REFUSE, FAILED, f"A pause failed. {_SUPPORT}"),
    "RESTORE_FAILED": StatusRule(REFUSE, FAILED, (
        f"A restore (or an un-pause) failed and the project stays unavailable. {_SUPPORT}")),
    "INIT_FAILED": StatusRule(REFUSE, FAILED, (
        f"The project never finished setting up. {_SUPPORT}")),
    "REMOVED": StatusRule(REFUSE, FAILED, (
        "The project was deleted; Supabase deletes its backups with it, so nothing can be "
        "restored in place. Restore restorekit's own snapshot into a new project.")),
}
#: A status missing from the table (a newer API value): polled like UNKNOWN until the deadline.
_UNLISTED = StatusRule(WAIT, PASSING)
_warned: set[str] = set()



def _rule(status: str) -> StatusRule:
    rule = STATUS_RULES.get(status)
    if rule is None:
        level = logging.DEBUG if status in _warned else logging.WARNING
        _warned.add(status)
        log.log(level, "Supabase project status %r is not in the documented list; treated as "
                "UNKNOWN", status)
        return _UNLISTED
    return rule


class _Seen:
    """The statuses polled, in order, repeats counted: ``ACTIVE_HEALTHY x3, RESTORING x2``."""

    def __init__(self) -> None:
        self.runs: list[list[Any]] = []

    def add(self, status: str) -> bool:
        """Record one poll; True when the status changed."""
        if self.runs and self.runs[-1][0] == status:
            self.runs[-1][1] += 1
            return False
        self.runs.append([status, 1])
        return True

    def __str__(self) -> str:
        shown = [f"{status} x{count}" if count > 1 else str(status)
                 for status, count in self.runs[-8:]]
        return ", ".join((["..."] if len(self.runs) > 8 else []) + shown) or "none"

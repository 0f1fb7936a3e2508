"""The runbook's first checklist item, "Determine restore point", as the flows share it.

``restore_point = "auto"`` asks the provider to find it (a WAL scan on self-hosted, bisection
over branches on Neon) from what the operator knows about the damage; any other value is the
operator's own point. Either way the report says how the point was found, and the plan says
what a restore to it would lose (or, for row-level repair, which later writes it keeps).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from flows._common import Recorder
from restorekit.damage import AUTO, parse_keys
from restorekit.errors import ConfigError
from tasks._runtime import TargetRef
from tasks.history import find_restore_point, operator_point, writes_after_point


class DamagedRows(BaseModel):
    """What was damaged, for restore_point auto, in the scenarios that have no table and ids
    of their own (accidental-deletion uses its table and ids)."""

    damaged_table: str | None = Field(
        default=None,
        description="With restore_point auto: the table the damage hit (partial-corruption: "
        "default the only one in tables).",
    )
    damaged_ids: list[str] = Field(
        default_factory=list,
        description="With restore_point auto: primary keys of the damaged rows (a composite "
        "key as a,b), or give where. complete-failure without them: damage to the whole "
        "table (DELETE without WHERE, TRUNCATE, DROP TABLE).",
    )


def is_auto(point: str | None) -> bool:
    return (point or "").strip().lower() == AUTO


def split_keys(ids: list[str]) -> list[list[str]]:
    """``--damaged-ids 3,k13`` as the task takes keys (restorekit.damage.parse_keys)."""
    return [list(key) for key in parse_keys(ids)]


def determine_restore_point(
    rec: Recorder, ref: TargetRef, point: str, *, table: str | None, keys: list[list[str]],
    kind: str, where: str | None = None, column: str | None = None,
    good_point: str | None = None,
) -> str:
    """The point to restore to: the operator's, or the one found before the damage."""
    if not is_auto(point):
        if not rec.report.point_found:
            rec.report.point_found = operator_point(point)
        return point
    if not table:
        raise ConfigError("--point auto needs the damaged table (--damaged-table) to look for "
                          "the damage; or give the restore point")
    if not keys and not where and kind != "table":
        kind = "table"  # no rows named: DELETE without WHERE, TRUNCATE or DROP TABLE
    found: dict[str, Any] = rec.step("determine restore point", find_restore_point, ref, table,
                                     kind, keys or None, where, column, good_point)
    rec.report.point_found = found
    rec.report.notes.append(
        f"Restore point {found['point']} found by {found['found_by']}: {found.get('what')}"
        + (f" (transaction {found['xid']}, committed {found['commit_time']})"
           if found.get("xid") is not None else ""))
    return str(found["point"])


def point_line(rec: Recorder) -> list[str]:
    """The plan's line on how the point was found (nothing for the operator's own)."""
    found = rec.report.point_found
    if not found or found.get("found_by") == "operator":
        return []
    who = (f"transaction {found['xid']} committed at {found.get('commit_time')} "
           f"(commit LSN {found.get('commit_lsn')})" if found.get("xid") is not None else
           "the damage")
    return [f"Restore point {found['point']}, found by {found['found_by']}: {who}: "
            f"{found.get('what')}; the state just before it, with everything committed "
            "before it."]


def loss_lines(rec: Recorder, ref: TargetRef, point: str, *, kept: bool) -> list[str]:
    """What a restore to ``point`` would lose (scenario 1), or which later writes row-level
    repair keeps (``kept``: scenarios 2 and 3)."""
    if point.strip().lower() == "latest":
        return []
    lines: list[str] = rec.step("what a restore would lose", writes_after_point, ref, point)
    if not lines:
        return []
    text = lines[0] + (" " + "; ".join(line.strip() for line in lines[1:]) if lines[1:] else "")
    if kept:
        return [f"Kept: row-level repair rewrites only the damaged rows, so what was committed "
                f"after the point stays. {text}"]
    return [f"A restore to {point} loses what was committed after it: {text}"]


__all__ = ["DamagedRows", "determine_restore_point", "is_auto", "loss_lines", "point_line",
           "split_keys"]

"""``find-point``: the transaction that damaged the given rows, as a restore point."""

from __future__ import annotations

from typing import Annotated

import typer

from restorekit.cli._common import (
    GOOD_POINT_HELP,
    WHERE_HELP,
    ConfigOpt,
    JsonOpt,
    TargetOpt,
    _emit,
    _progress,
    _record_table,
    _runtime,
)
from restorekit.errors import CapabilityNotSupported


def find_point(
    target: TargetOpt,
    table: Annotated[str, typer.Option(
        "--table", help="The damaged table (quoted as in SQL when it needs quotes).",
        show_default=False)],
    ids: Annotated[list[str] | None, typer.Option(
        "--ids", show_default=False,
        help="A primary key of a damaged row (repeatable; a composite key as a,b).")] = None,
    where: Annotated[str | None, typer.Option(show_default=False, help=WHERE_HELP)] = None,
    changed: Annotated[bool, typer.Option(
        "--changed", help="The rows were changed, not deleted: find their first update (or "
        "delete).")] = False,
    column: Annotated[str | None, typer.Option(
        show_default=False, help="With --changed: the first update that changed this "
        "column.")] = None,
    good_point: Annotated[str | None, typer.Option(
        show_default=False, help=GOOD_POINT_HELP)] = None,
    loss: Annotated[bool, typer.Option(
        "--loss/--no-loss", help="Also list what a restore to the found point would lose "
        "(what was committed after it).")] = True,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find the restore point: the transaction that deleted or changed the given rows (no
    rows: a DELETE without WHERE, TRUNCATE or DROP TABLE of the table), from a scratch copy
    before the damage and the archived WAL (self-hosted) or bisection over branches (Neon).
    Production is not touched; the copies made are removed. Prints the point to give to
    `restorekit run ... --point`."""
    from restorekit.damage import Damage, DamageKind, parse_keys
    from restorekit.models import RestorePoint
    from restorekit.providers.base import loss_reporter, point_finder

    kind = (DamageKind.CHANGED if changed or column else
            DamageKind.DELETED if ids or where else DamageKind.TABLE)
    damage = Damage(table=table, kind=kind,
                    keys=parse_keys(ids or ()),
                    where=where, column=column,
                    good_point=RestorePoint.parse(good_point) if good_point else None)
    provider = _runtime(config, target).provider
    finder = point_finder(provider)
    if finder is None:
        raise CapabilityNotSupported(
            f"target {target!r} is on {provider.kind}, which gives no access to its WAL: "
            "restorekit cannot find the point there; read the application's logs for the "
            "time of the damage and give it as --point")
    reporter = loss_reporter(provider) if loss else None
    with _progress(as_json) as progress:
        found = finder.find_point(damage, progress=progress)
        lost = reporter.loss_after(found.point, progress=progress) if reporter else None
    data = {**found.as_dict(), "damage": damage.describe(),
            "loss": lost.as_dict() if lost else None}
    t = _record_table(f"Restore point for {damage.describe()}", data, (
        "point", "found_by", "xid", "commit_time", "commit_lsn", "what", "rows_touched",
        "copies", "scanned_bytes"))
    for line in found.evidence:
        t.add_row("evidence", line)
    for note in found.notes:
        t.add_row("note", note)
    for line in lost.lines() if lost else []:
        t.add_row("after it", line)
    _emit(data, as_json, t)

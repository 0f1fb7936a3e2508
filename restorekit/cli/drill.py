"""``restorekit drill``: the restore drill once, now."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from restorekit.cli._common import (
    ConfigOpt,
    JsonOpt,
    _config_path,
    _fail,
    _prefect_without_telemetry,
    _provider,
    _settings,
    _unless_unreachable,
    out,
)
from restorekit.cli.scenarios import _model

if TYPE_CHECKING:
    from restorekit.config import Settings


class DrillPoint(StrEnum):
    latest = "latest"
    random = "random"


def drill_options(ctx: typer.Context) -> dict[str, Any]:
    """The restore drill's flow parameters as given on ``restorekit drill``'s command line
    (the defaults are the model's; the config as an absolute path)."""
    fields = {name: value for name, value in ctx.params.items() if name != "as_json"}
    fields["targets"] = list(fields.get("targets") or [])
    fields["point"] = str(fields["point"].value if isinstance(fields["point"], DrillPoint)
                          else fields["point"])
    if fields.get("config") is not None:
        fields["config"] = str(Path(fields["config"]).absolute())
    else:
        fields.pop("config", None)
    return fields


def drill_params(fields: Mapping[str, Any]) -> Any:
    """Build the restore drill's params model (imports the flow, hence prefect)."""
    from flows.restore_drill import RestoreDrillParams

    return _model(RestoreDrillParams, fields)


def drill(
    ctx: typer.Context,
    targets: Annotated[list[str] | None, typer.Option(
        "--target", "-t", show_default=False,
        help="A target to drill (repeatable). Default: every target in the config.")] = None,
    point: Annotated[DrillPoint, typer.Option(
        help="latest: restore the latest restorable point (and compare row counts with "
        "production); random: a random point inside the restore window.")] = DrillPoint.latest,
    row_count_tolerance: Annotated[float, typer.Option(
        min=0, max=1,
        help="Allowed difference between production's and the restore's row counts of the "
        "critical tables, as a fraction of production's.")] = 0.01,
    seed: Annotated[int | None, typer.Option(
        show_default=False, help="Seed for the random point (the same seed, the same point).")
    ] = None,
    lock_wait_seconds: Annotated[float, typer.Option(
        min=0, help="How long to wait while another restorekit run holds a target before "
        "refusing.")] = 3600,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the restore drill once, now: restore each target into a scratch database, verify it,
    compare row counts with production, measure RTO and RPO against the target's tier, tear
    the scratch database down, and print the drill report. Exits non-zero when a drill fails."""
    fields = drill_options(ctx)
    settings = _settings(Path(fields["config"]) if fields.get("config") else None)
    names = fields["targets"] or sorted(settings.targets)
    for name in names:  # unknown targets, and provider settings the adapter refuses
        with _unless_unreachable():
            _provider(settings, name)
    fields.setdefault("config", _config_path(settings))
    started = datetime.now(UTC)
    with _prefect_without_telemetry():
        params = drill_params(fields)
        from flows.restore_drill import restore_drill

        failure: BaseException | None = None
        try:
            results = [r.model_dump(mode="json") for r in restore_drill(params)]
        except Exception as exc:  # noqa: BLE001 - the drills recorded their results first
            failure = exc
            results = _drills_since(settings, names, started)
    if as_json:
        out.print_json(json.dumps({"passed": failure is None and all(r["passed"] for r in results),
                                   "drills": results}, default=str))
    else:
        from rich.markdown import Markdown

        from restorekit.drill import DrillResult

        for result in results:
            out.print(Markdown(DrillResult(**result).to_markdown()))
    if failure is not None:
        _fail(failure)


def _drills_since(settings: Settings, targets: Iterable[str], since: datetime
                  ) -> list[dict[str, Any]]:
    """The drills recorded in the targets' drill history since ``since`` (a failed drill run
    raises; its results are in the history)."""
    from restorekit.drill import load_history

    return [h for name in targets for h in load_history(settings.state_dir, name)
            if datetime.fromisoformat(h["started_at"]) >= since]

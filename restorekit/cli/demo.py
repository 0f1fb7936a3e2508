"""``restorekit demo``: the embedded default, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from restorekit.cli._common import (
    console,
    out,
)


def demo(
    state_dir: Annotated[Path, typer.Option(
        help="Where the demo keeps its clusters, repository and Prefect server.",
    )] = Path(".restorekit-demo"),
    scale: Annotated[float, typer.Option(
        min=0.001, max=100, help="Sample data scale (1 = ~100k rows).",
    )] = 0.1,
    ui: Annotated[bool, typer.Option(
        "--ui/--no-ui",
        help="Start a local Prefect server so the runs can be seen in its UI (unless "
        "PREFECT_API_URL is set).",
    )] = True,
    stop: Annotated[bool, typer.Option(
        "--stop", help="Stop what an earlier demo left running, and exit.",
    )] = False,
) -> None:
    """The embedded default end to end: build production (sample schema, WAL archiving, a
    backup, the local app), then break it three ways (accidental deletion, corruption, the
    cluster destroyed) and run the flow that repairs each, printing the incident reports."""
    from restorekit.demo import run_demo, stop_demo

    if stop:
        stop_demo(state_dir.absolute(), console)
        return
    run_demo(state_dir.absolute(), scale=scale, ui=ui, console=console, out=out)

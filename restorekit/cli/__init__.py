"""The restorekit command line.

    restorekit window   --target NAME          the restore window (earliest .. latest point)
    restorekit backup   --target NAME          take a base backup now
    restorekit restore  --target NAME --to-new --point P   restore into a NEW local cluster
    restorekit snapshot --target NAME [--table T]...       logical snapshot (pg_dump)
    restorekit backups  --target NAME          list base backups
    restorekit cleanup  --target NAME          remove scratch restores left behind
    restorekit run SCENARIO --target NAME ...  run a scenario flow (complete-failure,
                                               partial-corruption, accidental-deletion)
    restorekit drill    [--target NAME]...     run the restore drill once, print its report
    restorekit watch    --target NAME          watch a target after a restore, with alerts
    restorekit demo                            the embedded default, end to end

Bad input costs no Prefect: importing prefect takes seconds and its ephemeral server more, so
``run`` and ``drill`` check every option first, with the core functions the flows call (restore
points, table and column names, times; then, read-only, the target's restore window and
backups, the live tables, ids and audit log), and refuse with one line ``error: ...`` and exit
status 2. Only then do they import the flow, build its params model and run it. Module-level
imports are what ``--help`` needs; everything else is imported where it is used.

One module per command group: ``backups`` (window, backup, backups, restore), ``find_point``,
``maintenance`` (snapshot, prune, cleanup), ``deploy`` (serve-webhook, deploy), ``run`` (with
``scenarios``: its options as flow parameters, and ``checks``: the pre-checks), ``drill``,
``watch`` and ``demo``; ``_common`` holds the typer app and what the commands share. The
commands are registered on the app here, in the order ``--help`` lists them.
"""

from __future__ import annotations

import logging
import sys

import typer

from restorekit.cli import (
    backups,
    demo,
    deploy,
    drill,
    find_point,
    maintenance,
    run,
    watch,
)
from restorekit.cli._common import REFUSALS, _error, app, console, out
from restorekit.cli.checks import check_scenario
from restorekit.cli.drill import DrillPoint, drill_options, drill_params
from restorekit.cli.scenarios import (
    COMMON_FIELDS,
    OPTION_NAMES,
    SCENARIO_FIELDS,
    SCENARIO_MODELS,
    SCENARIOS,
    aware_time,
    given_options,
    option_name,
    run_options,
    scenario_fields,
    scenario_params,
)
from restorekit.errors import RestoreKitError

__all__ = [
    "COMMON_FIELDS", "OPTION_NAMES", "REFUSALS", "SCENARIOS", "SCENARIO_FIELDS",
    "SCENARIO_MODELS", "DrillPoint", "app", "aware_time", "check_scenario", "console",
    "drill_options", "drill_params", "given_options", "main", "option_name", "out",
    "run_options", "scenario_fields", "scenario_params",
]


# The commands, in the order --help lists them.
app.command()(backups.window)
app.command()(backups.backup)
app.command()(backups.backups)
app.command()(backups.restore)
app.command("find-point")(find_point.find_point)
app.command()(maintenance.snapshot)
app.command()(maintenance.prune)
app.command()(maintenance.cleanup)
app.command("serve-webhook")(deploy.serve_webhook)
app.command()(deploy.deploy)
app.command()(run.run)
app.command()(drill.drill)
app.command()(watch.watch)
app.command()(demo.demo)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = app(sys.argv[1:] or ["--help"], standalone_mode=False)
    except RestoreKitError as exc:
        from restorekit.pg.dsn import redact

        message = redact(str(exc))
        refused = isinstance(exc, REFUSALS)
        _error(" ".join(message.split()) if refused else message)
        sys.exit(2 if refused else 1)
    except typer.TyperException as exc:  # a usage error: unknown option, bad value, ...
        _error(" ".join(exc.format_message().split()))
        sys.exit(exc.exit_code)
    except typer.Abort:
        _error("aborted")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


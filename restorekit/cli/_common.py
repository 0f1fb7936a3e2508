"""What every command shares: the typer app, the consoles, the common options, and how a
command reads the config, builds the provider, prints and fails."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from restorekit.errors import (
    CapabilityNotSupported,
    ConfigError,
    RestoreKitError,
    RestorePointError,
)

if TYPE_CHECKING:
    from rich.table import Table

    from restorekit.config import Settings
    from restorekit.runtime import TargetRuntime

app = typer.Typer(
    name="restorekit",
    help="The database restore runbook as software: backups, point-in-time restores, drills.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="restorekit.toml (default: $RESTOREKIT_CONFIG or ./restorekit.toml)"
    ),
]
TargetOpt = Annotated[str, typer.Option("--target", "-t", help="Target name from the config file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


# --where and --good-point mean the same in `find-point` and in `run --point auto`: one help.
WHERE_HELP = ("An SQL predicate that picks the damaged rows, evaluated read-only on a copy from "
              "before the damage (instead of ids).")
GOOD_POINT_HELP = ("A point surely before the damage where the search starts. Default: the "
                   "newest base backup that still has the rows (Neon: the start of the restore "
                   "window; a time).")


def _settings(config: Path | None) -> Settings:
    from restorekit.config import load_settings

    return load_settings(config)


def _provider(settings: Settings, target: str) -> Any:
    """The provider the target's config names (self-hosted, RDS, Neon, Supabase)."""
    from restorekit.providers.base import provider_from_config

    return provider_from_config(settings.target(target), settings)


def _runtime(config: Path | None, target: str) -> TargetRuntime:
    """What a command on one target acts on: the settings, the target's config and its provider
    (built when first used), the same runtime the flows' tasks build.

    Raises:
        ConfigError: the config cannot be read, or names no such target.
    """
    from restorekit.runtime import TargetRuntime

    settings = _settings(config)
    return TargetRuntime(settings=settings, config=settings.target(target))


def _table(*args: Any, **kwargs: Any) -> Table:
    from rich.table import Table

    return Table(*args, **kwargs)


def _record_table(title: str, data: Mapping[str, Any], keys: Iterable[str] | None = None) -> Table:
    """One record as a table of two columns, field and value: ``keys`` of ``data`` (default:
    all of them), a missing one shown as None."""
    table = _table(title=title, show_header=False)
    for key in data if keys is None else keys:
        table.add_row(key, str(data.get(key)))
    return table


def _progress(as_json: bool) -> Any:
    from restorekit.progress import rich_progress

    return rich_progress(console, enabled=not as_json)


def _emit(data: dict[str, Any], as_json: bool, table: Table | None = None) -> None:
    if as_json:
        out.print_json(json.dumps(data, default=str))
    elif table is not None:
        out.print(table)


def _print_report(as_json: bool, json_text: str, markdown: str) -> None:
    """A flow's report on stdout: its JSON with --json, else its Markdown rendered."""
    if as_json:
        out.print_json(json_text)
    else:
        from rich.markdown import Markdown

        out.print(Markdown(markdown))


#: What a refusal is (exit status 2): bad input, found before anything was touched.
REFUSALS = (ConfigError, RestorePointError, CapabilityNotSupported)


@contextlib.contextmanager
def _unless_unreachable() -> Iterator[None]:
    """Skip the rest of a read-only pre-check when what it reads cannot be reached."""
    import psycopg

    from restorekit.errors import PostgresError, ProviderError, RepositoryError

    try:
        yield
    except (psycopg.Error, OSError, PostgresError, ProviderError, RepositoryError) as exc:
        logging.getLogger(__name__).info("pre-check skipped, the flow will judge: %s", exc)


@contextlib.contextmanager
def _prefect_without_telemetry() -> Iterator[None]:
    """Prefect settings for a run started here: without PREFECT_API_URL Prefect starts an
    ephemeral server, which would send anonymous analytics (and, offline, log "Failed to send
    telemetry"); it runs with PREFECT_SERVER_ANALYTICS_ENABLED=false, and gets 120 s to start
    instead of Prefect's 20 (a host busy with an incident, or a CI run, took longer and the
    run failed before its first step), unless the user set either (environment or profile)."""
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        get_current_settings,
        temporary_settings,
    )

    server = get_current_settings().server
    updates: dict[Any, Any] = {}
    if "analytics_enabled" not in server.model_fields_set:
        updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
    if "startup_timeout_seconds" not in server.ephemeral.model_fields_set:
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = 120
    with temporary_settings(updates=updates):
        yield


def _config_path(settings: Settings) -> str:
    """The config the settings came from, as the absolute path the flow is given."""
    return str((settings.source_path or Path("restorekit.toml")).absolute())


def _fail(failure: BaseException) -> None:
    """Re-raise a restorekit error (main prints it); anything else is one line too, exit 1
    (the flow's log already holds its traceback)."""
    if isinstance(failure, RestoreKitError):
        raise failure
    from restorekit.pg.dsn import redact

    _error(redact(f"{type(failure).__name__}: {failure}"))
    raise typer.Exit(1)


def _error(message: str) -> None:
    # Plain text on one line: no newlines inserted into paths and URLs (the terminal wraps by
    # itself), no markup read into brackets (a restore window is printed as [a .. b]).
    sys.stderr.write(f"error: {message}\n")

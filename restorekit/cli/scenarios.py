"""The scenarios' flow parameters from ``restorekit run``'s command line (pure: no config, no
database, no Prefect until :func:`scenario_params`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from restorekit.errors import ConfigError

SCENARIOS = ("complete-failure", "partial-corruption", "accidental-deletion")

#: The parameters every scenario flow takes (flows/_common.py ScenarioParams).
COMMON_FIELDS = ("target", "restore_point", "incident_id", "dry_run", "require_approval",
                 "config", "lock_wait_seconds", "where", "good_point")

#: The parameters each scenario adds (its flow's params model; tests/unit/test_cli_parity.py
#: keeps this in step with the models).
SCENARIO_FIELDS: dict[str, tuple[str, ...]] = {
    "complete-failure": ("accept_in_place_without_snapshot", "damaged_table", "damaged_ids"),
    "partial-corruption": ("tables", "columns", "keep_rows_written_after", "full_replace",
                           "damaged_table", "damaged_ids", "damaged_column"),
    "accidental-deletion": ("table", "ids", "deleted_since", "stop_application",
                            "include_cascade"),
}

#: The params model of each scenario (module in flows/, class name).
SCENARIO_MODELS = {
    "complete-failure": ("flows.complete_failure", "CompleteFailureParams"),
    "partial-corruption": ("flows.partial_corruption", "PartialCorruptionParams"),
    "accidental-deletion": ("flows.accidental_deletion", "AccidentalDeletionParams"),
}

#: Flow parameters whose option is not spelled like the parameter (the runbook's shorter words);
#: every other parameter ``a_b`` is the option ``--a-b``.
OPTION_NAMES = {"restore_point": "--point", "stop_application": "--stop-app",
                "targets": "--target"}


def option_name(field: str) -> str:
    """The command-line option of a flow parameter."""
    return OPTION_NAMES.get(field, "--" + field.replace("_", "-"))


def given_options(ctx: typer.Context) -> dict[str, Any]:
    """The command's parameters given on the command line (not left at their defaults), by
    parameter name (the flow parameter's name)."""
    given = {}
    for name, value in ctx.params.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            given[name] = value
    return given


def aware_time(option: str, text: str) -> datetime:
    """Read an ISO-8601 time that carries a timezone (``Z`` allowed).

    Raises:
        ConfigError: unreadable, without a timezone, or out of range.
    """
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not an ISO-8601 time; give e.g. "
                          "2026-11-25T13:05:00Z") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ConfigError(f"{option} {text} has no timezone; give one, e.g. "
                          "2026-11-25T13:05:00+00:00 or ...Z")
    try:
        when.astimezone(UTC)
    except OverflowError:
        raise ConfigError(f"{option} {text} is out of range") from None
    return when


def scenario_fields(scenario: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The flow parameters of ``scenario`` from the options given on the command line.

    Pure: no config, no database, no Prefect. Times are read into tz-aware datetimes.

    Raises:
        ConfigError: an unknown scenario, an option another scenario takes, or an unreadable
            time.
    """
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    takes = COMMON_FIELDS + SCENARIO_FIELDS[scenario]
    foreign = [name for name in options if name not in takes]
    if foreign:
        name = foreign[0]
        owners = [s for s in SCENARIOS if name in SCENARIO_FIELDS[s]]
        raise ConfigError(
            f"{option_name(name)} is an option of {' and '.join(owners) or 'no scenario'}, not "
            f"of {scenario}; {scenario} takes "
            + ", ".join(option_name(f) for f in SCENARIO_FIELDS[scenario])
            + " besides the common options (see restorekit run --help)")
    fields = dict(options)
    for name in ("keep_rows_written_after", "deleted_since"):
        if fields.get(name) is not None:
            fields[name] = aware_time(option_name(name), str(fields[name]))
    for name in ("tables", "columns", "ids", "damaged_ids"):
        if name in fields:
            fields[name] = list(fields[name] or [])
    return fields


def run_options(ctx: typer.Context) -> tuple[str, dict[str, Any]]:
    """The scenario and its flow parameters as given on ``restorekit run``'s command line:
    the options given (others keep the model's defaults), always the target and
    require_approval (off unless asked for: nobody may be watching a Prefect UI), and the
    config as an absolute path."""
    options = given_options(ctx)
    scenario = str(options.pop("scenario"))
    options.pop("as_json", None)
    options.update(target=ctx.params["target"], require_approval=ctx.params["require_approval"])
    if options.get("config") is not None:
        options["config"] = str(Path(options["config"]).absolute())
    return scenario, scenario_fields(scenario, options)


def scenario_params(scenario: str, fields: Mapping[str, Any]) -> Any:
    """Build the scenario flow's params model (imports the flow, hence prefect: call it after
    the checks). A validation error is a :class:`ConfigError` naming the option, on one line."""
    import importlib

    module, name = SCENARIO_MODELS[scenario]
    return _model(getattr(importlib.import_module(module), name), fields)


def _model(cls: Any, fields: Mapping[str, Any]) -> Any:
    from pydantic import ValidationError

    try:
        return cls(**fields)
    except ValidationError as exc:
        raise ConfigError("; ".join(
            f"{option_name(str(err['loc'][0])) if err['loc'] else cls.__name__}: {err['msg']}"
            for err in exc.errors())) from None

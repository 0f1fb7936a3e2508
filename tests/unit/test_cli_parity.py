"""The CLI can say what the flows can: every field of every flow's params model has an option,
the option's value reaches the params model the CLI builds, options of another scenario are
refused, and input the CLI can judge alone is refused before any config, database or Prefect.

Nothing here runs a flow or a Prefect server: the command line is parsed by the real command
(``make_context``) and turned into params by the functions ``restorekit run``/``drill`` call.
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from restorekit import cli
from restorekit.cli import checks
from restorekit.errors import CapabilityNotSupported, ConfigError, RestorePointError
from restorekit.models import BackupInfo, RestorePoint, RestoreWindow
from restorekit.providers.base import Capability

COMMAND = typer.main.get_command(cli.app)


def command(name: str) -> Any:
    return COMMAND.commands[name]  # type: ignore[attr-defined]


def options_of(name: str) -> set[str]:
    return {opt for p in command(name).params for opt in (*p.opts, *p.secondary_opts)}


def parse(name: str, *args: str) -> typer.Context:
    """Parse a command line with the real command, without invoking it."""
    return command(name).make_context(name, list(args))


def scenario_model(scenario: str) -> type[BaseModel]:
    module, name = cli.SCENARIO_MODELS[scenario]
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def drill_model() -> type[BaseModel]:
    from flows.restore_drill import RestoreDrillParams

    return RestoreDrillParams


def backup_model() -> type[BaseModel]:
    from flows.backup import BackupParams

    return BackupParams


#: (command, params model) for every flow with a params model.
FLOWS = [
    *[pytest.param("run", lambda s=s: scenario_model(s), id=s) for s in cli.SCENARIOS],
    pytest.param("drill", drill_model, id="restore-drill"),
    pytest.param("backup", backup_model, id="backup"),
]


@pytest.mark.parametrize(("name", "model"), FLOWS)
def test_every_flow_parameter_has_an_option(name: str, model: Any) -> None:
    missing = {field: cli.option_name(field) for field in model().model_fields
               if cli.option_name(field) not in options_of(name)}
    assert not missing, f"restorekit {name} has no option for: {missing}"


def test_the_scenario_fields_are_the_models_fields() -> None:
    from flows._common import ScenarioParams

    assert set(ScenarioParams.model_fields) == set(cli.COMMON_FIELDS)
    for scenario in cli.SCENARIOS:
        fields = set(scenario_model(scenario).model_fields)
        assert fields == set(cli.COMMON_FIELDS) | set(cli.SCENARIO_FIELDS[scenario]), scenario


# -- every option reaches the params model --------------------------------------------------------

WHEN = datetime(2026, 11, 25, 13, 5, tzinfo=UTC)

#: A command line for each flow parameter, and the value the params model must then hold.
SAMPLES: dict[str, tuple[list[str], Any]] = {
    "target": (["-t", "staging"], "staging"),
    "restore_point": (["--point", "2026-11-25T13:05:00Z"], "2026-11-25T13:05:00Z"),
    "incident_id": (["--incident-id", "INC-42"], "INC-42"),
    "dry_run": (["--dry-run"], True),
    "require_approval": (["--require-approval"], True),
    "config": (["-c", "rk.toml"], str(Path("rk.toml").absolute())),
    "lock_wait_seconds": (["--lock-wait-seconds", "7.5"], 7.5),
    "tables": (["--tables", "clients", "--tables", '"Odd; Name"'], ["clients", '"Odd; Name"']),
    "columns": (["--columns", "clients.email", "--columns", "users.name"],
                ["clients.email", "users.name"]),
    "keep_rows_written_after": (["--keep-rows-written-after", "2026-11-25T13:05:00Z"], WHEN),
    "full_replace": (["--full-replace"], True),
    "table": (["--table", "orders"], "orders"),
    "ids": (["--ids", "7", "--ids", "abc"], ["7", "abc"]),
    "deleted_since": (["--deleted-since", "2026-11-25T14:05:00+01:00"], WHEN),
    "stop_application": (["--stop-app"], True),
    "include_cascade": (["--no-include-cascade"], False),
    "accept_in_place_without_snapshot": (["--accept-in-place-without-snapshot"], True),
    "where": (["--where", "org_id = 7"], "org_id = 7"),
    "good_point": (["--good-point", "backup:20261125T130000Z"], "backup:20261125T130000Z"),
    "damaged_table": (["--damaged-table", '"Org ü"'], '"Org ü"'),
    "damaged_ids": (["--damaged-ids", "3,k13", "--damaged-ids", "4,k14"], ["3,k13", "4,k14"]),
    "damaged_column": (["--damaged-column", "balance"], "balance"),
}

DRILL_SAMPLES: dict[str, tuple[list[str], Any]] = {
    "targets": (["-t", "a", "--target", "b"], ["a", "b"]),
    "point": (["--point", "random"], "random"),
    "row_count_tolerance": (["--row-count-tolerance", "0.25"], 0.25),
    "seed": (["--seed", "7"], 7),
    "config": (["-c", "rk.toml"], str(Path("rk.toml").absolute())),
    "lock_wait_seconds": (["--lock-wait-seconds", "9"], 9.0),
}

SCENARIO_CASES = [pytest.param(s, f, id=f"{s}:{f}") for s in cli.SCENARIOS
                  for f in (*cli.COMMON_FIELDS, *cli.SCENARIO_FIELDS[s])]


@pytest.mark.parametrize(("scenario", "field"), SCENARIO_CASES)
def test_a_scenario_option_reaches_the_params_model(scenario: str, field: str) -> None:
    assert field in SAMPLES, f"add a command line for the new parameter {field!r} to SAMPLES"
    args, expected = SAMPLES[field]
    base = [] if field == "target" else ["-t", "production"]
    if scenario == "partial-corruption" and field != "restore_point":
        base += ["--point", "2026-11-25T13:00:00Z"]
    name, fields = cli.run_options(parse("run", scenario, *base, *args))
    assert name == scenario
    params = cli.scenario_params(scenario, fields)
    assert getattr(params, field) == expected


def test_options_left_out_keep_the_models_defaults_but_approval_is_off() -> None:
    for scenario in cli.SCENARIOS:
        _, fields = cli.run_options(parse("run", scenario, "-t", "production"))
        params = cli.scenario_params(scenario, fields)
        defaults = scenario_model(scenario)(target="production")
        assert params.model_dump(exclude={"require_approval"}) == defaults.model_dump(
            exclude={"require_approval"}), scenario
        # A run by hand has nobody watching a Prefect UI unless asked: --require-approval.
        assert params.require_approval is False


@pytest.mark.parametrize("field", list(drill_model().model_fields))
def test_a_drill_option_reaches_the_params_model(field: str) -> None:
    assert field in DRILL_SAMPLES, f"add a command line for {field!r} to DRILL_SAMPLES"
    args, expected = DRILL_SAMPLES[field]
    params = cli.drill_params(cli.drill_options(parse("drill", *args)))
    assert getattr(params, field) == expected


def test_drill_defaults_are_the_models() -> None:
    params = cli.drill_params(cli.drill_options(parse("drill")))
    assert params == drill_model()()


@pytest.mark.parametrize(("name", "model"), FLOWS)
def test_the_help_shows_the_models_defaults(name: str, model: Any) -> None:
    """Where an option shows a default, it is the model's (require_approval excepted, above)."""
    fields = model().model_fields
    for param in command(name).params:
        field = fields.get(param.name)
        if field is None or param.default is None or param.name == "require_approval":
            continue
        default = field.default if field.default is not PydanticUndefined else None
        if field.default_factory is not None:
            default = field.default_factory()
        shown = param.default.value if hasattr(param.default, "value") else param.default
        assert shown == default, f"{name} {param.opts[0]}: {shown!r} != {default!r}"


# -- refusals the CLI makes alone -----------------------------------------------------------------

FOREIGN = [pytest.param(s, f, id=f"{f}-to-{s}") for s in cli.SCENARIOS
           for other in cli.SCENARIOS if other != s
           for f in cli.SCENARIO_FIELDS[other] if f not in cli.SCENARIO_FIELDS[s]]


@pytest.mark.parametrize(("scenario", "field"), FOREIGN)
def test_an_option_of_another_scenario_is_refused(scenario: str, field: str) -> None:
    args, _ = SAMPLES[field]
    with pytest.raises(ConfigError) as info:
        cli.run_options(parse("run", scenario, "-t", "production", *args))
    assert f"{cli.option_name(field)} is an option of" in str(info.value)
    assert f"not of {scenario}" in str(info.value)


def test_an_unknown_scenario_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown scenario 'nope'; choose one of"):
        cli.run_options(parse("run", "nope", "-t", "production"))


@pytest.mark.parametrize(("text", "says"), [
    ("2026-11-25T13:05:00", "has no timezone"),
    ("yesterday", "is not an ISO-8601 time"),
    ("0001-01-01T00:00:00+01:00", "out of range"),
])
def test_a_time_option_needs_a_readable_time_with_a_timezone(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        cli.run_options(parse("run", "accidental-deletion", "-t", "production",
                              "--deleted-since", text))


def test_a_params_model_refusal_is_one_line_naming_the_option() -> None:
    with pytest.raises(ConfigError) as info:
        cli.scenario_params("complete-failure", {"target": "production",
                                                 "lock_wait_seconds": -1})
    assert str(info.value).startswith("--lock-wait-seconds: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("scenario", "args", "error", "says"), [
    ("partial-corruption", [], ConfigError, "needs a restore point from BEFORE the corruption"),
    ("partial-corruption", ["--point", "latest"], ConfigError, "from BEFORE the corruption"),
    ("complete-failure", ["--point", "yesterday"], RestorePointError, "cannot read restore point"),
    ("complete-failure", ["--point", "2026-01-01T00:00:00"], RestorePointError, "no timezone"),
    ("complete-failure", ["--point", "xid:twelve"], RestorePointError, "xid must be a number"),
    ("partial-corruption", ["--point", "2026-11-25T13:00:00Z", "--keep-rows-written-after",
                            "2026-11-25T12:00:00Z"], ConfigError, "not after the restore point"),
    ("partial-corruption", ["--point", "2026-11-25T13:00:00Z", "--tables", "a.b.c"],
     ConfigError, "has 3 parts"),
    ("partial-corruption", ["--point", "2026-11-25T13:00:00Z", "--tables", "a", "--tables", "b",
                            "--columns", "email"], ConfigError, "names no table"),
    ("accidental-deletion", ["--table", '"unterminated'], ConfigError, "unterminated"),
    ("complete-failure", ["--point", "auto"], ConfigError, "needs --damaged-table"),
    ("partial-corruption", ["--point", "auto", "--damaged-table", "t"], ConfigError,
     "needs the corrupted rows"),
    ("partial-corruption", ["--point", "auto", "--tables", "a", "--tables", "b",
                            "--damaged-ids", "1"], ConfigError, "needs --damaged-table"),
    ("accidental-deletion", ["--point", "auto", "--ids", "1", "--where", "id = 1"], ConfigError,
     "not both"),
    ("accidental-deletion", ["--point", "auto", "--good-point", "soon"], RestorePointError,
     "cannot read restore point"),
    ("complete-failure", ["--point", "latest", "--damaged-table", "t"], ConfigError,
     "describe the damage for --point auto"),
    ("complete-failure", ["--point", "before-xid:x1"], RestorePointError, "xid must be a number"),
])
def test_input_the_cli_can_judge_alone_is_refused_before_the_config_is_read(
    scenario: str, args: list[str], error: type[Exception], says: str, tmp_path: Path,
) -> None:
    missing = tmp_path / "absent.toml"  # reading it would fail differently
    _, fields = cli.run_options(parse("run", scenario, "-t", "production", "-c", str(missing),
                                      *args))
    with pytest.raises(error, match=says):
        cli.check_scenario(scenario, fields)


def test_a_bare_column_without_tables_is_left_to_the_flow(tmp_path: Path) -> None:
    """Without --tables the flow repairs the tables its integrity check finds; whether a bare
    column names one of them is known only then."""
    _, fields = cli.run_options(parse(
        "run", "partial-corruption", "-t", "production", "-c", str(tmp_path / "absent.toml"),
        "--point", "2026-11-25T13:00:00Z", "--columns", "email"))
    with pytest.raises(ConfigError, match="absent.toml not found"):
        cli.check_scenario("partial-corruption", fields)  # got as far as reading the config


# -- the restore point against the provider (preflight's checks, without side effects) ----------


class FakeProvider:
    kind = "fake"

    def __init__(self, capabilities: set[Capability], window: RestoreWindow,
                 backups: tuple[str, ...] = ("b1",)) -> None:
        self.capabilities = frozenset(capabilities)
        self.window = window
        self.backups = backups
        self.window_reads = 0

    def restore_window(self) -> RestoreWindow:
        self.window_reads += 1
        return self.window

    def list_backups(self) -> list[BackupInfo]:
        return [BackupInfo(b, "fake", WHEN, WHEN, "0/1", "0/2") for b in self.backups]


PITR = {Capability.NEW_TARGET_RESTORE, Capability.POINT_IN_TIME}
WINDOW = RestoreWindow(earliest=datetime(2026, 11, 1, tzinfo=UTC),
                       latest=datetime(2026, 11, 25, 12, tzinfo=UTC),
                       earliest_lsn="0/1000000", latest_lsn="0/9000000")


@pytest.mark.parametrize(("point", "error", "says"), [
    ("2026-10-01T00:00:00Z", RestorePointError, "outside the restore window"),
    ("2999-01-01T00:00:00Z", RestorePointError, "in the future"),
    ("lsn:F/0", RestorePointError, "outside the archived range"),
    ("backup:nope", RestorePointError, "no backup 'nope' for target 'production'; available: b1"),
])
def test_a_point_the_window_cannot_reach_is_refused(point: str, error: type[Exception],
                                                    says: str) -> None:
    provider = FakeProvider(PITR, WINDOW)
    with pytest.raises(error, match=says):
        checks._check_point(provider, RestorePoint.parse(point), "production",
                         snapshot_copy_allowed=False)


def test_a_point_after_the_window_but_not_in_the_future_is_left_to_preflight() -> None:
    """Preflight archives the pending WAL and reads the window again: not a refusal here."""
    checks._check_point(FakeProvider(PITR, WINDOW), RestorePoint.at(datetime.now(UTC)),
                     "production", snapshot_copy_allowed=False)


def test_no_backup_at_all_is_refused_even_for_latest() -> None:
    with pytest.raises(RestorePointError, match="no backup to restore from"):
        checks._check_point(FakeProvider(PITR, RestoreWindow(None, None)), RestorePoint.latest(),
                         "production", snapshot_copy_allowed=False)


def test_a_time_on_a_provider_without_pitr_is_refused() -> None:
    provider = FakeProvider({Capability.NEW_TARGET_RESTORE}, WINDOW)
    with pytest.raises(CapabilityNotSupported, match="cannot point_in_time"):
        checks._check_point(provider, RestorePoint.parse("2026-11-20T00:00:00Z"), "production",
                         snapshot_copy_allowed=False)


def test_a_snapshot_copy_needs_a_time_and_reads_no_window() -> None:
    provider = FakeProvider({Capability.IN_PLACE_RESTORE}, WINDOW)
    with pytest.raises(ConfigError, match="give the restore point as a time"):
        checks._check_point(provider, RestorePoint.parse("lsn:0/2000000"), "production",
                         snapshot_copy_allowed=True)
    checks._check_point(provider, RestorePoint.parse("2026-10-01T00:00:00Z"), "production",
                     snapshot_copy_allowed=True)  # before the window: snapshots do not care
    assert provider.window_reads == 0


def test_a_database_that_cannot_be_reached_is_left_to_the_flow(tmp_path: Path) -> None:
    """Not bad input: the flow retries, reports and notifies (the pre-check refuses only what
    was typed or configured wrong)."""
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "restorekit.toml"
    config.write_text(f'[restorekit]\nstate_dir = "{tmp_path / "state"}"\n\n[targets.production]\n'
                      f'dsn = "host=127.0.0.1 port={port} user=postgres dbname=app"\n'
                      f'repository = "file://{tmp_path / "repo"}"\n')
    _, fields = cli.run_options(parse("run", "accidental-deletion", "-t", "production", "-c",
                                      str(config), "--ids", "abc"))
    settings = cli.check_scenario("accidental-deletion", fields)
    assert settings.source_path == config

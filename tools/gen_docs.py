"""Generate the parts of the documentation that restate the code, and check them.

Two generated blocks, each between markers in a hand-written page (the prose around them stays
hand-written):

  cli      docs/cli.md, between <!-- cli-help:begin --> and <!-- cli-help:end -->: the
           `--help` of `restorekit` and of every command, in click's plain layout
           (TYPER_USE_RICH=0) at a fixed width (COLUMNS=100), so the text does not depend on
           the terminal it was made in.
  report   README.md, between <!-- report-example:begin --> and <!-- report-example:end -->:
           an incident report rendered by restorekit.report.IncidentReport.to_markdown() from
           the step and check names the accidental-deletion flow records (the figures are an
           example; the layout and fields are report.py's own).

    .venv/bin/python tools/gen_docs.py            # rewrite both blocks
    .venv/bin/python tools/gen_docs.py --check    # exit 1 and say which block is stale

tests/unit/test_docs.py runs the --check in a subprocess (rendering needs TYPER_USE_RICH set
before typer is imported). Lives outside restorekit/ on purpose: it only reads the package.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI_PAGE = ROOT / "docs" / "cli.md"
README = ROOT / "README.md"
WIDTH = 100


def splice(text: str, name: str, body: str) -> str:
    """``text`` with the block between ``<!-- name:begin -->`` and ``<!-- name:end -->``
    replaced by ``body``. Raises ValueError when the markers are missing."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    head, sep, rest = text.partition(begin)
    old, sep2, tail = rest.partition(end)
    if not sep or not sep2:
        raise ValueError(f"no {begin} ... {end} markers")
    return f"{head}{begin}\n{body.rstrip()}\n{end}{tail}"


def render_cli() -> str:
    """The help of ``restorekit`` and of each command, as markdown sections."""
    from typer.testing import CliRunner

    from restorekit.cli import app

    runner = CliRunner()

    def help_of(*args: str) -> str:
        result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": str(WIDTH)})
        if result.exit_code != 0:
            raise RuntimeError(f"restorekit {' '.join(args)} --help exited {result.exit_code}: "
                               f"{result.output}")
        return _clean(result.output)

    top = help_of()
    parts = ["### `restorekit --help`", "", "```text", top, "```"]
    names = [line.split()[0] for line in top.split("Commands:", 1)[1].splitlines()
             if line.startswith("  ") and line.strip()]
    for name in names:
        parts += ["", f"### `restorekit {name}`", "", "```text", help_of(name), "```"]
    return "\n".join(parts) + "\n"


def _clean(help_text: str) -> str:
    return "\n".join(line.rstrip() for line in help_text.strip("\n").splitlines())


def render_report_example() -> str:
    """A scenario 3 report as ``restorekit run accidental-deletion`` prints it.

    Steps and checks are the ones flows/accidental_deletion.py records, in its order, with no
    approval (``restorekit run`` turns it off) and no stop of the application; the point is the
    audit log's (tasks.history.audit_log_point); the figures are an example.
    """
    from datetime import UTC, datetime, timedelta

    from restorekit.damage import FoundBy
    from restorekit.pg.dsn import display
    from restorekit.report import Change, CheckRow, IncidentReport, Step

    start = datetime(2026, 11, 25, 13, 20, 4, tzinfo=UTC)
    point = "2026-11-25T13:05:12.480999+00:00"
    timeline, at = [], start
    for name, seconds in [("identify deletion scope", 0.21), ("preflight", 0.64),
                          ("find stale restores", 0.02), ("restore scratch copy", 4.87),
                          ("recover rows", 0.31), ("verify integrity", 1.12),
                          ("check health", 0.05), ("smoke checks", 0.09),
                          ("drop scratch copy", 0.42), ("capture baseline", 0.18)]:
        timeline.append(Step(name=name, started_at=at, seconds=seconds))
        at += timedelta(seconds=seconds)
    report = IncidentReport(
        scenario="accidental-deletion", target="production", started_at=start,
        finished_at=at, outcome="succeeded", restore_point=point,
        point_found={"found_by": FoundBy.AUDIT_LOG.value, "point": point,
                     "what": "just before the first deletion recorded in audit_log"},
        recovered_to_time=datetime(2026, 11, 25, 13, 5, 11, 902114, tzinfo=UTC),
        recovered_to_lsn="0/5A0012F8",
        restored_database=display("host=127.0.0.1 port=54811 user=postgres dbname=app"),
        steps=timeline,
        checks=[CheckRow(name="connectivity", ok=True, critical=True),
                CheckRow(name="fk_orphans", ok=True, critical=True)],
        changes=[Change(table="users", inserted=25), Change(table="clients", inserted=61),
                 Change(table="appointments", inserted=148)],
    )
    return "```markdown\n" + report.to_markdown().rstrip() + "\n```\n"


# The option reference of docs/configuration.md: each section heading there and the model whose
# fields its table lists (module, class, fields left out because they are not keys of that
# section: a target's name is its table's name; source_path is set by the loader; the
# [restorekit] section holds Settings' state_dir, the other Settings fields are sections).
CONFIG_SECTIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "[restorekit]": ("restorekit.config", "Settings",
                     ("notify", "drill", "webhook", "targets", "tiers", "source_path")),
    "[tiers.TIER]": ("restorekit.config", "Tier", ()),
    "[notify]": ("restorekit.config", "NotifyConfig", ()),
    "[drill]": ("restorekit.config", "DrillConfig", ()),
    "[targets.NAME]": ("restorekit.config", "TargetConfig", ("name",)),
    "[targets.NAME.app]": ("restorekit.config", "AppConfig", ()),
    "[targets.NAME.connection]": ("restorekit.config", "ConnectionConfig", ()),
    "[targets.NAME.verify]": ("restorekit.config", "VerifyConfig", ()),
    "[[targets.NAME.verify.checks]]": ("restorekit.config", "CheckConfig", ()),
    "[[targets.NAME.smoke]]": ("restorekit.smoke", "SmokeCheck", ()),
    "[targets.NAME.watch]": ("restorekit.config", "WatchConfig", ()),
    "[targets.NAME.backups]": ("restorekit.config", "BackupPolicy", ()),
    "[targets.NAME.rds]": ("restorekit.providers.rds", "RdsSettings", ()),
    "[targets.NAME.neon]": ("restorekit.providers.neon", "NeonSettings", ()),
    "[targets.NAME.supabase]": ("restorekit.providers.supabase", "SupabaseSettings", ()),
    "[webhook]": ("restorekit.webhook", "WebhookConfig", ()),
    "[[webhook.rules]]": ("restorekit.webhook", "WebhookRule", ()),
}


def config_keys(section: str) -> dict[str, str]:
    """``{key as written in restorekit.toml: its default as the reference writes it}`` for one
    section of CONFIG_SECTIONS, read from the pydantic model."""
    import importlib

    module, name, skip = CONFIG_SECTIONS[section]
    model = getattr(importlib.import_module(module), name)
    keys = {}
    for field_name, field in model.model_fields.items():
        if field_name in skip:
            continue
        keys[field.alias or field_name] = toml_default(field)
    return keys


def toml_default(field: object) -> str:
    """A field's default in TOML (`"lz4"`, `30`, `[]`), ``required``, or ``-`` for none."""
    from pydantic_core import PydanticUndefined

    if field.is_required():  # type: ignore[attr-defined]
        return "required"
    value = field.get_default(call_default_factory=True)  # type: ignore[attr-defined]
    if value is None or value is PydanticUndefined:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else json.dumps(value)
    if hasattr(value, "model_fields"):  # a nested section
        return "section"
    return json.dumps(value)


BLOCKS = {
    "cli": (CLI_PAGE, "cli-help", render_cli),
    "report": (README, "report-example", render_report_example),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("blocks", nargs="*", metavar="BLOCK",
                        help=f"which blocks, of {', '.join(BLOCKS)} (default: all)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a page differs from what is generated now")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.blocks) - set(BLOCKS))
    if unknown:
        parser.error(f"unknown block(s) {', '.join(unknown)}; blocks: {', '.join(BLOCKS)}")
    stale = []
    for key in args.blocks or list(BLOCKS):
        page, marker, render = BLOCKS[key]
        text = page.read_text()
        new = splice(text, marker, render())
        if new == text:
            continue
        if args.check:
            stale.append(f"{page.relative_to(ROOT)} ({marker})")
        else:
            page.write_text(new)
            print(f"wrote {page.relative_to(ROOT)} ({marker})")
    if stale:
        print("stale, run `.venv/bin/python tools/gen_docs.py`: " + ", ".join(stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Before typer is imported: plain click help (no rich boxes, no markup read into
    # brackets such as "[backups]"), at a fixed width.
    os.environ["TYPER_USE_RICH"] = "0"
    os.environ["COLUMNS"] = str(WIDTH)
    os.environ["NO_COLOR"] = "1"
    sys.exit(main())

"""The restorekit command line, run as a real subprocess against a real native-engine target:
a local cluster archiving WAL into a file repository, configured through restorekit.toml."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fixtures.cli import CLI, cli_env
from fixtures.config import local_dsn, write_config

from restorekit.config import load_settings
from restorekit.pg.cluster import LocalCluster, free_port, switch_wal_and_wait_archived
from restorekit.pg.tools import default_os_user, make_dir
from restorekit.providers.selfhosted import SelfHostedProvider

TARGET = "app"
# Rich draws boxes around usage errors and wraps long lines; compare text without them.
_DECORATION = re.compile(r"[│╭╮╰╯─\s]+")


def flat(text: str) -> str:
    return _DECORATION.sub(" ", text).strip()


def cli(*args: str, cwd: Path, timeout: float = 120, prefect: str | None = None,
        ephemeral: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
    """``restorekit ARGS``; ``prefect``/``ephemeral``: the Prefect server a flow it runs uses
    (:func:`fixtures.cli.cli_env`); ``env``: variables on top."""
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True,
                          env=cli_env(prefect, ephemeral=ephemeral, **env), timeout=timeout,
                          check=False)


def cli_json(*args: str, cwd: Path) -> dict[str, Any]:
    result = cli(*args, "--json", cwd=cwd)
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stderr}"
    return json.loads(result.stdout)


def _entries(path: Path) -> set[Path]:
    return set(path.iterdir()) if path.exists() else set()


def wait_archived(conn: psycopg.Connection, timeout: float = 30) -> None:
    """Switch WAL and wait until the archiver has stored the segment just closed."""
    switch_wal_and_wait_archived(conn.info.dsn, timeout=timeout)

@pytest.fixture(scope="module")
def world(pg_base_dir: Path) -> Iterator[dict[str, Any]]:
    os_user = default_os_user()
    root = make_dir(pg_base_dir / f"cli-{uuid.uuid4().hex[:6]}", os_user, mode=0o755)
    repo_dir = make_dir(root / "repo", os_user, mode=0o755)
    port = free_port()
    config = write_config(root / "restorekit.toml", state=root / "state", target=TARGET,
                          engine="native", dsn=local_dsn(port),
                          repository=f"file://{repo_dir}")
    settings = load_settings(config)
    provider = SelfHostedProvider.from_config(settings.target(TARGET), settings)
    source = LocalCluster.create(root / "source", port=port,
                                 settings=provider.engine.archive_settings())
    try:
        source.start()
        with psycopg.connect(source.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
            conn.execute("INSERT INTO items SELECT g, 'old' FROM generate_series(1, 50) g")
        yield {"root": root, "config": config, "source": source, "provider": provider,
               "repo_dir": repo_dir, "restore_root": settings.restore_root / TARGET}
    finally:
        for restored in provider.list_scratch():
            provider.discard(restored)
        source.destroy()


def test_help_lists_the_commands(world) -> None:
    result = cli("--help", cwd=world["root"])
    assert result.returncode == 0, result.stderr
    for command in ("window", "backup", "backups", "restore", "snapshot", "cleanup", "run",
                    "drill"):
        assert re.search(rf"\b{command}\b", result.stdout), command


def help_text(*command: str, cwd: Path) -> str:
    """``restorekit COMMAND --help`` as plain words (wide, so no option name is cut)."""
    result = cli(*command, "--help", cwd=cwd, timeout=60, COLUMNS="250")
    assert result.returncode == 0, result.stderr
    return flat(result.stdout)


def assert_explained(text: str, options: dict[str, str]) -> None:
    """Every option is named in the help ``text``, with the words that explain it."""
    for option, words in options.items():
        assert option in text, option
        assert flat(words) in text, f"{option}: {words}"


def test_run_help_explains_every_option_in_the_runbooks_words(world) -> None:
    text = help_text("run", cwd=world["root"])
    assert_explained(text, {
        "--point": "partial-corruption needs a point BEFORE the corruption",
        "--columns": "only these are compared and rewritten",
        "--keep-rows-written-after": "When the corruption ended",
        "--tables": "A table to repair",
        "--full-replace": "Also delete rows created after the restore point",
        "--table": "The table rows were deleted from",
        "--ids": "A primary key to bring back",
        "--deleted-since": "Only deletions at or after this time",
        "--stop-app": "Stop the application first",
        "--include-cascade": "ON DELETE CASCADE",
        "--no-include-cascade": "",
        "--accept-in-place-without-snapshot": "too broken to snapshot",
        "--lock-wait-seconds": "one restore per target at a time",
        "--require-approval": "approves it in the Prefect UI",
        "--incident-id": "reuses a finished restore",
        "--dry-run": "touch nothing",
    })
    # The options are grouped by the scenario that takes them.
    for panel in ("all scenarios", "partial-corruption", "accidental-deletion",
                  "complete-failure"):
        assert panel in text, panel


def test_drill_help_names_its_options(world) -> None:
    text = help_text("drill", cwd=world["root"])
    assert "Run the restore drill once" in text
    assert_explained(text, {
        "--target": "Default: every target in the config",
        "--point": "a random point inside the restore window",
        "--row-count-tolerance": "critical tables",
        "--seed": "Seed for the random point",
        "--lock-wait-seconds": "another restorekit run holds a target",
        "--json": "",
    })


def test_drill_runs_once_prints_each_report_and_fails_when_a_drill_fails(
        world, prefect_server: str) -> None:
    """One drill that passes (``app``, after a backup) and one that cannot (``empty``: its
    repository holds no backup): both reports are printed and the exit status says failed."""
    root = world["root"]
    cli_json("backup", "-t", TARGET, "-c", str(world["config"]), "--label", "drill", cwd=root)
    empty_repo = make_dir(root / "empty-repo", default_os_user(), mode=0o755)
    config = root / "drill.toml"
    text = world["config"].read_text()
    app_target = text.split("\n\n", 1)[1]
    config.write_text(text + "\n" + app_target.replace(f"[targets.{TARGET}]", "[targets.empty]")
                      .replace(f"file://{world['repo_dir']}", f"file://{empty_repo}"))
    result = cli("drill", "-c", str(config), "-t", TARGET, "-t", "empty", "--json", cwd=root,
                 timeout=600, prefect=prefect_server)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is False
    drills = {d["target"]: d for d in report["drills"]}
    assert drills[TARGET]["passed"] is True, drills[TARGET]["failures"]
    assert drills[TARGET]["torn_down"] is True
    assert drills["empty"]["passed"] is False
    assert any("no backup to restore from" in f for f in drills["empty"]["failures"])
    # One line per failed target, naming every failure (freshness first, then the restore).
    assert any(line.startswith("error: empty: ")
               and "RestorePointError: no backup to restore from" in line
               and "there is no base backup" in line
               for line in result.stderr.splitlines()), result.stderr
    assert world["provider"].list_scratch() == []


def test_backup_window_restore_cleanup(world) -> None:
    root, cfg = world["root"], str(world["config"])
    taken = cli_json("backup", "-t", TARGET, "-c", cfg, "--label", "cli test", cwd=root)
    backup_id = taken["backup_id"]
    assert backup_id and taken["engine"] == "native" and taken["label"] == "cli test"

    listed = cli_json("backups", "-t", TARGET, "-c", cfg, cwd=root)
    assert backup_id in [b["backup_id"] for b in listed["backups"]]

    with psycopg.connect(world["source"].dsn(), autocommit=True) as conn:
        conn.execute("INSERT INTO items SELECT g, 'after' FROM generate_series(51, 60) g")
        wait_archived(conn)

    win = cli_json("window", "-t", TARGET, "-c", cfg, cwd=root)
    assert win["earliest"] and win["latest"]
    assert datetime.fromisoformat(win["earliest"]) <= datetime.fromisoformat(win["latest"])

    restored = cli_json("restore", "-t", TARGET, "-c", cfg, "--to-new", "--point", "latest",
                        cwd=root)
    home = Path(restored["handle"])
    assert home.is_dir() and home.parent == world["restore_root"]
    assert restored["backup_id"] == backup_id
    dsn = restored["dsn"]
    assert "port=" in dsn and "password" not in dsn
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (60,)
        assert conn.execute("SHOW archive_mode").fetchone() == ("off",)

    cleaned = cli_json("cleanup", "-t", TARGET, "-c", cfg, cwd=root)
    assert cleaned["removed"] == [str(home)]
    assert not home.exists()
    assert world["provider"].list_scratch() == []


def test_restore_without_to_new_is_refused(world) -> None:
    before = _entries(world["restore_root"])
    result = cli("restore", "-t", TARGET, "-c", str(world["config"]), "--point", "latest",
                 cwd=world["root"])
    assert result.returncode != 0
    assert "pass --to-new" in flat(result.stderr)
    assert _entries(world["restore_root"]) == before


def test_a_point_without_timezone_exits_2_and_creates_nothing(world) -> None:
    before = _entries(world["restore_root"])
    result = cli("restore", "-t", TARGET, "-c", str(world["config"]), "--to-new",
                 "--point", "2026-01-01T00:00:00", cwd=world["root"])
    assert result.returncode == 2, result.stderr
    assert "no timezone" in flat(result.stderr)
    assert _entries(world["restore_root"]) == before


def test_unknown_target_exits_2_naming_the_known_ones(world) -> None:
    result = cli("window", "-t", "nope", "-c", str(world["config"]), cwd=world["root"])
    assert result.returncode == 2, result.stderr
    message = flat(result.stderr)
    assert "unknown target 'nope'" in message
    assert f"known targets: {TARGET}" in message


def test_missing_config_file_exits_2(world, tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    result = cli("window", "-t", TARGET, "-c", str(missing), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    message = flat(result.stderr)
    assert "not found" in message and "absent.toml" in message
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("dsn", [
    "host=127.0.0.1 port=5432 user=postgres password=hunter2 dbname=postgres",
    "postgresql://postgres:hunter2@127.0.0.1:5432/postgres",
])
def test_a_password_in_the_config_is_refused_and_never_printed(tmp_path: Path, dsn: str) -> None:
    config = tmp_path / "restorekit.toml"
    config.write_text(
        f'[restorekit]\nstate_dir = "{tmp_path / "state"}"\n\n'
        f'[targets.{TARGET}]\ndsn = "{dsn}"\nrepository = "file://{tmp_path / "repo"}"\n'
    )
    result = cli("window", "-t", TARGET, "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "hunter2" not in result.stdout and "hunter2" not in result.stderr
    message = flat(result.stderr)
    assert "password" in message and "dsn_env" in message
    assert not (tmp_path / "state").exists()


def test_snapshot_is_verified(world) -> None:
    snap = cli_json("snapshot", "-t", TARGET, "-c", str(world["config"]), "--label", "cli",
                    cwd=world["root"])
    assert snap["verified"] is True
    assert snap["snapshot_id"]
    assert snap["objects"]
    manifest = world["repo_dir"] / "snapshots" / snap["snapshot_id"] / "snapshot.json"
    assert manifest.exists()


def test_run_passes_the_scenario_options_to_the_flow(world) -> None:
    """A dry run through the CLI, without PREFECT_API_URL: the one test of that path (every
    other command that runs a flow is given the session's server), which is what a user gets
    by default: Prefect's ephemeral server starts, the options reach the flow (its plan says
    so), and that server sent no telemetry."""
    root, cfg = world["root"], str(world["config"])
    taken = cli_json("backup", "-t", TARGET, "-c", cfg, "--label", "run options", cwd=root)
    result = cli("run", "accidental-deletion", "-t", TARGET, "-c", cfg, "--table", "items",
                 "--ids", "3", "--ids", "4", "--no-include-cascade", "--point",
                 f"backup:{taken['backup_id']}", "--deleted-since", "2026-01-01T00:00:00Z",
                 "--lock-wait-seconds", "5", "--dry-run", "--json", cwd=root, timeout=300,
                 ephemeral=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["outcome"] == "dry-run"
    plan = " ".join(report["plan"])
    assert "Re-insert 2 items row(s) from ids" in plan, plan
    assert "ON DELETE CASCADE" not in plan  # --no-include-cascade
    assert "telemetry" not in result.stderr
    assert world["provider"].list_scratch() == []

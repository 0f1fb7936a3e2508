"""`restorekit demo` end to end, as a newcomer runs it (`make demo` without the UI): the three
scenarios' incident reports, then the restore drill's report and the post-restore watch's
summary; then `restorekit demo --stop` leaves nothing running."""

from __future__ import annotations

import re
import socket
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
from fixtures.cli import CLI, cli_env

from restorekit.pg.tools import find_bin_dir

pytestmark = pytest.mark.slow


def demo(*args: str, home: Path, prefect: str,
         timeout: float) -> subprocess.CompletedProcess[str]:
    # The session's Prefect server (the demo uses the server PREFECT_API_URL names; without
    # one it starts an ephemeral server, which tests/integration/test_cli.py covers), a
    # PREFECT_HOME of its own; wide lines so that rich does not wrap the report lines asserted
    # below. PostgreSQL's default WAL segment size (16 MB), not the suite's 1 MB: the one
    # installation the suite runs as users do.
    env = cli_env(prefect, PREFECT_HOME=str(home), COLUMNS="200", RESTOREKIT_WAL_SEGMENT_MB="")
    return subprocess.run([*CLI, "demo", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_demo_runs_every_part_and_stops_cleanly(pg_base_dir: Path, prefect_server: str) -> None:
    state_dir = pg_base_dir / f"demo-{time.monotonic_ns()}"
    home = pg_base_dir / f"demo-prefect-{time.monotonic_ns()}"
    run = demo("--no-ui", "--scale", "0.005", "--state-dir", str(state_dir), home=home,
               prefect=prefect_server, timeout=600)
    output = run.stdout + run.stderr
    try:
        assert run.returncode == 0, output[-4000:]
        stdout = run.stdout
        # The three scenarios, each with its incident report, in the demo's order.
        order = [stdout.index(title) for title in (
            "Accidental Deletion: production", "Partial Corruption: production",
            "Complete Failure: production", "Restore drill: production",
            "Post-restore watch: production")]
        assert order == sorted(order), stdout
        assert stdout.count("Outcome: succeeded") == 3, stdout
        assert "App healthy on the restored database: True" in stdout
        # The drill passed on the restored production and tore its scratch cluster down.
        assert "Restore drill: production (critical) PASSED" in stdout, stdout
        assert "Scratch database torn down: yes" in stdout
        # The watch's summary (quiet on a healthy production; a breach would be printed too).
        assert "Post-restore watch: quiet:" in stdout or "Post-restore watch breached" in stdout
        assert "Post-restore watch failed" not in stdout
        assert f"restorekit demo --stop --state-dir {state_dir}" in " ".join(stdout.split())
        # Every cluster the demo runs (production, restored from its backups) has 16 MB
        # segments.
        controls = [subprocess.run([str(find_bin_dir() / "pg_controldata"), str(pgdata.parent)],
                                   capture_output=True, text=True, check=True).stdout
                    for pgdata in state_dir.glob("**/PG_VERSION")
                    if pgdata.parent.parent.name != "base"]
        assert controls, sorted(map(str, state_dir.glob("**/PG_VERSION")))
        assert all(re.search(r"Bytes per WAL segment:\s+16777216$", c, re.MULTILINE)
                   for c in controls), controls
    finally:
        stop = demo("--stop", "--state-dir", str(state_dir), home=home, prefect=prefect_server,
                    timeout=180)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "stopped the demo" in stop.stdout + stop.stderr
    # Nothing listens any more: not the app, not the restored production cluster it used.
    install = state_dir / "install"
    app_port = tomllib.loads((install / "restorekit.toml").read_text())[
        "targets"]["production"]["app"]["port"]
    url = re.search(r"^DATABASE_URL=.*@127\.0\.0\.1:(\d+)/app", (install / "app.env").read_text(),
                    re.MULTILINE)
    assert url is not None
    for port in (app_port, int(url.group(1))):
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=3):
            pass
    assert not list(state_dir.glob("**/postmaster.pid"))

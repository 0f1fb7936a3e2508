"""A production that authenticates like a real one: scram-sha-256 for every connection, the
password given to restorekit only through ``dsn_env``, and an application role that is not a
superuser (the embedded installation, ``world``, is built that way).

A password-protected production once hung ``restore --to-new`` for an hour: the restored copy
inherits the source's pg_hba.conf, restorekit connected to it without a password and took the
refusal for "not ready yet". These tests run the CLI as a subprocess against that production and
bound every command with a timeout far below the old hang; the wall time is printed, not
asserted.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fixtures.cli import CLI, cli_env
from psycopg import sql

from restorekit.demo import APP_ROLE, Installation
from restorekit.errors import PostgresAuthError
from restorekit.pg.cluster import connect
from restorekit.pg.dsn import parse

pytestmark = pytest.mark.slow


def cli(world: Installation, *args: str, env: dict[str, str] | None = None,
        timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run([*CLI, *args, "-c", str(world.config)], env=cli_env(**(env or {})),
                            capture_output=True, text=True, timeout=timeout, check=False)
    elapsed = time.monotonic() - started
    print(f"restorekit {' '.join(args)}: exit {result.returncode} in {elapsed:.2f} s")
    return result, elapsed


def secrets_of(world: Installation) -> list[str]:
    assert world.production.password and world.app_password
    return [world.production.password, world.app_password]


def test_the_world_is_production_shaped(world: Installation) -> None:
    assert world.dsn_env and world.dsn_env in os.environ
    config = world.config.read_text()
    assert not any(secret in config for secret in secrets_of(world))
    # Only references to secrets: the smoke check's test password is an ${ENV} reference.
    assert re.findall(r'password = "([^"]*)"', config) == ["${RESTOREKIT_DEMO_LOGIN_PASSWORD}"]
    hba = (world.production.data_dir / "pg_hba.conf").read_text()
    rules = [line.split() for line in hba.splitlines() if line.strip() and not line.startswith("#")]
    assert rules and all(rule[-1] == "scram-sha-256" for rule in rules), rules
    without_password = world.production.dsn("app", password="")
    with pytest.raises(PostgresAuthError, match="role 'postgres'"):
        connect(without_password, connect_timeout=5)
    with psycopg.connect(world.app_url.replace("postgresql://", "postgresql://", 1)) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'users'").fetchone()
    assert row == (False,)
    assert owner == (APP_ROLE,)


def test_backup_window_and_restore_to_new_complete_in_seconds(world: Installation) -> None:
    result, _ = cli(world, "backup", "-t", "production", "--label", "scram", "--json")
    assert result.returncode == 0, result.stderr
    result, _ = cli(world, "window", "-t", "production", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["latest"]
    result, elapsed = cli(world, "restore", "-t", "production", "--to-new", "--point", "latest",
                          "--name", "scram-copy", "--json", timeout=180)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for secret in secrets_of(world):
        assert secret not in result.stdout + result.stderr
    # restorekit reaches the copy with the source's credentials; so does the application.
    restored = world.runtime().provider.find_restored("scram-copy")
    assert restored is not None
    assert "pg_hba.conf" in restored.access and "source's own" in restored.access
    params = parse(restored.dsn.get_secret_value())
    with psycopg.connect(restored.dsn.get_secret_value()) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    app_on_copy = world.production.url("app", user=APP_ROLE, password=world.app_password or "")
    app_on_copy = app_on_copy.replace(f":{world.production.port}/", f":{params['port']}/")
    with psycopg.connect(app_on_copy) as conn:
        assert conn.execute("SELECT count(*) > 0 FROM users").fetchone() == (True,)
    assert "postgres" in data["dsn"] and "***" in data["dsn"]
    world.runtime().provider.discard(restored)


@contextmanager
def rotated_password(world: Installation, new: str) -> Iterator[None]:
    """The superuser's password changed on production after the last backup (a rotation):
    restorekit is given the new one, a copy restored from the backup still has the old one."""
    assert world.dsn_env and world.production.password
    old = world.production.password
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(new)))
    world.production.password = new
    os.environ[world.dsn_env] = world.app_dsn
    try:
        yield
    finally:
        with psycopg.connect(world.app_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(old)))
        world.production.password = old
        os.environ[world.dsn_env] = world.app_dsn


def test_a_copy_that_refuses_the_credentials_fails_at_once_naming_the_role(
        world: Installation) -> None:
    backups = json.loads(cli(world, "backups", "-t", "production", "--json")[0].stdout)
    first = backups["backups"][0]["backup_id"]
    new = "rotated-Pa55'word"
    with rotated_password(world, new):
        result, elapsed = cli(world, "restore", "-t", "production", "--to-new",
                              "--point", f"backup:{first}", "--name", "before-rotation",
                              timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "authentication failed for role 'postgres'" in " ".join(out.split()), out
    assert "pg_hba.conf" in out
    for secret in [*secrets_of(world), new]:
        assert secret not in out
    # Nothing is left behind: the refused copy was stopped and removed.
    assert world.runtime().provider.find_restored("before-rotation") is None


def test_a_wrong_password_is_refused_in_seconds_naming_the_role(world: Installation) -> None:
    assert world.dsn_env
    wrong = world.production.dsn("app", password="not-the-password")
    result, elapsed = cli(world, "backup", "-t", "production", env={world.dsn_env: wrong},
                          timeout=60)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "authentication failed for role 'postgres'" in " ".join(out.split()), out
    assert "not-the-password" not in out
    print(f"wrong password refused in {elapsed:.2f} s")


@contextmanager
def replication_asks_a_password(world: Installation) -> Iterator[None]:
    """pg_hba.conf trusts the superuser's ordinary connections from loopback (as an admin host
    may) and keeps asking a password of replication connections, which match only its
    'replication' lines."""
    hba = world.production.data_dir / "pg_hba.conf"
    original = hba.read_text()

    def reload() -> None:
        with psycopg.connect(world.production.dsn("postgres"), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")

    hba.write_text("host all postgres 127.0.0.1/32 trust\n" + original)
    reload()
    try:
        yield
    finally:
        hba.write_text(original)
        reload()


def test_a_replication_connection_that_wants_a_password_fails_on_a_terminal(
        world: Installation) -> None:
    """An operator runs `restorekit backup` on a terminal, restorekit has no password and
    its ordinary connections are trusted: pg_basebackup asked "Password:" on that terminal and
    waited (its timeout: 6 hours). It now refuses at once, naming the replication lines."""
    assert world.dsn_env
    no_password = f"host=127.0.0.1 port={world.production.port} user=postgres dbname=postgres"
    command = shlex.join([*CLI, "backup", "-t", "production", "-c", str(world.config)])
    with replication_asks_a_password(world):
        started = time.monotonic()
        # script(1) runs the command on a new pseudo-terminal, its controlling terminal.
        result = subprocess.run(["script", "-qec", command, "/dev/null"],
                                env=cli_env(**{world.dsn_env: no_password}),
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=60, check=False)
    out = " ".join(result.stdout.split())
    print(f"refused in {time.monotonic() - started:.2f} s")
    assert result.returncode != 0, out
    assert "Password:" not in out
    assert "authentication failed for role 'postgres'" in out, out
    assert "replication connections (its 'replication' lines" in out, out


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_trusting_laptop_setup_still_works(pg_base_dir: Path) -> None:
    """The loopback-trusting cluster stays one supported case (a developer's laptop)."""
    from restorekit.demo import build_installation, teardown_installation

    inst = build_installation(pg_base_dir / f"trust-{time.monotonic_ns()}", scale=0.005,
                              auth="trust")
    try:
        assert inst.dsn_env is None and 'dsn = "host=' in inst.config.read_text()
        data = _json(cli(inst, "restore", "-t", "production", "--to-new", "--point", "latest",
                         "--name", "trusting", "--json", timeout=180)[0])
        assert data["recovered_to_lsn"]
    finally:
        teardown_installation(inst)

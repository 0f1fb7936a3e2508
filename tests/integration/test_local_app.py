"""The demo app as a real process against a real database: start, break, roll back, stop, resume."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from restorekit.apps import AppPlatform, LocalProcessApp
from restorekit.errors import ConfigError, ProviderError
from restorekit.health import check_health
from restorekit.pg.cluster import free_port
from restorekit.pg.dsn import merge
from restorekit.sinks import EnvFileStore

SECRET = "s3cr3t-XYZ"


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / "app" / ".env"
    path.parent.mkdir()
    path.write_text("# demo app\nAPP_NAME=demo\n")
    return path


@pytest.fixture
def app(env_file: Path, tmp_path: Path) -> Iterator[LocalProcessApp]:
    local = LocalProcessApp(env_file, free_port(), tmp_path / "state", start_timeout=10)
    yield local
    local.stop(reason="test teardown")


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text


def test_lifecycle_against_a_real_database(pg_dsn: str, env_file: Path,
                                           app: LocalProcessApp) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id int PRIMARY KEY)")
        conn.execute("INSERT INTO users SELECT generate_series(1, 3)")
    good = merge(pg_dsn, password=SECRET)  # trust auth ignores it; the app must still hide it
    store = EnvFileStore(env_file)
    store.write(SecretStr(good))
    assert isinstance(app, AppPlatform)

    app.start()
    healthy = check_health(app.health_url(), attempts=3, interval=0.1)
    assert healthy.ok and healthy.status_code == 200 and healthy.connected is True
    assert healthy.latency_ms is not None and healthy.latency_ms > 0
    count = httpx.get(f"{app.base_url}/api/users/count", trust_env=False)
    assert count.status_code == 200 and count.json() == {"ok": True, "table": "users",
                                                         "count": 3}

    # The runbook's swap to a database that is not there: the app comes up, health says 503.
    revision = store.write(SecretStr(merge(good, dbname="restorekit_no_such_db")))
    before = app.redeploy(reason="swap to a missing database")
    assert before.running and before.deployment is not None
    broken = check_health(app.health_url(), attempts=2, interval=0.1)
    assert not broken.ok and broken.status_code == 503 and broken.connected is False
    assert "does not exist" in broken.detail
    raw = httpx.get(app.health_url(), trust_env=False)
    assert raw.status_code == 503 and raw.json()["ok"] is False

    # A closed port: connection refused, still a clean 503.
    closed_port = socket.socket()
    closed_port.bind(("127.0.0.1", 0))
    port = closed_port.getsockname()[1]
    closed_port.close()
    store.write(SecretStr(f"postgresql://app:{SECRET}@127.0.0.1:{port}/app"))
    app.redeploy(reason="swap to a closed port")
    refused = check_health(app.health_url(), attempts=1)
    assert not refused.ok and refused.status_code == 503
    users = httpx.get(f"{app.base_url}/api/users/count", trust_env=False)
    assert users.status_code == 503

    # Roll back: the store puts the good DSN back, a redeploy picks it up.
    store.restore(revision)
    app.redeploy(reason="rollback")
    assert check_health(app.health_url(), attempts=3, interval=0.1).ok

    # Stop: the process is gone and nothing answers; stopping again is a no-op.
    pid = app.running_pid()
    assert pid is not None
    stopped_from = app.stop(reason="runbook: stop application")
    assert stopped_from.running and stopped_from.deployment == str(pid)
    assert not app.is_running() and not app.pid_file.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    down = check_health(app.health_url(), attempts=1)
    assert not down.ok and down.status_code is None
    again = app.stop(reason="again")
    assert not again.running and again.deployment is None

    # Resume what ran before the stop.
    app.resume(stopped_from)
    assert app.is_running() and app.running_pid() != pid
    assert check_health(app.health_url(), attempts=3, interval=0.1).ok
    app.resume(stopped_from)  # idempotent: already running

    log_text = app.log_file.read_text()
    assert "received SIGTERM" in log_text and "demo app stopped" in log_text  # clean shutdowns
    assert_no_secret(broken.detail, refused.detail, raw.text, users.text, log_text,
                     stopped_from.model_dump_json(), before.model_dump_json())


def test_resume_refuses_a_state_of_another_app(app: LocalProcessApp, env_file: Path,
                                               tmp_path: Path) -> None:
    other = LocalProcessApp(env_file, free_port(), tmp_path / "other")
    with pytest.raises(ConfigError, match="cannot be resumed"):
        app.resume(other.stop(reason="nothing runs"))


def test_start_fails_clearly_when_the_port_is_taken(env_file: Path,
                                                    app: LocalProcessApp) -> None:
    EnvFileStore(env_file).write(SecretStr(f"postgresql://app:{SECRET}@127.0.0.1:1/app"))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", app.port))
        squatter.listen()
        with pytest.raises(ProviderError, match="Address already in use") as info:
            app.start()
    assert not app.is_running() and not app.pid_file.exists()
    assert_no_secret(str(info.value))


def test_start_fails_clearly_without_database_url(app: LocalProcessApp) -> None:
    with pytest.raises(ProviderError, match="exited with status 2") as info:
        app.start()
    assert "has no DATABASE_URL" in str(info.value)

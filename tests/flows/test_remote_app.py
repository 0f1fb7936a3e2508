"""The application on another host: scenario 1 makes the restored cluster listen where the
target's config says and hands the application a URL with the advertised host.

The other host is a network namespace this test makes (``ip netns``, a veth pair with a /30 of
its own): the application's side can reach the database host only through the veth address,
never through the database host's loopback. Production's pg_hba.conf lets the application's
role in from that network, as a real production's would; the restored copy keeps those rules.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from flows.complete_failure import CompleteFailureParams, complete_failure
from restorekit.demo import (
    APP_URL_OPTIONS,
    Installation,
    build_installation,
    teardown_installation,
)
from restorekit.health import check_health
from restorekit.pg.dsn import libpq_dsn, parse
from restorekit.sinks.envfile import EnvFileStore

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class AppHost:
    namespace: str
    db_address: str  # the database host's address on the link (what the app reaches)
    app_address: str
    network: str

    def run(self, *argv: str, env: dict[str, str] | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.namespace, *argv], env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True, timeout=10)


@pytest.fixture(scope="module")
def app_host() -> Iterator[AppHost]:
    """A second host: a network namespace joined to this one by a veth pair."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make a network namespace")
    tag = secrets.token_hex(3)
    octet = int(tag[:2], 16) % 250 + 2
    ns, here, there = f"rk-app-{tag}", f"rkh{tag}", f"rka{tag}"
    db, app = f"10.254.{octet}.1", f"10.254.{octet}.2"
    try:
        _ip("netns", "add", ns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot make a network namespace here: {exc.stderr.strip()}")
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", ns)
        _ip("addr", "add", f"{db}/30", "dev", here)
        _ip("link", "set", here, "up")
        _ip("netns", "exec", ns, "ip", "addr", "add", f"{app}/30", "dev", there)
        _ip("netns", "exec", ns, "ip", "link", "set", there, "up")
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield AppHost(namespace=ns, db_address=db, app_address=app, network=f"{db}/30")
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", here)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", ns)


@pytest.fixture(scope="module")
def remote_world(pg_base_dir: Path, app_host: AppHost) -> Iterator[Installation]:
    """An installation whose production admits the application from its own host, and whose
    restored clusters listen on the database host's link address and advertise it."""
    inst = build_installation(pg_base_dir / f"remote-{time.monotonic_ns()}", scale=0.005)
    try:
        hba = inst.production.data_dir / "pg_hba.conf"
        hba.write_text(hba.read_text()
                       + f"host all all {app_host.network} scram-sha-256\n")
        with psycopg.connect(inst.app_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
        config = inst.config.read_text()
        inst.config.write_text(config.replace(
            'tier = "critical"\n',
            f'tier = "critical"\nlisten_addresses = "{app_host.db_address}"\n', 1))
        rt = inst.runtime()
        rt.provider.create_backup("with the app host's pg_hba line")
        assert rt.app is not None
        rt.app.start()  # type: ignore[attr-defined]
        yield inst
    finally:
        teardown_installation(inst)


def _connect_from(app_host: AppHost, url: str) -> subprocess.CompletedProcess[str]:
    """Connect from the application's host with the application's own URL."""
    probe = ("import os, psycopg\n"
             "from restorekit.pg.dsn import libpq_dsn\n"
             "with psycopg.connect(libpq_dsn(os.environ['URL']), connect_timeout=5) as c:\n"
             "    print(c.execute('SELECT current_user, inet_server_addr()').fetchone())\n")
    return app_host.run(sys.executable, "-c", probe, env={**os.environ, "URL": url})


def test_the_app_on_another_host_reaches_the_restored_database(
        prefect_server: str, remote_world: Installation, app_host: AppHost) -> None:
    world = remote_world
    world.wait_archived()
    # Before: the application's host cannot reach the database host's loopback, where
    # production listens; only the link address is shared.
    assert _connect_from(app_host, world.app_url).returncode != 0
    world.production.stop(mode="immediate")

    report = complete_failure(CompleteFailureParams(
        target="production", config=str(world.config), require_approval=False,
        incident_id="inc-remote-app"))

    assert report.outcome == "succeeded"
    url = EnvFileStore(world.env_file).read().get_secret_value()
    assert url.startswith("postgresql://app:")
    params = parse(libpq_dsn(url))
    assert url.endswith(APP_URL_OPTIONS["DATABASE_URL"])  # Prisma's options kept
    assert params["host"] == app_host.db_address and params["user"] == "app"
    seen = _connect_from(app_host, url)
    assert seen.returncode == 0, seen.stderr
    assert f"('app', IPv4Address('{app_host.db_address}'))" in seen.stdout
    assert any("pg_hba.conf" in note and app_host.db_address in note for note in report.notes)
    rt = world.runtime()
    assert check_health(rt.health_url(), attempts=5).ok

"""``restorekit demo``: the embedded default, end to end, on one machine with no cloud account.

1. a "production" cluster with the runbook's sample schema (users, clients, appointments,
   audit_log) archiving its WAL into a local repository, a base backup, and the small local app
   serving ``/api/health`` from an env file;
2. Scenario 3: users deleted by mistake (their clients and appointments cascade) -> the
   accidental-deletion flow brings them back;
3. Scenario 2: rows corrupted -> the partial-corruption flow repairs them from a copy restored
   before the corruption;
4. Scenario 1: the production cluster is destroyed -> the complete-failure flow restores it into
   a new cluster, swaps the app's DATABASE_URL and redeploys it;

printing each incident report and the Prefect UI address where the runs can be seen.
:func:`build_installation` is also what the flow tests use.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypedDict

import httpx
import psycopg
from psycopg import sql
from rich.console import Console
from rich.markdown import Markdown

from restorekit import sample
from restorekit.errors import ConfigError, RestoreKitError
from restorekit.pg.cluster import LocalCluster, free_port, switch_wal_and_wait_archived
from restorekit.pg.tools import default_os_user, make_dir
from restorekit.runtime import TargetRuntime, target_runtime
from restorekit.sinks.envfile import quote_value

if TYPE_CHECKING:
    from restorekit.providers.selfhosted import SelfHostedProvider

CONFIG = """\
# Written by restorekit: the embedded default, a self-hosted cluster on this machine.
[restorekit]
state_dir = "{state}"

[targets.production]
provider = "selfhosted"
engine = "native"
{dsn_line}
repository = "file://{repo}"
tier = "critical"

[targets.production.app]
kind = "local"
env_file = "{env_file}"
port = {app_port}
{health_line}

[targets.production.connection]
kind = "envfile"
path = "{env_file}"
keys = ["DATABASE_URL", "DIRECT_URL"]   # Prisma's pooled URL and the direct one: they move together

# After the health check: the application's functions (the password from the environment).
[[targets.production.smoke]]
name = "login"
method = "POST"
path = "/api/login"
json = {{ email = "smoke-test@example.com", password = "${{RESTOREKIT_DEMO_LOGIN_PASSWORD}}" }}
expect_body_contains = '"ok": true'

[[targets.production.smoke]]
name = "users page"
path = "/api/users?limit=5"
expect_body_contains = '"users": [{{"id"'

[targets.production.verify]
critical_tables = ["users", "clients", "appointments"]
row_count_tolerance = 0.05
install_amcheck = true

[[targets.production.verify.checks]]
name = "appointments have a client"
sql = "SELECT a.id FROM appointments a LEFT JOIN clients c ON c.id = a.client_id WHERE c.id IS NULL"
expect = "zero_rows"
"""


#: The application's own role: not a superuser, owner of the app database (it runs its own
#: migrations, as a Prisma app does).
APP_ROLE = "app"
#: The app's connection strings and their Prisma query options (not libpq's: restorekit keeps
#: them in the value and leaves them out of its own connections).
#: The environment variable holding the password of the demo app's test account (the smoke
#: checks' login; restorekit.sample.SMOKE_TEST_EMAIL). One per process: every installation a
#: process builds shares it, as they share the CONFIG that names it.
LOGIN_PASSWORD_ENV = "RESTOREKIT_DEMO_LOGIN_PASSWORD"
APP_URL_OPTIONS = {"DATABASE_URL": "?schema=public&connection_limit=5&pool_timeout=10",
                   "DIRECT_URL": "?schema=public&connect_timeout=10"}


@dataclass
class Installation:
    """A production cluster, its repository, the local app and the restorekit.toml for them.

    With ``auth="scram-sha-256"`` (the default, as in production) every connection needs a
    password: restorekit's (the superuser ``postgres``) reaches it only through the environment
    variable ``dsn_env`` names; the application's role ``app`` has its own, in its
    DATABASE_URL.
    """

    root: Path
    config: Path
    production: LocalCluster
    env_file: Path
    dsn_env: str | None = None
    app_password: str | None = field(default=None, repr=False)

    @property
    def app_dsn(self) -> str:
        """restorekit's (superuser) connection to the app database."""
        return self.production.dsn("app")

    @property
    def app_url(self) -> str:
        """The application's own DATABASE_URL (its role, its password)."""
        return self.production.url("app", user=APP_ROLE, password=self.app_password or "")

    @property
    def secrets_file(self) -> Path:
        """A 0600 file holding ``dsn_env``'s value, to source before running commands by hand."""
        return self.root / "restorekit.env"

    @property
    def dsn_line(self) -> str:
        """The target's DSN line of restorekit.toml: never a password in the file."""
        if self.dsn_env:
            return f'dsn_env = "{self.dsn_env}"'
        prod = self.production
        return f'dsn = "host={prod.host} port={prod.port} user=postgres dbname=app"'

    def runtime(self) -> TargetRuntime:
        return target_runtime("production", str(self.config))

    def wait_archived(self, timeout: float = 60) -> None:
        """Close the current WAL segment and wait until the archiver stored it."""
        switch_wal_and_wait_archived(self.app_dsn, timeout=timeout)

    def clock(self) -> datetime:
        with psycopg.connect(self.app_dsn) as conn:
            row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        now: datetime = row[0]
        return now


def _selfhosted(rt: TargetRuntime) -> SelfHostedProvider:
    """The installation's provider, which the demo builds, backs up and tears down itself: a
    self-hosted one (its engine's archive settings, its restore root)."""
    from restorekit.providers.selfhosted import SelfHostedProvider

    provider = rt.provider
    if not isinstance(provider, SelfHostedProvider):
        raise ConfigError(f"the demo's target is on {provider.kind}, not selfhosted")
    return provider


class _RunOptions(TypedDict):
    """What every scenario the demo runs is given."""

    target: str
    config: str
    require_approval: bool


def login_password() -> str:
    """The test account's password: this process's ``LOGIN_PASSWORD_ENV``, made up once."""
    return os.environ.setdefault(LOGIN_PASSWORD_ENV, f"login-{secrets.token_urlsafe(12)}")


def build_installation(root: Path, *, scale: float = 0.02, health_url: str | None = None,
                       auth: Literal["scram-sha-256", "trust"] = "scram-sha-256") -> Installation:
    """Create the production cluster with sample data, archiving, a base backup and a baseline.

    ``auth="scram-sha-256"`` (production's way) sets a password on every role and puts
    restorekit's DSN into a fresh environment variable of this process (named in the config's
    ``dsn_env``; child processes inherit it); ``"trust"`` is the loopback-trusting cluster of
    a developer's laptop.
    """
    os_user = default_os_user()
    make_dir(root, os_user, mode=0o755)
    repo = make_dir(root / "repo", os_user, mode=0o755)
    scram = auth == "scram-sha-256"
    # Passwords with characters that need quoting in a URL and in key=value form.
    production = LocalCluster.create(
        root / "production", password=f"pg-{secrets.token_urlsafe(12)}'q" if scram else None)
    app_password = f"app-{secrets.token_urlsafe(12)}@:/%" if scram else None
    env_file = root / "app.env"
    config = root / "restorekit.toml"
    inst = Installation(root=root, config=config, production=production, env_file=env_file,
                        dsn_env=f"RESTOREKIT_DSN_{secrets.token_hex(4).upper()}" if scram else None,
                        app_password=app_password)
    if inst.dsn_env:
        os.environ[inst.dsn_env] = inst.app_dsn
        # For commands run by hand later, as a service's EnvironmentFile would hold it.
        fd = os.open(inst.secrets_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{inst.dsn_env}={shlex.quote(inst.app_dsn)}\n")
            handle.write(f"{LOGIN_PASSWORD_ENV}={shlex.quote(login_password())}\n")
    # Prisma's form: URLs with its own query options, the pooled one and the direct one
    # (migrations), as a Prisma app on Supabase or Neon keeps them.
    env_file.write_text(
        "# the demo app's settings\n"
        + "".join(f"{key}={quote_value(inst.app_url + query)}\n"
                  for key, query in APP_URL_OPTIONS.items()))
    env_file.chmod(0o600)
    config.write_text(CONFIG.format(
        state=root / "state", dsn_line=inst.dsn_line, repo=repo, env_file=env_file,
        app_port=free_port(),
        health_line=f'health_url = "{health_url}"' if health_url else "",
    ))
    rt = inst.runtime()
    # Commit times let the drill tell an idle database (nothing to lose) from a lagging archive.
    production.write_settings({**_selfhosted(rt).engine.archive_settings(),
                               "track_commit_timestamp": "on"})
    production.start()
    with production.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(APP_ROLE), sql.Literal(app_password)))
        conn.execute(sql.SQL("CREATE DATABASE app OWNER {}").format(sql.Identifier(APP_ROLE)))
    with psycopg.connect(inst.app_dsn, autocommit=True) as conn:
        # The tables belong to the application's role (its migrations create them; as the
        # database's owner it owns the public schema).
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(APP_ROLE)))
        sample.create_schema(conn)
        sample.generate(conn, scale=scale)
        sample.create_login_account(conn, sample.SMOKE_TEST_EMAIL, login_password())
        conn.execute("RESET ROLE")
    rt.provider.create_backup("initial")
    from restorekit import baseline as baselines
    from restorekit import integrity

    with psycopg.connect(inst.app_dsn) as conn:
        baseline = integrity.capture_baseline(conn, list(rt.config.verify.critical_tables))
    baselines.save_baseline(baseline, target=rt.name, state_dir=rt.settings.state_dir,
                            repository=baselines.target_repository(rt.config.repository))
    return inst


def teardown_installation(inst: Installation) -> None:
    """Stop the app and every cluster the installation created."""
    rt = inst.runtime()
    if rt.app is not None:
        with contextlib.suppress(RestoreKitError):
            rt.app.stop(reason="teardown")
    root = _selfhosted(rt).restore_root
    if root.exists():
        for home in root.iterdir():
            LocalCluster(data_dir=home / "data", port=0, os_user=default_os_user()).destroy()
    inst.production.destroy()


# -- the Prefect server the demo's runs are recorded in --------------------------------------------


def start_prefect_server(state_dir: Path, console: Console) -> tuple[str, int]:
    """Start `prefect server start` in the background (SQLite under state_dir) and wait until
    its API answers; returns (UI URL, pid)."""
    port = free_port()
    home = state_dir / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"}
    log = (state_dir / "prefect-server.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    (state_dir / "prefect-server.pid").write_text(str(proc.pid))
    url = f"http://127.0.0.1:{port}"
    console.print(f"[bold]Starting a Prefect server[/] at {url} (log: {log.name})")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RestoreKitError(f"the Prefect server exited; see {log.name}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return url, proc.pid
        time.sleep(0.5)
    raise RestoreKitError(f"the Prefect server did not answer within 90 s; see {log.name}")


def stop_demo(state_dir: Path, console: Console) -> None:
    """Stop what a previous `restorekit demo` left running (Prefect server, app, clusters)."""
    pid_file = state_dir / "prefect-server.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        pid_file.unlink()
    config = state_dir / "install" / "restorekit.toml"
    secrets_file = state_dir / "install" / "restorekit.env"
    if secrets_file.exists():
        # restorekit's DSN was in the demo process's environment only: a later `--stop` (a
        # new process) reads it back from the 0600 file the demo wrote for that.
        for line in secrets_file.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip():
                os.environ.setdefault(key.strip(), shlex.split(value)[0] if value else "")
    if config.exists():
        inst = Installation(root=state_dir / "install", config=config,
                            production=LocalCluster(data_dir=state_dir / "install" / "production",
                                                    port=0),
                            env_file=state_dir / "install" / "app.env")
        teardown_installation(inst)
    console.print(f"stopped the demo in {state_dir}")


# -- the demo --------------------------------------------------------------------------------------


class _Report(Protocol):
    """What the demo prints: incident, drill and watch reports."""

    def to_markdown(self) -> str: ...


def _show(out: Console, report: _Report) -> None:
    out.print(Markdown(report.to_markdown()))


#: The demo's post-restore watch: a few samples, not the half hour a real one takes.
DEMO_WATCH_MINUTES = 0.1
DEMO_WATCH_INTERVAL = 1.0


def _drill(inst: Installation, out: Console) -> None:
    """Run the restore-drill flow once and print its report; a failed drill is printed, not
    raised (the demo goes on to the watch)."""
    from flows.restore_drill import RestoreDrillParams, restore_drill
    from restorekit import drill
    from restorekit.pg.dsn import redact

    try:
        results = restore_drill(RestoreDrillParams(targets=["production"],
                                                   config=str(inst.config)))
    except Exception as exc:  # noqa: BLE001 - the demo shows a failed drill, too
        history = drill.load_history(inst.runtime().settings.state_dir, "production")
        if history:
            _show(out, drill.DrillResult.model_validate(history[-1]))
        out.print(f"[bold red]Restore drill failed[/]: {redact(str(exc))}")
        return
    for result in results:
        _show(out, result)


def _watch(inst: Installation, out: Console) -> None:
    """Run the post-restore-watch flow for a short window and print its summary; a breach is
    printed, not raised."""
    from flows.post_restore_watch import PostRestoreWatchParams, post_restore_watch
    from restorekit.pg.dsn import redact
    from restorekit.watch import WatchBreached

    params = PostRestoreWatchParams(target="production", config=str(inst.config),
                                    window_minutes=DEMO_WATCH_MINUTES,
                                    interval_seconds=DEMO_WATCH_INTERVAL, started_by="the demo")
    try:
        report = post_restore_watch(params)
    except WatchBreached as exc:
        _show(out, exc.report)
        out.print(f"[bold red]Post-restore watch breached[/]: {exc.report.summary()}")
        return
    except Exception as exc:  # noqa: BLE001 - the demo goes on
        out.print(f"[bold red]Post-restore watch failed[/]: {redact(str(exc))}")
        return
    _show(out, report)
    out.print(f"[bold green]Post-restore watch[/]: {report.summary()}")


def run_demo(state_dir: Path, *, scale: float, ui: bool, console: Console, out: Console) -> None:
    if state_dir.exists():
        stop_demo(state_dir, console)
        shutil.rmtree(state_dir)
    make_dir(state_dir, default_os_user(), mode=0o755)
    api_url = os.environ.get("PREFECT_API_URL")
    if ui and not api_url:
        ui_url, _ = start_prefect_server(state_dir, console)
        api_url = f"{ui_url}/api"
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    # Without a server, Prefect starts an ephemeral one (it inherits these settings): like the
    # --ui server, it sends no telemetry (offline it would log "Failed to send telemetry").
    # On a first run it creates its database first, which takes longer than Prefect's 20 s.
    updates = {PREFECT_API_URL: api_url} if api_url else {
        PREFECT_SERVER_ANALYTICS_ENABLED: False,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 120}
    with temporary_settings(updates=updates):
        _scenarios(state_dir, scale=scale, console=console, out=out,
                   ui_url=api_url.removesuffix("/api") if api_url else None)


def _scenarios(state_dir: Path, *, scale: float, console: Console, out: Console,
               ui_url: str | None) -> None:
    from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
    from flows.complete_failure import CompleteFailureParams, complete_failure
    from flows.partial_corruption import PartialCorruptionParams, partial_corruption

    console.print(f"[bold]Building production[/]: sample data at scale {scale}, WAL archiving, "
                  "a base backup, the local app")
    inst = build_installation(state_dir / "install", scale=scale)
    rt = inst.runtime()
    from restorekit.apps.local import LocalProcessApp

    assert isinstance(rt.app, LocalProcessApp)  # the installation's config says app kind local
    rt.app.start()
    console.print(f"  app: {rt.app.describe()}   config: {inst.config}")
    common = _RunOptions(target="production", config=str(inst.config), require_approval=False)

    console.rule("Scenario 3: accidental deletion")
    with psycopg.connect(inst.app_dsn, autocommit=True) as conn:
        victims = [r[0] for r in conn.execute("SELECT id FROM users ORDER BY id LIMIT 25")]
        conn.execute("DELETE FROM users WHERE id = ANY(%s)", (victims,))
        conn.execute(
            "INSERT INTO users (name, email) VALUES ('signed up later', 'later@example.com')"
        )
    console.print(f"[red]Deleted {len(victims)} users[/] (their clients and appointments "
                  "cascaded); then a new user signed up")
    inst.wait_archived()
    _show(out, accidental_deletion(AccidentalDeletionParams(**common, incident_id="demo-deletion")))

    console.rule("Scenario 2: partial data corruption")
    time.sleep(0.2)
    point = inst.clock()
    time.sleep(0.2)
    with psycopg.connect(inst.app_dsn, autocommit=True) as conn:
        conn.execute("UPDATE clients SET email = 'corrupted' WHERE id % 40 = 0")
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(
                "DELETE FROM users WHERE id IN (SELECT id FROM users ORDER BY id DESC LIMIT 3)"
            )
        conn.execute("INSERT INTO users (name, email) VALUES ('newer', 'newer@example.com')")
    console.print("[red]Corrupted[/] client emails and deleted 3 users behind the foreign keys' "
                  f"back; the point before: {point.isoformat()}")
    inst.wait_archived()
    _show(out, partial_corruption(PartialCorruptionParams(
        **common, restore_point=point.isoformat(), incident_id="demo-corruption")))

    console.rule("Scenario 1: complete database failure")
    inst.wait_archived()
    inst.production.stop(mode="immediate")
    shutil.rmtree(inst.production.data_dir)
    console.print(f"[red]Destroyed the production cluster[/] ({inst.production.data_dir})")
    _show(out, complete_failure(CompleteFailureParams(**common, incident_id="demo-failure")))
    from restorekit.health import check_health

    health = check_health(rt.health_url() or "", attempts=10)
    out.print(f"[bold green]App healthy on the restored database[/]: {health.ok}, "
              f"latency {health.latency_ms} ms")

    console.rule("Restore drill")
    console.print("The weekly drill: restore the latest point into a scratch cluster, verify "
                  "it, compare it with production, measure RTO and RPO, tear it down")
    _drill(inst, out)

    console.rule("Post-restore watch")
    console.print(f"Watching the restored production for {DEMO_WATCH_MINUTES * 60:.0f} s "
                  f"(a real watch: 30 min) every {DEMO_WATCH_INTERVAL:g} s: health, database "
                  "latency, row counts, foreign keys")
    _watch(inst, out)
    if ui_url:
        out.print(f"\n[bold]Prefect UI[/]: {ui_url}  (flow runs, task timelines, report artifacts)")
    if inst.dsn_env:
        out.print(f"restorekit's password is only in {inst.secrets_file} (0600); to run commands "
                  f"by hand: set -a; . {inst.secrets_file}; set +a; restorekit window -t "
                  f"production -c {inst.config}")
    out.print(f"Left running: the app and the restored cluster. Stop everything with: "
              f"restorekit demo --stop --state-dir {state_dir}")

"""Passwords and tokens never appear in logs, Prefect parameters, artifacts, states, results,
exceptions, notifications, the CLI's output or the JSON reports.

Every secret is a recognisable random canary: the password of restorekit's role (a superuser
with replication, given to restorekit only through the target's ``dsn_env`` variable), the
password of the application's own role (in its DATABASE_URL; the production cluster demands
scram-sha-256 of every role and connection, replication included, so both are really used: by
psycopg, by pg_basebackup through PGPASSWORD, by the application), the Neon API key, the Vercel
token, the Slack-compatible notification URL and the PagerDuty signing secret. Then everything
runs against the session's Prefect server (``prefect_server``: its SQLite file is read
afterwards), with every task result persisted (``PREFECT_RESULTS_PERSIST_BY_DEFAULT``) into a
storage directory of our own:

* the CLI as subprocesses: window, backups, backup, snapshot, restore --to-new, cleanup,
  run accidental-deletion --dry-run, and two failing commands (partial-corruption at "latest";
  a DSN that does not parse);
* the flows in-process: backup, restore-drill (passing, and failing with a notification),
  accidental-deletion, partial-corruption, a failing accidental-deletion (a role that does not
  exist, the canary password in its DSN), complete-failure with the app and DATABASE_URL on
  (fake) Vercel; on the fake Neon API: accidental-deletion and the drill;
* a signed PagerDuty delivery that creates a flow run through the webhook.

Then every canary is searched (raw, URL-quoted, inside base64) in: the log records and this
process's stdout/stderr (fds 1 and 2, so the Prefect console and child processes too), the
exceptions (str, repr, traceback), the reports and results the flows returned, the
notifications received, the CLI's stdout/stderr, every file under the installations (state
dirs: reports, drill history, baselines, restores; repository: base backups, WAL, snapshots;
the clusters' logs), every row of every table of the Prefect database, and the result storage.

Excluded, because they ARE the secret stores: the env files holding DATABASE_URL (the
application's configuration; they are also the positive control: the canaries are found there)
and the env-file store's rollback copies beside them (``.app.env.restorekit-*.bak``, 0600).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fixtures.cli import CLI, cli_env
from psycopg import sql
from reliability._secrets import (
    Haystack,
    Tally,
    captured_fds,
    files_under,
    hits,
    recording_logs,
    sqlite_rows,
)

from restorekit.demo import APP_ROLE, APP_URL_OPTIONS
from restorekit.sinks.envfile import quote_value

pytestmark = pytest.mark.slow

ROLE = "rk_secret"
SLACK_ENV = "RK_SECRETS_SLACK"
VERCEL_TOKEN_ENV = "RK_SECRETS_VERCEL_TOKEN"


def canary(kind: str) -> str:
    return f"{kind}-CANARY-{uuid.uuid4().hex}"


def app_env(url: str) -> str:
    """An env file holding ``url`` in every key of the app's connection, in Prisma's form (as
    restorekit.demo writes it): the config's ``keys`` move together, none may be missing."""
    return "".join(f"{key}={quote_value(url + query)}\n" for key, query in APP_URL_OPTIONS.items())


@dataclass
class Recorded:
    canaries: dict[str, str]
    tally: Tally = field(default_factory=Tally)
    stacks: list[tuple[str, Haystack]] = field(default_factory=list)  # (source, haystack)
    flow_runs: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    cli_runs: list[tuple[list[str], int]] = field(default_factory=list)
    notifications: list[str] = field(default_factory=list)
    secret_stores: list[Path] = field(default_factory=list)
    database: Path | None = None
    storage: Path | None = None
    roots: list[Path] = field(default_factory=list)

    def add(self, source: str, where: str, data: bytes | str) -> None:
        blob = data.encode() if isinstance(data, str) else data
        self.stacks.append((source, Haystack(where, blob)))

    def found(self, source: str) -> list[str]:
        result = []
        for src, stack in self.stacks:
            if src == source:
                self.tally.add(src, stack)
                result.extend(hits(stack, self.canaries))
        return result


# ----------------------------------------------------------------------------- the set-up


class _Receiver(BaseHTTPRequestHandler):
    received: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(body.decode())  # (the path itself is the secret URL)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def canary_passwords(world: Any, password: str, app_password: str) -> None:
    """Make the canaries the database passwords: restorekit's role (created here, a superuser
    with replication as the target's role is) gets ``password``, the application's own role
    ``app_password``. The production cluster already demands scram-sha-256 of every role
    (replication included): neither connects without its password."""
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER REPLICATION PASSWORD {}").format(
            sql.Identifier(ROLE), sql.Literal(password)))
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(APP_ROLE), sql.Literal(app_password)))
    for user in (ROLE, APP_ROLE):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(world.production.dsn("app", user=user)).close()
    for user, secret in ((ROLE, password), (APP_ROLE, app_password)):
        psycopg.connect(world.production.dsn("app", user=user, password=secret)).close()


def cli(recorded: Recorded, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True,
                            timeout=600, check=False)
    recorded.cli_runs.append((list(args), result.returncode))
    recorded.add("cli", f"restorekit {' '.join(args[:1])} stdout", result.stdout)
    recorded.add("cli", f"restorekit {' '.join(args[:1])} stderr", result.stderr)
    return result


def drain_prefect() -> None:
    """Flush Prefect's log and event workers, so every log line is in the database."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        for result in (APILogWorker.drain_all(), EventsWorker.drain_all()):
            if inspect.isawaitable(result):
                await result

    run_coro_as_sync(drain())


@pytest.fixture(scope="module")
def recorded(prefect_server: str, world: Any, pg_base_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    from fakes.neon_server import build_neon_world, teardown_neon_world
    from prefect.settings import (
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_RESULTS_PERSIST_BY_DEFAULT,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        temporary_settings,
    )

    rec = Recorded(canaries={
        "db password": canary("pw"),
        "app db password": canary("apppw"),
        "vercel token": canary("vercel"),
        "slack url": canary("slack"),
        "pagerduty secret": canary("whsec"),
    })
    tmp = tmp_path_factory.mktemp("secrets")
    storage = tmp / "results"
    rec.storage = storage
    rec.database = Path(re.sub(r"^sqlite\+aiosqlite:///", "",
                               str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value())))
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    password = rec.canaries["db password"]
    canary_passwords(world, password, rec.canaries["app db password"])
    # restorekit's DSN reaches it only through the variable the config's dsn_env names (the
    # world's own variable, now holding the canary role's URL); the file never holds a password.
    secret_dsn = world.production.url("app", user=ROLE, password=password)
    config = world.config
    original = text = config.read_text()
    assert world.dsn_env and f'dsn_env = "{world.dsn_env}"' in text
    assert world.production.password not in text
    text = text.replace("[targets.production]", f'[notify]\nwebhook_url_env = "{SLACK_ENV}"\n\n'
                        "[targets.production]", 1)
    config.write_text(text)
    # Both keys of the app's connection (Prisma's pooled DATABASE_URL and its DIRECT_URL, as
    # the world writes them), each with the canary password.
    world.env_file.write_text(app_env(world.production.url(
        "app", user=APP_ROLE, password=rec.canaries["app db password"])))
    rec.secret_stores.append(world.env_file)
    env_vars = {world.dsn_env: secret_dsn,
                SLACK_ENV: (f"http://127.0.0.1:{receiver.server_port}/hooks/"
                            f"{rec.canaries['slack url']}")}
    saved_env = {k: os.environ.get(k) for k in env_vars}
    os.environ.update(env_vars)
    rt = world.runtime()
    rt.app.redeploy(reason="the canary password")
    rec.roots.append(world.root)
    neon = None
    try:
        with recording_logs() as logs, captured_fds() as out, temporary_settings({
            PREFECT_LOCAL_STORAGE_PATH: storage, PREFECT_RESULTS_PERSIST_BY_DEFAULT: True,
        }):
            _run_cli(rec, world, prefect_server, storage)
            _run_flows(rec, world, tmp)
            _deliver_webhook(rec, world)
            neon = build_neon_world(pg_base_dir / f"secrets-neon-{uuid.uuid4().hex[:6]}")
            rec.canaries["neon api key"] = neon.api_key
            rec.roots.append(neon.installation.root)
            _run_neon(rec, neon)
            _run_complete_failure_on_vercel(rec, world)
            drain_prefect()
        rec.add("logs", "log records", "\n".join(logs.lines))
        rec.add("logs", "stdout/stderr (fds 1, 2)", out.read_bytes())
        out.unlink()
        rec.notifications = list(_Receiver.received)
        rec.add("notifications", "notifications received", "\n".join(_Receiver.received))
        yield rec
    finally:
        receiver.shutdown()
        config.write_text(original)  # world's teardown reads it after the variables are gone
        if neon is not None:
            teardown_neon_world(neon)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _flow(rec: Recorded, name: str, fn: Callable[[], Any], *, fails: bool = False) -> Any:
    rec.flow_runs.append(name)
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - recorded, then checked
        if not fails:
            raise
        rec.failures.append(f"{name}: {type(exc).__name__}")
        text = "".join(traceback.format_exception(exc))
        rec.add("exceptions", f"{name} exception", f"{exc}\n{exc!r}\n{text}")
        report = getattr(exc, "report", None)
        if report is not None:
            rec.add("results", f"{name} exception report", repr(report))
        return exc
    assert not fails, f"{name} was expected to fail"
    items = result if isinstance(result, list) else [result]
    for item in items:
        if hasattr(item, "to_json_dict"):
            rec.add("results", f"{name} report json", json.dumps(item.to_json_dict(), default=str))
            rec.add("results", f"{name} report markdown", item.to_markdown())
        elif hasattr(item, "model_dump_json"):
            rec.add("results", f"{name} result", item.model_dump_json())
        rec.add("results", f"{name} repr", repr(item))
    return result


def _run_cli(rec: Recorded, world: Any, api_url: str, storage: Path) -> None:
    env = cli_env(api_url, PREFECT_LOCAL_STORAGE_PATH=str(storage),
                  PREFECT_RESULTS_PERSIST_BY_DEFAULT="true",
                  PREFECT_LOGGING_EXTRA_LOGGERS="restorekit", PREFECT_LOGGING_LEVEL="DEBUG")
    cfg = ["-c", str(world.config), "-t", "production"]
    point = world.clock().isoformat()
    world.wait_archived()
    for args in (["window", *cfg, "--json"], ["window", *cfg], ["backups", *cfg, "--json"],
                 ["backup", *cfg, "--label", "secrets", "--json"],
                 ["snapshot", *cfg, "--table", "users", "--json"],
                 ["restore", *cfg, "--to-new", "--point", "latest", "--name", "cli-secrets",
                  "--json"],
                 ["restore", *cfg, "--to-new", "--point", "latest", "--name", "cli-secrets-2"],
                 ["cleanup", *cfg, "--json"],
                 ["run", "accidental-deletion", *cfg, "--ids", "1", "--point", point,
                  "--dry-run", "--json"],
                 ["run", "accidental-deletion", *cfg, "--ids", "1", "--point", point,
                  "--dry-run"]):
        result = cli(rec, env, *args)
        assert result.returncode == 0, f"{args}: {result.stderr[-2000:]}"
    failing = cli(rec, env, "run", "partial-corruption", *cfg, "--json")
    assert failing.returncode != 0
    broken = dict(env, **{world.dsn_env: env[world.dsn_env].replace("/app", ":notaport/app")})
    assert broken[world.dsn_env] != env[world.dsn_env]
    result = subprocess.run([*CLI, "window", *cfg], env=broken, capture_output=True, text=True,
                            timeout=300, check=False)
    rec.cli_runs.append((["window (broken DSN)"], result.returncode))
    rec.add("cli", "window with a broken DSN", result.stdout + result.stderr)
    assert result.returncode != 0


def _run_flows(rec: Recorded, world: Any, tmp: Path) -> None:
    from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
    from flows.backup import BackupParams, backup
    from flows.partial_corruption import PartialCorruptionParams, partial_corruption
    from flows.restore_drill import RestoreDrillParams, restore_drill

    cfg = str(world.config)
    _flow(rec, "backup", lambda: backup(BackupParams(target="production", config=cfg,
                                                     label="secrets")))
    world.wait_archived()
    (drill,) = _flow(rec, "restore-drill", lambda: restore_drill(RestoreDrillParams(config=cfg)))
    assert drill.passed, drill.failures
    failing_cfg = tmp / "failing-drill.toml"
    failing_cfg.write_text(world.config.read_text() + '\n[[targets.production.verify.checks]]\n'
                           'name = "impossible"\nsql = "SELECT 1"\nexpect = "zero_rows"\n')
    _flow(rec, "restore-drill (failing)",
          lambda: restore_drill(RestoreDrillParams(config=str(failing_cfg))), fails=True)

    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        time.sleep(0.1)
        conn.execute("DELETE FROM users WHERE id IN (SELECT id FROM users WHERE id IN "
                     "(SELECT user_id FROM appointments) ORDER BY id LIMIT 3)")
        point = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(0.1)
        conn.execute("UPDATE clients SET email = 'corrupted' WHERE id % 60 = 0")
    world.wait_archived()
    report = _flow(rec, "accidental-deletion", lambda: accidental_deletion(
        AccidentalDeletionParams(target="production", config=cfg, require_approval=False,
                                 incident_id="secrets-ad")))
    assert report.outcome == "succeeded", report.error
    report = _flow(rec, "partial-corruption", lambda: partial_corruption(PartialCorruptionParams(
        target="production", config=cfg, restore_point=point.isoformat(),
        require_approval=False, incident_id="secrets-pc")))
    assert report.outcome == "succeeded", report.error
    # A role that does not exist, with the canary password in its DSN.
    wrong_env = tmp / "wrong.env"
    wrong_env.write_text(app_env(f"postgresql://no_such_role:{rec.canaries['db password']}"
                                 f"@127.0.0.1:{world.production.port}/app"))
    rec.secret_stores.append(wrong_env)
    wrong_cfg = tmp / "wrong.toml"
    wrong_cfg.write_text(world.config.read_text().replace(
        f'path = "{world.env_file}"', f'path = "{wrong_env}"'))
    _flow(rec, "accidental-deletion (failing)", lambda: accidental_deletion(
        AccidentalDeletionParams(target="production", config=str(wrong_cfg),
                                 require_approval=False, incident_id="secrets-fail")),
          fails=True)


def _deliver_webhook(rec: Recorded, world: Any) -> None:
    import hashlib
    import hmac
    import warnings
    from datetime import UTC, datetime

    from prefect import get_client

    from flows.partial_corruption import partial_corruption
    from restorekit.webhook import SIGNATURE_HEADER, WebhookConfig, create_app

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`",
                                UserWarning)
        from starlette.testclient import TestClient

    from prefect.settings import PREFECT_API_URL

    name = f"secrets-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        client.create_deployment(
            flow_id=client.create_flow(partial_corruption), name=name,
            parameters={"params": {"target": "production", "config": str(world.config)}},
            parameter_openapi_schema=partial_corruption.parameters.model_dump_for_openapi())
    config = WebhookConfig.model_validate({
        "secret_env": "RK_SECRETS_PD", "prefect_api_url": str(PREFECT_API_URL.value()),
        "prefect_timeout_seconds": 10,
        "rules": [{"deployment": f"partial-corruption/{name}",
                   "incident_parameter": "params.incident_id"}]})
    secret = rec.canaries["pagerduty secret"]
    body = json.dumps({"event": {
        "id": "01SECRETS" + uuid.uuid4().hex[:10].upper(), "event_type": "incident.triggered",
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": {"id": "QSECRET", "type": "incident", "title": "db down",
                 "service": {"id": "P1", "summary": "db"}}}}).encode()
    signature = "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    rec.canaries["pagerduty signature"] = signature[3:]
    app = create_app(config, environ={"RK_SECRETS_PD": secret})
    with TestClient(app) as client:
        for sig in (signature, "v1=" + "0" * 64, None):
            headers = {"Content-Type": "application/json"}
            if sig:
                headers[SIGNATURE_HEADER] = sig
            response = client.post("/webhooks/pagerduty", content=body, headers=headers)
            rec.add("results", "webhook response", f"{response.status_code} "
                    f"{dict(response.headers)} {response.text}")
    rec.flow_runs.append("partial-corruption (created by the webhook, Scheduled)")


def _run_neon(rec: Recorded, neon: Any) -> None:
    from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
    from flows.restore_drill import RestoreDrillParams, restore_drill

    with psycopg.connect(neon.app_dsn, autocommit=True) as conn:
        time.sleep(0.1)
        conn.execute("DELETE FROM users WHERE id IN (SELECT id FROM users ORDER BY id LIMIT 2)")
    report = _flow(rec, "accidental-deletion (neon)", lambda: accidental_deletion(
        AccidentalDeletionParams(target="production", config=str(neon.config),
                                 require_approval=False, incident_id="secrets-neon")))
    assert report.outcome == "succeeded", report.error
    (drill,) = _flow(rec, "restore-drill (neon)",
                     lambda: restore_drill(RestoreDrillParams(config=str(neon.config))))
    assert drill.passed, drill.failures
    neon.fake.wait_idle()


def _run_complete_failure_on_vercel(rec: Recorded, world: Any) -> None:
    from fakes.vercel_server import FakeVercel, backed_by

    from flows.complete_failure import CompleteFailureParams, complete_failure
    from restorekit.sinks.envfile import EnvFileStore

    fake = FakeVercel(token=rec.canaries["vercel token"]).start()
    os.environ[VERCEL_TOKEN_ENV] = fake.token
    try:
        local_app = world.runtime().app
        fake.add_env("DATABASE_URL", EnvFileStore(world.env_file).read().get_secret_value())
        maintenance = fake.add_deployment(target=None, serve=False)
        fake.add_deployment()
        serve_app = backed_by(world.env_file, lambda: local_app.redeploy(reason="vercel"))

        def production_changed(deployment: dict, env: dict) -> None:
            if "DATABASE_URL" not in env:
                local_app.stop(reason="maintenance page")
            else:
                serve_app(deployment, env)

        fake.on_production.append(production_changed)
        section = (
            '[targets.production.app]\nkind = "vercel"\n'
            f'vercel = {{ project = "{fake.project_name}", team_id = "{fake.team_id}", '
            f'base_url = "{fake.url}", token_env = "{VERCEL_TOKEN_ENV}", '
            f'health_url = "{local_app.health_url()}", '
            f'maintenance_deployment_id = "{maintenance}", '
            'poll_interval_seconds = 0.2, timeout_seconds = 60 }\n\n'
            '[targets.production.connection]\nkind = "vercel"\n'
            f'options = {{ project = "{fake.project_name}", team_id = "{fake.team_id}", '
            f'base_url = "{fake.url}", token_env = "{VERCEL_TOKEN_ENV}" }}\n\n')
        text = re.sub(r"\[targets\.production\.app\].*?(?=\[targets\.production\.verify\])",
                      section, world.config.read_text(), flags=re.S)
        config = world.config.parent / "vercel.toml"
        config.write_text(text)
        world.wait_archived()
        world.production.stop(mode="immediate")
        report = _flow(rec, "complete-failure (vercel)", lambda: complete_failure(
            CompleteFailureParams(target="production", config=str(config),
                                  require_approval=False, incident_id="secrets-cf")))
        assert report.outcome == "succeeded", report.error
        assert fake.problems == []
    finally:
        fake.stop()
        os.environ.pop(VERCEL_TOKEN_ENV, None)


# ----------------------------------------------------------------------------- the greps


def secret_store_files(rec: Recorded) -> list[Path]:
    """The env files and the env-file store's rollback copies beside them."""
    found = []
    for store in rec.secret_stores:
        found.append(store)
        found.extend(store.parent.glob(f".{store.name}.restorekit-*.bak"))
    return found


def test_the_runs_happened_and_the_canaries_are_findable(recorded: Recorded) -> None:
    # Every flow of the issue ran, some failing, one on a cloud-provider fake.
    names = " ".join(recorded.flow_runs)
    for flow_name in ("backup", "restore-drill", "accidental-deletion", "partial-corruption",
                      "complete-failure", "(neon)", "(failing)"):
        assert flow_name in names
    assert len(recorded.failures) == 2
    assert len(recorded.cli_runs) == 12 and sum(rc != 0 for _, rc in recorded.cli_runs) == 2
    assert any("FAILED" in n for n in recorded.notifications)
    # Positive control: the grep finds the passwords where they legitimately are: the
    # application's URL, re-pointed at the restored database by complete-failure with its own
    # role and password, and the failing run's env file (the canary role's password).
    app_env, wrong_env = recorded.secret_stores
    assert hits(Haystack(str(app_env), app_env.read_bytes()), recorded.canaries) == [
        f"app db password in {app_env}"]
    assert hits(Haystack(str(wrong_env), wrong_env.read_bytes()), recorded.canaries) == [
        f"db password in {wrong_env}"]
    encoded = Haystack("base64", base64.b64encode(
        b"x" + recorded.canaries["vercel token"].encode()))
    assert hits(encoded, recorded.canaries) == ["vercel token in base64"]


def test_no_secret_in_logs_output_or_exceptions(recorded: Recorded) -> None:
    assert recorded.found("logs") == []
    assert recorded.found("exceptions") == []
    assert recorded.tally.by_source["logs"] > 50_000  # the runs' logs were captured
    assert recorded.tally.by_source["exceptions"] > 0


def test_no_secret_in_reports_results_or_notifications(recorded: Recorded) -> None:
    assert recorded.found("results") == []
    assert recorded.found("notifications") == []
    assert len(recorded.notifications) >= 10


def test_no_secret_in_the_cli_output(recorded: Recorded) -> None:
    assert recorded.found("cli") == []
    assert recorded.tally.by_source["cli"] > 1000


def test_no_secret_in_any_file_restorekit_wrote(recorded: Recorded) -> None:
    found = []
    excluded = secret_store_files(recorded)
    for root in recorded.roots:
        for stack in files_under(root, exclude=excluded, decode_base64=True):
            recorded.tally.add("files", stack)
            found.extend(hits(stack, recorded.canaries))
    assert found == []
    assert recorded.tally.by_source["files"] > 10_000_000  # backups, WAL, restores, reports


def test_no_secret_in_the_prefect_database(recorded: Recorded) -> None:
    assert recorded.database is not None and recorded.database.exists()
    found = []
    files = [p for p in recorded.database.parent.iterdir()
             if p.name.startswith(recorded.database.name)]
    for path in files:  # the database file and its -wal / -shm, as bytes
        stack = Haystack(str(path), path.read_bytes())
        recorded.tally.add("prefect db bytes", stack)
        found.extend(hits(stack, recorded.canaries))
    tables: dict[str, int] = {}
    for stack in sqlite_rows(recorded.database, recorded.tally):
        tables[stack.where] = tables.get(stack.where, 0) + 1
        found.extend(hits(stack, recorded.canaries))
    assert found == []
    name = recorded.database.name
    for table in ("flow_run", "task_run", "log", "artifact", "flow_run_state",
                  "task_run_state", "deployment"):
        assert tables.get(f"{name}:{table}", 0) > 0, table
    assert tables[f"{name}:log"] > 100


def test_no_secret_in_persisted_results(recorded: Recorded) -> None:
    assert recorded.storage is not None
    found = []
    count = 0
    for stack in files_under(recorded.storage):
        count += 1
        recorded.tally.add("result storage", stack)
        found.extend(hits(stack, recorded.canaries))
    assert found == []
    assert count > 10  # the runs' task and flow results were persisted
    tally = recorded.tally
    print(f"secrets audit: {len(recorded.flow_runs)} flow runs, {len(recorded.cli_runs)} CLI "
          f"runs, {len(recorded.canaries)} canaries; scanned {tally.blobs} blobs, "
          f"{tally.bytes} bytes, {tally.rows} Prefect database rows; by source "
          f"{json.dumps(tally.by_source)}; result files {count}")

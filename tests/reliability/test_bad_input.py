"""Bad input is refused before any side effect, with a message that names the problem and says
what to do (design.md, "Rules that make it trustworthy").

Every case runs a real entry point: a scenario flow through its params model against a real
Prefect server and the embedded installation (``world``), the ``restorekit`` CLI (its entry
point, or the installed script as a subprocess) with ``-c <world.config>``, or the core
function. A case refused against the installation then proves that NOTHING changed
(``untouched``; a flow run shared by two tests is judged in two halves, production and
restores; the unwritable-snapshot case checks the production half):

* the checksum of every table of the production database is the same;
* no scratch restore exists and the restore roots hold no new directory;
* no object was added to the repository (base backups, snapshots; the WAL archive is left out
  because production archives into it on its own);
* the application's env file is byte for byte the same and the application was not restarted.

Identifiers with quotes, semicolons, mixed case and unicode must WORK when the table exists
(deleted rows of such a table come back byte for byte) and are never SQL.

Cases that do not need the installation (configuration files, params models) check the message,
and for a CLI command that no state directory was created.

Most bad inputs above are also given to the ``restorekit`` CLI (``refused_by_cli``): exit status 2,
exactly one line ``error: ...`` on stderr (so no Prefect output), nothing on stdout, and nothing
changed. Most of these call the installed script's entry point (``restorekit.cli:main``) in
this process with the argv, where calling any flow fails the case (``cli_in_process``: a
subprocess costs a Python start and the imports, about a second of CPU, per case); some cases
of each command (window, run, drill, restore, snapshot) run the installed script as a
subprocess. Each command's wall time is printed at the end of the module's tests ("restorekit
CLI refusals: wall time") when pytest runs without xdist workers; no test asserts on it.

No test here is an xfail: each asserts today's behaviour.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import psycopg
import pytest
from fixtures.cli import CLI, cli_env
from psycopg import sql
from pydantic import ValidationError

from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
from flows.complete_failure import CompleteFailureParams, complete_failure
from flows.partial_corruption import PartialCorruptionParams, partial_corruption
from restorekit import diff
from restorekit.config import load_settings, settings_from_dict
from restorekit.demo import APP_ROLE
from restorekit.errors import ConfigError, RestoreKitError, RestorePointError
from restorekit.models import RestorePoint
from restorekit.pg.catalog import TableRef
from restorekit.pg.checksum import database_checksums
from restorekit.pg.dsn import parse as parse_dsn
from restorekit.repository import LocalRepository
from restorekit.snapshot import take_snapshot

pytestmark = pytest.mark.slow

# Rich draws boxes around usage errors and wraps long lines; compare text without them.
_DECORATION = re.compile(r"[│╭╮╰╯─\s]+")

#: A table whose name and columns need quoting: a quote, a semicolon, mixed case, unicode.
WEIRD = TableRef("public", 'Weird; Näme "Ω"')
WEIRD_TEXT = '"Weird; Näme ""Ω"""'  # how a person types it (SQL quoting rules)
MIXED_COL = 'Mixed "Col"'
UNICODE_COL = "ünï; cöl"
USER_COL = "User Id"
INJECTION = "users; DROP TABLE clients"


def flat(text: str) -> str:
    return _DECORATION.sub(" ", text).strip()


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """The installed ``restorekit`` command, run as a subprocess."""
    return subprocess.run([*CLI, *args], cwd=cwd, env=cli_env(**(env or {})),
                          capture_output=True, text=True, timeout=timeout, check=False)


def _flow_started(self: Any, *args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"the CLI started the flow {self.name!r}: bad input must stop before")


def cli_in_process(*args: str, cwd: Path,
                   env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``restorekit ARGS`` run by the installed script's entry point (``restorekit.cli:main``)
    in this process: what a subprocess costs is a Python start and the imports, paid once
    here. The same view as :func:`cli`: the exit status, stdout and stderr (the consoles
    write to ``sys.stdout``/``sys.stderr`` when they print), the working directory and the
    environment (without RESTOREKIT_CONFIG, plus ``env``). Nothing leaks into the next case:
    the environment, cwd, argv and the root logger's handlers and level (``main`` calls
    ``logging.basicConfig``) are put back. A refusal must come before Prefect; in a
    subprocess that shows as Prefect output on stderr, here any flow called fails the case
    (Prefect's settings are never entered: ``run`` enters them only around the flow)."""
    from prefect.flows import Flow

    from restorekit.cli import main

    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        os.environ.pop("RESTOREKIT_CONFIG", None)
        os.environ.update(env or {})
        os.chdir(cwd)
        sys.argv = ["restorekit", *args]
        with mock.patch.object(Flow, "__call__", _flow_started), \
                contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main()
                code = 0
            except SystemExit as exc:  # what the process would exit with
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    return subprocess.CompletedProcess(["restorekit", *args], code, stdout.getvalue(),
                                       stderr.getvalue())


#: (command line, wall seconds) of every refusal run through the CLI, printed at the end.
WALL_TIMES: list[tuple[str, float]] = []


@pytest.fixture(scope="module", autouse=True)
def _print_wall_times(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if not WALL_TIMES or reporter is None:
        return  # e.g. an xdist worker: no terminal of its own
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line("")
        reporter.write_sep("-", "restorekit CLI refusals: wall time")
        for line, seconds in WALL_TIMES:
            reporter.write_line(f"{seconds:6.2f} s  restorekit {line}")


def refused_by_cli(*args: str, cwd: Path, says: Iterable[str] = (),
                   env: dict[str, str] | None = None, as_process: bool = False) -> str:
    """Run the CLI on bad input: exit 2 and one line ``error: ...`` on stderr holding every
    phrase of ``says``, nothing on stdout, no Prefect output. Returns that line; its wall
    time goes to WALL_TIMES. In this process (:func:`cli_in_process`) unless ``as_process``:
    the installed script as a process (:func:`cli`), as some cases of every command are."""
    started = time.monotonic()
    result = (cli if as_process else cli_in_process)(*args, cwd=cwd, env=env)
    how = "" if as_process else "  (in-process)"
    WALL_TIMES.append((" ".join(args).replace(str(cwd), ".") + how,
                       time.monotonic() - started))
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == "", result.stdout
    assert "telemetry" not in result.stderr
    for phrase in says:
        assert phrase in lines[0], lines[0]
    return lines[0]


# -- "nothing changed" ---------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    checksums: dict[str, str]
    scratch: tuple[str, ...]
    restore_dirs: frozenset[str]
    repo_objects: frozenset[str]
    env_file: bytes
    app_pid: int | None


def _dirs(root: Path, depth: int = 2) -> set[str]:
    if not root.exists():
        return set()
    found = set()
    for path in root.iterdir():
        if path.is_dir():
            found.add(str(path))
            if depth > 1:
                found |= _dirs(path, depth - 1)
    return found


def _repo_objects(repo: Path) -> frozenset[str]:
    """Every file in the repository except the WAL archive (production archives on its own)."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(repo):
        rel = Path(dirpath).relative_to(repo).as_posix()
        if rel == ".":
            dirnames[:] = [d for d in dirnames if d != "wal"]
        found.update(f"{rel}/{name}" for name in filenames)
    return frozenset(found)


def capture(world: Any) -> State:
    rt = world.runtime()
    with psycopg.connect(world.app_dsn) as conn:
        sums = database_checksums(conn)
    state_dir = rt.settings.state_dir.absolute()
    assert rt.app is not None
    return State(
        checksums=sums,
        scratch=tuple(r.handle for r in rt.provider.list_scratch()),
        restore_dirs=frozenset(_dirs(state_dir / "restores")
                               | _dirs(state_dir / "snapshot-restores")),
        repo_objects=_repo_objects(world.root / "repo"),
        env_file=world.env_file.read_bytes(),
        app_pid=rt.app.running_pid(),  # type: ignore[attr-defined]
    )


def assert_production_untouched(before: State, after: State) -> None:
    changed = sorted(t for t in before.checksums.keys() | after.checksums.keys()
                     if before.checksums.get(t) != after.checksums.get(t))
    assert not changed, f"production tables changed: {changed}"
    assert after.repo_objects == before.repo_objects, (
        f"repository objects added: {sorted(after.repo_objects - before.repo_objects)}")
    assert after.env_file == before.env_file, "the env file changed"
    assert after.app_pid == before.app_pid, "the application was stopped or restarted"


def assert_no_restore(before: State, after: State) -> None:
    assert after.scratch == (), f"scratch restores exist: {after.scratch}"
    assert after.restore_dirs == before.restore_dirs, (
        f"new restore directories: {sorted(after.restore_dirs - before.restore_dirs)}")


def assert_nothing_changed(before: State, after: State) -> None:
    assert_production_untouched(before, after)
    assert_no_restore(before, after)


def discard_leftovers(world: Any) -> None:
    provider = world.runtime().provider
    for restored in provider.list_scratch():
        provider.discard(restored)


@pytest.fixture
def untouched(world: Any) -> Iterator[Callable[[], None]]:
    """Call the yielded function at the end of a test: it asserts nothing changed since the
    test began. Leftovers are removed afterwards either way, so one failure cannot spread."""
    before = capture(world)
    yield lambda: assert_nothing_changed(before, capture(world))
    discard_leftovers(world)


def refused(run: Callable[[], Any], *kinds: type[BaseException]) -> str:
    """Run an entry point that must fail with one of ``kinds``; return its message."""
    with pytest.raises(kinds or (RestoreKitError,)) as info:
        run()
    return str(info.value)


@dataclass
class Shared:
    """One flow run whose outcome several tests judge (each restore costs seconds)."""

    error: BaseException | None
    before: State
    after: State


def run_once(world: Any, run: Callable[[], Any]) -> Shared:
    before = capture(world)
    error: BaseException | None = None
    try:
        run()
    except BaseException as exc:  # noqa: BLE001 - judged by the tests
        error = exc
    after = capture(world)
    discard_leftovers(world)
    return Shared(error, before, after)


# -- the installation, and a table whose name must be quoted -------------------------------------


@dataclass(frozen=True)
class Weird:
    #: A restorable time after the weird table exists (archived, inside the window).
    point: datetime
    users: tuple[int, ...]


@pytest.fixture(scope="module")
def weird(world: Any) -> Weird:
    """The table WEIRD (a quote, a semicolon, mixed case and unicode in its name) with columns
    MIXED_COL and UNICODE_COL and a foreign key USER_COL to users ON DELETE CASCADE; its deletes
    are recorded by the sample's audit trigger. Created by the application's role, as its
    migrations would (restorekit checks its privileges on every table before a run)."""
    table = WEIRD.ident
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(APP_ROLE)))
        conn.execute(sql.SQL(
            "CREATE TABLE {t} (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
            "{u} bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE, {m} text, {x} text)"
        ).format(t=table, u=sql.Identifier(USER_COL), m=sql.Identifier(MIXED_COL),
                 x=sql.Identifier(UNICODE_COL)))
        conn.execute(sql.SQL("CREATE INDEX ON {} ({})").format(table, sql.Identifier(USER_COL)))
        conn.execute(sql.SQL(
            "CREATE TRIGGER {} AFTER DELETE ON {} REFERENCING OLD TABLE AS old_rows "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_delete()"
        ).format(sql.Identifier("weird; audit"), table))
        users = tuple(r[0] for r in conn.execute(
            "SELECT id FROM users WHERE id IN (SELECT user_id FROM appointments) "
            "ORDER BY id DESC LIMIT 6"))
        conn.execute(sql.SQL(
            "INSERT INTO {t} ({u}, {m}, {x}) "
            "SELECT u, v, 'ünï ' || v FROM unnest(%s::bigint[]) AS u, "
            "unnest(ARRAY['it''s', '\"quoted\"', '); DROP TABLE clients; --', 'Ωmega']) AS v"
        ).format(t=table, u=sql.Identifier(USER_COL), m=sql.Identifier(MIXED_COL),
                 x=sql.Identifier(UNICODE_COL)), (list(users),))
        time.sleep(0.05)
        point = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        time.sleep(0.05)
        conn.execute("SELECT txid_current()")  # a commit after the point, for the window
        conn.execute("RESET ROLE")
    world.wait_archived()
    return Weird(point=point, users=users)


def clients_exists(world: Any) -> bool:
    with psycopg.connect(world.app_dsn) as conn:
        row = conn.execute("SELECT to_regclass('public.clients') IS NOT NULL").fetchone()
    return row == (True,)


def _common(world: Any, **extra: Any) -> dict[str, Any]:
    return {"target": "production", "config": str(world.config), "require_approval": False,
            **extra}


def _rows(conn: psycopg.Connection[Any], users: list[int]) -> dict[str, list[str]]:
    weird = sql.SQL("SELECT w::text FROM {t} AS w WHERE w.{u} = ANY(%s) ORDER BY id").format(
        t=WEIRD.ident, u=sql.Identifier(USER_COL))
    return {
        "users": [r[0] for r in conn.execute(
            "SELECT u::text FROM users u WHERE id = ANY(%s) ORDER BY id", (users,))],
        "clients": [r[0] for r in conn.execute(
            "SELECT c::text FROM clients c WHERE user_id = ANY(%s) ORDER BY id", (users,))],
        "appointments": [r[0] for r in conn.execute(
            "SELECT a::text FROM appointments a WHERE user_id = ANY(%s) ORDER BY id", (users,))],
        "weird": [r[0] for r in conn.execute(weird, (users,))],
    }


# -- restore points -------------------------------------------------------------------------------

FUTURE = (datetime.now(UTC) + timedelta(days=2)).isoformat()

BAD_POINTS = [
    pytest.param("2000-01-01T00:00:00Z", RestorePointError,
                 ["outside the restore window", "[", ".."], id="outside-window"),
    pytest.param(FUTURE, RestorePointError,
                 ["in the future", "the restore window is"], id="future"),
    pytest.param("2026-01-01T00:00:00", RestorePointError,
                 ["has no timezone", "give one", "+00:00"], id="naive"),
    pytest.param("yesterday at noon", RestorePointError,
                 ["cannot read restore point 'yesterday at noon'", "expected 'latest'",
                  "ISO-8601"], id="unparsable"),
    pytest.param("lsn:zz/top", RestorePointError,
                 ["not an LSN", "expected the form 0/3000060"], id="lsn-garbage"),
    pytest.param("lsn:FFFFFFFF/FFFFFFFF", RestorePointError,
                 ["outside the archived range"], id="lsn-beyond-archive"),
    pytest.param("xid:twelve", RestorePointError, ["xid must be a number"], id="xid-not-a-number"),
    pytest.param("backup:nope", (ConfigError, RestorePointError),
                 ["no backup 'nope'", "available:"], id="backup-unknown"),
]


@pytest.mark.parametrize(("point", "error", "says"), BAD_POINTS)
def test_a_bad_restore_point_is_refused_before_a_restore_is_created(
    world: Any, untouched: Callable[[], None], point: str,
    error: type[BaseException] | tuple[type[BaseException], ...], says: list[str],
) -> None:
    """The core entry point every restore goes through (provider.restore)."""
    provider = world.runtime().provider
    errors = error if isinstance(error, tuple) else (error,)
    message = refused(lambda: provider.restore(RestorePoint.parse(point), name="rel-bad-point"),
                      *errors)
    for phrase in says:
        assert phrase in message, message
    untouched()


# The flow runs the same checks (preflight); two representatives keep the suite fast.
FLOW_POINTS = [p for p in BAD_POINTS if p.id in ("outside-window", "backup-unknown")]


@pytest.mark.parametrize(("point", "error", "says"), FLOW_POINTS)
def test_partial_corruption_refuses_a_bad_restore_point(
    prefect_server: str, world: Any, untouched: Callable[[], None], point: str,
    error: type[BaseException] | tuple[type[BaseException], ...], says: list[str],
) -> None:
    errors = error if isinstance(error, tuple) else (error,)
    message = refused(lambda: partial_corruption(PartialCorruptionParams(
        **_common(world, restore_point=point, tables=["clients"]))), *errors)
    for phrase in says:
        assert phrase in message, message
    untouched()


def test_partial_corruption_needs_a_point_before_the_corruption(
    prefect_server: str, world: Any, untouched: Callable[[], None],
) -> None:
    message = refused(lambda: partial_corruption(PartialCorruptionParams(
        **_common(world, restore_point="latest"))), ConfigError)
    assert "needs a restore point from BEFORE the corruption" in message
    assert "--point" in message  # what to do
    untouched()


def test_accidental_deletion_refuses_a_bad_restore_point_before_stopping_the_app(
    prefect_server: str, world: Any, untouched: Callable[[], None],
) -> None:
    message = refused(lambda: accidental_deletion(AccidentalDeletionParams(
        **_common(world, restore_point="2000-01-01T00:00:00+02:00", ids=["1"],
                  stop_application=True))), RestorePointError)
    assert "outside the restore window" in message, message
    untouched()  # also: the application was not stopped


@pytest.mark.parametrize(("point", "errors", "says"), [
    pytest.param("2026-01-01T00:00:00", (RestorePointError,), "has no timezone", id="naive"),
    pytest.param("backup:nope", (ConfigError, RestorePointError), "no backup 'nope'",
                 id="unknown-backup"),
])
def test_complete_failure_refuses_a_bad_point_before_stopping_the_app(
    prefect_server: str, world: Any, untouched: Callable[[], None], point: str,
    errors: tuple[type[BaseException], ...], says: str,
) -> None:
    message = refused(lambda: complete_failure(CompleteFailureParams(
        **_common(world, restore_point=point))), *errors)
    assert says in message, message
    untouched()  # also: the application was not stopped and started again (same pid)


def test_a_naive_deleted_since_is_refused(
    prefect_server: str, world: Any, untouched: Callable[[], None],
) -> None:
    # The params model itself (the UI form, the API) refuses it: no run is even created.
    with pytest.raises(ValidationError, match="timezone"):
        AccidentalDeletionParams(**_common(world, deleted_since=datetime(2026, 1, 1, 12, 0)))
    untouched()


@pytest.mark.parametrize(("point", "says"), [
    ("2026-01-01T00:00:00", "no timezone"),
    ("backup:nope", "no backup 'nope'"),
])
def test_cli_restore_to_new_refuses_a_bad_point_with_exit_2(
    world: Any, untouched: Callable[[], None], point: str, says: str,
) -> None:
    refused_by_cli("restore", "-t", "production", "-c", str(world.config), "--to-new",
                   "--point", point, cwd=world.root, says=[says])
    untouched()


def test_cli_restore_refuses_a_point_at_the_edge_of_the_calendar(
    world: Any, untouched: Callable[[], None],
) -> None:
    refused_by_cli("restore", "-t", "production", "-c", str(world.config), "--to-new",
                   "--point", "0001-01-01T00:00:00+01:00", cwd=world.root, says=["out of range"],
                   as_process=True)  # the installed script itself, as for every command
    untouched()


# -- targets, tables, columns, ids ---------------------------------------------------------------


def test_unknown_target_is_refused_by_the_flow(
    prefect_server: str, world: Any, untouched: Callable[[], None],
) -> None:
    message = refused(lambda: accidental_deletion(AccidentalDeletionParams(
        **{**_common(world), "target": "nope"})), ConfigError)
    assert "unknown target 'nope'" in message and "known targets: production" in message
    untouched()


@pytest.mark.parametrize("command", [["window"], ["run", "accidental-deletion"], ["drill"]])
def test_unknown_target_is_refused_by_the_cli(
    world: Any, untouched: Callable[[], None], command: list[str],
) -> None:
    refused_by_cli(*command, "-t", "nope", "-c", str(world.config), cwd=world.root,
                   says=["unknown target 'nope'", "known targets: production"])
    untouched()


BAD_TABLES = [
    pytest.param("nope", "table public.nope does not exist", id="unknown"),
    pytest.param('"Users"', 'table public."Users" does not exist', id="quoted-case-matters"),
    pytest.param(INJECTION, "not a valid table name", id="injection"),
    pytest.param(f'"{INJECTION}"', "does not exist", id="quoted-injection"),
    pytest.param("users; --", "not a valid table name", id="comment"),
    pytest.param("a.b.c", "has 3 parts", id="three-parts"),
    pytest.param('"unterminated', "unterminated quoted identifier", id="unterminated"),
    pytest.param("", "empty table name", id="empty"),
]


@pytest.mark.parametrize(("table", "says"), BAD_TABLES)
def test_the_deletion_scope_refuses_an_unknown_or_malformed_table(
    world: Any, untouched: Callable[[], None], table: str, says: str,
) -> None:
    from restorekit.scope import deletion_scope

    with psycopg.connect(world.app_dsn) as conn:
        message = refused(lambda: deletion_scope(conn, table), ConfigError)
    assert says in message, message
    untouched()


@pytest.mark.parametrize(("table", "says"),
                         [p for p in BAD_TABLES if p.id in ("unknown", "injection")])
def test_accidental_deletion_refuses_an_unknown_or_malformed_table(
    prefect_server: str, world: Any, untouched: Callable[[], None], table: str, says: str,
) -> None:
    message = refused(lambda: accidental_deletion(AccidentalDeletionParams(
        **_common(world, table=table))), ConfigError)
    assert says in message, message
    untouched()
    assert clients_exists(world)


def test_cli_snapshot_refuses_a_table_name_carrying_sql(
    world: Any, untouched: Callable[[], None],
) -> None:
    message = refused_by_cli("snapshot", "-t", "production", "-c", str(world.config),
                             "--table", INJECTION, cwd=world.root,
                             as_process=True)  # the installed script itself
    assert "not a valid table name" in message, message  # refused before a dump is tried
    untouched()


def test_unknown_and_malformed_columns_are_refused_by_the_diff(
    world: Any, weird: Weird, untouched: Callable[[], None],
) -> None:
    with psycopg.connect(world.app_dsn) as live, psycopg.connect(world.app_dsn) as copy:
        for columns in (["nope"], ["email; DROP TABLE clients"], ["Email"]):
            message = refused(lambda columns=columns: diff.diff_table(  # type: ignore[misc]
                live, copy, TableRef("public", "users"), columns=columns), ConfigError)
            assert f"has no column(s): {columns[0]}" in message
        # Columns that exist work, however strange their names.
        found = diff.diff_table(live, copy, WEIRD, columns=[MIXED_COL, UNICODE_COL, USER_COL])
        assert found.identical and found.primary_key == ("id",)
    untouched()


@pytest.fixture(scope="module")
def partial_unknown_table(prefect_server: str, world: Any, weird: Weird) -> Shared:
    return run_once(world, lambda: partial_corruption(PartialCorruptionParams(
        **_common(world, restore_point=weird.point.isoformat(), tables=["nope"],
                  incident_id=f"rel-pc-nope-{uuid.uuid4().hex[:6]}"))))


def test_partial_corruption_unknown_table_changes_nothing_in_production(
    partial_unknown_table: Shared,
) -> None:
    assert isinstance(partial_unknown_table.error, ConfigError), partial_unknown_table.error
    assert "public.nope" in str(partial_unknown_table.error)
    assert_production_untouched(partial_unknown_table.before, partial_unknown_table.after)


def test_partial_corruption_unknown_table_is_refused_before_restoring(
    partial_unknown_table: Shared,
) -> None:
    assert_no_restore(partial_unknown_table.before, partial_unknown_table.after)


@pytest.fixture(scope="module")
def wrong_type_ids(prefect_server: str, world: Any, weird: Weird) -> Shared:
    # users.id is bigint; "abc" (and an id carrying SQL) can never match a row.
    return run_once(world, lambda: accidental_deletion(AccidentalDeletionParams(
        **_common(world, restore_point=weird.point.isoformat(),
                  ids=["abc", "1; DROP TABLE clients"],
                  incident_id=f"rel-ad-ids-{uuid.uuid4().hex[:6]}"))))


def test_ids_of_the_wrong_type_change_nothing_in_production(wrong_type_ids: Shared) -> None:
    error = wrong_type_ids.error
    assert isinstance(error, RestoreKitError), error
    assert "abc" in str(error) and "bigint" in str(error), str(error)
    assert_production_untouched(wrong_type_ids.before, wrong_type_ids.after)


def test_ids_of_the_wrong_type_are_refused_before_restoring(wrong_type_ids: Shared) -> None:
    assert isinstance(wrong_type_ids.error, ConfigError), wrong_type_ids.error
    assert_no_restore(wrong_type_ids.before, wrong_type_ids.after)


@pytest.mark.parametrize("ids", [[1.5], [None], "1,2", [[1, 2]]])
def test_ids_that_are_not_keys_are_refused_by_the_params_model(ids: Any) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        AccidentalDeletionParams(target="production", ids=ids)
    assert "ids" in str(info.value)


def test_numeric_ids_are_accepted_by_the_params_model() -> None:
    assert AccidentalDeletionParams(target="production", ids=[42]).ids == ["42"]


# -- the same bad input through the CLI: refused at once, before Prefect --------------------------

POINT = "{point}"  # replaced by a restorable time (weird.point)
FAR_FUTURE = (datetime.now(UTC) + timedelta(days=400)).isoformat()


def _run(scenario: str, *args: str) -> list[str]:
    return ["run", scenario, *args]


CLI_REFUSALS = [
    # restore points: each through complete-failure (the app must not be stopped), some
    # through the scenarios that restore a scratch copy
    *[pytest.param(_run("complete-failure", "--point", p.values[0]), p.values[2],
                   id=f"point-{p.id}") for p in BAD_POINTS],
    pytest.param(_run("partial-corruption", "--point", "2000-01-01T00:00:00Z", "--tables",
                      "clients"), ["outside the restore window"], id="pc-point-outside-window"),
    pytest.param(_run("partial-corruption", "--point", "backup:nope"), ["no backup 'nope'"],
                 id="pc-backup-unknown"),
    pytest.param(_run("accidental-deletion", "--point", "2000-01-01T00:00:00+02:00", "--ids", "1",
                      "--stop-app"), ["outside the restore window"], id="ad-point-outside-window"),
    pytest.param(_run("partial-corruption"), ["needs a restore point from BEFORE the corruption",
                                              "--point"], id="pc-no-point"),
    pytest.param(_run("partial-corruption", "--point", "latest"),
                 ["needs a restore point from BEFORE the corruption"], id="pc-latest"),
    # times
    pytest.param(_run("accidental-deletion", "--deleted-since", "2026-01-01T12:00:00"),
                 ["--deleted-since", "has no timezone", "give one"], id="deleted-since-naive"),
    pytest.param(_run("accidental-deletion", "--deleted-since", "last tuesday"),
                 ["--deleted-since", "not an ISO-8601 time"], id="deleted-since-unreadable"),
    pytest.param(_run("accidental-deletion", "--deleted-since", FAR_FUTURE),
                 ["the audit log records no deletion from public.users since"],
                 id="deleted-since-nothing-deleted"),
    pytest.param(_run("partial-corruption", "--point", POINT, "--keep-rows-written-after",
                      "2026-01-01T00:00:00"), ["has no timezone"], id="keep-after-naive"),
    pytest.param(_run("partial-corruption", "--point", POINT, "--keep-rows-written-after",
                      FAR_FUTURE), ["is in the future"], id="keep-after-future"),
    pytest.param(_run("partial-corruption", "--point", POINT, "--keep-rows-written-after",
                      "2000-01-01T00:00:00Z"), ["is not after the restore point"],
                 id="keep-after-before-point"),
    # tables
    *[pytest.param(_run("accidental-deletion", "--table", t.values[0]), [t.values[1]],
                   id=f"ad-table-{t.id}") for t in BAD_TABLES],
    pytest.param(_run("partial-corruption", "--point", POINT, "--tables", "nope"),
                 ["unknown table(s) in the live database: public.nope"], id="pc-table-unknown"),
    pytest.param(_run("partial-corruption", "--point", POINT, "--tables", INJECTION),
                 ["not a valid table name"], id="pc-table-injection"),
    pytest.param(_run("partial-corruption", "--point", POINT, "--tables", "a.b.c"),
                 ["has 3 parts"], id="pc-table-three-parts"),
    # columns
    pytest.param(_run("partial-corruption", "--point", POINT, "--tables", "users", "--columns",
                      "nope"), ["table public.users has no column(s) nope"], id="column-unknown"),
    pytest.param(_run("partial-corruption", "--point", POINT, "--tables", "users", "--columns",
                      '"Email"'), ["has no column(s) Email"], id="column-case-matters"),
    pytest.param(_run("partial-corruption", "--point", POINT, "--tables", WEIRD_TEXT,
                      "--columns", "nope"), ["has no column(s) nope"], id="column-of-weird-table"),
    pytest.param(_run("partial-corruption", "--point", POINT, "--tables", "users", "--columns",
                      "email; DROP TABLE clients"),
                 ["not a valid", "'email; DROP TABLE clients'"],
                 id="column-injection"),
    pytest.param(_run("partial-corruption", "--point", POINT, "--tables", "users", "--columns",
                      "clients.email"), ["columns given for table(s) not being repaired"],
                 id="column-of-another-table"),
    pytest.param(_run("partial-corruption", "--point", POINT, "--tables", "users", "--tables",
                      "clients", "--columns", "email"), ["names no table"],
                 id="column-bare-with-two-tables"),
    pytest.param(_run("partial-corruption", "--point", POINT, "--tables", "users", "--columns",
                      "id"), ["are its primary key"], id="column-primary-key"),
    pytest.param(_run("partial-corruption", "--point", POINT, "--columns", "a.b.c.d"),
                 ["expected column, table.column or schema.table.column"],
                 id="column-four-parts"),
    # ids
    pytest.param(_run("accidental-deletion", "--ids", "abc", "--ids", "1; DROP TABLE clients"),
                 ["abc", "bigint"], id="ids-wrong-type"),
    pytest.param(_run("accidental-deletion", "--ids", "1.5"), ["'1.5'", "bigint"],
                 id="ids-not-a-key"),
    # options of another scenario, unknown scenario, unknown target, out-of-range values
    pytest.param(_run("complete-failure", "--ids", "1"),
                 ["--ids is an option of accidental-deletion, not of complete-failure"],
                 id="ids-to-complete-failure"),
    pytest.param(_run("complete-failure", "--tables", "users"),
                 ["--tables is an option of partial-corruption"], id="tables-to-complete-failure"),
    pytest.param(_run("partial-corruption", "--point", POINT, "--stop-app"),
                 ["--stop-app is an option of accidental-deletion"], id="stop-app-to-pc"),
    pytest.param(_run("accidental-deletion", "--full-replace"),
                 ["--full-replace is an option of partial-corruption"], id="full-replace-to-ad"),
    pytest.param(_run("accidental-deletion", "--accept-in-place-without-snapshot"),
                 ["is an option of complete-failure"], id="accept-in-place-to-ad"),
    pytest.param(_run("restore-everything"), ["unknown scenario 'restore-everything'"],
                 id="unknown-scenario"),
    pytest.param(_run("complete-failure", "-t", "nope"),
                 ["unknown target 'nope'", "known targets: production"], id="unknown-target"),
    pytest.param(_run("complete-failure", "--lock-wait-seconds", "-1"), ["--lock-wait-seconds"],
                 id="negative-lock-wait"),
    pytest.param(_run("complete-failure", "--idz", "1"), ["No such option: --idz"],
                 id="unknown-option"),
    pytest.param(["drill", "-t", "nope"], ["unknown target 'nope'"], id="drill-unknown-target"),
    pytest.param(["drill", "--point", "sometimes"], ["--point", "sometimes"],
                 id="drill-unknown-point"),
    pytest.param(["drill", "--row-count-tolerance", "2"], ["--row-count-tolerance"],
                 id="drill-tolerance-above-1"),
]


@pytest.mark.parametrize(("args", "says"), CLI_REFUSALS)
def test_the_cli_refuses_bad_input_at_once_with_exit_2(
    world: Any, weird: Weird, untouched: Callable[[], None], args: list[str], says: list[str],
) -> None:
    args = [a.replace(POINT, weird.point.isoformat()) for a in args]
    target = [] if "-t" in args else ["-t", "production"]
    refused_by_cli(*args, *target, "-c", str(world.config), cwd=world.root, says=says)
    untouched()
    assert clients_exists(world)


# -- identifiers that must work: quotes, semicolons, mixed case, unicode --------------------------


def test_deleted_users_bring_back_their_weirdly_named_cascade_byte_for_byte(
    prefect_server: str, world: Any, weird: Weird,
) -> None:
    victims = list(weird.users[:2])
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        before = _rows(conn, victims)
        assert before["users"] and before["appointments"] and before["weird"], before
        since = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        time.sleep(0.05)
        conn.execute("DELETE FROM users WHERE id = ANY(%s)", (victims,))
        assert _rows(conn, victims) == {k: [] for k in before}
    world.wait_archived()

    report = accidental_deletion(AccidentalDeletionParams(**_common(
        world, deleted_since=since, incident_id=f"rel-weird-{uuid.uuid4().hex[:6]}")))

    assert report.outcome == "succeeded"
    with psycopg.connect(world.app_dsn) as conn:
        assert _rows(conn, victims) == before  # byte for byte, the weird rows included
    assert clients_exists(world)
    inserted = {c.table: c.inserted for c in report.changes}
    assert inserted[str(WEIRD)] == len(before["weird"])
    assert world.runtime().provider.list_scratch() == []


def test_rows_deleted_from_a_weirdly_named_table_come_back_byte_for_byte(
    prefect_server: str, world: Any, weird: Weird,
) -> None:
    owner = weird.users[-1]
    select = sql.SQL("SELECT w::text FROM {t} AS w WHERE w.{u} = %s ORDER BY id").format(
        t=WEIRD.ident, u=sql.Identifier(USER_COL))
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        before = [r[0] for r in conn.execute(select, (owner,))]
        assert len(before) == 4
        since = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        time.sleep(0.05)
        conn.execute(sql.SQL("DELETE FROM {t} WHERE {u} = %s").format(
            t=WEIRD.ident, u=sql.Identifier(USER_COL)), (owner,))
        assert conn.execute(select, (owner,)).fetchall() == []
    world.wait_archived()

    report = accidental_deletion(AccidentalDeletionParams(**_common(
        world, table=WEIRD_TEXT, deleted_since=since,
        incident_id=f"rel-weird-root-{uuid.uuid4().hex[:6]}")))

    assert report.outcome == "succeeded"
    with psycopg.connect(world.app_dsn) as conn:
        assert [r[0] for r in conn.execute(select, (owner,))] == before
    assert {c.table: c.inserted for c in report.changes} == {str(WEIRD): 4}
    assert world.runtime().provider.list_scratch() == []


def test_cli_snapshot_of_a_weirdly_named_table_works(world: Any, weird: Weird) -> None:
    result = cli("snapshot", "-t", "production", "-c", str(world.config), "--table", WEIRD_TEXT,
                 "--json", cwd=world.root)
    assert result.returncode == 0, result.stderr
    snap = json.loads(result.stdout)
    assert snap["verified"] is True
    assert snap["tables"] == [str(WEIRD)]
    assert TableRef.parse(snap["tables"][0]) == WEIRD


# -- configuration ---------------------------------------------------------------------------------

_BASE = {"dsn": "host=127.0.0.1 port=5432 user=postgres dbname=app",
         "repository": "file:///var/lib/restorekit/repo"}

BAD_CONFIGS = [
    pytest.param({"targets": {"production": {}}}, ["exactly one of dsn or dsn_env"], id="no-dsn"),
    pytest.param({"targets": {"production": {**_BASE, "dsn_env": "PRODUCTION_DSN"}}},
                 ["exactly one of dsn or dsn_env"], id="dsn-and-dsn_env"),
    pytest.param({"targets": {"production": {"dsn": _BASE["dsn"]}}},
                 ["needs repository"], id="native-without-repository"),
    pytest.param({"targets": {"production": {**_BASE, "engine": "pgbackrest",
                                             "repository": None}}},
                 ["engine 'pgbackrest' needs data_dir, socket_dir"], id="pgbackrest-without-dirs"),
    pytest.param({"targets": {"production": {**_BASE, "dsnn": "x"}}},
                 ["dsnn", "Extra inputs are not permitted"], id="unknown-key"),
    pytest.param({"restorekit": {"statedir": "/x"}, "targets": {"production": _BASE}},
                 ["statedir", "Extra inputs are not permitted"], id="unknown-restorekit-key"),
    pytest.param({"target": {"production": _BASE}}, ["unknown section(s) target"],
                 id="unknown-section"),
    pytest.param({"targets": {"production": {**_BASE, "tier": "gold"}}},
                 ["tier", "'critical', 'standard' or 'non-critical'"], id="unknown-tier"),
    pytest.param({"targets": {"production": {**_BASE, "app": {"kind": "local"}}}},
                 ["app kind 'local' needs env_file and port"], id="local-app-without-env-file"),
    pytest.param({"targets": {"production": {**_BASE, "connection": {"kind": "envfile"}}}},
                 ["connection kind 'envfile' needs path"], id="envfile-without-path"),
    pytest.param({"targets": {"production": {**_BASE, "provider": "rds"}}},
                 ["needs a [targets.production.rds] section"], id="rds-without-section"),
    pytest.param({"targets": {"Production": _BASE}}, ["must be lower-case"], id="bad-target-name"),
    pytest.param({"targets": {"production": {
        **_BASE, "dsn": "postgresql://app:hunter2@db/app"}}}, ["contains a password", "dsn_env"],
        id="password-in-dsn"),
]


def toml_text(raw: dict[str, Any]) -> str:
    """``raw`` as TOML (strings and tables; None is left out, as the key would be)."""
    lines: list[str] = []

    def table(prefix: str, body: dict[str, Any]) -> None:
        if prefix:
            lines.append(f"[{prefix}]")
        for key, value in body.items():
            if value is not None and not isinstance(value, dict):
                lines.append(f"{key} = {json.dumps(value)}")
        for key, value in body.items():
            if isinstance(value, dict):
                table(f"{prefix}.{key}" if prefix else key, value)

    table("", raw)
    return "\n".join(lines) + "\n"


#: The commands a config error must stop at once (``run`` used to start Prefect first).
CONFIG_COMMANDS = [pytest.param(["window"], id="window"),
                   pytest.param(["run", "complete-failure"], id="run"),
                   pytest.param(["drill"], id="drill")]


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
@pytest.mark.parametrize(("raw", "says"), BAD_CONFIGS)
def test_cli_refuses_each_bad_config_with_exit_2(
    tmp_path: Path, command: list[str], raw: dict[str, Any], says: list[str],
) -> None:
    config = tmp_path / "restorekit.toml"
    config.write_text(toml_text(raw))
    message = refused_by_cli(*command, "-t", "production", "-c", str(config), cwd=tmp_path,
                             says=says)
    assert "hunter2" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["restorekit.toml"]  # no state dir


@pytest.mark.parametrize(("raw", "says"), BAD_CONFIGS)
def test_settings_from_dict_names_the_missing_or_contradictory_key(
    raw: dict[str, Any], says: list[str],
) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_dict(raw)
    for phrase in says:
        assert phrase in str(info.value), str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("raw", [
    {"targets": "production"},
    {"restorekit": "x", "targets": {"production": _BASE}},
    {"notify": "x"},
])
def test_a_section_that_is_not_a_table_is_a_config_error(raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        settings_from_dict(raw)


def _toml_config(tmp_path: Path, body: str) -> Path:
    config = tmp_path / "restorekit.toml"
    config.write_text(f'[restorekit]\nstate_dir = "{tmp_path / "state"}"\n\n{body}')
    return config


@pytest.mark.parametrize(("body", "says"), [
    ('[targets.production]\ndsn = "host=127.0.0.1 dbname=app"\ndsn_env = "X"\n'
     'repository = "file:///tmp/rk-repo"\n', "exactly one of dsn or dsn_env"),
    ('[targets.production]\ndsn = "host=127.0.0.1 dbname=app"\n', "needs repository"),
    ('[targets.production]\ndsn = "host=127.0.0.1 dbname=app"\nrepository = "ftp://x/y"\n',
     "unsupported repository scheme"),
    ('[targets.production\n', "not valid TOML"),
])
@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_cli_refuses_a_bad_config_with_exit_2(tmp_path: Path, body: str, says: str,
                                             command: list[str]) -> None:
    config = _toml_config(tmp_path, body)
    refused_by_cli(*command, "-t", "production", "-c", str(config), cwd=tmp_path, says=[says])
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_cli_refuses_a_dsn_with_a_non_numeric_port(tmp_path: Path, command: list[str]) -> None:
    config = _toml_config(tmp_path, '[targets.production]\n'
                          'dsn = "host=127.0.0.1 port=fivefour dbname=app"\n'
                          'repository = "file:///tmp/rk-repo"\n')
    refused_by_cli(*command, "-t", "production", "-c", str(config), cwd=tmp_path,
                   says=["port"])
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_cli_refuses_a_section_that_is_not_a_table(tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "restorekit.toml"
    config.write_text('targets = "production"\n')
    refused_by_cli(*command, "-t", "production", "-c", str(config), cwd=tmp_path,
                   says=["[targets] must be a table"])


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_cli_refuses_a_missing_config_file(tmp_path: Path, command: list[str]) -> None:
    # The installed script itself, for each command (the other cases run its entry point).
    refused_by_cli(*command, "-t", "production", "-c", str(tmp_path / "absent.toml"),
                   cwd=tmp_path, says=["absent.toml not found"], as_process=True)
    assert list(tmp_path.iterdir()) == []


def test_load_settings_names_the_file(tmp_path: Path) -> None:
    config = _toml_config(tmp_path, '[targets.production]\nrepository = "file:///tmp/r"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert str(config) in str(info.value)


# -- a snapshot location that is not writable -----------------------------------------------------

NOT_WRITABLE = "/proc/restorekit-not-writable/repo"


def test_cli_snapshot_into_an_unwritable_repository_fails_and_writes_nothing(
    world: Any, untouched: Callable[[], None], tmp_path: Path,
) -> None:
    config = tmp_path / "restorekit.toml"
    config.write_text(re.sub(r'(?m)^repository = ".*"$', f'repository = "file://{NOT_WRITABLE}"',
                             world.config.read_text()))
    result = cli("snapshot", "-t", "production", "-c", str(config), cwd=tmp_path)
    assert result.returncode != 0, result.stdout
    message = flat(result.stderr)
    assert NOT_WRITABLE in message and "failed" in message, result.stderr
    assert "Traceback" not in result.stderr
    untouched()


def test_take_snapshot_into_an_unwritable_repository_raises_a_repository_error(
    world: Any, untouched: Callable[[], None],
) -> None:
    from restorekit.errors import RepositoryError

    repo = LocalRepository(Path(NOT_WRITABLE))
    message = refused(lambda: take_snapshot(world.app_dsn, repo, label="nope", tables=["users"]),
                      RepositoryError)
    assert NOT_WRITABLE in message
    assert repo.list("snapshots/") == []
    untouched()


@contextlib.contextmanager
def unwritable(directory: Path) -> Iterator[None]:
    """Make ``directory`` unwritable even for root (immutable), else for us (mode 0555)."""
    directory.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(
            ["chattr", "+i", str(directory)], capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot make a directory unwritable for root here (chattr +i)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


def test_partial_corruption_does_not_repair_when_the_snapshot_cannot_be_written(
    prefect_server: str, world: Any, weird: Weird,
) -> None:
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        time.sleep(0.05)
        point = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        time.sleep(0.05)
        conn.execute("UPDATE clients SET email = 'corrupted ' || %s WHERE id %% 40 = 0",
                     (uuid.uuid4().hex,))
    world.wait_archived()
    snapshots = world.root / "repo" / "snapshots"
    before = capture(world)
    try:
        with unwritable(snapshots):
            message = refused(lambda: partial_corruption(PartialCorruptionParams(**_common(
                world, restore_point=point.isoformat(), tables=["clients"],
                incident_id=f"rel-pc-ro-{uuid.uuid4().hex[:6]}"))))
        assert "snapshots/" in message and "repo" in message, message
        # The repair never ran: production still holds exactly the corrupted rows.
        assert_production_untouched(before, capture(world))
    finally:
        discard_leftovers(world)


# -- a target that points at the same database as a scratch copy ----------------------------------


def test_cleanup_never_removes_the_database_the_target_points_at(
    world: Any, tmp_path: Path,
) -> None:
    provider = world.runtime().provider
    restored = provider.restore(RestorePoint.parse("immediate"),
                                name=f"rel-lookalike-{uuid.uuid4().hex[:6]}")
    dsn = restored.dsn.get_secret_value()
    port = parse_dsn(dsn)["port"]
    try:
        # E.g. after a manual `restore --to-new`, someone points the target at the copy.
        config = tmp_path / "restorekit.toml"
        config.write_text(
            f'[restorekit]\nstate_dir = "{world.runtime().settings.state_dir.absolute()}"\n\n'
            f'[targets.production]\ndsn = "host=127.0.0.1 port={port} user=postgres dbname=app"\n'
            f'repository = "file://{world.root / "repo"}"\n')
        result = cli("cleanup", "-t", "production", "-c", str(config), "--json", cwd=tmp_path)
        # A cleanup that failed would remove nothing either: it must have run.
        assert result.returncode == 0, result.stderr
        assert restored.handle not in json.loads(result.stdout)["removed"], result.stdout
        with psycopg.connect(dsn, connect_timeout=5) as conn:  # the target's database
            assert conn.execute("SELECT count(*) > 0 FROM users").fetchone() == (True,)
    finally:
        discard_leftovers(world)

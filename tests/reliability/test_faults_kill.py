"""kill -9 at every kind of step of the three scenario flows, and of PostgreSQL under them.

Each kill point runs the flow in a child process against the test Prefect server (tests/reliability/
_kill.py says how a point is reached without fault hooks in production code), sends SIGKILL, and
then proves:

* production is exactly as before the flow or exactly as the flow meant to leave it (checksums
  of every table), never in between;
* what the dead run left is visible: Prefect still shows it Running until the next run takes the
  target over and marks it Crashed; the application is stopped if the run had stopped it;
* a re-run with the same incident id finishes the job, reusing a finished restore (the scratch
  cluster's marker and port are the same ones: no second base-backup restore);
* scratch restores of other incidents are swept at the start of the next run, production and
  adopted restores never are, and `restorekit cleanup` stops a killed run's scratch PostgreSQL.

Kill points (task boundaries; "mid" ones are inside a task body):

complete-failure: after stop-application; mid restore (WAL replay); after restore; after swap
(before redeploy); after check-health (before adopt).
partial-corruption: mid restore; after restore; after the snapshot; mid repair (its transaction
has written rows); after repair.
accidental-deletion: after stop-application; after restore; mid recover-rows (transaction has
written rows); after recover-rows (application still stopped); after discard (before baseline).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fixtures.cli import CLI, cli_env
from psycopg.conninfo import make_conninfo
from reliability._kill import (
    alive,
    backend_gone,
    checksums,
    close_zygotes,
    flow_run_state,
    kill9_postgres,
    postmaster_pid,
    start_flow,
    wait_task_state,
    waiting_writer,
    zygote,
)

from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
from flows.complete_failure import CompleteFailureParams, complete_failure
from flows.partial_corruption import PartialCorruptionParams, partial_corruption
from restorekit.health import check_health
from restorekit.pg.cluster import LocalCluster
from restorekit.pg.tools import default_os_user
from restorekit.sinks.envfile import EnvFileStore
from tasks._runtime import TargetRef
from tasks.database import capture_baseline, restore_name

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def flow_zygote(prefect_server: str) -> Iterator[None]:
    """The process that forks the flow processes; started first, so that its imports overlap
    with the building of the worlds."""
    zygote(prefect_server)
    yield
    close_zygotes()


def marker(world: Any, name: str) -> dict[str, Any] | None:
    path = world.runtime().provider.restore_root / name / "restorekit-scratch.json"
    return json.loads(path.read_text()) if path.exists() else None


def app_dsn(world: Any) -> str:
    return EnvFileStore(world.env_file).read().get_secret_value()


def app_running(world: Any) -> bool:
    return world.runtime().app.is_running()


def assert_crashed_by_takeover(flow_run_id: Any) -> None:
    state = flow_run_state(flow_run_id)
    assert state.type.value == "CRASHED", state
    assert "died without finishing" in state.message and "took the target over" in state.message


def kill_mid_transaction(start: Callable[[], Any], dsn: str, table: str | None,
                         task: str | None, when: str,
                         before: Callable[[Any], None] | None = None) -> Any:
    """Start the flow (``start``) and kill it at ``task``/``when``. With ``table``, a lock held
    on it stops the flow's writing transaction in the middle, the kill lands there, and this
    returns once PostgreSQL has ended the orphaned backend (rolled back). ``before`` runs after
    the start, before the kill."""
    lock = hold_lock(dsn, table) if table else None
    writer = None
    try:
        child = start()
        if before is not None:
            before(child)
        if table is not None:  # earlier tables written, now waiting to write this one
            child.wait_until(lambda: waiting_writer(dsn, table) is not None,
                             f"the transaction waiting to write {table}")
            writer = waiting_writer(dsn, table)
        kill_at(child, task, when)
    finally:
        if lock is not None:
            lock.rollback()
            lock.close()
    if writer is not None:
        # Not child.wait_until: that gives up once the child has exited, which it has (killed).
        wait_for(lambda: backend_gone(dsn, writer), "the orphaned backend ended", timeout=60)
    return child


def kill_at(child: Any, task: str | None, when: str | None) -> dict[str, str]:
    """Wait for the child's kill point, check it in the Prefect API, SIGKILL it; returns the
    task states the API showed at the kill."""
    states: dict[str, str] = {}
    if task is not None:
        child.wait_for_line("KILLPOINT")
        states = wait_task_state(child.flow_run().id, task,
                                 "RUNNING" if when == "running" else "COMPLETED")
    child.kill9()
    return states


# -- scenario 1: complete failure ----------------------------------------------------------------

@pytest.fixture(scope="module")
def cf_world(pg_base_dir: Path, prefect_server: str) -> Any:
    """A second installation whose production is destroyed once, then restored at every point."""
    from fixtures.world import build_world, teardown_world

    world = build_world(pg_base_dir / f"cf-world-{time.monotonic_ns()}")
    rt = world.runtime()
    rt.app.start()
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        # A few WAL segments, so that replay takes long enough to be caught in the middle.
        for i in range(6):
            conn.execute("INSERT INTO users (name, email) SELECT 'wal' || g, 'wal' || g || %s "
                         "FROM generate_series(1, 2000) g", (f"-{i}@example.com",))
            conn.execute("SELECT pg_switch_wal()")
    world.wait_archived()
    capture_baseline.fn(TargetRef(target="production", config=str(world.config)))
    world.before = checksums(world.app_dsn)
    world.dead_dsn = app_dsn(world)
    # Every key of the app's connection (Prisma's DATABASE_URL and DIRECT_URL move together).
    world.dead_urls = dict(rt.store.read_all())
    world.production.stop(mode="immediate")  # the complete failure
    yield world
    teardown_world(world)


CF_POINTS = [
    ("after-stop-app", "stop-application", "completed"),
    ("mid-restore", None, "mid-restore"),
    ("after-restore", "restore-to-point-in-time", "completed"),
    ("after-swap", "swap-connection-string", "completed"),
    ("before-adopt", "check-health", "completed"),
]


@pytest.mark.parametrize(("point", "task", "when"), CF_POINTS, ids=[p[0] for p in CF_POINTS])
def test_complete_failure_killed(cf_world: Any, prefect_server: str, point: str,
                                 task: str | None, when: str) -> None:
    world = cf_world
    rt = world.runtime()
    # Every point starts from the failure: the app points at the dead database and runs.
    rt.store.write_all(world.dead_urls)
    rt.app.start()
    incident = f"kill-cf-{point}"
    name = restore_name("cf", incident)
    params = {"target": "production", "config": str(world.config), "require_approval": False,
              "incident_id": incident}

    child = start_flow("complete_failure", params, prefect_server,
                       (task, when) if task else None)
    if when == "mid-restore":
        data = rt.provider.restore_root / name / "data"
        child.wait_until(lambda: postmaster_pid(data) is not None, "the restore's server started")
    states = kill_at(child, task, when)
    killed = child.flow_run()
    assert killed.state.type.value == "RUNNING"  # nobody told Prefect: visible as still running

    # Production (what the application is configured with) is the old one or the full restore.
    dsn = app_dsn(world)
    left = marker(world, name)
    if dsn != world.dead_dsn:
        assert left and left["complete"]
        assert checksums(dsn) == world.before
    if when == "mid-restore":
        assert left is not None and not left["complete"]  # killed inside the restore
    if point in ("after-stop-app", "mid-restore", "after-restore", "after-swap"):
        assert not app_running(world), states  # the dead run had stopped it; nobody restarted it

    report = complete_failure(CompleteFailureParams(**params))

    assert report.outcome == "succeeded", report.error
    assert_crashed_by_takeover(killed.id)
    assert any("died while holding this target" in n for n in report.notes)
    after = marker(world, name)
    assert after["complete"] and after["adopted"]
    if left is not None and left.get("complete"):
        # The finished restore was reused: same cluster, same port, not restored again.
        assert (after["created_at"], after["port"]) == (left["created_at"], left["port"])
    assert checksums(app_dsn(world)) == world.before
    assert f":{after['port']}" in report.restored_database
    health = check_health(rt.health_url(), attempts=10)
    assert health.ok and health.connected
    # The restores of earlier points are production-adopted: nothing was swept, nothing lost.
    assert rt.provider.list_scratch() == []
    _stop_adopted(world, keep=name)


def _stop_adopted(world: Any, keep: str) -> None:
    """Stop the clusters earlier points adopted (the app no longer uses them) to save memory."""
    for home in world.runtime().provider.restore_root.iterdir():
        if home.name != keep and (home / "data" / "postmaster.pid").exists():
            LocalCluster(data_dir=home / "data", port=0, os_user=default_os_user()).stop(
                mode="immediate")


# -- scenario 2: partial corruption --------------------------------------------------------------

@pytest.fixture(scope="module")
def pc_point(world: Any, prefect_server: str) -> str:
    """A restore point before every corruption the partial-corruption points make."""
    world.wait_archived()
    point = world.clock().astimezone(UTC).isoformat()
    time.sleep(0.2)
    return point


def corrupt(world: Any) -> tuple[dict[str, str], dict[str, str]]:
    """Overwrite client emails and delete users behind the foreign keys' back (triggers and FKs
    off, as a bad migration might); returns (checksums before the corruption = what the repair
    must bring back, checksums after it = the state before the flow)."""
    intended = checksums(world.app_dsn)
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE clients SET email = 'corrupted-' || id WHERE id IN "
                     "(SELECT id FROM clients ORDER BY id LIMIT 5)")
        conn.execute("DELETE FROM users WHERE id IN (SELECT user_id FROM clients ORDER BY id "
                     "DESC LIMIT 3)")
    world.wait_archived()
    return intended, checksums(world.app_dsn)


def hold_lock(dsn: str, table: str, mode: str = "SHARE") -> psycopg.Connection:
    """A transaction holding a lock on ``table``: a writer blocks there in the middle of its own
    transaction, so a kill lands after it wrote rows and before it committed."""
    conn = psycopg.connect(dsn)
    conn.execute(f"LOCK TABLE {table} IN {mode} MODE")  # test-fixed identifiers only
    return conn


PC_POINTS = [
    ("mid-restore", None, "mid-restore"),
    ("after-restore", "restore-to-point-in-time", "completed"),
    ("after-snapshot", "snapshot-current-state", "completed"),
    ("mid-repair", None, "mid-repair"),
    ("after-repair", "repair-rows", "completed"),
]


@pytest.mark.parametrize(("point", "task", "when"), PC_POINTS, ids=[p[0] for p in PC_POINTS])
def test_partial_corruption_killed(world: Any, pc_point: str, prefect_server: str, point: str,
                                   task: str | None, when: str) -> None:
    rt = world.runtime()
    intended, before = corrupt(world)
    assert intended != before
    incident = f"kill-pc-{point}"
    name = restore_name("pc", incident)
    params = {"target": "production", "config": str(world.config), "require_approval": False,
              "incident_id": incident, "restore_point": pc_point, "tables": ["users", "clients"]}
    def restore_started(child: Any) -> None:
        data = rt.provider.restore_root / name / "data"
        child.wait_until(lambda: postmaster_pid(data) is not None, "the restore's server started")

    # mid-repair: users re-inserted, the repair waits to update clients when it is killed.
    child = kill_mid_transaction(
        lambda: start_flow("partial_corruption", params, prefect_server,
                           (task, when) if task else None),
        world.app_dsn, "clients" if when == "mid-repair" else None, task, when,
        before=restore_started if when == "mid-restore" else None)
    killed = child.flow_run()

    after_kill = checksums(world.app_dsn)
    expected = intended if point == "after-repair" else before
    assert after_kill == expected, "production is in between"

    report = partial_corruption(PartialCorruptionParams(**params))
    assert report.outcome == "succeeded", report.error
    assert_crashed_by_takeover(killed.id)
    assert checksums(world.app_dsn) == intended
    if point == "after-repair":
        assert not any(c.inserted or c.updated for c in report.changes)  # nothing left to do
    assert marker(world, name) is None  # the scratch copy was dropped at the end
    assert rt.provider.list_scratch() == []


# -- scenario 3: accidental deletion -------------------------------------------------------------

def delete_users(world: Any, count: int = 3) -> tuple[dict[str, str], dict[str, str], datetime]:
    """Delete users with clients and appointments (ON DELETE CASCADE); returns (the intended
    state: everything back, the audit log keeping its new rows; the state before the flow; the
    time just before the deletion)."""
    pre = checksums(world.app_dsn)
    since = world.clock()
    time.sleep(0.05)
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM users WHERE id IN (SELECT user_id FROM appointments "
                     "GROUP BY user_id ORDER BY user_id DESC LIMIT %s)", (count,))
    world.wait_archived()
    before = checksums(world.app_dsn)
    intended = {**pre, "public.audit_log": before["public.audit_log"]}
    assert intended != before
    return intended, before, since


AD_POINTS = [
    ("after-stop-app", "stop-application", "completed"),
    ("after-restore", "restore-to-point-in-time", "completed"),
    ("mid-recover", None, "mid-recover"),
    ("after-recover", "recover-rows", "completed"),
    ("after-discard", "discard-restored", "completed"),
]


@pytest.mark.parametrize(("point", "task", "when"), AD_POINTS, ids=[p[0] for p in AD_POINTS])
def test_accidental_deletion_killed(world: Any, prefect_server: str, point: str,
                                    task: str | None, when: str) -> None:
    rt = world.runtime()
    rt.app.start()
    intended, before, since = delete_users(world)
    incident = f"kill-ad-{point}"
    name = restore_name("ad", incident)
    params = {"target": "production", "config": str(world.config), "require_approval": False,
              "incident_id": incident, "deleted_since": since.isoformat(),
              "stop_application": True}
    # mid-recover: users and clients re-inserted, waiting to insert appointments at the kill.
    child = kill_mid_transaction(
        lambda: start_flow("accidental_deletion", params, prefect_server,
                           (task, when) if task else None),
        world.app_dsn, "appointments" if when == "mid-recover" else None, task, when)
    killed = child.flow_run()
    left = marker(world, name)

    after_kill = checksums(world.app_dsn)
    recovered = point in ("after-recover", "after-discard")
    assert after_kill == (intended if recovered else before), "production is in between"
    # The dead run stopped the app and never got to resume it: visible, and the re-run fixes it.
    assert app_running(world) == (point == "after-discard")

    report = accidental_deletion(AccidentalDeletionParams(**params))
    assert report.outcome == "succeeded", report.error
    assert_crashed_by_takeover(killed.id)
    assert checksums(world.app_dsn) == intended
    if left is not None and left.get("complete"):
        reused = report.restored_database
        assert f":{left['port']}" in reused  # the same scratch cluster, not restored again
    if recovered:
        assert sum(c.inserted for c in report.changes) == 0
    assert app_running(world)
    assert check_health(rt.health_url(), attempts=10).ok
    assert marker(world, name) is None and rt.provider.list_scratch() == []


# -- PostgreSQL killed under a running flow ------------------------------------------------------

def run_in_thread(fn: Any, params: Any) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["report"] = fn(params)
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def wait_for(condition: Any, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not reached: {what}"
        time.sleep(0.05)


def test_production_killed_mid_recovery_fails_clearly_and_changes_nothing(
        world: Any, prefect_server: str) -> None:
    rt = world.runtime()
    rt.app.start()
    intended, before, since = delete_users(world)
    params = AccidentalDeletionParams(
        target="production", config=str(world.config), require_approval=False,
        incident_id="kill-pg-production", deleted_since=since)
    lock = hold_lock(world.app_dsn, "appointments")
    thread, result = run_in_thread(accidental_deletion, params)
    wait_for(lambda: waiting_writer(world.app_dsn, "appointments") is not None,
             "the recovery transaction waiting in the middle")
    kill9_postgres(world.production.data_dir)
    thread.join(300)
    lock.close()

    error = str(result.get("error"))
    assert "recover-rows: lost the connection to the production database" in error, error
    assert "ONE transaction" in error and "re-run with the same incident id" in error
    world.production.start()  # crash recovery
    assert checksums(world.app_dsn) == before  # the half-done transaction is gone

    name = restore_name("ad", "kill-pg-production")
    left = marker(world, name)
    assert left and left["complete"]  # the finished scratch copy is kept for the re-run
    report = accidental_deletion(params)
    assert report.outcome == "succeeded", report.error
    assert f":{left['port']}" in report.restored_database  # reused
    assert checksums(world.app_dsn) == intended


def test_scratch_killed_mid_diff_is_retried_and_the_run_completes(
        world: Any, pc_point: str, prefect_server: str) -> None:
    rt = world.runtime()
    intended, before = corrupt(world)
    name = restore_name("pc", "kill-pg-scratch")
    params = PartialCorruptionParams(
        target="production", config=str(world.config), require_approval=False,
        incident_id="kill-pg-scratch", restore_point=pc_point, tables=["users", "clients"])
    data = rt.provider.restore_root / name / "data"
    holder: dict[str, Any] = {}
    thread, result = run_in_thread(partial_corruption, params)

    def lock_the_copy() -> bool:
        meta = marker(world, name)
        if not (meta and meta.get("complete")):
            return False
        # The diff reads the copy next: make it wait there, then kill the copy under it.
        holder["lock"] = hold_lock(copy_dsn(world, meta), "clients", "ACCESS EXCLUSIVE")
        return True

    wait_for(lock_the_copy, "the scratch copy restored")
    copy = copy_dsn(world, marker(world, name))
    wait_for(lambda: _waiting_reader(copy), "the diff waiting on the copy")
    assert checksums(world.app_dsn) == before
    killed_pid = kill9_postgres(data)
    thread.join(300)
    holder["lock"].close()

    assert "error" not in result, result.get("error")
    report = result["report"]
    assert report.outcome == "succeeded"
    assert checksums(world.app_dsn) == intended
    assert not alive(killed_pid) and marker(world, name) is None


def copy_dsn(world: Any, meta: dict[str, Any]) -> str:
    """A restored copy's DSN: it keeps the source's roles and pg_hba.conf, so it is reached with
    the source's credentials (the superuser's password) at its own port."""
    return make_conninfo(world.app_dsn, port=meta["port"], dbname=meta.get("database", "app"))


def _waiting_reader(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND "
                            "relation = 'clients'::regclass").fetchone()[0] > 0


# -- sweeping what killed runs leave behind ------------------------------------------------------

def test_next_run_sweeps_stale_scratch_of_other_incidents_and_never_production(
        world: Any, pc_point: str, prefect_server: str) -> None:
    """A run of incident A killed after its restore leaves a running scratch cluster; a run of
    incident B sweeps it at its start (stopping its server). Never swept: an adopted restore, the
    restore the target's DSN points at, the one the app's connection string points at, and a
    restore made by hand with `restorekit restore --to-new`."""
    rt = world.runtime()
    provider = rt.provider
    corrupt(world)
    stale = restore_name("pc", "sweep-a")
    child = start_flow("partial_corruption", {
        "target": "production", "config": str(world.config), "require_approval": False,
        "incident_id": "sweep-a", "restore_point": pc_point, "tables": ["users", "clients"]},
        prefect_server, ("restore-to-point-in-time", "completed"))
    kill_at(child, "restore-to-point-in-time", "completed")
    stale_pid = postmaster_pid(provider.restore_root / stale / "data")
    assert alive(stale_pid)

    # What must survive, next to it: an adopted restore, one the app's DSN points at (a
    # complete-failure run killed after its swap), and a hand-made one.
    from restorekit.models import RestorePoint

    adopted = provider.restore(RestorePoint.parse(pc_point),
                               name=restore_name("cf", "sweep-adopted"))
    provider.adopt(adopted)
    in_use = provider.restore(RestorePoint.parse(pc_point), name=restore_name("cf", "sweep-in-use"))
    by_hand = provider.restore(RestorePoint.parse(pc_point), name="production-by-hand")
    original = dict(rt.store.read_all())
    try:
        rt.store.write_all({key: in_use.dsn for key in rt.store.keys})  # as a swap moves them
        # Dry run: the plan names what would be swept, and nothing is touched.
        dry = partial_corruption(PartialCorruptionParams(
            target="production", config=str(world.config), require_approval=False,
            incident_id="sweep-b", restore_point=pc_point, tables=["users", "clients"],
            dry_run=True))
        assert any(stale in line for line in dry.plan)
        assert alive(stale_pid)
        # The sweep alone (the flow's first step after the plan) under the app's new DSN.
        from tasks.database import sweep_stale_restores

        swept = sweep_stale_restores.fn(TargetRef(target="production", config=str(world.config)),
                                        [restore_name("pc", "sweep-b")])
        assert swept == [stale]
    finally:
        rt.store.write_all(original)
    assert not alive(stale_pid), "the stale scratch server was not stopped"
    assert marker(world, stale) is None
    for kept in (adopted, in_use, by_hand):
        assert Path(kept.handle).exists(), kept.handle
    assert world.production.is_running()

    # A whole run of incident B sweeps the same way at its start (nothing stale is left now
    # but the in-use one, which is no longer in use: it is swept; adopted and by-hand stay).
    report = partial_corruption(PartialCorruptionParams(
        target="production", config=str(world.config), require_approval=False,
        incident_id="sweep-b", restore_point=pc_point, tables=["users", "clients"]))
    assert report.outcome == "succeeded", report.error
    assert "sweep stale restores" in [s.name for s in report.steps]
    assert not Path(in_use.handle).exists()
    assert Path(adopted.handle).exists() and Path(by_hand.handle).exists()
    for leftover in (adopted, by_hand):
        home = Path(leftover.handle)
        if leftover is by_hand:
            provider.discard(leftover)
        else:
            LocalCluster(data_dir=home / "data", port=0, os_user=default_os_user()).stop(
                mode="immediate")


def test_cleanup_stops_a_killed_restore_and_keeps_what_the_app_uses(
        world: Any, prefect_server: str) -> None:
    """A run killed in the middle of its restore leaves a PostgreSQL server running recovery
    in an unfinished scratch directory: `restorekit cleanup` stops it and removes it; the restore
    the application's connection string points at is kept and named."""
    rt = world.runtime()
    rt.app.start()
    _, _, since = delete_users(world, count=1)
    name = restore_name("ad", "cleanup-mid-restore")
    child = start_flow("accidental_deletion", {
        "target": "production", "config": str(world.config), "require_approval": False,
        "incident_id": "cleanup-mid-restore", "deleted_since": since.isoformat()},
        prefect_server)
    data = rt.provider.restore_root / name / "data"
    child.wait_until(lambda: postmaster_pid(data) is not None, "the restore's server started")
    child.kill9()
    pid = postmaster_pid(data)
    assert alive(pid)

    from restorekit.models import RestorePoint

    in_use = rt.provider.restore(RestorePoint.latest(), name=restore_name("cf", "cleanup-in-use"))
    original = dict(rt.store.read_all())
    rt.store.write_all({key: in_use.dsn for key in rt.store.keys})  # as a swap moves them
    try:
        out = subprocess.run([*CLI, "cleanup", "-c", str(world.config), "-t", "production",
                              "--json"], capture_output=True, text=True, timeout=180,
                             env=cli_env())
    finally:
        rt.store.write_all(original)
    assert out.returncode == 0, out.stderr
    data_out = json.loads(out.stdout)
    assert str(rt.provider.restore_root / name) in data_out["removed"]
    assert data_out["kept_in_use"] == [in_use.handle]
    wait_for(lambda: not alive(pid), "the killed restore's server stopped", timeout=60)
    assert not (rt.provider.restore_root / name).exists()
    rt.provider.discard(in_use)
    # Finish the incident so the module's later state is clean.
    report = accidental_deletion(AccidentalDeletionParams(
        target="production", config=str(world.config), require_approval=False,
        incident_id="cleanup-mid-restore", deleted_since=since))
    assert report.outcome == "succeeded", report.error

"""Scenarios 2 and 3 on a target that is serving a pgbench workload the whole time (issue #7).

Two workloads, each keeping a ledger written in the same transaction as its change:

* pgbench's own TPC-B schema (``pgbench -i --foreign-keys -s 1`` in the production database),
  driven by pgbench's tpcb-like transaction plus a ledger row (``pgbench_ledger``);
* the sample schema: new users with a client and an appointment, phone changes of existing
  clients, new, changed and deleted appointments, all of users that are NOT being damaged
  (``load_ledger`` holds each change's before and after row text, a chain per row).

pgbench is the application: it connects as the application's own role with the password of its
DATABASE_URL (in PGPASSWORD; the production cluster demands scram-sha-256), while restorekit and
the damage use the superuser's. It runs at a fixed rate (``RATE``) in back-to-back runs of a
second, from before the damage until after the flow has returned (it prints its figures only
when ``-T`` runs out). For each combination the test proves:

* the flow's report says ``succeeded``;
* every pgbench run exits 0 with ``number of failed transactions: 0`` (the plans of scenarios 2
  and 3 announce no maintenance window, so no error is allowed);
* the damaged rows are back byte for byte (``row::text`` captured before the damage);
* every change the workload committed is still there with its latest value, and what it
  deleted stays deleted (set-based anti-joins against the ledger; every ledgered update
  started from the previous ledgered version of its row, so nothing reverted a write in
  between; for TPC-B: every balance equals the sum of its ledgered deltas, every ledgered
  transaction has its history row and vice versa), and the workload did commit changes while
  the flow ran.

The workload's throughput and latency with and without the flow (pgbench's own figures) are
printed as an observation; nothing asserts on time.

Users 1..VICTIM_MAX are reserved for damage; each test damages its own slice of them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fixtures.cascade import cascade_rows
from fixtures.world import World, build_world, teardown_world
from reliability._load import (
    SAMPLE_CHECKS,
    SAMPLE_LEDGER_DDL,
    SAMPLE_SCRIPTS,
    TPCB_CHECKS,
    TPCB_LEDGER_DDL,
    TPCB_LEDGER_SCRIPT,
    PgbenchCommand,
    Workload,
    committed_between,
    pgbench_command,
    pgbench_init,
    run_pgbench,
    violations,
)

from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
from flows.partial_corruption import PartialCorruptionParams, partial_corruption
from restorekit.report import IncidentReport
from restorekit.sample import BASE_ROWS

pytestmark = pytest.mark.slow

SCALE = 0.1  # sample data: 1000 users, 3000 clients, 6000 appointments
INITIAL_USERS = round(BASE_ROWS["users"] * SCALE)
PGBENCH_SCALE = 1  # 100k pgbench_accounts
CLIENTS = 2
CHUNK_SECONDS = 1  # length of each back-to-back pgbench run (stop() waits for the current one)
# Transactions per second the workload offers (pgbench -R), in all. Unthrottled, pgbench kept
# both cores busy (1,700-2,900 tps here), and each restore of the module replayed the WAL of
# every earlier test's workload: the tests took 8-21 s each, the file 94 s. At 300 tps a
# transaction still starts every few milliseconds through every step of every flow (300-1,000
# commit during each flow: `committed_during_flow` in the figures), which the ledgers check.
RATE = 300
BASELINE_SECONDS = 1  # the runs without a flow (just before and just after), for comparison
VICTIM_MAX = 100  # users 1..100 may be damaged; the workloads never touch them

FIGURES: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
def load_world(pg_base_dir: Path) -> Iterator[World]:
    """The embedded installation with pgbench's schema and the two ledgers next to the sample
    schema, and a base backup taken after them (so restores replay only the tests' WAL)."""
    inst = build_world(pg_base_dir / f"load-{time.monotonic_ns()}", scale=SCALE)
    try:
        rt = inst.runtime()
        assert rt.app is not None
        rt.app.start()  # type: ignore[attr-defined]
        # The workload is the application: its own role and password (its DATABASE_URL; the
        # cluster demands scram-sha-256), owner of pgbench's tables and the ledgers as of the
        # sample schema. restorekit and the damage use the superuser's DSN.
        pgbench_init(inst.app_url, scale=PGBENCH_SCALE)
        with psycopg.connect(inst.app_url, autocommit=True) as conn:
            conn.execute(TPCB_LEDGER_DDL)
            conn.execute(SAMPLE_LEDGER_DDL)
        rt.provider.create_backup("load-tests")
        (inst.root / "pgbench").mkdir()
        yield inst
    finally:
        if FIGURES:
            print("\nload figures (pgbench's own; observation, not assertion):")
            for row in FIGURES:
                print("  ", row)
        teardown_world(inst)


def _scripts(world: World, kind: str) -> list[Path]:
    texts = {"tpcb": TPCB_LEDGER_SCRIPT} if kind == "tpcb" else SAMPLE_SCRIPTS
    paths = []
    for name, text in texts.items():
        path = world.root / "pgbench" / f"{name}.sql"
        path.write_text(text)
        paths.append(path)
    return paths


def run_under_load(
    world: World, kind: str, damage: Callable[[psycopg.Connection[Any]], None],
    flow: Callable[[], IncidentReport], name: str,
) -> tuple[IncidentReport, Workload]:
    """A pgbench run without a flow, then pgbench continuously while ``damage`` happens and
    ``flow`` runs (stopped, its current run completed, after the flow returned), then another
    run without a flow. Asserts that no pgbench run failed a transaction."""
    scripts = _scripts(world, kind)
    # Existing users the workload may change: the generated ones above the victims' range.
    defines = {"vmax": VICTIM_MAX, "nusers": INITIAL_USERS} if kind == "sample" else {}

    def command(seconds: int) -> PgbenchCommand:
        return pgbench_command(world.app_url, scripts, clients=CLIENTS, seconds=seconds,
                               defines=defines, rate=RATE)

    ledger = "pgbench_ledger" if kind == "tpcb" else "load_ledger"
    before = run_pgbench(command(BASELINE_SECONDS), BASELINE_SECONDS)
    workload = Workload(command, chunk=CHUNK_SECONDS).start()
    try:
        workload.wait_writing(world.app_dsn, ledger)  # the damage happens while it writes
        with psycopg.connect(world.app_dsn, autocommit=True) as conn:
            damage(conn)
        world.wait_archived()
        started = datetime.now(UTC)
        report = flow()
        finished = datetime.now(UTC)
    finally:
        workload.stop()
    after = run_pgbench(command(BASELINE_SECONDS), BASELINE_SECONDS)
    during = committed_between(world.app_dsn, ledger, started, finished)
    flow_seconds = (finished - started).total_seconds()
    FIGURES.append({
        "test": name, "workload": kind, "clients": CLIENTS, "rate_limit_tps": RATE,
        "flow_seconds": round(flow_seconds, 1),
        "committed_during_flow": during,
        "tps_during_flow": round(during / flow_seconds, 1),  # from the ledger, flow window only
        "without_flow": [{"tps": round(r.tps, 1), "latency_ms": r.latency_ms,
                          "max_latency_ms": r.max_latency_ms, "processed": r.processed,
                          "failed": r.failed} for r in (before, after)],
        "with_flow": workload.summary(),
    })
    print(name, FIGURES[-1])
    # The workload ran the whole time and none of its transactions failed.
    for run in (before, *workload.runs, after):
        assert run.returncode == 0, run.output
        assert run.failed == 0, run.output
    assert during > 0, "the workload committed nothing while the flow ran"
    return report, workload


# -- damage and the rows it destroys ---------------------------------------------------------------


class Corruption:
    """Scenario 2's damage in a slice of users: emails overwritten, and users deleted behind the
    foreign keys' back (their clients and appointments stay, orphaned).

    ``atomic``: the damage is one transaction that first locks the tables the workload writes
    (the workload waits for it, and does not fail), so no workload write commits between the
    restore point and the end of the damage: by time alone those writes could not be told from
    the corruption. ``ended`` is then the damage's commit time."""

    def __init__(self, world: World, lo: int, hi: int, *, atomic: bool = False) -> None:
        self.world = world
        self.users = list(range(lo, hi + 1))
        self.corrupted = [u for u in self.users if u % 2 == 0]
        self.deleted = [u for u in self.users if u % 2 == 1][:3]
        with psycopg.connect(world.app_dsn) as conn:
            self.before = cascade_rows(conn, self.users)
        self.point: datetime | None = None
        self.atomic = atomic
        self.ended: datetime | None = None

    def __call__(self, conn: psycopg.Connection[Any]) -> None:
        if self.atomic:
            with conn.transaction():
                conn.execute("LOCK TABLE clients, appointments IN SHARE ROW EXCLUSIVE MODE")
                self.point = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
                conn.execute("UPDATE users SET email = 'corrupted-' || id WHERE id = ANY(%s)",
                             (self.corrupted,))
                conn.execute("SET LOCAL session_replication_role = replica")
                conn.execute("DELETE FROM users WHERE id = ANY(%s)", (self.deleted,))
            self.ended = conn.execute(
                "SELECT pg_xact_commit_timestamp(xmin) FROM users WHERE id = %s",
                (self.corrupted[0],)).fetchone()[0]  # type: ignore[index]
            return
        time.sleep(0.1)
        self.point = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        time.sleep(0.1)
        conn.execute("UPDATE users SET email = 'corrupted-' || id WHERE id = ANY(%s)",
                     (self.corrupted,))
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute("DELETE FROM users WHERE id = ANY(%s)", (self.deleted,))

    def flow(self, incident: str) -> IncidentReport:
        assert self.point is not None
        return partial_corruption(PartialCorruptionParams(
            target="production", config=str(self.world.config),
            restore_point=self.point.isoformat(), tables=["users"], require_approval=False,
            incident_id=incident))

    def check(self, report: IncidentReport) -> None:
        assert report.outcome == "succeeded", report.error
        with psycopg.connect(self.world.app_dsn) as conn:
            assert cascade_rows(conn, self.users) == self.before  # byte for byte
        changes = {c.table: c for c in report.changes}
        assert changes["public.users"].inserted == len(self.deleted)
        assert changes["public.users"].updated == len(self.corrupted)
        assert changes["public.users"].deleted == 0
        assert all(c.ok for c in report.checks if c.critical)
        assert self.world.runtime().provider.list_scratch() == []


class Deletion:
    """Scenario 3's damage: users of a slice that have appointments deleted, with cascades."""

    def __init__(self, world: World, lo: int, hi: int) -> None:
        self.world = world
        with psycopg.connect(world.app_dsn) as conn:
            self.victims = [r[0] for r in conn.execute(
                "SELECT id FROM users WHERE id BETWEEN %s AND %s "
                "AND id IN (SELECT user_id FROM appointments) ORDER BY id LIMIT 5", (lo, hi))]
            self.before = cascade_rows(conn, self.victims)
        assert self.before["clients"] and self.before["appointments"]
        self.since: datetime | None = None

    def __call__(self, conn: psycopg.Connection[Any]) -> None:
        self.since = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        conn.execute("DELETE FROM users WHERE id = ANY(%s)", (self.victims,))
        assert cascade_rows(conn, self.victims) == {"users": [], "clients": [], "appointments": []}

    def flow(self, incident: str) -> IncidentReport:
        return accidental_deletion(AccidentalDeletionParams(
            target="production", config=str(self.world.config), require_approval=False,
            incident_id=incident, deleted_since=self.since))

    def check(self, report: IncidentReport) -> None:
        assert report.outcome == "succeeded", report.error
        with psycopg.connect(self.world.app_dsn) as conn:
            assert cascade_rows(conn, self.victims) == self.before  # byte for byte
        inserted = {c.table: c.inserted for c in report.changes}
        assert inserted["public.users"] == len(self.victims)
        assert inserted["public.clients"] == len(self.before["clients"])
        assert inserted["public.appointments"] == len(self.before["appointments"])
        assert all(c.ok for c in report.checks if c.critical)
        assert self.world.runtime().provider.list_scratch() == []


# -- the tests -------------------------------------------------------------------------------------


def _newer_users_kept(report: IncidentReport) -> None:
    """Users the workload created after the restore point are kept (not in the copy)."""
    note = next(n for n in report.notes if n.startswith("public.users:"))
    newer = re.search(r"(\d+) newer than the restore point", note)
    assert newer is not None and int(newer.group(1)) > 0, note


# Each case damages its own slice of the victims' range (users 1..100).
@pytest.mark.parametrize(("damage_kind", "lo", "hi", "workload", "also"), [
    pytest.param(Corruption, 1, 20, "tpcb", None, id="scenario-2-pgbench-tpcb"),
    pytest.param(Deletion, 21, 40, "tpcb", None, id="scenario-3-pgbench-tpcb"),
    pytest.param(Corruption, 41, 60, "sample", _newer_users_kept, id="scenario-2-sample"),
    pytest.param(Deletion, 61, 80, "sample", None, id="scenario-3-sample"),
])
def test_a_scenario_under_a_workload_loses_no_write(
    prefect_server: str, load_world: World, damage_kind: type[Corruption] | type[Deletion],
    lo: int, hi: int, workload: str, also: Callable[[IncidentReport], None] | None,
) -> None:
    damage = damage_kind(load_world, lo, hi)
    scenario = "2" if damage_kind is Corruption else "3"
    report, _ = run_under_load(
        load_world, workload, damage, lambda: damage.flow(f"load-{lo}-{workload}"),
        f"scenario {scenario} + {'pgbench tpcb' if workload == 'tpcb' else 'sample workload'}")
    damage.check(report)
    checks = TPCB_CHECKS if workload == "tpcb" else SAMPLE_CHECKS
    assert violations(load_world.app_dsn, checks) == {}
    if also is not None:
        also(report)


# Without options, scenario 2 rewrites every row of a repaired table that differs from the copy
# (its plan says so; tests/flows/test_partial_corruption.py), which reverts the workload's
# updates. The two tests below use the options that keep them.


def test_repairing_the_tables_the_findings_name_keeps_the_workloads_updates(
    prefect_server: str, load_world: World
) -> None:
    """No tables given, so the flow repairs the tables behind the live integrity findings; the
    orphans name clients and appointments, which the workload updates and deletes from. With
    keep_rows_written_after = the end of the corruption, what the workload wrote (and deleted:
    the audit log records it) after that is left alone."""
    damage = Corruption(load_world, 81, 100, atomic=True)
    report, _ = run_under_load(
        load_world, "sample", damage,
        lambda: partial_corruption(PartialCorruptionParams(
            target="production", config=str(load_world.config),
            restore_point=damage.point.isoformat(),  # type: ignore[union-attr]
            keep_rows_written_after=damage.ended,
            require_approval=False, incident_id="load-pc-findings")),
        "scenario 2 (tables from findings) + sample workload")
    assert report.outcome == "succeeded", report.error
    with psycopg.connect(load_world.app_dsn) as conn:
        assert cascade_rows(conn, damage.users) == damage.before  # byte for byte
    assert violations(load_world.app_dsn, SAMPLE_CHECKS) == {}
    changes = {c.table: c for c in report.changes}
    assert changes["public.users"].inserted == len(damage.deleted)
    assert changes["public.users"].updated == len(damage.corrupted)
    assert any(n.startswith("left alone as written after") for n in report.notes), report.notes


def test_repairing_a_table_the_workload_updates_keeps_its_updates(
    prefect_server: str, load_world: World
) -> None:
    with psycopg.connect(load_world.app_dsn) as conn:
        before = dict(conn.execute(
            "SELECT aid, filler FROM pgbench_accounts WHERE aid % 1000 = 0").fetchall())
    point: list[datetime] = []

    def corrupt(conn: psycopg.Connection[Any]) -> None:
        time.sleep(0.1)
        point.append(conn.execute("SELECT clock_timestamp()").fetchone()[0])  # type: ignore[index]
        time.sleep(0.1)
        conn.execute("UPDATE pgbench_accounts SET filler = 'corrupted' WHERE aid % 1000 = 0")

    report, _ = run_under_load(
        load_world, "tpcb", corrupt,
        lambda: partial_corruption(PartialCorruptionParams(
            target="production", config=str(load_world.config),
            restore_point=point[0].isoformat(), tables=["pgbench_accounts"],
            columns=["filler"],  # the balances the workload updates are not rewritten
            require_approval=False, incident_id="load-pc-accounts")),
        "scenario 2 on pgbench_accounts + pgbench tpcb")
    assert report.outcome == "succeeded", report.error
    with psycopg.connect(load_world.app_dsn) as conn:
        assert dict(conn.execute(
            "SELECT aid, filler FROM pgbench_accounts WHERE aid % 1000 = 0").fetchall()) == before
    assert violations(load_world.app_dsn, TPCB_CHECKS) == {}
    assert {c.table: c.updated for c in report.changes} == {"public.pgbench_accounts": len(before)}

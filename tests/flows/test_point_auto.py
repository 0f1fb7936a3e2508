"""``--point auto`` through the scenario flows, on a production-shaped installation (scram, a
non-superuser app role) whose schema keeps no audit log of its own: quoted names and a
self-referencing org tree with ON DELETE CASCADE, as a new user's schema would be.

Each flow finds the damaging transaction in the archived WAL, restores just before it, and the
report says how the point was found; the plan says what a restore would lose (scenario 1) or
which later writes the row-level repair keeps (scenarios 2 and 3)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fixtures.module_world import ModuleWorld
from fixtures.pg import in_one_transaction
from fixtures.world import installation

from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
from flows.complete_failure import CompleteFailureParams, complete_failure
from flows.partial_corruption import PartialCorruptionParams, partial_corruption
from restorekit.demo import APP_ROLE, Installation
from tasks._runtime import TargetRef
from tasks.database import capture_baseline

pytestmark = pytest.mark.slow

ORG = '"Org Tree ü"'


@contextlib.contextmanager
def org_installation(pg_base_dir: Path) -> Iterator[Installation]:
    with installation(pg_base_dir, "auto", scale=0.005) as inst:
        with psycopg.connect(inst.app_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {ORG} (id int PRIMARY KEY, parent int REFERENCES "
                         f"{ORG}(id) ON DELETE CASCADE, name text, budget int)")
            conn.execute(f"INSERT INTO {ORG} SELECT g, CASE WHEN g > 1 THEN g / 2 END, "
                         "'org ' || g, 1000 FROM generate_series(1, 300) g")
            conn.execute(f"ALTER TABLE {ORG} OWNER TO {APP_ROLE}")  # the app's migration
        # As after any migration: a base backup that holds the table (the default good
        # point) and the baseline a restore is verified against.
        inst.runtime().provider.create_backup("with the org tree")
        capture_baseline.fn(TargetRef(target="production", config=str(inst.config)))
        inst.runtime().app.start()  # type: ignore[union-attr]
        yield inst


@pytest.fixture(scope="module")
def _worlds(pg_base_dir: Path) -> Iterator[ModuleWorld[Installation]]:
    with ModuleWorld(lambda: org_installation(pg_base_dir)) as worlds:
        yield worlds


@pytest.fixture
def prod(_worlds: ModuleWorld[Installation]) -> Installation:
    """The module's installation (shared), its production the one the application uses."""
    return _worlds.get()


@pytest.fixture
def spent_prod(_worlds: ModuleWorld[Installation]) -> Iterator[Installation]:
    """The installation for a test after which the application runs on a restored database
    (``prod.app_dsn`` no longer its production): a later test gets a new installation."""
    with _worlds.spent() as inst:
        yield inst


def tree(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(f"SELECT t::text FROM {ORG} t ORDER BY id")]


def test_accidental_deletion_with_point_auto_brings_back_the_subtree(
        prefect_server: str, prod: Installation) -> None:
    before = tree(prod.app_dsn)
    with psycopg.connect(prod.app_dsn, autocommit=True) as conn:
        in_one_transaction(conn, f"UPDATE {ORG} SET name = 'renamed' WHERE id = 3")  # moves the row
        # deletes it and its whole subtree
        damage = in_one_transaction(conn, f"DELETE FROM {ORG} WHERE id = 3")
        in_one_transaction(conn, f"INSERT INTO {ORG} VALUES (1000, 1, 'later', 1)")  # life goes on
    prod.wait_archived()
    expected = sorted([*[r for r in before if not r.startswith("(3,")],
                       "(3,1,renamed,1000)", "(1000,1,later,1)"],
                      key=lambda r: int(r.strip("(").split(",")[0]))

    report = accidental_deletion(AccidentalDeletionParams(
        target="production", config=str(prod.config), require_approval=False,
        incident_id="auto-ad", restore_point="auto", table=ORG, ids=["3"]))

    assert report.outcome == "succeeded", report.error
    assert report.point_found["found_by"] == "WAL scan"
    assert report.point_found["xid"] == damage
    assert report.restore_point.startswith(f"before-xid:{damage}@")
    assert any("Restore point before-xid" in p and "found by WAL scan" in p for p in report.plan)
    assert any(p.startswith("Kept: row-level repair") and "inserted" in p for p in report.plan)
    assert "**Point found by:** WAL scan" in report.to_markdown()
    assert tree(prod.app_dsn) == expected  # the subtree is back, byte for byte; later rows stay


def test_partial_corruption_with_point_auto_finds_the_update_of_the_column(
        prefect_server: str, prod: Installation) -> None:
    with psycopg.connect(prod.app_dsn, autocommit=True) as conn:
        # (not in the subtree the deletion test deletes and brings back in this same
        # installation, whichever of the two runs first: 3, 6, 7, 12-15, 24-31...)
        in_one_transaction(conn, f"UPDATE {ORG} SET name = name || '!' WHERE id IN (20, 22)")
        damage = in_one_transaction(
            conn, f"UPDATE {ORG} SET budget = -1 WHERE id BETWEEN 20 AND 23")
        in_one_transaction(conn, f"UPDATE {ORG} SET name = 'renamed later' WHERE id = 21")
        names = {r[0]: r[1] for r in conn.execute(f"SELECT id, name FROM {ORG} WHERE id "
                                                     "BETWEEN 20 AND 23")}
    prod.wait_archived()

    report = partial_corruption(PartialCorruptionParams(
        target="production", config=str(prod.config), require_approval=False,
        incident_id="auto-pc", restore_point="auto", tables=[ORG], damaged_ids=["20", "22"],
        damaged_column="budget", columns=["budget"]))

    assert report.outcome == "succeeded", report.error
    assert report.point_found["xid"] == damage
    assert "column budget" in report.point_found["what"]
    with psycopg.connect(prod.app_dsn) as conn:
        rows = {r[0]: (r[1], r[2]) for r in conn.execute(
            f"SELECT id, name, budget FROM {ORG} WHERE id BETWEEN 20 AND 23")}
    assert {i: b for i, (_, b) in rows.items()} == {i: 1000 for i in range(20, 24)}
    assert {i: n for i, (n, _) in rows.items()} == names  # the later rename is kept
    assert any("updated the rows but not budget" in n for n in report.point_found["notes"])


def test_complete_failure_with_point_auto_after_a_drop_table(
        prefect_server: str, spent_prod: Installation) -> None:
    prod = spent_prod
    before = tree(prod.app_dsn)
    with psycopg.connect(prod.app_dsn, autocommit=True) as conn:
        in_one_transaction(
            conn, "INSERT INTO users (name, email) VALUES ('kept', 'kept@example.com')")
        damage = in_one_transaction(conn, f"DROP TABLE {ORG}")
        in_one_transaction(
            conn, "INSERT INTO users (name, email) VALUES ('lost', 'lost@example.com')")
    prod.wait_archived()

    report = complete_failure(CompleteFailureParams(
        target="production", config=str(prod.config), require_approval=False,
        incident_id="auto-cf", restore_point="auto", damaged_table=ORG))

    assert report.outcome == "succeeded", report.error
    assert report.point_found["xid"] == damage
    assert report.point_found["what"].startswith("DROP TABLE")
    loss = next(p for p in report.plan if p.startswith("A restore to before-xid"))
    # What is lost: the DROP itself and the later insert into users (not just any "users").
    assert "public.users: 1 inserted, 0 updated, 0 deleted" in loss, loss
    assert "removed at commit (TRUNCATE, DROP or rewrite)" in loss, loss
    app = prod.runtime().live_dsn()
    assert tree(app) == before
    with psycopg.connect(app) as conn:
        emails = {r[0] for r in conn.execute("SELECT email FROM users")}
    assert "kept@example.com" in emails and "lost@example.com" not in emails

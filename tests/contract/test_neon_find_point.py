"""NeonProvider.find_point: bisection over real branches of the fake Neon API
(tests/fakes/neon_server.py), whose branches at a timestamp are real point-in-time restores.

One world for the module; the first test writes the history every other test searches.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from fakes.neon_server import NeonWorld, build_neon_world, teardown_neon_world

from restorekit import bisect
from restorekit.bisect import DamageCheck
from restorekit.damage import Damage, DamageKind, FoundBy
from restorekit.errors import ConfigError, ProviderError
from restorekit.models import PointKind, RestorePoint
from restorekit.providers._http import HttpPlumbing
from restorekit.providers.base import Capability

pytestmark = pytest.mark.slow

PROBE = "restorekit-find-point-"


@dataclass
class History:
    good: datetime  # the rows exist, nothing damaged yet
    last_write: datetime  # just after the last commit before the deletion
    before_delete: datetime
    after_delete: datetime


@pytest.fixture(scope="module")
def neon_world(pg_base_dir: Path) -> Iterator[NeonWorld]:
    """The fake Neon project without the demo app (nothing here needs it)."""
    world = build_neon_world(pg_base_dir / f"neon-find-point-{time.monotonic_ns()}",
                             start_app=False)
    try:
        yield world
    finally:
        teardown_neon_world(world)


@pytest.fixture
def world(neon_world: NeonWorld) -> Iterator[NeonWorld]:
    fake = neon_world.fake
    fake.violations.clear()
    yield neon_world
    violations, fake.violations[:] = list(fake.violations), []
    assert violations == []
    live = [b.data["name"] for b in fake.branches.values()
            if b.data["name"].startswith(PROBE)]
    assert live == [], "a probe branch was left behind"


@pytest.fixture(scope="module")
def history(neon_world: NeonWorld) -> History:
    """fp_items 1..5 written, a later unrelated commit, then rows 2 and 3 deleted."""
    def clock(conn: psycopg.Connection) -> datetime:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        return row[0]

    with psycopg.connect(neon_world.app_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE fp_items (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO fp_items SELECT g, 'item ' || g FROM generate_series(1, 5) g")
        good = clock(conn)
        time.sleep(0.2)
        conn.execute("UPDATE fp_items SET note = 'touched' WHERE id = 5")
        last_write = clock(conn)
        time.sleep(2)
        before = clock(conn)
        conn.execute("DELETE FROM fp_items WHERE id IN (2, 3)")
        after = clock(conn)
    time.sleep(0.2)  # the head is a little after the deletion
    return History(good, last_write, before, after)


def probes_deleted(world: NeonWorld) -> list[str]:
    return [n for n in world.fake.deleted.values() if n.startswith(PROBE)]


def test_neon_declares_find_point(world: NeonWorld) -> None:
    assert Capability.FIND_POINT in world.provider().capabilities


def test_bisection_finds_the_deletion_between_the_last_write_and_the_delete(
    world: NeonWorld, history: History
) -> None:
    provider = world.provider()
    seen: list[tuple[str, int, int | None]] = []
    before = len(probes_deleted(world))
    started = time.monotonic()
    found = provider.find_point(
        Damage(table="fp_items", keys=(("2",), ("3",)),
               good_point=RestorePoint.at(history.good)),
        progress=lambda phase, done, total: seen.append((phase, done, total)))
    elapsed = time.monotonic() - started

    assert found.found_by is FoundBy.BISECTION
    assert found.point.kind is PointKind.TIME and found.point.time is not None
    assert history.last_write < found.point.time < history.after_delete
    assert found.xid is None and found.commit_lsn is None
    assert found.rows_touched == 2 and "2 of 2 tracked row(s) deleted" in found.what
    assert 3 <= found.copies <= 12
    assert found.notes[0].startswith(f"{found.copies} branches, interval ")
    assert not any("budget" in n for n in found.notes)
    assert seen[-1] == ("find point", found.copies, 12)
    # Every probe was a scratch branch and was deleted right after.
    assert len(probes_deleted(world)) - before == found.copies
    print(f"find_point: {found.copies} branches in {elapsed:.1f} s; {found.notes}")


def test_keys_never_deleted_are_no_damage(world: NeonWorld, history: History) -> None:
    with pytest.raises(ConfigError, match="no damage found"):
        world.provider().find_point(Damage(table="fp_items", keys=(("1",), ("4",)),
                                           good_point=RestorePoint.at(history.good)))


def test_a_table_that_never_existed_is_named_at_the_default_good_point(
    world: NeonWorld
) -> None:
    # No good point given: the start of the window (the production branch's creation here).
    with pytest.raises(ConfigError, match="never_there does not exist at the good point"):
        world.provider().find_point(Damage(table="never_there", keys=(("1",),)))


def test_a_spent_budget_says_so_and_stays_before_the_damage(
    world: NeonWorld, history: History
) -> None:
    provider = world.provider(find_point_budget=2)
    found = provider.find_point(Damage(table="fp_items", keys=(("3",),),
                                       good_point=RestorePoint.at(history.good)))
    assert found.copies == 2
    assert found.point.time is not None and found.point.time < history.before_delete
    assert any("budget of 2 branches ran out" in n for n in found.notes), found.notes


def test_a_probe_whose_branch_failed_is_deleted_too(world: NeonWorld, history: History) -> None:
    # The branch exists, its create operation ends "failed": find_point fails with Neon's
    # error and deletes the half-made branch (found by name; 423 while it is busy is retried).
    before = len(probes_deleted(world))
    world.fake.fail_next_operation()
    provider = world.provider(http=HttpPlumbing(backoff_seconds=0.5, max_attempts=10))
    with pytest.raises(ProviderError, match="failed: timeline creation failed"):
        provider.find_point(Damage(table="fp_items", keys=(("2",),),
                                   good_point=RestorePoint.at(history.good)))
    assert len(probes_deleted(world)) == before + 1


# -- the damage predicate itself, on production directly (no branch needed) ----------------------


def read(conn: psycopg.Connection, damage: Damage) -> DamageCheck:
    return DamageCheck.read(conn, damage, at="now")


def test_the_predicate_for_changed_rows_composite_keys_and_a_where(world: NeonWorld) -> None:
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE fp_pairs (a int, b text, qty int, note text, "
                     "PRIMARY KEY (a, b))")
        conn.execute("INSERT INTO fp_pairs VALUES (1, 'x', 10, 'n'), (1, 'y', 20, NULL), "
                     "(2, 'x', 30, 'n')")
        # '001' is cast to int: keys are compared as their column types.
        qty = read(conn, Damage(table="fp_pairs", kind=DamageKind.CHANGED,
                                keys=(("001", "x"), ("1", "y")), column="qty"))
        row = read(conn, Damage(table="fp_pairs", kind=DamageKind.CHANGED,
                                keys=(("1", "x"), ("1", "y"))))
        picked = read(conn, Damage(table="fp_pairs", where="qty >= 20"))
        assert qty.tracked == (("1", "x"), ("1", "y")) and picked.rows_at_good == 2
        assert all(c.observe(conn).good for c in (qty, row, picked))

        conn.execute("UPDATE fp_pairs SET note = 'changed' WHERE (a, b) = (1, 'y')")
        assert qty.observe(conn).good  # another column: not this damage
        seen = row.observe(conn)
        assert not seen.good and seen.damaged_rows == 1 and "1 of 2 changed" in seen.what

        conn.execute("UPDATE fp_pairs SET qty = 99 WHERE (a, b) = (1, 'x')")
        assert "(column qty)" in qty.observe(conn).what
        # The predicate's rows are fixed at the good point: qty 99 >= 20 adds no row to track.
        assert picked.observe(conn).good
        conn.execute("DELETE FROM fp_pairs WHERE a = 2")
        seen = picked.observe(conn)
        assert not seen.good and "1 of 2 tracked row(s) deleted" in seen.what


def test_the_predicate_refuses_wrong_input(world: NeonWorld,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE fp_plain (id int PRIMARY KEY)")
        conn.execute("INSERT INTO fp_plain VALUES (1)")
        # Keys missing at the good point: the damage is before it (the same path as a good
        # point after the damage in find_point, without spending a branch on it).
        with pytest.raises(ConfigError, match="1 of 2 key.*give an earlier good point"):
            read(conn, Damage(table="fp_plain", keys=(("1",), ("2",))))
        with pytest.raises(ConfigError, match="not a valid integer"):
            read(conn, Damage(table="fp_plain", keys=(("one",),)))
        with pytest.raises(ConfigError, match="1 column"):
            read(conn, Damage(table="fp_plain", keys=(("1", "2"),)))
        with pytest.raises(ConfigError, match="no column 'nope'"):
            read(conn, Damage(table="fp_plain", kind=DamageKind.CHANGED, keys=(("1",),),
                              column="nope"))
        with pytest.raises(ConfigError, match="the predicate 'nope > 1' fails"):
            read(conn, Damage(table="fp_plain", where="nope > 1"))
        with pytest.raises(ConfigError, match="selects no row"):
            read(conn, Damage(table="fp_plain", where="id > 1"))
        conn.execute("CREATE TABLE fp_nokey (id int)")
        with pytest.raises(ConfigError, match="no primary key"):
            read(conn, Damage(table="fp_nokey", keys=(("1",),)))
        with pytest.raises(ConfigError, match="already empty"):
            read(conn, Damage(table="fp_nokey", kind=DamageKind.TABLE))
        conn.execute("INSERT INTO fp_plain VALUES (2), (3)")
        monkeypatch.setattr(bisect, "MAX_TRACKED_ROWS", 2)
        with pytest.raises(ConfigError, match="narrow the damage"):
            read(conn, Damage(table="fp_plain", where="id > 0"))


def test_the_predicate_for_a_whole_table(world: NeonWorld) -> None:
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE fp_whole AS SELECT g AS id FROM generate_series(1, 3) g")
        check = read(conn, Damage(table="public.fp_whole", kind=DamageKind.TABLE))
        conn.execute("DELETE FROM fp_whole WHERE id = 1")
        assert check.observe(conn).good  # rows deleted since are not whole-table damage
        conn.execute("TRUNCATE fp_whole")
        assert not check.observe(conn).good
        conn.execute("DROP TABLE fp_whole")
        seen = check.observe(conn)
        assert not seen.good and seen.what == "table public.fp_whole does not exist"

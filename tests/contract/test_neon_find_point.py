"""NeonProvider.find_point: bisection over real branches of the fake Neon API
(tests/fakes/neon_server.py), whose branches at a timestamp are real point-in-time restores.

One world for the module; the first test writes the history every other test searches.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import psycopg
import pytest
from fakes.neon_server import NeonWorld, neon_world  # noqa: F401 - fixture

from restorekit.damage import Damage, DamageKind, FoundBy
from restorekit.errors import ConfigError
from restorekit.models import PointKind, RestorePoint
from restorekit.providers.base import Capability

pytestmark = pytest.mark.slow

PROBE = "restorekit-find-point-"


@dataclass
class History:
    good: datetime  # the rows exist, nothing damaged yet
    last_write: datetime  # just after the last commit before the deletion
    before_delete: datetime
    after_delete: datetime


@pytest.fixture
def world(neon_world: NeonWorld) -> Iterator[NeonWorld]:  # noqa: F811
    fake = neon_world.fake
    fake.violations.clear()
    yield neon_world
    violations, fake.violations[:] = list(fake.violations), []
    assert violations == []
    live = [b.data["name"] for b in fake.branches.values()
            if b.data["name"].startswith(PROBE)]
    assert live == [], "a probe branch was left behind"


@pytest.fixture(scope="module")
def history(neon_world: NeonWorld) -> History:  # noqa: F811
    """fp_items 1..5 written, a later unrelated commit, then rows 2 and 3 deleted."""
    def clock(conn: psycopg.Connection) -> datetime:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        return row[0]

    with psycopg.connect(neon_world.app_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE fp_items (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO fp_items SELECT g, 'item ' || g FROM generate_series(1, 5) g")
        good = clock(conn)
        time.sleep(1)
        conn.execute("UPDATE fp_items SET note = 'touched' WHERE id = 5")
        last_write = clock(conn)
        time.sleep(2)
        before = clock(conn)
        conn.execute("DELETE FROM fp_items WHERE id IN (2, 3)")
        after = clock(conn)
    time.sleep(0.5)  # the head is a little after the deletion
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


def test_a_table_that_never_existed_is_named(world: NeonWorld, history: History) -> None:
    with pytest.raises(ConfigError, match="never_there does not exist"):
        world.provider().find_point(Damage(table="never_there", keys=(("1",),),
                                           good_point=RestorePoint.at(history.good)))


def test_damage_before_the_good_point_asks_for_an_earlier_one(
    world: NeonWorld, history: History
) -> None:
    with pytest.raises(ConfigError, match="earlier good point"):
        world.provider().find_point(Damage(table="fp_items", keys=(("2",),),
                                           good_point=RestorePoint.at(history.after_delete)))


def test_a_spent_budget_says_so_and_stays_before_the_damage(
    world: NeonWorld, history: History
) -> None:
    provider = world.provider(find_point_budget=2)
    found = provider.find_point(Damage(table="fp_items", keys=(("3",),),
                                       good_point=RestorePoint.at(history.good)))
    assert found.copies == 2
    assert found.point.time is not None and found.point.time < history.before_delete
    assert any("budget of 2 branches ran out" in n for n in found.notes), found.notes


def test_whole_table_damage_of_a_dropped_table(world: NeonWorld, history: History) -> None:
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE fp_gone AS SELECT 1 AS id")
        good = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(1.5)
        conn.execute("DROP TABLE fp_gone")
        dropped = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    provider = world.provider(find_point_budget=4, find_point_precision_seconds=5)
    found = provider.find_point(Damage(table="public.fp_gone", kind=DamageKind.TABLE,
                                       good_point=RestorePoint.at(good)))
    assert found.point.time is not None and good <= found.point.time < dropped
    assert "does not exist" in found.what

"""restorekit.bisect's pure loop: a predicate over datetimes, no database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from restorekit.bisect import bisect_times, find_by_bisection
from restorekit.damage import Damage, DamageKind
from restorekit.errors import ConfigError, RestorePointError
from restorekit.models import RestorePoint

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def damaged_after(when: datetime, seen: list[datetime] | None = None):
    def is_good(t: datetime) -> bool:
        if seen is not None:
            seen.append(t)
        return t < when

    return is_good


def test_converges_to_the_precision_around_the_damage() -> None:
    damage = T0 + timedelta(seconds=3600 * 5 + 17.25)
    seen: list[datetime] = []
    found = bisect_times(damaged_after(damage, seen), T0, T0 + timedelta(hours=24),
                         precision=timedelta(seconds=1), budget=40)
    assert found.last_good < damage <= found.first_bad
    assert found.width <= timedelta(seconds=1) and found.converged
    # log2(86400) ~ 16.4: seventeen halvings, each probed once, in the order made.
    assert len(found.probes) == 17
    assert [p.at for p in found.probes] == seen
    assert all(p.good == (p.at < damage) for p in found.probes)


def test_the_budget_stops_it_with_a_good_left_end() -> None:
    damage = T0 + timedelta(seconds=1000)
    found = bisect_times(damaged_after(damage), T0, T0 + timedelta(seconds=4096),
                         precision=timedelta(seconds=1), budget=3)
    assert len(found.probes) == 3
    assert not found.converged
    assert found.width == timedelta(seconds=512)
    assert found.last_good < damage <= found.first_bad


def test_no_probe_when_already_narrow_enough_or_budget_zero() -> None:
    never = damaged_after(T0)  # would say "bad" everywhere; must not be called

    def boom(t: datetime) -> bool:
        raise AssertionError("probed")

    found = bisect_times(boom, T0, T0 + timedelta(milliseconds=800), budget=10)
    assert found.probes == () and found.converged
    found = bisect_times(never, T0, T0 + timedelta(seconds=60), budget=0)
    assert found.probes == () and not found.converged
    assert (found.last_good, found.first_bad) == (T0, T0 + timedelta(seconds=60))


def test_reaches_a_microsecond() -> None:
    damage = T0 + timedelta(microseconds=3)
    found = bisect_times(damaged_after(damage), T0, T0 + timedelta(microseconds=8),
                         precision=timedelta(microseconds=1), budget=50)
    assert found.first_bad - found.last_good == timedelta(microseconds=1)
    assert found.last_good < damage <= found.first_bad


def test_reversed_interval_and_bad_precision_are_refused() -> None:
    with pytest.raises(ValueError):
        bisect_times(damaged_after(T0), T0, T0, budget=5)
    with pytest.raises(ValueError):
        bisect_times(damaged_after(T0), T0, T0 + timedelta(1), precision=timedelta(0), budget=5)


# -- find_by_bisection's checks before any copy is made ----------------------------------------


@contextmanager
def no_copies(when: datetime) -> Iterator[str]:
    raise AssertionError("no copy may be made")
    yield ""  # pragma: no cover


def test_find_refuses_a_budget_below_two_and_a_good_point_outside_the_window() -> None:
    damage = Damage(table="t", keys=(("1",),))
    window = {"earliest": T0, "latest": T0 + timedelta(hours=1)}
    with pytest.raises(ConfigError, match="at least 2"):
        find_by_bisection(damage, copy_at=no_copies, budget=1, **window)
    early = Damage(table="t", keys=(("1",),), good_point=RestorePoint.at(T0 - timedelta(1)))
    with pytest.raises(RestorePointError, match="outside the window"):
        find_by_bisection(early, copy_at=no_copies, **window)
    lsn = Damage(table="t", kind=DamageKind.TABLE,
                 good_point=RestorePoint.parse("lsn:0/3000000"))
    with pytest.raises(ConfigError, match="must be a time"):
        find_by_bisection(lsn, copy_at=no_copies, **window)

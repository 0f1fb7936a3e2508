"""RPO as the drill measures it: the age of the latest restorable point, unless production's
commit times show that nothing committed is missing from the backups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from restorekit.drill import DrillResult, judge, measure_rpo

LATEST = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NOW = LATEST + timedelta(hours=2)


def test_without_commit_times_the_rpo_is_the_age_of_the_latest_restorable_point() -> None:
    seconds, basis = measure_rpo(NOW, LATEST, None)
    assert seconds == 7200.0
    assert "not tracked" in basis


def test_an_idle_database_whose_last_commit_is_restorable_loses_nothing() -> None:
    seconds, basis = measure_rpo(NOW, LATEST, LATEST - timedelta(minutes=5))
    assert seconds == 0.0
    assert "every commit so far is restorable" in basis
    assert measure_rpo(NOW, LATEST, LATEST)[0] == 0.0  # the last commit IS the latest point


def test_commits_after_the_latest_restorable_point_count_from_that_point() -> None:
    seconds, basis = measure_rpo(NOW, LATEST, LATEST + timedelta(seconds=1))
    assert seconds == 7200.0
    assert "not yet restorable" in basis


def test_a_clock_behind_the_latest_point_never_gives_a_negative_rpo() -> None:
    assert measure_rpo(LATEST - timedelta(seconds=3), LATEST, None)[0] == 0.0


def test_an_idle_database_passes_the_rpo_objective_it_would_have_failed() -> None:
    base = DrillResult(target="production", tier="critical", started_at=NOW, point="latest",
                       rto_seconds=10, rto_objective_seconds=3600, rpo_objective_seconds=900)
    idle = base.model_copy(update=dict(zip(("rpo_seconds", "rpo_basis"),
                                           measure_rpo(NOW, LATEST, LATEST), strict=True)))
    lagging = base.model_copy(update=dict(zip(("rpo_seconds", "rpo_basis"),
                                              measure_rpo(NOW, LATEST, NOW), strict=True)))
    assert judge(idle).passed
    assert not judge(lagging).passed
    assert "RPO 7200 s exceeds" in judge(lagging).failures[0]
    assert "every commit so far is restorable" in idle.to_markdown()

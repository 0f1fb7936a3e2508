"""Scenario 1 refuses to swap blind (issue 15): with no baseline and production unreachable it
waits for an operator's approval even with require_approval off; a baseline stored in the
repository (and nowhere on this host) is found; no health URL is a warning, not a pass.
Real clusters, a real Prefect server."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fixtures.approval import PausedFlow
from fixtures.module_world import ModuleWorld
from fixtures.world import installation

from flows.complete_failure import CompleteFailureParams, complete_failure
from restorekit.baseline import baseline_key, local_baseline_path
from restorekit.demo import Installation
from restorekit.errors import SafetyError
from restorekit.repository import open_repository
from restorekit.runtime import target_runtime
from tasks._runtime import TargetRef
from tasks.application import check_health
from tasks.database import capture_baseline

pytestmark = pytest.mark.slow


def _without_app(inst: Installation) -> Path:
    """A copy of the installation's config whose target has no application (so no health URL)
    and no smoke checks."""
    text = inst.config.read_text()
    text = re.sub(r"\[targets\.production\.app\]\n(?:[^\[\n][^\n]*\n|\n)*",
                  '[targets.production.app]\nkind = "none"\n\n', text)
    text = re.sub(r"\[\[targets\.production\.smoke\]\]\n(?:[^\[\n][^\n]*\n|\n)*", "", text)
    assert "smoke" not in text and "critical_tables" in text
    path = inst.root / "restorekit-no-app.toml"
    path.write_text(text)
    return path


@contextlib.contextmanager
def _blind_installation(pg_base_dir: Path) -> Iterator[tuple[Installation, Path]]:
    with installation(pg_base_dir, "blind") as inst:
        yield inst, _without_app(inst)


@pytest.fixture(scope="module")
def _worlds(pg_base_dir: Path) -> Iterator[ModuleWorld[tuple[Installation, Path]]]:
    with ModuleWorld(lambda: _blind_installation(pg_base_dir)) as worlds:
        yield worlds


@pytest.fixture
def blind(_worlds: ModuleWorld[tuple[Installation, Path]]) -> tuple[Installation, Path]:
    """The module's installation (shared) and its config without an app; production running."""
    return _worlds.get()


@pytest.fixture
def spent_blind(
    _worlds: ModuleWorld[tuple[Installation, Path]],
) -> Iterator[tuple[Installation, Path]]:
    """The same, for a test that loses production: a later test gets a new installation."""
    with _worlds.spent() as world:
        yield world


def test_no_health_url_is_a_warning_not_a_pass(prefect_server: str, blind) -> None:
    inst, config = blind
    health = check_health.fn(TargetRef(target="production", config=str(config)))
    assert not health.checked and not health.ok and health.warning
    assert health.detail.startswith("application health not checked: no health URL")


def test_a_blind_swap_waits_for_approval_even_with_approval_off(
    prefect_server: str, blind
) -> None:
    inst, config = blind
    rt = target_runtime("production", str(config))
    local = local_baseline_path(rt.settings.state_dir, "production")
    # The demo stored one here and in the repository: this host has none now, nor the repository.
    local.unlink(missing_ok=True)
    repository = open_repository(rt.config.repository)
    if repository.exists(baseline_key("production")):
        repository.delete(baseline_key("production"))
    assert not repository.exists(baseline_key("production"))
    inst.wait_archived()
    inst.production.stop(mode="immediate")  # production is unreachable
    try:
        plan = complete_failure(CompleteFailureParams(
            target="production", config=str(config), dry_run=True, require_approval=False,
            incident_id="inc-blind-plan"))
        text = "\n".join(plan.plan)
        assert "its row counts CANNOT be verified: no baseline" in text
        assert "production is unreachable" in text
        assert "the swap waits for an operator's approval even with require_approval off" in text
        assert "Application health not checked: no health URL is configured" in text

        flow = PausedFlow(lambda: complete_failure(CompleteFailureParams(
            target="production", config=str(config), require_approval=False,
            incident_id="inc-blind"))).wait_until_paused(90)
        assert rt.provider.list_scratch() == []  # nothing restored before the approval
        result = flow.answer(approve=False)
        assert isinstance(result.get("error"), SafetyError), result
        assert "not approved" in str(result["error"])
        assert rt.provider.list_scratch() == []
        assert rt.provider.find_restored("cf-inc-blind") is None
    finally:
        inst.production.start()


def test_a_verification_that_comes_back_unverified_waits_for_approval_before_the_swap(
    prefect_server: str, blind
) -> None:
    """The plan had a baseline, but it lacks a critical table (captured before the table was
    made critical): the restore's counts of that table are unverified, so the swap waits."""
    from restorekit.baseline import save_baseline
    from restorekit.integrity import capture_baseline as capture

    inst, config = blind
    rt = target_runtime("production", str(config))
    with psycopg.connect(inst.app_dsn) as conn:
        partial = capture(conn, ["users"])
    save_baseline(partial, target="production", state_dir=rt.settings.state_dir,
                  repository=open_repository(rt.config.repository))
    before = inst.env_file.read_text()
    inst.wait_archived()
    try:
        flow = PausedFlow(lambda: complete_failure(CompleteFailureParams(
            target="production", config=str(config), require_approval=False,
            incident_id="inc-unverified"))).wait_until_paused(300)
        # Paused after the restore and its verification, before the swap.
        assert rt.provider.find_restored("cf-inc-unverified") is not None
        assert inst.env_file.read_text() == before
        result = flow.answer(approve=False)
        error = result.get("error")
        assert isinstance(error, SafetyError) and "not approved" in str(error), result
        assert inst.env_file.read_text() == before  # never swapped
        written = max(rt.reports_dir().glob("*-complete-failure.json"),
                      key=lambda p: p.stat().st_mtime)
        stored = json.loads(written.read_text())
        assert stored["outcome"] == "failed"
        assert any(p.startswith("Verification could not verify: row_counts: unverified: nothing "
                                "to compare public.clients; public.appointments with (not in the "
                                "baseline)") for p in stored["plan"])
        counts = next(c for c in stored["checks"] if c["name"] == "row_counts")
        assert counts["unverified"] is True and not counts["ok"] and not counts["critical"]
        approval = next(s for s in stored["steps"] if s["name"] == "approval")
        assert approval["ok"] is False
    finally:
        # The refused run keeps its restore (for an operator to look at); it is this test's
        # own, and a later test checks that nothing is restored before its approval.
        restored = rt.provider.find_restored("cf-inc-unverified")
        if restored is not None:
            rt.provider.discard(restored)


def test_a_baseline_in_the_repository_is_enough_on_a_host_without_one(
    prefect_server: str, spent_blind
) -> None:
    inst, config = spent_blind
    ref = TargetRef(target="production", config=str(config))
    rt = target_runtime("production", str(config))
    where = capture_baseline.fn(ref)
    key = baseline_key("production")
    assert where.endswith(f"({key})")  # the repository first
    assert open_repository(rt.config.repository).exists(key)
    local_baseline_path(rt.settings.state_dir, "production").unlink()  # another host
    with psycopg.connect(inst.app_dsn) as conn:
        users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
    inst.wait_archived()
    inst.production.stop(mode="immediate")

    report = complete_failure(CompleteFailureParams(
        target="production", config=str(config), require_approval=False,
        incident_id="inc-repo-baseline"))

    assert report.outcome == "succeeded", report.error
    assert not any(s.name == "approval" for s in report.steps)  # not blind: no gate
    assert any("row counts are compared with the baseline of" in p and key in p
               for p in report.plan)
    counts = next(c for c in report.checks if c.name == "row_counts")
    assert counts.verdict == "pass" and f"public.users={users} (baseline {users})" in counts.detail
    health = next(c for c in report.checks if c.name == "health")
    assert health.verdict == "warn" and not health.ok and not health.critical
    assert health.detail.startswith("application health not checked")
    assert "| health | warn | no | application health not checked" in report.to_markdown()

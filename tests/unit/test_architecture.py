"""The dependency rule: the core knows nothing of Prefect, flows or tasks."""

from __future__ import annotations

import ast
from pathlib import Path

import tasks

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _entry_point(path: Path) -> bool:
    """The command line (the restorekit/cli/ package) and restorekit/demo.py."""
    relative = path.relative_to(ROOT / "restorekit")
    return relative.parts[0] == "cli" or relative == Path("demo.py")


def test_core_never_imports_prefect_flows_or_tasks() -> None:
    offenders = {}
    for path in (ROOT / "restorekit").rglob("*.py"):
        if _entry_point(path):
            continue  # entry points: they start flows, nothing in the core imports them
        bad = {m for m in imported_modules(path)
               if m.split(".")[0] in ("prefect", "flows", "tasks")}
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_nothing_in_the_core_imports_the_entry_points() -> None:
    for path in (ROOT / "restorekit").rglob("*.py"):
        if _entry_point(path):
            continue
        assert not {m for m in imported_modules(path)
                    if m in ("restorekit.cli", "restorekit.demo")
                    or m.startswith("restorekit.cli.")}, path


def test_flows_and_tasks_do_not_import_sdks() -> None:
    for folder in ("flows", "tasks"):
        for path in (ROOT / folder).rglob("*.py"):
            bad = {m for m in imported_modules(path)
                   if m.split(".")[0] in ("boto3", "botocore", "httpx", "subprocess")}
            assert not bad, f"{path}: {bad}"


RUNBOOK_TASKS = {
    "adopt_restored", "capture_baseline", "check_health", "discard_restored",
    "find_integrity_issues", "identify_affected_data", "identify_deletion_scope", "notify",
    "preflight", "recover_rows", "redeploy_application", "repair_rows",
    "restore_to_point_in_time", "resume_application", "snapshot_current_state",
    "stop_application", "swap_connection_string", "verify_integrity", "write_report",
    "choose_drill_point", "compare_with_production", "provider_capabilities", "record_drill",
    "restore_in_place", "restore_scratch_from_snapshot", "take_base_backup",
    "sweep_stale_restores", "run_smoke_checks", "protect_new_production",
    "expire_old_backups", "check_backup_freshness",
}


def test_tasks_public_api_is_pinned() -> None:
    from prefect import Task

    assert set(tasks.__all__) == RUNBOOK_TASKS
    for name in tasks.__all__:
        assert isinstance(getattr(tasks, name), Task), f"{name} is not a Prefect task"

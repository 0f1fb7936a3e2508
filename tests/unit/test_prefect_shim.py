"""The one module allowed to use Prefect's private API (tasks/_prefect_shim.py): every private
name it relies on still exists in the installed Prefect, and nothing else reaches for one."""

from __future__ import annotations

import ast
from importlib.metadata import version
from pathlib import Path

import pytest

from tasks import _prefect_shim as shim

ROOT = Path(__file__).resolve().parents[2]


def test_every_private_prefect_name_the_shim_uses_still_exists() -> None:
    # Fails by name when a Prefect upgrade moved one: fix the shim before the upgrade lands.
    assert shim.missing_private_names() == [], (
        f"Prefect {version('prefect')} lacks private names tasks/_prefect_shim.py uses "
        f"(checked against {shim.PREFECT_VERSION_CHECKED})")


def test_the_shim_was_checked_against_the_installed_prefect() -> None:
    assert version("prefect") == shim.PREFECT_VERSION_CHECKED, (
        "Prefect changed: re-read the private names in tasks/_prefect_shim.py against it, then "
        "update PREFECT_VERSION_CHECKED")


def test_a_missing_name_is_reported() -> None:
    assert shim.missing_private_names((("prefect.flow_engine", "_no_such_name"),
                                       ("prefect.no_such_module", "x"),
                                       ("prefect.flow_engine", "BaseFlowRunEngine._nope"))) == [
        "prefect.flow_engine._no_such_name", "prefect.no_such_module (module)",
        "prefect.flow_engine.BaseFlowRunEngine._nope"]


def _private_prefect_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prefect"):
            names = [node.module, *(a.name for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("prefect")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_block_document"):
            names = [node.attr]
        else:
            continue
        found += [n for n in names if any(part.startswith("_") and not part.startswith("__")
                                          for part in n.split("."))]
    return found


@pytest.mark.parametrize("folder", ["restorekit", "tasks", "flows", "deployments"])
def test_no_private_prefect_import_outside_the_shim(folder: str) -> None:
    offenders = {str(p.relative_to(ROOT)): uses for p in (ROOT / folder).rglob("*.py")
                 if p.name != "_prefect_shim.py" and (uses := _private_prefect_uses(p))}
    assert offenders == {}

"""The documentation states what the code does: generated parts are current, the configuration
reference lists exactly the models' keys with their defaults, and every relative link resolves.

tools/gen_docs.py holds the generators (docs/cli.md's `--help` part, README.md's report
example) and the map of docs/configuration.md's sections to the config models.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)


def _gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "tools" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_blocks_are_current() -> None:
    # A subprocess: the help is rendered with TYPER_USE_RICH=0, which typer reads at import.
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_docs.py"), "--check"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout


def test_splice_replaces_only_the_block() -> None:
    splice = _gen_docs().splice
    text = "a\n<!-- x:begin -->\nold\n<!-- x:end -->\nb\n"
    assert splice(text, "x", "new\n") == "a\n<!-- x:begin -->\nnew\n<!-- x:end -->\nb\n"
    with pytest.raises(ValueError, match="markers"):
        splice("no markers", "x", "new")


def _reference_tables(text: str) -> dict[str, list[tuple[str, str]]]:
    """``{section heading: [(key, default), ...]}`` of the '## Option reference' part."""
    part = text.split("\n## Option reference\n", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, list[tuple[str, str]]] = {}
    section = None
    for line in part.splitlines():
        heading = re.fullmatch(r"### `(.+)`", line)
        if heading:
            section = heading.group(1)
            tables[section] = []
        elif section and re.match(r"\| `", line):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            tables[section].append((cells[0].strip("`"), cells[1].strip("`")))
    return tables


def test_configuration_reference_matches_the_models() -> None:
    gen = _gen_docs()
    documented = _reference_tables((ROOT / "docs" / "configuration.md").read_text())
    assert sorted(documented) == sorted(gen.CONFIG_SECTIONS), (
        "docs/configuration.md's option reference sections differ from tools/gen_docs.py's "
        "CONFIG_SECTIONS")
    for section in gen.CONFIG_SECTIONS:
        rows = documented[section]
        keys = [key for key, _ in rows]
        assert len(keys) == len(set(keys)), f"{section}: a key documented twice"
        expected = gen.config_keys(section)
        assert sorted(keys) == sorted(expected), (
            f"{section}: documented {sorted(set(keys) - set(expected))} not in the model, "
            f"missing {sorted(set(expected) - set(keys))}")
        wrong = {key: (default, expected[key]) for key, default in rows
                 if default != expected[key]}
        assert not wrong, f"{section}: documented default != model default: {wrong}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if not match:
            continue
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        anchors.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return anchors


def _links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for link in _links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto:
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_architecture_names_existing_modules() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    named = set(re.findall(r"`((?:restorekit|flows|tasks|deployments|tools|tests|bench)/[\w/.]*)`",
                           text))
    assert named
    missing = []
    for name in sorted(named):
        path = ROOT / name
        # A module split into a package keeps its name: restorekit/x.py -> restorekit/x/.
        if not (path.exists() or (path.suffix == ".py" and path.with_suffix("").is_dir())):
            missing.append(name)
    assert not missing, f"ARCHITECTURE.md names paths that do not exist: {missing}"


def test_readme_is_a_front_door() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text) <= 10_000, f"README.md is {len(text)} characters (keep it under 10,000)"
    # .ci/run runs `make test`: the README keeps saying so.
    assert "make test " in text and "make test-fast" in text


def test_bench_table_lives_in_docs_benchmarks() -> None:
    # bench/run_all.py writes its table between these markers of docs/benchmarks.md.
    markers = ("<!-- bench-table:begin -->", "<!-- bench-table:end -->")
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    assert all(page.count(m) == 1 for m in markers)
    assert not any(m in (ROOT / "README.md").read_text() for m in markers)
    script = (ROOT / "bench" / "run_all.py").read_text()
    assert 'TABLE_PAGE = ROOT / "docs" / "benchmarks.md"' in script

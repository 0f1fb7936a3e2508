"""What the incident report says a repair did, including what it left alone on purpose."""

from __future__ import annotations

from flows._common import Recorder, ScenarioParams
from restorekit.report import Change


def _table(markdown: str) -> list[str]:
    lines = markdown.splitlines()
    start = lines.index("## What changed") + 2
    return [line for line in lines[start:] if line.startswith("|")]


def test_rows_left_alone_reach_the_report_table() -> None:
    rec = Recorder("partial-corruption", ScenarioParams(target="production"))
    rec.add_changes({"tables": [
        {"table": "public.users", "inserted": 3, "updated": 10, "deleted": 0,
         "skipped_existing": 1, "kept_newer": 4, "kept_deleted": 2, "skipped_changed": 1},
        {"table": "public.clients", "inserted": 5},
    ]})
    assert rec.report.changes == [
        Change(table="public.users", inserted=3, updated=10, skipped=1, kept_newer=4,
               kept_deleted=2, skipped_changed=1),
        Change(table="public.clients", inserted=5),
    ]
    header, rule, users, clients = _table(rec.report.to_markdown())
    assert "kept: written later | kept: deleted later | changed during repair" in header
    assert rule.count("|") == header.count("|")
    assert users == "| public.users | 3 | 10 | 0 | 1 | 4 | 2 | 1 |"
    assert clients == "| public.clients | 5 | 0 | 0 | 0 | 0 | 0 | 0 |"


def test_without_rows_left_alone_the_table_keeps_its_five_columns() -> None:
    rec = Recorder("accidental-deletion", ScenarioParams(target="production"))
    rec.add_changes({"tables": [{"table": "public.users", "inserted": 2}]})
    header, _, users = _table(rec.report.to_markdown())
    assert header == "| table | inserted | updated | deleted | skipped |"
    assert users == "| public.users | 2 | 0 | 0 | 0 |"

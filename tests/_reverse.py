"""Opt-in pytest plugin: each file's tests run in reverse order (files keep their place).

A test that passes only after an earlier one left a table, a row or a fake's request log
behind fails here: ``make test-reversed`` (``pytest -p _reverse``). In file order the suite
never notices; a single test run alone, or a reordered file, would.
"""

from __future__ import annotations

from itertools import groupby

import pytest


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    reordered: list[pytest.Item] = []
    for _, tests in groupby(items, key=lambda item: item.nodeid.split("::")[0]):
        reordered.extend(reversed(list(tests)))
    items[:] = reordered

"""Opt-in pytest plugin: when each test ran on which xdist worker, for finding the suite's tail.

``RK_TEST_TIMELINE=/tmp/t.jsonl pytest -p _timeline ...`` appends one JSON line per test
(worker, nodeid, start and end in Unix seconds, setup included) to that file; every worker
appends to the same file. ``python tools/test_timeline.py /tmp/t.jsonl`` reads it: each
worker's files in order, when each worker went idle, and what ran in the last minute.
"""

from __future__ import annotations

import json
import os
import time

import pytest

_PATH = os.environ.get("RK_TEST_TIMELINE")
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
_started: dict[str, float] = {}
_recording = False  # in an xdist worker, or a run without workers; not in xdist's controller


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _started[nodeid] = time.time()


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    if not (_PATH and _recording):
        return
    line = json.dumps({"worker": _WORKER, "nodeid": nodeid, "start": _started.pop(nodeid, None),
                       "end": time.time()})
    # One write of one short line per test with O_APPEND: the workers' lines do not interleave.
    fd = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    global _recording
    worker = hasattr(config, "workerinput")
    _recording = worker or not getattr(config.option, "numprocesses", None)
    if _PATH and not worker:
        open(_PATH, "w").close()  # a fresh file per run (the controller starts first)

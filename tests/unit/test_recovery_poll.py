"""run_recovery's poll loop against a scripted server: one session from the moment the server
accepts connections until it is promoted, a new one only when the session is lost."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from restorekit.engines import recovery
from restorekit.errors import PostgresUnavailable


class FakeCluster:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        (data_dir / "postmaster.pid").write_text("1\n")
        self.log_file = data_dir / "log"
        self.started = False

    def start(self, *, wait: bool = True) -> None:
        self.started = True

    def is_running(self) -> bool:
        return True

    def dsn(self) -> str:
        return "host=127.0.0.1 port=1 dbname=postgres"


class FakeConn:
    """Answers the poll from a shared script: True while recovering, False once promoted,
    an exception to raise (a lost session)."""

    def __init__(self, script: Iterator[Any]) -> None:
        self.script = script
        self.closed = False
        self._row: tuple[Any, ...] = ()

    def execute(self, query: str) -> FakeConn:
        if "pg_is_in_recovery" in query:
            step = next(self.script)
            if isinstance(step, BaseException):
                raise step
            self._row = (step, "0/3000060", datetime(2026, 1, 1, tzinfo=UTC))
        else:
            self._row = ("0/3000100", 2)
        return self

    def fetchone(self) -> tuple[Any, ...]:
        return self._row

    def close(self) -> None:
        self.closed = True


def _run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, steps: list[Any],
         refusals: int = 0) -> tuple[recovery.RecoveryResult, list[FakeConn]]:
    script = iter(steps)
    opened: list[FakeConn] = []
    refused = [refusals]

    def connect(dsn: str, **kwargs: Any) -> FakeConn:
        if refused[0]:
            refused[0] -= 1
            raise PostgresUnavailable("the database system is starting up")
        opened.append(FakeConn(script))
        return opened[-1]

    monkeypatch.setattr(recovery, "connect", connect)
    cluster = FakeCluster(tmp_path)
    result = recovery.run_recovery(cluster, poll_interval=0, timeout=60)  # type: ignore[arg-type]
    assert cluster.started
    return result, opened


def test_one_session_follows_the_replay_until_promotion(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    result, opened = _run(monkeypatch, tmp_path, [True] * 20 + [False], refusals=3)
    assert len(opened) == 1  # not one connection (a forked backend) per poll
    assert opened[0].closed
    assert result.recovered_lsn == "0/3000060" and result.timeline == 2


def test_a_lost_session_is_opened_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    lost = psycopg.OperationalError("server closed the connection unexpectedly")
    conflict = psycopg.errors.SerializationFailure("canceling statement due to conflict with "
                                                   "recovery")
    result, opened = _run(monkeypatch, tmp_path, [True, lost, True, conflict, True, False])
    assert len(opened) == 3
    assert all(c.closed for c in opened)
    assert result.timeline == 2

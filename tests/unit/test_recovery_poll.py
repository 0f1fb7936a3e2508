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
    def __init__(self, data_dir: Path, statuses: list[str | None] | None = None) -> None:
        self.data_dir = data_dir
        (data_dir / "postmaster.pid").write_text("1\n")
        self.log_file = data_dir / "log"
        self.started = False
        self.statuses = list(statuses or [])
        self.early = 0  # connection attempts before the postmaster said it accepts them

    def postmaster_status(self) -> str | None:
        return self.statuses.pop(0) if self.statuses else "standby"

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
         refusals: int = 0, statuses: list[str | None] | None = None,
         ) -> tuple[recovery.RecoveryResult, list[FakeConn], FakeCluster]:
    script = iter(steps)
    opened: list[FakeConn] = []
    refused = [refusals]
    cluster = FakeCluster(tmp_path, statuses)

    def connect(dsn: str, **kwargs: Any) -> FakeConn:
        if cluster.statuses:  # the server has not said it accepts connections yet
            cluster.early += 1
        if refused[0]:
            refused[0] -= 1
            raise PostgresUnavailable("the database system is starting up")
        opened.append(FakeConn(script))
        return opened[-1]

    monkeypatch.setattr(recovery, "connect", connect)
    result = recovery.run_recovery(cluster, poll_interval=0, timeout=60)  # type: ignore[arg-type]
    assert cluster.started
    return result, opened, cluster


def test_one_session_follows_the_replay_until_promotion(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    result, opened, _ = _run(monkeypatch, tmp_path, [True] * 20 + [False], refusals=3)
    assert len(opened) == 1  # not one connection (a forked backend) per poll
    assert opened[0].closed
    assert result.recovered_lsn == "0/3000060" and result.timeline == 2


def test_a_lost_session_is_opened_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    lost = psycopg.OperationalError("server closed the connection unexpectedly")
    conflict = psycopg.errors.SerializationFailure("canceling statement due to conflict with "
                                                   "recovery")
    result, opened, _ = _run(monkeypatch, tmp_path, [True, lost, True, conflict, True, False])
    assert len(opened) == 3
    assert all(c.closed for c in opened)
    assert result.timeline == 2


def test_no_connection_is_tried_while_the_postmaster_says_starting(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    statuses: list[str | None] = ["starting"] * 10 + ["standby"]
    result, opened, cluster = _run(monkeypatch, tmp_path, [True, False], statuses=statuses)
    assert cluster.early == 0
    assert len(opened) == 1
    assert result.timeline == 2


def test_an_unknown_status_still_connects(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    # No status (an older file, or one not readable by this user): connect and retry as before.
    result, opened, cluster = _run(monkeypatch, tmp_path, [True, False], refusals=2,
                                   statuses=[None, None, None])
    assert len(opened) == 1 and cluster.early > 0

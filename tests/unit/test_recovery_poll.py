"""run_recovery's poll loop against a scripted server: one session from the moment the server
accepts connections until it is promoted, a new one only when the session is lost."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from restorekit.engines import recovery
from restorekit.errors import DatabaseMissing, PostgresError, PostgresUnavailable


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


def test_a_database_the_replay_dropped_is_followed_through_postgres(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The replayed WAL dropped the database the copy is polled through (a drop-and-rename in
    # the source's history): the replay is followed through `postgres` instead of failing.
    script = iter([True, True, False])
    dsns: list[str] = []

    def connect(dsn: str, **kwargs: Any) -> FakeConn:
        dsns.append(dsn)
        if "dbname=app" in dsn:
            raise DatabaseMissing('cannot connect: FATAL:  database "app" does not exist')
        return FakeConn(script)

    monkeypatch.setattr(recovery, "connect", connect)
    result = recovery.run_recovery(FakeCluster(tmp_path),  # type: ignore[arg-type]
                                   dsn="host=127.0.0.1 port=1 dbname=app user=app",
                                   poll_interval=0, timeout=60)
    assert result.timeline == 2
    assert [conninfo_to_dict(d)["dbname"] for d in dsns] == ["app", "postgres"]
    assert conninfo_to_dict(dsns[1])["user"] == "app"  # the same credentials


def test_no_database_left_to_follow_the_replay_through_fails(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def connect(dsn: str, **kwargs: Any) -> FakeConn:
        raise DatabaseMissing(f"cannot connect: {conninfo_to_dict(dsn)['dbname']} is gone")

    monkeypatch.setattr(recovery, "connect", connect)
    with pytest.raises(DatabaseMissing, match="template1 is gone"):
        recovery.run_recovery(FakeCluster(tmp_path), dsn="host=127.0.0.1 port=1 dbname=app",  # type: ignore[arg-type]
                              poll_interval=0, timeout=60)


def test_connections_failing_while_the_postmaster_accepts_them_end_the_wait(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A refusal that libpq words without FATAL and the taxonomy does not know (as a TLS
    certificate for another host was) is not polled until the replay's timeout: once the
    postmaster has said it accepts connections for the grace period, the last error is raised."""
    tries: list[str] = []

    def connect(dsn: str, **kwargs: Any) -> FakeConn:
        tries.append(dsn)
        raise PostgresUnavailable("something libpq says without FATAL")

    monkeypatch.setattr(recovery, "connect", connect)
    with pytest.raises(PostgresError, match=r"accepts connections \(postmaster.pid: standby\) "
                       r"but restorekit's have failed for 0s: something libpq says"):
        recovery.run_recovery(FakeCluster(tmp_path), poll_interval=0.01,  # type: ignore[arg-type]
                              timeout=60, refused_grace=0.2)
    assert len(tries) > 2  # retried through the grace period first

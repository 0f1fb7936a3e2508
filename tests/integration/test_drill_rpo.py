"""Production's last commit time, which lets the drill tell an idle database from a lagging
archive, read from real clusters with and without track_commit_timestamp."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from restorekit.drill import last_commit_time
from restorekit.pg.cluster import LocalCluster


def test_the_last_commit_time_is_read_when_commit_times_are_tracked(
    local_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = local_cluster_factory("tracked", settings={"track_commit_timestamp": "on"})
    with cluster.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    last = last_commit_time(cluster.dsn())
    assert last is not None and last <= row[0]
    with cluster.connect(autocommit=True) as conn:
        conn.execute("INSERT INTO t VALUES (2)")
    later = last_commit_time(cluster.dsn())
    assert later is not None and later > last


def test_no_commit_time_without_tracking_or_without_a_server(
    local_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = local_cluster_factory("untracked")
    with cluster.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
    assert last_commit_time(cluster.dsn()) is None
    cluster.stop()
    assert last_commit_time(cluster.dsn()) is None
    # And the error path really was a connection failure, not a silent success.
    try:
        psycopg.connect(cluster.dsn(), connect_timeout=2).close()
    except psycopg.OperationalError:
        pass
    else:
        raise AssertionError("the stopped cluster still answered")

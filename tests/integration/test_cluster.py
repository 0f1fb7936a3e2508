from __future__ import annotations

import psycopg

from restorekit.pg.cluster import LocalCluster


def test_pg_dsn_is_a_fresh_database(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert tables == (0,)


def test_local_cluster_lifecycle(local_cluster_factory) -> None:
    cluster: LocalCluster = local_cluster_factory("life", start=False)
    assert not cluster.is_running()
    cluster.start()
    assert cluster.is_running()
    with cluster.connect() as conn:
        assert conn.execute("SHOW port").fetchone() == (str(cluster.port),)
        assert conn.execute("SHOW data_checksums").fetchone() == ("on",)
    cluster.stop()
    assert not cluster.is_running()
    cluster.destroy()
    assert not cluster.data_dir.exists()

"""Row-level diff between a live database and a restored copy in another cluster."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg import sql

from restorekit import sample
from restorekit.diff import SAMPLE_SIZE, diff_table, diff_tables
from restorekit.errors import ConfigError
from restorekit.pg.catalog import TableRef
from restorekit.pg.checksum import database_checksums
from restorekit.pg.cluster import LocalCluster

USERS = TableRef("public", "users")
CLIENTS = TableRef("public", "clients")
APPOINTMENTS = TableRef("public", "appointments")
ORDERS = TableRef("Shop", "Orders")
NO_PK = TableRef("public", "no_pk")
# Throwaway clusters: durability buys nothing here and CREATE DATABASE per test is fsync-bound.
FAST = {"fsync": False, "synchronous_commit": False, "full_page_writes": False}
TEMPLATE = "rk_diff_template"

EXTRA_DDL = """
CREATE SCHEMA "Shop";
CREATE TABLE "Shop"."Orders" (
    region      text,
    "Order No"  int,
    note        jsonb,
    spot        point,
    PRIMARY KEY (region, "Order No")
);
INSERT INTO "Shop"."Orders"
SELECT r, n, jsonb_build_object('n', n), point(n, n)
FROM unnest(ARRAY['eu', 'us', 'Ünï ''q'' "x"']) AS r, generate_series(1, 20) AS n;
CREATE TABLE no_pk (a int, b text);
"""


@pytest.fixture(scope="module")
def clusters(local_cluster_factory: Callable[..., LocalCluster]) -> tuple[LocalCluster, ...]:
    pair = tuple(local_cluster_factory(role, settings=FAST) for role in ("live", "copy"))
    for cluster in pair:
        with cluster.connect(autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
        with cluster.connect(TEMPLATE, autocommit=True) as conn:
            sample.create_schema(conn)
            sample.generate(conn, scale=0.02, seed=5)
            conn.execute(EXTRA_DDL)
    return pair


@pytest.fixture
def names(clusters: tuple[LocalCluster, LocalCluster]) -> Iterator[tuple[str, str]]:
    """DSNs of fresh identical databases: (live, copy)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    clone_template(clusters, name)
    yield clusters[0].dsn(name), clusters[1].dsn(name)
    for cluster in clusters:
        with cluster.connect(autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def clone_template(clusters: Sequence[LocalCluster], name: str) -> None:
    """CREATE DATABASE name TEMPLATE ... on every cluster at once (it takes ~0.3 s each)."""
    def clone(cluster: LocalCluster) -> None:
        with cluster.connect(autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE)))

    with ThreadPoolExecutor(len(clusters)) as pool:
        list(pool.map(clone, clusters))


@pytest.fixture
def dbs(names: tuple[str, str]) -> Iterator[tuple[psycopg.Connection, psycopg.Connection]]:
    with psycopg.connect(names[0], autocommit=True) as live, \
            psycopg.connect(names[1], autocommit=True) as copy:
        yield live, copy


def test_identical_tables(dbs) -> None:
    live, copy = dbs
    for table in (USERS, CLIENTS, APPOINTMENTS, ORDERS):
        diff = diff_table(live, copy, table)
        assert diff.identical, diff
        assert (diff.missing_keys_sample, diff.changed_keys_sample) == ((), ())


def test_missing_extra_changed_counted_exactly(dbs) -> None:
    live, copy = dbs
    live.execute("DELETE FROM appointments WHERE id IN (5, 6, 7)")
    live.execute("UPDATE appointments SET status = 'cancelled', notes = 'x' WHERE id IN (1, 2)")
    live.execute("UPDATE appointments SET starts_at = starts_at + interval '1 microsecond' "
                 "WHERE id = 3")
    live.execute("INSERT INTO appointments (user_id, client_id, starts_at) "
                 "SELECT user_id, id, now() FROM clients WHERE id <= 4")
    untouched = database_checksums(live)

    diff = diff_table(live, copy, APPOINTMENTS)
    assert (diff.missing, diff.extra, diff.changed) == (3, 4, 3)
    assert diff.primary_key == ("id",)
    assert diff.missing_keys_sample == ((5,), (6,), (7,))
    assert diff.changed_keys_sample == ((1,), (2,), (3,))
    assert len(diff.extra_keys_sample) == 4
    assert database_checksums(live) == untouched  # only temp tables were written
    leftovers = live.execute("SELECT count(*) FROM pg_class WHERE relpersistence = 't'")
    assert leftovers.fetchone() == (0,)
    assert json.loads(json.dumps(diff.to_dict()))["missing_keys_sample"] == [[5], [6], [7]]

    # Only the compared columns count; a key filter narrows both sides.
    assert diff_table(live, copy, APPOINTMENTS, columns=["id", "user_id"]).changed == 0
    low = sql.SQL("{} < {}").format(sql.Identifier("t", "id"), sql.Literal(6))
    narrowed = diff_table(live, copy, APPOINTMENTS, key_filter=low)
    assert (narrowed.missing, narrowed.extra, narrowed.changed) == (1, 0, 3)


def test_samples_are_capped(dbs) -> None:
    live, copy = dbs
    live.execute("UPDATE clients SET phone = NULL WHERE id <= 50")
    diff = diff_table(live, copy, CLIENTS)
    assert diff.changed == 50
    assert diff.changed_keys_sample == tuple((i,) for i in range(1, SAMPLE_SIZE + 1))


def test_composite_text_keys_and_quoted_names(dbs) -> None:
    live, copy = dbs
    live.execute('DELETE FROM "Shop"."Orders" WHERE region = %s AND "Order No" = 3',
                 ['Ünï \'q\' "x"'])
    live.execute("""UPDATE "Shop"."Orders" SET spot = point(0, 0) WHERE "Order No" = 9""")
    live.execute("""INSERT INTO "Shop"."Orders" VALUES ('zz', 1, NULL, NULL)""")
    diff = diff_table(live, copy, ORDERS)
    assert diff.primary_key == ("region", "Order No")
    assert (diff.missing, diff.extra, diff.changed) == (1, 1, 3)
    assert diff.missing_keys_sample == (('Ünï \'q\' "x"', 3),)
    assert diff.extra_keys_sample == (("zz", 1),)
    assert {k[1] for k in diff.changed_keys_sample} == {9}
    assert str(diff.to_dict()["table"]) == '"Shop"."Orders"'


def test_type_drift_uses_text_copy(dbs) -> None:
    live, copy = dbs
    # The live key column was widened after the restore point: int on the copy, bigint live.
    copy.execute('ALTER TABLE "Shop"."Orders" ALTER COLUMN "Order No" TYPE int')
    live.execute('ALTER TABLE "Shop"."Orders" ALTER COLUMN "Order No" TYPE bigint')
    assert diff_table(live, copy, ORDERS).identical


def test_no_primary_key_is_refused(dbs) -> None:
    live, copy = dbs
    with pytest.raises(ConfigError) as info:
        diff_table(live, copy, NO_PK)
    assert str(info.value) == (
        "table public.no_pk has no primary key; restorekit cannot tell rows apart — add one or "
        "restore the whole table from a snapshot"
    )
    with pytest.raises(ConfigError, match="table not found"):
        diff_table(live, copy, TableRef("public", "nope"))
    copy.execute("ALTER TABLE clients DROP COLUMN phone")
    with pytest.raises(ConfigError, match="phone of public.clients are not in the copy"):
        diff_table(live, copy, CLIENTS)


def test_diff_tables_from_dsns(names, dbs) -> None:
    live, _ = dbs
    live.execute("DELETE FROM users WHERE id = 1")  # cascades to its clients and appointments
    diffs = diff_tables(*names, [USERS, CLIENTS, APPOINTMENTS])
    assert [d.table for d in diffs] == [USERS, CLIENTS, APPOINTMENTS]
    assert diffs[0].missing == 1 and diffs[0].missing_keys_sample == ((1,),)
    assert all(d.extra == d.changed == 0 for d in diffs)
    assert diffs[1].missing == live.execute(
        "SELECT count(*) FROM audit_log WHERE table_name = 'clients'").fetchone()[0]
    json.dumps([d.to_dict() for d in diffs])

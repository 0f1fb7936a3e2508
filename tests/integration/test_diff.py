"""Row-level diff between a live database and a restored copy in another cluster."""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import psycopg
import pytest
from fixtures.pg import FAST, create_sample_template, fresh_clones
from psycopg import sql

from restorekit.diff import (
    SAMPLE_SIZE,
    RangeTuning,
    TableDiff,
    diff_table,
    diff_tables,
    resolve_shape,
)
from restorekit.diff.range_facts import _live_rows_at_least
from restorekit.diff.ranges import _sample_bounds
from restorekit.errors import ConfigError, PostgresError
from restorekit.pg.catalog import TableRef
from restorekit.pg.checksum import database_checksums, pinned_output_settings
from restorekit.pg.cluster import LocalCluster

USERS = TableRef("public", "users")
CLIENTS = TableRef("public", "clients")
APPOINTMENTS = TableRef("public", "appointments")
ORDERS = TableRef("Shop", "Orders")
NO_PK = TableRef("public", "no_pk")
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

# Tables of 2000 rows for the range method, with keys of several kinds. Autovacuum is off on
# them so that the Bernoulli sample a test computes is the one the diff takes.
RANGED_DDL = r"""
CREATE TABLE ranged_int (id bigint PRIMARY KEY, amount numeric, ratio float8, span interval,
                         doc jsonb, note text, at timestamptz);
INSERT INTO ranged_int
SELECT g * 3, g, CASE WHEN g % 100 = 50 THEN 0 ELSE g / 3.0 END, g * interval '1 hour',
       jsonb_build_object('g', g), CASE WHEN g % 5 = 0 THEN NULL ELSE 'n' || g END,
       timestamptz '2024-01-01 00:00+00' + g * interval '1 min'
FROM generate_series(1, 2000) AS g;

CREATE TABLE ranged_pair (a int, b text, payload text, PRIMARY KEY (a, b));
INSERT INTO ranged_pair SELECT g % 7, md5(g::text), 'p' || g FROM generate_series(1, 2000) AS g;

CREATE TABLE ranged_uuid (id uuid PRIMARY KEY, note text, amount numeric);
INSERT INTO ranged_uuid SELECT md5('u' || g)::uuid, 'n' || g, g FROM generate_series(1, 2000) g;

CREATE TABLE ranged_text (code text PRIMARY KEY, note text);
INSERT INTO ranged_text
SELECT 'k-' || lpad(g::text, 5, '0') || (ARRAY['', ' "q"', ' \ b', ', {x}', 'ü'])[g % 5 + 1],
       'n' || g
FROM generate_series(1, 2000) AS g;

CREATE SCHEMA "Mixed Case";
CREATE TABLE "Mixed Case"."Tally Ho" ("Region" text, "No" int, "Value" bytea,
                                      PRIMARY KEY ("Region", "No"));
INSERT INTO "Mixed Case"."Tally Ho"
SELECT r, n, convert_to(r || n, 'UTF8')
FROM unnest(ARRAY['', 'NULL', 'a,b', 'x"y', 'back\slash', '{}', 'eu', 'ünï']) AS r,
     generate_series(1, 250) AS n;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ranged_int', 'ranged_pair', 'ranged_uuid', 'ranged_text',
                             '"Mixed Case"."Tally Ho"'] LOOP
        EXECUTE format('ALTER TABLE %s SET (autovacuum_enabled = false)', t);
        EXECUTE format('ANALYZE %s', t);
    END LOOP;
END
$$;
"""


@pytest.fixture(scope="module")
def clusters(local_cluster_factory: Callable[..., LocalCluster]) -> tuple[LocalCluster, ...]:
    pair = tuple(local_cluster_factory(role, settings=FAST) for role in ("live", "copy"))
    for cluster in pair:
        create_sample_template(cluster, TEMPLATE, scale=0.02, seed=5,
                               statements=[EXTRA_DDL, RANGED_DDL])
    return pair


@pytest.fixture
def names(clusters: tuple[LocalCluster, LocalCluster]) -> Iterator[tuple[str, str]]:
    """DSNs of fresh identical databases: (live, copy)."""
    with fresh_clones(clusters, TEMPLATE) as name:
        yield clusters[0].dsn(name), clusters[1].dsn(name)


@pytest.fixture
def dbs(names: tuple[str, str]) -> Iterator[tuple[psycopg.Connection, psycopg.Connection]]:
    with psycopg.connect(names[0], autocommit=True) as live, \
            psycopg.connect(names[1], autocommit=True) as copy:
        yield live, copy


def test_pinned_output_settings_pin_then_put_back(dbs) -> None:
    live, _ = dbs
    live.execute("SET TimeZone = 'America/New_York'")
    live.execute("SET DateStyle = 'German, DMY'")
    live.execute("SET extra_float_digits = 3")
    show = "SELECT current_setting('TimeZone'), current_setting('DateStyle'), " \
           "current_setting('extra_float_digits')"
    before = live.execute(show).fetchone()
    for transaction in (False, True):
        with live.transaction() if transaction else contextlib.nullcontext(), \
                pinned_output_settings(live):
            assert live.execute(show).fetchone() == ("UTC", "ISO, MDY", "1")
        assert live.execute(show).fetchone() == before


def test_a_databases_short_timeouts_do_not_cut_the_diff(names: tuple[str, str]) -> None:
    """A production that bounds every statement (``ALTER DATABASE ... SET statement_timeout``)
    and idle transactions, as does the copy restored from it: the diff's sessions lift both for
    themselves. A statement that outlasts the bound is made here without a race: another
    session holds a lock on the table for 1 s, four times the 250 ms bound."""
    import threading

    from restorekit.pg.cluster import connect, whole_table_session

    with psycopg.connect(names[0], autocommit=True) as live:
        live.execute("DELETE FROM ranged_int WHERE id % 7 = 0")
    for dsn in names:
        with psycopg.connect(dsn, autocommit=True) as conn:
            name = sql.Identifier(conn.info.dbname)
            conn.execute(sql.SQL("ALTER DATABASE {} SET statement_timeout = '250ms'"
                                 ).format(name))
            conn.execute(sql.SQL("ALTER DATABASE {} SET idle_in_transaction_session_timeout = "
                                 "'250ms'").format(name))
            conn.execute(sql.SQL("ALTER DATABASE {} SET idle_session_timeout = '250ms'"
                                 ).format(name))

    def hold_the_table(conn: psycopg.Connection) -> threading.Thread:
        whole_table_session(conn)
        conn.execute("LOCK TABLE ranged_int IN ACCESS EXCLUSIVE MODE")
        release = threading.Timer(1.0, conn.commit)
        release.start()
        return release

    with psycopg.connect(names[0]) as holder, \
            psycopg.connect(names[0], autocommit=True) as other:
        release = hold_the_table(holder)
        with pytest.raises(psycopg.errors.QueryCanceled):  # a session of the database's users
            other.execute("SELECT count(*) FROM ranged_int")
        release.join()
    with psycopg.connect(names[0]) as holder:
        release = hold_the_table(holder)
        started = time.monotonic()
        (ranged,) = diff_tables(*names, [TableRef("public", "ranged_int")])
        assert time.monotonic() - started >= 0.5  # it did wait for the lock
        release.join()
    assert ranged.missing == 2000 // 7 and ranged.changed == ranged.extra == 0
    # A transaction left idle longer than the database allows (the recovery's on production,
    # while it reads the copy) is ended by the server, but not on a lifted session.
    with psycopg.connect(names[0]) as plain:
        plain.execute("SELECT 1")
        time.sleep(1.0)
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            plain.execute("SELECT 1")
    with whole_table_session(connect(names[0])) as conn:
        conn.execute("SELECT count(*) FROM ranged_int")
        time.sleep(1.0)
        assert conn.execute("SELECT 1").fetchone() == (1,)
        conn.commit()
        time.sleep(1.0)  # idle outside a transaction, too (idle_session_timeout)
        assert conn.execute("SELECT 1").fetchone() == (1,)
        conn.commit()


def test_a_table_row_level_security_would_read_in_part_is_refused(
        names: tuple[str, str]) -> None:
    """Row-level security that hides rows from the diff's role (not the owner, as an
    application's role may be) would make the hidden rows look missing on that side, and a
    repair would re-insert them. The diff's sessions turn row_security off, as pg_dump does:
    the read fails, naming the policy and what to change, instead."""
    from restorekit.pg.dsn import merge

    role = f"rk_reader_{time.monotonic_ns()}"  # roles are per cluster, databases per test
    for dsn in names:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
                sql.Identifier(role)))
    with psycopg.connect(names[0], autocommit=True) as live:
        live.execute("ALTER TABLE ranged_int ENABLE ROW LEVEL SECURITY")
        live.execute(sql.SQL("CREATE POLICY only_some ON ranged_int TO {} USING (id % 2 = 0)"
                             ).format(sql.Identifier(role)))
    live_dsn, copy_dsn = (merge(dsn, user=role) for dsn in names)
    with psycopg.connect(live_dsn) as reader:
        assert reader.execute("SELECT count(*) FROM ranged_int").fetchone() == (1000,)
    with pytest.raises(PostgresError, match=r"row-level security policy for table "
                       r"\"ranged_int\".*owns the table or has BYPASSRLS"):
        diff_tables(live_dsn, copy_dsn, [TableRef("public", "ranged_int")])


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
    for tuning in TUNINGS:  # the same answers by key ranges
        assert diff_table(live, copy, APPOINTMENTS, method="range", tuning=tuning) == diff
        assert diff_table(live, copy, APPOINTMENTS, key_filter=low, method="range",
                          tuning=tuning) == narrowed
        assert diff_table(live, copy, APPOINTMENTS, columns=["id", "user_id"],
                          method="range", tuning=tuning).changed == 0
    assert database_checksums(live) == untouched


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
    assert diff_table(live, copy, ORDERS, method="range", tuning=FINE).identical
    live.execute("""UPDATE "Shop"."Orders" SET note = '{}' WHERE "Order No" = 20""")
    assert diff_table(live, copy, ORDERS, method="range", tuning=FINE) == \
        diff_table(live, copy, ORDERS, method="full")


def test_no_primary_key_is_refused(dbs) -> None:
    live, copy = dbs
    for method in ("auto", "range", "full"):
        with pytest.raises(ConfigError) as info:
            diff_table(live, copy, NO_PK, method=method)
        assert str(info.value) == (
            "table public.no_pk has no primary key; restorekit cannot tell rows apart — add one "
            "or restore the whole table from a snapshot"
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
    # Inside diff_tables' REPEATABLE READ transactions, by key ranges: the same answers.
    assert diff_tables(*names, [USERS, CLIENTS, APPOINTMENTS], method="range",
                       tuning=FINE) == diffs


# -- the range method: always the full method's answer ----------------------------------------

# Ranges of about 4 rows, bisected where they hold more; and 4 first ranges of about 500 rows,
# cut into 3 per level (several levels deep), classified by range even when all rows differ.
FINE = RangeTuning(leaf_rows=4)
COARSE = RangeTuning(leaf_rows=8, max_ranges=3, max_fanout=3, full_fraction=1.0)
TUNINGS = (FINE, COARSE)


@dataclass(frozen=True)
class Ranged:
    table: TableRef
    column: str  # a non-key column the tests change
    inserts: str  # live-only rows: below the lowest key, above the highest, and in between


RANGED = [
    Ranged(TableRef("public", "ranged_int"), "note",
           "INSERT INTO ranged_int (id, note) VALUES (-5, 'below'), (1e7, 'above'), (301, 'x')"),
    Ranged(TableRef("public", "ranged_pair"), "payload",
           "INSERT INTO ranged_pair VALUES (-1, 'a', 'below'), (99, '', 'above'), "
           "(3, 'zzz', 'between'), (3, '', 'between')"),
    Ranged(TableRef("public", "ranged_uuid"), "note",
           "INSERT INTO ranged_uuid VALUES ('00000000-0000-0000-0000-000000000000', 'below'), "
           "('ffffffff-ffff-ffff-ffff-ffffffffffff', 'above'), (gen_random_uuid(), 'x')"),
    Ranged(TableRef("public", "ranged_text"), "note",
           "INSERT INTO ranged_text VALUES ('', 'below'), ('~~', 'above'), "
           "('k-00005 \\\\ b', 'between'), ('k-00007\"', 'between')"),
    Ranged(TableRef("Mixed Case", "Tally Ho"), "Value",
           """INSERT INTO "Mixed Case"."Tally Ho" VALUES (' ', 0, NULL), ('ÿ', 1, NULL), """
           """('a,b', 1000, '\\x00'), ('NULL', -1, '')"""),
]


def same_as_full(live: psycopg.Connection, copy: psycopg.Connection, table: TableRef,
                 **kwargs: object) -> TableDiff:
    """The full method's diff, after checking that every range tuning gives exactly it."""
    full = diff_table(live, copy, table, method="full", **kwargs)
    assert full.stats is not None and full.stats.method == "full"
    for tuning in TUNINGS:
        ranged = diff_table(live, copy, table, method="range", tuning=tuning, **kwargs)
        assert ranged == full, (tuning, ranged, full)
        assert ranged.stats is not None and ranged.stats.method == "range"
    return full


def keys_of(conn: psycopg.Connection, table: TableRef) -> list[tuple[tuple, tuple[str, ...]]]:
    """Every key, in key order: (typed values, their text under pinned output settings)."""
    key = resolve_shape(conn, conn, table).key
    cols = sql.SQL(", ").join(sql.Identifier("t", c) for c in key)
    texts = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier("t", c)) for c in key)
    with pinned_output_settings(conn):
        rows = conn.execute(sql.SQL("SELECT {}, {} FROM {} AS t ORDER BY {}").format(
            cols, texts, table.ident, cols)).fetchall()
    return [(tuple(r[:len(key)]), tuple(r[len(key):])) for r in rows]


def match(table: TableRef, conn: psycopg.Connection) -> sql.Composed:
    key = resolve_shape(conn, conn, table).key
    return sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in key)


def delete(conn: psycopg.Connection, table: TableRef, keys: Sequence[tuple]) -> None:
    statement = sql.SQL("DELETE FROM {} WHERE {}").format(table.ident, match(table, conn))
    conn.cursor().executemany(statement, list(keys))


def update(conn: psycopg.Connection, spec: Ranged, keys: Sequence[tuple], value: str) -> None:
    """SET spec.column = value (SQL: 'NULL', "''", or an expression of the column, {col})."""
    col = sql.Identifier(spec.column)
    statement = sql.SQL("UPDATE {} SET {} = {} WHERE {}").format(
        spec.table.ident, col, sql.SQL(value).format(col=col), match(spec.table, conn))
    conn.cursor().executemany(statement, list(keys))


def first_bounds(live: psycopg.Connection, copy: psycopg.Connection, table: TableRef,
                 tuning: RangeTuning) -> list[tuple[str, ...]]:
    """The first pass's range bounds, as diff_table(method="range") will sample them."""
    shape = resolve_shape(live, copy, table)
    with pinned_output_settings(live):
        return _sample_bounds(live, shape, _live_rows_at_least(live, shape, tuning.min_rows),
                              None, tuning)


@pytest.mark.parametrize("spec", RANGED, ids=[str(r.table) for r in RANGED])
def test_range_method_equals_full_method(dbs, spec: Ranged) -> None:
    live, copy = dbs
    table = spec.table
    assert same_as_full(live, copy, table).identical

    # Live: the first and last rows and a random 3 % deleted; NULL, '' and edits in the
    # compared column; new rows below, above and between the old keys.
    rng = random.Random(str(table))
    original = keys_of(live, table)
    keys = [k for k, _ in original]
    gone = {keys[0], keys[-1], *rng.sample(keys, 60)}
    delete(live, table, gone)
    kept = [k for k in keys if k not in gone]
    update(live, spec, kept[:1] + rng.sample(kept, 40), "NULL")
    update(live, spec, rng.sample(kept, 20), "''")
    update(live, spec, rng.sample(kept, 40), "coalesce({col}, '') || '*'")
    live.execute(spec.inserts)
    # Copy: rows at (and just below) the bounds the first pass will cut at.
    text_to_key = {text: k for k, text in original}
    position = {k: i for i, k in enumerate(keys)}
    for tuning in TUNINGS:
        at_bounds = [text_to_key[b] for b in first_bounds(live, copy, table, tuning)
                     if b in text_to_key and text_to_key[b] not in gone]
        assert len(at_bounds) >= (8 if tuning is FINE else 1), at_bounds
        delete(copy, table, {at_bounds[0], at_bounds[-1]})
        update(copy, spec, at_bounds[1:-1][:3], "NULL")
        update(copy, spec, [keys[position[k] - 1] for k in at_bounds[1:-1][3:6]], "''")
    before = database_checksums(live), database_checksums(copy)
    diff = same_as_full(live, copy, table)
    assert (database_checksums(live), database_checksums(copy)) == before  # read only
    assert live.execute("SELECT count(*) FROM pg_class WHERE relpersistence = 't'"
                        ).fetchone() == (0,)  # the temp tables are gone
    assert diff.missing == len(gone) and diff.extra >= 4 and diff.changed >= 50, diff
    assert diff.missing_keys_sample[0] == keys[0]  # the first row, deleted live

    # Every row different, then one side empty, then both, then the other.
    update(live, spec, kept, "coalesce({col}, '') || '!'")
    assert same_as_full(live, copy, table).changed >= len(kept) - 4
    live.execute(sql.SQL("CREATE TEMP TABLE saved AS SELECT * FROM {}").format(table.ident))
    live.execute(sql.SQL("TRUNCATE {}").format(table.ident))
    assert same_as_full(live, copy, table).extra == 0
    copy.execute(sql.SQL("TRUNCATE {}").format(table.ident))
    assert same_as_full(live, copy, table).identical
    live.execute(sql.SQL("INSERT INTO {} SELECT * FROM saved").format(table.ident))
    saved = live.execute("SELECT count(*) FROM saved").fetchone()[0]
    assert same_as_full(live, copy, table).extra == saved > 0


def test_range_method_sees_changes_only_the_text_shows(dbs) -> None:
    """Equal values with another text (1 vs 1.00, '25:00:00' vs '1 day 01:00:00', 0 vs -0,
    {"g": 5} vs {"g": 5.0}) are changed rows for the full method, so for ranges too."""
    live, copy = dbs
    table = TableRef("public", "ranged_int")
    live.execute("UPDATE ranged_int SET amount = amount + 0.00 WHERE id % 300 = 0")
    live.execute("UPDATE ranged_int SET span = justify_hours(span) WHERE id % 301 = 0")
    live.execute("UPDATE ranged_int SET ratio = '-0' WHERE ratio = 0")
    live.execute("UPDATE ranged_int SET doc = jsonb_build_object('g', (doc->>'g')::numeric + 0.0)"
                 " WHERE id % 302 = 0")
    assert live.execute("SELECT count(*) FROM ranged_int WHERE id % 300 = 0 OR id % 301 = 0 "
                        "OR ratio = 0 OR id % 302 = 0").fetchone() == (52,)
    assert same_as_full(live, copy, table).changed == 52


def test_range_method_picks_its_first_pass(dbs) -> None:
    """auto: the full method below min_rows; scattered fixed-width keys (uuids) are bucketed in
    one sequential scan, ordered ones read range by range through the index."""
    live, copy = dbs
    small = diff_table(live, copy, TableRef("public", "ranged_int"))
    assert small.stats is not None and small.stats.method == "full"
    tuning = RangeTuning(min_rows=1000)
    for name, first in (("ranged_int", "index ranges"), ("ranged_uuid", "bucket scan"),
                        ("ranged_pair", "index ranges")):
        found = diff_table(live, copy, TableRef("public", name), tuning=tuning)
        assert found.identical and found.stats is not None
        assert (found.stats.method, found.stats.first_pass) == ("range", first), found.stats


def test_key_sorted_differently_in_the_copy(dbs) -> None:
    """Ranges must hold the same rows on both sides: a key collation that differs in the copy
    makes auto use the full method and method="range" refuse."""
    live, copy = dbs
    table = TableRef("public", "ranged_text")
    other = copy.execute("SELECT collname FROM pg_collation WHERE collname = ANY(%s) "
                         "ORDER BY collname LIMIT 1",
                         [["C.utf8", "en-x-icu", "en_US.utf8"]]).fetchone()
    if other is None:
        pytest.skip("no collation other than C in this cluster")
    copy.execute(sql.SQL("ALTER TABLE ranged_text ALTER COLUMN code TYPE text COLLATE {}")
                 .format(sql.Identifier(other[0])))
    live.execute("DELETE FROM ranged_text WHERE code < 'k-00100'")
    with pytest.raises(ConfigError, match="sorted by a different collation in the copy"):
        diff_table(live, copy, table, method="range")
    found = diff_table(live, copy, table, tuning=RangeTuning(min_rows=1))
    assert found.stats is not None and found.stats.method == "full"
    assert "collation" in found.stats.reason and found.missing == 99

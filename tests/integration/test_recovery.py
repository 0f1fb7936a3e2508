"""Selective recovery (runbook scenarios 2 and 3) between two real clusters.

``live`` and ``copy`` are separate PostgreSQL clusters (no cross-database joins possible). Each
test gets a fresh database on both, cloned from a template holding the sample schema generated
with the same seed, so the two start identical: the copy is "production at the restore point".
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta

import psycopg
import pytest
from fixtures.pg import FAST, create_sample_template, fresh_clones
from psycopg import sql

from restorekit import sample
from restorekit.diff import diff_table
from restorekit.errors import ConfigError, SafetyError
from restorekit.pg.catalog import TableRef
from restorekit.pg.checksum import pinned_output_settings, table_checksum
from restorekit.pg.cluster import LocalCluster
from restorekit.recovery import (
    deleted_keys_from_audit,
    missing_keys,
    plan_repair,
    recover_deleted_rows,
    repair_rows,
)

SCALE, SEED = 0.02, 11  # 200 users, 600 clients, 1200 appointments
N_USERS, N_CLIENTS, N_APPTS = 200, 600, 1200
USERS = TableRef("public", "users")
CLIENTS = TableRef("public", "clients")
APPOINTMENTS = TableRef("public", "appointments")
SAMPLE = (USERS, CLIENTS, APPOINTMENTS)
EMPLOYEES = TableRef("public", "employees")
NO_PK = TableRef("public", "no_pk")
ORDERS = TableRef("Shop", "Orders")
LINES = TableRef("Shop", "Order Lines")
ORIGINAL = {USERS: N_USERS, CLIENTS: N_CLIENTS, APPOINTMENTS: N_APPTS}

# Identical on both sides. Composite text keys, quoted mixed-case names, a GENERATED ALWAYS
# identity loaded with explicit values (its sequence is behind the data), a stored generated
# column, a self-referencing cascade and a table without a primary key.
EXTRA_DDL = """
CREATE SCHEMA "Shop";
CREATE TABLE "Shop"."Orders" (
    region      text,
    "Order No"  int,
    placed_at   timestamptz NOT NULL,
    note        jsonb,
    PRIMARY KEY (region, "Order No")
);
CREATE TABLE "Shop"."Order Lines" (
    region      text,
    "Order No"  int,
    line        int,
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    qty         int NOT NULL,
    price       numeric(10, 2) NOT NULL,
    total       numeric GENERATED ALWAYS AS (qty * price) STORED,
    PRIMARY KEY (region, "Order No", line),
    FOREIGN KEY (region, "Order No") REFERENCES "Shop"."Orders" ON DELETE CASCADE
);
INSERT INTO "Shop"."Orders"
SELECT r, n, timestamptz '2024-01-01 00:00+00' + n * interval '1 day',
       jsonb_build_object('n', n, 'tags', jsonb_build_array(r))
FROM unnest(ARRAY['eu', 'us', 'Ünï ''q'' "x"']) AS r, generate_series(1, 20) AS n;
INSERT INTO "Shop"."Order Lines" (region, "Order No", line, seq, qty, price)
OVERRIDING SYSTEM VALUE
SELECT region, "Order No", l, 1000 + row_number() OVER (ORDER BY region, "Order No", l), l, 9.99
FROM "Shop"."Orders", generate_series(1, 3) AS l;

CREATE TABLE employees (
    id          int PRIMARY KEY,
    manager_id  int REFERENCES employees ON DELETE CASCADE,
    name        text NOT NULL
);
INSERT INTO employees
SELECT g, CASE WHEN g = 1 THEN NULL ELSE g / 2 END, 'employee ' || g FROM generate_series(1, 31) g;

CREATE TABLE no_pk (a int, b text);
INSERT INTO no_pk SELECT g, 'row ' || g FROM generate_series(1, 10) g;
"""

# Live records commit times (keep_rows_written_after needs them); the copy does not, so the
# refusal can be shown by swapping the two.
LIVE_SETTINGS = {**FAST, "track_commit_timestamp": True}
TEMPLATE = "rk_recovery_template"


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clusters(local_cluster_factory: Callable[..., LocalCluster]) -> tuple[LocalCluster, ...]:
    """Two clusters, each with an identical template database."""
    pair = tuple(local_cluster_factory(role, settings=LIVE_SETTINGS if role == "live" else FAST)
                 for role in ("live", "copy"))
    for cluster in pair:
        create_sample_template(cluster, TEMPLATE, scale=SCALE, seed=SEED,
                               statements=[EXTRA_DDL, "ANALYZE"])
    return pair


@pytest.fixture
def dbs(clusters: tuple[LocalCluster, LocalCluster]
        ) -> Iterator[tuple[psycopg.Connection, psycopg.Connection]]:
    """(live, copy) connections to fresh identical databases in the two clusters."""
    live_cluster, copy_cluster = clusters
    with fresh_clones(clusters, TEMPLATE) as name, \
            live_cluster.connect(name, autocommit=True) as live, \
            copy_cluster.connect(name, autocommit=True) as copy:
        yield live, copy


# -- helpers -------------------------------------------------------------------------------------


def checksum_where(conn: psycopg.Connection, table: TableRef, condition: str = "true",
                   params: Sequence[object] = ()) -> str:
    """table_checksum over the rows of ``table`` matching ``condition`` (through a temp view)."""
    view = TableRef("pg_temp", f"v_{uuid.uuid4().hex[:8]}")
    cond = sql.SQL(condition).format(*(sql.Literal(p) for p in params))
    conn.execute(sql.SQL("CREATE TEMP VIEW {} AS SELECT * FROM {} WHERE {}").format(
        sql.Identifier(view.name), table.ident, cond))
    try:
        return table_checksum(conn, view)
    finally:
        conn.execute(sql.SQL("DROP VIEW {}").format(view.ident))


def rows_text(conn: psycopg.Connection, table: TableRef, condition: str,
              params: Sequence[object] = ()) -> list[str]:
    with pinned_output_settings(conn):
        rows = conn.execute(
            sql.SQL("SELECT t::text FROM {} AS t WHERE {} ORDER BY 1").format(
                table.ident, sql.SQL(condition)), params).fetchall()
    return [r[0] for r in rows]


def counts(conn: psycopg.Connection) -> dict[str, int]:
    return sample.row_counts(conn)


def all_checksums(conn: psycopg.Connection) -> dict[TableRef, str]:
    return {t: table_checksum(conn, t) for t in (*SAMPLE, ORDERS, LINES, EMPLOYEES)}


def victims(conn: psycopg.Connection, n: int) -> list[int]:
    rows = conn.execute(
        "SELECT user_id FROM appointments GROUP BY user_id ORDER BY user_id LIMIT %s", [n]
    ).fetchall()
    return [r[0] for r in rows]


def comparable(result_dict: dict) -> dict:
    return {k: v for k, v in result_dict.items() if k not in ("dry_run", "elapsed_seconds")}


# -- scenario 3: accidental deletion -------------------------------------------------------------


def test_recover_deleted_users_with_cascade(dbs) -> None:
    live, copy = dbs
    gone = victims(live, 5)
    n_clients = copy.execute("SELECT count(*) FROM clients WHERE user_id = ANY(%s)",
                             [gone]).fetchone()[0]
    n_appts = copy.execute("SELECT count(*) FROM appointments WHERE user_id = ANY(%s)",
                           [gone]).fetchone()[0]
    assert n_clients > 5 and n_appts > 5
    before = live.execute("SELECT now()").fetchone()[0]

    live.execute("DELETE FROM users WHERE id = ANY(%s)", [gone])  # cascades + audit rows
    assert counts(live)["clients"] == N_CLIENTS - n_clients
    # The application goes on writing after the deletion.
    new_user = live.execute("INSERT INTO users (name, email) VALUES ('Late Comer', "
                            "'late@example.com') RETURNING id").fetchone()[0]
    new_client = live.execute("INSERT INTO clients (user_id, name) VALUES (%s, 'Late Client') "
                              "RETURNING id", [new_user]).fetchone()[0]
    live.execute("INSERT INTO appointments (user_id, client_id, starts_at) "
                 "VALUES (%s, %s, now())", [new_user, new_client])
    live.execute("UPDATE users SET name = 'Renamed Later' WHERE id = 150")
    later = {t: rows_text(live, t, "t.id > %s OR (t.id = 150 AND %s = 'public.users')",
                          [ORIGINAL[t], str(t)]) for t in SAMPLE}

    keys = deleted_keys_from_audit(live, USERS, since=before)
    assert keys == [(u,) for u in gone]
    result = recover_deleted_rows(live, copy, USERS, keys)

    assert result.plan.tables == SAMPLE
    assert [(o.table, o.staged, o.inserted, o.skipped_existing) for o in result.tables] == [
        (USERS, 5, 5, 0), (CLIENTS, n_clients, n_clients, 0), (APPOINTMENTS, n_appts, n_appts, 0),
    ]
    assert result.keys_requested == 5 and result.keys_not_in_copy == 0
    assert result.sequences_advanced == ()  # the identities were already past these ids
    json.dumps(result.to_dict())

    # Byte for byte: every original row equals the copy's, except the one renamed later.
    for table in SAMPLE:
        condition = "id <= {} AND NOT (id = 150 AND {})"
        params = [ORIGINAL[table], table == USERS]
        assert checksum_where(live, table, condition, params) == \
            checksum_where(copy, table, condition, params), table
    assert rows_text(live, APPOINTMENTS, "t.user_id = ANY(%s)", [gone]) == \
        rows_text(copy, APPOINTMENTS, "t.user_id = ANY(%s)", [gone])
    # Rows written after the deletion are untouched.
    for table in SAMPLE:
        assert rows_text(live, table, "t.id > %s OR (t.id = 150 AND %s = 'public.users')",
                         [ORIGINAL[table], str(table)]) == later[table]

    again = recover_deleted_rows(live, copy, USERS, keys)
    assert again.inserted == 0
    assert [(o.staged, o.skipped_existing) for o in again.tables] == [
        (5, 5), (n_clients, n_clients), (n_appts, n_appts)]


def test_audit_scope_matches_anti_diff(dbs) -> None:
    live, copy = dbs
    start = live.execute("SELECT now()").fetchone()[0]
    live.execute("DELETE FROM users WHERE id = ANY(%s)", [victims(live, 3)])
    live.execute("DELETE FROM clients WHERE id IN (SELECT id FROM clients ORDER BY id DESC "
                 "LIMIT 4)")
    live.execute("DELETE FROM appointments WHERE id % 97 = 0")
    for table in SAMPLE:
        from_audit = deleted_keys_from_audit(live, table, since=start)
        assert from_audit, table
        assert from_audit == missing_keys(live, copy, table), table
    assert deleted_keys_from_audit(live, USERS, since=start + timedelta(hours=1)) == []
    assert deleted_keys_from_audit(live, USERS, until=start) == []
    with pytest.raises(ConfigError, match="no timezone"):
        deleted_keys_from_audit(live, USERS, since=datetime(2024, 1, 1))
    # No audit_log next to "Shop"."Orders": the caller must fall back to the anti-diff.
    assert deleted_keys_from_audit(live, ORDERS) is None


def test_anti_diff_recovery_dry_run_is_exact_and_changes_nothing(dbs) -> None:
    live, copy = dbs
    gone = victims(live, 3)
    live.execute("DELETE FROM users WHERE id = ANY(%s)", [gone])
    untouched = all_checksums(live)

    dry = recover_deleted_rows(live, copy, USERS, None, dry_run=True)
    assert dry.dry_run and dry.plan.key_source == "anti-diff"
    assert all_checksums(live) == untouched
    assert dry.inserted > 3

    real = recover_deleted_rows(live, copy, USERS, None)
    assert comparable(real.to_dict()) == comparable(dry.to_dict())
    for table in SAMPLE:
        assert table_checksum(live, table) == table_checksum(copy, table)
    nothing = recover_deleted_rows(live, copy, USERS, None)
    assert nothing.keys_requested == 0 and nothing.inserted == 0


def test_recover_without_cascade_and_unknown_keys(dbs) -> None:
    live, copy = dbs
    [user] = victims(live, 1)
    live.execute("DELETE FROM users WHERE id = %s", [user])
    result = recover_deleted_rows(live, copy, USERS, [user, 99_999], include_cascade=False)
    assert result.plan.tables == (USERS,)
    assert result.outcome(USERS).inserted == 1
    assert result.keys_requested == 2 and result.keys_not_in_copy == 1
    assert live.execute("SELECT count(*) FROM clients WHERE user_id = %s",
                        [user]).fetchone() == (0,)
    with pytest.raises(ConfigError, match="has 2 value"):
        recover_deleted_rows(live, copy, USERS, [(1, 2)])


def test_conflict_with_later_row_is_refused_all_or_nothing(dbs) -> None:
    live, copy = dbs
    [user] = victims(live, 1)
    email = live.execute("SELECT email FROM users WHERE id = %s", [user]).fetchone()[0]
    live.execute("DELETE FROM users WHERE id = %s", [user])
    # A new sign-up re-uses the email after the deletion.
    live.execute("INSERT INTO users (name, email) VALUES ('New Owner', %s)", [email])
    before = all_checksums(live)
    with pytest.raises(SafetyError, match="users_email_key") as info:
        recover_deleted_rows(live, copy, USERS, [(user,)])
    assert "nothing was written" in str(info.value)
    assert all_checksums(live) == before
    # The session is usable afterwards.
    assert live.execute("SELECT 1").fetchone() == (1,)


def test_composite_text_keys_quoted_names_identity_always(dbs) -> None:
    live, copy = dbs
    gone = [("eu", 2), ('Ünï \'q\' "x"', 5)]
    for region, no in gone:
        live.execute('DELETE FROM "Shop"."Orders" WHERE region = %s AND "Order No" = %s',
                     [region, no])
    keys = missing_keys(live, copy, ORDERS)
    assert sorted(keys) == sorted(gone)

    sequence = 'SELECT last_value, is_called FROM "Shop"."Order Lines_seq_seq"'
    dry = recover_deleted_rows(live, copy, ORDERS, keys, dry_run=True)
    assert dry.sequences_advanced == ('"Shop"."Order Lines_seq_seq"',)
    assert live.execute(sequence).fetchone() == (1, False)  # a dry run moves no sequence

    result = recover_deleted_rows(live, copy, ORDERS, keys)
    assert [(o.table, o.inserted) for o in result.tables] == [(ORDERS, 2), (LINES, 6)]
    for table in (ORDERS, LINES):
        assert table_checksum(live, table) == table_checksum(copy, table)
    # The identity was loaded with explicit values; it is moved past them.
    assert result.sequences_advanced == ('"Shop"."Order Lines_seq_seq"',)
    nxt = live.execute(
        'INSERT INTO "Shop"."Order Lines" (region, "Order No", line, qty, price) '
        "VALUES ('eu', 1, 99, 1, 1) RETURNING seq").fetchone()[0]
    assert nxt > 1000 + 180


def test_changed_column_types_fall_back_to_text_copy(dbs) -> None:
    live, copy = dbs
    # Widened live after the restore point: binary COPY would refuse int -> bigint.
    live.execute('ALTER TABLE "Shop"."Orders" ALTER COLUMN "Order No" TYPE bigint')
    live.execute('ALTER TABLE "Shop"."Order Lines" ALTER COLUMN "Order No" TYPE bigint, '
                 "ALTER COLUMN line TYPE numeric")
    live.execute("""DELETE FROM "Shop"."Orders" WHERE region = 'us' AND "Order No" = 7""")
    live.execute("""UPDATE "Shop"."Orders" SET placed_at = now() WHERE "Order No" = 8""")
    result = recover_deleted_rows(live, copy, ORDERS, [("us", 7)])
    assert [o.inserted for o in result.tables] == [1, 3]
    assert repair_rows(live, copy, [ORDERS]).updated == 3
    for table in (ORDERS, LINES):
        assert rows_text(live, table, "true") == rows_text(copy, table, "true")


def test_self_referencing_cascade(dbs) -> None:
    live, copy = dbs
    live.execute("DELETE FROM employees WHERE id = 2")  # takes 4, 5, 8..11, 16..23
    assert live.execute("SELECT count(*) FROM employees").fetchone() == (16,)
    result = recover_deleted_rows(live, copy, EMPLOYEES, [(2,)])
    assert result.outcome(EMPLOYEES).inserted == 15
    assert table_checksum(live, EMPLOYEES) == table_checksum(copy, EMPLOYEES)


# -- scenario 2: partial corruption --------------------------------------------------------------


def test_repair_rows_keeps_later_rows_unless_asked(dbs) -> None:
    live, copy = dbs
    live.execute("UPDATE users SET email = 'corrupt-' || id WHERE id IN (3, 4, 5)")
    live.execute("UPDATE appointments SET notes = 'scrambled' WHERE id = 7")
    gone = [r[0] for r in live.execute("SELECT id FROM clients ORDER BY id LIMIT 3")]
    cascaded = live.execute("SELECT count(*) FROM appointments WHERE client_id = ANY(%s)",
                            [gone]).fetchone()[0]
    live.execute("DELETE FROM clients WHERE id = ANY(%s)", [gone])
    # Written after the restore point: a new user with a client.
    new_user = live.execute("INSERT INTO users (name, email) VALUES ('After', 'after@x.org') "
                            "RETURNING id").fetchone()[0]
    live.execute("INSERT INTO clients (user_id, name) VALUES (%s, 'After Client')", [new_user])
    before = all_checksums(live)

    dry = repair_rows(live, copy, [APPOINTMENTS, USERS, CLIENTS], dry_run=True)
    assert all_checksums(live) == before
    result = repair_rows(live, copy, [APPOINTMENTS, USERS, CLIENTS])
    assert comparable(result.to_dict()) == comparable(dry.to_dict())
    assert result.plan.tables == SAMPLE  # parents first, whatever the input order
    by = {o.table: o for o in result.tables}
    assert (by[USERS].updated, by[USERS].inserted, by[USERS].extra_kept) == (3, 0, 1)
    assert (by[CLIENTS].inserted, by[CLIENTS].extra_kept) == (3, 1)
    assert (by[APPOINTMENTS].inserted, by[APPOINTMENTS].updated) == (cascaded, 1)
    assert result.deleted == 0
    for table in SAMPLE:
        condition = "id <= {}"
        assert checksum_where(live, table, condition, [ORIGINAL[table]]) == \
            table_checksum(copy, table), table
    assert live.execute("SELECT name FROM users WHERE id = %s", [new_user]).fetchone() == \
        ("After",)

    again = repair_rows(live, copy, SAMPLE)
    assert (again.inserted, again.updated, again.deleted) == (0, 0, 0)

    full = repair_rows(live, copy, SAMPLE, delete_extra=True)
    assert {o.table: o.deleted for o in full.tables} == {USERS: 1, CLIENTS: 1, APPOINTMENTS: 0}
    for table in SAMPLE:
        assert table_checksum(live, table) == table_checksum(copy, table)


def test_repair_composite_keys_and_update_only(dbs) -> None:
    live, copy = dbs
    live.execute("""UPDATE "Shop"."Orders" SET note = '{"n": -1}' WHERE "Order No" = 3""")
    live.execute("""UPDATE "Shop"."Order Lines" SET qty = 0 WHERE line = 2 AND "Order No" < 3""")
    live.execute("""DELETE FROM "Shop"."Orders" WHERE region = 'us' AND "Order No" = 20""")
    result = repair_rows(live, copy, [ORDERS, LINES], insert_missing=False)
    assert [(o.table, o.updated, o.inserted, o.missing) for o in result.tables] == [
        (ORDERS, 3, 0, 1), (LINES, 6, 0, 3)]
    assert diff_table(live, copy, LINES).changed == 0
    repair_rows(live, copy, [ORDERS, LINES])
    for table in (ORDERS, LINES):
        assert table_checksum(live, table) == table_checksum(copy, table)


def test_tables_without_primary_key_are_refused(dbs) -> None:
    live, copy = dbs
    message = r"no primary key; restorekit cannot tell rows apart .* restore the whole table"
    with pytest.raises(ConfigError, match=message):
        repair_rows(live, copy, [USERS, NO_PK])
    with pytest.raises(ConfigError, match=message):
        recover_deleted_rows(live, copy, NO_PK, None)
    with pytest.raises(ConfigError, match=message):
        missing_keys(live, copy, NO_PK)
    # A child without a key in the cascade closure stops the recovery before any write.
    ddl = ("CREATE TABLE notes (user_id bigint REFERENCES users ON DELETE CASCADE, body text);"
           "INSERT INTO notes SELECT id, 'note' FROM users WHERE id <= 3")
    live.execute(ddl)
    copy.execute(ddl)
    live.execute("DELETE FROM users WHERE id = 1")
    before = all_checksums(live)
    with pytest.raises(ConfigError, match='table public.notes has no primary key'):
        recover_deleted_rows(live, copy, USERS, [(1,)])
    assert all_checksums(live) == before


def committed_at(conn: psycopg.Connection, table: TableRef, row_id: int) -> datetime:
    """When the current version of a row committed."""
    return conn.execute(sql.SQL("SELECT pg_xact_commit_timestamp(xmin) FROM {} WHERE id = %s")
                        .format(table.ident), [row_id]).fetchone()[0]


def test_repair_only_the_corrupted_columns(dbs) -> None:
    live, copy = dbs
    live.execute("UPDATE users SET email = 'corrupt-' || id WHERE id IN (3, 4, 5)")
    # Legitimate writes since the restore point: a rename of a corrupted row and of another one.
    live.execute("UPDATE users SET name = 'Renamed' WHERE id IN (4, 10)")
    [gone] = [r[0] for r in live.execute("SELECT id FROM clients ORDER BY id LIMIT 1")]
    live.execute("DELETE FROM clients WHERE id = %s", [gone])
    live.execute("UPDATE clients SET phone = '+1-555-0000001' WHERE id = %s", [gone + 1])

    result = repair_rows(live, copy, [USERS, CLIENTS, APPOINTMENTS],
                         columns={USERS: ["email"], CLIENTS: ["name"]})
    assert result.plan.columns == ("public.users.email", "public.clients.name")
    by = {o.table: o for o in result.tables}
    # Only the email differs in the compared columns: 3 changed, the renamed user 10 is not.
    assert (by[USERS].changed, by[USERS].updated) == (3, 3)
    assert live.execute("SELECT id, name, email FROM users WHERE id IN (3, 4, 10) ORDER BY id"
                        ).fetchall() == [
        (3, *copy.execute("SELECT name, email FROM users WHERE id = 3").fetchone()),
        (4, "Renamed", copy.execute("SELECT email FROM users WHERE id = 4").fetchone()[0]),
        (10, "Renamed", copy.execute("SELECT email FROM users WHERE id = 10").fetchone()[0]),
    ]
    # The missing client comes back whole (every column from the copy); the phone change of
    # another client is not in the compared columns and stays.
    assert (by[CLIENTS].inserted, by[CLIENTS].updated, by[CLIENTS].changed) == (1, 0, 0)
    assert rows_text(live, CLIENTS, "t.id = %s", [gone]) == \
        rows_text(copy, CLIENTS, "t.id = %s", [gone])
    assert live.execute("SELECT phone FROM clients WHERE id = %s", [gone + 1]
                        ).fetchone() == ("+1-555-0000001",)
    assert by[APPOINTMENTS].inserted > 0  # the cascade's rows, all columns compared

    before = all_checksums(live)
    for columns, message in [
        ({USERS: ["emial"]}, "public.users has no column.* emial"),
        ({USERS: ["id"]}, "primary key or GENERATED ALWAYS"),
        ({CLIENTS: ["phone"]}, "not being repaired: public.clients"),
        ({LINES: ["total"]}, "no column.* total"),  # generated: cannot be written
    ]:
        with pytest.raises(ConfigError, match=message):
            repair_rows(live, copy, [USERS, LINES], columns=columns)
    assert all_checksums(live) == before


def test_keep_rows_written_after_the_corruption(dbs) -> None:
    live, copy = dbs
    [replica_gone, app_gone] = [r[0] for r in live.execute(
        "SELECT id FROM clients WHERE id IN (SELECT client_id FROM appointments) ORDER BY id "
        "LIMIT 2")]
    cascaded = live.execute("SELECT count(*) FROM appointments WHERE client_id = %s",
                            [app_gone]).fetchone()[0]
    with live.transaction():  # the corruption, one transaction
        live.execute("UPDATE users SET email = 'corrupt-' || id WHERE id IN (3, 4, 5)")
        live.execute("SET LOCAL session_replication_role = replica")  # no audit, no cascade
        live.execute("DELETE FROM clients WHERE id = %s", [replica_gone])
    ended = committed_at(live, USERS, 3)
    # The application after the corruption: updates (one of a corrupted row), a deletion it
    # meant (audited, cascading), a new user.
    live.execute("UPDATE users SET name = 'Later' WHERE id IN (4, 20)")
    live.execute("DELETE FROM clients WHERE id = %s", [app_gone])
    new_user = live.execute("INSERT INTO users (name, email) VALUES ('New', 'new@x.org') "
                            "RETURNING id").fetchone()[0]
    later = rows_text(live, USERS, "t.id IN (4, 20, %s)", [new_user])

    plan = plan_repair(live, copy, SAMPLE, keep_rows_written_after=ended, delete_extra=True)
    result = repair_rows(live, copy, SAMPLE, keep_rows_written_after=ended, delete_extra=True)
    assert [o.to_dict() for o in plan.tables] == [
        {**o.to_dict(), "staged": 0} for o in result.tables]
    by = {o.table: o for o in result.tables}
    # users: 3 and 5 repaired; 4 and 20 were written after the corruption and are kept (the
    # corrupted email of 4 too: its current version is the later one); the new user is kept
    # although delete_extra asks to delete rows the copy lacks.
    assert (by[USERS].changed, by[USERS].updated, by[USERS].kept_newer) == (4, 2, 3)
    assert (by[USERS].extra, by[USERS].deleted) == (1, 0)
    assert rows_text(live, USERS, "t.id IN (4, 20, %s)", [new_user]) == later
    assert rows_text(live, USERS, "t.id IN (3, 5)") == rows_text(copy, USERS, "t.id IN (3, 5)")
    # clients: the deletion in the corruption comes back; the audited later one stays deleted,
    # with its cascade.
    assert (by[CLIENTS].missing, by[CLIENTS].inserted, by[CLIENTS].kept_deleted) == (2, 1, 1)
    assert live.execute("SELECT id FROM clients WHERE id IN (%s, %s)",
                        [replica_gone, app_gone]).fetchall() == [(replica_gone,)]
    assert (by[APPOINTMENTS].missing, by[APPOINTMENTS].inserted,
            by[APPOINTMENTS].kept_deleted) == (cascaded, 0, cascaded)
    assert result.plan.keep_rows_written_after == ended

    # Refused before anything when the server has no commit times (the copy's cluster), and
    # for a time without a timezone.
    with pytest.raises(ConfigError, match="track_commit_timestamp = on"):
        repair_rows(copy, live, [USERS], keep_rows_written_after=ended)
    with pytest.raises(ConfigError, match="no timezone"):
        repair_rows(live, copy, [USERS], keep_rows_written_after=datetime(2026, 1, 1))


def test_repair_writes_only_the_approved_rows(dbs) -> None:
    live, copy = dbs
    live.execute("UPDATE users SET email = 'corrupt-' || id WHERE id IN (3, 4, 5)")
    plan = plan_repair(live, copy, [USERS, CLIENTS])
    approved = {o.table: o.fingerprint for o in plan.tables}
    assert plan.outcome(USERS).updated == 3 and plan.outcome(CLIENTS).updated == 0

    # Between the approval and the repair: row 3 is fixed by hand and row 30 changes. The
    # counts are the same, the rows are not: nothing is written.
    live.execute("UPDATE users SET email = %s WHERE id = 3",
                 copy.execute("SELECT email FROM users WHERE id = 3").fetchone())
    live.execute("UPDATE users SET name = 'Changed after approval' WHERE id = 30")
    before = all_checksums(live)
    with pytest.raises(SafetyError, match=r"changed since the plan was approved \(public.users: "
                       r"approved 3 updates.*now 3 updates.*nothing was written; run again"):
        repair_rows(live, copy, [USERS, CLIENTS], approved=approved)
    assert all_checksums(live) == before
    # A table the plan had nothing for may get nothing.
    live.execute("UPDATE clients SET name = 'x' WHERE id = 1")
    fresh = {o.table: o.fingerprint for o in plan_repair(live, copy, [USERS]).tables}
    with pytest.raises(SafetyError, match="public.clients: approved 0 updates"):
        repair_rows(live, copy, [USERS, CLIENTS], approved=fresh)
    assert live.execute("SELECT name FROM users WHERE id = 30").fetchone() == (
        "Changed after approval",)

    # A fresh plan, approved, is carried out exactly.
    fresh = {o.table: o.fingerprint for o in plan_repair(live, copy, [USERS, CLIENTS]).tables}
    result = repair_rows(live, copy, [USERS, CLIENTS], approved=fresh)
    assert (result.outcome(USERS).updated, result.outcome(CLIENTS).updated) == (3, 1)
    for table in (USERS, CLIENTS):
        assert table_checksum(live, table) == table_checksum(copy, table)

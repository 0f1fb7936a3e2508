"""The verification suite against real PostgreSQL: the runbook's checks and what breaks them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import psycopg
import pytest

from restorekit import sample
from restorekit.errors import PostgresUnavailable, VerificationFailed
from restorekit.integrity import (
    Baseline,
    CustomCheck,
    SchemaFingerprint,
    capture_baseline,
    connect_with_retry,
    fingerprint,
    orphan_query,
    verify,
)
from restorekit.integrity.checks_fk import _fk_info
from restorekit.integrity.connections import _open
from restorekit.integrity.pool import _free_connection_slots, _OpenedAhead, _pool_size
from restorekit.pg.catalog import TableRef
from restorekit.pg.catalog import foreign_keys as catalog_foreign_keys
from restorekit.pg.cluster import free_port
from restorekit.pg.dsn import merge

CRITICAL = ("users", "clients", "appointments")
SAMPLE_FKS = {
    "fk_orphans:clients_user_id_fkey",
    "fk_orphans:appointments_user_id_fkey",
    "fk_orphans:appointments_client_id_fkey",
}
# The runbook's "Verify relationships" query, as configuration.
USERS_WITHOUT_CLIENTS = CustomCheck(
    name="users without clients",
    sql="""
        SELECT u.id, count(c.id) AS client_count
        FROM users u LEFT JOIN clients c ON u.id = c.user_id
        GROUP BY u.id
        HAVING count(c.id) = 0  -- a trailing comment must not break the wrapper
    """,
    expect="zero_rows",
)


@pytest.fixture
def conn(pg_dsn: str) -> Iterator[psycopg.Connection]:
    """The sample application at scale 0.01 (100 users, 300 clients, 600 appointments), with
    every user owning at least one client so the runbook's relationship query holds."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        sample.create_schema(conn)
        sample.generate(conn, scale=0.01)
        conn.execute(
            "INSERT INTO clients (user_id, name) SELECT u.id, 'first client' FROM users u "
            "WHERE NOT EXISTS (SELECT FROM clients c WHERE c.user_id = u.id)"
        )
        yield conn


def _names(report) -> list[str]:
    return [c.name for c in report.checks]


def test_clean_database_passes_every_check(pg_dsn: str, conn: psycopg.Connection) -> None:
    baseline = capture_baseline(conn, CRITICAL)
    report = verify(
        pg_dsn,
        baseline=baseline,
        expected_tables=sample.TABLES,
        custom_checks=[USERS_WITHOUT_CLIENTS,
                       CustomCheck("users exist", "SELECT count(*) FROM users", "nonzero"),
                       CustomCheck("user 1", "SELECT email FROM users WHERE id = 1", "equals",
                                   value=conn.execute("SELECT email FROM users WHERE id = 1")
                                   .fetchone()[0])],
        install_amcheck=True,
    )
    assert report.ok, report.to_markdown()
    assert not report.warnings, report.to_markdown()
    assert all(c.ok and not c.skipped for c in report.checks)
    names = _names(report)
    assert names[:6] == ["connectivity", "not_in_recovery", "schema", "expected_tables",
                         "row_counts", "row_estimates"]
    assert SAMPLE_FKS <= set(names)
    assert names[-1] == "amcheck"
    assert {"custom:users without clients", "custom:users exist", "custom:user 1"} <= set(names)

    connectivity = report.check("connectivity").observed
    assert connectivity["latency_ms"] >= 0 and connectivity["server_version_num"] >= 150000
    counts = report.check("row_counts").observed["exact"]
    assert counts == baseline.exact_counts
    assert counts["public.users"] == 100 and counts["public.appointments"] == 600
    assert report.check("schema").observed["digest"] == baseline.fingerprint.digest
    assert "public.audit_log" in report.check("row_estimates").observed["estimated"]
    report.raise_for_failures()  # no critical failure: does not raise
    json.dumps(report.to_dict())  # serialisable as it is


def test_orphan_made_with_triggers_off_fails_its_foreign_key(
    pg_dsn: str, conn: psycopg.Connection
) -> None:
    user_id, clients, appointments = conn.execute(
        "SELECT u.id, (SELECT count(*) FROM clients c WHERE c.user_id = u.id),"
        " (SELECT count(*) FROM appointments a WHERE a.user_id = u.id)"
        " FROM users u ORDER BY 2 DESC, 1 LIMIT 1"
    ).fetchone()
    assert clients >= 1
    # Replica mode skips the RI triggers (and the audit trigger): the cascade does not happen.
    conn.execute("SET session_replication_role = replica")
    conn.execute("DELETE FROM users WHERE id = %s", [user_id])
    conn.execute("SET session_replication_role = DEFAULT")

    report = verify(pg_dsn, amcheck=False)

    assert not report.ok
    failing = {c.name: c for c in report.critical_failures}
    expected = {"fk_orphans:clients_user_id_fkey"}
    if appointments:
        expected.add("fk_orphans:appointments_user_id_fkey")
    assert set(failing) == expected
    check = failing["fk_orphans:clients_user_id_fkey"]
    assert check.observed["orphans"] == clients
    assert check.detail.startswith(
        f"{clients} orphan rows in public.clients (user_id) with no parent in public.users (id), "
        f"constraint clients_user_id_fkey; e.g. user_id={user_id}"
    )
    assert check.observed["sample_keys"][0] == [user_id]
    assert report.check("fk_orphans:appointments_client_id_fkey").ok

    markdown = report.to_markdown()
    assert "**Verification FAILED**" in markdown
    assert "| check | result | detail |" in markdown
    assert "| fk_orphans:clients_user_id_fkey | FAIL |" in markdown
    with pytest.raises(VerificationFailed) as excinfo:
        report.raise_for_failures()
    assert excinfo.value.report is report
    assert "fk_orphans:clients_user_id_fkey" in str(excinfo.value)


def test_composite_foreign_key_between_quoted_mixed_case_tables(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            """
            CREATE SCHEMA "Crm";
            CREATE TABLE "Crm"."Tenants" ("Region" text, "Id" int, PRIMARY KEY ("Region", "Id"));
            CREATE TABLE "Crm"."Tenant Users" (
                id int PRIMARY KEY,
                "Region" text,
                "TenantId" int,
                CONSTRAINT "Tenant Users -> Tenants" FOREIGN KEY ("Region", "TenantId")
                    REFERENCES "Crm"."Tenants" ("Region", "Id")
            );
            CREATE TABLE "Crm"."Strict" (
                "Region" text, "TenantId" int,
                CONSTRAINT "Strict_Full" FOREIGN KEY ("Region", "TenantId")
                    REFERENCES "Crm"."Tenants" ("Region", "Id") MATCH FULL
            );
            INSERT INTO "Crm"."Tenants" VALUES ('eu', 1), ('us', 1);
            -- MATCH SIMPLE: a NULL in any key column means "references nothing".
            INSERT INTO "Crm"."Tenant Users" VALUES (1, 'eu', 1), (2, 'us', 1), (3, NULL, 99),
                                                    (4, 'xx', NULL);
            INSERT INTO "Crm"."Strict" VALUES ('eu', 1), (NULL, NULL);
            """
        )
        report = verify(pg_dsn, amcheck=False)
        assert report.ok, report.to_markdown()
        check = report.check("fk_orphans:Tenant Users -> Tenants")
        assert check.observed["orphans"] == 0
        assert check.observed["child_columns"] == ["Region", "TenantId"]

        conn.execute("SET session_replication_role = replica")
        # Matches a parent column by column but not as a pair: an orphan.
        conn.execute("""INSERT INTO "Crm"."Tenant Users" VALUES (5, 'eu', 2), (6, 'us', 2)""")
        # Half NULL: fine under MATCH SIMPLE, a violation under MATCH FULL.
        conn.execute("""INSERT INTO "Crm"."Strict" VALUES ('eu', NULL)""")
        conn.execute("SET session_replication_role = DEFAULT")

        report = verify(pg_dsn, amcheck=False)
    failing = {c.name: c for c in report.critical_failures}
    assert set(failing) == {"fk_orphans:Tenant Users -> Tenants", "fk_orphans:Strict_Full"}
    assert failing["fk_orphans:Tenant Users -> Tenants"].observed["orphans"] == 2
    assert sorted(failing["fk_orphans:Tenant Users -> Tenants"].observed["sample_keys"]) == [
        ["eu", 2], ["us", 2]
    ]
    assert failing["fk_orphans:Tenant Users -> Tenants"].detail.startswith(
        '2 orphan rows in "Crm"."Tenant Users" (Region, TenantId) with no parent in '
        '"Crm"."Tenants" (Region, Id), constraint Tenant Users -> Tenants; '
        "e.g. (Region, TenantId)=(eu, 2), (Region, TenantId)=(us, 2)"
    )
    assert failing["fk_orphans:Strict_Full"].observed["orphans"] == 1
    assert failing["fk_orphans:Strict_Full"].observed["match"] == "full"


def test_orphan_check_tests_only_the_nullable_key_columns_for_null(
    pg_dsn: str, conn: psycopg.Connection
) -> None:
    # A redundant "IS NOT NULL" on a NOT NULL column steered PostgreSQL 15 away from the
    # index-only merge anti-join: it is left out, the nullable columns keep theirs.
    conn.execute(
        """
        CREATE TABLE regions (code text, n int, PRIMARY KEY (code, n));
        CREATE TABLE offices (id int PRIMARY KEY, code text NOT NULL, n int,
                              FOREIGN KEY (code, n) REFERENCES regions);
        INSERT INTO regions VALUES ('eu', 1);
        INSERT INTO offices VALUES (1, 'eu', 1), (2, 'xx', NULL);
        """
    )
    infos = _fk_info(conn)
    fk = next(fk for fk in catalog_foreign_keys(conn) if fk.child.name == "offices")
    info = infos[(fk.child, fk.name)]
    assert info.not_null == frozenset({"code"})
    where = orphan_query(fk, not_null=info.not_null).as_string(conn).split(" WHERE ", 1)[1]
    assert where.startswith('"c"."n" IS NOT NULL AND NOT EXISTS')
    users = infos[(TableRef("public", "clients"), "clients_user_id_fkey")]
    clients_fk = next(fk for fk in catalog_foreign_keys(conn)
                      if fk.name == "clients_user_id_fkey")
    assert "IS NOT NULL" not in orphan_query(clients_fk, not_null=users.not_null).as_string(conn)

    assert verify(pg_dsn, amcheck=False).ok  # (xx, NULL) references nothing: not an orphan
    conn.execute("SET session_replication_role = replica")
    conn.execute("INSERT INTO offices VALUES (3, 'xx', 1)")
    conn.execute("SET session_replication_role = DEFAULT")
    report = verify(pg_dsn, amcheck=False)
    assert [c.name for c in report.critical_failures] == [f"fk_orphans:{fk.name}"]
    assert report.critical_failures[0].observed["sample_keys"] == [["xx", 1]]


def test_partitioned_and_inherited_tables_are_checked_as_postgresql_enforces_them(
    pg_dsn: str, conn: psycopg.Connection
) -> None:
    conn.execute(
        """
        -- A partitioned parent table is referenced as a whole (never with ONLY).
        CREATE TABLE accounts (id int, region text, PRIMARY KEY (id, region))
            PARTITION BY LIST (region);
        CREATE TABLE accounts_eu PARTITION OF accounts FOR VALUES IN ('eu');
        CREATE TABLE accounts_us PARTITION OF accounts FOR VALUES IN ('us');
        INSERT INTO accounts VALUES (1, 'eu'), (2, 'us');
        -- A partitioned child: one constraint for all partitions, one check.
        CREATE TABLE events (id int, user_id bigint REFERENCES users (id),
                             account_id int, region text,
                             FOREIGN KEY (account_id, region) REFERENCES accounts (id, region),
                             at date NOT NULL) PARTITION BY RANGE (at);
        CREATE TABLE events_2024 PARTITION OF events
            FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
        INSERT INTO events VALUES (1, 1, 1, 'eu', '2024-03-01'), (2, 2, 2, 'us', '2024-04-01');
        -- Inheritance: the foreign key binds the parent's own rows only.
        CREATE TABLE notes (id int, user_id bigint REFERENCES users (id));
        CREATE TABLE old_notes () INHERITS (notes);
        INSERT INTO old_notes VALUES (1, 999999);
        """
    )
    report = verify(pg_dsn, amcheck=False)
    assert report.ok, report.to_markdown()
    names = [c.name for c in report.checks if c.name.startswith("fk_orphans:")]
    assert {"fk_orphans:events_user_id_fkey", "fk_orphans:events_account_id_region_fkey",
            "fk_orphans:notes_user_id_fkey"} <= set(names)
    assert not any("events_2024" in n for n in names)

    conn.execute("SET session_replication_role = replica")
    conn.execute("INSERT INTO events VALUES (3, 999999, 7, 'eu', '2024-05-01')")
    conn.execute("SET session_replication_role = DEFAULT")
    report = verify(pg_dsn, amcheck=False)
    assert {c.name: c.observed["orphans"] for c in report.critical_failures} == {
        "fk_orphans:events_user_id_fkey": 1, "fk_orphans:events_account_id_region_fkey": 1
    }


def test_missing_tables_fail_expected_tables_and_row_counts(pg_dsn: str, conn) -> None:
    report = verify(pg_dsn, critical_tables=["users", "invoices"],
                    expected_tables=["users", "public.invoices", '"Payments"'], amcheck=False)
    assert [c.name for c in report.critical_failures] == ["expected_tables", "row_counts"]
    assert report.check("expected_tables").observed["missing"] == [
        'public."Payments"', "public.invoices"
    ]
    assert report.check("expected_tables").detail.startswith("2 of 3 tables missing")
    counts = report.check("row_counts")
    assert counts.observed["exact"] == {"public.users": 100}
    assert 'relation "public.invoices" does not exist' in counts.detail


def test_added_column_fails_schema_against_baseline_with_readable_diff(
    pg_dsn: str, conn: psycopg.Connection
) -> None:
    stored = json.loads(json.dumps(capture_baseline(conn, CRITICAL).to_dict()))
    baseline = Baseline.from_dict(stored)
    assert verify(pg_dsn, baseline=baseline, amcheck=False).ok

    conn.execute("ALTER TABLE users ADD COLUMN nickname varchar(20) DEFAULT 'x'")
    conn.execute("CREATE INDEX users_name_idx ON users (name)")
    report = verify(pg_dsn, baseline=baseline, amcheck=False)

    assert [c.name for c in report.critical_failures] == ["schema"]
    schema = report.check("schema")
    assert schema.observed["differences"] == [
        "column public.users.nickname added: character varying(20) NULL "
        "DEFAULT 'x'::character varying",
        "index users_name_idx on public.users added: "
        "CREATE INDEX users_name_idx ON public.users USING btree (name)",
    ]
    assert "2 differences from the baseline" in schema.detail
    assert "public.users.nickname added" in schema.detail
    assert schema.observed["digest"] != schema.observed["baseline_digest"]


def test_fingerprint_is_independent_of_search_path_and_round_trips(
    conn: psycopg.Connection,
) -> None:
    conn.execute("CREATE SCHEMA other")
    first = fingerprint(conn)
    conn.execute("SET search_path = other, public")
    second = fingerprint(conn)
    assert conn.execute("SHOW search_path").fetchone()[0] == "other, public"
    assert first == second and first.digest == second.digest
    assert SchemaFingerprint.from_dict(json.loads(json.dumps(first.to_dict()))) == first
    users = next(t for t in first.tables if t.name == "public.users")
    assert [c.name for c in users.columns] == ["id", "name", "email", "created_at"]
    assert users.columns[0].default == "GENERATED BY DEFAULT AS IDENTITY"
    assert ("users_email_key", "UNIQUE (email)") in users.constraints
    appointments = next(t for t in first.tables if t.name == "public.appointments")
    assert any(d.startswith("FOREIGN KEY (client_id) REFERENCES public.clients(id)")
               for _, d in appointments.constraints)


def test_row_count_drift_beyond_tolerance_fails(pg_dsn: str, conn: psycopg.Connection) -> None:
    baseline = capture_baseline(conn, CRITICAL)
    conn.execute("DELETE FROM appointments WHERE id % 10 = 0")  # 10% of 600

    strict = verify(pg_dsn, baseline=baseline, row_count_tolerance=0.05, amcheck=False)
    assert [c.name for c in strict.critical_failures] == ["row_counts"]
    counts = strict.check("row_counts")
    assert counts.observed["drift"] == {
        "public.appointments": {"baseline": 600, "observed": 540, "change": -0.1}
    }
    assert "public.appointments: 540 rows, baseline 600 (-10.0%, tolerance 5.0%)" in counts.detail

    lenient = verify(pg_dsn, baseline=baseline, row_count_tolerance=0.2, amcheck=False)
    assert lenient.ok, lenient.to_markdown()
    assert lenient.check("row_counts").observed["exact"]["public.appointments"] == 540


def test_custom_check_users_without_clients(pg_dsn: str, conn: psycopg.Connection) -> None:
    assert verify(pg_dsn, custom_checks=[USERS_WITHOUT_CLIENTS], amcheck=False).ok

    lonely = conn.execute(
        "INSERT INTO users (name, email) VALUES ('Lonely', 'lonely@example.com') RETURNING id"
    ).fetchone()[0]
    report = verify(pg_dsn, custom_checks=[USERS_WITHOUT_CLIENTS], amcheck=False)
    assert [c.name for c in report.critical_failures] == ["custom:users without clients"]
    check = report.check("custom:users without clients")
    assert check.observed["rows"] == 1 and check.observed["first_values"] == [lonely]
    assert check.detail == f"1 row, expected none (first values: {lonely})"

    # A non-critical custom check only warns.
    soft = CustomCheck(USERS_WITHOUT_CLIENTS.name, USERS_WITHOUT_CLIENTS.sql, critical=False)
    report = verify(pg_dsn, custom_checks=[soft], amcheck=False)
    assert report.ok and [c.name for c in report.warnings] == ["custom:users without clients"]


def test_custom_check_counts_first_and_fetches_rows_only_when_some(
    pg_dsn: str, conn: psycopg.Connection
) -> None:
    check = CustomCheck("lonely", "SELECT id FROM users -- trailing comment\n;\n")
    assert check.count_query().as_string() == (
        "SELECT count(*) AS restorekit_rows FROM (\n"
        "SELECT id FROM users -- trailing comment\n) AS q"
    )
    assert check.sample_query().as_string() == (
        "SELECT * FROM (\nSELECT id FROM users -- trailing comment\n) AS q LIMIT 5"
    )

    # A passing zero_rows check is one statement: the count (no window, no LIMIT).
    lonely_ids = [
        conn.execute("INSERT INTO users (name, email) VALUES (%s, %s) RETURNING id",
                      [f"Lonely {i}", f"lonely{i}@example.com"]).fetchone()[0]
        for i in range(7)
    ]
    report = verify(pg_dsn, custom_checks=[USERS_WITHOUT_CLIENTS], amcheck=False)
    check_result = report.check("custom:users without clients")
    # Seven offenders: the exact count, five of them as examples (first column only).
    assert check_result.observed["rows"] == 7
    assert len(check_result.observed["first_values"]) == 5
    assert set(check_result.observed["first_values"]) <= set(lonely_ids)
    assert check_result.detail.startswith("7 rows, expected none (first values: ")

    # One row expected: the rows come first, the count only from SAMPLE_ROWS rows on.
    many = verify(pg_dsn, amcheck=False, custom_checks=[
        CustomCheck("one email", "SELECT email FROM users ORDER BY id", "equals", value="x"),
        CustomCheck("two", "SELECT 1 UNION ALL SELECT 2", "nonzero"),
        CustomCheck("none", "SELECT 1 WHERE false", "nonzero"),
        CustomCheck("no columns", "SELECT FROM users WHERE false"),
    ])
    assert many.check("custom:one email").observed["rows"] == 107
    assert len(many.check("custom:one email").observed["first_values"]) == 5
    assert many.check("custom:one email").detail == "107 rows, expected exactly one"
    assert many.check("custom:two").observed == {"expect": "nonzero", "rows": 2,
                                                 "first_values": [1, 2]}
    assert many.check("custom:none").detail == "0 rows, expected exactly one"
    assert many.check("custom:no columns").ok


def test_custom_check_statements_share_one_timeout(pg_dsn: str,
                                                   conn: psycopg.Connection) -> None:
    # Two statements (the count, then the rows) within one statement_timeout: a count that
    # uses most of it leaves the rows only the rest.
    # 50 ms a row, 6 rows: the count takes 0.3 s, the five example rows 0.25 s.
    slow = CustomCheck("slow offenders",
                       "SELECT id FROM (SELECT id FROM users WHERE id <= 6 OFFSET 0) AS u "
                       "WHERE pg_sleep(0.05) IS NOT NULL")
    report = verify(pg_dsn, custom_checks=[slow], amcheck=False, statement_timeout_ms=450)
    assert "statement timeout" in report.check("custom:slow offenders").detail
    generous = verify(pg_dsn, custom_checks=[slow], amcheck=False, statement_timeout_ms=5000)
    assert generous.check("custom:slow offenders").observed["rows"] == 6


def test_custom_check_errors_stay_in_their_own_check(pg_dsn: str, conn: psycopg.Connection) -> None:
    report = verify(
        pg_dsn,
        custom_checks=[
            CustomCheck("typo", "SELECT * FROM no_such_table"),
            CustomCheck("writes", "SELECT nextval(pg_get_serial_sequence('users', 'id'))",
                        "nonzero"),
            CustomCheck("slow", "SELECT pg_sleep(5)", "nonzero"),
            # Braces and percent signs are plain SQL here, not placeholders.
            CustomCheck("fine", "SELECT 1 WHERE 'a%' LIKE 'a%' AND '{1}'::int[] = '{1}'",
                        "equals", value="1"),
        ],
        statement_timeout_ms=300,
        amcheck=False,
    )
    failing = {c.name: c.detail for c in report.critical_failures}
    assert set(failing) == {"custom:typo", "custom:writes", "custom:slow"}
    assert "no_such_table" in failing["custom:typo"] and "42P01" in failing["custom:typo"]
    assert "read-only transaction" in failing["custom:writes"]
    assert "statement timeout" in failing["custom:slow"]
    assert report.check("custom:fine").ok
    assert report.check("not_in_recovery").ok and report.check("connectivity").ok
    # The sequence was not advanced by the rolled-back, read-only check.
    assert conn.execute("SELECT last_value FROM users_id_seq").fetchone()[0] == 101


def test_amcheck_checks_every_btree_index(pg_dsn: str, conn: psycopg.Connection) -> None:
    skipped = verify(pg_dsn, amcheck=True)
    amcheck = skipped.check("amcheck")
    assert skipped.ok and amcheck.skipped and not amcheck.critical
    assert [c.name for c in skipped.warnings] == ["amcheck"]
    assert "install_amcheck=True" in amcheck.detail

    conn.execute("CREATE INDEX appointments_notes_hash ON appointments USING hash (notes)")
    report = verify(pg_dsn, install_amcheck=True)
    amcheck = report.check("amcheck")
    assert amcheck.ok and not amcheck.skipped, amcheck.detail
    # users: pkey, email key; clients: pkey, user_id; appointments: pkey, user_id, client_id;
    # audit_log: pkey, created_at. The hash index is not a B-tree.
    assert amcheck.observed["indexes_checked"] == 9
    assert amcheck.observed["corrupt"] == {} and amcheck.observed["errors"] == {}
    assert amcheck.detail == "9 B-tree indexes checked, no corruption found"
    # Installed now: a later run needs no permission to install.
    assert verify(pg_dsn).check("amcheck").observed["indexes_checked"] == 9


def test_no_password_in_report_or_markdown(pg_dsn: str, conn: psycopg.Connection) -> None:
    secret = "s3cr3t-Pa55word"
    # The test server trusts loopback, so the password is sent but not needed.
    with_password = merge(pg_dsn, password=secret)
    report = verify(with_password, custom_checks=[USERS_WITHOUT_CLIENTS], amcheck=False)
    assert report.ok
    assert secret not in json.dumps(report.to_dict()) and secret not in report.to_markdown()
    assert secret not in report.database and ":***@" in report.database

    sleeps: list[float] = []
    unreachable = merge(pg_dsn, host="127.0.0.1", port=str(free_port()), password=secret)
    down = verify(unreachable, baseline=capture_baseline(conn, CRITICAL),
                  custom_checks=[USERS_WITHOUT_CLIENTS], connect_attempts=3,
                  sleep=sleeps.append)
    assert sleeps == [0.5, 1.0]
    text = json.dumps(down.to_dict()) + down.to_markdown() + repr(down)
    assert secret not in text
    assert not down.ok
    assert down.checks[0].name == "connectivity" and not down.checks[0].ok
    assert down.check("connectivity").observed["attempts"] == 3
    later = down.checks[1:]
    assert [c.name for c in later] == ["not_in_recovery", "schema", "row_counts", "row_estimates",
                                       "fk_orphans", "custom:users without clients", "amcheck"]
    assert all(c.skipped and not c.ok for c in later)
    assert "| not_in_recovery | FAIL (skipped) |" in down.to_markdown()
    with pytest.raises(VerificationFailed) as excinfo:
        down.raise_for_failures()
    assert secret not in str(excinfo.value)


def test_connect_with_retry_retries_only_while_unavailable(pg_dsn: str) -> None:
    calls: list[int] = []

    def flaky() -> psycopg.Connection:
        calls.append(1)
        if len(calls) < 3:
            raise PostgresUnavailable("the database system is starting up")
        return psycopg.connect(pg_dsn)

    sleeps: list[float] = []
    conn, attempts = connect_with_retry(flaky, attempts=5, sleep=sleeps.append)
    with conn:
        assert attempts == 3 and sleeps == [0.5, 1.0]


def test_amcheck_reports_a_corrupt_index_as_critical(pg_dsn: str) -> None:
    # Corruption without touching files: build an index with one comparison, then swap the
    # operator class's comparison function for the reverse. The stored order is now wrong,
    # which is what bt_index_check looks for.
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            """
            CREATE FUNCTION cmp(int, int) RETURNS int LANGUAGE sql IMMUTABLE
                AS 'SELECT CASE WHEN $1 < $2 THEN -1 WHEN $1 > $2 THEN 1 ELSE 0 END';
            CREATE OPERATOR CLASS test_ops FOR TYPE int USING btree AS
                OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >,
                FUNCTION 1 cmp(int, int);
            CREATE TABLE t (v int);
            INSERT INTO t SELECT generate_series(1, 500);
            CREATE INDEX t_v_idx ON t (v test_ops);
            CREATE INDEX t_v_plain ON t (v);
            CREATE OR REPLACE FUNCTION cmp(int, int) RETURNS int LANGUAGE sql IMMUTABLE
                AS 'SELECT CASE WHEN $1 < $2 THEN 1 WHEN $1 > $2 THEN -1 ELSE 0 END';
            """
        )
    report = verify(pg_dsn, install_amcheck=True)
    amcheck = report.check("amcheck")
    assert [c.name for c in report.critical_failures] == ["amcheck"]
    assert not amcheck.ok and amcheck.critical
    assert list(amcheck.observed["corrupt"]) == ["public.t_v_idx"]
    assert amcheck.observed["indexes_checked"] == 1
    assert amcheck.detail.startswith("CORRUPTION in 1 of 2 B-tree indexes: public.t_v_idx: ")
    assert "XX002" in amcheck.detail


def test_orphans_of_every_foreign_key_of_one_child_are_reported_each_with_its_own_rows(
    pg_dsn: str, conn: psycopg.Connection
) -> None:
    # appointments has two foreign keys (users, clients) and is the biggest table: its scans are
    # scheduled first, beside amcheck and the counts. Each key still gets its own result, with
    # its own count and keys, in the listed order.
    user_id, client_id = conn.execute(
        "SELECT user_id, client_id FROM appointments ORDER BY id LIMIT 1").fetchone()
    conn.execute("SET session_replication_role = replica")
    conn.execute(
        "INSERT INTO appointments (user_id, client_id, starts_at) VALUES "
        "(900001, %(c)s, now()), (900002, %(c)s, now()), (%(u)s, 800001, now()), "
        "(900003, 800002, now())",
        {"u": user_id, "c": client_id},
    )
    conn.execute("SET session_replication_role = DEFAULT")
    baseline_names = [c.name for c in verify(pg_dsn, critical_tables=CRITICAL, amcheck=False,
                                             max_workers=1).checks]

    report = verify(pg_dsn, critical_tables=CRITICAL, install_amcheck=True, max_workers=3)

    assert [c.name for c in report.checks if c.name != "amcheck"] == baseline_names
    failing = {c.name: c for c in report.critical_failures}
    assert set(failing) == {"fk_orphans:appointments_user_id_fkey",
                            "fk_orphans:appointments_client_id_fkey"}
    by_user = failing["fk_orphans:appointments_user_id_fkey"]
    assert by_user.observed["orphans"] == 3
    assert sorted(by_user.observed["sample_keys"]) == [[900001], [900002], [900003]]
    by_client = failing["fk_orphans:appointments_client_id_fkey"]
    assert by_client.observed["orphans"] == 2
    assert sorted(by_client.observed["sample_keys"]) == [[800001], [800002]]
    assert by_client.detail.startswith(
        "2 orphan rows in public.appointments (client_id) with no parent in public.clients (id)")
    assert report.check("fk_orphans:clients_user_id_fkey").ok
    assert report.check("row_counts").observed["exact"]["public.appointments"] == 604
    assert report.check("amcheck").ok


def test_scans_and_the_checks_beside_them_run_without_parallel_workers(
    pg_dsn: str, conn: psycopg.Connection
) -> None:
    # The pool is the parallelism: its sessions and the custom checks beside them run serial.
    setting = CustomCheck("parallel workers",
                          "SELECT current_setting('max_parallel_workers_per_gather')",
                          "equals", value="0")
    beside_scans = verify(pg_dsn, custom_checks=[setting], amcheck=False, max_workers=2)
    assert beside_scans.check("custom:parallel workers").ok, beside_scans.to_markdown()
    serial = _open(pg_dsn, 1000, read_only=True, serial=True)
    default = _open(pg_dsn, 1000, read_only=True)
    try:
        assert serial.execute("SHOW max_parallel_workers_per_gather").fetchone()[0] == "0"
        server_default = conn.execute("SHOW max_parallel_workers_per_gather").fetchone()[0]
        assert default.execute("SHOW max_parallel_workers_per_gather").fetchone()[0] == (
            server_default)
        assert default.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
    finally:
        serial.close()
        default.close()
    # Nothing to scan (no table): the custom check keeps the server's parallel settings.
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute("DROP TABLE appointments, clients, users, audit_log CASCADE")
    alone = verify(pg_dsn, custom_checks=[setting], amcheck=False)
    assert alone.check("custom:parallel workers").observed["rows"] == 1
    assert alone.check("custom:parallel workers").ok is (server_default == "0")


def test_pool_is_bounded_by_cores_jobs_and_half_the_free_connection_slots(
    conn: psycopg.Connection,
) -> None:
    assert _pool_size(20, max_workers=None, cores=2, free_slots=None) == 2
    assert _pool_size(20, max_workers=None, cores=16, free_slots=None) == 4
    assert _pool_size(3, max_workers=None, cores=16, free_slots=100) == 3
    assert _pool_size(20, max_workers=8, cores=2, free_slots=100) == 8
    assert _pool_size(20, max_workers=8, cores=2, free_slots=7) == 3
    assert _pool_size(20, max_workers=None, cores=8, free_slots=1) == 1
    assert _pool_size(0, max_workers=None, cores=8, free_slots=None) == 1
    max_connections, reserved = conn.execute(
        "SELECT current_setting('max_connections')::int, "
        "current_setting('superuser_reserved_connections')::int").fetchone()
    free = _free_connection_slots(conn)
    assert free is not None and 0 < free <= max_connections - reserved - 1


def test_pool_connections_opened_ahead_are_used_then_closed(pg_dsn: str,
                                                           conn: psycopg.Connection) -> None:
    # Three critical tables: the counts' two connections open while the catalog is read.
    report = verify(pg_dsn, critical_tables=CRITICAL, amcheck=False, max_workers=2)
    assert report.ok, report.to_markdown()
    # A closed session leaves pg_stat_activity a moment after the client hangs up.
    deadline = time.monotonic() + 5
    while (left := conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name "
                                "= 'restorekit-verify'").fetchone()[0]) and (
            time.monotonic() < deadline):
        time.sleep(0.05)
    assert left == 0

    # One that could not open is not lost: the scan that would have used it opens its own.
    def refused() -> psycopg.Connection:
        return psycopg.connect(merge(pg_dsn, port=str(free_port())), connect_timeout=2)

    ahead = _OpenedAhead(refused, 2)
    assert ahead.take() is None
    ahead.close()  # the other failed one too, without raising
    assert ahead.take() is None


def test_custom_checks_run_on_the_read_only_scan_pool(pg_dsn: str,
                                                      conn: psycopg.Connection) -> None:
    # They go to the pool first (unknown cost) instead of after the main connection's catalog
    # checks; the pool's sessions are read-only by default, the main connection's are not.
    session = CustomCheck("session", "SELECT current_setting('default_transaction_read_only')",
                          "equals", value="on")
    report = verify(pg_dsn, custom_checks=[session, USERS_WITHOUT_CLIENTS], amcheck=False)
    assert any(c.name.startswith("fk_orphans") for c in report.checks)  # there is a pool
    assert report.ok, report.to_markdown()
    names = [c.name for c in report.checks]
    assert names.index("custom:session") < names.index("custom:users without clients")


def test_production_session_limits_do_not_cut_the_checks(pg_dsn: str,
                                                         conn: psycopg.Connection) -> None:
    """A database that ends idle sessions and idle transactions after 300 ms (its web requests'
    limits): while one check runs for a second, the suite's other sessions wait idle, and
    each session lifts the limits for itself."""
    from psycopg import sql

    name = sql.Identifier(conn.info.dbname)
    for setting in ("idle_session_timeout", "idle_in_transaction_session_timeout"):
        conn.execute(sql.SQL("ALTER DATABASE {} SET {} = '300ms'").format(
            name, sql.Identifier(setting)))
    try:
        slow = CustomCheck("a slow check", "SELECT 1 FROM pg_sleep(1.0) WHERE random() > 2",
                           "zero_rows")
        started = time.monotonic()
        report = verify(pg_dsn, critical_tables=CRITICAL,
                        custom_checks=[slow, USERS_WITHOUT_CLIENTS], max_workers=2)
        assert time.monotonic() - started >= 1.0  # the slow check did take its second
        assert report.ok, report.to_markdown()
        assert report.check("custom:a slow check").ok
    finally:
        for setting in ("idle_session_timeout", "idle_in_transaction_session_timeout"):
            conn.execute(sql.SQL("ALTER DATABASE {} RESET {}").format(
                name, sql.Identifier(setting)))

"""COPY streaming between databases, and table checksums, against real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest
from fixtures.pg import read_only_session, scratch_database
from psycopg import sql

from restorekit import sample
from restorekit.errors import ConfigError, PostgresError
from restorekit.pg import catalog
from restorekit.pg.catalog import TableRef
from restorekit.pg.checksum import PINNED_SETTINGS, database_checksums, table_checksum
from restorekit.pg.cluster import LocalCluster
from restorekit.pg.copy import copy_rows, copy_table

USERS = TableRef("public", "users")
CLIENTS = TableRef("public", "clients")
APPOINTMENTS = TableRef("public", "appointments")
WEIRD = TableRef("Odd; Schema", "Robert'); DROP TABLE students;--")


SOURCE_EXTRAS = sql.SQL(
    """
    CREATE TABLE students (id int);
    CREATE TABLE t (id int, note varchar(10), doc text);
    INSERT INTO t SELECT g, 'n' || g, '{{"g": ' || g || '}}' FROM generate_series(1, 50) g;
    CREATE TABLE items (id int PRIMARY KEY, qty int, price int,
                        total int GENERATED ALWAYS AS (qty * price) STORED);
    INSERT INTO items SELECT g, g, 2 FROM generate_series(1, 10) g;
    CREATE TABLE ev (id int PRIMARY KEY, at timestamptz, f float8, m money);
    INSERT INTO ev SELECT g, timestamptz '2024-03-01 12:00+00' + g * interval '1h', g / 3.0, g
        FROM generate_series(1, 100) g;
    CREATE SCHEMA {schema};
    CREATE TABLE {weird} ({c} text PRIMARY KEY, {d} int);
    """
).format(
    schema=sql.Identifier(WEIRD.schema),
    weird=WEIRD.ident,
    c=sql.Identifier('semi;col"umn'),
    d=sql.Identifier("Ключ"),
)
WEIRD_DDL = sql.SQL(
    "CREATE TABLE students (id int); CREATE SCHEMA {}; "
    "CREATE TABLE {} ({} text PRIMARY KEY, {} int)"
).format(
    sql.Identifier(WEIRD.schema),
    WEIRD.ident,
    sql.Identifier('semi;col"umn'),
    sql.Identifier("Ключ"),
)


@pytest.fixture(scope="module")
def source_dsn(pg_server: str) -> Iterator[str]:
    """One source database for the module: the sample schema at scale 0.05 (500 users, 1500
    clients, 3000 appointments) plus a few odd tables. Tests only ever read it (``src`` is a
    read-only session), which is also what "the source stays untouched" needs."""
    with scratch_database(pg_server, "t_source") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            sample.create_schema(conn)
            sample.generate(conn, scale=0.05, seed=7)
            conn.execute(SOURCE_EXTRAS)
            conn.execute(
                sql.SQL("INSERT INTO {} VALUES (%s, 1), (%s, 2)").format(WEIRD.ident),
                ["x'); DROP TABLE students; --", "é\t\n\\ \\N"],  # COPY text escapes
            )
        yield dsn


@pytest.fixture
def src(source_dsn: str) -> Iterator[psycopg.Connection]:
    with read_only_session(source_dsn) as conn:
        yield conn


@pytest.fixture
def bare(pg_dsn: str) -> Iterator[psycopg.Connection]:
    """An empty destination database (transactions left to the test)."""
    with psycopg.connect(pg_dsn) as conn:
        yield conn


@pytest.fixture
def dst(bare: psycopg.Connection) -> psycopg.Connection:
    """A destination with the sample schema, empty."""
    sample.create_schema(bare)
    bare.commit()
    return bare


@pytest.mark.parametrize("fmt", ["binary", "text"])
def test_copy_whole_sample_database(
    src: psycopg.Connection, dst: psycopg.Connection, fmt: str
) -> None:
    sample_tables = {f"public.{name}" for name in sample.TABLES}

    def sample_checksums(conn: psycopg.Connection) -> dict[str, str]:
        return {k: v for k, v in database_checksums(conn).items() if k in sample_tables}

    before = sample_checksums(src)
    sizes: dict[str, list[int]] = {}
    copied = {
        t.name: copy_table(
            src,
            dst,
            t,
            fmt=fmt,  # type: ignore[arg-type]
            progress=sizes.setdefault(t.name, []).append,
        )
        for t in (USERS, CLIENTS, APPOINTMENTS)
    }
    dst.commit()
    assert copied == {"users": 500, "clients": 1500, "appointments": 3000}
    assert sample.row_counts(dst) == {**copied, "audit_log": 0}
    assert database_checksums(dst) == before
    assert sample_checksums(src) == before  # the source is untouched
    for table, running_total in sizes.items():
        assert running_total and running_total == sorted(running_total), table


def test_copy_with_where_filter_restores_deleted_rows(
    src: psycopg.Connection, dst: psycopg.Connection
) -> None:
    """Scenario 3 in miniature: put back two users and everything the cascade took."""
    for t in (USERS, CLIENTS, APPOINTMENTS):
        copy_table(src, dst, t)
    dst.commit()
    victims = [3, 141]
    expected = {t.name: table_checksum(dst, t) for t in (USERS, CLIENTS, APPOINTMENTS)}
    dst.execute("DELETE FROM users WHERE id = ANY(%s)", [victims])
    dst.commit()
    assert table_checksum(dst, USERS) != expected["users"]

    restore_order = catalog.snapshot(dst).graph.cascade_closure([USERS])
    assert restore_order == [USERS, CLIENTS, APPOINTMENTS]
    copied = {}
    for table in restore_order:
        key = "id" if table == USERS else "user_id"
        copied[table.name] = copy_table(
            src,
            dst,
            table,
            where=sql.SQL("{} = ANY(%s)").format(sql.Identifier(key)),
            params=[victims],
        )
    dst.commit()
    n_clients, n_appts = src.execute(
        "SELECT (SELECT count(*) FROM clients WHERE user_id = ANY(%(v)s)),"
        " (SELECT count(*) FROM appointments WHERE user_id = ANY(%(v)s))",
        {"v": victims},
    ).fetchone()
    assert copied == {"users": 2, "clients": n_clients, "appointments": n_appts}
    assert n_clients > 0 and n_appts > 0
    assert {t.name: table_checksum(dst, t) for t in (USERS, CLIENTS, APPOINTMENTS)} == expected


def test_copy_rows_from_an_arbitrary_query(
    src: psycopg.Connection, dst: psycopg.Connection
) -> None:
    dst.execute("CREATE TABLE report (user_id bigint, n_clients bigint, label text)")
    query = sql.SQL(
        "SELECT user_id, count(*), %s || '100%%' FROM clients WHERE user_id <= %s GROUP BY user_id"
    )
    rows = copy_rows(
        src,
        dst,
        query,
        ["done ", 20],
        TableRef("public", "report"),
        ["user_id", "n_clients", "label"],
    )
    assert rows == dst.execute("SELECT count(*) FROM report").fetchone()[0] > 0
    assert dst.execute("SELECT DISTINCT label FROM report").fetchall() == [("done 100%",)]


def test_binary_needs_identical_types_text_casts(
    src: psycopg.Connection, bare: psycopg.Connection
) -> None:
    a, b = src, bare
    b.execute("CREATE TABLE t (id bigint, note text, doc jsonb)")
    b.commit()
    t = TableRef("public", "t")
    with pytest.raises(ConfigError, match="identical column types") as info:
        copy_table(a, b, t)
    assert "id (integer -> bigint)" in str(info.value)
    # Bypassing the check, the server refuses the binary data; nothing is written.
    with pytest.raises(PostgresError, match="destination"):
        copy_rows(a, b, sql.SQL("SELECT id, note, doc FROM t"), None, t, ["id", "note", "doc"])
    b.rollback()
    assert copy_table(a, b, t, fmt="text") == 50
    b.commit()
    assert b.execute("SELECT sum(id), sum((doc->>'g')::int) FROM t").fetchone() == (1275, 1275)
    with pytest.raises(ConfigError, match="format"):
        copy_table(a, b, t, fmt="csv")  # type: ignore[arg-type]


def test_generated_columns_are_recomputed_and_columns_checked(
    src: psycopg.Connection, bare: psycopg.Connection
) -> None:
    bare.execute(
        "CREATE TABLE items (id int PRIMARY KEY, qty int, price int, "
        "total int GENERATED ALWAYS AS (qty * price) STORED)"
    )
    items = TableRef("public", "items")
    assert copy_table(src, bare, items) == 10
    assert bare.execute("SELECT sum(total) FROM items").fetchone() == (110,)
    assert table_checksum(src, items) == table_checksum(bare, items)
    with pytest.raises(ConfigError, match="no column"):
        copy_table(src, bare, items, columns=["id", "nope"])
    with pytest.raises(ConfigError, match="not found"):
        copy_table(src, bare, items, dst_table=TableRef("public", "missing"))


def test_weird_names_copy_and_checksum(src: psycopg.Connection, bare: psycopg.Connection) -> None:
    bare.execute(WEIRD_DDL)
    assert src.execute(sql.SQL("SELECT count(*) FROM {}").format(WEIRD.ident)).fetchone() == (2,)
    for fmt in ("binary", "text"):
        bare.execute(sql.SQL("TRUNCATE {}").format(WEIRD.ident))
        assert copy_table(src, bare, WEIRD, fmt=fmt) == 2  # type: ignore[arg-type]
        assert table_checksum(src, WEIRD) == table_checksum(bare, WEIRD)
    bare.commit()
    weird = database_checksums(src, [WEIRD.schema])
    assert list(weird) == [str(WEIRD)]
    assert database_checksums(bare, [WEIRD.schema]) == weird
    assert bare.execute("SELECT count(*) FROM students").fetchone() == (0,)
    assert src.execute("SELECT count(*) FROM students").fetchone() == (0,)


def test_failed_destination_leaves_source_usable(
    src: psycopg.Connection, dst: psycopg.Connection
) -> None:
    copy_table(src, dst, USERS, where=sql.SQL("id <= 10"))
    dst.commit()
    with pytest.raises(PostgresError, match="destination") as info:
        copy_table(src, dst, USERS)  # duplicate keys
    assert isinstance(info.value.__cause__, psycopg.errors.UniqueViolation)
    dst.rollback()
    assert dst.execute("SELECT count(*) FROM users").fetchone() == (10,)
    assert src.execute("SELECT count(*) FROM users").fetchone() == (500,)
    with pytest.raises(PostgresError, match="source"):
        copy_rows(src, dst, sql.SQL("SELECT id FROM no_such_table"), None, USERS, ["id"])
    dst.rollback()
    # The source fails half-way through the stream: the destination COPY is aborted with it.
    failing = sql.SQL(
        "SELECT 100000 + g, 'n', 'e' || g, now() FROM generate_series(1, 5000) g"
        " WHERE 1 / (g - 4000) IS NOT NULL"
    )
    with pytest.raises(PostgresError, match="source side: division by zero"):
        copy_rows(src, dst, failing, None, USERS, ["id", "name", "email", "created_at"], fmt="text")
    dst.rollback()
    assert dst.execute("SELECT count(*) FROM users").fetchone() == (10,)
    assert src.execute("SELECT count(*) FROM users").fetchone() == (500,)
    assert copy_table(src, dst, USERS, where=sql.SQL("false")) == 0
    with pytest.raises(ConfigError):
        copy_rows(src, dst, sql.SQL("SELECT 1"), None, USERS, [])


def test_copy_between_two_clusters(
    src: psycopg.Connection, local_cluster_factory: Callable[..., LocalCluster]
) -> None:
    target = local_cluster_factory("copy-target")
    with target.connect(autocommit=True) as b:
        # Other session settings on the target must not change a checksum.
        b.execute("ALTER DATABASE postgres SET timezone = 'Asia/Kathmandu'")
        b.execute("CREATE TABLE ev (id int PRIMARY KEY, at timestamptz, f float8, m money)")
    with target.connect() as b:
        ev = TableRef("public", "ev")
        assert copy_table(src, b, ev) == 100
        b.commit()
        assert b.execute("SHOW timezone").fetchone() == ("Asia/Kathmandu",)
        assert table_checksum(src, ev) == table_checksum(b, ev)
        assert b.execute("SHOW timezone").fetchone() == ("Asia/Kathmandu",)  # put back


# -- checksums ---------------------------------------------------------------------------------


def test_checksum_detects_changes_not_physical_order(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE a (id int PRIMARY KEY, v text, j json)")
        conn.execute("CREATE TABLE b (id int PRIMARY KEY, v text, j json)")
        conn.execute(
            "INSERT INTO a SELECT g, 'v' || g, json_build_object('g', g) "
            "FROM generate_series(1, 200) g"
        )
        conn.execute(
            "INSERT INTO b SELECT g, 'v' || g, json_build_object('g', g) "
            "FROM generate_series(200, 1, -1) g"
        )
        ta, tb = TableRef("public", "a"), TableRef("public", "b")
        # Same rows, different physical order: same checksum; json has no ordering, no matter.
        assert table_checksum(conn, ta) == table_checksum(conn, tb)
        assert len(table_checksum(conn, ta)) == 32
        assert len(table_checksum(conn, ta, algorithm="sha256")) == 64
        assert table_checksum(conn, ta, ["id"]) == table_checksum(conn, tb, ["id"])
        assert table_checksum(conn, ta, ["id"]) != table_checksum(conn, ta)

        original = table_checksum(conn, ta)
        conn.execute("UPDATE a SET v = 'changed' WHERE id = 77")
        assert table_checksum(conn, ta) != original
        conn.execute("UPDATE a SET v = 'v77' WHERE id = 77")
        assert table_checksum(conn, ta) == original
        conn.execute("DELETE FROM a WHERE id = 1")
        assert table_checksum(conn, ta) != original

        conn.execute("CREATE TABLE e (x int)")
        empty = table_checksum(conn, TableRef("public", "e"))
        assert empty == "d41d8cd98f00b204e9800998ecf8427e"  # md5 of nothing
        conn.execute("INSERT INTO e VALUES (NULL)")
        assert table_checksum(conn, TableRef("public", "e")) != empty

        assert set(database_checksums(conn)) == {"public.a", "public.b", "public.e"}
        with pytest.raises(ConfigError):
            table_checksum(conn, ta, algorithm="crc32")  # type: ignore[arg-type]


def test_checksum_restores_session_settings(source_dsn: str) -> None:
    ev = TableRef("public", "ev")
    with psycopg.connect(source_dsn) as conn:
        conn.execute("SET TimeZone = 'America/Lima'")
        conn.execute("SET extra_float_digits = 0")

        def show() -> dict[str, str]:
            return {
                k: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(k))).fetchone()[0]
                for k in PINNED_SETTINGS
            }

        settings = show()
        lima = table_checksum(conn, ev)
        assert show() == settings
        conn.execute("SET TimeZone = 'Asia/Tokyo'")
        assert table_checksum(conn, ev) == lima
        conn.rollback()

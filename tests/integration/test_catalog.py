"""Catalog introspection against a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fixtures.pg import read_only_session, scratch_database
from psycopg import sql

from restorekit import sample
from restorekit.errors import ConfigError
from restorekit.pg import catalog
from restorekit.pg.catalog import Column, TableRef

# Names chosen to break anything that builds SQL from strings.
WEIRD_SCHEMA = 'Weird "Schema"; DROP SCHEMA public CASCADE; --'
BOBBY = "Robert'); DROP TABLE students;--"
SEMI = "semi;colon.dot"
UNICODE = "café_ünïcode"
MIXED = "MixedCase"

SCHEMA_DDL = sql.SQL(
    """
    CREATE TABLE students (id int PRIMARY KEY);

    CREATE SCHEMA shop;
    -- Primary key in a different order from the columns: key order must come from conkey.
    CREATE TABLE shop.orders (
        region   text NOT NULL,
        order_no int  NOT NULL,
        total    numeric(10, 2),
        PRIMARY KEY (order_no, region)
    );
    CREATE TABLE shop.order_lines (
        line_id    int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        dropped    int,
        o_region   text NOT NULL,
        o_no       int NOT NULL,
        qty        int NOT NULL,
        price      numeric(10, 2) NOT NULL,
        amount     numeric GENERATED ALWAYS AS (qty * price) STORED,
        sku        varchar(20),
        CONSTRAINT order_lines_order_fkey FOREIGN KEY (o_no, o_region)
            REFERENCES shop.orders (order_no, region) ON DELETE CASCADE ON UPDATE RESTRICT
    );
    ALTER TABLE shop.order_lines DROP COLUMN dropped;

    CREATE TABLE shop.employees (
        id         int PRIMARY KEY,
        manager_id int REFERENCES shop.employees (id) ON DELETE SET NULL ON UPDATE CASCADE
    );

    CREATE TABLE shop.events (id int, at date NOT NULL, PRIMARY KEY (id, at))
        PARTITION BY RANGE (at);
    CREATE TABLE shop.events_2024 PARTITION OF shop.events
        FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
    CREATE TABLE shop.events_2025 PARTITION OF shop.events
        FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
    CREATE TABLE shop.event_refs (
        id int PRIMARY KEY,
        event_id int, event_at date,
        FOREIGN KEY (event_id, event_at) REFERENCES shop.events (id, at) ON DELETE SET DEFAULT
    );
    CREATE TABLE shop.nokey (payload jsonb);

    CREATE SCHEMA {weird};
    CREATE TABLE {weird}.{mixed} (id int PRIMARY KEY);
    CREATE TABLE {weird}.{bobby} (
        id int PRIMARY KEY,
        {semi} int REFERENCES {weird}.{mixed} (id) ON DELETE CASCADE
    );
    CREATE TABLE public.{unicode} (
        "Ключ" int PRIMARY KEY,
        bobby_id int REFERENCES {weird}.{bobby} (id) ON DELETE CASCADE
    );
    CREATE TABLE public.{semi_table} (id int);
    """
).format(
    weird=sql.Identifier(WEIRD_SCHEMA),
    mixed=sql.Identifier(MIXED),
    bobby=sql.Identifier(BOBBY),
    semi=sql.Identifier(SEMI),
    unicode=sql.Identifier(UNICODE),
    semi_table=sql.Identifier(SEMI),
)

ORDERS = TableRef("shop", "orders")
LINES = TableRef("shop", "order_lines")
EMPLOYEES = TableRef("shop", "employees")
EVENTS = TableRef("shop", "events")
EVENT_REFS = TableRef("shop", "event_refs")
NOKEY = TableRef("shop", "nokey")
W_MIXED = TableRef(WEIRD_SCHEMA, MIXED)
W_BOBBY = TableRef(WEIRD_SCHEMA, BOBBY)
U_TABLE = TableRef("public", UNICODE)
SEMI_TABLE = TableRef("public", SEMI)
STUDENTS = TableRef("public", "students")


@pytest.fixture(scope="module")
def schema_dsn(pg_server: str) -> Iterator[str]:
    """One database with SCHEMA_DDL for the whole module: the tests using it only read.

    (CREATE DATABASE costs a few hundred ms; tests that write take ``fresh`` instead.)
    """
    with scratch_database(pg_server, "t_catalog") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SCHEMA_DDL)
        yield dsn


@pytest.fixture
def conn(schema_dsn: str) -> Iterator[psycopg.Connection]:
    """A read-only view of the shared schema (a read-only transaction enforces it)."""
    with read_only_session(schema_dsn) as conn:
        yield conn


@pytest.fixture
def fresh(pg_dsn: str) -> Iterator[psycopg.Connection]:
    """SCHEMA_DDL in a database of the test's own, for tests that write."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(SCHEMA_DDL)
        yield conn


def test_list_tables_covers_user_schemas_only(conn: psycopg.Connection) -> None:
    conn.execute("SET default_transaction_read_only = off")  # a temporary table is session-local
    conn.execute("CREATE TEMP TABLE scratch (id int)")
    tables = catalog.list_tables(conn)
    assert tables == sorted(
        [
            ORDERS,
            LINES,
            EMPLOYEES,
            EVENTS,
            EVENT_REFS,
            NOKEY,
            W_MIXED,
            W_BOBBY,
            U_TABLE,
            SEMI_TABLE,
            STUDENTS,
        ]
    )
    # Partitions are covered by their parent; the temporary table is nobody's business.
    assert TableRef("shop", "events_2024") not in tables
    assert catalog.list_tables(conn, ["shop"]) == sorted(
        [ORDERS, LINES, EMPLOYEES, EVENTS, EVENT_REFS, NOKEY]
    )
    assert catalog.list_tables(conn, WEIRD_SCHEMA) == [W_MIXED, W_BOBBY]
    assert catalog.list_tables(conn, ["nope"]) == []


def test_columns_types_generated_and_dropped(conn: psycopg.Connection) -> None:
    cols = catalog.columns(conn, LINES)
    assert [c.name for c in cols] == [
        "line_id",
        "o_region",
        "o_no",
        "qty",
        "price",
        "amount",
        "sku",
    ]
    by_name = {c.name: c for c in cols}
    assert by_name["line_id"] == Column("line_id", "integer", True, 1, False)
    assert by_name["price"].data_type == "numeric(10,2)"
    assert by_name["sku"].data_type == "character varying(20)"
    assert not by_name["sku"].not_null
    assert by_name["amount"].generated
    assert [c.name for c in cols if c.generated] == ["amount"]
    # Ordinals are attnum: the dropped column keeps its slot.
    assert by_name["o_region"].ordinal == 3


def test_columns_of_weird_names(conn: psycopg.Connection) -> None:
    assert [c.name for c in catalog.columns(conn, W_BOBBY)] == ["id", SEMI]
    assert [c.name for c in catalog.columns(conn, U_TABLE)] == ["Ключ", "bobby_id"]


def test_missing_table_is_a_config_error(conn: psycopg.Connection) -> None:
    with pytest.raises(ConfigError, match="not found"):
        catalog.columns(conn, TableRef("public", "nope"))
    with pytest.raises(ConfigError, match="nope"):
        catalog.primary_key(conn, TableRef("nope", "orders"))
    with pytest.raises(ConfigError):
        catalog.estimated_rows(conn, [ORDERS, TableRef("public", "Orders")])


def test_primary_key_in_key_order(conn: psycopg.Connection) -> None:
    assert catalog.primary_key(conn, ORDERS) == ("order_no", "region")
    assert catalog.primary_key(conn, EVENTS) == ("id", "at")
    assert catalog.primary_key(conn, U_TABLE) == ("Ключ",)
    assert catalog.primary_key(conn, NOKEY) == ()
    assert catalog.primary_key(conn, SEMI_TABLE) == ()


def test_foreign_keys_composite_self_partitioned_and_weird(conn: psycopg.Connection) -> None:
    fks = {fk.child: fk for fk in catalog.foreign_keys(conn)}
    assert set(fks) == {LINES, EMPLOYEES, EVENT_REFS, W_BOBBY, U_TABLE}

    lines = fks[LINES]
    assert lines.name == "order_lines_order_fkey"
    assert lines.parent == ORDERS
    # Declared as (o_no, o_region) -> (order_no, region): pairs must line up.
    assert lines.child_columns == ("o_no", "o_region")
    assert lines.parent_columns == ("order_no", "region")
    assert (lines.on_delete, lines.on_update) == ("cascade", "restrict")

    emp = fks[EMPLOYEES]
    assert emp.self_referencing
    assert (emp.on_delete, emp.on_update) == ("set null", "cascade")

    # One constraint for the partitioned parent, not one per partition.
    refs = [fk for fk in catalog.foreign_keys(conn) if fk.child == EVENT_REFS]
    assert len(refs) == 1
    assert refs[0].parent == EVENTS
    assert refs[0].on_delete == "set default"
    assert refs[0].on_update == "no action"

    bobby = fks[W_BOBBY]
    assert (bobby.parent, bobby.child_columns, bobby.parent_columns) == (W_MIXED, (SEMI,), ("id",))

    assert [fk.child for fk in catalog.foreign_keys(conn, [WEIRD_SCHEMA])] == [W_BOBBY]
    # Filtering is by the child's schema; the parent may live elsewhere.
    assert [fk.parent for fk in catalog.foreign_keys(conn, ["public"])] == [W_BOBBY]


def test_names_are_never_executed(conn: psycopg.Connection) -> None:
    snap = catalog.snapshot(conn)
    assert STUDENTS in snap
    assert catalog.estimated_rows(conn, snap.tables)[STUDENTS] == 0
    cascade = snap.graph.cascade_closure([W_MIXED])
    assert cascade == [W_MIXED, W_BOBBY, U_TABLE]
    # Everything still exists afterwards.
    assert set(catalog.list_tables(conn)) == set(snap.tables)
    assert catalog.list_tables(conn, ["public"]) == sorted([SEMI_TABLE, U_TABLE, STUDENTS])


def test_estimated_rows(fresh: psycopg.Connection) -> None:
    conn = fresh
    conn.execute("INSERT INTO shop.orders SELECT 'eu', g, 1 FROM generate_series(1, 500) g")
    conn.execute(
        "INSERT INTO shop.events SELECT g, date '2024-06-01' + (g % 400) "
        "FROM generate_series(1, 300) g"
    )
    assert catalog.estimated_rows(conn, [ORDERS, EVENTS, NOKEY]) == {ORDERS: 0, EVENTS: 0, NOKEY: 0}
    conn.execute("ANALYZE shop.orders, shop.events")
    estimates = catalog.estimated_rows(conn, [ORDERS, EVENTS, NOKEY, ORDERS])
    assert estimates == {ORDERS: 500, EVENTS: 300, NOKEY: 0}
    assert catalog.estimated_rows(conn, []) == {}


def test_snapshot_matches_the_single_readers(conn: psycopg.Connection) -> None:
    snap = catalog.snapshot(conn)
    assert list(snap.tables) == catalog.list_tables(conn)
    for table in snap.tables:
        assert list(snap.columns[table]) == catalog.columns(conn, table)
        assert snap.primary_keys[table] == catalog.primary_key(conn, table)
    assert list(snap.foreign_keys) == catalog.foreign_keys(conn)
    order = snap.load_order()
    for fk in snap.foreign_keys:
        if not fk.self_referencing:
            assert order.index(fk.parent) < order.index(fk.child)

    shop = catalog.snapshot(conn, ["shop"])
    assert set(shop.tables) == {ORDERS, LINES, EMPLOYEES, EVENTS, EVENT_REFS, NOKEY}
    assert catalog.snapshot(conn, ["nope"]).tables == ()


def test_cycle_in_a_real_schema(fresh: psycopg.Connection) -> None:
    conn = fresh
    conn.execute(
        """
        CREATE TABLE public.husband (id int PRIMARY KEY, wife_id int);
        CREATE TABLE public.wife (id int PRIMARY KEY,
                                  husband_id int REFERENCES public.husband DEFERRABLE);
        ALTER TABLE public.husband ADD FOREIGN KEY (wife_id) REFERENCES public.wife DEFERRABLE;
        """
    )
    snap = catalog.snapshot(conn, ["public"])
    with pytest.raises(ConfigError, match="cycle") as info:
        snap.load_order()
    assert "public.husband" in str(info.value) and "public.wife" in str(info.value)
    assert "students" not in str(info.value)
    order = snap.load_order(break_cycles=True)
    assert order.index(TableRef("public", "husband")) + 1 == order.index(TableRef("public", "wife"))


def test_cascade_closure_of_the_sample_schema(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        sample.create_schema(conn)
        snap = catalog.snapshot(conn)
    users, clients, appts = (TableRef("public", n) for n in ("users", "clients", "appointments"))
    assert snap.graph.cascade_closure([users]) == [users, clients, appts]
    assert snap.graph.cascade_closure([clients]) == [clients, appts]
    assert snap.load_order() == [TableRef("public", "audit_log"), users, clients, appts]
    fk = next(f for f in snap.foreign_keys if f.child == appts and f.parent == clients)
    assert (fk.child_columns, fk.parent_columns, fk.on_delete) == (
        ("client_id",),
        ("id",),
        "cascade",
    )

"""The sample application database: schema, deterministic data, cascades and the audit log."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fixtures.pg import read_only_session, scratch_database
from psycopg import sql

from restorekit import sample
from restorekit.errors import ConfigError
from restorekit.pg import catalog
from restorekit.pg.catalog import TableRef
from restorekit.pg.checksum import database_checksums

SCALE = 0.05
EXPECTED = {"users": 500, "clients": 1500, "appointments": 3000}


@pytest.fixture
def conn(pg_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        sample.create_schema(conn)
        yield conn


@pytest.fixture
def loaded(conn: psycopg.Connection) -> psycopg.Connection:
    """Sample data in the test's own database, for tests that change it."""
    sample.generate(conn, scale=SCALE)
    return conn


@pytest.fixture(scope="module")
def shared_dsn(pg_server: str) -> Iterator[str]:
    """Sample data generated once for the tests that only read it (or roll back)."""
    with scratch_database(pg_server, "t_sample") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            sample.create_schema(conn)
            seen: list[tuple[str, int]] = []
            written = sample.generate(conn, scale=SCALE, progress=lambda t, n: seen.append((t, n)))
        assert written == EXPECTED
        assert list(dict.fromkeys(t for t, _ in seen)) == list(EXPECTED)
        assert seen[-1] == ("appointments", 3000)
        yield dsn


@pytest.fixture
def shared(shared_dsn: str) -> Iterator[psycopg.Connection]:
    """A read-only session on the shared sample database."""
    with read_only_session(shared_dsn) as conn:
        yield conn


def test_generate_counts_and_statistics(shared: psycopg.Connection) -> None:
    loaded = shared
    assert sample.row_counts(loaded) == {**EXPECTED, "audit_log": 0}
    estimates = catalog.estimated_rows(loaded, [TableRef("public", t) for t in EXPECTED])
    assert {t.name: n for t, n in estimates.items()} == EXPECTED  # ANALYZE ran


def test_generated_data_is_consistent(shared: psycopg.Connection) -> None:
    loaded = shared
    # An appointment's user is its client's user; nothing starts before it was booked.
    assert loaded.execute(
        "SELECT count(*) FROM appointments a JOIN clients c ON c.id = a.client_id "
        "WHERE a.user_id <> c.user_id OR a.starts_at < a.created_at "
        "OR c.created_at < (SELECT created_at FROM users u WHERE u.id = c.user_id)"
    ).fetchone() == (0,)
    # The runbook's probes find something on both sides of 2024-01-01.
    before, after = loaded.execute(
        "SELECT count(*) FILTER (WHERE created_at < '2024-01-01'),"
        " count(*) FILTER (WHERE created_at >= '2024-01-01') FROM users"
    ).fetchone()
    assert before > 0 and after > 0
    assert loaded.execute("SELECT count(DISTINCT status) FROM appointments").fetchone() == (4,)


def test_identity_sequences_continue_after_the_data(loaded: psycopg.Connection) -> None:
    new_id = loaded.execute(
        "INSERT INTO users (name, email) VALUES ('New', 'new@example.com') RETURNING id"
    ).fetchone()
    assert new_id == (501,)
    assert loaded.execute(
        "INSERT INTO clients (user_id, name) VALUES (501, 'c') RETURNING id"
    ).fetchone() == (1501,)


def test_generate_refuses_non_empty_tables_and_bad_scale(shared: psycopg.Connection) -> None:
    loaded = shared
    with pytest.raises(ConfigError, match="already hold rows"):
        sample.generate(loaded, scale=SCALE)
    assert sample.row_counts(loaded)["users"] == 500
    with pytest.raises(ConfigError, match="scale"):
        sample.generate(loaded, scale=0)


def test_generate_is_deterministic(shared_dsn: str) -> None:
    """Same seed, same rows: regenerate into other schemas of the shared database, compare,
    and roll it all back."""

    def by_table(checksums: dict[str, str]) -> dict[str, str]:
        return {TableRef.parse(k).name: v for k, v in checksums.items()}

    with psycopg.connect(shared_dsn) as conn:
        reference = by_table(database_checksums(conn, ["public"]))
        results = {}
        for seed in (42, 43):
            schema = f"seed_{seed}"
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            conn.execute("SELECT set_config('search_path', %s, true)", [schema])
            sample.create_schema(conn)
            sample.generate(conn, scale=SCALE, seed=seed)
            results[seed] = by_table(database_checksums(conn, [schema]))
        conn.rollback()
    assert results[42] == reference  # seed 42 is the default
    assert results[43]["users"] != reference["users"]
    assert results[43]["appointments"] != reference["appointments"]


def test_deleting_users_cascades_and_is_audited(loaded: psycopg.Connection) -> None:
    victims = [7, 250]
    n_clients, n_appts, emails = loaded.execute(
        "SELECT (SELECT count(*) FROM clients WHERE user_id = ANY(%(v)s)),"
        " (SELECT count(*) FROM appointments WHERE user_id = ANY(%(v)s)),"
        " (SELECT array_agg(email ORDER BY id) FROM users WHERE id = ANY(%(v)s))",
        {"v": victims},
    ).fetchone()
    assert n_clients > 0 and n_appts > 0

    loaded.execute("DELETE FROM users WHERE id = ANY(%s)", [victims])

    counts = sample.row_counts(loaded)
    assert counts["users"] == 498
    assert counts["clients"] == 1500 - n_clients
    assert counts["appointments"] == 3000 - n_appts
    audited = dict(
        loaded.execute(
            "SELECT table_name, count(*) FROM audit_log WHERE action = 'DELETE' GROUP BY 1"
        ).fetchall()
    )
    assert audited == {"users": 2, "clients": n_clients, "appointments": n_appts}
    assert counts["audit_log"] == 2 + n_clients + n_appts
    # The audit log keeps the deleted rows themselves: enough to find what to restore.
    rows = loaded.execute(
        "SELECT row_id, old_row->>'email' FROM audit_log WHERE table_name = 'users' ORDER BY row_id"
    ).fetchall()
    assert rows == list(zip(victims, emails, strict=True))
    assert loaded.execute(
        "SELECT count(*) FROM audit_log a JOIN appointments p ON p.id = a.row_id "
        "WHERE a.table_name = 'appointments'"
    ).fetchone() == (0,)
    # Every cascaded row names one of the victims.
    owners = loaded.execute(
        "SELECT DISTINCT (old_row->>'user_id')::bigint FROM audit_log "
        "WHERE table_name IN ('clients', 'appointments')"
    ).fetchall()
    assert {v for (v,) in owners} <= set(victims)


def test_one_audit_insert_per_statement(conn: psycopg.Connection) -> None:
    """A plain multi-row DELETE is audited set-based: one row per deleted row, one statement."""
    sample.generate(conn, scale=0.01)
    conn.execute("DELETE FROM appointments WHERE id <= 50")
    assert conn.execute(
        "SELECT count(*), count(DISTINCT row_id), min(row_id), max(row_id),"
        " count(DISTINCT created_at) FROM audit_log"
    ).fetchone() == (50, 50, 1, 50, 1)


def test_generate_inside_a_caller_transaction(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        sample.create_schema(conn)
        sample.generate(conn, scale=0.01)
        conn.rollback()  # the caller's transaction decides
        assert conn.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'users'"
        ).fetchone() == (0,)

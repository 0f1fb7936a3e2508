"""Prisma-aware verification on a real cluster: a hand-made ``_prisma_migrations`` (Prisma's own
columns) compared with production's or the baseline's."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from restorekit.integrity import Baseline, capture_baseline, prisma_migrations, verify
from restorekit.pg.cluster import free_port
from restorekit.pg.dsn import merge

# As prisma-engines creates it (schema-engine ARCHITECTURE.md).
PRISMA_TABLE_SQL = """
CREATE TABLE "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
)
"""
MIGRATIONS = ("20240101000000_init", "20240201000000_add_clients", "20240301000000_add_index")


def apply(conn: psycopg.Connection, name: str, *, finished: bool = True,
          rolled_back: bool = False, minute: int = 0) -> None:
    conn.execute(
        "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, logs, "
        "rolled_back_at, started_at, applied_steps_count) VALUES (%s, %s, "
        "CASE WHEN %s THEN now() + make_interval(mins => %s) END, %s, NULL, "
        "CASE WHEN %s THEN now() END, now() + make_interval(mins => %s), %s)",
        [str(uuid.uuid4()), "0" * 64, finished, minute, name, rolled_back, minute,
         1 if finished else 0])


def prisma_db(dsn: str, names: tuple[str, ...] = MIGRATIONS) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PRISMA_TABLE_SQL)
        conn.execute("CREATE TABLE users (id bigint PRIMARY KEY)")
        for i, name in enumerate(names):
            apply(conn, name, minute=i)


@pytest.fixture
def production_dsn(pg_server: str) -> Iterator[str]:
    name = f"t_prod_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(pg_server, dbname=name)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def baseline_of(dsn: str) -> Baseline:
    with psycopg.connect(dsn) as conn:
        return capture_baseline(conn, [])


def test_no_prisma_table_no_check(pg_dsn: str) -> None:
    report = verify(pg_dsn, amcheck=False)
    assert "prisma_migrations" not in [c.name for c in report.checks]
    assert baseline_of(pg_dsn).prisma is None


def test_baseline_records_the_latest_migration_and_a_match_passes(pg_dsn: str) -> None:
    prisma_db(pg_dsn)
    baseline = Baseline.from_dict(baseline_of(pg_dsn).to_dict())
    assert baseline.prisma == {"latest": MIGRATIONS[-1], "count": 3}
    report = verify(pg_dsn, baseline=baseline, amcheck=False)
    check = report.check("prisma_migrations")
    assert check.ok and check.critical
    assert f"latest {MIGRATIONS[-1]} (3 migrations applied)" in check.detail
    assert "matches the baseline" in check.detail


def test_a_migration_the_baseline_has_is_missing_critical(pg_dsn: str) -> None:
    prisma_db(pg_dsn)
    baseline = baseline_of(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM _prisma_migrations WHERE migration_name = %s", [MIGRATIONS[-1]])
    report = verify(pg_dsn, baseline=baseline, amcheck=False)
    check = report.check("prisma_migrations")
    assert not check.ok and check.critical and not report.ok
    assert "missing migrations the baseline has" in check.detail
    assert f"latest {MIGRATIONS[1]}" in check.detail


def test_unfinished_and_rolled_back_migrations_are_reported(pg_dsn: str) -> None:
    prisma_db(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        apply(conn, "20240401000000_bad", finished=False, rolled_back=True, minute=5)
        apply(conn, "20240402000000_half", finished=False, minute=6)
    found = prisma_migrations(psycopg.connect(pg_dsn))
    assert found is not None and found.latest == MIGRATIONS[-1]
    assert found.unfinished == ("20240402000000_half",)
    assert found.rolled_back == ("20240401000000_bad",)
    report = verify(pg_dsn, amcheck=False)
    check = report.check("prisma_migrations")
    assert not check.ok and not check.critical and report.ok  # a warning
    assert "unfinished (failed or interrupted): 20240402000000_half" in check.detail
    assert "rolled back: 20240401000000_bad" in check.detail
    assert check.observed["latest"] == MIGRATIONS[-1]


def test_compared_with_production_when_it_answers(pg_dsn: str, production_dsn: str) -> None:
    prisma_db(pg_dsn)
    prisma_db(production_dsn, (*MIGRATIONS, "20240501000000_after_the_point"))
    report = verify(pg_dsn, reference_dsn=production_dsn, amcheck=False)
    check = report.check("prisma_migrations")
    assert not check.ok and check.critical
    assert "missing migrations production has: 20240501000000_after_the_point" in check.detail
    assert check.observed["production_latest"] == "20240501000000_after_the_point"

    same = verify(production_dsn, reference_dsn=production_dsn, amcheck=False)
    assert same.check("prisma_migrations").ok
    assert "matches production" in same.check("prisma_migrations").detail


def test_unreachable_production_falls_back_to_the_baseline(pg_dsn: str) -> None:
    prisma_db(pg_dsn)
    baseline = baseline_of(pg_dsn)
    gone = merge(pg_dsn, host="127.0.0.1", port=str(free_port()), password="s3cret-gone")
    report = verify(pg_dsn, baseline=baseline, reference_dsn=gone, amcheck=False)
    check = report.check("prisma_migrations")
    assert check.ok, check.detail
    assert check.detail.startswith("production unreachable")
    assert "matches the baseline" in check.detail
    assert "s3cret-gone" not in check.detail

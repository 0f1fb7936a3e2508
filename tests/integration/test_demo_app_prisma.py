"""The demo app reads a Prisma-style DATABASE_URL as Prisma does: ``schema`` is its search path,
options libpq does not know are ignored instead of failing the connection."""

from __future__ import annotations

import psycopg
from psycopg import sql

from restorekit.apps.demo_app import Database, Scrubber
from restorekit.pg.dsn import to_url


def test_prisma_options_are_accepted_and_schema_is_the_search_path(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "Shop"')
        conn.execute(sql.SQL('CREATE TABLE "Shop".users (id int)'))
        conn.execute('INSERT INTO "Shop".users VALUES (1), (2), (3)')
    url = to_url(pg_dsn) + "?schema=Shop&connection_limit=5&pool_timeout=10&pgbouncer=true"
    db = Database(url, Scrubber(url))
    assert db.ping() > 0
    assert db.users_count() == 3  # found through the schema option
    plain = to_url(pg_dsn) + "?connection_limit=5"
    assert Database(plain, Scrubber(plain)).users_count() is None  # no users in public

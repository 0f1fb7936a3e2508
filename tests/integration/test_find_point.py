"""Finding the restore point from the WAL, on a real production (scram, archiving, a base
backup): each damage is found as the exact transaction that did it, and a copy restored to the
found point (before-xid:N) holds the damaged rows byte for byte, every write committed before
the damage and none after it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from fixtures.pg import in_one_transaction
from fixtures.world import installation

from restorekit.damage import Damage, DamageKind, FoundBy
from restorekit.demo import Installation
from restorekit.errors import ConfigError
from restorekit.models import PointKind, RestorePoint
from restorekit.providers.selfhosted import SelfHostedProvider

pytestmark = pytest.mark.slow

ORG = '"Org ü"'  # quoted, mixed case, unicode


@pytest.fixture(scope="module")
def prod(pg_base_dir: Path) -> Iterator[Installation]:
    with installation(pg_base_dir, "findpoint", scale=0.005) as inst:
        yield inst


def provider(inst: Installation) -> SelfHostedProvider:
    p = inst.runtime().provider
    assert isinstance(p, SelfHostedProvider)
    return p


def good_time(inst: Installation) -> RestorePoint:
    time.sleep(0.05)
    point = RestorePoint.at(inst.clock())
    time.sleep(0.05)
    return point


def rows_of(dsn: str, query: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(query)]


def restored_rows(inst: Installation, point: RestorePoint, query: str) -> list[str]:
    p = provider(inst)
    restored = p.restore(point, name=f"check-{time.monotonic_ns()}")
    try:
        return rows_of(restored.dsn.get_secret_value(), query)
    finally:
        p.discard(restored)


def test_rows_moved_by_updates_then_deleted_in_a_cascade_are_found_exactly(
        prod: Installation) -> None:
    with psycopg.connect(prod.app_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {ORG} (id int PRIMARY KEY, parent int REFERENCES {ORG}(id) "
                     "ON DELETE CASCADE, v text) WITH (fillfactor = 60)")
        conn.execute(f"INSERT INTO {ORG} SELECT g, CASE WHEN g > 1 THEN g / 2 END, "
                     "repeat('x', 150) FROM generate_series(1, 400) g")
        conn.execute("CREATE TABLE audit_other (id serial PRIMARY KEY, note text)")
        good = good_time(prod)
        # HOT updates (same page), then a non-HOT one that moves the row to another block.
        in_one_transaction(conn, f"UPDATE {ORG} SET v = 'hot-1' WHERE id = 2",
            f"UPDATE {ORG} SET v = 'hot-2' WHERE id = 2")
        in_one_transaction(conn, f"UPDATE {ORG} SET v = repeat('moved', 400) WHERE id IN (2, 5)")
        # A deletion that rolled back and a savepoint rolled back: neither is the damage.
        with pytest.raises(psycopg.errors.RaiseException), conn.transaction():
            conn.execute(f"DELETE FROM {ORG} WHERE id = 2")
            conn.execute("DO $$ BEGIN RAISE EXCEPTION 'oops'; END $$")
        with conn.transaction():
            conn.execute("SAVEPOINT s")
            conn.execute(f"DELETE FROM {ORG} WHERE id = 5")
            conn.execute("ROLLBACK TO SAVEPOINT s")
        before = rows_of(prod.app_dsn, f"SELECT t::text FROM {ORG} t ORDER BY id")
        damage = in_one_transaction(
            conn, "INSERT INTO audit_other (note) VALUES ('same transaction')",
            f"DELETE FROM {ORG} WHERE id = 2")
        in_one_transaction(conn, "INSERT INTO audit_other (note) VALUES ('after the damage')")
        subtree = conn.execute(f"SELECT count(*) FROM {ORG}").fetchone()[0]
    prod.wait_archived()

    found = provider(prod).find_point(Damage(table=ORG, keys=(("2",),), good_point=good))

    assert found.found_by is FoundBy.WAL_SCAN
    assert found.xid == damage
    assert found.point == RestorePoint.before_xid(damage)
    assert str(found.point) == f"before-xid:{damage}@{found.commit_lsn}"
    assert found.rows_touched == 400 - subtree  # the cascade's deletes in the same table
    assert any("DELETE" in e for e in found.evidence)
    assert found.commit_time is not None and found.copies == 1
    assert provider(prod).list_scratch() == []
    # The copy at the found point is the state just before the damage, byte for byte.
    assert restored_rows(prod, found.point, f"SELECT t::text FROM {ORG} t ORDER BY id") == before


def test_composite_keys_and_a_predicate(prod: Installation) -> None:
    with psycopg.connect(prod.app_dsn, autocommit=True) as conn:
        conn.execute('CREATE TABLE "Pairs" (a int, b text, n int, PRIMARY KEY (a, b))')
        conn.execute("""INSERT INTO "Pairs" SELECT g % 10, 'k' || g, g """
                     "FROM generate_series(1, 300) g")
        good = good_time(prod)
        in_one_transaction(conn, """UPDATE "Pairs" SET n = -1 WHERE a = 3""")
        damage = in_one_transaction(
            conn, """DELETE FROM "Pairs" WHERE a = 3 AND b IN ('k13', 'k23')""")
    prod.wait_archived()
    p = provider(prod)

    by_keys = p.find_point(Damage(table='"Pairs"', keys=(("3", "k13"), ("3", "k23")),
                                  good_point=good))
    assert by_keys.xid == damage and by_keys.rows_touched == 2

    # A predicate on the copy; CHANGED: the first committed update of those rows.
    changed = p.find_point(Damage(table='"Pairs"', kind=DamageKind.CHANGED,
                                  where="a = 3 AND n > 0", good_point=good))
    assert changed.xid == damage - 1 and changed.rows_touched == 30


@pytest.mark.parametrize("statement,what", [
    ("DELETE FROM {t}", "DELETE of 120 row(s)"),
    ("TRUNCATE {t}", "TRUNCATE"),
    ("DROP TABLE {t}", "DROP TABLE"),
])
def test_whole_table_damage(prod: Installation, statement: str, what: str) -> None:
    table = f"whole_{statement.split()[0].lower()}"
    with psycopg.connect(prod.app_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
        conn.execute(f"INSERT INTO {table} SELECT g, 'v' FROM generate_series(1, 120) g")
        good = good_time(prod)
        # Ordinary traffic: not the damage.
        in_one_transaction(conn, f"DELETE FROM {table} WHERE id = 1")
        in_one_transaction(conn, f"INSERT INTO {table} VALUES (1, 'back')")
        damage = in_one_transaction(conn, statement.format(t=table))
        in_one_transaction(conn, "CREATE TABLE IF NOT EXISTS later (id int)")
    prod.wait_archived()

    found = provider(prod).find_point(Damage(table=table, kind=DamageKind.TABLE, good_point=good))

    assert found.xid == damage
    assert found.what.startswith(what)
    assert restored_rows(prod, found.point, f"SELECT count(*)::text FROM {table}") == ["120"]


def test_vacuum_checkpoint_and_a_rewrite_between_the_good_point_and_the_damage(
        prod: Installation) -> None:
    with psycopg.connect(prod.app_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE rewritten (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO rewritten SELECT g, 'v' || g FROM generate_series(1, 500) g")
        good = good_time(prod)
        in_one_transaction(conn, "DELETE FROM rewritten WHERE id > 400")
        conn.execute("VACUUM FULL rewritten")  # a new file: the trail moves with it
        conn.execute("CHECKPOINT")  # full-page images from here on
        before = rows_of(prod.app_dsn, "SELECT t::text FROM rewritten t WHERE id < 10 ORDER BY id")
        damage = in_one_transaction(conn, "DELETE FROM rewritten WHERE id < 10")
        conn.execute("VACUUM rewritten")  # the dead rows are gone from the table, not the WAL
    prod.wait_archived()

    found = provider(prod).find_point(
        Damage(table="rewritten", keys=tuple((str(i),) for i in range(1, 10)), good_point=good))

    assert found.xid == damage
    assert any("rewritten by transaction" in n for n in found.notes)
    assert found.copies == 2
    assert restored_rows(prod, found.point,
                         "SELECT t::text FROM rewritten t WHERE id < 10 ORDER BY id") == before


def test_the_damage_under_a_concurrent_write_load_on_the_same_table(prod: Installation) -> None:
    with psycopg.connect(prod.app_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE busy (id bigserial PRIMARY KEY, account int, balance int)")
        conn.execute("INSERT INTO busy (account, balance) SELECT g % 50, 0 FROM "
                     "generate_series(1, 2000) g")
    good = good_time(prod)
    stop = threading.Event()
    committed: list[tuple[float, float, int]] = []  # (began, committed, id) per writer tx

    def writer() -> None:
        with psycopg.connect(prod.app_dsn, autocommit=True) as conn:
            while not stop.is_set():
                began = time.monotonic()
                with conn.transaction():
                    conn.execute("UPDATE busy SET balance = balance + 1 WHERE id = "
                                 "(1 + floor(random() * 2000))::int")
                    new = conn.execute("INSERT INTO busy (account, balance) VALUES (-1, 1) "
                                       "RETURNING id").fetchone()[0]
                committed.append((began, time.monotonic(), new))

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    with psycopg.connect(prod.app_dsn, autocommit=True) as conn:
        victims = [r[0] for r in conn.execute(
            "SELECT id FROM busy WHERE id <= 2000 AND id % 7 = 0")]
        damage_began = time.monotonic()
        damage = in_one_transaction(conn, "DELETE FROM busy WHERE id <= 2000 AND id % 7 = 0")
        damage_done = time.monotonic()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    prod.wait_archived()

    found = provider(prod).find_point(
        Damage(table="busy", keys=tuple((str(v),) for v in victims), good_point=good))

    assert found.xid == damage
    present = set(int(x) for x in restored_rows(
        prod, found.point, "SELECT id::text FROM busy WHERE account = -1"))
    before = {i for began, done, i in committed if done < damage_began}
    after = {i for began, done, i in committed if began > damage_done}
    assert before and after
    assert before <= present  # every write committed before the damage is there
    assert not (after & present)  # none begun after it


def test_wrong_input_gets_an_answer_not_a_guess(prod: Installation) -> None:
    with psycopg.connect(prod.app_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE quiet (id int PRIMARY KEY)")
        conn.execute("INSERT INTO quiet SELECT generate_series(1, 10)")
        good = good_time(prod)
        in_one_transaction(conn, "INSERT INTO quiet VALUES (11)")
    prod.wait_archived()
    p = provider(prod)
    with pytest.raises(ConfigError, match="no committed transaction"):
        p.find_point(Damage(table="quiet", keys=(("3",),), good_point=good))
    with pytest.raises(ConfigError, match="does not exist"):
        p.find_point(Damage(table="never_existed", keys=(("3",),), good_point=good))
    with pytest.raises(ConfigError, match="not there"):
        p.find_point(Damage(table="quiet", keys=(("999",),), good_point=good))
    with pytest.raises(ConfigError, match="primary key is"):
        p.find_point(Damage(table="quiet", keys=(("1", "2"),), good_point=good))
    assert p.list_scratch() == []


def test_what_a_restore_to_the_found_point_would_lose(prod: Installation) -> None:
    with psycopg.connect(prod.app_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE lossy (id int PRIMARY KEY, v int)")
        conn.execute("CREATE TABLE kept (id serial PRIMARY KEY)")
        conn.execute("INSERT INTO lossy SELECT g, 0 FROM generate_series(1, 50) g")
        good = good_time(prod)
        damage = in_one_transaction(conn, "DELETE FROM lossy WHERE id <= 5")
        first = in_one_transaction(conn, "INSERT INTO kept SELECT FROM generate_series(1, 7)")
        in_one_transaction(conn, "UPDATE lossy SET v = 1 WHERE id BETWEEN 10 AND 12")
        with pytest.raises(psycopg.errors.RaiseException), conn.transaction():
            conn.execute("INSERT INTO kept SELECT FROM generate_series(1, 100)")  # rolled back
            conn.execute("DO $$ BEGIN RAISE EXCEPTION 'no'; END $$")
    prod.wait_archived()
    p = provider(prod)
    found = p.find_point(Damage(table="lossy", keys=(("1",),), good_point=good))
    assert found.xid == damage and first > damage

    loss = p.loss_after(found.point)

    tables = {t.table: t for t in loss.tables}
    assert tables["public.lossy"].deleted == 5 and tables["public.lossy"].updated == 3
    assert tables["public.kept"].inserted == 7  # the rolled-back 100 are not lost writes
    assert loss.transactions >= 3
    assert loss.first_commit is not None and loss.first_commit <= loss.last_commit
    assert isinstance(loss.first_commit, datetime)
    assert any("lossy" in line for line in loss.lines())
    assert p.loss_after(RestorePoint(PointKind.LATEST)).transactions == 0


def test_the_first_update_that_changed_the_given_column(prod: Installation) -> None:
    with psycopg.connect(prod.app_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE ledger (id int PRIMARY KEY, name text, balance int)")
        conn.execute("INSERT INTO ledger SELECT g, 'n' || g, 100 FROM generate_series(1, 60) g")
        good = good_time(prod)
        renamed = in_one_transaction(
            conn, "UPDATE ledger SET name = upper(name) WHERE id IN (4, 5)")
        damage = in_one_transaction(conn, "UPDATE ledger SET balance = 0 WHERE id IN (4, 5, 6)")
        in_one_transaction(conn, "UPDATE ledger SET balance = 1 WHERE id = 4")
    prod.wait_archived()

    found = provider(prod).find_point(Damage(table="ledger", kind=DamageKind.CHANGED,
                                             keys=(("4",), ("5",)), column="balance",
                                             good_point=good))

    assert found.xid == damage
    assert "column balance" in found.what
    assert any(f"transaction {renamed} updated the rows but not balance" in n
               for n in found.notes)
    assert restored_rows(prod, found.point, "SELECT name || ':' || balance FROM ledger "
                         "WHERE id IN (4, 5) ORDER BY id") == ["N4:100", "N5:100"]


def test_find_point_on_the_command_line(prod: Installation) -> None:
    import json
    import subprocess

    from fixtures.cli import CLI, cli_env

    with psycopg.connect(prod.app_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE cli_rows (id int PRIMARY KEY)")
        conn.execute("INSERT INTO cli_rows SELECT generate_series(1, 20)")
        good = good_time(prod)
        damage = in_one_transaction(conn, "DELETE FROM cli_rows WHERE id IN (4, 5)")
    prod.wait_archived()
    env = cli_env(RESTOREKIT_CONFIG=str(prod.config))  # the config named by the variable
    done = subprocess.run([*CLI, "find-point", "-t", "production", "--table", "cli_rows",
                           "--ids", "4", "--ids", "5", "--good-point", str(good), "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["xid"] == damage and data["point"].startswith(f"before-xid:{damage}@")
    assert data["loss"]["transactions"] >= 1
    for secret in (prod.app_password, psycopg.conninfo.conninfo_to_dict(prod.app_dsn)["password"]):
        assert secret and secret not in done.stdout + done.stderr  # no secret in the output
    refused = subprocess.run([*CLI, "find-point", "-t", "production", "--table", "cli_rows",
                              "--ids", "4", "--where", "id = 4"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode == 2 and "not both" in refused.stderr

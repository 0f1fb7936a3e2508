"""restorekit works with exactly the privileges docs/security.md "Database privileges" lists,
and a role missing one of them is refused before any side effect, with the privilege named.

The role is created from the SQL block of that section (so the documentation and this test
cannot drift apart), NOSUPERUSER, on the production cluster of a whole installation
(``world``). Both connections restorekit uses point at it: the target's DSN (base backups) and
the application's DATABASE_URL in the env file (what scenarios 2 and 3 read and write through).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
from flows.backup import BackupParams, backup
from flows.partial_corruption import PartialCorruptionParams, partial_corruption
from flows.restore_drill import RestoreDrillParams, restore_drill
from restorekit.pg.checksum import database_checksums
from restorekit.privileges import MissingPrivileges
from restorekit.repository import open_repository
from restorekit.snapshot import list_snapshots

pytestmark = pytest.mark.slow

PRIVILEGES_DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
ROLE = "restorekit"


def documented_sql() -> list[str]:
    """The statements of the ```sql block under '## Database privileges' in docs/security.md."""
    text = PRIVILEGES_DOC.read_text()
    section = text[text.index("## Database privileges"):]
    section = section[:section.index("\n## ", 3)]
    block = re.search(r"```sql\n(.*?)```", section, re.S)
    assert block is not None, "docs/security.md: no SQL block under '## Database privileges'"
    lines = [line for line in block.group(1).splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


@pytest.fixture(scope="module")
def least(world: Any) -> Iterator[Any]:
    """The world with the documented role: target DSN and DATABASE_URL both use it."""
    with psycopg.connect(world.app_dsn, autocommit=True) as conn:
        for statement in documented_sql():
            conn.execute(statement)  # type: ignore[arg-type] - the documented SQL
        role = conn.execute("SELECT rolsuper, rolreplication, rolcreatedb, rolcreaterole, "
                            "rolbypassrls FROM pg_roles WHERE rolname = %s", [ROLE]).fetchone()
        granted_roles = conn.execute(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
            "WHERE r.rolname = %s", [ROLE]).fetchone()
    assert role == (False, True, False, False, False)
    assert granted_roles == (0,)  # no pg_read_all_data, pg_monitor, ... memberships
    # The production authenticates with scram-sha-256: the role's password (documented) goes
    # to restorekit only through the target's dsn_env, and into the application's URL.
    password = re.search(r"PASSWORD '([^']*)'", "\n".join(documented_sql()))
    assert password is not None and world.dsn_env
    dsn = world.production.dsn("app", user=ROLE, password=password.group(1))
    os.environ[world.dsn_env] = dsn
    world.env_file.write_text(
        "DATABASE_URL=" + world.production.url("app", user=ROLE, password=password.group(1)) + "\n")
    rt = world.runtime()
    rt.app.redeploy(reason="connect as the restorekit role")
    assert rt.config.resolve_dsn() == dsn
    yield world


def as_superuser(world: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(world.app_dsn, autocommit=True)


def untouched_state(world: Any) -> dict[str, Any]:
    rt = world.runtime()
    with as_superuser(world) as conn:
        checksums = database_checksums(conn)
    root = rt.provider.restore_root
    return {
        "checksums": checksums,
        "restores": sorted(p.name for p in root.iterdir()) if root.exists() else [],
        "snapshots": sorted(s.snapshot_id for s in list_snapshots(
            open_repository(rt.config.repository))),
        "env": world.env_file.read_bytes(),
    }


def test_the_backup_flow_and_the_drill_work_with_the_documented_role(
    prefect_server: str, least: Any
) -> None:
    taken = backup(BackupParams(target="production", config=str(least.config),
                                label="least privilege"))
    assert taken["label"] == "least privilege"
    least.wait_archived()
    (result,) = restore_drill(RestoreDrillParams(config=str(least.config)))
    assert result.passed, result.failures
    assert result.torn_down


def test_scenario_3_recovers_deleted_rows_with_the_documented_role(
    prefect_server: str, least: Any
) -> None:
    with as_superuser(least) as conn:
        victims = [r[0] for r in conn.execute(
            "SELECT id FROM users WHERE id IN (SELECT user_id FROM clients) ORDER BY id LIMIT 4")]
        before = [r[0] for r in conn.execute(
            "SELECT u::text FROM users u WHERE id = ANY(%s) ORDER BY id", [victims])]
        clients = conn.execute("SELECT count(*) FROM clients WHERE user_id = ANY(%s)",
                               [victims]).fetchone()
        # The audit log also records the users other tests of this module deleted (the
        # missing-privilege cases); this test's scope is its own accident.
        since = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(0.1)
        conn.execute("DELETE FROM users WHERE id = ANY(%s)", [victims])  # the accident
    least.wait_archived()

    report = accidental_deletion(AccidentalDeletionParams(
        target="production", config=str(least.config), require_approval=False,
        incident_id="lp-ad", deleted_since=since))

    assert report.outcome == "succeeded", report.error
    with as_superuser(least) as conn:
        assert [r[0] for r in conn.execute(
            "SELECT u::text FROM users u WHERE id = ANY(%s) ORDER BY id", [victims])] == before
        assert conn.execute("SELECT count(*) FROM clients WHERE user_id = ANY(%s)",
                            [victims]).fetchone() == clients
    assert {c.table: c.inserted for c in report.changes}["public.users"] == len(victims)
    amcheck = [c for c in report.checks if c.name == "amcheck"]
    assert amcheck and all(c.ok for c in amcheck), amcheck  # EXECUTE on bt_index_check works
    assert least.runtime().provider.list_scratch() == []


def test_scenario_2_repairs_rows_with_the_documented_role(
    prefect_server: str, least: Any
) -> None:
    with as_superuser(least) as conn:
        good = dict(conn.execute("SELECT id, c::text FROM clients c WHERE id % 40 = 0").fetchall())
        time.sleep(0.1)
        point = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(0.1)
        conn.execute("UPDATE clients SET email = 'corrupted' WHERE id % 40 = 0")
    least.wait_archived()

    report = partial_corruption(PartialCorruptionParams(
        target="production", config=str(least.config), restore_point=point.isoformat(),
        tables=["clients"], require_approval=False, incident_id="lp-pc"))

    assert report.outcome == "succeeded", report.error
    with as_superuser(least) as conn:
        assert dict(conn.execute(
            "SELECT id, c::text FROM clients c WHERE id % 40 = 0").fetchall()) == good
    assert {c.table: c.updated for c in report.changes}["public.clients"] == len(good)
    assert least.runtime().provider.list_scratch() == []


REVOKES = {
    # statement that takes one documented privilege away, the flow, what the message names
    "UPDATE on a table": ("REVOKE UPDATE ON clients FROM restorekit", "pc",
                          "UPDATE on public.clients"),
    "INSERT on a table": ("REVOKE INSERT ON appointments FROM restorekit", "ad",
                          "INSERT on public.appointments"),
    "SELECT on a table": ("REVOKE SELECT ON audit_log FROM restorekit", "pc",
                          "SELECT on public.audit_log"),
    "SELECT on a sequence": ("REVOKE SELECT ON SEQUENCE users_id_seq FROM restorekit", "ad",
                             "SELECT on sequence(s) public.users_id_seq"),
    "TEMPORARY on the database": ("REVOKE TEMPORARY ON DATABASE app FROM restorekit, PUBLIC",
                                  "ad", "TEMPORARY on database app"),
}
REGRANT = {
    "UPDATE on a table": "GRANT UPDATE ON clients TO restorekit",
    "INSERT on a table": "GRANT INSERT ON appointments TO restorekit",
    "SELECT on a table": "GRANT SELECT ON audit_log TO restorekit",
    "SELECT on a sequence": "GRANT SELECT ON SEQUENCE users_id_seq TO restorekit",
    "TEMPORARY on the database": "GRANT TEMPORARY ON DATABASE app TO restorekit, PUBLIC",
}


@pytest.mark.parametrize("case", list(REVOKES))
def test_a_role_missing_one_privilege_is_refused_before_any_side_effect(
    prefect_server: str, least: Any, case: str
) -> None:
    revoke, scenario, named = REVOKES[case]
    with as_superuser(least) as conn:
        point = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        if scenario == "ad":  # an accident the audit log records, for the scope step
            conn.execute("DELETE FROM users WHERE id = (SELECT max(id) FROM users)")
        conn.execute(revoke)
    try:
        before = untouched_state(least)
        with pytest.raises(MissingPrivileges) as info:
            if scenario == "pc":
                partial_corruption(PartialCorruptionParams(
                    target="production", config=str(least.config),
                    restore_point=point.isoformat(), require_approval=False,
                    incident_id=f"lp-missing-{len(case)}"))
            else:
                accidental_deletion(AccidentalDeletionParams(
                    target="production", config=str(least.config), require_approval=False,
                    restore_point=point.isoformat(), incident_id=f"lp-missing-{len(case)}"))
        message = str(info.value)
        assert named in message
        assert "GRANT " in message and "Nothing was changed" in message
        assert info.value.role == ROLE
        assert untouched_state(least) == before
    finally:
        with as_superuser(least) as conn:
            conn.execute(REGRANT[case])


def test_a_backup_without_replication_names_the_missing_attribute(
    prefect_server: str, least: Any
) -> None:
    from restorekit.errors import PgToolFailed

    rt = least.runtime()
    backups = len(rt.provider.list_backups())
    with as_superuser(least) as conn:
        conn.execute("ALTER ROLE restorekit NOREPLICATION")
    try:
        with pytest.raises(PgToolFailed, match="replication"):
            backup(BackupParams(target="production", config=str(least.config), label="norepl"))
    finally:
        with as_superuser(least) as conn:
            conn.execute("ALTER ROLE restorekit REPLICATION")
    assert len(rt.provider.list_backups()) == backups

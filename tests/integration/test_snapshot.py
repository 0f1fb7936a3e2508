"""Logical snapshots against a real PostgreSQL server and a local repository."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from restorekit.errors import (
    ChecksumMismatch,
    ConfigError,
    ObjectNotFound,
    PgToolFailed,
    RepositoryError,
    RestoreKitError,
    SafetyError,
)
from restorekit.pg.dsn import merge
from restorekit.pg.tools import PgTool, default_os_user
from restorekit.repository import ObjectInfo, Repository, open_repository
from restorekit.snapshot import (
    SnapshotInfo,
    delete_snapshot,
    list_snapshots,
    load_snapshot,
    new_snapshot_id,
    parse_table_name,
    referenced_tables,
    restore_snapshot,
    restore_snapshot_to_new_database,
    take_snapshot,
    verify_snapshot,
)

WEIRD = '"Weird; Name"'
ODD_SCHEMA_TABLE = '"Sales.Dept"."Ordres ünï ""q"""'
ALL_TABLES = ["public.parent", "public.child", f"public.{WEIRD}", ODD_SCHEMA_TABLE]


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return tmp_path / "repo"


@pytest.fixture
def repo(repo_dir: Path) -> Repository:
    return open_repository(str(repo_dir))


@pytest.fixture
def new_db(pg_server: str) -> Iterator[Callable[[], str]]:
    """Names for databases a test creates; all are dropped afterwards."""
    names: list[str] = []

    def make() -> str:
        names.append(f"r_{uuid.uuid4().hex[:12]}")
        return names[-1]

    yield make
    with psycopg.connect(pg_server, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def create_db(server: str, name: str) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return merge(server, dbname=name)


def seed(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('''
            CREATE TABLE parent (id serial PRIMARY KEY, name text NOT NULL);
            CREATE TABLE child (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                parent_id int NOT NULL REFERENCES parent(id),
                amount numeric(12, 2), note text);
            CREATE INDEX child_parent_idx ON child(parent_id);
            CREATE TABLE "Weird; Name" (id int PRIMARY KEY, "MixedCase" text, payload jsonb);
            CREATE SCHEMA "Sales.Dept";
            CREATE TABLE "Sales.Dept"."Ordres ünï ""q""" (id int PRIMARY KEY, ref text);
            INSERT INTO parent(name) SELECT 'p' || g FROM generate_series(1, 300) g;
            INSERT INTO child(parent_id, amount, note)
                SELECT 1 + g % 300, g * 1.25, repeat('x', g % 40) FROM generate_series(1, 3000) g;
            INSERT INTO "Weird; Name"
                SELECT g, 'Ünïcödé ' || g, jsonb_build_object('g', g, 'q', 'it''s')
                FROM generate_series(1, 500) g;
            INSERT INTO "Sales.Dept"."Ordres ünï ""q"""
                SELECT g, md5(g::text) FROM generate_series(1, 200) g;
        ''')


def fingerprint(dsn: str, tables: list[str]) -> dict[str, str | None]:
    """md5 of every row of each table in id order (None when the table does not exist)."""
    result: dict[str, str | None] = {}
    with psycopg.connect(dsn) as conn:
        for name in tables:
            schema, table = parse_table_name(name)
            ident = sql.Identifier(schema or "public", table)
            exists = conn.execute("SELECT to_regclass(%s)", [
                sql.SQL(".").join([sql.Identifier(schema or "public"), sql.Identifier(table)])
                .as_string(conn)]).fetchone()[0]
            if exists is None:
                result[name] = None
                continue
            query = sql.SQL("SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM {} t")
            result[name] = conn.execute(query.format(ident)).fetchone()[0]
    return result


def files_in(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


class RecordingRepository:
    """A repository wrapper that records calls and can fail on chosen ones."""

    def __init__(self, inner: Repository, *, fail_manifest: bool = False,
                 corrupt_verify: str | None = None) -> None:
        self.inner = inner
        self.url = inner.url
        self.calls: list[tuple[str, str]] = []
        self.fail_manifest = fail_manifest
        self.corrupt_verify = corrupt_verify

    def put_file(self, key: str, path: Path, *, progress=None) -> ObjectInfo:
        self.calls.append(("put", key))
        return self.inner.put_file(key, path, progress=progress)

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        self.calls.append(("put", key))
        if self.fail_manifest and key.endswith("snapshot.json"):
            raise RepositoryError("simulated crash before the manifest", retryable=True)
        return self.inner.put_bytes(key, data)

    def verify(self, key: str) -> ObjectInfo:
        self.calls.append(("verify", key))
        info = self.inner.verify(key)
        if self.corrupt_verify and key.endswith(self.corrupt_verify):
            raise ChecksumMismatch(f"simulated: {key} read back wrong")
        return info

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


# -- whole database --------------------------------------------------------------------------


def test_whole_database_snapshot_restores_identical_data(
    pg_dsn: str, pg_server: str, repo: Repository, new_db
) -> None:
    seed(pg_dsn)
    events: list[tuple[str, int, int | None]] = []
    info = take_snapshot(pg_dsn, repo, label="Before restore: ünï!", jobs=2,
                         progress=lambda phase, done, total: events.append((phase, done, total)))

    assert info.verified
    assert info.snapshot_id.endswith("-before-restore-uni")
    assert info.tables == ()
    assert info.location == f"{repo.url}/snapshots/{info.snapshot_id}/"
    assert info.size_bytes == sum(size for _, size, _ in info.objects) > 0
    keys = [key for key, _, _ in info.objects]
    assert f"snapshots/{info.snapshot_id}/toc.dat" in keys
    stored = {o.key: o for o in repo.list(f"snapshots/{info.snapshot_id}/")}
    assert set(stored) == {*keys, info.manifest_key}
    for key, size, sha in info.objects:
        assert (stored[key].size, stored[key].sha256) == (size, sha)

    uploads = [e for e in events if e[0] == "snapshot upload"]
    assert uploads[-1] == ("snapshot upload", info.size_bytes, info.size_bytes)
    assert [d for _, d, _ in uploads] == sorted(d for _, d, _ in uploads)

    assert SnapshotInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    assert list_snapshots(repo) == [info]
    assert load_snapshot(repo, info.snapshot_id) == info
    assert verify_snapshot(info, repo) == info

    name = new_db()
    downloads: list[tuple[str, int, int | None]] = []
    target = restore_snapshot_to_new_database(
        info, repo, pg_server, name, jobs=2,
        progress=lambda phase, done, total: downloads.append((phase, done, total)))
    assert downloads[-1] == ("snapshot download", info.size_bytes, info.size_bytes)
    assert fingerprint(target, ALL_TABLES) == fingerprint(pg_dsn, ALL_TABLES)
    assert None not in fingerprint(target, ALL_TABLES).values()
    with psycopg.connect(target) as conn:
        # Sequences, constraints and indexes come back too.
        assert conn.execute("SELECT last_value FROM parent_id_seq").fetchone() == (300,)
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
                            ).fetchone() == (1,)
        assert conn.execute("SELECT to_regclass('child_parent_idx') IS NOT NULL").fetchone()[0]

    with pytest.raises(ConfigError, match="already exists"):
        restore_snapshot_to_new_database(info, repo, pg_server, name)


def test_restore_in_place_with_clean_replaces_changed_rows(
    pg_dsn: str, repo: Repository
) -> None:
    seed(pg_dsn)
    before = fingerprint(pg_dsn, ALL_TABLES)
    # The tools may run as another OS user (postgres, when we are root): temp dirs follow.
    tool = PgTool(os_user=default_os_user())
    info = take_snapshot(pg_dsn, repo, label="pre-deploy", tool=tool)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute('DELETE FROM child WHERE id % 2 = 0; UPDATE "Weird; Name" SET payload = NULL')
    assert fingerprint(pg_dsn, ALL_TABLES) != before

    restore_snapshot(info, repo, pg_dsn, clean=True, jobs=2, tool=tool)
    assert fingerprint(pg_dsn, ALL_TABLES) == before

    delete_snapshot(repo, info.snapshot_id)
    assert list_snapshots(repo) == [] and repo.list("") == []


# -- table subsets -------------------------------------------------------------------------------


def test_table_subset_with_awkward_names(
    pg_dsn: str, pg_server: str, repo: Repository, new_db
) -> None:
    seed(pg_dsn)
    info = take_snapshot(pg_dsn, repo, label="subset",
                         tables=[WEIRD, "CHILD", ODD_SCHEMA_TABLE, "public.child"])
    assert info.tables == ('public."Weird; Name"', "public.child", ODD_SCHEMA_TABLE)

    target = restore_snapshot_to_new_database(info, repo, pg_server, new_db())
    got = fingerprint(target, ALL_TABLES)
    want = fingerprint(pg_dsn, ALL_TABLES)
    assert got["public.parent"] is None  # not in the snapshot
    for table in ("public.child", f"public.{WEIRD}", ODD_SCHEMA_TABLE):
        assert got[table] == want[table] is not None
    with psycopg.connect(target) as conn:
        # The foreign key to the table left out is skipped; the primary keys are there.
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
                            ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'p' "
                            "AND connamespace <> 'pg_catalog'::regnamespace").fetchone() == (3,)


def test_restore_only_some_tables_of_a_whole_snapshot(
    pg_dsn: str, pg_server: str, repo: Repository, new_db
) -> None:
    seed(pg_dsn)
    info = take_snapshot(pg_dsn, repo)

    target = restore_snapshot_to_new_database(info, repo, pg_server, new_db(),
                                              tables=[WEIRD, "parent", "child"])
    got = fingerprint(target, ALL_TABLES)
    want = fingerprint(pg_dsn, ALL_TABLES)
    assert got[ODD_SCHEMA_TABLE] is None
    for table in ("public.parent", "public.child", f"public.{WEIRD}"):
        assert got[table] == want[table]
    with psycopg.connect(target) as conn:
        # parent and child both restored: the foreign key between them comes along.
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
                            ).fetchone() == (1,)
        assert conn.execute("SELECT nextval('parent_id_seq')").fetchone() == (301,)

    with pytest.raises(ConfigError, match="does not hold"):
        restore_snapshot_to_new_database(info, repo, pg_server, new_db(), tables=["nope"])


def test_unknown_table_is_refused_before_anything_is_written(
    pg_dsn: str, repo: Repository, repo_dir: Path
) -> None:
    seed(pg_dsn)
    with pytest.raises(ConfigError) as caught:
        take_snapshot(pg_dsn, repo, tables=["parent", "nope", '"Weird; name"'])
    message = str(caught.value)
    assert "'nope'" in message and "'\"Weird; name\"'" in message
    assert 'did you mean public."Weird; Name"' in message
    with pytest.raises(ConfigError, match="quote names"):
        take_snapshot(pg_dsn, repo, tables=["Weird; Name"])
    with pytest.raises(ConfigError, match="is a index|is an index"):
        take_snapshot(pg_dsn, repo, tables=["child_parent_idx"])
    assert files_in(repo_dir) == []
    assert list_snapshots(repo) == []


# -- damage and interruptions ------------------------------------------------------------------


def test_flipped_byte_fails_restore_and_leaves_target_untouched(
    pg_dsn: str, pg_server: str, repo: Repository, repo_dir: Path, new_db
) -> None:
    seed(pg_dsn)
    info = take_snapshot(pg_dsn, repo)
    target = create_db(pg_server, new_db())
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("CREATE TABLE sentinel (v text); INSERT INTO sentinel VALUES ('untouched')")

    key, _, _ = max(info.objects, key=lambda o: o[1])
    stored = repo_dir / key
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))

    work = repo_dir.parent / "work"
    with pytest.raises(ChecksumMismatch) as caught:
        restore_snapshot(info, repo, target, clean=True, work_dir=work)
    assert list(work.iterdir()) == []  # the partial download is gone
    assert info.snapshot_id in str(caught.value) and key in str(caught.value)
    assert "nothing was restored" in str(caught.value)
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT v FROM sentinel").fetchall() == [("untouched",)]
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                            ).fetchone() == (1,)
    with pytest.raises(ChecksumMismatch):
        restore_snapshot_to_new_database(info, repo, pg_server, "never_created")
    with psycopg.connect(pg_server) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'never_created'"
                            ).fetchone() == (0,)
    with pytest.raises(SafetyError):
        verify_snapshot(info, repo)


def test_manifest_is_written_last(pg_dsn: str, repo: Repository) -> None:
    seed(pg_dsn)
    recording = RecordingRepository(repo)
    info = take_snapshot(pg_dsn, recording)
    calls = recording.calls
    assert calls[-1] == ("put", info.manifest_key)
    verified = {key for op, key in calls if op == "verify"}
    assert verified == {key for key, _, _ in info.objects}
    # every object was read back before the manifest was written
    assert max(i for i, (op, _) in enumerate(calls) if op == "verify") < len(calls) - 1


def test_interrupted_snapshot_is_never_listed(
    pg_dsn: str, repo: Repository, repo_dir: Path
) -> None:
    seed(pg_dsn)
    with pytest.raises(RepositoryError, match="simulated crash"):
        take_snapshot(pg_dsn, RecordingRepository(repo, fail_manifest=True))
    assert list_snapshots(repo) == []
    assert files_in(repo_dir) == []  # the unusable objects were removed again

    # A process killed before the manifest leaves objects without it: still not a snapshot.
    info = take_snapshot(pg_dsn, repo)
    (repo_dir / info.manifest_key).unlink()
    assert list_snapshots(repo) == []
    with pytest.raises(ObjectNotFound, match="no complete snapshot"):
        load_snapshot(repo, info.snapshot_id)


def test_read_back_failure_is_a_safety_error(
    pg_dsn: str, repo: Repository, tmp_path: Path
) -> None:
    seed(pg_dsn)
    with pytest.raises(SafetyError, match="snapshot could not be verified; nothing destructive"):
        take_snapshot(pg_dsn, RecordingRepository(repo, corrupt_verify="toc.dat"),
                      work_dir=tmp_path / "work")
    assert list((tmp_path / "work").iterdir()) == []
    assert list_snapshots(repo) == []
    assert repo.list("") == []


# -- secrets -----------------------------------------------------------------------------------


def test_passwords_never_reach_errors_or_manifests(
    pg_dsn: str, pg_server: str, repo: Repository, repo_dir: Path
) -> None:
    seed(pg_dsn)
    secret = "s3cr3t-Pa55word"
    # The test server trusts loopback, so the password is accepted and ignored.
    info = take_snapshot(merge(pg_dsn, password=secret), repo)
    subset = take_snapshot(merge(pg_dsn, password=secret), repo, tables=["parent"])
    for snap in (info, subset):
        assert secret not in json.dumps(snap.to_dict())
        assert "***" in snap.database
    assert all(secret not in p.read_text(errors="replace") for p in files_in(repo_dir)
               if p.name.endswith(".json"))

    missing_db = merge(pg_server, dbname=f"missing_{uuid.uuid4().hex[:8]}", password=secret)
    with pytest.raises(PgToolFailed) as caught:
        restore_snapshot(info, repo, missing_db)
    exc = caught.value
    assert "does not exist" in str(exc)
    for text in (str(exc), repr(exc), " ".join(exc.argv), exc.stderr_tail):
        assert secret not in text
    # A table-level restore connects first (to create missing schemas): same rule.
    with pytest.raises(RestoreKitError) as caught_subset:
        restore_snapshot(subset, repo, missing_db)
    assert "does not exist" in str(caught_subset.value)
    assert secret not in str(caught_subset.value)


# -- pure helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("orders", (None, "orders")),
    ("Public.Orders", ("public", "orders")),
    ('"Weird; Name"', (None, "Weird; Name")),
    ('public."a.b"', ("public", "a.b")),
    ('"Sales.Dept"."x ""y"""', ("Sales.Dept", 'x "y"')),
    (' s . "T" ', ("s", "T")),
    ("ünï", (None, "ünï")),
])
def test_parse_table_name(text: str, expected: tuple[str | None, str]) -> None:
    assert parse_table_name(text) == expected


@pytest.mark.parametrize("text", ["", "Weird; Name", '"open', "a.b.c", '""', "a..b", "a."])
def test_parse_table_name_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_table_name(text)


def test_referenced_tables_reads_quoted_names() -> None:
    script = '''
    SET statement_timeout = 0;
    -- Name: x; Type: FK CONSTRAINT; REFERENCES in a comment
    ALTER TABLE ONLY public."a; b"
        ADD CONSTRAINT "c REFERENCES d" FOREIGN KEY (p) REFERENCES "Sales.Dept"."x ""y"""(id);
    ALTER TABLE ONLY public.child ADD CONSTRAINT f FOREIGN KEY (p) REFERENCES Public.Parent(id);
    '''
    assert referenced_tables(script) == [("Sales.Dept", 'x "y"'), ("public", "parent")]


def test_snapshot_ids_sort_by_time_and_reject_garbage(repo: Repository) -> None:
    from datetime import UTC, datetime

    early = new_snapshot_id("b", now=datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC))
    late = new_snapshot_id("a", now=datetime(2026, 1, 2, 3, 4, 5, 7000, tzinfo=UTC))
    assert early == "20260102T030405.006Z-b" and early < late
    with pytest.raises(ConfigError):
        load_snapshot(repo, "../../etc")
    with pytest.raises(ConfigError):
        SnapshotInfo.from_dict({"snapshot_id": "x"})

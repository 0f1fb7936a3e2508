"""Storage faults injected for real (issue #7): an S3 repository that answers 500, stops
answering or hangs (takes the request, never answers), a repository disk that is full, a WAL
segment missing from the archive, and backup objects that were truncated or had a byte flipped.

The S3 repository is moto's server behind :class:`_faults.FaultProxy`; the installation is the
demo's (a production cluster archiving WAL into that repository, sample data, the local app),
and the scenario flows run against a real Prefect server. For every fault, the production
database's table checksums are taken before and compared after; then the fault is removed and
the same operation (the same incident id for flows) is run again and completes.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fixtures.pg import segment_bytes
from reliability._faults import (
    DOWN,
    FaultProxy,
    archiving_with_env,
    assert_no_secret,
    build_s3_world,
    checksums,
    delete_users,
    files_under,
    mount_tmpfs,
    postgres_under,
    remount_tmpfs,
    unmount,
    without_audit,
)

from flows.accidental_deletion import AccidentalDeletionParams, accidental_deletion
from flows.complete_failure import CompleteFailureParams, complete_failure
from flows.partial_corruption import PartialCorruptionParams, partial_corruption
from restorekit.demo import Installation, teardown_installation
from restorekit.engines.native import NativeEngine
from restorekit.errors import ChecksumMismatch, RepositoryError, RestorePointError
from restorekit.health import check_health
from restorekit.models import RestorePoint, parse_lsn
from restorekit.pg.cluster import switch_wal_and_wait_archived
from restorekit.pg.tools import default_os_user, make_dir
from restorekit.repository import LocalRepository, open_repository
from restorekit.sinks.envfile import EnvFileStore
from restorekit.snapshot import list_snapshots, take_snapshot
from restorekit.walscan import segment_name
from tasks.database import restore_name

pytestmark = pytest.mark.slow

AWS_SECRET = "testing"  # the moto fixture's AWS_SECRET_ACCESS_KEY / AWS_ACCESS_KEY_ID
READ_TIMEOUT = "RESTOREKIT_S3_READ_TIMEOUT"


@dataclass
class S3World:
    inst: Installation
    proxy: FaultProxy
    bucket: str
    repo_url: str
    s3: object  # a boto3 client straight to moto (no proxy): to inspect and tamper

    def keys(self, prefix: str) -> list[str]:
        out = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"repo/{prefix}")  # type: ignore[attr-defined]
        return sorted(o["Key"].removeprefix("repo/") for o in out.get("Contents", []))

    def provider(self):  # type: ignore[no-untyped-def]
        return self.inst.runtime().provider

    def scratch(self) -> list[object]:
        return list(self.provider().list_scratch())


@contextlib.contextmanager
def _installation_on_s3(s3: Any, proxy: FaultProxy, base: Path, suffix: str
                        ) -> Iterator[S3World]:
    """An installation whose repository is a new bucket reached through ``proxy``, its app
    started; at the end the proxy is healed and the installation torn down."""
    bucket = f"rk-faults{suffix}-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    repo_url = f"s3://{bucket}/repo?endpoint_url={proxy.url}&region=us-east-1"
    inst = build_s3_world(base / f"s3-faults{suffix}-{time.monotonic_ns()}", repo_url)
    rt = inst.runtime()
    assert rt.app is not None
    rt.app.start()  # type: ignore[attr-defined]
    try:
        yield S3World(inst=inst, proxy=proxy, bucket=bucket, repo_url=repo_url, s3=s3)
    finally:
        proxy.heal()
        teardown_installation(inst)


@pytest.fixture(scope="module")
def s3_world(moto_server: str, pg_base_dir: Path) -> Iterator[S3World]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    proxy = FaultProxy(moto_server).start()
    try:
        with _installation_on_s3(s3, proxy, pg_base_dir, "") as world:
            yield world
    finally:
        proxy.down()


@pytest.fixture(autouse=True)
def _healed(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in ("s3_world", "cf_world"):  # cf_world shares s3_world's proxy
        if name in request.fixturenames:
            request.getfixturevalue(name).proxy.heal()


def _production_unharmed(world: S3World, before: dict[str, str]) -> None:
    assert checksums(world.inst.app_dsn) == before
    provider = world.provider()
    assert list(provider.list_scratch()) == []
    assert postgres_under(provider.restore_root) == []


# -- base backup -----------------------------------------------------------------------------------


def test_transient_s3_500s_during_a_base_backup_are_retried_and_the_backup_counts(
    s3_world: S3World,
) -> None:
    world = s3_world
    provider = world.provider()
    before = len(provider.list_backups())
    world.proxy.fail(2, method="PUT", path=r"/backups/")

    backup = provider.create_backup("through 500s")

    assert world.proxy.failures() == 2  # botocore's retries went through them
    backups = [b.backup_id for b in provider.list_backups()]
    assert backups[-1] == backup.backup_id and len(backups) == before + 1
    repo = open_repository(world.repo_url)
    for name in backup.extra["objects"]:
        repo.verify(f"backups/{backup.backup_id}/{name}")


def test_s3_answering_500_mid_backup_fails_clearly_and_leaves_no_partial_backup(
    s3_world: S3World,
) -> None:
    world = s3_world
    provider = world.provider()
    before = checksums(world.inst.app_dsn)
    backups_before = [b.backup_id for b in provider.list_backups()]
    keys_before = world.keys("backups/")
    # backup_manifest is stored (and read back), then every PUT of base.tar answers 500.
    world.proxy.fail(None, method="PUT", path=r"base\.tar")

    with pytest.raises(RepositoryError) as failed:
        provider.create_backup("doomed")

    message = str(failed.value)
    assert "base backup" in message and "NOT stored" in message  # what
    assert "base.tar" in message and world.repo_url in message  # which object, which repository
    assert "no backup was recorded" in message and "removed" in message  # state
    assert "source database was not changed" in message
    assert "run the backup again" in message  # next step
    assert_no_secret(message, AWS_SECRET)
    assert failed.value.is_retryable  # 5xx: worth trying again later
    assert world.keys("backups/") == keys_before  # not even the manifest of the partial one
    assert [b.backup_id for b in provider.list_backups()] == backups_before
    _production_unharmed(world, before)

    world.proxy.heal()
    again = provider.create_backup("after the outage")
    assert [b.backup_id for b in provider.list_backups()][-1] == again.backup_id


# -- WAL archiving ---------------------------------------------------------------------------------


def _archiver(dsn: str) -> tuple[int, str | None, str | None]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT failed_count, last_failed_wal, last_archived_wal "
                           "FROM pg_stat_archiver").fetchone()
    assert row is not None
    return int(row[0]), row[1], row[2]


def _archive_drained(world: S3World) -> None:
    """Archive the current segment and wait until nothing else is pending (e.g. a backup's
    .backup history file, archived after its segment), so the first file the archiver fails on
    during an outage is the segment the test switches to."""
    switch_wal_and_wait_archived(world.inst.app_dsn, timeout=120)
    pending = world.inst.production.data_dir / "pg_wal" / "archive_status"
    deadline = time.monotonic() + 120
    while list(pending.glob("*.ready")):
        assert time.monotonic() < deadline, sorted(p.name for p in pending.glob("*.ready"))
        time.sleep(0.05)


def _restorable(world: S3World, segment: str, email: str, *, name: str) -> None:
    """``segment`` is whole in the archive, and a restore to 'latest' holds the row ``email``."""
    assert (open_repository(world.repo_url).verify(f"wal/{segment}").size
            == segment_bytes(world.inst.app_dsn))
    provider = world.provider()
    restored = provider.restore(RestorePoint.latest(), name=name)
    try:
        with psycopg.connect(restored.dsn.get_secret_value()) as conn:
            assert conn.execute("SELECT count(*) FROM users WHERE email = %s",
                                (email,)).fetchone() == (1,)
    finally:
        provider.discard(restored)


def test_wal_is_kept_while_s3_is_down_and_the_archive_catches_up(s3_world: S3World) -> None:
    world = s3_world
    prod = world.inst.production
    _archive_drained(world)
    failed_before, _, _ = _archiver(world.inst.app_dsn)
    world.proxy.down()
    with psycopg.connect(world.inst.app_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO users (name, email) "
                     "VALUES ('during-outage', 'outage@example.com')")
        segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    deadline = time.monotonic() + 120
    while _archiver(world.inst.app_dsn)[0] == failed_before:  # archive_command exits non-zero
        assert time.monotonic() < deadline, prod.log_tail()
        time.sleep(0.2)
    failed, last_failed, _ = _archiver(world.inst.app_dsn)
    assert last_failed == segment
    # PostgreSQL keeps the segment and its .ready marker: nothing is lost, it will retry.
    assert (prod.data_dir / "pg_wal" / segment).exists()
    assert (prod.data_dir / "pg_wal" / "archive_status" / f"{segment}.ready").exists()
    assert f"wal/{segment}" not in world.keys("wal/")
    log = prod.log_file.read_text(errors="replace")
    assert f"restorekit.wal: push {segment} failed" in log and world.repo_url in log
    assert_no_secret(log, AWS_SECRET)

    world.proxy.heal()
    with psycopg.connect(world.inst.app_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO users (name, email) VALUES ('after-outage', 'back@example.com')")
    switch_wal_and_wait_archived(world.inst.app_dsn, timeout=120)

    # The row written during the outage is restorable: the WAL made it.
    _restorable(world, segment, "outage@example.com", name="after-outage")


# -- an S3 that hangs (takes the request, never answers) -------------------------------------------


def _attempts() -> int:
    return int(os.environ.get("AWS_MAX_ATTEMPTS", "5"))


def test_a_hanging_s3_call_fails_after_the_read_timeout_per_attempt_and_a_short_one_is_ridden_out(
    s3_world: S3World, monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = s3_world
    monkeypatch.setenv(READ_TIMEOUT, "1")
    attempts = _attempts()
    repo = open_repository(world.repo_url)
    backup_id = world.provider().list_backups()[-1].backup_id
    key = f"backups/{backup_id}/backup.json"
    # Only this backup's requests hang: the WAL archiver may push a segment meanwhile, and its
    # hung request would be counted as one of this call's attempts.
    world.proxy.hang(None, path=f"/backups/{backup_id}/")

    started = time.monotonic()
    with pytest.raises(RepositoryError) as failed:
        repo.stat(key)
    took = time.monotonic() - started

    # Every attempt was taken and left hanging (not refused), and each waited the knob's 1 s:
    # about 3 s in all with AWS_MAX_ATTEMPTS=3, where the default 120 s would wait 6 minutes.
    assert world.proxy.hangs() == attempts
    assert attempts * 1.0 <= took < attempts * 1.0 + 2 ** attempts + 5, took
    message = str(failed.value)
    assert f"S3 stat of {key!r} in {world.repo_url} timed out talking to the repository" in message
    assert "nothing came back for 1 s" in message  # how long each attempt waited
    assert f"each request is tried {attempts} times" in message
    assert READ_TIMEOUT in message  # the knob, named where the operator needs it
    assert_no_secret(message, AWS_SECRET)
    assert failed.value.is_retryable  # a hang may pass: worth trying again later

    world.proxy.heal()
    world.proxy.hang(attempts - 1, path=f"/backups/{backup_id}/")  # fewer than the attempts
    assert repo.stat(key).key == key
    assert world.proxy.hangs() == attempts - 1


def test_a_base_backup_while_s3_hangs_fails_in_bounded_time_and_leaves_no_partial_backup(
    s3_world: S3World, monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = s3_world
    monkeypatch.setenv(READ_TIMEOUT, "1")
    provider = world.provider()  # made with the 1 s read timeout
    before = checksums(world.inst.app_dsn)
    backups_before = [b.backup_id for b in provider.list_backups()]
    keys_before = world.keys("backups/")
    # backup_manifest is stored (and read back), then every PUT of base.tar (its multipart
    # parts) is taken and never answered.
    world.proxy.hang(None, method="PUT", path=r"base\.tar")

    started = time.monotonic()
    with pytest.raises(RepositoryError) as failed:
        provider.create_backup("hung")
    took = time.monotonic() - started

    # pg_basebackup, the manifest's upload and the hung parts (in parallel), all in seconds;
    # with the default read timeout the same hang costs at least attempts x 120 s.
    assert took < 60, took
    assert world.proxy.hangs() >= _attempts()
    message = str(failed.value)
    assert "base backup" in message and "NOT stored" in message  # what
    assert "timed out talking to the repository" in message  # why
    assert "nothing came back for 1 s" in message
    assert "base.tar" in message and world.repo_url in message  # which object, which repository
    assert "no backup was recorded" in message and "removed" in message  # state
    assert "source database was not changed" in message
    assert "run the backup again" in message  # next step
    assert_no_secret(message, AWS_SECRET)
    assert failed.value.is_retryable
    assert world.keys("backups/") == keys_before  # not even the manifest of the partial one
    uploads = world.s3.list_multipart_uploads(  # type: ignore[attr-defined]
        Bucket=world.bucket, Prefix="repo/backups/").get("Uploads", [])
    assert uploads == []  # no abandoned multipart upload keeps billing storage
    assert [b.backup_id for b in provider.list_backups()] == backups_before
    _production_unharmed(world, before)

    world.proxy.heal()
    monkeypatch.delenv(READ_TIMEOUT)
    provider = world.provider()  # the default read timeout again
    again = provider.create_backup("after the hang")
    assert [b.backup_id for b in provider.list_backups()][-1] == again.backup_id


def _segment_number(name: str) -> tuple[str, int]:
    """(timeline, position) of a WAL segment name with 16 MiB segments."""
    return name[:8], int(name[8:16], 16) * 0x100 + int(name[16:24], 16)


def test_wal_is_kept_while_s3_hangs_and_the_archive_catches_up_without_a_gap(
    s3_world: S3World,
) -> None:
    world = s3_world
    prod = world.inst.production
    pending = prod.data_dir / "pg_wal" / "archive_status"
    # The archiver's environment was fixed when PostgreSQL started: the knob goes into its
    # archive_command, as an operator would set it for the service.
    with archiving_with_env(world.inst, {READ_TIMEOUT: "1"}):
        _archive_drained(world)
        failed_before, _, first = _archiver(world.inst.app_dsn)
        assert first is not None
        world.proxy.hang(None)
        with psycopg.connect(world.inst.app_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO users (name, email) "
                         "VALUES ('during-hang', 'hang@example.com')")
            segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
        started = time.monotonic()
        deadline = started + 60  # the default 120 s x attempts would not fail within this
        while _archiver(world.inst.app_dsn)[0] == failed_before:
            assert time.monotonic() < deadline, prod.log_tail()
            time.sleep(0.2)
        took = time.monotonic() - started
        _, last_failed, _ = _archiver(world.inst.app_dsn)
        assert last_failed == segment
        assert took < 30, took
        # PostgreSQL keeps the segment and its .ready marker: nothing is lost, it will retry.
        assert (prod.data_dir / "pg_wal" / segment).exists()
        assert (pending / f"{segment}.ready").exists()
        assert world.proxy.hangs() >= _attempts()
        assert f"wal/{segment}" not in world.keys("wal/")
        log = prod.log_file.read_text(errors="replace")
        said = [line for line in log.splitlines()
                if f"restorekit.wal: push {segment} failed" in line]
        assert said and all("timed out talking to the repository" in line
                            and "for 1 s" in line and world.repo_url in line for line in said)
        assert_no_secret(log, AWS_SECRET)

        world.proxy.heal()  # the hung requests are dropped; botocore's retries go through
        with psycopg.connect(world.inst.app_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO users (name, email) "
                         "VALUES ('after-hang', 'unhung@example.com')")
        last = switch_wal_and_wait_archived(world.inst.app_dsn, timeout=120)

    # No gap: every segment from the last one archived before the hang to the newest is there.
    timeline, low = _segment_number(first)
    _, high = _segment_number(last)
    archived = {_segment_number(k.removeprefix("wal/")) for k in world.keys("wal/")
                if len(k) == len("wal/") + 24}
    missing = [n for n in range(low, high + 1) if (timeline, n) not in archived]
    assert high > low and missing == [], missing
    # The row written during the hang is restorable: its WAL made it.
    _restorable(world, segment, "hang@example.com", name="after-hang")


# -- snapshots -------------------------------------------------------------------------------------


def test_a_snapshot_during_an_s3_outage_fails_clearly_and_a_rerun_succeeds(
    s3_world: S3World,
) -> None:
    world = s3_world
    before = checksums(world.inst.app_dsn)
    repo = open_repository(world.repo_url)
    snapshots_before = world.keys("snapshots/")
    world.proxy.down()

    with pytest.raises(RepositoryError) as failed:
        take_snapshot(world.inst.app_dsn, repo, label="outage", tables=["users"])

    message = str(failed.value)
    assert "snapshot" in message and "NOT taken" in message  # what
    assert world.repo_url in message  # where
    assert "no snapshot was recorded" in message and "database was not changed" in message
    assert "nothing destructive may run" in message and "run again" in message
    assert_no_secret(message, AWS_SECRET)
    world.proxy.heal()
    assert world.keys("snapshots/") == snapshots_before
    _production_unharmed(world, before)

    world.proxy.fail(2, method="PUT", path=r"/snapshots/")  # transient now: retried
    info = take_snapshot(world.inst.app_dsn, repo, label="outage", tables=["users"])
    assert info.verified and world.proxy.failures() == 2
    assert info.snapshot_id in {s.snapshot_id for s in list_snapshots(repo)}


# -- restore ---------------------------------------------------------------------------------------


def _delete_users(world: S3World, n: int) -> tuple[list[int], str]:
    deleted = delete_users(world.inst.app_dsn, n)
    world.inst.wait_archived()
    return deleted


def test_transient_500s_during_a_scenario_restore_are_retried(
    prefect_server: str, s3_world: S3World,
) -> None:
    world = s3_world
    intact = checksums(world.inst.app_dsn)
    victims, since = _delete_users(world, 3)
    # Fewer failures than botocore's attempts (AWS_MAX_ATTEMPTS, 3 in tests/conftest.py).
    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", "5"))
    world.proxy.fail(attempts - 1, method="GET", path=r"/base\.tar(\.[a-z0-9]+)?$")

    report = accidental_deletion(AccidentalDeletionParams(
        target="production", config=str(world.inst.config), require_approval=False,
        incident_id="faults-s3-transient", deleted_since=since))

    assert report.outcome == "succeeded", report.error
    assert world.proxy.failures() == attempts - 1
    # As the flow meant: every row is back; only the audit log remembers the deletion.
    assert without_audit(checksums(world.inst.app_dsn)) == without_audit(intact)
    assert world.scratch() == []


def test_s3_failing_during_a_scenario_restore_fails_the_flow_and_a_rerun_completes(
    prefect_server: str, s3_world: S3World,
) -> None:
    world = s3_world
    intact = checksums(world.inst.app_dsn)
    victims, since = _delete_users(world, 2)
    broken = checksums(world.inst.app_dsn)
    params = AccidentalDeletionParams(
        target="production", config=str(world.inst.config), require_approval=False,
        incident_id="faults-s3-restore", deleted_since=since)
    world.proxy.fail(None, method="GET", path=r"/base\.tar(\.[a-z0-9]+)?$")

    with pytest.raises(RepositoryError) as failed:
        accidental_deletion(params)

    message = str(failed.value)
    assert "restoring base backup" in message and "base.tar" in message  # what
    assert world.repo_url in message and "HTTP 500" in message  # where, why
    assert "nothing was started" in message and "source was not touched" in message  # state
    assert "restore again" in message  # next
    assert_no_secret(message, AWS_SECRET)
    _production_unharmed(world, broken)  # the flow changed nothing

    world.proxy.heal()
    report = accidental_deletion(params)
    assert report.outcome == "succeeded", report.error
    assert without_audit(checksums(world.inst.app_dsn)) == without_audit(intact)
    assert world.scratch() == []


def test_s3_failing_during_wal_replay_stops_recovery_without_promoting(
    s3_world: S3World,
) -> None:
    world = s3_world
    provider = world.provider()
    window = provider.restore_window()
    world.proxy.fail(None, method="GET", path=r"/wal/[0-9A-F]{24}$")

    with pytest.raises(RepositoryError) as failed:
        provider.restore(RestorePoint.latest(), name="wal-outage", window=window)

    message = str(failed.value)
    assert "WAL replay stopped" in message and "fetching" in message  # what
    assert world.repo_url in message  # where
    assert "without being promoted" in message and "restore again" in message  # state, next
    assert not (provider.restore_root / "wal-outage").exists()
    assert postgres_under(provider.restore_root) == []


# -- damaged objects -------------------------------------------------------------------------------


def test_a_truncated_base_backup_is_refused_and_other_backups_still_restore(
    s3_world: S3World,
) -> None:
    world = s3_world
    provider = world.provider()
    if len(provider.list_backups()) < 2:  # the installation's one, and one to fall back to
        provider.create_backup("second")
    backups = provider.list_backups()
    newest = backups[-1]
    key = world.s3.list_objects_v2(  # type: ignore[attr-defined]
        Bucket=world.bucket,
        Prefix=f"repo/backups/{newest.backup_id}/base.tar")["Contents"][0]["Key"]
    original = world.s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()  # type: ignore[attr-defined]
    world.s3.put_object(Bucket=world.bucket, Key=key, Body=original[: len(original) // 2])  # type: ignore[attr-defined]
    try:
        with pytest.raises(ChecksumMismatch) as failed:
            provider.restore(RestorePoint.parse(f"backup:{newest.backup_id}"), name="truncated")
        message = str(failed.value)
        assert f"backups/{newest.backup_id}/base.tar" in message
        assert "nothing was started" in message
        assert f"backup:{backups[-2].backup_id}" in message  # the way out
        assert not (provider.restore_root / "truncated").exists()
        assert postgres_under(provider.restore_root) == []

        older = provider.restore(RestorePoint.parse(f"backup:{backups[-2].backup_id}"),
                                 name="older-backup")
        try:
            with psycopg.connect(older.dsn.get_secret_value()) as conn:
                assert conn.execute("SELECT count(*) FROM users").fetchone()[0] > 0
        finally:
            provider.discard(older)
    finally:
        world.s3.put_object(Bucket=world.bucket, Key=key, Body=original)  # type: ignore[attr-defined]


def test_a_flipped_byte_in_archived_wal_stops_recovery_naming_the_segment(
    s3_world: S3World,
) -> None:
    world = s3_world
    provider = world.provider()
    backup = provider.list_backups()[-1]
    segment = segment_name(backup.timeline, parse_lsn(backup.start_lsn),
                           segment_bytes(world.inst.app_dsn))
    key = f"repo/wal/{segment}"
    original = world.s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()  # type: ignore[attr-defined]
    flipped = bytearray(original)
    flipped[len(flipped) // 3] ^= 0x40
    world.s3.put_object(Bucket=world.bucket, Key=key, Body=bytes(flipped))  # type: ignore[attr-defined]
    try:
        with pytest.raises(ChecksumMismatch) as failed:
            provider.restore(RestorePoint.latest(), name="flipped-wal")
        message = str(failed.value)
        assert segment in message and "checksum mismatch" in message
        assert "without being promoted" in message
        assert not (provider.restore_root / "flipped-wal").exists()
        assert postgres_under(provider.restore_root) == []
    finally:
        world.s3.put_object(Bucket=world.bucket, Key=key, Body=original)  # type: ignore[attr-defined]


# -- a WAL segment missing from the archive --------------------------------------------------------


def test_a_missing_wal_segment_fails_the_scenario_naming_it_and_a_rerun_completes(
    prefect_server: str, s3_world: S3World,
) -> None:
    world = s3_world
    with psycopg.connect(world.inst.app_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO users (name, email) VALUES ('in-the-gap', 'gap@example.com')")
    gap = switch_wal_and_wait_archived(world.inst.app_dsn)
    intact = checksums(world.inst.app_dsn)
    victims, since = _delete_users(world, 2)
    broken = checksums(world.inst.app_dsn)
    key = f"repo/wal/{gap}"
    original = world.s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()  # type: ignore[attr-defined]
    world.s3.delete_object(Bucket=world.bucket, Key=key)  # type: ignore[attr-defined]
    params = AccidentalDeletionParams(
        target="production", config=str(world.inst.config), require_approval=False,
        incident_id="faults-wal-gap", deleted_since=since)
    try:
        with pytest.raises(RestorePointError) as failed:
            accidental_deletion(params)
        message = str(failed.value)
        assert f"WAL segment {gap} is not in the archive" in message  # what is missing
        assert "last reachable point is LSN" in message  # how far it gets
        assert "Nothing was promoted" in message  # state
        assert "earlier restore point" in message and "put the missing WAL back" in message
        _production_unharmed(world, broken)

        # 'latest' across the gap would silently stop at it: refused before anything starts.
        provider = world.provider()
        with pytest.raises(RestorePointError) as latest:
            provider.restore(RestorePoint.latest(), name="latest-over-gap")
        assert f"segment {gap} is missing" in str(latest.value)
        assert "silently lose" in str(latest.value) and "Nothing was started" in str(latest.value)
        assert not (provider.restore_root / "latest-over-gap").exists()
    finally:
        world.s3.put_object(Bucket=world.bucket, Key=key, Body=original)  # type: ignore[attr-defined]
    # The record is still there (the object alone was removed), so the put-back is complete.
    open_repository(world.repo_url).verify(f"wal/{gap}")

    report = accidental_deletion(params)
    assert report.outcome == "succeeded", report.error
    assert without_audit(checksums(world.inst.app_dsn)) == without_audit(intact)


# -- a snapshot step failing inside a scenario -----------------------------------------------------


def test_a_failing_snapshot_stops_partial_corruption_before_any_repair(
    prefect_server: str, s3_world: S3World,
) -> None:
    world = s3_world
    with psycopg.connect(world.inst.app_dsn, autocommit=True) as conn:
        intact = checksums(world.inst.app_dsn)
        time.sleep(0.1)
        point = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(0.1)
        conn.execute("UPDATE clients SET email = 'corrupted' WHERE id % 7 = 0")
    world.inst.wait_archived()
    broken = checksums(world.inst.app_dsn)
    params = PartialCorruptionParams(
        target="production", config=str(world.inst.config), require_approval=False,
        restore_point=point.isoformat(), tables=["clients"], incident_id="faults-pc-snapshot")
    world.proxy.fail(None, method="PUT", path=r"/snapshots/")

    with pytest.raises(RepositoryError) as failed:
        partial_corruption(params)

    message = str(failed.value)
    assert "NOT taken" in message and "nothing destructive may run" in message
    assert world.repo_url in message and "run again" in message
    assert checksums(world.inst.app_dsn) == broken  # no repair ran without the snapshot
    assert postgres_under(world.provider().restore_root)  # the scratch copy is kept for the re-run

    world.proxy.heal()
    report = partial_corruption(params)
    assert report.outcome == "succeeded", report.error
    assert checksums(world.inst.app_dsn)["public.clients"] == intact["public.clients"]
    assert world.scratch() == []


# -- a full repository disk ------------------------------------------------------------------------


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "tiny"
    root.mkdir()
    try:
        mount_tmpfs(root, "16k")
    except RuntimeError as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount rights): {exc}")
    try:
        make_dir(root, default_os_user(), mode=0o755)
        yield root
    finally:
        unmount(root)


def test_a_full_repository_disk_fails_backup_and_snapshot_cleanly_and_reruns_succeed(
    s3_world: S3World, tiny_repo: Path,
) -> None:
    world = s3_world
    before = checksums(world.inst.app_dsn)
    rt = world.inst.runtime()
    engine = rt.provider.engine
    repo = LocalRepository(tiny_repo, os_user=default_os_user())
    full = NativeEngine(engine.source, repo, repo_url=repo.url,
                        work_dir=world.inst.root / "work-tiny")

    with pytest.raises(RepositoryError) as backup_failed:
        full.backup(label="disk full", progress=lambda *a: None)
    with pytest.raises(RepositoryError) as snapshot_failed:
        take_snapshot(world.inst.app_dsn, repo, label="disk full")

    for failed, what, state in ((backup_failed, "base backup", "no backup was recorded"),
                                (snapshot_failed, "snapshot", "no snapshot was recorded")):
        message = str(failed.value)
        assert what in message and "no space left on the device" in message
        assert repo.url in message and state in message and "enough free space" in message
    assert files_under(tiny_repo) == []  # no partial object, no record, no temporary file
    assert full.list_backups() == [] and list_snapshots(repo) == []
    assert checksums(world.inst.app_dsn) == before
    assert engine.list_backups()  # the real repository is untouched

    remount_tmpfs(tiny_repo, "256m")  # space freed
    backup = full.backup(label="disk full", progress=lambda *a: None)
    snap = take_snapshot(world.inst.app_dsn, repo, label="disk full")
    assert [b.backup_id for b in full.list_backups()] == [backup.backup_id]
    assert [s.snapshot_id for s in list_snapshots(repo)] == [snap.snapshot_id]
    assert checksums(world.inst.app_dsn) == before


# -- scenario 1 (complete failure) under S3 faults -------------------------------------------------


@pytest.fixture(scope="module")
def cf_world(s3_world: S3World, pg_base_dir: Path) -> Iterator[S3World]:
    """A second installation for scenario 1, in its own bucket behind the same proxy: a
    complete-failure run that succeeds points the application at the restored cluster for good
    (adopted as production), which the other tests' world must not inherit."""
    with _installation_on_s3(s3_world.s3, s3_world.proxy, pg_base_dir, "-cf") as world:
        yield world


def _app_dsn(world: S3World) -> str:
    """What the application is configured with: production, as the flow sees it."""
    return EnvFileStore(world.inst.env_file).read().get_secret_value()


def _app_healthy(world: S3World) -> bool:
    rt = world.inst.runtime()
    url = rt.health_url()
    assert url is not None
    report = check_health(url, attempts=20)
    return report.ok and report.connected


def _cf_params(world: S3World, incident: str) -> CompleteFailureParams:
    return CompleteFailureParams(target="production", config=str(world.inst.config),
                                 require_approval=False, incident_id=incident)


def test_transient_500s_during_a_complete_failure_restore_are_retried_and_the_app_moves_over(
    prefect_server: str, cf_world: S3World,
) -> None:
    world = cf_world
    world.inst.wait_archived()  # so that 'latest' is production's current content
    production = checksums(world.inst.app_dsn)
    app_before = _app_dsn(world)
    attempts = _attempts()  # fewer failures than botocore's attempts: retried, not surfaced
    world.proxy.fail(attempts - 1, method="GET", path=r"/base\.tar(\.[a-z0-9]+)?$")

    report = complete_failure(_cf_params(world, "faults-cf-transient"))

    assert report.outcome == "succeeded", report.error
    assert world.proxy.failures() == attempts - 1
    moved = _app_dsn(world)
    assert moved != app_before  # swapped to the restored database
    assert checksums(moved) == production  # ... which holds everything production held
    assert checksums(world.inst.app_dsn) == production  # the old production was not touched
    assert world.inst.runtime().app.is_running() and _app_healthy(world)  # type: ignore[union-attr]
    assert world.scratch() == []  # the restore was adopted: nothing for cleanup to remove


def test_s3_down_during_a_complete_failure_restore_puts_the_app_back_and_a_rerun_completes(
    prefect_server: str, cf_world: S3World,
) -> None:
    world = cf_world
    rt = world.inst.runtime()
    app = rt.app
    assert app is not None
    world.inst.wait_archived()
    app_before = _app_dsn(world)
    serving = checksums(app_before)  # the database the application uses (an earlier run's
    source = checksums(world.inst.app_dsn)  # adopted restore, or the original production)
    pid_before = app.running_pid()  # type: ignore[attr-defined]
    assert pid_before is not None
    incident = "faults-cf-down"
    name = restore_name("cf", incident)
    home = rt.provider.restore_root / name
    # S3 goes away at the first byte of the base backup: the app is already stopped by then.
    world.proxy.down_when(method="GET", path=r"/base\.tar(\.[a-z0-9]+)?$")

    with pytest.raises(RepositoryError) as failed:
        complete_failure(_cf_params(world, incident))

    message = str(failed.value)
    assert "restoring base backup" in message and "base.tar" in message  # what
    assert world.repo_url in message and "connect" in message.lower()  # where, why
    assert "nothing was started" in message and "source was not touched" in message  # state
    assert "restore again" in message  # next
    assert_no_secret(message, AWS_SECRET)
    assert any(status == DOWN for _, _, status in world.proxy.served)  # down mid-restore
    # The flow's promise on failure before the swap: the application back exactly as it was.
    assert app.running_pid() not in (None, pid_before)  # type: ignore[attr-defined]
    assert _app_dsn(world) == app_before  # connection string untouched
    assert _app_healthy(world)
    assert checksums(app_before) == serving and checksums(world.inst.app_dsn) == source
    assert not (rt.settings.state_dir.absolute() / "apps" / "production.stopped.json").exists()
    # No half-restored cluster: nothing on disk, nothing running, nothing for cleanup.
    assert not home.exists() and postgres_under(home) == [] and world.scratch() == []
    reports = sorted(rt.reports_dir().glob("*-complete-failure.json"))
    recorded = json.loads(reports[-1].read_text())
    assert [(s["name"], s["ok"]) for s in recorded["steps"]][-3:] == [
        ("stop application", True), ("restore to point in time", False),
        ("resume application", True)]
    # ... and says so, in the report and on the error (Prefect's traceback shows its notes).
    back = "The application was started again as it was"
    assert any(n.startswith(back) for n in recorded["notes"]), recorded["notes"]
    assert any(n.startswith(back) for n in getattr(failed.value, "__notes__", []))

    world.proxy.heal()
    report = complete_failure(_cf_params(world, incident))

    assert report.outcome == "succeeded", report.error
    moved = _app_dsn(world)
    assert moved != app_before
    assert checksums(moved) == source  # the restore holds what production held
    assert _app_healthy(world)
    assert world.scratch() == []

"""The pgBackRest engine's pure parts: option validation, info JSON, pg_waldump output, restore
options and error mapping. Samples are real pgBackRest 2.45 / PostgreSQL 15 output."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from restorekit.engines.base import SourceSpec
from restorekit.engines.pgbackrest import (
    PgBackRestEngine,
    archive_max_segment,
    last_commit,
    parse_backups,
    parse_version,
    previous_segment,
    restore_options,
    translate_error,
)
from restorekit.engines.pgbackrest_cli import progress_reader, segment_bytes
from restorekit.errors import (
    ConfigError,
    PgToolFailed,
    PostgresUnavailable,
    ProviderError,
    RestorePointError,
)
from restorekit.models import BackupInfo, PointKind, RestorePoint

INFO = json.loads(
    '[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1",'
    '"max":"000000010000000000000003","min":"000000010000000000000001"}],'
    '"backup":[{"annotation":{"restorekit-label":"first"},'
    '"archive":{"start":"000000010000000000000002","stop":"000000010000000000000003"},'
    '"backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},"error":false,'
    '"info":{"delta":22992655,"repository":{"delta":3056996,"size":3056996},"size":22992655},'
    '"label":"20261125-131155F","lsn":{"start":"0/2000028","stop":"0/3000050"},"prior":null,'
    '"reference":null,"timestamp":{"start":1795612315,"stop":1795612317},"type":"full"}],'
    '"cipher":"none","db":[{"id":1,"repo-key":1,"system-id":7712096161369479377,"version":"15"}],'
    '"name":"exp","repo":[{"cipher":"none","key":1,"status":{"code":0,"message":"ok"}}],'
    '"status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]'
)[0]

WALDUMP = """\
rmgr: Transaction len (rec/tot):     66/    66, tx:        723, lsn: 0/015006D0, prev 0/01500630, desc: COMMIT 2026-11-25 13:14:00.917438 UTC; inval msgs: snapshot 2396
rmgr: Heap        len (rec/tot):     59/    59, tx:        725, lsn: 0/01516768, prev 0/015165D0, desc: INSERT off 1 flags 0x00, blkref #0: rel 1663/5/16384 blk 0
rmgr: Transaction len (rec/tot):    405/   405, tx:        724, lsn: 0/015165D0, prev 0/01516588, desc: COMMIT 2026-11-25 13:14:01.152341 UTC; inval msgs: catcache 80 relcache 16384
rmgr: Transaction len (rec/tot):     42/    42, tx:          0, lsn: 0/01516908, prev 0/01516810, desc: COMMIT_PREPARED 726: 2026-11-25 13:14:01.153082 UTC
rmgr: Standby     len (rec/tot):     50/    50, tx:          0, lsn: 0/01516938, prev 0/01516908, desc: RUNNING_XACTS nextXid 727 latestCompletedXid 726 oldestRunningXid 727
"""  # noqa: E501

BACKUP = BackupInfo(
    backup_id="20261125-131155F", engine="pgbackrest",
    start_time=datetime(2026, 11, 25, tzinfo=UTC), stop_time=datetime(2026, 11, 25, tzinfo=UTC),
    start_lsn="0/2000028", stop_lsn="0/3000050",
)


def _spec(tmp_path: Path, **overrides: object) -> SourceSpec:
    values: dict[str, object] = {
        "dsn": "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        "data_dir": tmp_path / "data",
        "socket_dir": tmp_path / "sock",
        "port": 5432,
    }
    values.update(overrides)
    return SourceSpec(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("stanza", "overrides", "message"),
    [
        ("bad stanza", {}, "stanza"),
        ("global", {}, "stanza"),
        ("main", {"socket_dir": None}, "source.socket_dir is required"),
        ("main", {"data_dir": None}, "source.data_dir is required"),
        ("main", {"data_dir": Path("relative/data")}, "must be an absolute path"),
    ],
)
def test_bad_options_fail_before_anything_is_written(
    tmp_path: Path, stanza: str, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        PgBackRestEngine(_spec(tmp_path, **overrides), stanza=stanza,
                         repo_path=tmp_path / "repo", work_dir=tmp_path / "work")
    assert not (tmp_path / "work").exists() and not (tmp_path / "repo").exists()


def test_repo_inside_the_data_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="inside the source data directory"):
        PgBackRestEngine(_spec(tmp_path), stanza="main", repo_path=tmp_path / "data" / "repo",
                         work_dir=tmp_path / "work")


def test_version() -> None:
    assert parse_version("pgBackRest 2.45\n") == (2, 45)
    with pytest.raises(ConfigError):
        parse_version("something else")


def test_parse_backups() -> None:
    (backup,) = parse_backups(INFO)
    assert backup.backup_id == "20261125-131155F"
    assert backup.label == "first"
    assert backup.start_time == datetime.fromtimestamp(1795612315, UTC)
    assert backup.stop_time.tzinfo is UTC
    assert (backup.start_lsn, backup.stop_lsn) == ("0/2000028", "0/3000050")
    assert backup.size_bytes == 22992655 and backup.timeline == 1
    assert archive_max_segment(INFO, backup) == "000000010000000000000003"


def test_previous_segment() -> None:
    size = 16 * 1024 * 1024
    assert previous_segment("000000010000000000000003", size) == "000000010000000000000002"
    assert previous_segment("000000010000000100000000", size) == "0000000100000000000000FF"
    assert previous_segment("000000010000000000000000", size) is None
    assert previous_segment("00000002.history", size) is None


def test_segment_bytes_reads_pg_controldata() -> None:
    out = ("pg_control version number:            1700\n"
           "Bytes per WAL segment:                1048576\n"
           "Maximum data alignment:               8\n")
    assert segment_bytes(out) == 1 << 20
    assert segment_bytes("pg_controldata: error: could not open file") is None


def test_last_commit_reads_the_last_commit_record() -> None:
    when, lsn = last_commit(WALDUMP) or (None, None)
    assert when == datetime(2026, 11, 25, 13, 14, 1, 153082, tzinfo=UTC)
    assert lsn == "0/1516908"
    first_two = "\n".join(WALDUMP.splitlines()[:3])
    assert last_commit(first_two) == (
        datetime(2026, 11, 25, 13, 14, 1, 152341, tzinfo=UTC), "0/15165D0"
    )
    assert last_commit(WALDUMP.splitlines()[-1]) is None


@pytest.mark.parametrize(
    ("point", "expected"),
    [
        (RestorePoint.latest(), ["--type=default"]),
        (RestorePoint.at(datetime(2026, 11, 25, 13, 14, 1, 5, tzinfo=UTC)),
         ["--type=time", "--target=2026-11-25 13:14:01.000005+00:00", "--target-action=promote"]),
        (RestorePoint(PointKind.LSN, value="0/3000060"),
         ["--type=lsn", "--target=0/3000060", "--target-action=promote"]),
        (RestorePoint(PointKind.XID, value="1234"),
         ["--type=xid", "--target=1234", "--target-action=promote"]),
        (RestorePoint(PointKind.NAME, value="before-migration"),
         ["--type=name", "--target=before-migration", "--target-action=promote"]),
        (RestorePoint(PointKind.IMMEDIATE), ["--type=immediate", "--target-action=promote"]),
        (RestorePoint(PointKind.BACKUP, value="20261125-131155F"),
         ["--type=immediate", "--target-action=promote"]),
    ],
)
def test_restore_options(point: RestorePoint, expected: list[str]) -> None:
    options = restore_options(point, BACKUP, Path("/restore/here"))
    assert options[:2] == ["--pg1-path=/restore/here", "--set=20261125-131155F"]
    assert "--archive-mode=off" in options
    assert [o for o in options if o.startswith(("--type", "--target"))] == expected


def test_restore_options_refuse_bad_targets() -> None:
    with pytest.raises(RestorePointError, match="another backup"):
        restore_options(RestorePoint(PointKind.BACKUP, value="other"), BACKUP, Path("/x"))
    with pytest.raises(RestorePointError, match="quotes"):
        restore_options(RestorePoint(PointKind.NAME, value="it's"), BACKUP, Path("/x"))


def test_error_mapping_keeps_the_useful_line() -> None:
    tail = "P00 DETAIL: noise\nP00  ERROR: [056]: unable to connect to 'dbname='postgres''"
    err = translate_error("backup", PgToolFailed(["pgbackrest"], 56, tail))
    assert isinstance(err, PostgresUnavailable) and "[056]: unable to connect" in str(err)
    assert "noise" not in str(err)
    err = translate_error("restore", PgToolFailed(["pgbackrest"], 75, "ERROR: [075]: no set"))
    assert isinstance(err, ConfigError)
    err = translate_error("backup", PgToolFailed(["pgbackrest"], 50, "ERROR: [050]: lock"))
    assert isinstance(err, ProviderError) and err.is_retryable
    err = translate_error("backup", PgToolFailed(["pgbackrest"], 39, "x\nERROR: [039]: boom"))
    assert isinstance(err, PgToolFailed) and err.stderr_tail == "ERROR: [039]: boom"


def test_progress_is_throttled_to_whole_percents() -> None:
    seen: list[tuple[str, int, int | None]] = []
    on_line = progress_reader("base restore", lambda *a: seen.append(a))
    for pct in ("0.01", "0.50", "1.00", "1.20", "57.30", "100.00", "100.00"):
        on_line(f"P01 DETAIL: restore file /d/base/5/1249 (8KB, {pct}%) checksum abc")
    on_line("P00 INFO: restore size = 22MB")
    assert seen == [("base restore", 1, 10000), ("base restore", 100, 10000),
                    ("base restore", 5730, 10000), ("base restore", 10000, 10000)]


def test_commands_use_our_config_and_ignore_stray_pgbackrest_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGBACKREST_REPO1_PATH", "/somewhere/else")
    engine = PgBackRestEngine(_spec(tmp_path), stanza="main", repo_path=tmp_path / "repo",
                              work_dir=tmp_path / "work")
    argv = engine._argv("archive-get", "--log-level-stderr=detail", "SEG", "/dest")
    start = argv.index("env")
    assert argv[start:start + 3] == ["env", "-u", "PGBACKREST_REPO1_PATH"]
    tail = argv[argv.index(f"--config={engine.config_file}"):]
    assert tail == [f"--config={engine.config_file}", "--stanza=main",
                    "--log-level-stderr=detail", "archive-get", "SEG", "/dest"]
    conf = engine.config_file.read_text()
    assert f"repo1-path={tmp_path / 'repo'}" in conf and "[main]" in conf
    command = str(engine.archive_settings()["archive_command"])
    assert f"--config={engine.config_file}" in command and command.endswith("archive-push %p")

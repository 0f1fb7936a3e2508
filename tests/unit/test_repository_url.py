"""Repository URLs and object keys: parsed without touching any repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from restorekit.errors import ConfigError, RepositoryError
from restorekit.repository import (
    LocalRepository,
    S3Repository,
    check_key,
    open_repository,
    parse_repository_url,
    s3_error,
    s3_read_timeout,
)


@pytest.mark.parametrize(
    ("url", "path", "canonical"),
    [
        ("file:///var/lib/rk/repo", "/var/lib/rk/repo", "file:///var/lib/rk/repo"),
        ("/var/lib/rk/repo", "/var/lib/rk/repo", "file:///var/lib/rk/repo"),
        ("/var/lib/rk/repo/", "/var/lib/rk/repo", "file:///var/lib/rk/repo"),
        ("file://localhost/srv/repo", "/srv/repo", "file:///srv/repo"),
        ("FILE:///srv/repo", "/srv/repo", "file:///srv/repo"),
        ("file:///srv/my%20repo%25x", "/srv/my repo%x", "file:///srv/my%20repo%25x"),
        ("/srv/my repo%x", "/srv/my repo%x", "file:///srv/my%20repo%25x"),
    ],
)
def test_local_urls(url: str, path: str, canonical: str) -> None:
    location = parse_repository_url(url)
    assert location.kind == "local"
    assert location.path == Path(path)
    assert location.url == canonical
    assert parse_repository_url(location.url) == location  # the display form round-trips


@pytest.mark.parametrize(
    ("url", "bucket", "prefix", "endpoint", "region", "canonical"),
    [
        ("s3://backups", "backups", "", None, None, "s3://backups"),
        ("s3://backups/", "backups", "", None, None, "s3://backups"),
        ("s3://backups/prod/db1/", "backups", "prod/db1", None, None, "s3://backups/prod/db1"),
        ("s3://my.bucket-1/p?region=eu-west-1", "my.bucket-1", "p", None, "eu-west-1",
         "s3://my.bucket-1/p?region=eu-west-1"),
        ("s3://b12/p?region=us-east-1&endpoint_url=http://127.0.0.1:9000", "b12", "p",
         "http://127.0.0.1:9000", "us-east-1",
         "s3://b12/p?endpoint_url=http://127.0.0.1:9000&region=us-east-1"),
        ("s3://b12/p?endpoint_url=http%3A%2F%2Fminio%3A9000%2F", "b12", "p", "http://minio:9000",
         None, "s3://b12/p?endpoint_url=http://minio:9000"),
    ],
)
def test_s3_urls(url: str, bucket: str, prefix: str, endpoint: str | None, region: str | None,
                 canonical: str) -> None:
    location = parse_repository_url(url)
    assert (location.kind, location.bucket, location.prefix) == ("s3", bucket, prefix)
    assert (location.endpoint_url, location.region) == (endpoint, region)
    assert location.url == canonical
    assert parse_repository_url(location.url) == location


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("", "file:///absolute/path"),
        ("   ", "file:///absolute/path"),
        ("relative/repo", "relative paths are not accepted"),
        ("./repo", "relative paths are not accepted"),
        ("~/repo", "relative paths are not accepted"),
        ("file:repo", "three slashes"),
        ("file://backuphost/srv/repo", "file:///backuphost/srv/repo"),
        ("file:///srv/repo?x=1", "no query"),
        ("file:///srv/../etc", "'..'"),
        ("/", "filesystem root"),
        ("gs://bucket/x", "unsupported repository scheme 'gs://'"),
        ("https://example.com/repo", "unsupported repository scheme"),
        ("s3://Bad_Bucket/x", "not a valid S3 bucket name"),
        ("s3://ab/x", "not a valid S3 bucket name"),
        ("s3:///prefix", "not a valid S3 bucket name"),
        ("s3://bucket:9000/x", "not a valid S3 bucket name"),
        ("s3://bucket/a/../b", "plain path"),
        ("s3://bucket/a//b", "plain path"),
        ("s3://bucket/x?profile=prod", "unknown S3 repository URL parameter 'profile'"),
        ("s3://bucket/x?region=us-east-1&region=eu-west-1", "given twice"),
        ("s3://bucket/x?region=US_EAST", "not a valid AWS region"),
        ("s3://bucket/x?endpoint_url=ftp://host", "http://host:port"),
        ("s3://bucket/x?endpoint_url=localhost:9000", "http://host:port"),
        ("s3://bucket/x#frag", "no fragment"),
    ],
)
def test_bad_urls_say_what_to_write(url: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_repository_url(url)
    assert hint in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "s3://AKIAEXAMPLE:s3cr3tVALUE@bucket/prefix",
        "s3://AKIAEXAMPLE@bucket/prefix",
        "s3://bucket/prefix?aws_access_key_id=AKIAEXAMPLE&aws_secret_access_key=s3cr3tVALUE",
        "s3://bucket/prefix?secret=s3cr3tVALUE",
        "s3://bucket/prefix?session_token=s3cr3tVALUE",
        "s3://bucket/prefix?endpoint_url=http://AKIAEXAMPLE:s3cr3tVALUE@minio:9000",
        "file://user:s3cr3tVALUE@host/srv/repo",
    ],
)
def test_credentials_in_url_are_rejected_without_echoing_them(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_repository(url)
    message = str(info.value)
    assert "must not contain credentials" in message
    assert "AWS_ACCESS_KEY_ID" in message
    assert "s3cr3tVALUE" not in message and "AKIAEXAMPLE" not in message


def test_open_local_repository_touches_nothing(tmp_path: Path) -> None:
    root = tmp_path / "not-yet"
    repo = open_repository(f"file://{root}")
    assert isinstance(repo, LocalRepository)
    assert repo.url == f"file://{root}"
    assert not root.exists()
    assert repo.list("") == []
    assert not repo.exists("wal/000000010000000000000001")
    assert not root.exists()


def test_s3_repository_display_url_has_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3tVALUE")
    repo = open_repository("s3://bucket/p?endpoint_url=http://127.0.0.1:1&region=us-east-1")
    assert repo.url == "s3://bucket/p?endpoint_url=http://127.0.0.1:1&region=us-east-1"
    assert "s3cr3t" not in repr(repo)


@pytest.mark.parametrize(
    "key",
    ["wal/000000010000000000000001", "base/2024-06-01T00:00:00Z/base.tar.gz", "a", "a/b/c.d",
     "snap shot/x y"],
)
def test_good_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", "/etc/passwd", "../outside", "a/../../b", "a/./b", "a//b", "a/", ".", "..",
     "a\\b", "a\x00b", "line\nbreak", "wal/x.sha256.json", "wal/.rk-tmp-abc", "x" * 201],
)
def test_bad_keys(key: str) -> None:
    with pytest.raises(ConfigError):
        check_key(key)


# -- RESTOREKIT_S3_READ_TIMEOUT: how long each S3 request waits for an answer ----------------------


def test_s3_read_timeout_defaults_to_120_s_and_takes_the_operators_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RESTOREKIT_S3_READ_TIMEOUT", raising=False)
    assert s3_read_timeout() == 120
    assert s3_read_timeout("") == 120
    monkeypatch.setenv("RESTOREKIT_S3_READ_TIMEOUT", "2.5")
    assert s3_read_timeout() == 2.5
    repo = open_repository("s3://bucket/p?endpoint_url=http://127.0.0.1:1&region=us-east-1")
    assert isinstance(repo, S3Repository)
    assert repo.client.meta.config.read_timeout == 2.5
    assert repo.client.meta.config.connect_timeout == 10  # unchanged: a separate failure


@pytest.mark.parametrize("raw", ["abc", "5s", "0", "-1", "nan", "inf", "3601", "1,5"])
def test_a_bad_s3_read_timeout_is_refused_naming_the_variable(
    raw: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError) as direct:
        s3_read_timeout(raw)
    message = str(direct.value)
    assert f"RESTOREKIT_S3_READ_TIMEOUT={raw!r}" in message
    assert "more than 0 and at most 3600" in message and "e.g. 30" in message
    # Refused when the repository is opened, before any request (archive_command exits 1
    # with this message in PostgreSQL's log).
    monkeypatch.setenv("RESTOREKIT_S3_READ_TIMEOUT", raw)
    with pytest.raises(ConfigError, match="RESTOREKIT_S3_READ_TIMEOUT"):
        open_repository("s3://bucket/p?endpoint_url=http://127.0.0.1:1&region=us-east-1")


def test_an_s3_timeout_says_it_timed_out_how_long_and_that_it_is_worth_retrying() -> None:
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    endpoint = "http://127.0.0.1:9/bucket/p/wal/000000010000000000000001.sha256.json"
    read = s3_error(ReadTimeoutError(endpoint_url=endpoint), operation="stat",
                    key="wal/000000010000000000000001", url="s3://bucket/p", bucket="bucket",
                    read_timeout=1.5, attempts=3)
    assert isinstance(read, RepositoryError) and read.is_retryable
    message = str(read)
    assert message.startswith("S3 stat of 'wal/000000010000000000000001' in s3://bucket/p "
                              "timed out talking to the repository")
    assert "accepted the connection but nothing came back for 1.5 s" in message
    assert "each request is tried 3 times" in message
    assert "RESTOREKIT_S3_READ_TIMEOUT" in message
    connect = s3_error(ConnectTimeoutError(endpoint_url=endpoint), operation="get", key="k",
                       url="s3://bucket/p", bucket="bucket")
    assert connect.is_retryable
    assert "timed out talking to the repository: no connection to the endpoint within 10 s" \
        in str(connect)

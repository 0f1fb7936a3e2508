"""Repository URLs: ``file:///absolute/path`` (or a bare absolute path) for a local directory,
``s3://bucket/prefix?endpoint_url=...&region=...`` for S3; parsed without touching the
repository, and never holding credentials.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from restorekit.errors import (
    ConfigError,
)
from restorekit.repository.keys import check_key
from restorekit.repository.local import LocalRepository
from restorekit.repository.protocol import Repository

_URL_HELP = (
    "write file:///absolute/path (or just /absolute/path) for a local directory, or "
    "s3://bucket/prefix[?endpoint_url=http://host:port&region=us-east-1] for S3"
)
_S3_PARAMS = ("endpoint_url", "region")
_SECRET_WORDS = ("key", "secret", "token", "password", "credential", "session")
_CREDENTIALS_HELP = (
    "a repository URL must not contain credentials: give them through the AWS chain instead "
    "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY environment variables, AWS_PROFILE, or an "
    "instance/task role)"
)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z0-9-]{2,32}$")


class RepositoryLocation(NamedTuple):
    """A parsed repository URL. ``url`` is the canonical display form (no secrets).

    A NamedTuple, not a dataclass, for the same reason as
    :class:`~restorekit.repository.protocol.ObjectInfo` (archive_command's start).
    """

    kind: str  # "local" | "s3"
    url: str
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None


def parse_repository_url(url: str) -> RepositoryLocation:
    """Parse a repository URL without touching the repository. Raises ConfigError."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"empty repository URL: {_URL_HELP}")
    url = url.strip()
    if url.startswith("/"):
        return _local_location(url)
    scheme, sep, _ = url.partition("://")
    if not sep:
        if url.startswith("file:"):
            raise ConfigError(f"file URLs need an absolute path with three slashes: {_URL_HELP}")
        raise ConfigError(f"not a repository URL (relative paths are not accepted): {_URL_HELP}")
    scheme = scheme.lower()
    if scheme == "s3":
        return _s3_location(url)
    if scheme == "file":
        return _file_location(url)
    raise ConfigError(f"unsupported repository scheme {scheme + '://'!r}: {_URL_HELP}")


def _local_location(raw_path: str) -> RepositoryLocation:
    if "\x00" in raw_path:
        raise ConfigError("a repository path must not contain NUL bytes")
    if any(part == ".." for part in raw_path.split("/")):
        raise ConfigError(
            f"repository path {raw_path!r} contains '..': write the resolved absolute path")
    path = Path(os.path.normpath(raw_path))
    if path == Path("/"):
        raise ConfigError("the filesystem root cannot be a repository: name a directory, "
                          "e.g. file:///var/lib/restorekit/repo")
    return RepositoryLocation(kind="local", url="file://" + quote(str(path), safe="/"), path=path)


def _file_location(url: str) -> RepositoryLocation:
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ConfigError(f"file repository URLs take no query or fragment: {_URL_HELP}")
    if parts.netloc not in ("", "localhost"):
        if "@" in parts.netloc:
            raise ConfigError(_CREDENTIALS_HELP)
        raise ConfigError(
            f"file URL names a host ({parts.netloc!r}); a local path needs three slashes: "
            f"file:///{parts.netloc}{parts.path}"
        )
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ConfigError(f"file URLs need an absolute path: {_URL_HELP}")
    return _local_location(path)


def _s3_location(url: str) -> RepositoryLocation:
    parts = urlsplit(url)
    # Credentials are checked before anything else so no message below can echo them.
    if "@" in parts.netloc:
        raise ConfigError(_CREDENTIALS_HELP)
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ConfigError(f"malformed query string in the repository URL: {_URL_HELP}") from None
    names = [name.lower() for name, _ in query]
    if any(word in name for name in names for word in _SECRET_WORDS):
        raise ConfigError(_CREDENTIALS_HELP)
    params: dict[str, str] = {}
    for name, value in query:
        name = name.lower()
        if name not in _S3_PARAMS:
            raise ConfigError(f"unknown S3 repository URL parameter {name!r}; accepted: "
                              f"{', '.join(_S3_PARAMS)}")
        if name in params:
            raise ConfigError(f"S3 repository URL parameter {name!r} given twice")
        params[name] = value
    if parts.fragment:
        raise ConfigError(f"S3 repository URLs take no fragment ('#...'): {_URL_HELP}")
    bucket = parts.netloc
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(
            f"{bucket!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, '.' or "
            f"'-'): {_URL_HELP}"
        )
    prefix = unquote(parts.path).strip("/")
    if prefix:
        try:
            check_key(prefix)
        except ConfigError:
            raise ConfigError(
                f"S3 prefix {prefix!r} must be a plain path without empty, '.' or '..' parts"
            ) from None
    endpoint = params.get("endpoint_url") or None
    if endpoint is not None:
        ep = urlsplit(endpoint)
        if "@" in ep.netloc:
            raise ConfigError(_CREDENTIALS_HELP)
        if ep.scheme not in ("http", "https") or not ep.netloc or ep.query or ep.fragment:
            raise ConfigError(
                f"endpoint_url {endpoint!r} must look like http://host:port or https://host"
            )
        endpoint = endpoint.rstrip("/")
    region = params.get("region") or None
    if region is not None and not _REGION.match(region):
        raise ConfigError(f"region {region!r} is not a valid AWS region name such as 'us-east-1'")
    shown = {k: v for k, v in (("endpoint_url", endpoint), ("region", region)) if v}
    display = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    if shown:
        display += "?" + urlencode(shown, safe=":/", quote_via=quote)
    return RepositoryLocation(kind="s3", url=display, bucket=bucket, prefix=prefix,
                              endpoint_url=endpoint, region=region)


def open_repository(url: str, *, os_user: str | None = None) -> Repository:
    """Open the repository at ``url`` (see the module docstring for the accepted forms).

    ``os_user`` applies to local repositories: when running as root, every directory and file the
    repository creates is given to that user (PostgreSQL's archive_command runs as ``postgres``
    and must be able to write into ``wal/``).
    """
    location = parse_repository_url(url)
    if location.kind == "local":
        assert location.path is not None
        return LocalRepository(location.path, os_user=os_user)
    from restorekit.repository.s3 import S3Repository  # boto3 and its helpers: S3 only

    return S3Repository(location.bucket, location.prefix, endpoint_url=location.endpoint_url,
                        region=location.region)

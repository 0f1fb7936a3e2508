"""Neon's wire formats: RFC 3339 times, endpoint hosts and branch fields."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from restorekit.models import BackupInfo
from restorekit.pg.dsn import Location, location_of, parse, repoint
from restorekit.providers.neon.settings import BACKUP_PREFIX


def rfc3339(when: datetime) -> str:
    """UTC RFC 3339 with a ``Z`` (microseconds kept when there are any)."""
    when = when.astimezone(UTC)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if when.microsecond:
        text += f".{when.microsecond:06d}"
    return text + "Z"


def _ts(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)



def _address(dsn: str) -> tuple[str, int]:
    """(host, port) a DSN connects to, the pooler host folded onto its endpoint's (§3.3)."""
    params = parse(dsn)
    host = str(params.get("host") or "").lower().replace("-pooler.", ".", 1)
    return host, int(str(params.get("port") or 5432))


def _pooled(uri: str) -> SecretStr | None:
    """The pooled variant of an endpoint's connection URI: ``-pooler`` appended to the endpoint
    id in the host (``ep-x-123456.us-east-2.aws.neon.tech`` ->
    ``ep-x-123456-pooler.us-east-2.aws.neon.tech``, §3.3; the same as ``pooled=true``, without
    another call). None when the host is not an endpoint host."""
    where = location_of(uri)
    if len(where.hosts) != 1:
        return None
    label, dot, rest = where.hosts[0].partition(".")
    if not label.startswith("ep-") or label.endswith("-pooler") or not dot:
        return None
    pooled = Location(hosts=(f"{label}-pooler.{rest}",), ports=where.ports, dbname=where.dbname)
    return SecretStr(repoint(uri, pooled))


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:60].rstrip("-")


def _branch_point(branch: dict[str, Any]) -> str:
    if branch.get("parent_timestamp"):
        when = _ts(branch["parent_timestamp"])
        return when.isoformat() if when else str(branch["parent_timestamp"])
    if branch.get("parent_lsn"):
        return f"lsn:{branch['parent_lsn']}"
    return ""


def _backup_info(branch: dict[str, Any]) -> BackupInfo:
    created = _ts(branch.get("created_at")) or datetime.now(UTC)
    at = _ts(branch.get("parent_timestamp")) or created
    lsn = str(branch.get("parent_lsn") or "")
    name = str(branch.get("name", ""))
    return BackupInfo(
        backup_id=str(branch["id"]), engine="neon", start_time=at, stop_time=at,
        start_lsn=lsn, stop_lsn=lsn, label=name.removeprefix(BACKUP_PREFIX),
        extra={"name": name, "parent_id": branch.get("parent_id")},
    )

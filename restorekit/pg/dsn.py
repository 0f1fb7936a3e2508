"""DSN parsing, merging and redaction.

All parsing goes through ``psycopg.conninfo`` so URLs and key=value strings behave exactly as
libpq reads them. :func:`redact` is the one place a DSN is made safe to show.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from restorekit.errors import ConfigError

_SECRET_KEYS = ("password", "sslpassword")
_URL_PASSWORD = re.compile(r"(?P<head>postgres(?:ql)?://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<tail>@)")
_KV_PASSWORD = re.compile(r"(?P<head>\b(?:password|sslpassword)\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)")


def parse(dsn: str) -> dict[str, Any]:
    """Parse a URL or key=value DSN into libpq keywords. Raises ConfigError when malformed."""
    try:
        return dict(conninfo_to_dict(dsn))
    except Exception as exc:  # psycopg.ProgrammingError; its message may echo the DSN
        raise ConfigError(f"not a valid PostgreSQL connection string: {redact(dsn)}") from exc


def merge(dsn: str, **overrides: Any) -> str:
    """Return ``dsn`` with keywords replaced (e.g. another ``dbname``)."""
    return make_conninfo(dsn, **overrides)


def redact(text: str) -> str:
    """Hide passwords in anything that may contain a DSN (a URL, key=value, or a message)."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}***{m.group('tail')}", text)
    return _KV_PASSWORD.sub(lambda m: f"{m.group('head')}***", text)


def display(dsn: str) -> str:
    """A short, secret-free URL form of a DSN for logs and reports."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return redact(dsn)
    user = params.get("user", "")
    auth = f"{quote(str(user))}:***@" if params.get("password") else (f"{quote(str(user))}@" if user else "")
    host = params.get("host", "localhost")
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{auth}{host}{port}/{params.get('dbname', '')}"


def password_env(dsn: str) -> tuple[str, dict[str, str]]:
    """Split a DSN into (DSN without password, env with PGPASSWORD) for pg_* tools, so that a
    password never appears in a process's argv."""
    params = parse(dsn)
    env: dict[str, str] = {}
    for key in _SECRET_KEYS:
        if key in params:
            value = params.pop(key)
            if key == "password" and value is not None:
                env["PGPASSWORD"] = str(value)
    return make_conninfo("", **params), env

"""DSN parsing, merging, re-pointing and redaction.

All parsing goes through ``psycopg.conninfo`` so URLs and key=value strings behave exactly as
libpq reads them. :func:`redact` is the one place a DSN is made safe to show.

Two audiences read a connection string, and they disagree on URL query keys:

* libpq (restorekit's own connections, pg_* tools) refuses any query key that is not one of its
  keywords (``invalid URI query parameter``).
* The application may have its own options there. Prisma (the runbook's stack) accepts only URLs
  and reads ``schema``, ``connection_limit``, ``pool_timeout``, ``pgbouncer``, ``sslaccept``, ...
  from the query, ignoring what it does not know.

:func:`split_app_url` separates the two, :func:`libpq_dsn` is what restorekit connects with,
and :func:`repoint` moves an application's string to a new database keeping its form: a URL
stays a URL with its query verbatim, a key=value string keeps its other keywords.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from restorekit.errors import ConfigError

_SECRET_KEYS = ("password", "sslpassword")
_URL_SCHEMES = ("postgresql://", "postgres://")
_URL_PASSWORD = re.compile(r"(?P<head>postgres(?:ql)?://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<tail>@)")
# A password in a URL's query: the value ends at the next '&' (a key=value string's ends at a
# space), so the options after it stay readable.
_QUERY_PASSWORD = re.compile(
    r"(?P<head>[?&](?:password|sslpassword|oauth_client_secret)=)(?P<pw>[^&#\s]*)")
_KV_PASSWORD = re.compile(
    r"(?P<head>(?<![?&])\b(?:password|sslpassword|oauth_client_secret)\s*=\s*)"
    r"(?P<pw>'(?:[^'\\]|\\.)*'|\S+)")
# Location keywords: a URL may also carry them in its query, where libpq lets them win over
# the authority part, so re-pointing must change them there too.
_LOCATION_KEYS = ("host", "hostaddr", "port", "dbname")


def parse(dsn: str) -> dict[str, Any]:
    """Parse a URL or key=value DSN into libpq keywords. Raises ConfigError when malformed."""
    try:
        return dict(conninfo_to_dict(dsn))
    except Exception as exc:  # psycopg.ProgrammingError; its message may echo the DSN
        # The likely cause named by its keys only (a value may be anything): an application's
        # URL, pasted as restorekit's own, whose query carries the application's options.
        unknown = [key for key, _ in app_options(dsn)]
        why = (f" ({', '.join(unknown)}: not libpq connection options but an application's, "
               "such as Prisma's; give restorekit's DSN without them)" if unknown else "")
        raise ConfigError(f"not a valid PostgreSQL connection string{why}: {redact(dsn)}"
                          ) from exc


def merge(dsn: str, **overrides: Any) -> str:
    """Return ``dsn`` with keywords replaced (e.g. another ``dbname``)."""
    return make_conninfo(dsn, **overrides)


def is_url(dsn: str) -> bool:
    """True for the URL form (``postgresql://`` or ``postgres://``, as libpq spells them)."""
    return dsn.lstrip().startswith(_URL_SCHEMES)


@functools.cache
def libpq_keywords() -> frozenset[str]:
    """The connection keywords the installed libpq knows (``PQconndefaults``)."""
    from psycopg import pq

    return frozenset(opt.keyword.decode() for opt in pq.Conninfo.get_defaults())


def split_app_url(dsn: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Split an application's connection string into (what libpq reads, the app's own options).

    A URL's query keys that are not libpq keywords (Prisma's ``schema``, ``connection_limit``,
    ``pgbouncer``, ...) are taken out, decoded, in their order; everything else of the URL stays
    byte for byte. A key=value string is returned unchanged (no application reads options from
    one).

    Example:
        >>> split_app_url("postgresql://app@db/shop?schema=public&sslmode=require")
        ('postgresql://app@db/shop?sslmode=require', (('schema', 'public'),))
    """
    if not is_url(dsn):
        return dsn, ()
    head, sep, query = dsn.partition("?")
    if not sep:
        return dsn, ()
    known = libpq_keywords()
    kept: list[str] = []
    options: list[tuple[str, str]] = []
    for pair in query.split("&"):
        key, eq, value = pair.partition("=")
        name = unquote(key)
        if eq and name not in known:
            options.append((name, unquote(value)))
        else:
            kept.append(pair)  # libpq's, or malformed: libpq says what is wrong with it
    return (head + "?" + "&".join(kept) if kept else head), tuple(options)


def libpq_dsn(dsn: str) -> str:
    """``dsn`` as libpq accepts it: an application's URL without its own query options."""
    return split_app_url(dsn)[0]


def app_options(dsn: str) -> tuple[tuple[str, str], ...]:
    """The application-only query options of ``dsn`` (see :func:`split_app_url`)."""
    return split_app_url(dsn)[1]


def uses_pooler(dsn: str) -> bool:
    """Whether ``dsn`` goes through a connection pooler: Prisma's ``pgbouncer=true``, or a
    Neon ``-pooler`` endpoint host (``ep-...-pooler.<region>.aws.neon.tech``)."""
    if any(k == "pgbouncer" and v.lower() in ("true", "1") for k, v in app_options(dsn)):
        return True
    try:
        hosts = location_of(dsn).hosts
    except ConfigError:
        return False
    return any(h.split(".", 1)[0].endswith("-pooler") for h in hosts)


@dataclass(frozen=True, slots=True)
class Location:
    """Where a connection string points: host(s), port(s) and database, as libpq lists them.

    ``ports`` has one entry per host ('' for the default), or one for all; ``hosts`` is empty
    for libpq's default (the local socket).
    """

    hosts: tuple[str, ...]
    ports: tuple[str, ...]
    dbname: str

    def host_ports(self) -> list[tuple[str, str]]:
        ports = self.ports if len(self.ports) == len(self.hosts) else (
            (self.ports[0] if self.ports else "",) * len(self.hosts))
        return list(zip(self.hosts, ports, strict=True))


def location_of(dsn: str) -> Location:
    """The :class:`Location` an application's (or provider's) connection string points at.

    Raises:
        ConfigError: not a valid connection string.
    """
    params = parse(libpq_dsn(dsn))
    hosts = tuple(str(params.get("host") or "").split(",")) if params.get("host") else ()
    ports = tuple(str(params.get("port") or "").split(",")) if params.get("port") else ()
    return Location(hosts=hosts, ports=ports, dbname=str(params.get("dbname") or ""))


def repoint(app_dsn: str, to: Location) -> str:
    """The application's connection string ``app_dsn`` pointed at ``to``, in its own form.

    Only the location changes (host(s), port(s), database name; a ``hostaddr``, which pinned
    the old address, is dropped). The user, the password and every other option are the
    application's and stay: a restored database is a copy with the same roles.

    * URL (``postgresql://`` or ``postgres://``, kept as it was): the authority's host list and
      the path are rewritten; the user info and the query string are kept byte for byte (their
      percent-encoding included), except location keys in the query, which libpq would prefer
      over the authority: they are changed in place.
    * key=value: the location keywords are replaced, every other keyword kept in order.

    Raises:
        ConfigError: ``app_dsn`` is not a valid connection string, or the result would not
            point at ``to`` with the application's credentials.
    """
    before = parse(libpq_dsn(app_dsn))  # validates first; the message is redacted
    if is_url(app_dsn):
        result = _repoint_url(app_dsn.strip(), to)
    else:
        params = {k: v for k, v in before.items() if k not in _LOCATION_KEYS}
        location: dict[str, str] = {}
        if to.hosts:
            location["host"] = ",".join(to.hosts)
        if to.ports and any(to.ports):
            location["port"] = ",".join(to.ports)
        if to.dbname:
            location["dbname"] = to.dbname
        # libpq's own order puts the location first; the rest keeps the app's order.
        result = make_conninfo("", **location, **params)
    after = parse(libpq_dsn(result))
    if (not _same_place(location_of(result), to)
            or any(after.get(k) != before.get(k) for k in ("user", "password"))):
        raise ConfigError(f"re-pointing {redact(app_dsn)} at {_show(to)} did not give a "
                          "connection string that points there with the same user")
    return result


def _same_place(got: Location, want: Location) -> bool:
    return (got.host_ports() == want.host_ports()
            and (not want.dbname or got.dbname == want.dbname))


def _show(to: Location) -> str:
    return ",".join(f"{h}:{p}" if p else h for h, p in to.host_ports()) + f"/{to.dbname}"


def _repoint_url(url: str, to: Location) -> str:
    scheme, _, rest = url.partition("://")
    # libpq's reading: user info runs to the first '@' before any '/'; the host list to the
    # first '/' or '?'; then the database name up to '?'.
    slash = rest.find("/")
    at = rest.find("@", 0, slash if slash >= 0 else len(rest))
    userinfo = rest[:at + 1] if at >= 0 else ""
    rest = rest[at + 1:]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    rest = rest[end:]
    path, sep, query = rest.partition("?")
    hostspec = ",".join(_url_host(h) + (f":{p}" if p else "") for h, p in to.host_ports())
    dbpath = f"/{quote(to.dbname, safe='')}" if to.dbname else path
    if sep:
        query = _repoint_query(query, to)
        sep = "?" if query else ""
    return f"{scheme}://{userinfo}{hostspec}{dbpath}{sep}{query}"


def _url_host(host: str) -> str:
    if ":" in host and not host.startswith("/"):
        return f"[{quote(host, safe=':')}]"  # IPv6 (a zone id's '%' is encoded)
    return quote(host, safe="")  # a socket directory is percent-encoded, as libpq reads it


def _repoint_query(query: str, to: Location) -> str:
    values = {"host": ",".join(to.hosts), "port": ",".join(to.ports) if any(to.ports) else "",
              "dbname": to.dbname}
    pairs: list[str] = []
    for pair in query.split("&"):
        key, eq, _ = pair.partition("=")
        name = unquote(key)
        if eq and name == "hostaddr":
            continue  # pinned the old address
        if eq and name in values:
            if values[name]:
                pairs.append(f"{key}={quote(values[name], safe='/,:')}")
            continue
        pairs.append(pair)
    return "&".join(pairs)


def at_address(dsn: str, host: str, port: int | str, dbname: str) -> str:
    """``dsn``'s role, password and options at another server: ``host``, ``port``, ``dbname``.

    With ``sslmode=verify-full`` libpq checks the server's certificate against ``host``. A
    restored copy serves its source's certificate, which names the source's host: the result
    then keeps that name as ``host`` and connects to ``hostaddr``, ``host``'s address (libpq's
    way of checking one name at another address).
    """
    params = parse(dsn)
    named = str(params.get("host") or "").split(",")[0]
    for key in ("host", "hostaddr", "port", "dbname", "service"):
        params.pop(key, None)
    if (params.get("sslmode") == "verify-full" and named and named != host
            and not host.startswith("/")):
        addresses = _addresses(host)  # each tried in turn, all checked against the one name
        return make_conninfo("", host=",".join([named] * len(addresses)),
                             hostaddr=",".join(addresses), port=port, dbname=dbname, **params)
    return make_conninfo("", host=host, port=port, dbname=dbname, **params)


def _addresses(host: str) -> list[str]:
    """``host``'s numeric addresses, in the resolver's order (hostaddr takes nothing else)."""
    import ipaddress
    import socket

    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConfigError(f"cannot resolve {host!r}, where restored copies are reached: "
                              f"{exc}") from exc
        return list(dict.fromkeys(str(info[4][0]) for info in found))


def to_url(dsn: str) -> str:
    """``dsn`` in URL form (``postgresql://``), e.g. a provider's key=value DSN for an
    application that reads only URLs. A URL is returned unchanged."""
    if is_url(dsn):
        return dsn
    params = parse(dsn)
    user = quote(str(params.pop("user", "") or ""), safe="")
    password = params.pop("password", None)
    auth = ""
    if user or password:
        auth = user + (f":{quote(str(password), safe='')}" if password else "") + "@"
    where = location_of(dsn)
    for key in _LOCATION_KEYS:
        params.pop(key, None)
    hostspec = ",".join(_url_host(h) + (f":{p}" if p else "") for h, p in where.host_ports())
    query = "&".join(f"{quote(k, safe='')}={quote(str(v), safe='')}" for k, v in params.items())
    return (f"postgresql://{auth}{hostspec}/{quote(where.dbname, safe='')}"
            + (f"?{query}" if query else ""))


def redact(text: str) -> str:
    """Hide passwords in anything that may contain a DSN (a URL, key=value, or a message)."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}***{m.group('tail')}", text)
    text = _QUERY_PASSWORD.sub(lambda m: f"{m.group('head')}***", text)
    return _KV_PASSWORD.sub(lambda m: f"{m.group('head')}***", text)


def display(dsn: str) -> str:
    """A short, secret-free URL form of a DSN for logs and reports (with the application's own
    query options, e.g. ``?schema=public&connection_limit=5``)."""
    base, options = split_app_url(dsn)
    try:
        params = conninfo_to_dict(base)
    except Exception:
        return redact(dsn)
    user = params.get("user", "")
    if params.get("password"):
        auth = f"{quote(str(user))}:***@"
    else:
        auth = f"{quote(str(user))}@" if user else ""
    host = params.get("host", "localhost")
    port = f":{params['port']}" if params.get("port") else ""
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in options)
    return redact(f"postgresql://{auth}{host}{port}/{params.get('dbname', '')}"
                  + (f"?{query}" if query else ""))


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

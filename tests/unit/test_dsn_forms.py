"""Connection strings in the application's own form: re-pointing keeps the form and the options;
libpq gets only what it understands; redaction hides passwords in every form."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from restorekit.errors import ConfigError
from restorekit.pg.dsn import (
    Location,
    app_options,
    display,
    libpq_dsn,
    location_of,
    redact,
    repoint,
    split_app_url,
    to_url,
    uses_pooler,
)
from restorekit.sinks.group import swap_values

PRISMA = "?schema=public&connection_limit=5&pool_timeout=10"
RESTORED = Location(hosts=("127.0.0.1",), ports=("49001",), dbname="app")
# What a provider hands back: key/value, restorekit's own (superuser) credentials.
PROVIDER_DSN = "host=127.0.0.1 port=49001 user=postgres password='su per' dbname=app"


# -- split: what libpq reads, what the application reads ---------------------------------------


def test_split_takes_out_only_the_application_options_in_order() -> None:
    url = ("postgresql://app:pw@db:5432/shop?schema=public&sslmode=require&connection_limit=5"
           "&pgbouncer=true&application_name=web&pool_timeout=10")
    base, options = split_app_url(url)
    assert base == "postgresql://app:pw@db:5432/shop?sslmode=require&application_name=web"
    assert options == (("schema", "public"), ("connection_limit", "5"), ("pgbouncer", "true"),
                       ("pool_timeout", "10"))
    assert conninfo_to_dict(base)["sslmode"] == "require"


def test_libpq_refuses_prisma_options_and_libpq_dsn_removes_them() -> None:
    url = f"postgresql://app@db/shop{PRISMA}"
    with pytest.raises(Exception, match="invalid URI query parameter"):
        conninfo_to_dict(url)
    assert libpq_dsn(url) == "postgresql://app@db/shop"
    assert libpq_dsn("postgresql://app@db/shop?schema=x") == "postgresql://app@db/shop"


def test_key_value_strings_and_plain_urls_pass_through() -> None:
    kv = "host=db port=5432 dbname=shop sslmode=require"
    assert split_app_url(kv) == (kv, ())
    assert split_app_url("postgres://db/shop") == ("postgres://db/shop", ())
    assert app_options("postgresql://db/shop?schema=a%20b") == (("schema", "a b"),)


# -- re-pointing -------------------------------------------------------------------------------


def test_issue_11_a_prisma_url_stays_a_url_with_its_options() -> None:
    app = f"postgresql://app:s3cret@127.0.0.1:5496/app{PRISMA}"
    new = repoint(app, location_of(PROVIDER_DSN))
    assert new == f"postgresql://app:s3cret@127.0.0.1:49001/app{PRISMA}"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_the_scheme_user_password_encoding_and_query_are_kept(scheme: str) -> None:
    password = quote("p@ss/wörd:%'", safe="")
    app = f"{scheme}://app:{password}@old.example.com:6543/old?sslmode=require&pgbouncer=true"
    new = repoint(app, Location(("new.example.com",), ("5432",), "shop"))
    assert new == (f"{scheme}://app:{password}@new.example.com:5432/shop"
                   "?sslmode=require&pgbouncer=true")
    params = conninfo_to_dict(libpq_dsn(new))
    assert params["password"] == "p@ss/wörd:%'" and params["user"] == "app"


def test_ipv6_multiple_hosts_and_no_port() -> None:
    app = "postgresql://app@[2001:db8::1]:5432/app?target_session_attrs=read-write"
    assert repoint(app, Location(("::1",), ("6000",), "app")) == \
        "postgresql://app@[::1]:6000/app?target_session_attrs=read-write"
    two = repoint(app, Location(("h1", "h2"), ("5433", "5434"), "app"))
    assert two == "postgresql://app@h1:5433,h2:5434/app?target_session_attrs=read-write"
    assert conninfo_to_dict(two)["host"] == "h1,h2"
    assert repoint(app, Location(("db.example.com",), (), "app")) == \
        "postgresql://app@db.example.com/app?target_session_attrs=read-write"
    assert location_of("postgresql://u@h1,h2:5433/db") == Location(("h1", "h2"), ("", "5433"), "db")


def test_location_keys_in_the_query_change_in_place_and_hostaddr_goes() -> None:
    app = "postgresql://app@/app?host=/var/run/postgresql&hostaddr=10.0.0.1&schema=s&port=5432"
    new = repoint(app, RESTORED)
    assert new == "postgresql://app@127.0.0.1:49001/app?host=127.0.0.1&schema=s&port=49001"
    assert location_of(new) == RESTORED


def test_a_socket_directory_is_percent_encoded_in_the_authority() -> None:
    new = repoint("postgresql://app@db/app", Location(("/tmp/sock dir",), ("5433",), "app"))
    assert new == "postgresql://app@%2Ftmp%2Fsock%20dir:5433/app"
    assert conninfo_to_dict(new)["host"] == "/tmp/sock dir"


def test_key_value_stays_key_value_with_its_other_keywords() -> None:
    app = "host=old port=1 user=app password='a b\\'c' dbname=x sslmode=require hostaddr=10.0.0.1"
    new = repoint(app, RESTORED)
    assert not new.startswith("postgres")
    assert conninfo_to_dict(new) == {"host": "127.0.0.1", "port": "49001", "dbname": "app",
                                     "user": "app", "password": "a b'c", "sslmode": "require"}


def test_an_invalid_application_string_is_a_redacted_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        repoint("host=db password=topsecret bogus=1", RESTORED)
    assert "topsecret" not in str(err.value)


# -- pooled or direct ----------------------------------------------------------------------------


def test_uses_pooler() -> None:
    assert uses_pooler("postgresql://u@db/app?pgbouncer=true")
    assert uses_pooler("postgresql://u@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/db")
    assert not uses_pooler("postgresql://u@ep-cool-darkness-123456.us-east-2.aws.neon.tech/db")
    assert not uses_pooler("postgresql://u@db/app?pgbouncer=false&schema=public")


def test_swap_values_pooled_key_to_pooled_host_direct_key_to_direct_host() -> None:
    direct = SecretStr("postgresql://neon:x@ep-new-1.us-east-2.aws.neon.tech/app?sslmode=require")
    pooled = SecretStr("postgresql://neon:x@ep-new-1-pooler.us-east-2.aws.neon.tech/app"
                       "?sslmode=require")
    current = {
        "DATABASE_URL": SecretStr("postgresql://app:pw@ep-old-9-pooler.us-east-2.aws.neon.tech/"
                                  "app?sslmode=require&pgbouncer=true&connection_limit=1"),
        "DIRECT_URL": SecretStr("postgresql://app:pw@ep-old-9.us-east-2.aws.neon.tech/app"
                                "?sslmode=require"),
    }
    new = swap_values(current, direct, pooled)
    assert new["DATABASE_URL"].value.get_secret_value() == (
        "postgresql://app:pw@ep-new-1-pooler.us-east-2.aws.neon.tech/app"
        "?sslmode=require&pgbouncer=true&connection_limit=1")
    assert new["DATABASE_URL"].how == "pooled"
    assert new["DIRECT_URL"].value.get_secret_value() == (
        "postgresql://app:pw@ep-new-1.us-east-2.aws.neon.tech/app?sslmode=require")
    # Without a pooled location, the pooled key goes to the direct host (options kept).
    alone = swap_values(current, direct)
    assert "ep-new-1.us-east-2" in alone["DATABASE_URL"].value.get_secret_value()
    assert alone["DATABASE_URL"].how.startswith("direct")


def test_swap_values_a_missing_key_gets_a_url_with_the_applications_user() -> None:
    current = {"DATABASE_URL": SecretStr(f"postgresql://app:pw@127.0.0.1:5496/app{PRISMA}"),
               "DIRECT_URL": None}
    new = swap_values(current, SecretStr(PROVIDER_DSN))
    direct = new["DIRECT_URL"].value.get_secret_value()
    assert direct == "postgresql://app:pw@127.0.0.1:49001/app"
    assert new["DIRECT_URL"].how.startswith("had no value")
    # Nobody has a value: restorekit's own role (the provider DSN's) is never handed out.
    with pytest.raises(ConfigError, match="never hands the application restorekit's own role"):
        swap_values({"DATABASE_URL": None}, SecretStr(PROVIDER_DSN))


# -- forms, redaction, display ------------------------------------------------------------------


def test_to_url_round_trips_a_key_value_dsn() -> None:
    kv = "host=::1,h2 port=5,6 user=u password='p @/' dbname='a b' sslmode=require"
    url = to_url(kv)
    assert url == "postgresql://u:p%20%40%2F@[::1]:5,h2:6/a%20b?sslmode=require"
    assert conninfo_to_dict(url) == conninfo_to_dict(kv)


def test_redact_hides_passwords_in_every_form_and_keeps_the_options() -> None:
    text = ("postgresql://u:secret1@h/db?password=secret2&schema=public "
            "host=h password=secret3 sslpassword='secret 4' dbname=x")
    shown = redact(text)
    for secret in ("secret1", "secret2", "secret3", "secret 4"):
        assert secret not in shown
    assert "schema=public" in shown and "dbname=x" in shown


def test_display_shows_the_application_options_never_the_password() -> None:
    shown = display(f"postgresql://app@db:5432/app{PRISMA}&password=s3cret")
    assert shown == f"postgresql://app:***@db:5432/app{PRISMA}"
    assert display("host=db user=app password=x dbname=app") == "postgresql://app:***@db/app"


# -- properties ----------------------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                max_size=12).filter(lambda s: "\x00" not in s)
_hostname = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,8}){0,2}", fullmatch=True)
_ipv6 = st.ip_addresses(v=6).map(str)
_host = st.one_of(_hostname, _ipv6)
_port = st.one_of(st.just(""), st.integers(1, 65535).map(str))
_app_keys = st.sampled_from(["schema", "connection_limit", "pool_timeout", "pgbouncer",
                             "sslaccept", "socket_timeout", "statement_cache_size"])
_libpq_keys = st.sampled_from(["sslmode", "application_name", "connect_timeout"])


@st.composite
def app_urls(draw: st.DrawFn) -> tuple[str, str, str, list[tuple[str, str]]]:
    user, password = draw(_text), draw(_text)
    scheme = draw(st.sampled_from(["postgresql", "postgres"]))
    hosts = draw(st.lists(st.tuples(_host, _port), min_size=1, max_size=3))
    hostspec = ",".join((f"[{h}]" if ":" in h else h) + (f":{p}" if p else "") for h, p in hosts)
    query = draw(st.lists(st.tuples(st.one_of(_app_keys, _libpq_keys), _text), max_size=5,
                          unique_by=lambda kv: kv[0]))
    encoded = "&".join(f"{k}={quote(v, safe='')}" for k, v in query)
    url = (f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{hostspec}/"
           f"{quote(draw(_text), safe='')}" + (f"?{encoded}" if encoded else ""))
    return url, user, password, query


@st.composite
def locations(draw: st.DrawFn) -> Location:
    hosts = tuple(draw(st.lists(_host, min_size=1, max_size=3)))
    ports = tuple(draw(st.lists(_port, min_size=len(hosts), max_size=len(hosts))))
    return Location(hosts=hosts, ports=ports if any(ports) else (), dbname=draw(_text))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(app_urls(), locations())
def test_repoint_round_trip(app: tuple[str, str, str, list[tuple[str, str]]],
                            to: Location) -> None:
    url, user, password, query = app
    new = repoint(url, to)
    assert new.split("://")[0] == url.split("://")[0]
    assert new.split("@", 1)[0] == url.split("@", 1)[0]  # user info byte for byte
    assert new.partition("?")[2] == url.partition("?")[2]  # the query verbatim, in order
    params = conninfo_to_dict(libpq_dsn(new))
    assert (params["user"], params["password"]) == (user, password)
    got = location_of(new)
    assert got.host_ports() == to.host_ports() and got.dbname == to.dbname
    assert app_options(new) == tuple(
        (k, v) for k, v in query if k not in ("sslmode", "application_name", "connect_timeout"))
    assert redact(new).split("@", 1)[0] == f"{new.split('://')[0]}://{quote(user, safe='')}:***"
    # Re-pointing again at the same place changes nothing (a re-run of the swap).
    assert repoint(new, to) == new


def test_at_address_keeps_the_certificates_name_under_verify_full() -> None:
    from restorekit.pg.dsn import at_address

    source = ("host=db.example.com,db2.example.com port=5432,5433 user=rk dbname=app "
              "sslmode=verify-full sslrootcert=/etc/ca.pem application_name=x")
    got = conninfo_to_dict(at_address(source, "127.0.0.1", 40001, "app"))
    assert got == {"host": "db.example.com", "hostaddr": "127.0.0.1", "port": "40001",
                   "user": "rk", "dbname": "app", "sslmode": "verify-full",
                   "sslrootcert": "/etc/ca.pem", "application_name": "x"}
    # Other sslmodes check no name: the copy's own host. A socket directory takes no TLS.
    plain = conninfo_to_dict(at_address(source.replace("verify-full", "require"), "10.0.0.7",
                                        5, "other"))
    assert (plain["host"], plain.get("hostaddr"), plain["dbname"]) == ("10.0.0.7", None, "other")
    assert conninfo_to_dict(at_address(source, "/run/pg", 5, "app"))["host"] == "/run/pg"
    # A name is resolved: every address is tried, each checked against the certificate's name
    # ("localhost" may be ::1 first, where a copy listening on 127.0.0.1 is not).
    named = conninfo_to_dict(at_address(source, "localhost", 5, "app"))
    addresses = named["hostaddr"].split(",")
    assert "127.0.0.1" in addresses
    assert named["host"].split(",") == ["db.example.com"] * len(addresses)
    with pytest.raises(ConfigError, match="cannot resolve 'no-such-host.invalid'"):
        at_address(source, "no-such-host.invalid", 5, "app")


def test_neon_pooled_dsn_is_the_endpoint_host_with_pooler() -> None:
    from restorekit.providers.neon import _pooled

    uri = ("postgresql://alex:AbC123dEf@ep-cool-darkness-123456.us-east-2.aws.neon.tech/dbname"
           "?sslmode=require&channel_binding=require")
    pooled = _pooled(uri)
    assert pooled is not None and pooled.get_secret_value() == uri.replace(
        "ep-cool-darkness-123456.", "ep-cool-darkness-123456-pooler.")
    assert _pooled("postgresql://neon@127.0.0.1:5433/app") is None  # not an endpoint host
    assert _pooled(pooled.get_secret_value()) is None  # already pooled

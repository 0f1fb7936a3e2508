"""restorekit.toml validation: every mistake is an error naming the key, before anything runs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from restorekit.config import load_settings, settings_from_dict
from restorekit.errors import ConfigError

BASE = {"dsn": "host=127.0.0.1 user=postgres dbname=app", "repository": "/srv/repo"}


def settings(**target: object) -> object:
    return settings_from_dict({"targets": {"production": {**BASE, **target}}})


def test_a_minimal_target_loads_with_the_runbook_objectives() -> None:
    s = settings(tier="critical")
    assert s.target("production").engine == "native"
    assert s.objectives("critical") == (timedelta(hours=1), timedelta(minutes=15))
    assert s.objectives("non-critical") == (timedelta(hours=24), timedelta(hours=24))


def test_tier_overrides() -> None:
    s = settings_from_dict({"targets": {"p": BASE},
                            "tiers": {"standard": {"rto_minutes": 30, "rpo_minutes": 5}}})
    assert s.objectives("standard") == (timedelta(minutes=30), timedelta(minutes=5))
    with pytest.raises(ConfigError, match="unknown tier"):
        settings_from_dict({"targets": {"p": BASE},
                            "tiers": {"gold": {"rto_minutes": 1, "rpo_minutes": 1}}})


@pytest.mark.parametrize("dsn", ["host=db user=app password=hunter2 dbname=app",
                                 "postgresql://app:hunter2@db/app"])
def test_a_password_in_the_config_is_refused_without_echoing_it(dsn: str) -> None:
    with pytest.raises(ConfigError, match="contains a password") as info:
        settings(dsn=dsn)
    assert "hunter2" not in str(info.value)


def test_an_applications_url_as_the_dsn_names_the_options_libpq_refuses() -> None:
    """The application's DATABASE_URL pasted as restorekit's own DSN: libpq refuses Prisma's
    query options, and the error says which ones instead of only "not valid"."""
    with pytest.raises(ConfigError, match=r"\(schema, connection_limit: not libpq connection "
                       "options but an application's"):
        settings(dsn="postgresql://app@db/app?schema=public&connection_limit=1&sslmode=require")


@pytest.mark.parametrize(("change", "message"), [
    ({"dsn_env": "DB"}, "exactly one of dsn or dsn_env"),
    ({"engine": "pgbackrest"}, "needs data_dir, socket_dir"),
    ({"tier": "gold"}, "tier"),
    ({"colour": "blue"}, "colour"),
    ({"app": {"kind": "local"}}, "env_file and port"),
    ({"connection": {"kind": "envfile"}}, "needs path"),
    ({"verify": {"row_count_tolerance": 2}}, "row_count_tolerance"),
])
def test_contradictions_and_unknown_keys_name_the_key(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(**change)


def test_target_names_and_unknown_targets() -> None:
    with pytest.raises(ConfigError, match="lower-case"):
        settings_from_dict({"targets": {"Prod; DROP": BASE}})
    with pytest.raises(ConfigError, match="known targets: production"):
        settings().target("staging")


def test_sections_drill_notify_webhook() -> None:
    s = settings_from_dict({
        "targets": {"p": BASE},
        "drill": {"cron": "30 2 * * 0", "timezone": "Europe/Berlin", "point": "random"},
        "notify": {"webhook_url_env": "SLACK", "prefect_blocks": ["slack-webhook/oncall"]},
        "webhook": {"secret_env": "PD_SECRET", "rules": [
            {"deployment": "complete-failure/p", "priorities": ["P1"]}]},
    })
    assert s.drill.timezone == "Europe/Berlin"
    assert s.webhook is not None and s.webhook.rules[0].deployment == "complete-failure/p"
    for bad, message in [({"drill": {"cron": "weekly"}}, "5 fields"),
                         ({"drill": {"timezone": "Mars/Olympus"}}, "unknown timezone"),
                         ({"notify": {"prefect_blocks": ["oncall"]}}, "block-type-slug"),
                         ({"surprise": {}}, "unknown section")]:
        with pytest.raises(ConfigError, match=message):
            settings_from_dict({"targets": {"p": BASE}, **bad})


def test_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[targets.p\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    good = tmp_path / "restorekit.toml"
    good.write_text('[restorekit]\nstate_dir = "state"\n'
                    '[targets.p]\ndsn = "host=x"\nrepository = "/r"\n')
    assert load_settings(good).state_dir == tmp_path / "state"

"""restorekit.production: the adopted production recorded in state and laid over the config;
protection that never undoes a restore (issue 12, part 1)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from restorekit import production
from restorekit.config import settings_from_dict
from restorekit.errors import ConfigError, PostgresError


def _settings(tmp_path: Path, **target: Any) -> Any:
    body = {"provider": "selfhosted", "repository": "file:///srv/repo", **target}
    return settings_from_dict({"restorekit": {"state_dir": str(tmp_path / "state")},
                               "targets": {"production": body}})


def _adopt(tmp_path: Path, **location: Any) -> production.Production:
    return production.record_adoption(tmp_path / "state", target="production",
                                      provider="selfhosted", location=location,
                                      incident="inc-1", restore_name="cf-inc-1")


def test_without_a_record_the_config_is_production(tmp_path: Path) -> None:
    settings = _settings(tmp_path, dsn="host=db1 port=5432 user=rk dbname=app")
    assert settings.target("production").resolve_dsn() == "host=db1 port=5432 user=rk dbname=app"


def test_the_record_repoints_a_dsn_env_url_keeping_its_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RK_PROD_DSN", "postgresql://rk:s%40cret@db1:5432/app?sslmode=prefer")
    settings = _settings(tmp_path, dsn_env="RK_PROD_DSN")
    _adopt(tmp_path, host="127.0.0.1", port=54321, dbname="app", data_dir="/srv/r/data")
    target = settings.target("production")
    assert target.resolve_dsn() == "postgresql://rk:s%40cret@127.0.0.1:54321/app?sslmode=prefer"
    assert target.data_dir == Path("/srv/r/data")
    assert settings.targets["production"].data_dir is None  # the file's model is untouched
    raw = production.record_path(tmp_path / "state", "production").read_text()
    assert "s%40cret" not in raw and "cret" not in raw


def test_a_second_adoption_keeps_the_first_in_the_history(tmp_path: Path) -> None:
    first = _adopt(tmp_path, host="h", port=1)
    assert _adopt(tmp_path, host="h", port=1).adopted_at == first.adopted_at  # a re-run
    second = production.record_adoption(tmp_path / "state", target="production",
                                        provider="selfhosted", location={"host": "h", "port": 2})
    assert second.port == 2 and [p["port"] for p in second.previous] == [1]
    assert production.load(tmp_path / "state", "production") == second


def test_a_damaged_record_stops_every_command(tmp_path: Path) -> None:
    settings = _settings(tmp_path, dsn="host=db1 user=rk dbname=app")
    path = production.record_path(tmp_path / "state", "production")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="production record .* is damaged"):
        settings.target("production")


def test_a_record_for_another_provider_is_ignored(tmp_path: Path) -> None:
    settings = _settings(tmp_path, dsn="host=db1 user=rk dbname=app")
    production.record_adoption(tmp_path / "state", target="production", provider="neon",
                               location={"branch_id": "br-x-1"})
    assert settings.target("production").resolve_dsn() == "host=db1 user=rk dbname=app"


class _Failing:
    kind: ClassVar[str] = "selfhosted"

    def resume_protection(self) -> production.Protection:
        raise PostgresError("archiver stuck: password=hunter2 refused")


class _Fine:
    kind: ClassVar[str] = "selfhosted"

    def resume_protection(self) -> production.Protection:
        return production.Protection(protected=True, backup_id="20261206T1",
                                     first_backup_at=datetime(2026, 12, 6, tzinfo=UTC),
                                     detail="WAL archived by native on timeline 2")


def test_a_failure_to_protect_is_reported_never_raised(tmp_path: Path) -> None:
    _adopt(tmp_path, host="h", port=1)
    result = production.protect(_Failing(), state_dir=tmp_path / "state", target="production")
    line = result.line()
    assert not result.protected
    assert line.startswith("Protected again: no — PostgresError: archiver stuck")
    assert "hunter2" not in line and "restorekit backup --target production" in line
    saved = json.loads(production.record_path(tmp_path / "state", "production").read_text())
    assert saved["protection"]["protected"] is False


def test_protected_line_names_the_first_backup(tmp_path: Path) -> None:
    result = production.protect(_Fine(), state_dir=tmp_path / "state", target="production")
    assert result.line() == ("Protected again: yes, first backup at 2026-12-06T00:00:00+00:00 "
                             "(20261206T1); WAL archived by native on timeline 2")

"""Contract tests for the Prefect Secret block store, against a real Prefect server."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from prefect.blocks.system import Secret
from pydantic import SecretStr

from restorekit.errors import ConfigError, ProviderError
from restorekit.sinks import base as sinks_base
from restorekit.sinks.base import ConnectionStore, Revision
from tasks.secret_block import PrefectSecretStore, register_prefect_secret_store

OLD = "postgresql://app:old-pass-1@db-old.internal:5432/shop"
NEW = "postgresql://app:new-pass-2@db-restored.internal:5432/shop"


@pytest.fixture
def block_name(prefect_server: str) -> str:
    return f"rk-test-{uuid.uuid4().hex[:10]}"


def saved(name: str, value: Any) -> None:
    Secret(value=value).save(name, overwrite=True)


def value_of(name: str) -> Any:
    return Secret.load(name).value.get_secret_value()


def exists(name: str) -> bool:
    try:
        Secret.load(name)
    except ValueError:
        return False
    return True


@pytest.fixture
def registry() -> Iterator[None]:
    saved_registry = dict(sinks_base._REGISTRY)
    yield
    sinks_base._REGISTRY.clear()
    sinks_base._REGISTRY.update(saved_registry)


def test_register_makes_the_registry_build_it(block_name: str, registry: None) -> None:
    register_prefect_secret_store()
    saved(block_name, OLD)
    # As restorekit.runtime calls it: key= plus the [connection.options] dict.
    store = sinks_base.get_store("prefect-secret", key="DATABASE_URL", block_name=block_name)
    assert isinstance(store, PrefectSecretStore) and isinstance(store, ConnectionStore)
    assert store.read().get_secret_value() == OLD


def test_write_keeps_the_old_value_in_a_backup_block_and_restore_copies_it_back(
        block_name: str) -> None:
    saved(block_name, OLD)
    store = PrefectSecretStore(block_name,
                               clock=lambda: datetime(2026, 11, 25, 13, 52, 15, 123456, UTC))

    revision = store.write(SecretStr(NEW))

    assert revision.ref == f"{block_name}-restorekit-previous-20261125t135215123456z"
    assert "pass" not in revision.model_dump_json()
    assert value_of(revision.ref) == OLD
    assert value_of(block_name) == NEW
    assert store.read().get_secret_value() == NEW

    store.restore(revision)
    assert value_of(block_name) == OLD
    store.restore(revision)  # idempotent
    assert value_of(block_name) == OLD


def test_two_writes_in_the_same_instant_get_distinct_backups(block_name: str) -> None:
    saved(block_name, OLD)
    instant = datetime(2026, 11, 25, 13, 52, 15, tzinfo=UTC)
    store = PrefectSecretStore(block_name, clock=lambda: instant)
    first = store.write(SecretStr(NEW))
    second = store.write(SecretStr(OLD))
    assert first.ref != second.ref and (second.ref or "").endswith("-1")
    assert value_of(first.ref or "") == OLD and value_of(second.ref or "") == NEW


def test_a_missing_block_is_created_and_restore_removes_it(block_name: str) -> None:
    store = PrefectSecretStore(block_name)
    with pytest.raises(ConfigError, match="no such block"):
        store.read()
    revision = store.write(SecretStr(NEW))
    assert revision.ref is None and value_of(block_name) == NEW
    store.restore(revision)
    assert not exists(block_name)
    store.restore(revision)  # idempotent


def test_a_block_holding_json_is_not_a_connection_string(block_name: str) -> None:
    saved(block_name, {"DATABASE_URL": OLD})
    with pytest.raises(ConfigError, match="holds a dict") as caught:
        PrefectSecretStore(block_name).read()
    assert "old-pass-1" not in str(caught.value)


@pytest.mark.parametrize("name", ["Upper", "under_score", "", "-leading", "x" * 101])
def test_block_names_are_validated(name: str) -> None:
    with pytest.raises(ConfigError, match="block_name"):
        PrefectSecretStore(name)


def test_restore_refuses_foreign_revisions_and_blocks(block_name: str) -> None:
    saved(block_name, OLD)
    saved("some-other-secret", "postgresql://app:x@other/db")
    store = PrefectSecretStore(block_name)
    with pytest.raises(ConfigError, match="cannot be restored into"):
        store.restore(Revision(store="envfile", location=store.describe(), ref=None))
    with pytest.raises(ConfigError, match="is not a restorekit backup"):
        store.restore(Revision(store=store.kind, location=store.describe(),
                               ref="some-other-secret"))
    assert value_of(block_name) == OLD


def test_a_vanished_backup_is_a_clear_error(block_name: str) -> None:
    saved(block_name, OLD)
    store = PrefectSecretStore(block_name)
    revision = store.write(SecretStr(NEW))
    Secret.delete(revision.ref or "")
    with pytest.raises(ProviderError, match="backup block .* is gone"):
        store.restore(revision)
    assert value_of(block_name) == NEW


class ReadBackDiffers(PrefectSecretStore):
    """The real store whose read-back of the main block lies once the new value was saved."""

    saved_new = False

    def _save(self, name: str, value: str, operation: str, *, overwrite: bool = True) -> None:
        super()._save(name, value, operation, overwrite=overwrite)
        self.saved_new = self.saved_new or value == NEW

    def _load(self, name: str, operation: str) -> str | None:
        value = super()._load(name, operation)
        if self.saved_new and name == self.block_name and value == NEW:
            return "postgresql://app:x@elsewhere/shop"
        return value


def test_a_read_back_that_differs_puts_the_old_value_back(block_name: str) -> None:
    saved(block_name, OLD)
    with pytest.raises(ProviderError) as caught:
        ReadBackDiffers(block_name).write(SecretStr(NEW))
    assert "differs from the value written; the previous value was put back" in str(caught.value)
    assert value_of(block_name) == OLD
    assert not re.search(r"(old|new)-pass", str(caught.value))


def test_an_unreachable_prefect_api_is_a_retryable_provider_error(block_name: str) -> None:
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_CLIENT_MAX_RETRIES,
        temporary_settings,
    )

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api",
                             PREFECT_CLIENT_MAX_RETRIES: 0}):
        with pytest.raises(ProviderError) as caught:
            PrefectSecretStore(block_name).read()
    assert caught.value.is_retryable

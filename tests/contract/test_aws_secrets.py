"""Contract tests for the Secrets Manager store, against moto's real server (``moto_server``).

Reads in these tests always name the stage (``VersionStage=...``): moto (5.2.x) answers a
``get_secret_value`` without one with the last *written* version even after the AWSCURRENT
label was moved, where AWS answers with AWSCURRENT.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from pydantic import SecretStr

from restorekit.errors import ConfigError, ProviderError
from restorekit.sinks import base as sinks_base
from restorekit.sinks.aws_secrets import SecretsManagerStore
from restorekit.sinks.base import ConnectionStore, Revision

OLD = "postgresql://app:old-pass-1@db-old.internal:5432/shop"
NEW = "postgresql://app:new-pass-2@db-restored.internal:5432/shop"
REGION = "us-east-1"


@pytest.fixture
def sm(moto_server: str) -> Any:
    return boto3.client("secretsmanager", endpoint_url=moto_server, region_name=REGION)


@pytest.fixture
def secret(sm: Any) -> Callable[[str], tuple[str, str]]:
    """Create a secret with a value; returns (name, VersionId)."""

    def create(value: str) -> tuple[str, str]:
        name = f"rk/{uuid.uuid4().hex[:10]}/database"
        created = sm.create_secret(Name=name, SecretString=value)
        return name, created["VersionId"]

    return create


@pytest.fixture
def store(moto_server: str) -> Callable[..., SecretsManagerStore]:
    def make(secret_id: str, **options: Any) -> SecretsManagerStore:
        return SecretsManagerStore(secret_id, region=REGION, endpoint_url=moto_server, **options)

    return make


def stage(sm: Any, name: str, label: str) -> tuple[str, str]:
    got = sm.get_secret_value(SecretId=name, VersionStage=label)
    return got["VersionId"], got["SecretString"]


def version_count(sm: Any, name: str) -> int:
    return len(sm.list_secret_version_ids(SecretId=name, IncludeDeprecated=True)["Versions"])


def test_registry_builds_it_from_config_options(moto_server: str, secret: Any) -> None:
    saved = dict(sinks_base._REGISTRY)
    try:
        sinks_base.register("aws-secrets-manager",
                            "restorekit.sinks.aws_secrets:SecretsManagerStore")
        name, _ = secret(OLD)
        # As restorekit.runtime calls it: key= plus the [connection.options] dict.
        built = sinks_base.get_store("aws-secrets-manager", key="DATABASE_URL", secret_id=name,
                                     region=REGION, endpoint_url=moto_server)
        assert isinstance(built, ConnectionStore)
        assert built.read().get_secret_value() == OLD
    finally:
        sinks_base._REGISTRY.clear()
        sinks_base._REGISTRY.update(saved)


def test_write_moves_awscurrent_and_keeps_the_old_value_as_awsprevious(
        sm: Any, secret: Any, store: Any) -> None:
    name, old_id = secret(OLD)
    s = store(name)

    revision = s.write(SecretStr(NEW))

    assert revision.ref == old_id  # the previous version id: no secret in the revision
    assert "pass" not in revision.model_dump_json()
    new_id, current = stage(sm, name, "AWSCURRENT")
    assert current == NEW and new_id == s.request_token(NEW)
    assert stage(sm, name, "AWSPREVIOUS") == (old_id, OLD)
    assert s.read().get_secret_value() == NEW


def test_restore_moves_awscurrent_back_to_the_very_same_version(
        sm: Any, secret: Any, store: Any) -> None:
    name, old_id = secret(OLD)
    s = store(name)
    revision = s.write(SecretStr(NEW))
    new_id, _ = stage(sm, name, "AWSCURRENT")

    s.restore(revision)

    assert stage(sm, name, "AWSCURRENT") == (old_id, OLD)
    assert stage(sm, name, "AWSPREVIOUS") == (new_id, NEW)  # the label moved with it
    assert version_count(sm, name) == 2  # no new version: the old one is current again
    s.restore(revision)  # idempotent
    assert stage(sm, name, "AWSCURRENT") == (old_id, OLD)
    assert s.read().get_secret_value() == OLD


def test_a_retried_write_reuses_its_version_and_still_becomes_current(
        sm: Any, secret: Any, store: Any) -> None:
    name, old_id = secret(OLD)
    s = store(name, run_key="flow-run-7f3a")
    revision = s.write(SecretStr(NEW))
    s.restore(revision)  # e.g. verification failed and the task is retried in the same run

    again = s.write(SecretStr(NEW))

    # Same run + same value = same ClientRequestToken: Secrets Manager ignores the put (no
    # third version, labels untouched), and the store moves AWSCURRENT onto it itself.
    assert version_count(sm, name) == 2
    assert again.ref == old_id
    assert stage(sm, name, "AWSCURRENT")[1] == NEW
    assert stage(sm, name, "AWSPREVIOUS") == (old_id, OLD)


def test_a_new_value_after_a_restore_gets_the_aws_label_semantics(
        sm: Any, secret: Any, store: Any) -> None:
    name, old_id = secret(OLD)
    s = store(name)
    s.restore(s.write(SecretStr(NEW)))
    third = "postgresql://app:third-pass@db-3.internal:5432/shop"

    revision = s.write(SecretStr(third))

    assert revision.ref == old_id
    assert stage(sm, name, "AWSCURRENT")[1] == third
    assert stage(sm, name, "AWSPREVIOUS") == (old_id, OLD)
    stages = sm.describe_secret(SecretId=name)["VersionIdsToStages"]
    assert sum("AWSCURRENT" in labels for labels in stages.values()) == 1


def test_request_tokens_are_deterministic_per_run_and_value(store: Any) -> None:
    a = store("s", run_key="run-1")
    assert a.request_token(NEW) == store("s", run_key="run-1").request_token(NEW)
    assert a.request_token(NEW) != a.request_token(OLD)
    assert a.request_token(NEW) != store("s", run_key="run-2").request_token(NEW)
    assert a.request_token(NEW) != store("other", run_key="run-1").request_token(NEW)
    assert store("s").request_token(NEW) == store("s").request_token(NEW)
    assert 32 <= len(a.request_token(NEW)) <= 64  # ClientRequestToken's length rule


def test_writing_the_current_value_changes_nothing(sm: Any, secret: Any, store: Any) -> None:
    name, old_id = secret(OLD)
    revision = store(name).write(SecretStr(OLD))
    assert revision.ref == old_id and version_count(sm, name) == 1


def test_json_secret_keeps_its_other_keys(sm: Any, secret: Any, store: Any) -> None:
    original = json.dumps({"REDIS_URL": "redis://cache:6379", "DATABASE_URL": OLD,
                           "nested": {"a": [1, 2]}})
    name, _ = secret(original)
    s = store(name, json_key="DATABASE_URL")
    assert s.read().get_secret_value() == OLD

    revision = s.write(SecretStr(NEW))

    written = json.loads(stage(sm, name, "AWSCURRENT")[1])
    assert written == {"REDIS_URL": "redis://cache:6379", "DATABASE_URL": NEW,
                       "nested": {"a": [1, 2]}}
    assert list(written) == ["REDIS_URL", "DATABASE_URL", "nested"]
    s.restore(revision)
    assert stage(sm, name, "AWSCURRENT")[1] == original  # byte for byte


def test_json_key_problems_are_config_errors_without_the_secret(
        secret: Any, store: Any) -> None:
    raw, _ = secret(OLD)
    with pytest.raises(ConfigError, match="not a JSON object") as caught:
        store(raw, json_key="DATABASE_URL").write(SecretStr(NEW))
    assert "old-pass-1" not in str(caught.value) and "new-pass-2" not in str(caught.value)
    other, _ = secret(json.dumps({"URL": OLD}))
    with pytest.raises(ConfigError, match="no key 'DATABASE_URL'"):
        store(other, json_key="DATABASE_URL").read()


def test_a_missing_secret_is_a_config_error_naming_it(store: Any) -> None:
    for action in ("read", "write"):
        s = store("rk/does-not-exist")
        with pytest.raises(ConfigError, match="secret 'rk/does-not-exist' not found in region"):
            s.read() if action == "read" else s.write(SecretStr(NEW))


def test_a_secret_without_a_value_is_refused_before_writing(sm: Any, store: Any) -> None:
    name = f"rk/{uuid.uuid4().hex[:10]}/empty"
    sm.create_secret(Name=name)
    with pytest.raises(ConfigError, match="no AWSCURRENT value yet"):
        store(name).write(SecretStr(NEW))
    assert version_count(sm, name) == 0


class ReadBackDiffers:
    """A real client whose get_secret_value lies once the new value was put (one seam)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.put = False

    def put_secret_value(self, **kwargs: Any) -> Any:
        self.put = True
        return self._real.put_secret_value(**kwargs)

    def get_secret_value(self, **kwargs: Any) -> Any:
        got = self._real.get_secret_value(**kwargs)
        if self.put and got["SecretString"] == NEW:
            return {**got, "SecretString": "postgresql://app:x@elsewhere/shop"}
        return got

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_a_read_back_that_differs_moves_awscurrent_back(sm: Any, secret: Any) -> None:
    name, old_id = secret(OLD)
    s = SecretsManagerStore(name, region=REGION, client=ReadBackDiffers(sm))
    with pytest.raises(ProviderError) as caught:
        s.write(SecretStr(NEW))
    assert "differs from the value written" in str(caught.value)
    assert f"AWSCURRENT is back on the previous version {old_id}" in str(caught.value)
    assert stage(sm, name, "AWSCURRENT") == (old_id, OLD)
    assert "new-pass-2" not in str(caught.value) and "old-pass-1" not in str(caught.value)


class Raises:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        def call(**kwargs: Any) -> Any:
            raise self.error
        return call


@pytest.mark.parametrize("code, retryable", [
    ("ThrottlingException", True),
    ("InternalServiceError", True),
    ("AccessDeniedException", False),
    ("DecryptionFailure", False),
    ("InvalidRequestException", False),
])
def test_aws_errors_are_translated(code: str, retryable: bool) -> None:
    error = ClientError({"Error": {"Code": code, "Message": f"{code} happened"},
                         "ResponseMetadata": {"HTTPStatusCode": 400}}, "GetSecretValue")
    s = SecretsManagerStore("rk/x", region=REGION, client=Raises(error))
    with pytest.raises(ProviderError) as caught:
        s.read()
    assert caught.value.is_retryable is retryable
    assert f"{code}: {code} happened" in str(caught.value)
    assert caught.value.__cause__ is error


def test_an_unreachable_endpoint_is_retryable() -> None:
    s = SecretsManagerStore("rk/x", region=REGION, endpoint_url="http://127.0.0.1:9",
                            max_attempts=1, connect_timeout=1)
    with pytest.raises(ProviderError) as caught:
        s.read()
    assert caught.value.is_retryable


def test_restore_refuses_foreign_or_vanished_versions(sm: Any, secret: Any,
                                                      store: Any) -> None:
    name, _ = secret(OLD)
    s = store(name)
    with pytest.raises(ConfigError, match="cannot be restored into"):
        s.restore(Revision(store="envfile", location=s.describe(), ref="x" * 32))
    with pytest.raises(ConfigError, match="not a secret version id"):
        s.restore(Revision(store=s.kind, location=s.describe(), ref="../etc"))
    with pytest.raises(ConfigError, match="no longer exists"):
        s.restore(Revision(store=s.kind, location=s.describe(), ref=str(uuid.uuid4())))
    assert stage(sm, name, "AWSCURRENT")[1] == OLD


def test_no_secret_reaches_the_logs(sm: Any, secret: Any, store: Any,
                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="restorekit")
    name, _ = secret(OLD)
    s = store(name)
    s.restore(s.write(SecretStr(NEW)))
    assert "pass" not in caplog.text and caplog.text

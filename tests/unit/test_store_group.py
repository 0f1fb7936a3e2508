"""Several keys that move together (DATABASE_URL + DIRECT_URL): all written or none, all put
back in reverse order, idempotently; config, runtime and AWS Secrets Manager with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr

from restorekit.config import settings_from_dict
from restorekit.errors import ConfigError, ProviderError, SafetyError
from restorekit.runtime import TargetRuntime
from restorekit.sinks.base import Revision
from restorekit.sinks.envfile import EnvFileStore
from restorekit.sinks.group import StoreGroup, swap

OLD_POOLED = "postgresql://app:pw@127.0.0.1:6432/app?schema=public&pgbouncer=true&connection_limit=5"
OLD_DIRECT = "postgresql://app:pw@127.0.0.1:5496/app?schema=public&connection_limit=5&pool_timeout=10"
ORIGINAL = (f"# prisma\nDATABASE_URL=\"{OLD_POOLED}\"\nOTHER=1\n"
            f"DIRECT_URL='{OLD_DIRECT}'\n")
RESTORED = SecretStr("host=127.0.0.1 port=49001 user=postgres password=su dbname=app")
KEYS = ("DATABASE_URL", "DIRECT_URL")


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / "app.env"
    path.write_text(ORIGINAL)
    return path


def group_of(env_file: Path, keys: tuple[str, ...] = KEYS) -> StoreGroup:
    return StoreGroup({k: EnvFileStore(env_file, key=k) for k in keys})


class Failing:
    """A store whose writes fail after the group's first key was written."""

    kind: ClassVar[str] = "failing"
    key = "DIRECT_URL"

    def describe(self) -> str:
        return "failing store (DIRECT_URL)"

    def read(self) -> SecretStr:
        return SecretStr(OLD_DIRECT)

    def write(self, dsn: SecretStr) -> Revision:
        raise ProviderError("failing store: write failed: 503", provider="failing",
                            operation="write", retryable=True)

    def restore(self, revision: Revision) -> None:
        raise AssertionError("never written: nothing to restore")


def test_both_keys_are_swapped_in_their_own_form(env_file: Path) -> None:
    swapped = swap(group_of(env_file), RESTORED)
    assert EnvFileStore(env_file, key="DATABASE_URL").read().get_secret_value() == \
        OLD_POOLED.replace("6432", "49001")
    assert EnvFileStore(env_file, key="DIRECT_URL").read().get_secret_value() == \
        OLD_DIRECT.replace("5496", "49001")
    assert "OTHER=1" in env_file.read_text() and env_file.read_text().startswith("# prisma\n")
    revision = swapped.revision
    assert revision.store == "group" and [m.location for m in revision.members] == [
        f"env file {env_file} (DATABASE_URL)", f"env file {env_file} (DIRECT_URL)"]
    # Secret-free and JSON round-trippable (it is kept in Prefect's state).
    dumped = json.dumps(revision.model_dump(mode="json"))
    assert "pw" not in dumped and "su" not in dumped.replace("succeeded", "")
    assert Revision(**json.loads(dumped)) == revision


def test_restore_puts_both_back_in_reverse_order_idempotently(env_file: Path) -> None:
    group = group_of(env_file)
    revision = swap(group, RESTORED).revision
    group.restore(revision)
    assert env_file.read_text() == ORIGINAL
    group.restore(revision)  # a rollback hook may run twice
    assert env_file.read_text() == ORIGINAL


def test_second_key_fails_then_the_first_is_put_back(env_file: Path) -> None:
    # DIRECT_URL's new value cannot be stored (a newline): the store refuses before writing,
    # after DATABASE_URL was written.
    group = group_of(env_file)
    with pytest.raises(ConfigError, match="DATABASE_URL put back"):
        group.write_all({"DATABASE_URL": SecretStr("postgresql://app@new/app"),
                         "DIRECT_URL": SecretStr("postgresql://app@new/app\nINJECTED=1")})
    assert env_file.read_text() == ORIGINAL


def test_a_failing_remote_store_keeps_its_error_kind(env_file: Path) -> None:
    group = StoreGroup({"DATABASE_URL": EnvFileStore(env_file, key="DATABASE_URL"),
                        "DIRECT_URL": Failing()})  # type: ignore[dict-item]
    with pytest.raises(ProviderError, match="DATABASE_URL put back") as err:
        swap(group, RESTORED)
    assert err.value.is_retryable and err.value.provider == "failing"
    assert env_file.read_text() == ORIGINAL


def test_a_key_without_a_value_is_written_with_the_applications_user(
        env_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    env_file.write_text(f"DATABASE_URL={OLD_POOLED}\n")
    group = group_of(env_file)
    swapped = swap(group, RESTORED)
    assert EnvFileStore(env_file, key="DIRECT_URL").read().get_secret_value() == \
        "postgresql://app:pw@127.0.0.1:49001/app"
    assert swapped.how["DIRECT_URL"].startswith("had no value")
    assert "had no value" in caplog.text and "pw" not in caplog.text
    group.restore(swapped.revision)
    assert env_file.read_text() == f"DATABASE_URL={OLD_POOLED}\n"


def test_restore_refuses_a_revision_of_another_group(env_file: Path, tmp_path: Path) -> None:
    revision = swap(group_of(env_file), RESTORED).revision
    other = tmp_path / "other.env"
    other.write_text(ORIGINAL)
    with pytest.raises(ConfigError, match="cannot be restored"):
        group_of(other).restore(revision)


def test_a_single_stores_revision_still_restores(env_file: Path) -> None:
    # A run that started before the group existed kept the store's own revision.
    revision = EnvFileStore(env_file, key="DATABASE_URL").write(SecretStr("postgresql://x/app"))
    group_of(env_file).restore(revision)
    assert env_file.read_text() == ORIGINAL


# -- config and runtime ---------------------------------------------------------------------


def runtime_for(tmp_path: Path, connection: dict[str, Any]) -> TargetRuntime:
    settings = settings_from_dict({"targets": {"production": {
        "dsn": "host=127.0.0.1 dbname=app", "repository": f"file://{tmp_path}/repo",
        "connection": connection}}})
    return TargetRuntime(settings=settings, config=settings.target("production"))


def test_config_keys(tmp_path: Path, env_file: Path) -> None:
    rt = runtime_for(tmp_path, {"kind": "envfile", "path": str(env_file), "keys": list(KEYS)})
    assert rt.config.connection.names == KEYS
    assert rt.store is not None and rt.store.keys == KEYS
    assert runtime_for(tmp_path, {"kind": "envfile", "path": str(env_file)}).store.keys == (
        "DATABASE_URL",)
    for bad, message in [
        ({"key": "DATABASE_URL", "keys": list(KEYS)}, "not both"),
        ({"keys": []}, "at least one"),
        ({"keys": ["A", "A"]}, "more than once"),
        ({"keys": ["A"], "key_options": {"B": {}}}, "not in keys"),
    ]:
        with pytest.raises(ConfigError, match=message):
            runtime_for(tmp_path, {"kind": "envfile", "path": str(env_file), **bad})
    with pytest.raises(ConfigError, match="its own"):
        runtime_for(tmp_path, {"kind": "prefect-secret", "keys": list(KEYS),
                               "options": {"block_name": "shop-url"}})
    two_blocks = runtime_for(tmp_path, {
        "kind": "prefect-secret", "keys": list(KEYS), "options": {"block_name": "shop-url"},
        "key_options": {"DIRECT_URL": {"block_name": "shop-direct-url"}}})
    assert two_blocks.config.connection.store_options("DIRECT_URL") == {
        "block_name": "shop-direct-url"}
    aws = runtime_for(tmp_path, {"kind": "aws-secrets-manager", "keys": list(KEYS),
                                 "options": {"secret_id": "prod/app"}}).config.connection
    assert aws.store_options("DIRECT_URL") == {"secret_id": "prod/app", "json_key": "DIRECT_URL"}


def test_runtime_reads_every_key_in_libpq_form(tmp_path: Path, env_file: Path) -> None:
    rt = runtime_for(tmp_path, {"kind": "envfile", "path": str(env_file), "keys": list(KEYS)})
    assert rt.connection_in_use() == ["postgresql://app:pw@127.0.0.1:6432/app",
                                      "postgresql://app:pw@127.0.0.1:5496/app"]
    # restorekit's own connections: the unpooled key, without Prisma's options.
    assert rt.live_dsn() == "postgresql://app:pw@127.0.0.1:5496/app"
    env_file.write_text(f"DATABASE_URL={OLD_POOLED}\n")
    with pytest.raises(SafetyError, match="DIRECT_URL"):
        rt.connection_in_use()  # unknown what the app uses: cleanup removes nothing
    assert rt.live_dsn() == "postgresql://app:pw@127.0.0.1:6432/app"


# -- AWS Secrets Manager: both keys in one JSON secret ----------------------------------------


class LabelledOnly:
    """A boto3 client whose DescribeSecret lists labelled versions only, as AWS documents
    (moto lists every version)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def describe_secret(self, **kwargs: Any) -> Any:
        described = self._client.describe_secret(**kwargs)
        described["VersionIdsToStages"] = {
            v: s for v, s in (described.get("VersionIdsToStages") or {}).items() if s}
        return described

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_aws_secrets_manager_json_secret_with_both_keys(tmp_path: Path) -> None:
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    from restorekit.sinks.aws_secrets import SecretsManagerStore

    original = json.dumps({"DATABASE_URL": OLD_POOLED, "DIRECT_URL": OLD_DIRECT, "OTHER": "x"})
    with moto.mock_aws():
        raw = boto3.client("secretsmanager", region_name="eu-west-1",
                           aws_access_key_id="test", aws_secret_access_key="test")
        raw.create_secret(Name="prod/app", SecretString=original)
        client = LabelledOnly(raw)
        group = StoreGroup({k: SecretsManagerStore("prod/app", key=k, json_key=k, client=client)
                            for k in KEYS})
        swapped = swap(group, RESTORED)
        now = json.loads(raw.get_secret_value(SecretId="prod/app")["SecretString"])
        assert now == {"DATABASE_URL": OLD_POOLED.replace("6432", "49001"),
                       "DIRECT_URL": OLD_DIRECT.replace("5496", "49001"), "OTHER": "x"}
        # The first version is unlabelled after two writes: found all the same.
        group.restore(swapped.revision)
        group.restore(swapped.revision)
        assert raw.get_secret_value(SecretId="prod/app", VersionStage="AWSCURRENT")[
            "SecretString"] == original

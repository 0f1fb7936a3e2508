from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from restorekit.errors import ConfigError, ProviderError
from restorekit.sinks import ConnectionStore, EnvFileStore, Revision, get_store
from restorekit.sinks.envfile import parse_dotenv, quote_value

SECRET = "s3cr3t-XYZ"
DSN = f"postgresql://app:{SECRET}@db.example.com:5432/app?sslmode=require"
NEW_DSN = f"postgresql://app:{SECRET}@restored.example.com:5432/app?sslmode=require"

ORIGINAL = (
    "# production settings\n"
    "export APP_NAME='demo app'  # shown in the UI\n"
    "\n"
    f"DATABASE_URL={DSN} # primary\r\n"
    'MULTI="line one\nline two"\n'
    "not a binding line\n"
    "TAIL=1"
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def backups(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(".bak"))


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / "app.env"
    path.write_bytes(ORIGINAL.encode())
    path.chmod(0o644)
    return path


# -- parsing --------------------------------------------------------------------------------


def test_parse_dotenv_reads_like_python_dotenv(env_file: Path) -> None:
    dotenv = pytest.importorskip("dotenv")
    ours = {b.key: b.value for b in parse_dotenv(env_file.read_bytes().decode()) if b.key}
    theirs = dotenv.dotenv_values(env_file, interpolate=False)
    assert ours == {k: v for k, v in theirs.items() if v is not None}
    assert ours["APP_NAME"] == "demo app"
    assert ours["DATABASE_URL"] == DSN
    assert ours["MULTI"] == "line one\nline two"


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("K=plain", "plain"),
        ("K = spaced  ", "spaced"),
        ("K=a#b", "a#b"),
        ("K=a #comment", "a"),
        ("K='single # not a comment'", "single # not a comment"),
        ("K='it\\'s'", "it's"),
        ('K="tab\\there \\"q\\" back\\\\slash"', 'tab\there "q" back\\slash'),
        ('K="$HOME stays literal"  # c', "$HOME stays literal"),
        ("export K=exported", "exported"),
        ("K=", ""),
    ],
)
def test_parse_dotenv_values(line: str, value: str) -> None:
    (binding,) = parse_dotenv(line + "\n")
    assert (binding.key, binding.value) == ("K", value)


def test_parse_dotenv_marks_an_unterminated_quote_and_goes_on() -> None:
    bindings = parse_dotenv("A='open\nB=2\n")
    assert [(b.key, b.value, b.line) for b in bindings] == [("A", None, 1), ("B", "2", 2)]


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql://u:p@h:5432/db"),
        ("postgresql://u:p@h/db?sslmode=require&x=1", "'postgresql://u:p@h/db?sslmode=require&x=1'"),
        ("host=h password=a$b#c", "'host=h password=a$b#c'"),
        ("host=h password='x y'", '"host=h password=\'x y\'"'),
        ('p=a\\b"c', '"p=a\\\\b\\"c"'),
    ],
)
def test_quote_value(value: str, written: str) -> None:
    assert quote_value(value) == written
    (binding,) = parse_dotenv(f"K={written}\n")
    assert binding.value == value


def test_quote_value_refuses_newlines() -> None:
    with pytest.raises(ConfigError, match="control characters"):
        quote_value("host=a\nhost=b")


# -- read -----------------------------------------------------------------------------------


def test_read(env_file: Path) -> None:
    store = EnvFileStore(env_file)
    assert isinstance(store, ConnectionStore)
    value = store.read()
    assert isinstance(value, SecretStr)
    assert value.get_secret_value() == DSN
    assert SECRET not in repr(value) and SECRET not in repr(store)
    assert store.describe() == f"env file {env_file} (DATABASE_URL)"


def test_read_last_binding_wins(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("DATABASE_URL=first\nDATABASE_URL=second\n")
    assert EnvFileStore(path).read().get_secret_value() == "second"


def test_read_missing_key_names_file_and_key_not_values(env_file: Path) -> None:
    with pytest.raises(ConfigError) as info:
        EnvFileStore(env_file, key="OTHER_URL").read()
    message = str(info.value)
    assert str(env_file) in message and "OTHER_URL" in message
    assert SECRET not in message


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        EnvFileStore(tmp_path / "nope.env").read()


def test_read_malformed_binding_never_shows_the_value(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(f"DATABASE_URL='{DSN}\n")
    with pytest.raises(ConfigError, match="line 1: DATABASE_URL has an unterminated") as info:
        EnvFileStore(path).read()
    assert SECRET not in str(info.value)


def test_bad_key_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        EnvFileStore(tmp_path / ".env", key="NOT-A-NAME")


# -- write / restore ------------------------------------------------------------------------


def test_write_replaces_only_the_value_and_keeps_everything_else(env_file: Path) -> None:
    store = EnvFileStore(env_file)
    store.write(SecretStr(NEW_DSN))
    # "?" is a shell glob, so the new value is written quoted.
    expected = ORIGINAL.replace(f"DATABASE_URL={DSN}", f"DATABASE_URL='{NEW_DSN}'")
    assert env_file.read_bytes() == expected.encode()
    assert store.read().get_secret_value() == NEW_DSN


def test_write_quotes_and_round_trips_through_python_dotenv(env_file: Path) -> None:
    dotenv = pytest.importorskip("dotenv")
    store = EnvFileStore(env_file)
    for value in ("host=h port=5432 password='p w' dbname=app",
                  "postgresql://u:p%23$x@h/db?a=1&b=2", 'p=a\\b"c'):
        store.write(SecretStr(value))
        assert store.read().get_secret_value() == value
        assert dotenv.dotenv_values(env_file, interpolate=False)["DATABASE_URL"] == value
        assert dotenv.dotenv_values(env_file, interpolate=False)["TAIL"] == "1"


def test_write_sets_every_duplicate(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("DATABASE_URL=a\nX=1\nexport DATABASE_URL=b # old\n")
    EnvFileStore(path).write(SecretStr("c"))
    assert path.read_text() == "DATABASE_URL=c\nX=1\nexport DATABASE_URL=c # old\n"


def test_write_appends_a_missing_key(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("X=1")
    EnvFileStore(path).write(SecretStr(DSN))
    assert path.read_text() == f"X=1\nDATABASE_URL={quote_value(DSN)}\n"


def test_write_makes_a_0600_file_and_a_0600_backup_of_the_exact_bytes(env_file: Path) -> None:
    store = EnvFileStore(env_file)
    revision = store.write(SecretStr(NEW_DSN))
    assert mode(env_file) == 0o600
    (backup,) = backups(env_file.parent)
    assert revision.ref == str(backup)
    assert re.fullmatch(r"\.app\.env\.restorekit-\d{8}T\d{12}Z\.bak", backup.name)
    assert mode(backup) == 0o600
    assert backup.read_bytes() == ORIGINAL.encode()
    assert [p.name for p in env_file.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_revision_holds_no_secret(env_file: Path) -> None:
    revision = EnvFileStore(env_file).write(SecretStr(NEW_DSN))
    dumped = revision.model_dump_json()
    assert SECRET not in dumped and "restored.example.com" not in dumped
    assert Revision.model_validate_json(dumped) == revision
    with pytest.raises(ValueError):
        revision.ref = "elsewhere"  # type: ignore[misc]  # frozen


def test_restore_puts_the_exact_previous_bytes_back_and_is_idempotent(env_file: Path) -> None:
    store = EnvFileStore(env_file)
    first = store.write(SecretStr(NEW_DSN))
    store.write(SecretStr("postgresql://third"))
    store.restore(first)
    assert env_file.read_bytes() == ORIGINAL.encode()
    assert mode(env_file) == 0o600
    store.restore(first)
    assert env_file.read_bytes() == ORIGINAL.encode()


def test_write_then_restore_of_a_file_that_did_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "new.env"
    store = EnvFileStore(path)
    revision = store.write(SecretStr(DSN))
    assert revision.ref is None
    assert store.read().get_secret_value() == DSN
    store.restore(revision)
    assert not path.exists()


def test_write_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "config" / "app.env"
    real.parent.mkdir()
    real.write_text(f"DATABASE_URL={DSN}\n")
    link = tmp_path / ".env"
    link.symlink_to(real)
    store = EnvFileStore(link)
    revision = store.write(SecretStr(NEW_DSN))
    assert link.is_symlink()
    assert store.read().get_secret_value() == NEW_DSN
    store.restore(revision)
    assert link.is_symlink() and real.read_text() == f"DATABASE_URL={DSN}\n"


def test_failed_read_back_puts_the_old_file_back(env_file: Path) -> None:
    class LossyDisk(EnvFileStore):
        """Reads back something other than what was written (a concurrent writer, a bad disk)."""

        def _value_in(self, text: str) -> str | None:
            value = super()._value_in(text)
            return None if value is None else value[::-1]

    with pytest.raises(ProviderError, match="read back differs") as info:
        LossyDisk(env_file).write(SecretStr(NEW_DSN))
    assert SECRET not in str(info.value)
    assert env_file.read_bytes() == ORIGINAL.encode()


def test_failed_rename_leaves_the_file_alone(env_file: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(ProviderError, match="No space left") as info:
        EnvFileStore(env_file).write(SecretStr(NEW_DSN))
    assert not info.value.is_retryable
    assert env_file.read_bytes() == ORIGINAL.encode()
    assert [p for p in env_file.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_write_refuses_an_empty_value(env_file: Path) -> None:
    with pytest.raises(ConfigError, match="empty"):
        EnvFileStore(env_file).write(SecretStr(""))
    assert env_file.read_bytes() == ORIGINAL.encode()


def test_restore_refuses_a_revision_of_another_store(env_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.env"
    other.write_text("DATABASE_URL=x\n")
    revision = EnvFileStore(other).write(SecretStr("y"))
    with pytest.raises(ConfigError, match="cannot be restored"):
        EnvFileStore(env_file).restore(revision)


def test_restore_refuses_a_tampered_backup_path(env_file: Path, tmp_path: Path) -> None:
    store = EnvFileStore(env_file)
    revision = store.write(SecretStr(NEW_DSN))
    for ref in ("/etc/passwd", str(tmp_path / "app.env")):
        tampered = revision.model_copy(update={"ref": ref})
        with pytest.raises(ConfigError, match="not a restorekit backup"):
            store.restore(tampered)
    assert store.read().get_secret_value() == NEW_DSN


def test_restore_with_a_lost_backup_fails_clearly(env_file: Path) -> None:
    store = EnvFileStore(env_file)
    revision = store.write(SecretStr(NEW_DSN))
    assert revision.ref is not None
    Path(revision.ref).unlink()
    with pytest.raises(ProviderError, match="is gone"):
        store.restore(revision)


def test_registry(env_file: Path) -> None:
    store = get_store("envfile", path=env_file)
    assert isinstance(store, EnvFileStore)
    with pytest.raises(ConfigError, match="available: .*envfile"):
        get_store("nope")

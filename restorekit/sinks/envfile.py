"""A dotenv file as the place where DATABASE_URL lives (the embedded default and self-hosted apps).

Only the value of the one key changes: comments, order, blank lines, other keys, ``export``
prefixes, inline comments and line endings are kept byte for byte. Reading follows python-dotenv
(which is what pydantic-settings, and so most Python apps, use): the last binding of a key wins,
quoted values may span lines, ``\\``-escapes are decoded in quotes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pydantic import SecretStr

from restorekit.errors import ConfigError, ProviderError
from restorekit.sinks._files import (
    CONTROL,
    KEY_NAME,
    create_exclusive,
    os_errors,
    utc_stamp,
    write_private,
)
from restorekit.sinks.base import Revision, check_revision

log = logging.getLogger(__name__)

_BINDING = re.compile(r"[ \t]*(?:export[ \t]+)?(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=[ \t]*")
_LINE_REST = re.compile(r"[^\r\n]*(?:\r\n|\n|\r)?")
_NEWLINE = re.compile(r"\r\n|\n|\r")
_SINGLE_QUOTED = re.compile(r"'((?:\\'|[^'])*)'")
_DOUBLE_QUOTED = re.compile(r'"((?:\\"|[^"])*)"')
_AFTER_QUOTE = re.compile(r"[ \t]*(?:#[^\r\n]*)?(?:\r\n|\n|\r|$)")
_INLINE_COMMENT = re.compile(r"\s+#.*")
_SINGLE_ESCAPES = re.compile(r"\\([\\'])")
_DOUBLE_ESCAPES = re.compile(r"\\([\\'\"abfnrtv])")
_ESCAPED = {"\\": "\\", "'": "'", '"': '"', "a": "\a", "b": "\b", "f": "\f", "n": "\n",
            "r": "\r", "t": "\t", "v": "\v"}
# Safe unquoted for dotenv parsers AND for `source .env` in a shell (no globs, &, ;, $, ~, #).
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


@dataclass(frozen=True, slots=True)
class Binding:
    """One logical entry of a dotenv file.

    ``key`` is None for blank lines, comments and lines that are not bindings (kept verbatim).
    ``value`` is None when the binding is malformed (an unterminated quote). ``span`` is where
    the value's source text (quotes included) sits in the file.
    """

    key: str | None
    value: str | None
    span: tuple[int, int] | None
    line: int


def parse_dotenv(text: str) -> list[Binding]:
    """Split dotenv text into bindings, the way python-dotenv reads it."""
    bindings: list[Binding] = []
    pos = 1 if text.startswith("\ufeff") else 0
    line = 1
    while pos < len(text):
        match = _BINDING.match(text, pos)
        binding: Binding
        if match is None:
            end = _line_end(text, pos)
            binding = Binding(None, None, None, line)
        else:
            key, start = match.group("key"), match.end()
            quote = text[start:start + 1]
            if quote in ("'", '"'):
                quoted = (_SINGLE_QUOTED if quote == "'" else _DOUBLE_QUOTED).match(text, start)
                after = _AFTER_QUOTE.match(text, quoted.end()) if quoted else None
                if quoted is None or after is None:
                    # python-dotenv skips such a line too; a caller asking for this key refuses it.
                    end = _line_end(text, pos)
                    binding = Binding(key, None, None, line)
                else:
                    escapes = _SINGLE_ESCAPES if quote == "'" else _DOUBLE_ESCAPES
                    value = escapes.sub(lambda m: _ESCAPED[m.group(1)], quoted.group(1))
                    end = after.end()
                    binding = Binding(key, value, (start, quoted.end()), line)
            else:
                end = _line_end(text, start)
                raw = _INLINE_COMMENT.sub("", text[start:end].rstrip("\r\n")).rstrip()
                binding = Binding(key, raw, (start, start + len(raw)), line)
        bindings.append(binding)
        line += len(_NEWLINE.findall(text, pos, end))
        pos = end
    return bindings


def _line_end(text: str, pos: int) -> int:
    match = _LINE_REST.match(text, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def quote_value(value: str) -> str:
    """Render ``value`` so that dotenv readers and a shell read it back unchanged.

    Plain values stay unquoted; otherwise single quotes (literal everywhere, no ``$``
    expansion); double quotes with backslash escapes only when the value holds ``'`` or ``\\``
    (there, readers that expand ``${VAR}`` in double quotes would also expand it in the value).
    """
    if CONTROL.search(value):
        raise ConfigError("a connection string must not contain control characters or newlines")
    if _PLAIN.fullmatch(value):
        return value
    if "'" not in value and "\\" not in value:
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class EnvFileStore:
    """DATABASE_URL (or another key) in a dotenv file.

    Writes replace the file atomically (temp file, fsync, rename, fsync of the directory) with
    mode 0600, keeping the owner when we may. Each write first copies the previous file, byte for
    byte, to ``.<name>.restorekit-<UTC timestamp>.bak`` (0600) beside it; that path is the
    :class:`Revision`'s ``ref``. Backups are kept (they are the rollback and the audit trail);
    remove old ones with your usual secret-file hygiene. A symlinked file is written through the
    link, so the link stays.

    Args:
        path: The dotenv file.
        key: The variable holding the connection string.
    """

    kind: ClassVar[str] = "envfile"

    def __init__(self, path: Path, key: str = "DATABASE_URL") -> None:
        if not KEY_NAME.fullmatch(key):
            raise ConfigError(f"not a valid environment variable name: {key!r}")
        self.path = Path(path).absolute()
        self.key = key

    def __repr__(self) -> str:
        return f"EnvFileStore(path={str(self.path)!r}, key={self.key!r})"

    def describe(self) -> str:
        return f"env file {self.path} ({self.key})"

    # -- ConnectionStore ---------------------------------------------------------------------

    def read(self) -> SecretStr:
        target = self._target()
        with self._io_errors("read"):
            try:
                data = target.read_bytes()
            except FileNotFoundError:
                raise ConfigError(f"{self.describe()}: the file does not exist") from None
        value = self._value_in(self._decode(data))
        if value is None:
            raise ConfigError(f"{self.describe()}: the file has no {self.key}")
        if not value:
            raise ConfigError(f"{self.describe()}: {self.key} is empty")
        return SecretStr(value)

    def write(self, dsn: SecretStr) -> Revision:
        value = dsn.get_secret_value()
        if not value:
            raise ConfigError(f"{self.describe()}: refusing to write an empty {self.key}")
        encoded = quote_value(value)
        target = self._target()
        with self._io_errors("write"):
            previous = _read_if_exists(target)
            text = "" if previous is None else self._decode(previous)
            new_text = self._render(text, encoded)
            backup = self._backup(target, previous) if previous is not None else None
            revision = Revision(store=self.kind, location=self.describe(),
                                ref=None if backup is None else str(backup))
            _atomic_write(target, new_text.encode("utf-8"))
        problem: str | None = None
        try:
            if self._value_in(self._decode(target.read_bytes())) != value:
                problem = "the value read back differs from the value written"
        except (OSError, ConfigError) as exc:
            problem = f"reading it back failed ({exc})"
        if problem is not None:
            self._put_back(target, previous, backup, problem=problem)
            raise ProviderError(f"{self.describe()}: {problem}; the previous file was put back",
                                provider=self.kind, operation="write")
        log.info("wrote %s (previous file kept in %s)", self.describe(), backup or "nothing: new")
        return revision

    def restore(self, revision: Revision) -> None:
        check_revision(revision, kind=self.kind, location=self.describe())
        target = self._target()
        with self._io_errors("restore"):
            if revision.ref is None:
                # Nothing existed before the write: the previous state is "no file".
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
                _fsync_dir(target.parent)
            else:
                backup = self._checked_backup(target, Path(revision.ref))
                try:
                    data = backup.read_bytes()
                except FileNotFoundError:
                    raise ProviderError(
                        f"{self.describe()}: backup {backup} is gone; the previous value cannot "
                        "be restored", provider=self.kind, operation="restore",
                    ) from None
                _atomic_write(target, data)
        log.info("restored %s from %s", self.describe(), revision.ref or "(no previous file)")

    # -- helpers -----------------------------------------------------------------------------

    def _target(self) -> Path:
        # Write through symlinks: replacing the link itself would detach the app's config.
        return Path(os.path.realpath(self.path))

    def _decode(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{self.describe()}: not UTF-8 text (byte offset {exc.start})"
            ) from None

    def _matching(self, bindings: list[Binding]) -> list[Binding]:
        found = [b for b in bindings if b.key == self.key]
        for binding in found:
            if binding.value is None:
                raise ConfigError(
                    f"{self.describe()}: line {binding.line}: {self.key} has an unterminated "
                    "quote or text after its closing quote"
                )
        return found

    def _value_in(self, text: str) -> str | None:
        found = self._matching(parse_dotenv(text))
        return found[-1].value if found else None  # the last binding wins, as in python-dotenv

    def _render(self, text: str, encoded: str) -> str:
        found = self._matching(parse_dotenv(text))
        if not found:
            newline = "\r\n" if "\r\n" in text else "\n"
            if text and not text.endswith(("\n", "\r")):
                text += newline
            return f"{text}{self.key}={encoded}{newline}"
        # Every binding gets the new value: readers disagree on whether the first or the last
        # one wins, and a stale duplicate would be the one some tool picks up.
        for binding in reversed(found):
            assert binding.span is not None
            start, end = binding.span
            text = text[:start] + encoded + text[end:]
        return text

    def _backup(self, target: Path, data: bytes) -> Path:
        backup = create_exclusive(
            lambda suffix: target.parent / f".{target.name}.restorekit-{utc_stamp()}{suffix}.bak",
            data)
        if backup is not None:
            _fsync_dir(target.parent)
            return backup
        raise ProviderError(f"{self.describe()}: could not create a unique backup file",
                            provider=self.kind, operation="write")

    def _checked_backup(self, target: Path, backup: Path) -> Path:
        # A revision comes back from Prefect's stored state: only accept our own backup files
        # of this very file, never an arbitrary path to copy over the app's config.
        pattern = re.compile(
            rf"\.{re.escape(target.name)}\.restorekit-\d{{8}}T\d{{12}}Z(?:-\d+)?\.bak"
        )
        if backup.parent != target.parent or not pattern.fullmatch(backup.name):
            raise ConfigError(f"{backup} is not a restorekit backup of {target}")
        return backup

    def _put_back(self, target: Path, previous: bytes | None, backup: Path | None,
                  *, problem: str) -> None:
        try:
            if previous is None:
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
            else:
                _atomic_write(target, previous)
        except OSError as exc:
            raise ProviderError(
                f"{self.describe()}: {problem}, and putting the previous file back "
                f"failed too ({exc.strerror}); the previous file is in {backup}",
                provider=self.kind, operation="write",
            ) from exc

    def _io_errors(self, operation: str) -> contextlib.AbstractContextManager[None]:
        return os_errors(self.describe, provider=self.kind, operation=operation, doing=operation)


def _read_if_exists(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _atomic_write(target: Path, data: bytes) -> None:
    """Replace ``target`` with ``data`` (mode 0600) so readers see the old or the new file."""
    try:
        owner: tuple[int, int] | None = (target.stat().st_uid, target.stat().st_gid)
    except FileNotFoundError:
        owner = None
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.restorekit-", suffix=".tmp",
                               dir=target.parent)
    try:
        write_private(fd, data, owner=owner)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Names: quoting and folding identifiers, and the TableRef, Column and ForeignKey values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from psycopg import sql

from restorekit.errors import ConfigError

SYSTEM_SCHEMAS: tuple[str, ...] = ("pg_catalog", "information_schema", "pg_toast")

FkAction = Literal["cascade", "set null", "set default", "restrict", "no action"]

# pg_constraint.confdeltype / confupdtype codes.
_FK_ACTIONS: Mapping[str, FkAction] = {
    "a": "no action",
    "r": "restrict",
    "c": "cascade",
    "n": "set null",
    "d": "set default",
}

# An identifier PostgreSQL would print without quotes (quote_ident's rule, minus keywords).
# Used with fullmatch: `$` would allow a trailing newline.
_PLAIN_IDENT = re.compile(r"[a-z_][a-z0-9_$]*")
# What the SQL lexer accepts as an unquoted identifier: letters (any non-ASCII too), digits, _ $.
_UNQUOTED_IDENT = re.compile(r"^[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*$")


def _quote_if_needed(name: str) -> str:
    if _PLAIN_IDENT.fullmatch(name):
        return name
    return '"' + name.replace('"', '""') + '"'


def _fold(name: str) -> str:
    # PostgreSQL folds unquoted identifiers to lower case for ASCII letters only.
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in name)


def split_qualified(text: str) -> list[str]:
    """Split ``a.b`` / ``"A.b"."c""d"`` into identifier parts, folding unquoted ones."""
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] == '"':
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise ConfigError(f"unterminated quoted identifier in table name {text!r}")
                if text[i] == '"':
                    if i + 1 < n and text[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(text[i])
                i += 1
            part = "".join(buf)
            if not part:
                raise ConfigError(f"empty quoted identifier in table name {text!r}")
        else:
            start = i
            while i < n and text[i] != "." and not text[i].isspace():
                i += 1
            raw = text[start:i]
            if not _UNQUOTED_IDENT.match(raw):
                raise ConfigError(
                    f"not a valid table name: {text!r} (quote names with special characters, "
                    'e.g. public."My Table")'
                )
            part = _fold(raw)
        if "\x00" in part:
            raise ConfigError(f"table name {text!r} contains a NUL character")
        if len(part.encode()) > 63:
            raise ConfigError(
                f"name {part!r} is longer than 63 bytes: PostgreSQL would truncate it")
        parts.append(part)
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return parts
        if text[i] != ".":
            raise ConfigError(f"not a valid table name: {text!r}")
        i += 1


@dataclass(frozen=True, slots=True, order=True)
class TableRef:
    """A schema-qualified table name, held unquoted (exactly as stored in ``pg_class``).

    Sorting is by (schema, name). Build SQL from :attr:`ident`; ``str()`` is for people.
    """

    schema: str
    name: str

    @property
    def ident(self) -> sql.Identifier:
        """The schema-qualified identifier to compose into SQL."""
        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return f"{_quote_if_needed(self.schema)}.{_quote_if_needed(self.name)}"

    @classmethod
    def parse(cls, text: str, default_schema: str = "public") -> TableRef:
        """Read ``name``, ``schema.name`` or their quoted forms the way PostgreSQL does.

        Unquoted parts are folded to lower case (``Users`` is ``users``); double-quoted parts
        are taken literally and may contain dots and doubled quotes (``"a.b"."x""y"``).
        ``parse(str(ref)) == ref`` for every ref.

        Raises:
            ConfigError: the text is empty, malformed or has more than two parts.
        """
        if not text or not text.strip():
            raise ConfigError("empty table name")
        parts = split_qualified(text.strip())
        if len(parts) == 1:
            return cls(default_schema, parts[0])
        if len(parts) == 2:
            return cls(parts[0], parts[1])
        raise ConfigError(
            f"table name {text!r} has {len(parts)} parts; expected name or schema.name"
        )


@dataclass(frozen=True, slots=True)
class Column:
    """A live (not dropped) column of a table.

    ``generated`` marks ``GENERATED ALWAYS AS (...) STORED`` columns, which COPY FROM and INSERT
    refuse values for; identity columns are not ``generated`` (COPY may write them).
    """

    name: str
    data_type: str  # format_type() text, e.g. "character varying(20)", "timestamp with time zone"
    not_null: bool
    ordinal: int
    generated: bool = False


@dataclass(frozen=True, slots=True)
class ForeignKey:
    """One foreign-key constraint; column tuples are in constraint (key) order."""

    name: str
    child: TableRef
    child_columns: tuple[str, ...]
    parent: TableRef
    parent_columns: tuple[str, ...]
    on_delete: FkAction
    on_update: FkAction

    @property
    def self_referencing(self) -> bool:
        return self.child == self.parent

"""Helpers of test_secrets.py: recording everything a run leaves behind, and grepping it.

A :class:`Haystack` is a named blob of bytes (a log, a file, a database row). :func:`hits`
looks for every canary in it, case-insensitively, in its raw form, URL-quoted, and inside every
base64 run it contains (Prefect persists pickled results as base64 in JSON), so a secret
cannot hide behind the encodings Prefect and restorekit use.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{24,}={0,2}")


@dataclass
class Haystack:
    where: str
    data: bytes
    decode_base64: bool = True


@dataclass
class Tally:
    """What was scanned: for the report and the assertions that the scan saw something."""

    blobs: int = 0
    bytes: int = 0
    rows: int = 0
    by_source: dict[str, int] = field(default_factory=dict)

    def add(self, source: str, stack: Haystack) -> None:
        self.blobs += 1
        self.bytes += len(stack.data)
        self.by_source[source] = self.by_source.get(source, 0) + len(stack.data)


def _forms(canary: str) -> list[bytes]:
    forms = {canary.lower().encode(), quote(canary, safe="").lower().encode()}
    return sorted(forms)


def hits(stack: Haystack, canaries: dict[str, str]) -> list[str]:
    """``"<canary name> in <where>"`` for every canary found in ``stack``."""
    found = []
    texts = [stack.data.lower()]
    if stack.decode_base64 and len(stack.data) < 64 * 1024 * 1024:
        for run in _BASE64_RUN.findall(stack.data):
            for decoder in (base64.b64decode, base64.urlsafe_b64decode):
                with contextlib.suppress(binascii.Error, ValueError):
                    padded = run + b"=" * (-len(run) % 4)
                    texts.append(decoder(padded).lower())
    for name, canary in canaries.items():
        if any(form in text for form in _forms(canary) for text in texts):
            found.append(f"{name} in {stack.where}")
    return found


def files_under(root: Path, *, exclude: Iterable[Path] = (),
                decode_base64: bool = True) -> Iterator[Haystack]:
    """Every regular file under ``root`` except ``exclude`` (files or whole directories)."""
    skipped = [p.resolve() for p in exclude]
    for path in sorted(root.rglob("*")):
        resolved = path.resolve()
        if any(resolved == s or s in resolved.parents for s in skipped):
            continue
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):  # sockets, files removed meanwhile
                yield Haystack(str(path), path.read_bytes(),
                               decode_base64=decode_base64 and path.stat().st_size < 8 << 20)


def sqlite_rows(path: Path, tally: Tally) -> Iterator[Haystack]:
    """Every row of every table of the SQLite database at ``path``, one haystack per row
    (read through SQLite, so what sits in the -wal file is included)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - names from sqlite
                tally.rows += 1
                parts = [c if isinstance(c, bytes) else str(c).encode() for c in row]
                yield Haystack(f"{path.name}:{table}", b"\x00".join(parts))


class RecordingHandler(logging.Handler):
    """Keeps every record, formatted with its traceback, at every level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.append(self.format(record))


@contextlib.contextmanager
def recording_logs() -> Iterator[RecordingHandler]:
    """Attach a recording handler to the root logger and to the loggers that do not
    propagate (Prefect's), with everything at DEBUG."""
    handler = RecordingHandler()
    loggers = [logging.getLogger(), logging.getLogger("prefect"), logging.getLogger("restorekit")]
    loggers += [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
                if n.startswith("prefect")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
    logging.getLogger("restorekit").setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


@contextlib.contextmanager
def captured_fds() -> Iterator[Path]:
    """Send fds 1 and 2 (this process and its children) into one file while inside."""
    fd, name = tempfile.mkstemp(prefix="rk-secrets-out-")
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield Path(name)
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for s in (*saved, fd):
            os.close(s)

"""What the connection stores that keep local files share (:mod:`restorekit.sinks.envfile`'s
backup copies, :mod:`restorekit.sinks.vercel`'s encrypted previous values): the variable-name
and control-character rules, the timestamp in file names, private (0600) files created
exclusively and synced, OSError translated into ProviderError, and the revision check."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from restorekit.errors import ProviderError

#: An environment variable name (the key a store holds, or a variable naming a secret).
KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

#: How many names :func:`create_exclusive` tries before giving up.
_ATTEMPTS = 100


def utc_stamp() -> str:
    """Now, as the UTC timestamp in backup file names (microseconds: names rarely collide)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def write_private(fd: int, data: bytes, *, owner: tuple[int, int] | None = None) -> None:
    """Write ``data`` into the open file ``fd`` with mode 0600 and fsync it; closes ``fd``.

    ``owner``: (uid, gid) to give the file when it is not ours (kept when we may not).
    """
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        if owner is not None and owner != (os.geteuid(), os.getegid()):
            # Keep the app's user able to read its config after root rewrote it.
            with contextlib.suppress(PermissionError):
                os.fchown(fh.fileno(), *owner)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def create_exclusive(path_for: Callable[[str], Path], data: bytes) -> Path | None:
    """Create a new 0600 file holding ``data``, never replacing one: at ``path_for("")``, else
    ``path_for("-1")``, ``path_for("-2")``... Returns its path, or None when every name tried
    exists."""
    for attempt in range(_ATTEMPTS):
        path = path_for("" if attempt == 0 else f"-{attempt}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        write_private(fd, data)
        return path
    return None


@contextlib.contextmanager
def os_errors(where: Callable[[], str], *, provider: str, operation: str,
              doing: str) -> Iterator[None]:
    """Translate an OSError raised in the block into a :class:`ProviderError` saying
    ``<where()>: <doing> failed: <reason> (<path>)``. OSError names the path and the reason,
    never the content."""
    try:
        yield
    except OSError as exc:
        raise ProviderError(
            f"{where()}: {doing} failed: {exc.strerror or exc}"
            + (f" ({exc.filename})" if exc.filename else ""),
            provider=provider, operation=operation,
        ) from exc



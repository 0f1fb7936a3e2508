"""Where verification baselines are kept: in the repository beside the backups, and locally.

A :class:`~restorekit.integrity.Baseline` is what a restore is verified against. A restore runs
wherever a worker picks it up, often not the host that captured the baseline, so the baseline
is stored in the target's repository (``baselines/<target>.json``, through the
:class:`~restorekit.repository.Repository` interface: checksummed, atomic) and, as before, in
the local state directory (``<state_dir>/baselines/<target>.json``).

Reading prefers the repository. The local copy is the fallback for a target without a
repository, for installations whose baselines predate this module (they exist only locally),
and for a repository that cannot be read right now (logged; when there is no local copy
either, the repository's error is raised rather than reported as "no baseline").
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from restorekit.errors import ConfigError, ObjectNotFound, RestoreKitError
from restorekit.integrity import Baseline
from restorekit.pg.tools import default_os_user
from restorekit.repository import Repository, open_repository

log = logging.getLogger(__name__)

__all__ = ["BASELINE_PREFIX", "StoredBaseline", "baseline_key", "load_baseline",
           "local_baseline_path", "save_baseline"]

BASELINE_PREFIX = "baselines/"


def baseline_key(target: str) -> str:
    """The repository key of ``target``'s baseline."""
    return f"{BASELINE_PREFIX}{target}.json"


def target_repository(repository_url: str | None) -> Repository | None:
    """The repository a target's backups (and so its baseline) are in; None: it has none."""
    if not repository_url:
        return None
    return open_repository(repository_url, os_user=default_os_user())


def local_baseline_path(state_dir: Path, target: str) -> Path:
    """The local copy of ``target``'s baseline (the only place older versions wrote it)."""
    return state_dir.absolute() / "baselines" / f"{target}.json"


@dataclass(frozen=True, slots=True)
class StoredBaseline:
    """A baseline and where it was read from (for the plan and the logs).

    Attributes:
        baseline: the baseline.
        source: ``repository <url> (<key>)`` or ``local <path>``.
    """

    baseline: Baseline
    source: str


def _encode(baseline: Baseline) -> bytes:
    return json.dumps(baseline.to_dict(), indent=2, default=str).encode()


def _decode(data: bytes, where: str) -> Baseline:
    try:
        loaded = json.loads(data)
    except ValueError as exc:
        raise ConfigError(f"baseline {where} is not JSON ({exc}); capture a new one") from exc
    return Baseline.from_dict(loaded)


def save_baseline(baseline: Baseline, *, target: str, state_dir: Path,
                  repository: Repository | None) -> list[str]:
    """Store ``baseline`` in the repository (when the target has one) and locally.

    Returns:
        Where it was stored, repository first.

    Raises:
        RepositoryError: the repository could not store it (the local copy is written first,
            so a failure here still leaves this host able to verify).
    """
    data = _encode(baseline)
    path = local_baseline_path(state_dir, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a reader never sees half a baseline
    stored = [str(path)]
    if repository is not None:
        key = baseline_key(target)
        repository.put_bytes(key, data)
        stored.insert(0, f"{repository.url} ({key})")
    return stored


def load_baseline(*, target: str, state_dir: Path,
                  repository: Repository | None) -> StoredBaseline | None:
    """Read ``target``'s baseline: the repository's first, the local copy as the fallback.

    Returns:
        The baseline and its source, or None when neither place has one.

    Raises:
        ConfigError: a stored baseline is malformed or damaged.
        RepositoryError: the repository cannot be read and there is no local copy.
    """
    failure: RestoreKitError | None = None
    if repository is not None:
        key = baseline_key(target)
        try:
            data = repository.get_bytes(key)
        except ObjectNotFound:
            pass
        except RestoreKitError as exc:
            log.warning("baseline of %s unreadable from %s (%s); trying the local copy", target,
                        repository.url, exc)
            failure = exc
        else:
            return StoredBaseline(_decode(data, key),
                                  f"repository {repository.url} ({key})")
    path = local_baseline_path(state_dir, target)
    if path.exists():
        return StoredBaseline(_decode(path.read_bytes(), str(path)), f"local {path}")
    if failure is not None:
        raise failure
    return None

"""Neon (API v2): branches are restores.

* A restore to a NEW target is a branch of the production branch at a timestamp or an LSN (or
  at its head), with a read-write compute; its DSN comes from ``GET .../connection_uri``.
* An in-place restore is ``POST .../branches/{id}/restore`` from the branch itself, which Neon
  only accepts with a timestamp/LSN AND ``preserve_under_name``: the pre-restore state stays
  behind as a branch named ``restorekit-pre-restore-<UTC time>``.
* A named backup is a branch of the head without a compute, named ``restorekit-backup-...``.
* ``find_point`` bisects over scratch branches at timestamps (:mod:`restorekit.bisect`), each
  deleted as soon as it was read.

Bookkeeping lives in branch names, so nothing but the Neon project is needed: a scratch restore
is named ``<scratch_prefix><restore name>``; adopting it as production makes it the project's
default branch and renames it to drop the prefix, after which neither cleanup nor
:meth:`NeonProvider.discard` will touch it, and restorekit records its id as the target's
production branch (restorekit.production), so every later command uses it.

Every call goes through :meth:`NeonProvider._call`, the one place HTTP errors are translated
(``provider_apis.md`` §3), on the retry loop shared with the other HTTP adapters
(:mod:`restorekit.providers._http`): 423, 429 and 503 are retried for every method with a
bounded backoff that honours ``Retry-After``; other 5xx and network errors are retried for GETs
only (a failed connect for every method: nothing was sent), because a POST/PATCH/DELETE is not
safe to repeat blindly. 401/403 are never retried. What that loop gave up on is not retried
again by the Prefect task (``retry_spent``), so attempts do not multiply.
"""

from restorekit.providers.neon.errors import NeonApiError, NeonOperationFailed
from restorekit.providers.neon.formats import _pooled, rfc3339
from restorekit.providers.neon.provider import NeonProvider
from restorekit.providers.neon.settings import (
    BACKUP_PREFIX,
    DEFAULT_BASE_URL,
    DONE,
    FAILED,
    PRESERVE_PREFIX,
    NeonSettings,
)

__all__ = [
    "BACKUP_PREFIX",
    "DEFAULT_BASE_URL",
    "DONE",
    "FAILED",
    "PRESERVE_PREFIX",
    "NeonApiError",
    "NeonOperationFailed",
    "NeonProvider",
    "NeonSettings",
    "_pooled",
    "rfc3339",
]

"""Supabase: in-place restores through the Management API (provider-apis.md §4).

A Supabase project can only be restored *in place*: ``POST .../backups/restore-pitr`` (a time,
PITR add-on) or ``POST .../backups/restore`` (a daily/physical backup by integer id). The
project keeps its ref and connection string and is unavailable while it restores. The v1 API
has no "restore to a new project" (the dashboard does), so :meth:`SupabaseProvider.restore`
refuses and a flow takes the in-place path: verified snapshot first, then
:meth:`~SupabaseProvider.restore_in_place`.

Quirks handled here (each from provider-apis.md §4 / §8):

* ``recovery_time_target_unix`` is an integer of Unix seconds. The docs' curl example sends a
  string; the spec says integer, so an integer is sent. A sub-second time is rounded *down*.
* Both restore calls answer 201 with no body and nothing to poll but the project's ``status``
  (``GET /v1/projects/{ref}``). What each status means before and during a restore is one
  table, :data:`STATUS_RULES`. Before: ACTIVE_HEALTHY starts; ACTIVE_UNHEALTHY (the incident
  case: the database is down) starts a PITR restore, as the dashboard's PITR page does (it has
  no status gate), but not a backup restore, which the dashboard only offers on an
  ACTIVE_HEALTHY project; passing states (COMING_UP, RESTARTING, ...) are waited out, within
  ``busy_timeout``; the rest are refused with what the operator must do.
* After the call the status still shows the pre-restore value for a while (Supabase's own
  dashboard was fixed for exactly that: supabase/supabase#48948), so ACTIVE_HEALTHY only counts
  as done once the restore was seen to start (RESTORING, or the database going down/coming
  up). No start within ``start_timeout`` is an error, never a success. States a project does not
  leave on its own (RESTORE_FAILED, INIT_FAILED, PAUSE_FAILED, INACTIVE, REMOVED) fail at once:
  projects have stayed RESTORE_FAILED for days until Supabase support stepped in.
* Rate limit: 120 requests/minute (60 in older docs), 429 for the rest of the window with
  ``X-RateLimit-Reset`` = seconds until the reset. A 429 did not act, so it is retried (bounded)
  for every call, the POSTs included; a 5xx is retried on GETs only: a POST that may have
  started a restore is never repeated blindly. The loop itself is the one the HTTP adapters
  share (:mod:`restorekit.providers._http`); what it gave up on is not retried again by the
  Prefect task (``retry_spent``), so attempts do not multiply.
"""

from restorekit.providers.supabase.provider import SupabaseProvider
from restorekit.providers.supabase.settings import (
    DEFAULT_BASE_URL,
    SUPPORT_URL,
    SupabaseSettings,
)
from restorekit.providers.supabase.statuses import STATUS_RULES, StatusRule

__all__ = [
    "DEFAULT_BASE_URL",
    "STATUS_RULES",
    "SUPPORT_URL",
    "StatusRule",
    "SupabaseProvider",
    "SupabaseSettings",
]

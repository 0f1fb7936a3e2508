"""The AppPlatform interface: the application side of the runbook.

The runbook stops the application before a restore ("Stop Application": on Vercel, redeploy a
previous or maintenance build) and brings it back afterwards ("Restart/Redeploy Application":
a new production deployment that picks up the new DATABASE_URL). A failed health check after
the swap rolls back to what ran before.

Contract for implementers:

* ``stop(reason=...)`` and ``redeploy(reason=...)`` return the :class:`AppState` from *before*
  they acted: the token that :meth:`AppPlatform.resume` takes to bring that back. The flow keeps
  it (in Prefect state) for the rollback hook, so it holds NO secret: a pid, a deployment id, a
  URL, never an environment value.
* ``stop`` is idempotent: stopping a stopped app returns a state with ``running=False`` and does
  nothing. ``resume(state)`` is idempotent: it brings back what ``state`` recorded (a running
  app, a deployment id) and does nothing when that is already the case, or when ``state`` says
  nothing ran.
* ``redeploy`` makes the platform read the *current* connection string (Vercel: only a new
  build does; a rollback/promote keeps the old env, see provider-apis.md §5.5) and blocks, with
  a deadline, until the new deployment serves requests or has failed.
* All calls block until done, each with a deadline of its own. Health is not judged here: the
  caller runs :func:`restorekit.health.check_health` against ``health_url()``.
* Only :class:`restorekit.errors.RestoreKitError` subclasses escape: process, SDK and HTTP errors
  are translated inside the platform (``ProviderError`` with ``provider=<kind>``).

Example::

    before = app.stop(reason="incident INC-42: restore to 13:05Z")
    ...                                     # restore, swap the connection string
    app.redeploy(reason="incident INC-42: restored database")
    if not check_health(app.health_url()).ok:
        store.restore(revision)
        app.redeploy(reason="rollback")     # or app.resume(before) where that restores the env
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from restorekit.registry import Registry


class AppState(BaseModel):
    """What was running on a platform at one moment. Holds no secret.

    Attributes:
        platform: The platform kind (``"local"``, later ``"vercel"``).
        running: Whether the application was serving.
        deployment: What served, in the platform's terms: a pid for a local process, a
            deployment id (``dpl_...``) on Vercel. ``None`` when nothing ran.
        location: The platform's secret-free ``describe()``, so a state is never resumed on
            another application by mistake.
        recorded_at: When the state was taken (UTC).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    platform: str
    running: bool
    deployment: str | None = None
    location: str
    recorded_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


@runtime_checkable
class AppPlatform(Protocol):
    """Where the application runs (see the module docstring for the contract)."""

    kind: ClassVar[str]

    def describe(self) -> str:
        """A secret-free description, e.g. ``local process on http://127.0.0.1:8000``."""
        ...

    def health_url(self) -> str | None:
        """The application's health endpoint (the runbook's ``/api/health``), if it has one."""
        ...

    def stop(self, *, reason: str) -> AppState:
        """Stop serving traffic (the runbook's "Stop Application"); return what ran before.

        Raises:
            ProviderError: The platform could not stop the application.
        """
        ...

    def resume(self, state: AppState) -> None:
        """Bring back what ``state`` recorded (after a stop, or as a rollback).

        Raises:
            ConfigError: ``state`` belongs to another platform or application.
            ProviderError: The platform could not bring it back.
        """
        ...

    def redeploy(self, *, reason: str) -> AppState:
        """Deploy again so the app reads the current connection string; return what ran before.

        Raises:
            ProviderError: The new deployment failed or did not come up before the deadline.
        """
        ...


_REGISTRY = Registry("application platform", {
    "local": "restorekit.apps.local:LocalProcessApp",
    "vercel": "restorekit.apps.vercel:VercelApp",
})
register = _REGISTRY.register


def get_app_platform(kind: str, **options: Any) -> AppPlatform:
    """Build the platform ``kind`` with its options; SDKs are imported only here, lazily."""
    platform: AppPlatform = _REGISTRY.load(kind)(**options)
    return platform

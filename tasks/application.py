"""The application side of the runbook: stop, resume, redeploy, check health."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from restorekit.apps.base import AppState
from restorekit.errors import ProviderError
from restorekit.health import HealthReport
from restorekit.health import check_health as probe
from tasks._runtime import RETRY_DELAYS, TargetRef, logger, retry_if_transient, runtime


@task(name="stop-application", cache_policy=NO_CACHE)
def stop_application(ref: TargetRef, reason: str) -> AppState | None:
    """Stop the application so nothing writes while the database is repaired (runbook step 1).

    Returns what ran before (for resume_application), or None when no app is configured.
    """
    app = runtime(ref).app
    if app is None:
        logger().info("no application configured for %s; nothing to stop", ref.target)
        return None
    state = app.stop(reason=reason)
    logger().info("stopped %s", app.describe())
    return state


@task(name="resume-application", cache_policy=NO_CACHE, retries=3,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient)
def resume_application(ref: TargetRef, state: AppState | None) -> None:
    """Bring the application back as it was before stop_application."""
    app = runtime(ref).app
    if app is None or state is None:
        return
    app.resume(state)


@task(name="redeploy-application", cache_policy=NO_CACHE)
def redeploy_application(ref: TargetRef, reason: str) -> AppState | None:
    """Redeploy so the application reads the current connection string (runbook step 6)."""
    app = runtime(ref).app
    if app is None:
        return None
    before = app.redeploy(reason=reason)
    logger().info("redeployed %s", app.describe())
    return before


@task(name="check-health", cache_policy=NO_CACHE)
def check_health(ref: TargetRef, attempts: int | None = None) -> HealthReport | None:
    """GET the application's /api/health; raise when it is not healthy (the runbook's
    "Test Application")."""
    rt = runtime(ref)
    url = rt.health_url()
    attempts = attempts or rt.config.app.health_attempts
    if url is None:
        logger().info("no health endpoint configured for %s", ref.target)
        return None
    report = probe(url, attempts=attempts)
    if not report.ok:
        raise ProviderError(
            f"health check failed: {report.url} answered {report.status_code}: {report.detail}",
            provider="app", operation="check_health",
        )
    logger().info("healthy: %s (database latency %s ms)", report.url, report.latency_ms)
    return report

"""The application side of the runbook: stop, resume, redeploy, check health."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from restorekit import smoke
from restorekit.apps.base import AppState
from restorekit.errors import ProviderError, VerificationFailed
from restorekit.health import NO_HEALTH_URL, HealthReport, display_url
from restorekit.health import check_health as probe
from restorekit.smoke import SmokeReport
from tasks._runtime import RETRY_DELAYS, TargetRef, logger, retry_if_transient, runtime


def _stopped_record(ref: TargetRef) -> Path:
    """Where the state from before restorekit stopped the app is kept until it is resumed: a
    run killed in between cannot resume it, and the next run must know the app ran before."""
    return runtime(ref).settings.state_dir.absolute() / "apps" / f"{ref.target}.stopped.json"


@task(name="stop-application", cache_policy=NO_CACHE)
def stop_application(ref: TargetRef, reason: str) -> AppState | None:
    """Stop the application so nothing writes while the database is repaired (runbook step 1).

    Returns what ran before (for resume_application), or None when no app is configured. When
    an earlier run stopped the app and died before resuming it (kill -9), returns the state from
    before THAT stop, so this run brings the application back as it was before the incident.
    """
    app = runtime(ref).app
    if app is None:
        logger().info("no application configured for %s; nothing to stop", ref.target)
        return None
    state = app.stop(reason=reason)
    record = _stopped_record(ref)
    if state.running or not record.exists():
        record.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = record.with_suffix(".tmp")
        tmp.write_text(state.model_dump_json())
        tmp.replace(record)
    else:
        earlier = AppState.model_validate_json(record.read_text())
        logger().warning("%s was already stopped by an earlier restorekit run that did not "
                         "resume it (killed?); it ran before that run (%s) and is resumed as it "
                         "was", app.describe(), earlier.recorded_at)
        state = earlier
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
    _stopped_record(ref).unlink(missing_ok=True)


@task(name="redeploy-application", cache_policy=NO_CACHE)
def redeploy_application(ref: TargetRef, reason: str) -> AppState | None:
    """Redeploy so the application reads the current connection string (runbook step 6)."""
    app = runtime(ref).app
    if app is None:
        return None
    before = app.redeploy(reason=reason)
    _stopped_record(ref).unlink(missing_ok=True)  # it runs again: nothing left to resume
    logger().info("redeployed %s", app.describe())
    return before


@task(name="health-endpoint", cache_policy=NO_CACHE)
def health_endpoint(ref: TargetRef) -> str | None:
    """The health URL check_health will ask (password and query values masked), or None when
    none is configured: the plan says the application's health will not be checked."""
    url = runtime(ref).health_url()
    return display_url(url) if url else None


@task(name="check-health", cache_policy=NO_CACHE)
def check_health(ref: TargetRef, attempts: int | None = None) -> HealthReport:
    """GET the application's /api/health; raise when it is not healthy (the runbook's
    "Test Application").

    With no health URL configured nothing is checked, and that is not a pass: the report
    returned says so (``checked`` false; the incident report shows it as a warning).
    """
    rt = runtime(ref)
    url = rt.health_url()
    attempts = attempts or rt.config.app.health_attempts
    if url is None:
        logger().warning("application health NOT checked for %s: %s", ref.target, NO_HEALTH_URL)
        return HealthReport.not_checked(NO_HEALTH_URL)
    report = probe(url, attempts=attempts)
    if not report.ok:
        raise ProviderError(
            f"health check failed: {report.url} answered {report.status_code}: {report.detail}",
            provider="app", operation="check_health",
        )
    logger().info("healthy: %s (database latency %s ms)", report.url, report.latency_ms)
    return report


@task(name="run-smoke-checks", cache_policy=NO_CACHE)
def run_smoke_checks(ref: TargetRef) -> SmokeReport | None:
    """Send the target's ``[[smoke]]`` requests to the application (login, a data page, a form)
    and judge the answers: the runbook's "verify application functions".

    Returns None when none are configured. Raises VerificationFailed (carrying the report) when a
    critical check fails, like a failed health check; non-critical failures are warnings.

    Example::

        smoke = rec.step("smoke checks", run_smoke_checks, ref)
        rec.add_checks(smoke)
    """
    rt = runtime(ref)
    checks = rt.config.smoke
    if not checks:
        return None
    report = smoke.run_smoke_checks(checks, rt.config.app.base_url
                                    or smoke.base_url_from(rt.health_url()))
    if not report.ok:
        raise VerificationFailed(report)
    logger().info("smoke checks passed: %d of %d", sum(r.ok for r in report.results),
                  len(report.results))
    return report

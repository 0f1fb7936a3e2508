"""Tasks of the backup schedule: retention after a backup, and the freshness check."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from restorekit import freshness, retention
from restorekit.errors import ConfigError
from tasks._runtime import RETRY_DELAYS, TargetRef, logger, retry_if_transient, runtime


@task(name="expire-old-backups", cache_policy=NO_CACHE)
def expire_old_backups(ref: TargetRef, dry_run: bool = False) -> str:
    """Remove the backups and WAL the target's ``[backups]`` policy no longer keeps.

    Example:
        >>> expire_old_backups(TargetRef(target="production"))  # doctest: +SKIP
        'keep 30 backup(s), expire 1 backup(s) (20261105T020000Z) and 96 WAL file(s); ...'
    """
    rt = runtime(ref)
    done = retention.expire_backups(rt.provider, rt.config.backups, datetime.now(UTC),
                                    dry_run=dry_run)
    logger().info("retention of %s: %s", ref.target, done)
    return done


@task(name="check-backup-freshness", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient)
def check_backup_freshness(ref: TargetRef) -> freshness.FreshnessReport:
    """Newest backup age, newest archived WAL age and the source's archiver against the RPO.

    Example:
        >>> check_backup_freshness(TargetRef(target="production")).ok  # doctest: +SKIP
        True
    """
    rt = runtime(ref)
    _, rpo = rt.settings.objectives(rt.config.tier)
    try:
        source: str | None = rt.config.resolve_dsn()
    except ConfigError:  # dsn_env not set here: judge the repository alone
        source = None
    report = freshness.check_freshness(ref.target, rt.provider, rt.config.backups, rpo,
                                       now=datetime.now(UTC), source_dsn=source)
    logger().info("backup freshness of %s: %s", ref.target, report.status)
    return report

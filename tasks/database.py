"""The database side of the runbook: preflight, snapshot, restore, verify, discard."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any, NamedTuple

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from restorekit import baseline as baselines
from restorekit import integrity, production
from restorekit.errors import (
    CapabilityNotSupported,
    ConfigError,
    RestoreKitError,
    RestorePointError,
    SafetyError,
    VerificationFailed,
)
from restorekit.models import PointKind, RestoredRef, RestorePoint
from restorekit.pg.dsn import display, redact
from restorekit.pg.tools import default_os_user
from restorekit.providers.base import Capability
from restorekit.repository import open_repository
from restorekit.snapshot import SnapshotInfo, take_snapshot
from tasks._runtime import RETRY_DELAYS, TargetRef, logger, retry_if_transient, runtime


class Preflight(BaseModel):
    """What was checked before anything was touched."""

    model_config = ConfigDict(frozen=True)
    target: str
    provider: str
    point: str
    window: str
    backups: int
    app: str
    connection_store: str
    live_database: str
    capabilities: list[str] = []

    def can(self, capability: str) -> bool:
        return capability in self.capabilities


@task(name="preflight", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_if_transient)
def preflight(ref: TargetRef, point: str, *, needs: tuple[str, ...] = (),
              snapshot_copy_allowed: bool = False,
              privileges: tuple[str, ...] = (), swap: bool = False) -> Preflight:
    """Check the restore point against the real window and the provider's capabilities.

    Fails before any side effect: a bad point, a point outside the window, no backups, or a
    provider that cannot do what the scenario needs. With ``snapshot_copy_allowed`` (scenarios
    2 and 3) a provider that cannot restore into a new database is fine: the copy will come from
    a logical snapshot taken before the point, so the provider's own window does not apply.
    With ``privileges`` (``"select"``, ``"insert"``, ...) the role of the live connection must
    hold them on every table (restorekit.privileges), or the run stops here. With ``swap``
    (scenario 1 into a new database) the application's connection string must be readable,
    since the swap re-points it: an unreadable one stops the run before the app is stopped.
    """
    rt = runtime(ref)
    if privileges:
        import psycopg

        from restorekit.privileges import check_privileges

        with psycopg.connect(rt.live_dsn()) as conn:
            check_privileges(conn, privileges, purpose=f"this run on {ref.target!r}")
    parsed = RestorePoint.parse(point)
    provider = rt.provider
    from_snapshot = (snapshot_copy_allowed
                     and Capability.NEW_TARGET_RESTORE not in provider.capabilities)
    if parsed.kind is PointKind.TIME and not from_snapshot:
        needs = (*needs, "point_in_time")
    for need in needs:
        if Capability(need) not in provider.capabilities:
            raise CapabilityNotSupported(
                f"provider {provider.kind!r} of target {ref.target!r} cannot {need}"
            )
    window = provider.restore_window()
    if (not from_snapshot and parsed.time is not None and window.latest is not None
            and window.latest < parsed.time <= datetime.now(UTC)):
        # A moment not archived yet (a quiet database's segment has not filled since the
        # accident): providers that can push it to the archive do, then the window is re-read.
        archive_pending_wal = getattr(provider, "archive_pending_wal", None)
        if archive_pending_wal is not None and archive_pending_wal():
            window = provider.restore_window()
    if from_snapshot:
        if parsed.time is None:
            raise ConfigError(
                f"{provider.kind} cannot restore into a new database, so the copy comes from a "
                f"logical snapshot: give the restore point as a time, not {point!r}")
        if parsed.time > datetime.now(UTC):
            raise RestorePointError(f"restore time {parsed} is in the future")
    else:
        window.check(parsed)
    if (swap and rt.store is not None
            and Capability.NEW_TARGET_RESTORE in provider.capabilities):
        from restorekit.sinks.group import no_current_value

        current = rt.store.read_all(missing_ok=True)
        if all(value is None for value in current.values()):
            raise ConfigError(f"{rt.store.describe()}: {no_current_value(tuple(current))}")
    backups = provider.list_backups()
    if parsed.kind is PointKind.BACKUP and parsed.value not in {b.backup_id for b in backups}:
        known = ", ".join(b.backup_id for b in backups[-5:]) or "none"
        raise RestorePointError(
            f"no backup {parsed.value!r} for target {ref.target!r}; available: {known} "
            "(the newest; list them all with `restorekit backups`)")
    live = "unknown"
    try:
        live = display(rt.live_dsn())
    except ConfigError:
        pass
    return Preflight(
        target=ref.target,
        provider=provider.kind,
        point=str(parsed),
        window=str(window),
        backups=len(backups),
        app=rt.app.describe() if rt.app else "none",
        connection_store=rt.store.describe() if rt.store else "none",
        live_database=live,
        capabilities=sorted(c.value for c in provider.capabilities),
    )


@task(name="take-base-backup", cache_policy=NO_CACHE, timeout_seconds=6 * 3600, retries=1,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient)
def take_base_backup(ref: TargetRef, label: str) -> dict[str, object]:
    """A base backup of the target, every object read back and checksummed."""
    info = runtime(ref).provider.create_backup(label)
    logger().info("base backup %s (%d bytes, ends at %s)", info.backup_id, info.size_bytes,
                  info.stop_lsn)
    return {"backup_id": info.backup_id, "stop_time": info.stop_time.isoformat(),
            "stop_lsn": info.stop_lsn, "size_bytes": info.size_bytes, "label": info.label}


@task(name="provider-capabilities", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient)
def provider_capabilities(ref: TargetRef) -> list[str]:
    """What the target's provider can do (flows pick their path from this)."""
    return sorted(c.value for c in runtime(ref).provider.capabilities)


@task(name="check-tables", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_if_transient)
def check_tables(ref: TargetRef, tables: list[str]) -> list[str]:
    """Refuse unknown or malformed table names before anything is restored; returns them in
    canonical form."""
    import psycopg

    from restorekit.pg import catalog

    refs = [catalog.TableRef.parse(t) for t in tables]
    with psycopg.connect(runtime(ref).live_dsn()) as conn:
        known = set(catalog.list_tables(conn))
    unknown = [str(t) for t in refs if t not in known]
    if unknown:
        raise ConfigError(f"unknown table(s) in the live database: {', '.join(unknown)}")
    return [str(t) for t in refs]


def restore_name(scenario: str, key: str) -> str:
    """The name of a restore for one incident: the same on a re-run, so a finished restore is
    found and reused instead of done again."""
    slug = "".join(c if c.isalnum() else "-" for c in key.lower()).strip("-")
    return f"{scenario}-{slug}"[:63].rstrip("-.")


#: How flows name their restores (restore_name's first argument plus '-'): only restores named
#: so are swept at the start of a run; `restorekit restore --to-new` ones are left to their owner.
FLOW_RESTORE_PREFIXES = ("cf-", "pc-", "ad-", "drill-")


@task(name="sweep-stale-restores", cache_policy=NO_CACHE)
def sweep_stale_restores(ref: TargetRef, keep: list[str], dry_run: bool = False) -> list[str]:
    """Discard scratch restores that earlier runs on this target left behind (killed, crashed
    or failed runs); with ``dry_run`` only name them.

    The flow holds the target's one-run-per-target slot, so no other run is using them. Never
    removed: the restores named in ``keep`` (this incident's: a re-run reuses them), restores
    adopted as production, and whatever the target's DSN or the application's connection string
    points at.
    """
    rt = runtime(ref)
    sweep = getattr(rt.provider, "sweep", None)
    if sweep is None:
        return []  # cloud providers: their scratch restores are listed by `restorekit cleanup`
    try:
        in_use = rt.connection_in_use()
    except SafetyError as exc:
        logger().warning("not sweeping stale scratch restores: %s", exc)
        return []
    swept: list[str] = sweep(keep=set(keep), prefixes=FLOW_RESTORE_PREFIXES,
                             in_use=in_use, dry_run=dry_run)
    if swept and not dry_run:
        logger().warning("discarded %d stale scratch restore(s) of earlier runs: %s",
                         len(swept), ", ".join(swept))
    return swept


@task(name="restore-to-point-in-time", cache_policy=NO_CACHE, timeout_seconds=6 * 3600,
      persist_result=True)
def restore_to_point_in_time(ref: TargetRef, point: str, name: str) -> RestoredRef:
    """Restore the target's backups into a NEW database at ``point`` (never in place).

    Idempotent by ``name``: when a completed restore with that name exists (an earlier attempt
    of this incident got that far), it is reused, not redone.
    """
    rt = runtime(ref)
    existing = rt.provider.find_restored(name)
    if existing is not None:
        logger().info("reusing the finished restore %s from an earlier attempt", name)
        return rt.ref(existing, name, reused=True)
    progress_log = logger()
    last: dict[str, int] = {}

    def progress(phase: str, done: int, total: int | None) -> None:
        # Log at most every 10 % so the run log shows progress without flooding.
        if total:
            tenth = int(10 * done / total)
            if last.get(phase) != tenth:
                last[phase] = tenth
                progress_log.info("%s: %d%%", phase, 10 * tenth)

    restored = rt.provider.restore(RestorePoint.parse(point), name=name, progress=progress)
    logger().info("restored %s at %s into %s", ref.target, point,
                  display(restored.dsn.get_secret_value()))
    return rt.ref(restored, name)


@task(name="restore-scratch-from-snapshot", cache_policy=NO_CACHE, timeout_seconds=6 * 3600,
      persist_result=True)
def restore_scratch_from_snapshot(ref: TargetRef, point: str, name: str,
                                  tables: list[str] | None = None) -> RestoredRef:
    """For providers that cannot restore into a new database: a local scratch copy from the
    newest verified logical snapshot taken before ``point``."""
    from restorekit.snapshot_scratch import snapshot_before

    rt = runtime(ref)
    parsed = RestorePoint.parse(point)
    if parsed.time is None:
        raise ConfigError(f"a scratch copy from a snapshot needs a time, not {point!r}")
    scratch = rt.snapshot_scratch
    info = snapshot_before(scratch.repo, parsed.time, tables)
    restored = scratch.restore(info.snapshot_id, name=name,
                               database=str(_dbname(rt.live_dsn())))
    logger().info("scratch copy from snapshot %s (taken %s)", info.snapshot_id,
                  info.created_at.isoformat())
    return rt.ref(restored, name)


def _dbname(dsn: str) -> str:
    from restorekit.pg.dsn import parse

    return str(parse(dsn).get("dbname") or "postgres")


@task(name="restore-in-place", cache_policy=NO_CACHE, timeout_seconds=6 * 3600)
def restore_in_place(ref: TargetRef, point: str, snapshot: dict[str, Any] | None) -> None:
    """Overwrite the current database with its state at ``point`` (providers that can only
    restore in place). Refuses without a verified snapshot of the current state, unless the
    caller explicitly accepted that (snapshot is then None and the flow says so)."""
    if snapshot is not None and not snapshot.get("verified"):
        raise SafetyError(
            "the snapshot of the current state is not verified; not restoring in place"
        )
    rt = runtime(ref)
    log = logger()
    seen: set[str] = set()

    def progress(phase: str, done: int, total: int | None) -> None:
        if phase not in seen:  # each status once: RESTORING, ACTIVE_HEALTHY, ...
            seen.add(phase)
            log.info("in-place restore: %s", phase)

    rt.provider.restore_in_place(RestorePoint.parse(point), progress=progress)
    log.info("restored %s in place at %s", ref.target, point)


@task(name="discard-restored", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_if_transient)
def discard_restored(ref: TargetRef, restored: RestoredRef) -> None:
    """Remove a scratch copy once it has served its purpose."""
    rt = runtime(ref)
    owner = rt.snapshot_scratch if restored.provider == "snapshot" else rt.provider
    found = owner.find_restored(restored.name)
    if found is not None:
        owner.discard(found)


@task(name="adopt-restored", cache_policy=NO_CACHE)
def adopt_restored(ref: TargetRef, restored: RestoredRef, incident: str = "") -> str | None:
    """Mark the restored database as production so no cleanup ever removes it, and record it
    as the target's production (restorekit.production: every later command acts on it; the
    user's restorekit.toml is not edited). Returns a note for the operator, if any."""
    rt = runtime(ref)
    note, record = production.adopt(rt.provider, rt.restored(restored),
                                    state_dir=rt.settings.state_dir, target=rt.name,
                                    incident=incident, restore_name=restored.name)
    if record is not None:
        logger().info("production of %s is now %s", rt.name, record.describe())
    if note:
        logger().warning("%s", note)
    return note


@task(name="protect-new-production", cache_policy=NO_CACHE, timeout_seconds=6 * 3600)
def protect_new_production(ref: TargetRef) -> production.Protection:
    """Resume backups of the adopted production (self-hosted: WAL archiving on the new timeline
    and a first base backup; RDS: its retention and PITR checked). Never fails the run: a
    failure comes back as ``protected=False`` saying why and what to do.

    Example:
        >>> protection = protect_new_production(ref)   # inside a flow, after adopt_restored
        >>> protection.line()
        'Protected again: yes, first backup at 2026-12-06T20:41:07+00:00 (20261206T204105Z); ...'
    """
    rt = runtime(ref)  # built now: it acts on the production adoption recorded
    result = production.protect(rt.provider, state_dir=rt.settings.state_dir, target=rt.name)
    (logger().info if result.protected else logger().warning)("%s", result.line())
    return result


@task(name="snapshot-current-state", cache_policy=NO_CACHE, timeout_seconds=6 * 3600)
def snapshot_current_state(ref: TargetRef, tables: list[str] | None = None,
                           label: str = "before-restore") -> dict[str, Any]:
    """pg_dump of the current state (the chosen tables or everything) into the repository,
    read back and checksummed before anything destructive may run (runbook Scenario 2 step 2)."""
    rt = runtime(ref)
    if not rt.config.repository:
        raise SafetyError(f"target {ref.target!r} has no repository for the snapshot")
    repo = open_repository(rt.config.repository, os_user=default_os_user())
    info: SnapshotInfo = take_snapshot(rt.live_dsn(), repo, label=label, tables=tables or None)
    if not info.verified:
        raise SafetyError("the snapshot could not be verified; nothing destructive may run")
    logger().info("snapshot %s (%d bytes) verified at %s", info.snapshot_id, info.size_bytes,
                  info.location)
    return info.to_dict()


class FailedCheck(NamedTuple):
    name: str
    detail: str


class VerificationSummary(BaseModel):
    """A secret-free verification report, as kept in Prefect state and in the incident report."""

    model_config = ConfigDict(frozen=True)
    database: str
    ok: bool
    checks: list[dict[str, Any]]
    markdown: str
    #: ok, and no check unverified (restorekit.integrity.VerificationReport.verified).
    verified: bool = True

    @property
    def critical_failures(self) -> list[FailedCheck]:
        return [FailedCheck(c["name"], str(c.get("detail", ""))) for c in self.checks
                if c.get("critical") and not c.get("ok")]

    @property
    def unverified(self) -> list[FailedCheck]:
        return [FailedCheck(c["name"], str(c.get("detail", ""))) for c in self.checks
                if c.get("unverified")]


def _summary(report: Any) -> VerificationSummary:
    return VerificationSummary(
        database=report.database, ok=report.ok, verified=report.verified,
        checks=[c.to_dict() for c in report.checks], markdown=report.to_markdown(),
    )


def _repository(rt: Any) -> Any:
    """The target's repository (where its backups are), or None when it has none."""
    return baselines.target_repository(rt.config.repository)


def find_baseline(rt: Any) -> Any:
    """The target's baseline and where it came from (restorekit.baseline.StoredBaseline):
    the repository's first, the local state directory's for older installs; None when
    neither has one."""
    return baselines.load_baseline(target=rt.name, state_dir=rt.settings.state_dir,
                                   repository=_repository(rt))


def load_baseline(rt: Any) -> Any:
    """The target's baseline (restorekit.integrity.Baseline), or None; see find_baseline."""
    stored = find_baseline(rt)
    return stored.baseline if stored is not None else None


@task(name="capture-baseline", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_if_transient)
def capture_baseline(ref: TargetRef) -> str:
    """Record the live schema fingerprint and row counts: what a restore is verified against.

    Stored in the target's repository beside its backups (a worker on another host finds it
    there) and in the local state directory; returns where, repository first.
    """
    import psycopg

    rt = runtime(ref)
    with psycopg.connect(rt.live_dsn()) as conn:
        baseline = integrity.capture_baseline(conn, list(rt.config.verify.critical_tables))
    stored = baselines.save_baseline(baseline, target=rt.name, state_dir=rt.settings.state_dir,
                                     repository=_repository(rt))
    logger().info("baseline stored: %s", "; ".join(stored))
    return stored[0]


class VerificationReference(BaseModel):
    """What a restored database's row counts will be compared with (for the plan's gate)."""

    model_config = ConfigDict(frozen=True)
    #: "baseline", "production", or "" (nothing: the counts would be unverified).
    kind: str
    detail: str

    @property
    def blind(self) -> bool:
        return not self.kind


@task(name="find-verification-reference", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient)
def find_verification_reference(ref: TargetRef) -> VerificationReference:
    """Say what verify_integrity will compare a restore's row counts with: the stored baseline,
    else production when it answers now (one attempt, 5 s), else nothing."""
    import psycopg

    rt = runtime(ref)
    stored = find_baseline(rt)
    if stored is not None:
        return VerificationReference(
            kind="baseline",
            detail=f"the baseline of {stored.baseline.captured_at.isoformat()} ({stored.source})")
    try:
        live = rt.live_dsn()
        with psycopg.connect(live, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except (psycopg.Error, RestoreKitError) as exc:
        why = (redact(str(exc)).strip().splitlines() or [type(exc).__name__])[0]
        return VerificationReference(kind="", detail=(
            "no baseline (neither in the repository nor in "
            f"{baselines.local_baseline_path(rt.settings.state_dir, rt.name).parent}) and "
            f"production is unreachable ({why})"))
    return VerificationReference(kind="production", detail=f"production ({display(live)})")


@task(name="verify-integrity", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_if_transient)
def verify_integrity(ref: TargetRef, restored: RestoredRef | None = None, *,
                     use_baseline: bool = True,
                     compare_with_production: bool = True,
                     compare_counts: bool = True) -> VerificationSummary:
    """Run the verification suite on the restored database (or, without one, on live).

    A restored database's Prisma migrations are compared with production's when
    ``compare_with_production`` and production answers, else with the baseline's; its critical
    tables' row counts with the baseline's, else (``compare_with_production`` and
    ``compare_counts``) production's, else they are reported unverified
    (``VerificationSummary.verified`` is then false, and the run is not failed for it: the flow
    decides, see complete_failure's approval gate).

    Raises VerificationFailed naming the failing critical checks.
    """
    rt = runtime(ref)
    dsn = rt.dsn_for(restored).get_secret_value() if restored is not None else rt.live_dsn()
    reference = None
    if restored is not None and compare_with_production:
        # Production is often gone (scenario 1): then the baseline is the reference.
        with contextlib.suppress(RestoreKitError):
            reference = rt.live_dsn()
    cfg = rt.config.verify
    report = integrity.verify(
        dsn,
        baseline=load_baseline(rt) if use_baseline else None,
        critical_tables=list(cfg.critical_tables),
        row_count_tolerance=cfg.row_count_tolerance,
        custom_checks=[integrity.CustomCheck(**c.model_dump()) for c in cfg.checks],
        amcheck=cfg.amcheck,
        install_amcheck=cfg.install_amcheck,
        reference_dsn=reference,
        reference_counts=compare_counts,
    )
    summary = _summary(report)
    if not report.ok:
        raise VerificationFailed(summary)
    if report.unverified:
        logger().warning("verification found no critical failure on %s but could not verify: %s",
                         report.database, "; ".join(c.detail for c in report.unverified))
    else:
        logger().info("verification passed: %d checks on %s", len(report.checks),
                      report.database)
    return summary


def now() -> datetime:
    return datetime.now(UTC)

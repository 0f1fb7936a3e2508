"""Backup freshness: is the tier's RPO at risk right now?

For each target: the age of the newest base backup, the age of the newest archived WAL and the
source's archiver (``pg_stat_archiver`` failures newer than its last success), judged against
``[targets.X.backups]`` and the tier's RPO. An at-risk target notifies and ends the run Failed
(so the "failed runs" automation alerts as well). Deployed per target
(``backup-freshness/<target>``) on a schedule much shorter than the RPO.

Blast radius: none; read-only queries on production and a listing of the repository.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from restorekit.config import load_settings
from restorekit.errors import RestoreKitError
from restorekit.freshness import FreshnessReport
from tasks._runtime import TargetRef
from tasks.backups import check_backup_freshness
from tasks.reporting import notify


class BackupFreshnessParams(BaseModel):
    targets: list[str] = Field(default_factory=list,
                               description="Targets to check (empty: every target in the config).")
    config: str | None = Field(default=None, description="Path of restorekit.toml.")


class BackupsAtRisk(RestoreKitError):
    """The newest backup or archived WAL is too old, or the archiver is failing."""


@flow(name="backup-freshness", log_prints=True)
def backup_freshness(params: BackupFreshnessParams) -> list[FreshnessReport]:
    targets = params.targets or sorted(load_settings(params.config).targets)
    reports = []
    for target in targets:
        ref = TargetRef(target=target, config=params.config)
        report = check_backup_freshness(ref)
        slug = "".join(c if c.isalnum() else "-" for c in target.lower())
        create_markdown_artifact(key=f"backup-freshness-{slug}", markdown=report.to_markdown(),
                                 description=f"backup freshness of {target}")
        if not report.ok:
            notify(ref, f"restorekit: backups of {target} AT RISK: " + "; ".join(report.reasons))
        reports.append(report)
    at_risk = [r for r in reports if not r.ok]
    if at_risk:
        raise BackupsAtRisk("; ".join(f"{r.target}: {'; '.join(r.reasons)}" for r in at_risk))
    return reports

"""The runbook's manual backup "before major deployments or changes": a base backup into the
repository and a fresh baseline (schema fingerprint and row counts) to verify restores against.
CI can call the `backup/<target>` deployment before running migrations. The same deployment
runs on the target's `[backups]` schedule (daily by default), and after a successful base backup
it applies the retention policy (30 days / at least 7 backups / 7 days of PITR by default; the
WAL a kept backup needs always stays).

Blast radius: reads production; writes a new backup; retention removes expired backups and WAL
from the repository (never the newest `keep_count`, never WAL a kept backup needs).
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from flows._common import lock_dir, one_run_per_target
from restorekit.errors import SafetyError
from tasks._runtime import TargetRef
from tasks.backups import expire_old_backups
from tasks.database import (
    capture_baseline,
    provider_capabilities,
    snapshot_current_state,
    take_base_backup,
)

#: How long retention waits while another restorekit run holds the target; then it is skipped
#: until the next backup (the backup itself is never held up).
RETENTION_LOCK_WAIT_SECONDS = 600.0


class BackupParams(BaseModel):
    target: str = Field(description="Target name from restorekit.toml.")
    label: str = Field(default="", description="Why, e.g. 'before migration 42'.")
    config: str | None = Field(default=None, description="Path of restorekit.toml.")


@flow(name="backup", log_prints=True)
def backup(params: BackupParams) -> dict[str, object]:
    ref = TargetRef(target=params.target, config=params.config)
    if "named_backups" in provider_capabilities(ref):
        taken = take_base_backup(ref, params.label)
    else:
        # The provider takes no backups on demand (Supabase): a verified logical snapshot is
        # the backup restorekit can make, and what scenarios 2 and 3 recover rows from.
        snap = snapshot_current_state(ref, None, label=params.label or "manual")
        taken = {"snapshot_id": snap["snapshot_id"], "location": snap["location"],
                 "size_bytes": snap["size_bytes"], "label": snap["label"], "kind": "logical"}
    capture_baseline(ref)
    if "backup_id" in taken:
        # Only with the target to itself: a restore in progress may be reading an old backup.
        try:
            with one_run_per_target(params.target, RETENTION_LOCK_WAIT_SECONDS,
                                    lock_dir(params.config)):
                taken["retention"] = expire_old_backups(ref)
        except SafetyError as exc:
            taken["retention"] = f"skipped (next backup retries): {exc}"
            print(f"retention skipped: {exc}")
    create_markdown_artifact(
        key="backup", description=f"base backup of {params.target}",
        markdown=f"# Base backup of {params.target}\n\n"
        + "\n".join(f"- **{k}**: {v}" for k, v in taken.items()),
    )
    return taken

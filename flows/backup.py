"""The runbook's manual backup "before major deployments or changes": a base backup into the
repository and a fresh baseline (schema fingerprint and row counts) to verify restores against.
CI can call the `backup/<target>` deployment before running migrations."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from tasks._runtime import TargetRef
from tasks.database import (
    capture_baseline,
    provider_capabilities,
    snapshot_current_state,
    take_base_backup,
)


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
    create_markdown_artifact(
        key="backup", description=f"base backup of {params.target}",
        markdown=f"# Base backup of {params.target}\n\n"
        + "\n".join(f"- **{k}**: {v}" for k, v in taken.items()),
    )
    return taken

"""What ``[targets.NAME.neon]`` holds, and the names and status words restorekit relies on."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from restorekit.providers._cloud import ApiRoot, EnvVarName

DEFAULT_BASE_URL = "https://console.neon.tech/api/v2"
BACKUP_PREFIX = "restorekit-backup-"
PRESERVE_PREFIX = "restorekit-pre-restore-"

#: Operation statuses (provider_apis.md §3.5). "error" is not terminal: Neon retries the
#: operation itself (failures_count, retry_at), so we keep polling until our deadline.
DONE = frozenset({"finished", "skipped"})
FAILED = frozenset({"failed", "cancelled"})

#: Statuses any method may retry: 423 (locked by another operation), 429 (rejected by the rate
#: limiter before anything happened), 503 (the spec: "always safe to retry").
_RETRY_ANY = frozenset({423, 429, 503})
#: Statuses only an idempotent GET retries.
_RETRY_GET = frozenset({500, 502, 504})


class NeonSettings(BaseModel):
    """``[targets.NAME.neon]`` in restorekit.toml. Holds the NAME of the API key's variable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project_id: str = Field(min_length=1)
    branch_id: str = Field(pattern=r"^br-[A-Za-z0-9-]+$", description="The production branch.")
    api_key_env: EnvVarName = Field(description="Environment variable holding the API key.")
    database: str = Field(min_length=1)
    role: str = Field(min_length=1)
    base_url: ApiRoot = DEFAULT_BASE_URL
    poll_interval_seconds: float = Field(default=2.0, gt=0, le=300)
    timeout_seconds: float = Field(default=1800.0, gt=0)
    scratch_prefix: str = Field(default="restorekit-", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    find_point_budget: int = Field(default=12, ge=2, le=64,
                                   description="Branches one find_point may make, in all.")
    find_point_precision_seconds: float = Field(default=1.0, gt=0)


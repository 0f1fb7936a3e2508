"""What ``[targets.NAME.supabase]`` holds."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from restorekit.providers._cloud import (
    ApiRoot,
    EnvVarName,
)

DEFAULT_BASE_URL = "https://api.supabase.com"
SUPPORT_URL = "https://supabase.com/dashboard/support/new"
_REF = re.compile(r"^[a-z]{20}$")


class SupabaseSettings(BaseModel):
    """``[targets.NAME.supabase]`` in restorekit.toml. Holds no secret: ``token_env`` names the
    environment variable with the access token (a ``sbp_...`` personal access token or an
    OAuth token with database:read, database:write and projects:read)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project_ref: str
    token_env: EnvVarName
    base_url: ApiRoot = DEFAULT_BASE_URL
    poll_interval_seconds: float = Field(default=5.0, gt=0)
    timeout_seconds: float = Field(default=3600.0, gt=0)
    start_timeout_seconds: float = Field(default=600.0, gt=0)
    busy_timeout_seconds: float = Field(default=600.0, gt=0)

    @field_validator("project_ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        if not _REF.match(value):
            raise ValueError(
                f"project_ref {value!r} must be the project's 20 lower-case letters "
                "(Project Settings > General, or the db.<ref>.supabase.co host)"
            )
        return value

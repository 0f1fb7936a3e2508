"""What every provider world shares: a local installation standing in for the provider's
database, and a restorekit.toml (``config``) whose target "production" is on that provider.

The worlds (neon_server.NeonWorld, supabase_server.SupabaseWorld, rds_backed.RdsWorld) add the
fake in front and their provider's own handles.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from restorekit.demo import Installation
from restorekit.pg.cluster import LocalCluster
from restorekit.runtime import TargetRuntime, target_runtime


@dataclass
class InstallationWorld:
    installation: Installation
    config: Path  # restorekit.toml, target "production" on the world's provider

    @property
    def app_dsn(self) -> str:
        return self.installation.app_dsn

    @property
    def env_file(self) -> Path:
        return self.installation.env_file

    @property
    def production(self) -> LocalCluster:
        return self.installation.production

    def wait_archived(self, timeout: float = 60) -> None:
        self.installation.wait_archived(timeout)

    def clock(self) -> datetime:
        return self.installation.clock()

    def runtime(self) -> TargetRuntime:
        """Target "production" on the world's provider."""
        return target_runtime("production", str(self.config))

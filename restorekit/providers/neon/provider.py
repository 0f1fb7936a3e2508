"""NeonProvider: construction from restorekit.toml, its capabilities, and find_point."""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import SecretStr

from restorekit.bisect import find_by_bisection
from restorekit.config import Settings, TargetConfig
from restorekit.damage import Damage, FoundPoint
from restorekit.errors import RestoreKitError
from restorekit.models import RestoredDatabase, RestorePoint
from restorekit.providers._cloud import load_section, section_name, token_from_env
from restorekit.providers.base import Capability, Progress, no_progress
from restorekit.providers.neon.lifecycle import NeonLifecycle
from restorekit.providers.neon.settings import NeonSettings

log = logging.getLogger(__name__)


class NeonProvider(NeonLifecycle):
    """A Neon project whose production branch restorekit protects.

    Args:
        project_id: The Neon project.
        branch_id: The production branch (``br-...``).
        api_key: The API key (resolved from the environment by :meth:`from_config`).
        database: The application database on every branch.
        role: The role the connection URI is issued for.
        base_url: The API root.
        poll_interval_seconds: Pause between operation polls.
        timeout_seconds: Deadline for one wait on Neon operations.
        scratch_prefix: Branch-name prefix marking restorekit's scratch restores.
        http: The transport, injected time and retry budget (tests replace them); a
            ``Retry-After`` asking for more than its ``max_retry_wait`` is not waited out here:
            the call fails with a retryable error instead.
        target_name: The restorekit.toml target, named in the note :meth:`adopt` returns.
        find_point_budget: Branches one :meth:`find_point` may make, the two ends included.
        find_point_precision_seconds: Where :meth:`find_point` stops halving.
    """

    kind: ClassVar[str] = "neon"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.NEW_TARGET_RESTORE,
            Capability.IN_PLACE_RESTORE,
            Capability.POINT_IN_TIME,
            Capability.LSN_TARGET,
            Capability.NAMED_BACKUPS,
            Capability.FIND_POINT,
        }
    )

    # -- construction from restorekit.toml -----------------------------------------------------

    @classmethod
    def from_config(
        cls, target: TargetConfig, settings: Settings, **overrides: Any
    ) -> NeonProvider:
        """Build from ``[targets.NAME.neon]``; the key is read from ``api_key_env`` here, so a
        missing key fails now, not in the middle of a restore. ``overrides`` (``http``,
        timeouts, ...) replace constructor arguments; they are for tests."""
        section = section_name(target.name, "neon")
        cfg = load_section(NeonSettings, target.neon, section)
        key = token_from_env(cfg.api_key_env, "api_key_env", section, "a Neon API key")
        options: dict[str, Any] = {
            "project_id": cfg.project_id, "branch_id": cfg.branch_id, "api_key": key,
            "database": cfg.database, "role": cfg.role, "base_url": cfg.base_url,
            "poll_interval_seconds": cfg.poll_interval_seconds,
            "timeout_seconds": cfg.timeout_seconds, "scratch_prefix": cfg.scratch_prefix,
            "target_name": target.name, "find_point_budget": cfg.find_point_budget,
            "find_point_precision_seconds": cfg.find_point_precision_seconds,
        }
        return cls(**{**options, **overrides})

    def find_point(self, damage: Damage, *, progress: Progress = no_progress) -> FoundPoint:
        """Find the last time before ``damage`` by bisection over branches
        (:func:`restorekit.bisect.find_by_bisection`): from ``damage.good_point`` (else just
        inside the start of the window) to now, one scratch branch per probe, each deleted
        right after it was read. At most ``find_point_budget`` branches; halving stops at
        ``find_point_precision_seconds``.

        Probe branches are named ``<scratch_prefix>find-point-<run>-<n>``: a leftover (a run
        killed mid-probe) is a scratch restore that cleanup removes.

        Raises:
            ConfigError: wrong table/keys/predicate, damage before the good point, or none
                found at the head (see find_by_bisection).
            ProviderError: a branch could not be created or deleted.
        """
        window = self.restore_window()
        assert window.earliest is not None and window.latest is not None
        if damage.good_point is None:
            # A little inside the window: created_at has whole seconds (the branch may begin
            # up to 1 s after it), and the retention bound moves forward while we work.
            margin = max(timedelta(seconds=1),
                         min(timedelta(seconds=60), (window.latest - window.earliest) / 10))
            damage = replace(damage, good_point=RestorePoint.at(window.earliest + margin))
        run = uuid.uuid4().hex[:8]
        probes = itertools.count(1)

        @contextmanager
        def copy_at(when: datetime) -> Iterator[str]:
            name = f"find-point-{run}-{next(probes)}"
            restored: RestoredDatabase | None = None
            try:
                restored = self.restore(RestorePoint.at(when), name=name, window=window)
                yield restored.dsn.get_secret_value()
            except BaseException:
                self._drop_probe(name, restored)  # best effort: never hides the error
                raise
            self.discard(restored)

        return find_by_bisection(
            damage, copy_at=copy_at, earliest=window.earliest, latest=window.latest,
            precision=self.find_point_precision, budget=self.find_point_budget,
            progress=progress, noun="branches")

    def _drop_probe(self, name: str, restored: RestoredDatabase | None) -> None:
        """Delete a probe branch after a failure (one whose creation failed half-way is found
        by name); a failure here is logged: the branch is scratch, cleanup removes it."""
        try:
            if restored is None:
                branch = self._find_branch(self.scratch_prefix + name)
                restored = None if branch is None else RestoredDatabase(
                    provider=self.kind, handle=str(branch["id"]), dsn=SecretStr(""), point="")
            if restored is not None:
                self.discard(restored)
        except RestoreKitError as exc:
            log.warning("could not delete probe branch %s%s (cleanup will): %s",
                        self.scratch_prefix, name, exc)

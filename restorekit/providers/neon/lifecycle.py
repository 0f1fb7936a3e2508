"""After a restore: discard a scratch branch, adopt one as production, list and match them."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import SecretStr

from restorekit.errors import ConfigError, ProviderError, SafetyError
from restorekit.models import RestoredDatabase
from restorekit.providers.base import no_progress
from restorekit.providers.neon.errors import _need
from restorekit.providers.neon.formats import _address, _branch_point
from restorekit.providers.neon.restores import NeonRestores
from restorekit.providers.neon.settings import BACKUP_PREFIX, PRESERVE_PREFIX

log = logging.getLogger(__name__)


class NeonLifecycle(NeonRestores):
    """Discard, adopt and cleanup support of :class:`NeonProvider`."""

    def discard(self, restored: RestoredDatabase) -> None:
        """Delete a scratch branch. Refuses production, the project's default branch, protected
        branches and anything not named as a restorekit scratch restore (e.g. adopted)."""
        branch = self._branch(restored.handle, operation="discard")
        if branch is None:
            return  # already gone
        self._refuse_unless_scratch(branch, "delete")
        result = self._call("DELETE", self._p(f"/branches/{branch['id']}"), operation="discard",
                            expect=(200, 204), missing_ok=True)
        if result:
            self._wait(result.get("operations") or [], what=f"delete {branch['name']}",
                       progress=no_progress)
        log.info("deleted Neon branch %s (%s)", branch["name"], branch["id"])

    def adopt(self, restored: RestoredDatabase) -> str | None:
        """Make the restored branch production: the project's default branch
        (``POST .../set_as_default``, §3.6), renamed to drop the scratch prefix so cleanup and
        discard leave it alone.

        It is promoted first and renamed second, so a run killed in between leaves a default
        branch (which discard refuses to delete) that the next adopt only renames. A branch
        already renamed is adopted: adopting twice makes no call.

        Returns:
            None: the new branch id is recorded as the target's production by
            restorekit.production (see :meth:`adopted_location`), nothing is edited by hand.

        Raises:
            ProviderError: the branch does not exist (404), or the API refused.
            SafetyError: the branch is one of restorekit's backups.
        """
        branch = self._branch(restored.handle, operation="adopt")
        if branch is None:
            raise ProviderError(f"Neon branch {restored.handle} does not exist; nothing to adopt",
                                provider=self.kind, operation="adopt", status_code=404)
        branch_id, name = str(branch["id"]), str(branch.get("name", ""))
        if self._is_scratch_name(name):
            if not branch.get("default"):
                result = self._call("POST", self._p(f"/branches/{branch_id}/set_as_default"),
                                    operation="adopt")
                self._wait(result.get("operations") or [], what=f"set {name} as default",
                           progress=no_progress)
                log.info("Neon branch %s (%s) is now the default branch of project %s",
                         name, branch_id, self.project_id)
            new_name = name[len(self.scratch_prefix):]
            result = self._call("PATCH", self._p(f"/branches/{branch_id}"), operation="adopt",
                                json={"branch": {"name": new_name}})
            self._wait(result.get("operations") or [], what=f"rename {name}",
                       progress=no_progress)
            log.info("adopted Neon branch %s as %s", branch_id, new_name)
            name = new_name
        elif name.startswith((BACKUP_PREFIX, PRESERVE_PREFIX)):
            raise SafetyError(f"refusing to adopt Neon branch {name!r}: it is a backup")
        if branch_id != self.branch_id:
            log.info("Neon branch %s (%s) is now production of project %s (was %s)",
                     branch_id, name, self.project_id, self.branch_id)
        return None

    def resume_protection(self) -> Any:
        """Neon protects every branch by itself (history kept by the safekeepers): the adopted
        production branch is protected as long as the project keeps history; returns a
        restorekit.production.Protection saying for how long."""
        from restorekit.production import Protection

        project = _need(self._call("GET", self._p(""), operation="resume_protection"), "project")
        if self._branch(self.branch_id, operation="resume_protection") is None:
            raise ConfigError(f"Neon project {self.project_id}: production branch "
                              f"{self.branch_id} does not exist")
        retention = int(project.get("history_retention_seconds") or 0)
        if retention <= 0:
            return Protection(
                protected=False,
                detail=f"Neon project {self.project_id} keeps no history "
                       "(history_retention_seconds = 0), so no point in time can be restored",
                action="raise the project's history retention (Neon console: Settings, "
                       "Instant restore)")
        return Protection(
            protected=True, first_backup_at=self.http.now(), backup_id=self.branch_id,
            detail=f"Neon keeps branch {self.branch_id}'s history for "
                   f"{retention / 3600:g} h (point-in-time restore from now on)")

    def adopted_location(self, restored: RestoredDatabase) -> dict[str, object]:
        """What restorekit.production records for an adopted branch: its id, which later
        commands use as ``branch_id`` (restorekit.toml is not edited)."""
        return {"branch_id": restored.handle}

    def list_scratch(self) -> list[RestoredDatabase]:
        """Scratch branches (named with the scratch prefix, not adopted), oldest first."""
        found = [b for b in self._branches(operation="list_scratch", search=self.scratch_prefix)
                 if self._is_scratch_name(str(b.get("name", ""))) and b.get("id") != self.branch_id
                 and not b.get("default")]  # promoted by an adopt that did not get to rename it
        found.sort(key=lambda b: str(b.get("created_at", "")))
        return [
            RestoredDatabase(provider=self.kind, handle=b["id"], dsn=SecretStr(""),
                             point=_branch_point(b))
            for b in found
        ]

    def reaches(self, restored: RestoredDatabase, dsn: str) -> bool:
        """True when ``dsn`` connects to the branch ``restored``: the host and port of its
        connection URI (the pooled ``-pooler`` host counts too), so cleanup keeps what the
        application points at. A branch that is gone or has no compute is reached by nothing."""
        params = {"database_name": self.database, "role_name": self.role,
                  "branch_id": restored.handle}
        found = self._call("GET", self._p("/connection_uri"), operation="reaches",
                           params=params, missing_ok=True)
        return bool(found.get("uri")) and _address(dsn) == _address(str(found["uri"]))

    def _refuse_unless_scratch(self, branch: dict[str, Any], verb: str) -> None:
        name = str(branch.get("name", ""))
        why = None
        if branch.get("id") == self.branch_id:
            why = "it is the production branch"
        elif not self._is_scratch_name(name):
            why = (f"its name does not start with the scratch prefix {self.scratch_prefix!r} "
                   "(not a restorekit scratch restore, or adopted as production)")
        elif branch.get("default"):  # e.g. promoted by an adopt that died before the rename
            why = "it is the project's default branch"
        elif branch.get("protected"):
            why = "it is protected"
        if why:
            raise SafetyError(
                f"refusing to {verb} Neon branch {name!r} ({branch.get('id')}): {why}")

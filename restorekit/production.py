"""Which database is the target's production now: restorekit's own record, kept in its state.

restorekit.toml names the production a target started with. After scenario 1 adopts a
restored database (a new cluster, RDS instance or Neon branch), that one is production, and
every later command (backup, window, backups, restore, drill, the scenarios, cleanup) must act
on it, not on the lost one. restorekit records it in ``<state_dir>/targets/<target>.json`` and
lays the record over the config wherever a target is read (:meth:`Settings.target`); the
user's restorekit.toml is never edited.

The record is secret-free: a location (host, port, data directory, instance id, branch id),
never a DSN or a password. Credentials still come from the config's ``dsn``/``dsn_env``; only
the host and port of that DSN are re-pointed (:func:`restorekit.pg.dsn.repoint`).

Protection (:class:`Protection`) is what the adopted production needs next: WAL archiving and a
first base backup (self-hosted), automated backups with retention (RDS), history retention
(Neon). A provider that can resume it implements ``resume_protection()``; :func:`protect`
turns any failure into a ``Protection`` that says why and what to do, so a restore that
succeeded is never undone by it.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from restorekit.errors import ConfigError, RestoreKitError

if TYPE_CHECKING:
    from restorekit.config import TargetConfig

log = logging.getLogger(__name__)

#: The fields a provider may record for its adopted production (all secret-free).
LOCATION_FIELDS = ("host", "port", "dbname", "data_dir", "socket_dir", "instance_id",
                   "branch_id")


class Protection(BaseModel):
    """Whether the adopted production is backed up again, and how.

    ``protected`` with ``backup_id``/``first_backup_at`` when a first backup exists; otherwise
    ``detail`` says why not and ``action`` what to do. ``differences`` lists settings of the new
    production that differ from the old one's (RDS: backup retention, PITR).
    """

    model_config = ConfigDict(frozen=True)
    protected: bool
    first_backup_at: datetime | None = None
    backup_id: str | None = None
    detail: str = ""
    action: str = ""
    differences: tuple[str, ...] = ()

    def line(self) -> str:
        """The incident report's line: ``Protected again: yes, first backup at ... (id)``."""
        if self.protected:
            text = "Protected again: yes"
            if self.first_backup_at is not None:
                text += f", first backup at {self.first_backup_at.isoformat()}"
                if self.backup_id:
                    text += f" ({self.backup_id})"
            if self.detail:
                text += f"; {self.detail}"
        else:
            text = f"Protected again: no — {self.detail or 'unknown reason'}"
            if self.action:
                text += f", do {self.action}"
        if self.differences:
            text += ". Differs from the old production: " + "; ".join(self.differences)
        return text


class Production(BaseModel):
    """The target's current production as adoption recorded it.

    ``previous`` holds the earlier productions' records (their own ``previous`` emptied), oldest
    first, so the history across incidents stays readable.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")
    target: str
    provider: str
    adopted_at: datetime
    incident: str = ""
    restore_name: str = ""
    host: str | None = None
    port: int | None = None
    dbname: str | None = None
    data_dir: str | None = None
    socket_dir: str | None = None
    instance_id: str | None = None
    branch_id: str | None = None
    timeline: int | None = None
    protection: Protection | None = None
    # The location this production replaced (RDS: the old instance, to compare settings with).
    replaced: dict[str, Any] | None = None
    previous: tuple[dict[str, Any], ...] = Field(default_factory=tuple)

    def describe(self) -> str:
        """One secret-free line: where production is and since when."""
        where = (self.instance_id or self.branch_id
                 or (f"{self.host}:{self.port}" if self.host else "?"))
        extra = f", timeline {self.timeline}" if self.timeline else ""
        return (f"{where} (adopted {self.adopted_at.isoformat()}"
                + (f" in incident {self.incident}" if self.incident else "") + f"{extra})")


def record_path(state_dir: Path, target: str) -> Path:
    return Path(state_dir).absolute() / "targets" / f"{target}.json"


def load(state_dir: Path, target: str) -> Production | None:
    """The recorded production of ``target``, or None when nothing was ever adopted.

    Raises:
        ConfigError: the record exists but cannot be read (acting on the lost production
            instead would be worse than stopping).
    """
    path = record_path(state_dir, target)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the production record {path}: {exc.strerror}") from None
    try:
        return Production.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise ConfigError(
            f"the production record {path} is damaged ({type(exc).__name__}); it says which "
            "database adoption made production. Fix or remove it (removing it makes "
            "restorekit.toml's database production again)") from None


def save(state_dir: Path, record: Production) -> Path:
    """Write ``record`` atomically (temp file, fsync, rename): a crash leaves the old or the new
    record, never half of one."""
    path = record_path(state_dir, record.target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps(record.model_dump(mode="json"), indent=2).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def record_adoption(state_dir: Path, *, target: str, provider: str, location: dict[str, Any],
                    incident: str = "", restore_name: str = "",
                    replaced: dict[str, Any] | None = None) -> Production:
    """Make ``location`` the target's production; the one before goes into ``previous``.

    Idempotent: recording the same location again (a re-run of the same incident) keeps the
    first record's time and history.
    """
    unknown = set(location) - set(LOCATION_FIELDS) - {"timeline"}
    if unknown:
        raise ConfigError(f"not a production location field: {', '.join(sorted(unknown))}")
    current = load(state_dir, target)
    if current is not None and all(getattr(current, k) == v for k, v in location.items()):
        return current
    previous: tuple[dict[str, Any], ...] = ()
    if current is not None:
        previous = (*current.previous, current.model_dump(mode="json", exclude={"previous"}))
    record = Production(target=target, provider=provider, adopted_at=datetime.now(UTC),
                        incident=incident, restore_name=restore_name, previous=previous,
                        replaced=replaced, **location)
    save(state_dir, record)
    log.info("target %s: production is now %s", target, record.describe())
    return record


def record_protection(state_dir: Path, target: str, protection: Protection) -> None:
    """Keep the latest protection result with the record (shown by `restorekit window`)."""
    current = load(state_dir, target)
    if current is not None:
        save(state_dir, current.model_copy(update={"protection": protection}))


def apply(target: TargetConfig, record: Production | None) -> TargetConfig:
    """``target`` as it is now: the config with the recorded production laid over it.

    Self-hosted: the DSN's host and port (resolved by ``resolve_dsn``), ``data_dir`` and
    ``socket_dir``; RDS: ``[rds] instance_id``; Neon: ``[neon] branch_id``. A record made for
    another provider than the config names now is ignored (the config was changed on purpose).
    """
    if record is None:
        return target
    if record.provider != target.provider:
        log.warning("ignoring the production record of %s: it was made for provider %s, the "
                    "config now says %s", target.name, record.provider, target.provider)
        return target
    update: dict[str, Any] = {}
    if record.data_dir:
        update["data_dir"] = Path(record.data_dir)
    if record.socket_dir:
        update["socket_dir"] = Path(record.socket_dir)
    for section, key in (("rds", "instance_id"), ("neon", "branch_id")):
        value = getattr(record, key)
        if value and target.provider == section and getattr(target, section) is not None:
            update[section] = {**getattr(target, section), key: value}
    adopted = target.model_copy(update=update)
    if record.host or record.port:
        from restorekit.pg.dsn import Location

        adopted._adopted_location = Location(  # noqa: SLF001 - read by resolve_dsn
            hosts=(record.host,) if record.host else (),
            ports=(str(record.port),) if record.port else (),
            dbname=record.dbname or "")
    return adopted


def adopt(provider: Any, restored: Any, *, state_dir: Path, target: str, incident: str = "",
          restore_name: str = "") -> tuple[str | None, Production | None]:
    """Make ``restored`` the target's production: the provider marks it (cleanup never removes
    it) and, where it can say where it lives (``adopted_location``), it is recorded here so
    every later command acts on it. Returns (the provider's note for the operator, the record).
    """
    current = getattr(provider, "current_location", None)
    replaced = current() if current is not None else None
    note: str | None = provider.adopt(restored)
    locate = getattr(provider, "adopted_location", None)
    record = None
    if locate is not None:
        record = record_adoption(state_dir, target=target, provider=provider.kind,
                                 location=locate(restored), incident=incident,
                                 restore_name=restore_name, replaced=replaced)
    return note, record


def protect(provider: Any, *, state_dir: Path, target: str) -> Protection:
    """Resume backups of the (adopted) production ``provider`` acts on; never raises.

    A provider without ``resume_protection`` is protected by its platform as it is (nothing to
    do). Any restorekit error becomes ``protected=False`` with what to do, so a restore that
    succeeded stays done.
    """
    resume = getattr(provider, "resume_protection", None)
    if resume is None:
        result = Protection(protected=True, detail=f"{provider.kind} backs it up on its own")
    else:
        try:
            record = load(state_dir, target)
            replaced = record.replaced if record is not None else None
            accepts = "replaced" in inspect.signature(resume).parameters
            result = resume(replaced=replaced) if accepts else resume()
        except (RestoreKitError, OSError) as exc:
            from restorekit.pg.dsn import redact

            result = Protection(
                protected=False,
                detail=redact(f"{type(exc).__name__}: {exc}")[:500],
                action=f"`restorekit backup --target {target}` once the cause is fixed "
                       "(and check the new production's WAL archiving)")
    try:
        record_protection(state_dir, target, result)
    except (RestoreKitError, OSError) as exc:
        log.warning("could not keep the protection result with the record: %s", exc)
    return result


__all__ = ["Production", "Protection", "adopt", "apply", "load", "protect", "record_adoption",
           "record_path", "record_protection", "save"]

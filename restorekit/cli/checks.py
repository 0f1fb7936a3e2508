"""``restorekit run``'s pre-checks: bad input of a scenario is refused before anything runs
(exit status 2), with the core functions the flows call."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from restorekit.cli._common import (
    _settings,
    _unless_unreachable,
)
from restorekit.errors import (
    CapabilityNotSupported,
    ConfigError,
    RestorePointError,
)

if TYPE_CHECKING:
    from restorekit.config import Settings
    from restorekit.models import RestorePoint


def check_scenario(scenario: str, fields: Mapping[str, Any]) -> Settings:
    """Refuse bad input of a scenario before anything runs; returns the settings.

    First what needs nothing (the restore point, times, table and column names), then the
    config and the target, then, read-only, what the flow's first steps look at: the restore
    window and backups (never the live database for complete-failure: it may be down), the
    live tables and columns (partial-corruption) and the deletion scope (accidental-deletion).
    What cannot be reached (database down, provider API failing) is left to the flow, which
    retries, reports and notifies; only bad input is refused here. The flow checks it all again.

    Raises:
        ConfigError, RestorePointError, CapabilityNotSupported: a refusal (exit status 2).
    """
    point, auto, tables, columns = _check_typed_input(scenario, fields)
    settings = _settings(Path(fields["config"]) if fields.get("config") else None)
    cfg = settings.target(fields["target"])
    from restorekit.runtime import TargetRuntime

    rt = TargetRuntime(settings=settings, config=cfg)
    if auto:
        from restorekit.providers.base import Capability

        if Capability.FIND_POINT not in rt.provider.capabilities:
            raise CapabilityNotSupported(
                f"target {fields['target']!r} is on {rt.provider.kind}, which gives no access "
                "to its WAL (and no branches at any point): restorekit cannot find where the "
                "damage began there; give the restore point (--point <time just before it>)")
    if scenario == "complete-failure":
        if point is not None:
            with _unless_unreachable():
                _check_point(rt.provider, point, fields["target"], snapshot_copy_allowed=False)
        return settings
    _check_live_input(scenario, fields, rt, point, tables, columns)
    return settings


def _check_typed_input(
    scenario: str, fields: Mapping[str, Any],
) -> tuple[RestorePoint | None, bool, list[Any], dict[Any, list[str]] | None]:
    """What needs nothing: the restore point (None for auto), whether it is auto, the table
    and column names, the times. Returns the point, auto, the tables and the columns."""
    from restorekit.models import RestorePoint

    point_text = fields.get("restore_point")
    if scenario == "partial-corruption" and (point_text or "").strip().lower() in ("", "latest"):
        raise ConfigError(
            "partial-corruption needs a restore point from BEFORE the corruption (the latest "
            "point contains it); give e.g. --point 2026-11-25T13:05:00Z")
    auto = (point_text or "").strip().lower() == "auto"
    point = None if auto else RestorePoint.parse(point_text or "latest")
    # Imported after the point is read: it brings psycopg (a fifth of a second).
    from restorekit.pg.catalog import TableRef

    if auto:
        _check_auto_input(scenario, fields)
    elif fields.get("where") or fields.get("good_point") or fields.get("damaged_table") \
            or fields.get("damaged_ids") or fields.get("damaged_column"):
        raise ConfigError("--where, --good-point and --damaged-* describe the damage for "
                          "--point auto; with a point given they would be ignored")

    tables = [TableRef.parse(t) for t in fields.get("tables") or []]
    columns: dict[Any, list[str]] | None = None
    if scenario == "partial-corruption":
        from restorekit.recovery import check_keep_after, parse_columns

        if point is not None:
            check_keep_after(point, fields.get("keep_rows_written_after"))
        specs = fields.get("columns") or []
        # Without --tables the tables come from the live integrity findings (the flow's), so
        # a bare column can only be judged there.
        if tables or all(_qualified(spec) for spec in specs):
            columns = parse_columns(specs, tables)
    if scenario == "accidental-deletion":
        TableRef.parse(fields.get("table", "users"))
    return point, auto, tables, columns


def _check_live_input(scenario: str, fields: Mapping[str, Any], rt: Any,
                      point: RestorePoint | None, tables: list[Any],
                      columns: dict[Any, list[str]] | None) -> None:
    """Partial-corruption and accidental-deletion, read-only on live: the tables, columns and
    deletion scope, the privileges the flow needs, then the point against the provider."""
    import psycopg

    from restorekit.privileges import check_privileges

    with _unless_unreachable(), psycopg.connect(rt.live_dsn(), connect_timeout=5) as conn:
        if scenario == "partial-corruption":
            _check_repair_input(conn, tables, columns, fields.get("keep_rows_written_after"))
            needs = ("select", "insert", "update") + (
                ("delete",) if fields.get("full_replace") else ())
        else:
            point = _check_deletion_input(conn, fields, point)
            needs = ("select", "insert")
        # The privileges the flow's preflight asks for (flows/partial_corruption.py,
        # flows/accidental_deletion.py): checked after the input, which is what was typed.
        check_privileges(conn, needs, purpose=f"this run on {fields['target']!r}")
        if point is not None:
            _check_point(rt.provider, point, fields["target"], snapshot_copy_allowed=True)


def _qualified(spec: str) -> bool:
    from restorekit.pg.catalog import split_qualified

    return len(split_qualified(spec.strip()) if spec.strip() else []) != 1


def _check_repair_input(conn: Any, tables: list[Any], columns: dict[Any, list[str]] | None,
                        keep: datetime | None) -> None:
    """Partial-corruption on live: the tables exist (as tasks.database.check_tables); the
    columns exist, can be written and belong to tables being repaired, and commit times are
    recorded when ``keep`` is given (restorekit.recovery.check_repair_options)."""
    from restorekit.pg import catalog
    from restorekit.recovery import check_repair_options

    if tables:
        known = set(catalog.list_tables(conn))
        unknown = [str(t) for t in tables if t not in known]
        if unknown:
            raise ConfigError(f"unknown table(s) in the live database: {', '.join(unknown)}")
    if columns is not None or keep is not None:
        columns = columns or {}
        check_repair_options(conn, tables or list(columns), columns, keep)


def _check_auto_input(scenario: str, fields: Mapping[str, Any]) -> None:
    """``--point auto``: what the search needs, judged before anything runs."""
    from restorekit.models import RestorePoint

    if fields.get("good_point"):
        RestorePoint.parse(str(fields["good_point"]))
    if fields.get("where") and (fields.get("damaged_ids") or fields.get("ids")):
        raise ConfigError("give the damaged rows as ids or as --where, not both")
    if scenario == "complete-failure" and not fields.get("damaged_table"):
        raise ConfigError("--point auto needs --damaged-table: the table the damage hit "
                          "(with --damaged-ids or --where for rows, else the whole table)")
    if scenario == "partial-corruption":
        tables = fields.get("tables") or []
        if not (fields.get("damaged_table") or len(tables) == 1):
            raise ConfigError("--point auto needs --damaged-table (or exactly one --tables)")
        if not (fields.get("damaged_ids") or fields.get("where")):
            raise ConfigError("--point auto for partial-corruption needs the corrupted rows: "
                              "--damaged-ids or --where")


def _check_deletion_input(conn: Any, fields: Mapping[str, Any], point: RestorePoint | None
                          ) -> RestorePoint | None:
    """Accidental-deletion on live: the deletion scope the flow's first step finds (table,
    key, ids of the key's type, the audit log); returns the restore point ('latest' is just
    before the first recorded deletion; None for auto, which the flow finds)."""
    from restorekit.models import PointKind, RestorePoint
    from restorekit.scope import deletion_scope

    table = fields.get("table", "users")
    found = deletion_scope(conn, table, ids=fields.get("ids") or None,
                           since=fields.get("deleted_since"))
    if point is None:
        if found.keys is None and not fields.get("where"):
            raise ConfigError(f"--point auto needs the deleted {table} rows: --ids, --where, "
                              "or an audit log that recorded them")
        return None
    if point.kind is not PointKind.LATEST:
        return point
    if found.point_before is None:
        raise ConfigError(f"no deletion from {table} is recorded in an audit log: give the "
                          "restore point (a time just before the deletion), or --point auto "
                          "to find the deleting transaction in the WAL")
    return RestorePoint.at(found.point_before)


def _check_point(provider: Any, point: RestorePoint, target: str, *,
                 snapshot_copy_allowed: bool) -> None:
    """The restore point against the provider's capabilities, restore window and backups: the
    checks of the flow's preflight that need no side effect (a point after the window but not
    in the future is left to preflight, which archives the pending WAL and looks again)."""
    from restorekit.models import PointKind
    from restorekit.providers.base import Capability

    now = datetime.now(UTC)
    from_snapshot = (snapshot_copy_allowed
                     and Capability.NEW_TARGET_RESTORE not in provider.capabilities)
    if (point.kind is PointKind.TIME and not from_snapshot
            and Capability.POINT_IN_TIME not in provider.capabilities):
        raise CapabilityNotSupported(
            f"provider {provider.kind!r} of target {target!r} cannot point_in_time")
    if from_snapshot:
        if point.time is None:
            raise ConfigError(
                f"{provider.kind} cannot restore into a new database, so the copy comes from a "
                f"logical snapshot: give the restore point as a time, not {str(point)!r}")
        if point.time > now:
            raise RestorePointError(f"restore time {point} is in the future")
        return
    window = provider.restore_window()
    if point.time is not None and window.latest is not None and window.latest < point.time <= now:
        return
    window.check(point, now=now)
    if point.kind is PointKind.BACKUP:
        backups = provider.list_backups()
        if point.value not in {b.backup_id for b in backups}:
            known = ", ".join(b.backup_id for b in backups[-5:]) or "none"
            raise RestorePointError(
                f"no backup {point.value!r} for target {target!r}; available: {known} "
                "(the newest; list them all with `restorekit backups`)")

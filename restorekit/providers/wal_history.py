"""The self-hosted provider's history: where a damage began, and what a restore would lose.

Everything comes from what restorekit already holds, with no access to production: a scratch
copy at a point before the damage tells where the rows were (their ``ctid``) and which file is
the table's; the archived WAL after it, read with pg_waldump, tells which transaction removed
or changed them (:mod:`restorekit.pointfind`). When a committed transaction removes the table's
file, a second copy just after it tells a rewrite (VACUUM FULL, CLUSTER: the rows are there,
in a new file, and are followed there) from a TRUNCATE or DROP TABLE (the damage).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from psycopg import sql

from restorekit.damage import Damage, DamageKind, FoundBy, FoundPoint, Loss, TableLoss
from restorekit.errors import ConfigError, RestoreKitError, RestorePointError
from restorekit.models import (
    BackupInfo,
    PointKind,
    RestoredDatabase,
    RestorePoint,
    format_lsn,
    parse_lsn,
)
from restorekit.pg import catalog
from restorekit.pg.catalog import TableRef
from restorekit.pg.cluster import connect
from restorekit.pg.tools import PgTool
from restorekit.pointfind import (
    FileDropped,
    Finding,
    Pending,
    TableTrace,
    count_writes,
    mass_delete_first,
    trace_rows,
    trace_table,
)
from restorekit.providers.base import Progress, no_progress
from restorekit.walscan import (
    TRACE_OPS,
    RelFile,
    StagedWal,
    block_filter,
    changes_by,
    scan,
    stage_segments,
    staging_dir,
    waldump_chunks,
)

if TYPE_CHECKING:
    from restorekit.providers.selfhosted import SelfHostedProvider

log = logging.getLogger(__name__)

#: pg_waldump's resource managers for counting writes: row changes, commits, new files.
LOSS_FILTERS = ("--rmgr=Heap", "--rmgr=Heap2", "--rmgr=Transaction", "--rmgr=Storage")

#: Copies made to check, update by update, whether a damaged column changed.
VERIFY_BUDGET = 8

Tid = tuple[int, int]


class _NotThere(RestoreKitError):
    """The table or rows are not in a copy (so the point is not before the damage)."""


@dataclass(slots=True)
class Trail:
    """What is followed through the WAL, as a copy showed it."""

    oid: int
    rel: RelFile
    rows: dict[Tid, tuple[str, ...]]  # row version -> its key
    count: int  # rows the table had (whole-table damage) or followed rows
    values: dict[tuple[str, ...], str | None] | None = None  # key -> the damaged column's value


def read_trail(conn: Any, table: TableRef, damage: Damage, *, oid: int | None = None) -> Trail:
    """The table's file and the followed rows' places on a copy.

    Raises:
        _NotThere: the table (or one of the keys, or any row for a predicate) is not there.
        ConfigError: the table has no file of its own (partitioned, a view) or the keys do not
            fit its primary key.
    """
    found = conn.execute(
        "SELECT c.oid, pg_relation_filenode(c.oid), "
        "       coalesce(nullif(c.reltablespace, 0), d.dattablespace), d.oid, c.relkind, "
        "       n.nspname, c.relname "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_database d ON d.datname = current_database() "
        "WHERE " + ("c.oid = %s" if oid is not None else "n.nspname = %s AND c.relname = %s"),
        (oid,) if oid is not None else (table.schema, table.name)).fetchone()
    if found is None:
        raise _NotThere(f"table {table} does not exist")
    rel_oid, filenode, tablespace, db_oid, relkind, schema, name = found
    if relkind not in ("r", "m") or filenode is None:
        raise ConfigError(f"{table} is not a table with its own storage (relkind {relkind}): "
                          "name the partition that held the rows")
    table = TableRef(schema, name)
    rel = (int(tablespace), int(db_oid), int(filenode))
    if damage.kind is DamageKind.TABLE:
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.ident)).fetchone()
        return Trail(rel_oid, rel, {}, int(count[0]))
    pk = catalog.primary_key(conn, table)
    if not pk:
        raise ConfigError(f"{table} has no primary key: give the rows as a predicate (--where)")
    key_text = _key_text(pk)
    if damage.keys:
        width = {len(k) for k in damage.keys}
        if width != {len(pk)}:
            raise ConfigError(f"{table}'s primary key is ({', '.join(pk)}): each key needs "
                              f"{len(pk)} value(s)")
        query = sql.SQL("SELECT ctid::text, {keys} FROM {t} WHERE ({keys}) IN ({v})").format(
            keys=key_text, t=table.ident, v=_key_values(len(pk), len(damage.keys)))
        params: list[str] = [str(v) for key in damage.keys for v in key]
    else:
        assert damage.where is not None
        query = sql.SQL("SELECT ctid::text, {keys} FROM {t} WHERE {w}").format(
            keys=key_text, t=table.ident, w=sql.SQL(damage.where))  # the operator's own SQL
        params = []
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        rows = conn.execute(query, params).fetchall()
    places = {_tid(r[0]): tuple(r[1:]) for r in rows}
    values = column_values(conn, table, pk, damage.column, list(places.values())) \
        if damage.column else None
    if damage.keys:
        missing = set(damage.keys) - set(places.values())
        if missing:
            shown = ", ".join("/".join(k) for k in sorted(missing)[:5])
            raise _NotThere(f"{len(missing)} key(s) of {table} are not there ({shown})")
    elif not places:
        raise _NotThere(f"no row of {table} matches {damage.where}")
    return Trail(rel_oid, rel, places, len(places), values)


def column_values(conn: Any, table: TableRef, pk: tuple[str, ...] | list[str], column: str,
                  keys: list[tuple[str, ...]]) -> dict[tuple[str, ...], str | None]:
    """``column`` of the rows with ``keys`` (as text; a missing row is absent)."""
    if not keys:
        return {}
    key_text = _key_text(pk)
    try:
        rows = conn.execute(
            sql.SQL("SELECT {k}, {c}::text FROM {t} WHERE ({k}) IN ({v})").format(
                k=key_text, c=sql.Identifier(column), t=table.ident,
                v=_key_values(len(pk), len(keys))),
            [v for key in keys for v in key]).fetchall()
    except Exception as exc:  # noqa: BLE001 - an unknown column is the operator's input
        if "does not exist" in str(exc):
            raise ConfigError(f"{table} has no column {column!r}") from None
        raise
    return {tuple(r[:-1]): r[-1] for r in rows}


def _key_text(pk: tuple[str, ...] | list[str]) -> sql.Composable:
    """The key columns as text: keys are given as text, whatever the columns' types."""
    return sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in pk)


def _key_values(width: int, count: int) -> sql.Composable:
    """``VALUES (%s, %s), ...`` for ``count`` keys of ``width`` columns."""
    row = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * width))
    return sql.SQL("VALUES {}").format(sql.SQL(", ").join([row] * count))


def _tid(text: str) -> Tid:
    blk, off = text.strip("()").split(",")
    return int(blk), int(off)


def _session(copy: RestoredDatabase) -> Any:
    """A session on a scratch copy for reading whole tables (not cut by a statement_timeout the
    copy inherited from production, nor read in part under row-level security)."""
    return connect(copy.dsn.get_secret_value(), autocommit=True, whole_tables=True)


class WalHistory:
    """find_point and loss_after for a :class:`SelfHostedProvider`."""

    def __init__(self, provider: SelfHostedProvider) -> None:
        self.provider = provider
        self.engine = provider.engine
        self.os_user = provider.source.os_user
        self.tool = PgTool(provider.source.bin_dir, self.os_user)
        self.copies = 0

    # -- copies ---------------------------------------------------------------------------------

    @contextmanager
    def copy_at(self, point: RestorePoint, progress: Progress) -> Iterator[RestoredDatabase]:
        name = f"findpoint-{secrets.token_hex(4)}"
        restored = self.provider.restore(point, name=name, progress=progress)
        self.copies += 1
        try:
            yield restored
        finally:
            self.provider.discard(restored)

    def _good_copy_trail(self, damage: Damage, table: TableRef, progress: Progress
                         ) -> tuple[Trail, BackupInfo, int, list[str]]:
        """A trail read on a copy at the good point: the operator's, else the newest backup
        whose copy still has the rows (walking back to older backups)."""
        backups = self.provider.list_backups()
        if not backups:
            raise ConfigError("no base backup to start from: take one (restorekit backup)")
        points = ([damage.good_point] if damage.good_point else
                  [RestorePoint(PointKind.BACKUP, value=b.backup_id) for b in reversed(backups)])
        notes: list[str] = []
        last: _NotThere | None = None
        for point in points:
            with self.copy_at(point, progress) as copy, \
                    _session(copy) as conn:
                try:
                    trail = read_trail(conn, table, damage)
                except _NotThere as exc:
                    notes.append(f"not at {point}: {exc}")
                    last = exc
                    continue
                backup = next(b for b in backups if b.backup_id == copy.backup_id)
                assert copy.recovered_to_lsn is not None
                return trail, backup, parse_lsn(copy.recovered_to_lsn), notes
        where = str(damage.good_point) if damage.good_point else (
            f"any of the {len(backups)} base backup(s), the oldest from "
            f"{backups[0].stop_time.isoformat()}")
        raise ConfigError(f"{damage.describe()}: {last} at {where}; the rows never existed "
                          "there, or the damage is older than the good point (give an earlier "
                          "--good-point)")

    # -- the WAL --------------------------------------------------------------------------------

    def _stage(self, backup: BackupInfo, directory: Any, progress: Progress) -> StagedWal:
        return stage_segments(
            self.engine.wal_segments(), self.engine.fetch_wal, directory,
            timeline=backup.timeline, start_lsn=parse_lsn(backup.start_lsn),
            os_user=self.os_user, progress=lambda i, n: progress("stage WAL", i, n))

    def find_point(self, damage: Damage, *, progress: Progress = no_progress) -> FoundPoint:
        table = TableRef.parse(damage.table)
        trail, backup, after_lsn, notes = self._good_copy_trail(damage, table, progress)
        start = parse_lsn(backup.start_lsn)
        state = TableTrace()
        with staging_dir(self.engine.work_dir, self.os_user) as directory:
            staged = self._stage(backup, directory, progress)
            progress("scan WAL", 0, None)
            while True:
                # Only lines on the followed rows' blocks are parsed (the set grows as they move;
                # whole-table damage reads every DELETE of the file).
                blocks = {blk for blk, _ in trail.rows}
                keep = block_filter(blocks) if damage.kind is not DamageKind.TABLE else None
                with closing(scan(self.tool, staged, start, relation=trail.rel,
                                  wanted=TRACE_OPS, keep=keep)) as records:
                    result = self._trace(records, damage, table, trail, after_lsn, state,
                                         notes, progress, blocks)
                if not isinstance(result, FileDropped):
                    break
                if damage.kind is DamageKind.TABLE and (early := mass_delete_first(
                        state, trail.count)) is not None:
                    result = early
                    break
                followed = self._after_drop(result, damage, table, trail, progress)
                if isinstance(followed, Finding):
                    result = followed
                    break
                notes.append(
                    f"the table's file was rewritten by transaction {result.xid} at "
                    f"{result.commit_time} (VACUUM FULL, CLUSTER or a rewriting ALTER TABLE); "
                    "the rows were followed into the new file on a copy made after it")
                trail = followed
                start = after_lsn = result.commit_lsn + 1
            if isinstance(result, Finding) and damage.kind is not DamageKind.TABLE:
                # The scan parsed only the followed rows' blocks: count the whole transaction.
                result = replace(result, rows_touched=changes_by(
                    self.tool, staged, parse_lsn(backup.start_lsn), result.commit_lsn,
                    trail.rel, (result.xid, *result.subxacts)))
            scanned = staged.bytes
        if result is None:
            raise ConfigError(
                f"no committed transaction after {format_lsn(after_lsn)} "
                f"{'deleted' if damage.kind is not DamageKind.CHANGED else 'changed'} "
                f"{damage.describe().split(' of ')[0]} of {table} in the archived WAL "
                f"(up to {staged.last}): nothing to undo, or the damage is not archived yet "
                "(archive the pending WAL and ask again)")
        point = RestorePoint.before_xid(result.xid, commit_lsn=format_lsn(result.commit_lsn))
        return FoundPoint(
            point=point, found_by=FoundBy.WAL_SCAN, xid=result.xid,
            commit_lsn=format_lsn(result.commit_lsn), commit_time=result.commit_time,
            rows_touched=result.rows_touched, what=result.what, evidence=result.evidence,
            notes=tuple(notes), scanned_bytes=scanned, copies=self.copies)

    def _trace(self, records: Iterator[Any], damage: Damage, table: TableRef, trail: Trail,
               after_lsn: int, state: TableTrace, notes: list[str], progress: Progress,
               blocks: set[int]) -> Finding | FileDropped | None:
        """One pass over ``records``; for a damaged column, each update of the rows is checked
        on a copy just after it until one changed that column (at most ``VERIFY_BUDGET``)."""
        if damage.kind is DamageKind.TABLE:
            return trace_table(records, trail.rel, after_lsn=after_lsn, state=state)
        pending = Pending()
        for _ in range(VERIFY_BUDGET):
            result = trace_rows(records, trail.rel, trail.rows, after_lsn=after_lsn,
                                changed=damage.kind is DamageKind.CHANGED, pending=pending,
                                blocks=blocks)
            if not isinstance(result, Finding) or damage.column is None \
                    or "DELETE" in result.what:
                return result
            after = RestorePoint(PointKind.XID, value=str(result.xid),
                                 commit_lsn=format_lsn(result.commit_lsn))
            with self.copy_at(after, progress) as copy, \
                    _session(copy) as conn:
                pk = catalog.primary_key(conn, table)
                now = column_values(conn, table, pk, damage.column, list(trail.values or {}))
            changed = [k for k, v in (trail.values or {}).items() if now.get(k) != v]
            if changed:
                return Finding(result.xid, result.commit_lsn, result.commit_time,
                               result.rows_touched, len(changed),
                               f"UPDATE of column {damage.column} in {len(changed)} followed "
                               "row(s)", result.evidence)
            notes.append(f"transaction {result.xid} updated the rows but not "
                         f"{damage.column} (checked on a copy after it)")
        raise ConfigError(f"{VERIFY_BUDGET} transactions updated the rows without changing "
                          f"{damage.column}: give a later --good-point to go on")

    def _after_drop(self, dropped: FileDropped, damage: Damage, table: TableRef, trail: Trail,
                    progress: Progress) -> Trail | Finding:
        """A copy just after the drop: the rows are there (a rewrite: the new trail) or not
        (TRUNCATE / DROP TABLE: the damage)."""
        after = RestorePoint(PointKind.XID, value=str(dropped.xid),
                             commit_lsn=format_lsn(dropped.commit_lsn))
        with self.copy_at(after, progress) as copy, \
                _session(copy) as conn:
            try:
                new = read_trail(conn, table, damage, oid=trail.oid)
                if damage.kind is not DamageKind.TABLE or new.count:
                    return new
                what = "TRUNCATE (the table's file was replaced by an empty one)"
            except _NotThere as exc:
                gone = "does not exist" in str(exc)
                what = ("DROP TABLE (the table is gone after it)" if gone else
                        f"TRUNCATE (the table's file was replaced; {exc})")
        return Finding(xid=dropped.xid, commit_lsn=dropped.commit_lsn,
                       commit_time=dropped.commit_time, rows_touched=trail.count,
                       matched=trail.count, what=what, evidence=(dropped.evidence,))

    def loss_after(self, point: RestorePoint, *, progress: Progress = no_progress) -> Loss:
        """What was committed after ``point`` up to the end of the archive."""
        if point.kind is PointKind.LATEST:
            return Loss(point=str(point))
        backups = self.provider.list_backups()
        backup = self.provider._choose_backup(point, backups)  # noqa: SLF001 - same provider
        boundary = self._boundary(point, backup)
        with staging_dir(self.engine.work_dir, self.os_user) as directory:
            staged = self._stage(backup, directory, progress)
            progress("scan WAL", 0, None)
            writes = count_writes(waldump_chunks(self.tool, staged,
                                                 parse_lsn(backup.start_lsn), LOSS_FILTERS),
                                  after=boundary)
        names = self._names(set(writes.per_file))
        tables = sorted(
            (TableLoss(names.get(rel) or f"file {rel[0]}/{rel[1]}/{rel[2]}", *counts)
             for rel, counts in writes.per_file.items() if rel[2] >= 16384 or rel in names),
            key=lambda t: t.table)
        other = [f"{len(writes.dropped)} file(s) removed at commit (TRUNCATE, DROP or rewrite)"
                 ] if writes.dropped else []
        return Loss(point=str(point), transactions=writes.transactions,
                    first_commit=writes.first_commit, last_commit=writes.last_commit,
                    tables=tuple(tables), other=tuple(other))

    def _boundary(self, point: RestorePoint, backup: BackupInfo) -> Any:
        """Which commits a restore to ``point`` would not replay."""
        if point.kind is PointKind.TIME:
            assert point.time is not None
            when = point.time
            return lambda r: r.time is not None and r.time > when
        if point.kind is PointKind.XID:
            if point.commit_lsn is None:
                raise RestorePointError(f"{point}: the commit of an xid is not located; find it "
                                        "with find-point (which records where it committed)")
            stop = parse_lsn(point.commit_lsn)
            return (lambda r: r.lsn >= stop) if not point.inclusive else (lambda r: r.lsn > stop)
        if point.kind is PointKind.LSN:
            assert point.value is not None
            stop = parse_lsn(point.value)
            return lambda r: r.lsn >= stop
        if point.kind in (PointKind.BACKUP, PointKind.IMMEDIATE):
            stop = parse_lsn(backup.stop_lsn)
            return lambda r: r.lsn >= stop
        raise RestorePointError(f"what a restore to {point} would lose cannot be counted here")

    def _names(self, files: set[RelFile]) -> dict[RelFile, str]:
        """schema.table for each file, asked of production while it answers (a file it no
        longer has, or a production that is gone, stays a file number)."""
        if not files:
            return {}
        try:
            with connect(self.provider.source.dsn, autocommit=True, connect_timeout=5) as conn:
                row = conn.execute("SELECT oid FROM pg_database "
                                   "WHERE datname = current_database()").fetchone()
                assert row is not None  # the current database is always in pg_database
                db_oid = row[0]
                rows = conn.execute(
                    "SELECT f.tsp, f.node, n.nspname || '.' || c.relname "
                    "FROM unnest(%s::oid[], %s::oid[]) AS f(tsp, node) "
                    "JOIN pg_class c ON c.oid = pg_filenode_relation("
                    "  CASE WHEN f.tsp = (SELECT dattablespace FROM pg_database "
                    "                     WHERE datname = current_database()) THEN 0 "
                    "       ELSE f.tsp END, f.node) "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace",
                    ([f[0] for f in files if f[1] == db_oid],
                     [f[2] for f in files if f[1] == db_oid])).fetchall()
        except Exception as exc:  # noqa: BLE001 - naming is optional: file numbers stay
            log.info("cannot name the files from production: %s", exc)
            return {}
        return {(int(t), int(db_oid), int(n)): name for t, n, name in rows}


__all__ = ["Trail", "WalHistory", "read_trail"]

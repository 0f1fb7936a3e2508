"""Writing staged rows to live: the INSERT both recoveries use, and the translation of a failed
write into a :class:`~restorekit.errors.SafetyError` (a conflict with a row written since) or a
:class:`~restorekit.errors.PostgresError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import Connection, sql

from restorekit.diff import TableShape
from restorekit.errors import PostgresError, SafetyError
from restorekit.pg.catalog import TableRef
from restorekit.recovery.sequences import _Facts


def _insert_statement(table: TableRef, shape: TableShape, stage: TableRef, facts: _Facts,
                      where: sql.Composable | None = None) -> sql.Composed:
    # ON CONFLICT on the primary key only: "already there" is skipped; any other unique conflict
    # (a value re-used by a row written since) fails loudly instead of dropping the row.
    always = facts.identity_always.intersection(shape.columns)
    overriding = sql.SQL("OVERRIDING SYSTEM VALUE ") if always else sql.SQL("")
    return sql.SQL(
        "INSERT INTO {table} ({cols}) {overriding}SELECT {cols} FROM {stage}{where} "
        "ON CONFLICT ({key}) DO NOTHING"
    ).format(table=table.ident, cols=shape.column_idents(), overriding=overriding,
             stage=stage.ident, key=shape.key_idents(),
             where=sql.SQL("") if where is None else sql.SQL(" AS s WHERE {}").format(where))


@contextmanager
def _translated(operation: str, dry_run: bool) -> Iterator[None]:
    try:
        yield
    except psycopg.IntegrityError as exc:
        diag = exc.diag
        where = f" on {diag.schema_name}.{diag.table_name}" if diag.table_name else ""
        constraint = f" (constraint {diag.constraint_name})" if diag.constraint_name else ""
        detail = f": {diag.message_detail}" if diag.message_detail else ""
        raise SafetyError(
            f"{'dry run of ' if dry_run else ''}{operation} refused{where}{constraint}: "
            f"{diag.message_primary}{detail}. A row written since the restore point conflicts "
            "with a row being restored; everything was rolled back, nothing was written. "
            "Resolve the conflicting row (or leave its key out) and run again."
        ) from exc
    except psycopg.Error as exc:
        message = exc.diag.message_primary or str(exc)
        raise PostgresError(f"{operation} failed and was rolled back: {message}") from exc


@contextmanager
def _transactions(live_conn: Connection[Any], copy_conn: Connection[Any], operation: str, *,
                  dry_run: bool) -> Iterator[None]:
    """One live transaction (a savepoint when the caller has one open), rolled back when
    ``dry_run``, and inside it one copy transaction that is always rolled back (the copy's
    temp tables go with it); a failure is reported by :func:`_translated`."""
    with _translated(operation, dry_run), live_conn.transaction(force_rollback=dry_run), \
            copy_conn.transaction(force_rollback=True):
        yield

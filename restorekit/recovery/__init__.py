"""Selective row recovery from a restored copy: runbook scenarios 2 and 3, done set-based.

Scenario 3 ("accidental data deletion"): :func:`recover_deleted_rows` puts back the rows of a
table that were deleted, together with every row an ``ON DELETE CASCADE`` took with them
(deleting a user takes its clients and appointments), and nothing else. Scenario 2 ("partial data
corruption"): :func:`repair_rows` re-inserts missing rows and rewrites changed ones, keeping the
rows written after the restore point unless asked to delete them. It can be narrowed to the
corrupted columns (``columns``) and told to leave alone every row written after the corruption
(``keep_rows_written_after``), and it never writes a row set other than the one
:func:`plan_repair` showed for approval (``approved``).

How data moves. The copy is in another cluster, so nothing joins across the two. The keys to
recover go to the copy once (COPY into a temp table there: the copy is a scratch clone and may
hold temp tables); the copy selects exactly the affected rows, cascade children included,
into temp tables of its own; those rows are streamed with COPY into TEMP staging tables on the
live side; and one ``INSERT ... SELECT ... ON CONFLICT (primary key) DO NOTHING`` (or
``UPDATE ... FROM``) per table applies them, parents first, in ONE live transaction. Nothing is
done per row; every statement is per table.

Guarantees:

* All or nothing: a failure anywhere rolls the live transaction back (a savepoint when the
  caller already had a transaction open).
* Rows that exist live are never overwritten by :func:`recover_deleted_rows`: a key that is
  already there is skipped and counted as such. A restored row that collides with a row written
  since on ANOTHER unique constraint (a re-used email) is not silently dropped: the whole recovery
  is refused with :class:`~restorekit.errors.SafetyError` naming the constraint, because its
  children would otherwise come back without it.
* Idempotent: running the same recovery twice inserts nothing the second time.
* ``dry_run=True`` runs the very same statements in a transaction that is rolled back, so the
  counts are exact and nothing changes (identity sequences are not advanced either).
* Explicit ids are inserted as they were (``OVERRIDING SYSTEM VALUE`` for ``GENERATED ALWAYS``
  identity columns); afterwards sequences that are behind the restored ids are moved forward.
* Live triggers stay enabled: INSERT/UPDATE triggers fire for restored rows like for any other
  write (audit triggers on DELETE do not fire for inserts).

The copy's temp tables live in a transaction on the copy that is always rolled back, so the copy
is left exactly as it was.

The package, by subject:

* :mod:`~restorekit.recovery.models`: :class:`RecoveryPlan`, :class:`TableOutcome`,
  :class:`RecoveryResult`;
* :mod:`~restorekit.recovery.options`: checks of a recovery's options before anything happens;
* :mod:`~restorekit.recovery.commit_times`: what commit timestamps say about a row;
* :mod:`~restorekit.recovery.deletion_scope`: which keys were deleted (audit log, anti-diff);
* :mod:`~restorekit.recovery.stage`: key lists to the copy, rows from the copy to live;
* :mod:`~restorekit.recovery.cascade`: the cascade closure, selected on the copy;
* :mod:`~restorekit.recovery.writes`: the INSERT of staged rows, one transaction per side, and
  how a failed write is reported;
* :mod:`~restorekit.recovery.sequences`: identity columns, owned sequences moved past restored ids;
* :mod:`~restorekit.recovery.recover_deleted`: scenario 3, :func:`recover_deleted_rows`;
* :mod:`~restorekit.recovery.repair_plan`: scenario 2's plan, :func:`plan_repair`;
* :mod:`~restorekit.recovery.repair`: scenario 2, :func:`repair_rows`.
"""

from __future__ import annotations

from restorekit.recovery.commit_times import require_commit_timestamps
from restorekit.recovery.deletion_scope import deleted_keys_from_audit, missing_keys
from restorekit.recovery.models import (
    KeySource,
    Operation,
    RecoveryPlan,
    RecoveryResult,
    TableOutcome,
)
from restorekit.recovery.options import check_keep_after, check_repair_options, parse_columns
from restorekit.recovery.recover_deleted import recover_deleted_rows
from restorekit.recovery.repair import repair_rows
from restorekit.recovery.repair_plan import plan_repair

__all__ = [
    "KeySource",
    "Operation",
    "RecoveryPlan",
    "RecoveryResult",
    "TableOutcome",
    "check_keep_after",
    "check_repair_options",
    "deleted_keys_from_audit",
    "missing_keys",
    "parse_columns",
    "plan_repair",
    "recover_deleted_rows",
    "repair_rows",
    "require_commit_timestamps",
]

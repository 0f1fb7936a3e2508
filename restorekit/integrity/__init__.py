"""The verification suite: is a (restored) database reachable, promoted, shaped and consistent?

This is the runbook's "Verify Data Integrity" and "Post-Restore Verification" as code.
:func:`verify` runs named checks against one database and returns a
:class:`VerificationReport`; nothing in here raises because a check failed (call
:meth:`VerificationReport.raise_for_failures` for that), and no single broken check stops the
others.

=====================  ========  =============================================================
check                  critical  what it proves
=====================  ========  =============================================================
``connectivity``       yes       a connection opens (retried while the server is still
                                 starting) and ``SELECT 1`` answers; latency, server version
``not_in_recovery``    yes       ``pg_is_in_recovery()`` is false: the restored cluster was
                                 promoted and accepts writes
``schema``             yes       the :class:`SchemaFingerprint` equals the baseline's (the
                                 ``prisma db pull`` step) or, without one, production's (when
                                 it answers); *unverified* with neither
``expected_tables``    yes       every configured table exists
``row_counts``         yes       exact ``count(*)`` of the critical tables, within
                                 ``row_count_tolerance`` of the baseline or, without one, of
                                 production (``reference_dsn``, when it answers); with neither
                                 it is *unverified*: not a pass, not a failure
``row_estimates``      no        the planner's estimates for every other table (observation)
``fk_orphans:<fk>``    yes       no child row of foreign key ``<fk>`` lacks its parent;
                                 ``NOT VALID`` keys too (the only ones orphans can hide under)
``custom:<name>``      config    an operator-configured query (:class:`CustomCheck`)
``amcheck``            on error  ``bt_index_check`` on every B-tree index; corruption is critical
``prisma_migrations``  missing   where Prisma's ``_prisma_migrations`` exists: every migration
                                 production (when reachable) or the baseline has applied is
                                 applied here; unfinished (failed) ones warn; shows the latest
=====================  ========  =============================================================

A check is ``pass``, ``FAIL`` (critical), ``warn`` (non-critical) or ``unverified``: it ran but
had nothing to compare with. :attr:`VerificationReport.ok` means "no critical failure" and
:attr:`VerificationReport.verified` "ok, and nothing left unverified"; the markdown verdict of
an ok but unverified report is ``NOT VERIFIED``, never ``PASSED``.

How it runs: one "main" connection reads what the scans need from the catalog, then every check
that scans a table (exact counts, foreign-key anti-joins, index checks) runs as one statement on
a small pool of read-only connections (``min(4, cores)``, never more than half the server's free
connection slots), biggest relations first so that the longest scan does not run alone at the
end. The configured custom checks go to the pool before the scans (operator SQL of unknown cost,
often a join of the biggest tables: started last on a third session they used to finish alone),
while the main connection runs the catalog checks (recovery state, schema fingerprint). The pool
is the parallelism: while it runs more than one statement at once, its sessions run without
parallel query workers, which would only oversubscribe the cores. Every session gets
``statement_timeout``.

Each check is its own statement, on purpose: folding a table's exact count and its foreign keys'
orphan checks into one scan (``LEFT JOIN`` each parent, ``count(*) FILTER (...)`` per key) reads
the child once, but then every child row travels through every join where an anti-join discards
the matches at once. ``bench/verify_bench.py`` times both on every run; on PostgreSQL 15 with the
data in memory the folded statement was not reliably faster (faster at 200k rows, slower from
1M rows for a child with two foreign keys), so the checks stay separate and concurrent.

Secrets: the report names the database by :func:`restorekit.pg.dsn.display` and every error
message goes through :func:`restorekit.pg.dsn.redact`; a report is safe to log, store and publish
as an artifact.

Where it lives: :mod:`.runner` (:func:`verify`, the plan and the scheduling), :mod:`.pool` (the
worker pool and its size), :mod:`.connections`, the checks in :mod:`.checks` (main connection),
:mod:`.checks_counts`, :mod:`.checks_fk`, :mod:`.checks_amcheck`, :mod:`.checks_custom` and
:mod:`.prisma`, production as the reference in :mod:`.reference`, the models in :mod:`.report`,
:mod:`.fingerprint` and :mod:`.baseline_model` (the store of baselines is
:mod:`restorekit.baseline`).
"""

from __future__ import annotations

from restorekit.integrity._format import DETAIL_ITEMS as DETAIL_ITEMS
from restorekit.integrity._format import SAMPLE_ROWS as SAMPLE_ROWS
from restorekit.integrity.baseline_model import Baseline, capture_baseline
from restorekit.integrity.checks_custom import CustomCheck
from restorekit.integrity.checks_custom import Expectation as Expectation
from restorekit.integrity.checks_fk import orphan_query
from restorekit.integrity.connections import APPLICATION_NAME as APPLICATION_NAME
from restorekit.integrity.connections import connect_with_retry
from restorekit.integrity.fingerprint import ColumnShape, SchemaFingerprint, TableShape, fingerprint
from restorekit.integrity.pool import MAX_WORKERS as MAX_WORKERS
from restorekit.integrity.prisma import PRISMA_TABLE as PRISMA_TABLE
from restorekit.integrity.prisma import PrismaMigrations, prisma_migrations
from restorekit.integrity.report import CheckResult, VerificationReport
from restorekit.integrity.runner import verify

__all__ = [
    "Baseline",
    "CheckResult",
    "ColumnShape",
    "CustomCheck",
    "PrismaMigrations",
    "SchemaFingerprint",
    "TableShape",
    "VerificationReport",
    "capture_baseline",
    "connect_with_retry",
    "fingerprint",
    "orphan_query",
    "prisma_migrations",
    "verify",
]

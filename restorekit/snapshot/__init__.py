"""Logical snapshots: the runbook's "Create Backup of Current State", done properly.

The runbook says ``pg_dump $DATABASE_URL > backup_before_restore.sql``. Here that becomes:

1. check the parameters and the chosen tables against the catalog (nothing is written yet);
2. ``pg_dump --format=directory --jobs=N`` into a private temporary directory;
3. upload every file to ``snapshots/<snapshot_id>/`` in a repository (:mod:`restorekit.repository`);
4. read every object back (``repo.verify``: size and SHA-256, compared with our own hash of the
   local file);
5. only then write ``snapshots/<snapshot_id>/snapshot.json``, the manifest. The manifest is the
   marker of a complete snapshot: a snapshot interrupted before it is never listed or loaded.

A snapshot that cannot be read back raises :class:`~restorekit.errors.SafetyError`: callers treat
"no verified snapshot" as "nothing destructive may run".

Restores download every object first, checking each against the repository's checksum and the
manifest, and only then run ``pg_restore``; a corrupt snapshot therefore never touches the target.

Table names follow SQL rules, the same as ``psql``/``pg_dump``: ``schema.table`` or ``table``
(resolved through the server's ``search_path``); unquoted names are folded to lower case; a
double-quoted name is taken verbatim (``""`` for a quote inside it), e.g. ``public."Weird; Name"``.
A snapshot records its tables in that canonical, quoted-where-needed form.

Ownership: the dump keeps owners and privileges (no ``--no-owner``), so restoring as a superuser
gives back exactly what was there. Restoring into a cluster without those roles, or as a role
that cannot ``SET ROLE`` to them, needs ``restore_snapshot(..., no_owner=True)``.

Passwords never reach a command line: pg_dump/pg_restore get the DSN without its password and the
password in ``PGPASSWORD`` (:func:`restorekit.pg.dsn.password_env`); ``SnapshotInfo.database`` is
a redacted display form.

The package, by subject: :mod:`~restorekit.snapshot.manifest` (:class:`SnapshotInfo`, ids),
:mod:`~restorekit.snapshot.names` (table names), :mod:`~restorekit.snapshot.take`,
:mod:`~restorekit.snapshot.stored` (list, load, verify, delete),
:mod:`~restorekit.snapshot.restore`, :mod:`~restorekit.snapshot.toc` (the archive's table of
contents) and :mod:`~restorekit.snapshot.files` (temporary directories, progress).
"""

from __future__ import annotations

from restorekit.snapshot.files import Progress
from restorekit.snapshot.manifest import (
    APPLICATION_NAME,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    SNAPSHOT_ROOT,
    SnapshotInfo,
    new_snapshot_id,
    slugify,
    snapshot_prefix,
)
from restorekit.snapshot.names import (
    dump_pattern,
    format_table_name,
    parse_table_name,
    quote_ident,
    resolve_tables,
)
from restorekit.snapshot.restore import (
    create_database,
    download_snapshot,
    restore_snapshot,
    restore_snapshot_to_new_database,
)
from restorekit.snapshot.stored import (
    delete_snapshot,
    list_snapshots,
    load_snapshot,
    verify_snapshot,
)
from restorekit.snapshot.take import take_snapshot
from restorekit.snapshot.toc import TocEntry, read_toc, referenced_tables, select_tables

__all__ = [
    "APPLICATION_NAME",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "SNAPSHOT_ROOT",
    "Progress",
    "SnapshotInfo",
    "TocEntry",
    "create_database",
    "delete_snapshot",
    "download_snapshot",
    "dump_pattern",
    "format_table_name",
    "list_snapshots",
    "load_snapshot",
    "new_snapshot_id",
    "parse_table_name",
    "quote_ident",
    "read_toc",
    "referenced_tables",
    "resolve_tables",
    "restore_snapshot",
    "restore_snapshot_to_new_database",
    "select_tables",
    "slugify",
    "snapshot_prefix",
    "take_snapshot",
    "verify_snapshot",
]

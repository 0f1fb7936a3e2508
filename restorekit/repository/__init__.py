"""Where base backups, WAL and logical snapshots live: a local directory or an S3 bucket.

One interface, :class:`Repository`, with two backends chosen by URL (:func:`open_repository`):

    file:///var/lib/restorekit/repo              LocalRepository (a bare absolute path works too)
    s3://bucket/prefix?endpoint_url=http://127.0.0.1:9000&region=us-east-1
                                                 S3Repository (credentials from the AWS chain only)

Contract, for every backend:

* **Checksum records.** Every object ``<key>`` gets a sidecar record ``<key>.sha256.json``
  (``{"format", "key", "size", "sha256", "created_at"}``), written *after* the object is complete.
  An object without its record is incomplete (an interrupted put): it is not listed, and reading it
  raises :class:`IncompleteObject` (an :class:`~restorekit.errors.ObjectNotFound`). Keys ending in
  ``.sha256.json`` are therefore reserved, and so are names starting with ``.rk-tmp-`` (the local
  backend's temporary files).
* **Atomic puts.** The object appears complete in one step (local: temporary file in the same
  directory, fsync, rename, fsync the directory; S3: ``upload_fileobj``, complete when it
  returns), then its record is written the same way. The old record is removed just before the
  new object lands, so a reader never pairs new bytes with an old record. A failed local put
  leaves the old object and record untouched; a failed S3 overwrite leaves the key incomplete
  until the put is retried. Puts hash while writing: one pass over the data.
* **Verified reads.** ``get_file``, ``get_bytes``, ``open_verified`` and ``verify`` compare size and
  sha256 with the record and raise :class:`~restorekit.errors.ChecksumMismatch` naming the key, the
  expected and actual sha256 and the repository URL. ``get_file`` never leaves unverified bytes at
  ``dest``. ``open_in_place`` hands a local object's own file to a program that reads it itself
  (tar restoring a base backup) and hashes it alongside; its caller runs that check to the end
  before trusting what the program wrote (None for S3 and repository-compressed objects).
* **Errors.** Only :mod:`restorekit.errors` types escape: ``ObjectNotFound`` for a missing object,
  ``RepositoryError`` with ``retryable`` set for everything else (S3 5xx, throttling and connection
  errors are retryable; 4xx are not), ``ConfigError`` for a bad URL or key. ``delete`` of a missing
  object is not an error.
* **Progress** callbacks receive byte *increments* (like ``tqdm.update`` and boto3's ``Callback``).
* ``url`` is a display form that never contains secrets and that :func:`open_repository` accepts.
* **Compressed objects.** ``put_file``/``put_stream`` with ``encoding="lz4"|"zstd"|"gzip"``
  store the bytes compressed (by the ``lz4``/``zstd``/``gzip`` programs: the standard library
  has no lz4 or zstd) and every read decompresses them, so callers only ever see the original
  bytes. Such a record says ``"encoding"`` plus ``"stored_size"``/``"stored_sha256"`` (the
  bytes at rest, checked while they stream in) while ``size``/``sha256`` keep describing the
  original bytes (checked after decompression): both are verified on every read. A record
  without ``encoding`` (every object of an older repository) is read exactly as before.

boto3 is imported only when an S3 URL is opened, and codec programs' helpers (``subprocess``,
``threading``) only when a codec runs, so ``restorekit.wal`` (PostgreSQL's archive_command, one
Python per WAL segment) starts fast for local repositories: ~35 ms of CPU for an uncompressed
push, ~45 ms with lz4, of which ~9 ms is the interpreter itself.
``tests/integration/test_wal_push_imports.py`` fails when the S3 SDK or a heavy standard module
(argparse, logging, dataclasses, shutil) comes back onto that path.

The package, by subject: :mod:`~restorekit.repository.protocol` (the interface and
:class:`ObjectInfo`), :mod:`~restorekit.repository.keys`, :mod:`~restorekit.repository.urls`,
:mod:`~restorekit.repository.objects` (checksum records, hashing and verifying streams),
:mod:`~restorekit.repository.compression`, :mod:`~restorekit.repository.base` (the shared policy),
:mod:`~restorekit.repository.local`, :mod:`~restorekit.repository.s3` with
:mod:`~restorekit.repository.s3_client` and :mod:`~restorekit.repository.s3_errors`.
"""

from __future__ import annotations

from restorekit.repository.compression import ENCODINGS, codec_argv
from restorekit.repository.keys import check_key
from restorekit.repository.local import LocalRepository
from restorekit.repository.objects import hash_file
from restorekit.repository.protocol import (
    RECORD_SUFFIX,
    IncompleteObject,
    ObjectInfo,
    Progress,
    Repository,
    discard_unfinished,
)
from restorekit.repository.s3 import S3Repository
from restorekit.repository.s3_client import s3_read_timeout
from restorekit.repository.s3_errors import s3_error as s3_error
from restorekit.repository.urls import RepositoryLocation, open_repository, parse_repository_url

__all__ = [
    "ENCODINGS",
    "RECORD_SUFFIX",
    "IncompleteObject",
    "LocalRepository",
    "ObjectInfo",
    "Progress",
    "Repository",
    "RepositoryLocation",
    "S3Repository",
    "check_key",
    "codec_argv",
    "discard_unfinished",
    "hash_file",
    "open_repository",
    "parse_repository_url",
    "s3_read_timeout",
]

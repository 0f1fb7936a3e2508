"""A native base backup's files and metadata in the repository (the layout is in
:mod:`restorekit.engines.native`'s docstring): pg_basebackup's compression and file names, the
start time in its backup_label, ``backup.json``, restore point names, and removing what an
unfinished backup stored."""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from restorekit import wal
from restorekit.models import BackupInfo
from restorekit.repository import codec_argv

_START_TIME = re.compile(r"^START TIME: (.+)$", re.MULTILINE)
#: pg_basebackup's file suffix per compression method, and the program GNU tar runs for it.
TAR_SUFFIXES = {"": None, ".lz4": "lz4", ".zst": "zstd", ".gz": "gzip"}
BASE_FILES = {f"{stem}{suffix}" for stem in ("base.tar", "pg_wal.tar") for suffix in TAR_SUFFIXES}


def backup_id_at(now: datetime) -> str:
    """The id of a backup started at ``now`` (UTC, to the second)."""
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def basebackup_compress(compression: str) -> str:
    """pg_basebackup's ``--compress`` value for a ``[backups] compression`` value: a bare method
    is compressed client-side (the source's CPU stays with the database)."""
    encoding, _ = wal.wal_codec(compression)  # ConfigError on a bad value
    if encoding is None:
        return "none"
    return compression if compression.startswith(("server-", "client-")) \
        else f"client-{compression}"


def database_bytes(manifest: dict[str, object]) -> int | None:
    """The data directory's size as the manifest lists it (compression ratios are per byte of
    database)."""
    files = manifest.get("Files")
    if not isinstance(files, list):
        return None
    return sum(int(f.get("Size", 0)) for f in files if isinstance(f, dict))


def label_start_time(base_tar: Path) -> datetime | None:
    codec = TAR_SUFFIXES.get(base_tar.name[base_tar.name.index(".tar") + 4:])
    if codec is None:
        return _read_label_start_time(base_tar)
    # backup_label is the archive's first member: the decompressor is stopped right after it.
    proc = subprocess.Popen([*codec_argv(codec, decompress=True), str(base_tar)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None  # stdout=PIPE
    try:
        return _read_label_start_time(proc.stdout)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _read_label_start_time(base_tar: Path | IO[bytes]) -> datetime | None:
    try:
        with (tarfile.open(base_tar, mode="r|") if isinstance(base_tar, Path)
              else tarfile.open(fileobj=base_tar, mode="r|")) as tar:
            for member in tar:
                if member.name == "backup_label":
                    handle = tar.extractfile(member)
                    if handle is None:
                        return None
                    text = handle.read().decode()
                    match = _START_TIME.search(text)
                    if match:
                        raw = match.group(1).strip()
                        if raw.endswith(" UTC"):
                            raw = raw[:-4] + "+00:00"
                        return datetime.fromisoformat(raw)
                    return None
    except (tarfile.TarError, ValueError):
        return None
    return None


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:200] or "_"


def dump_backup(backup: BackupInfo) -> bytes:
    data = asdict(backup)
    data["start_time"] = backup.start_time.isoformat()
    data["stop_time"] = backup.stop_time.isoformat()
    return json.dumps(data, indent=2, sort_keys=True).encode()


def load_backup(raw: bytes) -> BackupInfo:
    data = json.loads(raw)
    data["start_time"] = datetime.fromisoformat(data["start_time"])
    data["stop_time"] = datetime.fromisoformat(data["stop_time"])
    return BackupInfo(**data)


"""What ``archive_command`` loads into a local repository: PostgreSQL starts one Python per WAL
segment, so a module imported on that path is paid for on every segment, and nothing else
notices when an import creeps back in (the push still works, only slower)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from restorekit.repository import open_repository

SEGMENT = "000000010000000000000003"

#: Never on a local push: the S3 SDK (~100 ms of imports).
S3_SDK = ("boto3", "botocore", "s3transfer", "urllib3")
#: Not on a local push either, each a few ms of a ~40 ms start: argparse (the commands
#: PostgreSQL runs are parsed without it), logging, dataclasses (with inspect, ast, dis),
#: shutil (with bz2 and lzma).
HEAVY_STDLIB = ("argparse", "logging", "dataclasses", "inspect", "shutil", "bz2", "lzma")
#: Only when a codec program runs.
CODEC_ONLY = ("subprocess", "threading")


def imported_by(*args: str, cwd: Path) -> set[str]:
    """The modules Python imports for ``python -m restorekit.wal ARGS`` beyond those its own
    start (site, .pth files) imports; the command must succeed. ``cwd`` is not the checkout,
    as for PostgreSQL (the data directory): ``-m`` puts it first on sys.path."""

    def run(*argv: str) -> set[str]:
        done = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=cwd,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:") and line.count("|") == 2}

    return run("-m", "restorekit.wal", *args) - run("-c", "pass")


@pytest.mark.parametrize("compress", [None, "lz4"])
def test_a_local_push_imports_no_s3_sdk_and_nothing_heavy(
    local_repo_url: str, tmp_path: Path, compress: str | None,
) -> None:
    segment = tmp_path / SEGMENT
    segment.write_bytes(os.urandom(64 * 1024))
    options = [] if compress is None else ["--compress", compress]

    loaded = imported_by("push", "--repo", local_repo_url, *options, str(segment), SEGMENT,
                         cwd=tmp_path)

    assert open_repository(local_repo_url).get_bytes(f"wal/{SEGMENT}") == segment.read_bytes()
    assert "restorekit.repository" in loaded  # the measurement saw the push's imports
    sdk = sorted({m.split(".")[0] for m in loaded} & set(S3_SDK))
    assert not sdk, f"a local archive_command imports the S3 SDK: {sdk}"
    unwanted = HEAVY_STDLIB + (CODEC_ONLY if compress is None else ())
    heavy = sorted(m for m in loaded if m in unwanted)
    assert not heavy, f"a local archive_command imports {heavy}: import them where used"


def test_a_local_get_imports_no_s3_sdk(local_repo_url: str, tmp_path: Path) -> None:
    segment = tmp_path / SEGMENT
    segment.write_bytes(os.urandom(64 * 1024))
    open_repository(local_repo_url).put_file(f"wal/{SEGMENT}", segment)

    loaded = imported_by("get", "--repo", local_repo_url, SEGMENT, str(tmp_path / "RECOVERYXLOG"),
                         cwd=tmp_path)

    assert (tmp_path / "RECOVERYXLOG").read_bytes() == segment.read_bytes()
    assert not {m.split(".")[0] for m in loaded} & set(S3_SDK)
    assert not sorted(m for m in loaded if m in HEAVY_STDLIB)

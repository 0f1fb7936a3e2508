"""``Repository.open_in_place``: a local object's own file for tar to read itself, hashed alongside
without moving the offset tar reads from; None where there is no such file."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from restorekit.errors import ChecksumMismatch
from restorekit.repository import LocalRepository, open_repository


def _archive(tmp_path: Path) -> bytes:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(3 << 20))
    (src / "b").write_bytes(b"b" * 1000)
    return subprocess.run(["tar", "-cf", "-", "-C", str(src), "."], check=True,
                          capture_output=True).stdout


def test_a_local_object_is_read_by_another_reader_while_it_is_hashed(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    data = _archive(tmp_path)
    repo.put_bytes("backups/x/base.tar", data)
    seen: list[int] = []
    with repo.open_in_place("backups/x/base.tar") as stored:
        assert stored is not None
        head = stored.file.read(4096)  # another reader's offset, as tar's would be
        stored.check(seen.append)
        rest = stored.file.read()  # ...is where that reader left it
    assert head + rest == data
    assert sum(seen) == len(data)


@pytest.mark.parametrize("damage", ["flipped", "truncated", "extended"])
def test_a_damaged_local_object_fails_its_check(tmp_path: Path, damage: str) -> None:
    repo = LocalRepository(tmp_path / "repo")
    data = _archive(tmp_path)
    repo.put_bytes("o", data)
    path = repo.root / "o"
    if damage == "flipped":
        changed = bytearray(data)
        changed[len(data) // 2] ^= 1
        path.write_bytes(bytes(changed))
    else:
        path.write_bytes(data[:-1] if damage == "truncated" else data + b"\0")
    with repo.open_in_place("o") as stored, pytest.raises(ChecksumMismatch) as failed:
        assert stored is not None
        stored.check(None)
    assert hashlib.sha256(data).hexdigest() in str(failed.value)


def test_compressed_and_remote_objects_have_no_file_to_hand_over(
    tmp_path: Path, s3_repo_url: str,
) -> None:
    repo = LocalRepository(tmp_path / "repo")
    source = tmp_path / "f"
    source.write_bytes(b"y" * 100_000)
    repo.put_file("packed", source, encoding="lz4")
    with repo.open_in_place("packed") as stored:
        assert stored is None  # the bytes at rest are not the content: open_verified decodes
    s3 = open_repository(s3_repo_url)
    s3.put_bytes("plain", b"x" * 100)
    with s3.open_in_place("plain") as stored:
        assert stored is None

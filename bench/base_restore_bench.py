"""Base restore benchmark: where the floor of restoring a plain (uncompressed) base backup from a
local repository lies, on one object of --gb GB of incompressible files in a tar archive.

Variants, --repeat rotated rounds, each into an empty directory (removed and synced between):

  tar -x          : GNU tar extracting the object's file (the issue's lower bound)
  sha256 alone    : the object hashed as the restore checks it (repository hash_file), nothing
                    extracted: the verification's own floor on one core
  restorekit      : the native engine's path for a local object: tar reads the object's file as
                    its stdin while this process hashes the same file alongside
                    (Repository.open_in_place + untar_in_place)
  streamed        : the path an S3 object takes, used for local ones until 2026-12-07: the object
                    read and hashed by this process and piped into tar (open_verified + untar)

Each time is wall time; the CPU column adds this process's and its children's user and system
time. With lz4 (the default) the hash covers the compressed bytes, a quarter of these, and
tar's decompression is the larger cost: the rto benchmark measures that case.

    python bench/base_restore_bench.py --gb 8 --repeat 3
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # bench/_common.py, beside this script

from restorekit.engines.native_restore import untar, untar_in_place
from restorekit.repository import LocalRepository, hash_file

KEY = "backups/bench/base.tar"
VARIANTS = ("tar -x", "sha256 alone", "restorekit", "streamed")


def build(repo: LocalRepository, work: Path, gb: float) -> int:
    """``gb`` GB of random 64 MiB blocks as 1 GiB files, archived by tar into the repository."""
    data = work / "data"
    data.mkdir()
    block = os.urandom(64 << 20)
    for i in range(round(gb * 16)):
        with open(data / f"f{i // 16}", "ab") as f:
            f.write(block)
    archive = work / "base.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(data), "."], check=True)
    shutil.rmtree(data)
    info = repo.put_file(KEY, archive)
    archive.unlink()
    return info.size


def run(variant: str, repo: LocalRepository, dest: Path) -> None:
    path = repo.root / KEY
    skip = lambda n: None  # noqa: E731 - no progress display in a benchmark
    if variant == "tar -x":
        subprocess.run(["tar", "--extract", f"--file={path}", f"--directory={dest}",
                        "--no-same-owner", "--blocking-factor=2048"], check=True)
    elif variant == "sha256 alone":
        assert hash_file(path)[0] == repo.stat(KEY).sha256
    elif variant == "restorekit":
        with repo.open_in_place(KEY) as stored:
            assert stored is not None
            untar_in_place(stored, dest, os_user=None, on_bytes=skip)
    else:
        with repo.open_verified(KEY) as stream:
            untar(stream, dest, os_user=None, on_bytes=skip)


def main() -> None:
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--gb", type=float, default=2.0, help="object size in GB (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    _common.add_out_argument(parser, "base_restore")
    args = parser.parse_args()
    load_before = _common.loadavg()
    work = Path(tempfile.mkdtemp(prefix="restorekit-base-restore-bench-",
                                 dir=os.environ.get("RESTOREKIT_TEST_TMP")))
    try:
        repo = LocalRepository(work / "repo")
        size = build(repo, work, args.gb)
        dest = work / "dest"
        seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
        cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for i, order in _common.rotated(VARIANTS, args.repeat):
            for variant in order:
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir()
                os.sync()
                before, started = os.times(), time.perf_counter()
                run(variant, repo, dest)
                took, after = time.perf_counter() - started, os.times()
                seconds[variant].append(took)
                cpu[variant].append(sum(after[:4]) - sum(before[:4]))
                print(f"run {i + 1} {variant:14} {took:6.2f} s  cpu {cpu[variant][-1]:6.2f} s",
                      flush=True)
        medians = {v: statistics.median(t) for v, t in seconds.items()}
        bound = medians["tar -x"]
        print(f"\nobject {size / 1e9:.2f} GB, median of {args.repeat}:")
        for v in VARIANTS:
            print(f"  {v:14} {medians[v]:6.2f} s  {medians[v] / bound:5.2f}x tar -x  "
                  f"{size / medians[v] / 1e9:5.2f} GB/s  cpu {statistics.median(cpu[v]):6.2f} s")
        out: dict[str, Any] = {
            "benchmark": "base restore of a plain object: tar -x, sha256 alone, restorekit's "
                         "path, the streamed path", "cores": os.cpu_count(),
            "loadavg_before": load_before, "loadavg_after": _common.loadavg(),
            "object_bytes": size, "repeat": args.repeat, "seconds": seconds,
            "cpu_seconds": cpu, "median_seconds": medians,
            "ratio_to_tar_x": {v: m / bound for v, m in medians.items()}}
        _common.save("base_restore", out, args.out, load_before)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

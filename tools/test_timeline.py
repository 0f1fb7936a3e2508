"""Read a test timeline (tests/_timeline.py): per worker, its files in the order they ran with
their seconds, when it went idle, and the files still running in the run's last minute.

    python tools/test_timeline.py /tmp/t.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    if not rows:
        sys.exit(f"{path}: no tests recorded")
    t0 = min(r["start"] or r["end"] for r in rows)
    end = max(r["end"] for r in rows)
    spans: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for r in rows:
        file = r["nodeid"].split("::")[0]
        span = spans[r["worker"]].setdefault(file, [r["start"] or r["end"], r["end"]])
        span[0] = min(span[0], r["start"] or r["end"])
        span[1] = max(span[1], r["end"])
    print(f"run: {end - t0:.0f} s from the first test's start to the last one's end")
    for worker in sorted(spans):
        files = sorted(spans[worker].items(), key=lambda kv: kv[1][0])
        busy = sum(b - a for _, (a, b) in files)
        idle_at = max(b for _, (a, b) in files) - t0
        print(f"\n{worker}: busy {busy:.0f} s, last test ended at {idle_at:.0f} s")
        for file, (a, b) in files:
            print(f"  {a - t0:6.0f} -> {b - t0:6.0f}  {b - a:6.1f} s  {file}")
    print("\nrunning in the last 60 s:")
    for worker in sorted(spans):
        for file, (a, b) in spans[worker].items():
            if b > end - 60:
                print(f"  {worker}: {file} ({a - t0:.0f} -> {b - t0:.0f} s)")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__)
    main(sys.argv[1])

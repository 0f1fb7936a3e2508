"""Draw bench/run_all.py's aggregate JSON as a PNG: each ratio against the scale.

Needs only matplotlib (not restorekit), so that it runs in a virtualenv of its own: `make bench`
builds .bench-plot for it and the project's environment never needs matplotlib.

    .bench-plot/bin/python bench/chart.py bench/results/run_all-<time>.json out.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path, help="an aggregate JSON written by bench/run_all.py")
    parser.add_argument("png", type=Path, help="where to write the chart")
    args = parser.parse_args()
    data = json.loads(args.json.read_text())
    fig, ax = plt.subplots(figsize=(12, 5.5))
    for row in data["rows"]:
        if row.get("kind") != "ratio":
            continue
        points = [(s, v) for s, v in zip(data["scales"], row["values"], strict=True)
                  if v is not None and v > 0]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", label=f"{row['benchmark']}: {row['figure']}")
        ax.annotate(f"{ys[-1]:.2g}", (xs[-1], ys[-1]), textcoords="offset points",
                    xytext=(4, 0), fontsize=8)
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(data["scales"], [f"{s:g}" for s in data["scales"]])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("sample scale (1 = 100k rows)")
    ax.set_ylabel("ratio, measured in the same run (log)")
    ax.set_title(f"restorekit benchmarks, {data['when'][:16]}Z, {data['cores']} cores, "
                 f"load {data['loadavg_before']}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=120)
    print(f"saved {args.png}")


if __name__ == "__main__":
    main()

"""How each variant's time grows with the data, shared by the benchmarks' --scales option."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any


def print_growth(results: list[dict[str, Any]], variants: Sequence[str],
                 data_size: Callable[[dict[str, Any]], float], title: str,
                 width: int = 16) -> dict[str, Any]:
    """Each variant's median time at each scale relative to the smallest scale, next to the
    data's growth, and the exponent b in time ~ size^b (0: independent of size, 1: linear)."""
    base = results[0]
    growth: dict[str, Any] = {}
    print(f"\ngrowth relative to scale {base['scale']:g} ({title}):")
    print(f"{'scale':>8}{'data x':>9}" + "".join(f"{v + ' x':>{width}}{'exp':>6}" for v in variants))
    for r in results[1:]:
        size = data_size(r) / data_size(base)
        entry: dict[str, Any] = {"data_ratio": size}
        cells = []
        for v in variants:
            ratio = r["median_seconds"][v] / base["median_seconds"][v]
            exponent = math.log(ratio) / math.log(size) if size > 1 else float("nan")
            entry[v] = {"time_ratio": ratio, "exponent": exponent}
            cells.append(f"{ratio:{width}.2f}{exponent:6.2f}")
        growth[f"{r['scale']:g}/{base['scale']:g}"] = entry
        print(f"{r['scale']:8g}{size:9.2f}" + "".join(cells))
    return growth

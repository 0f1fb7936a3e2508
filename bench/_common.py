"""What the benchmarks share: building the sample data, the load average, the growth table."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from restorekit import sample
from restorekit.pg.cluster import LocalCluster
from restorekit.pg.tools import default_os_user, make_dir

#: restorekit.toml of a benchmark's self-hosted target on the native engine.
NATIVE_CONFIG = """[restorekit]
state_dir = "{state}"
[targets.bench]
provider = "selfhosted"
engine = "native"
dsn = "host=127.0.0.1 port={port} user=postgres dbname=app"
repository = "file://{repo}"
"""


def build_sample(cluster: LocalCluster, scale: float, *, db: str, seed: int) -> dict[str, int]:
    """A fresh database ``db`` with the sample schema at ``scale`` (same seed, same rows)."""
    with cluster.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(db)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    with psycopg.connect(cluster.dsn(db), autocommit=True) as conn:
        sample.create_schema(conn)
        counts = sample.generate(conn, scale=scale, seed=seed)
        conn.execute("VACUUM ANALYZE")
    return counts


def build_both(live: LocalCluster, copy: LocalCluster,
               build: Callable[[LocalCluster], dict[str, int]]) -> dict[str, int]:
    """Build the same sample in both clusters at once; its row counts, which must agree."""
    with ThreadPoolExecutor(2) as pool:
        built = list(pool.map(build, (live, copy)))
    if built[0] != built[1]:
        raise SystemExit(f"live and copy were generated differently: {built}")
    return built[0]


def run_header(cluster: LocalCluster, load_before: list[float], settings: dict[str, Any],
               seed: int) -> dict[str, Any]:
    """What every benchmark's JSON says about the run: when, cores, load before and after, the
    PostgreSQL version and settings, the data seed."""
    with cluster.connect() as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    return {"when": datetime.now(UTC).isoformat(), "cores": os.cpu_count(),
            "loadavg_before": load_before, "loadavg_after": loadavg(),
            "postgres": version, "cluster_settings": settings, "seed": seed}


def loadavg() -> list[float]:
    """The 1/5/15-minute load averages, to say how noisy a run was."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def print_growth(results: list[dict[str, Any]], variants: Sequence[str],
                 data_size: Callable[[dict[str, Any]], float], title: str,
                 width: int = 16) -> dict[str, Any]:
    """Each variant's median time at each scale relative to the smallest scale, next to the
    data's growth, and the exponent b in time ~ size^b (0: independent of size, 1: linear)."""
    base = results[0]
    growth: dict[str, Any] = {}
    print(f"\ngrowth relative to scale {base['scale']:g} ({title}):")
    print(f"{'scale':>8}{'data x':>9}"
          + "".join(f"{v + ' x':>{width}}{'exp':>6}" for v in variants))
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


def print_medians(variants: Sequence[str], medians: dict[str, float], ratios: dict[str, float],
                  *, width: int, ratio_title: str, ratio_width: int) -> None:
    """One line per variant: its median time and its ratio to the reference variant."""
    print(f"{'variant':{width}}{'median s':>10}{ratio_title:>{ratio_width}}")
    for v in variants:
        print(f"{v:{width}}{medians[v]:10.3f}{ratios[v]:{ratio_width}.2f}")


def timed_execute(execute: Callable[..., Any],
                  record: Callable[[Any, str, float, float, tuple[Any, ...], dict[str, Any]], None],
                  ) -> Callable[..., Any]:
    """A stand-in for ``psycopg.Connection.execute`` (for tracing a run) that calls ``execute``
    and then ``record(conn, statement text, start, seconds, args, kwargs)``, also on failure."""
    def timed(self: Any, query: Any, *a: Any, **kw: Any) -> Any:
        text = query.as_string(self) if hasattr(query, "as_string") else str(query)
        t = time.perf_counter()
        try:
            return execute(self, query, *a, **kw)
        finally:
            record(self, text, t, time.perf_counter() - t, a, kw)

    return timed


def rotated(variants: Sequence[str], repeat: int) -> Iterator[tuple[int, list[str]]]:
    """``(round, order)`` for ``repeat`` rounds; round i runs the variants rotated by i, so no
    variant always runs first (on cold caches) or last."""
    for i in range(repeat):
        k = i % len(variants)
        yield i, [*variants[k:], *variants[:k]]


def timed_rounds(variants: Sequence[str], repeat: int,
                 run: Callable[[str], float]) -> tuple[dict[str, list[float]], float]:
    """Each variant's times over ``repeat`` rotated rounds (``run`` checks its result before it
    returns its time) and the wall time of all rounds; prints one line per round."""
    times: dict[str, list[float]] = {v: [] for v in variants}
    started = time.perf_counter()
    for i, order in rotated(variants, repeat):
        line = []
        for variant in order:
            took = run(variant)
            times[variant].append(took)
            line.append(f"{variant} {took:.3f}s")
        print(f"run {i + 1}: " + "  ".join(line), flush=True)
    return times, time.perf_counter() - started


def save(name: str, out: dict[str, Any], path: Path | None,
         load_before: list[float] | None = None) -> Path:
    """Write a benchmark's results as JSON (``path``, default
    bench/results/<name>-<UTC time>.json), then print where, after the load averages."""
    path = path or (Path(__file__).parent / "results"
                    / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))
    if load_before is not None:
        print(f"\nload average before {load_before}, after {out['loadavg_after']} "
              f"({os.cpu_count()} cores; other work on the machine makes these numbers noisy)")
    print(f"saved {path}")
    return path


def argument_parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's command line, with its module docstring as the description."""
    return argparse.ArgumentParser(description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_scale_arguments(parser: argparse.ArgumentParser, *, default: float, help: str,
                        example: str) -> None:
    """``--scale`` (one scale) and ``--scales`` (the whole comparison at each, ``example``)."""
    parser.add_argument("--scale", type=float, default=default, help=help)
    parser.add_argument("--scales", type=lambda s: [float(x) for x in s.split(",") if x],
                        help=f"run the whole comparison at each of these scales, e.g. {example}")


def scales(args: argparse.Namespace) -> list[float]:
    """The scales :func:`add_scale_arguments` asked for: ``--scales`` smallest first (the
    growth table reads from it), else the one ``--scale``."""
    return sorted(args.scales) if args.scales else [args.scale]


def add_out_argument(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--out", type=Path,
                        help=f"write the JSON here (default bench/results/{name}-<UTC time>.json)")


@contextmanager
def started_clusters(prefix: str, names: Sequence[str],
                     settings: dict[str, Any]) -> Iterator[tuple[Path, list[LocalCluster]]]:
    """A temporary directory and a started cluster per name in it (``settings`` in each);
    destroyed with the directory afterwards, also on failure."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    make_dir(base, default_os_user(), mode=0o755)
    clusters: list[LocalCluster] = []
    try:
        for name in names:
            clusters.append(LocalCluster.create(base / name, settings=settings))
        for cluster in clusters:
            cluster.start()
        yield base, clusters
    finally:
        for cluster in clusters:
            cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def save_with_growth(name: str, out: dict[str, Any], results: list[dict[str, Any]],
                     growth: Callable[[list[dict[str, Any]]], dict[str, Any]],
                     path: Path | None, load_before: list[float]) -> Path:
    """``save``, with the growth table when there was more than one scale."""
    if len(results) > 1:
        out["growth"] = growth(results)
    return save(name, out, path, load_before)

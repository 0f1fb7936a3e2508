"""What a diff returns (:class:`TableDiff`, :class:`DiffStats`) and how the range method is tuned
(:class:`RangeTuning`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from restorekit.errors import ConfigError
from restorekit.pg.catalog import TableRef

#: How many keys a :class:`TableDiff` lists per category.
SAMPLE_SIZE = 10


Method = Literal["auto", "range", "full"]


@dataclass(frozen=True, slots=True)
class RangeTuning:
    """How the ``range`` method cuts the key space (the defaults suit tables from about 20
    thousand to a few hundred million rows).

    Attributes:
        min_rows: ``auto`` uses the ``full`` method for tables with fewer live rows.
        leaf_rows: a range that differs is split until it holds at most this many rows; then
            its ``(key, md5)`` pairs are fetched. The first pass aims at ranges of this size.
        max_ranges: at most this many ranges in the first pass (bigger tables get bigger
            ranges there, and one more level of splitting).
        max_fanout: at most this many pieces per range and level.
        max_levels: after this many levels every range that still differs is fetched.
        full_fraction: when the ranges that differ hold more than this share of the rows,
            they are classified like the ``full`` method does (whole table, no range list).
        seed: the ``TABLESAMPLE ... REPEATABLE`` seed, so a rerun picks the same ranges.
    """

    min_rows: int = 20_000
    leaf_rows: int = 64
    max_ranges: int = 65_536
    max_fanout: int = 1_024
    max_levels: int = 8
    full_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.leaf_rows < 1 or self.max_ranges < 1 or self.max_fanout < 2 or \
                self.max_levels < 1 or not 0 < self.full_fraction <= 1:
            raise ConfigError(f"invalid {self!r}")


@dataclass(frozen=True, slots=True)
class DiffStats:
    """How a :class:`TableDiff` was computed (for logs and benchmarks; not part of equality).

    ``first_pass`` says how the range method read the whole table once ("index ranges" or
    "bucket scan"), ``levels`` counts checksum passes, ``ranges_compared`` the ranges summed on
    each side over all passes, ``leaf_ranges`` the ranges whose pairs were fetched (after
    merging neighbours), ``rows_staged`` the copy's ``(key, md5)`` pairs streamed to live.
    """

    method: Literal["full", "range"]
    reason: str = ""
    first_pass: str = ""
    levels: int = 0
    ranges_compared: int = 0
    leaf_ranges: int = 0
    rows_staged: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "reason": self.reason, "first_pass": self.first_pass,
                "levels": self.levels,
                "ranges_compared": self.ranges_compared, "leaf_ranges": self.leaf_ranges,
                "rows_staged": self.rows_staged}


@dataclass(frozen=True, slots=True)
class TableDiff:
    """How one table of the live database differs from the restored copy.

    Keys are tuples in primary-key column order; the samples hold at most
    :data:`SAMPLE_SIZE` keys each, lowest first. Both methods give equal ``TableDiff``s
    (``stats`` is left out of the comparison).
    """

    table: TableRef
    primary_key: tuple[str, ...]
    missing: int
    extra: int
    changed: int
    missing_keys_sample: tuple[tuple[Any, ...], ...] = ()
    changed_keys_sample: tuple[tuple[Any, ...], ...] = ()
    extra_keys_sample: tuple[tuple[Any, ...], ...] = ()
    stats: DiffStats | None = field(default=None, compare=False)

    @property
    def identical(self) -> bool:
        return not (self.missing or self.extra or self.changed)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (key values that JSON has no type for are given as text)."""
        return {
            "table": str(self.table),
            "primary_key": list(self.primary_key),
            "missing": self.missing,
            "extra": self.extra,
            "changed": self.changed,
            "missing_keys_sample": [jsonable_key(k) for k in self.missing_keys_sample],
            "changed_keys_sample": [jsonable_key(k) for k in self.changed_keys_sample],
            "extra_keys_sample": [jsonable_key(k) for k in self.extra_keys_sample],
            "stats": self.stats.to_dict() if self.stats is not None else None,
        }


def jsonable_key(key: Sequence[Any]) -> list[Any]:
    """A key tuple as a JSON-ready list: numbers, text, booleans and None as they are, dates as
    ISO text, bytes as hex, anything else (uuid, decimal, ...) as its text form."""
    out: list[Any] = []
    for value in key:
        if value is None or isinstance(value, bool | int | float | str):
            out.append(value)
        elif isinstance(value, bytes | bytearray | memoryview):
            out.append(bytes(value).hex())
        elif isinstance(value, _dt.date | _dt.time):
            out.append(value.isoformat())
        else:
            out.append(str(value))
    return out

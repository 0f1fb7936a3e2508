"""Helpers the checks share: timing, JSON-safe values, redacted error lines, counted nouns."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from restorekit.pg.dsn import redact

#: How many differences / rows a check's ``detail`` spells out; ``observed`` keeps them all.
DETAIL_ITEMS = 10
#: Rows of a failing custom check (first column only) or orphan keys kept as examples.
SAMPLE_ROWS = 5


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def _jsonable(value: Any) -> Any:
    """A JSON-safe form of a value read from the database (for ``observed`` and samples)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        whole = value.is_finite() and value == value.to_integral_value()
        return int(value) if whole else str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _error_text(exc: BaseException) -> str:
    """One redacted line for a report: the server's primary message, SQLSTATE appended."""
    message = redact(str(exc)).strip() or type(exc).__name__
    first = message.splitlines()[0] if message else message
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{first} [SQLSTATE {sqlstate}]" if sqlstate else first


def _n(count: int, noun: str) -> str:
    """``1 orphan row``, ``3 orphan rows``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _list_detail(items: Sequence[str], limit: int = DETAIL_ITEMS) -> str:
    text = "; ".join(items[:limit])
    if len(items) > limit:
        text += f"; ... and {len(items) - limit} more"
    return text

"""The waits between retries of a transient failure, and the knob that sets them."""

from __future__ import annotations

import pytest

from restorekit.errors import ConfigError
from tasks._runtime import retry_delays


def test_the_default_backoff_is_2_10_30_seconds() -> None:
    assert retry_delays("") == [2, 10, 30]


def test_restorekit_retry_delays_sets_them() -> None:
    assert retry_delays("5,30,120") == [5, 30, 120]
    assert retry_delays("0.5") == [0.5]


@pytest.mark.parametrize("raw", ["a,b", "1,,2", "-1", "5000", "1;2"])
def test_a_malformed_value_is_a_config_error_that_shows_the_form(raw: str) -> None:
    with pytest.raises(ConfigError, match="e.g. 2,10,30"):
        retry_delays(raw)

"""keep_rows_written_after must name the end of a corruption that began after the restore
point: refused before anything happens otherwise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from restorekit.errors import ConfigError
from restorekit.models import RestorePoint
from restorekit.recovery import check_keep_after

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POINT = RestorePoint.parse("2026-11-25T11:00:00Z")


@pytest.mark.parametrize(("keep", "says"), [
    (datetime(2026, 11, 25, 11, 0, tzinfo=UTC), "not after the restore point"),
    (datetime(2026, 11, 25, 10, 59, tzinfo=UTC), "not after the restore point"),
    (datetime(2026, 11, 25, 12, 0, 1, tzinfo=UTC), "in the future"),
    (datetime(2026, 11, 25, 11, 30), "has no timezone"),
])
def test_a_keep_time_that_cannot_end_the_corruption_is_refused(keep: datetime, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        check_keep_after(POINT, keep, now=NOW)


def test_a_keep_time_between_the_point_and_now_is_accepted() -> None:
    check_keep_after(POINT, POINT.time + timedelta(microseconds=1), now=NOW)  # type: ignore[operator]
    check_keep_after(POINT, NOW, now=NOW)
    check_keep_after(POINT, None, now=NOW)


def test_other_point_kinds_are_only_checked_against_the_future() -> None:
    lsn = RestorePoint.parse("lsn:0/3000060")
    check_keep_after(lsn, datetime(2000, 1, 1, tzinfo=UTC), now=NOW)
    with pytest.raises(ConfigError, match="in the future"):
        check_keep_after(lsn, NOW + timedelta(days=1), now=NOW)

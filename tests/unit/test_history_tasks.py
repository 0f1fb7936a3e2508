"""The point-finding tasks on providers that cannot look into their history (RDS, Supabase):
refused with what to do, never a guess; the plan says what it cannot count."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import tasks.history as history
from restorekit.damage import Loss, TableLoss
from restorekit.errors import CapabilityNotSupported, RepositoryError
from restorekit.providers.base import Capability
from tasks._runtime import TargetRef

REF = TargetRef(target="production")


def with_provider(monkeypatch: pytest.MonkeyPatch, provider: Any) -> None:
    monkeypatch.setattr(history, "runtime", lambda ref: SimpleNamespace(provider=provider))


def test_auto_is_refused_where_the_provider_has_no_wal(monkeypatch: pytest.MonkeyPatch) -> None:
    with_provider(monkeypatch, SimpleNamespace(kind="rds", capabilities=frozenset(
        {Capability.NEW_TARGET_RESTORE, Capability.POINT_IN_TIME})))
    with pytest.raises(CapabilityNotSupported, match="no access to its WAL.*give the restore"):
        history.find_restore_point.fn(REF, "users", "deleted", [["3"]])
    lines = history.writes_after_point.fn(REF, "2026-11-25T13:05:00Z")
    assert lines and "cannot be listed on rds" in lines[0]


def test_the_loss_lines_come_from_the_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    class Provider:
        kind = "selfhosted"
        capabilities = frozenset({Capability.LOSS_REPORT})

        def loss_after(self, point: Any, *, progress: Any) -> Loss:
            seen.append(str(point))
            if point.value == "9":
                raise RepositoryError("segment 000000010000000000000003 is missing")
            return Loss(point=str(point), transactions=2,
                        tables=(TableLoss("public.users", inserted=1, deleted=2),))

    with_provider(monkeypatch, Provider())
    lines = history.writes_after_point.fn(REF, "before-xid:8@0/3000060")
    assert seen == ["before-xid:8@0/3000060"]
    assert lines[0].startswith("2 transaction(s) committed after before-xid:8@0/3000060")
    assert "public.users: 1 inserted, 0 updated, 2 deleted" in lines[1]
    # A scan that fails does not fail the plan: it says so.
    assert "could not be counted" in history.writes_after_point.fn(REF, "xid:9@0/3000060")[0]

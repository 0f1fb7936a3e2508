"""The notify task and Prefect notification blocks: a block whose notify is only async (as
NotificationBlock declares it) is sent too, not handed back as a coroutine nobody awaits."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from prefect.blocks.abstract import NotificationBlock

import tasks.reporting as reporting
from tasks._runtime import TargetRef

SENT: list[tuple[str, str | None]] = []


class AsyncOnlyNotification(NotificationBlock):
    """A third-party block written to the abstract signature: ``async def notify``."""

    _block_type_slug = "restorekit-test-async-only-notification"

    async def notify(self, body: str, subject: str | None = None) -> None:
        SENT.append((body, subject))


class SyncNotification(NotificationBlock):
    """A block whose notify returns at once, as Prefect's own do in a sync task."""

    _block_type_slug = "restorekit-test-sync-notification"

    def notify(self, body: str, subject: str | None = None) -> None:
        SENT.append((body, subject))


@pytest.mark.parametrize("block_class", [AsyncOnlyNotification, SyncNotification])
def test_every_notification_block_sends(monkeypatch: pytest.MonkeyPatch,
                                        block_class: type[NotificationBlock]) -> None:
    SENT.clear()
    notify_settings = SimpleNamespace(webhook_url_env=None, prefect_blocks=("x/oncall",))
    monkeypatch.setattr(reporting, "runtime", lambda ref: SimpleNamespace(
        settings=SimpleNamespace(notify=notify_settings)))
    loaded: list[str] = []

    def load(name: str, *args: Any, **kwargs: Any) -> NotificationBlock:
        loaded.append(name)
        return block_class()

    monkeypatch.setattr(reporting.Block, "load", load)

    assert reporting.notify.fn(TargetRef(target="production"), "restore started") is True
    assert loaded == ["x/oncall"]
    assert SENT == [("restore started", "restorekit")]

"""The Prefect settings a run started from the command line gets (restorekit.cli._common)."""

from __future__ import annotations

from prefect.settings import get_current_settings

from restorekit.cli._common import _prefect_without_telemetry


def test_an_ephemeral_server_gets_time_to_start_and_sends_no_analytics() -> None:
    with _prefect_without_telemetry():
        server = get_current_settings().server
        assert server.analytics_enabled is False
        assert server.ephemeral.startup_timeout_seconds == 120


def test_what_the_user_set_wins() -> None:
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    # As a profile or the environment sets them: fields the user set explicitly.
    with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 7,
                                     PREFECT_SERVER_ANALYTICS_ENABLED: True}):
        with _prefect_without_telemetry():
            server = get_current_settings().server
            assert server.ephemeral.startup_timeout_seconds == 7
            assert server.analytics_enabled is True

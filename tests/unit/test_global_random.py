"""The suite's background threads leave the global ``random`` state alone.

Hypothesis fails a property test whose example draw sees the global state move, whatever
thread moved it (tests/conftest.py, _background_threads_draw_from_their_own_generator).
"""

from __future__ import annotations

import random

from websockets.sync.client import connect
from websockets.sync.server import serve


def test_a_websocket_ping_leaves_the_global_random_state_alone() -> None:
    """Prefect's events client pings its websocket from a thread of its own; the ping's payload
    comes from websockets' module-level ``random`` unless tests/conftest.py rebinds it."""
    import threading

    with serve(lambda ws: [ws.send(m) for m in ws], "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        host, port = server.socket.getsockname()[:2]
        with connect(f"ws://{host}:{port}") as ws:
            state = random.getstate()
            assert ws.ping().wait(5)  # the pong arrived: the payload matched
            assert random.getstate() == state
        server.shutdown()


def test_prefect_retry_jitter_leaves_the_global_random_state_alone() -> None:
    """Prefect's API client waits a jittered interval before it retries a request, from
    whatever thread made it (often its GlobalEventLoopThread)."""
    from prefect.utilities.math import clamped_poisson_interval

    state = random.getstate()
    waits = {clamped_poisson_interval(2.0, clamping_factor=0.3) for _ in range(10)}
    assert random.getstate() == state
    assert len(waits) > 1  # still jittered

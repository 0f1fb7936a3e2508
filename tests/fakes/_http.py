"""The HTTP plumbing the fake provider APIs share (neon_server, supabase_server, vercel_server).

Each fake keeps its API in one method, ``handle(method, path, headers, body) -> (status,
extra headers, JSON payload or None)``; this module puts it on a local port:
:class:`JsonHandler` reads the request, asks the fake and writes the answer back as JSON, and
:class:`LocalServer` runs one ``ThreadingHTTPServer`` for it on a free port of 127.0.0.1.
:class:`ServedFake` gives a fake its ``start()``/``url``/``stop()`` and ``with`` on top.
Provider specifics (Supabase's rate-limit headers, Vercel's request id) stay in each fake's
handler subclass.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self

Answer = tuple[int, dict[str, str], Any]  # status, extra headers, JSON payload (None: no body)


class JsonHandler(BaseHTTPRequestHandler):
    """Hands every request to ``fake.handle`` and writes its answer as JSON."""

    fake: Any  # the fake this handler serves (set by LocalServer)
    protocol_version = "HTTP/1.1"
    content_type = "application/json"
    # Headers and body go out in two writes: without this, Nagle plus the client's delayed ACK
    # cost ~40 ms per request, which a test polling a fake hour through adds up to seconds.
    disable_nagle_algorithm = True

    def answer(self, headers: dict[str, str], body: bytes) -> Answer:
        """The fake's answer to this request (``headers`` with lower-case names)."""
        return self.fake.handle(self.command, self.path, headers, body)

    def headers_for(self, status: int) -> dict[str, str]:
        """Headers every answer carries (before the fake's own, which win)."""
        return {}

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, extra, payload = self.answer({k.lower(): v for k, v in self.headers.items()}, raw)
        data = b"" if status == 204 or payload is None else json.dumps(payload).encode()
        self.send_response(status)
        for key, value in {**self.headers_for(status), **extra}.items():
            self.send_header(key, value)
        if data:
            self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815 - http.server API

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet in tests


class LocalServer:
    """``handler`` bound to ``fake``, served from a daemon thread on a free local port."""

    def __init__(self, fake: object, handler: type[JsonHandler], *, name: str) -> None:
        bound = type(handler.__name__, (handler,), {"fake": fake})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), bound)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=name,
                                        kwargs={"poll_interval": 0.05}, daemon=True)  # quick close
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, no trailing slash."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        """Stop serving and free the port (open keep-alive connections end with it)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class ServedFake:
    """``start()`` serves the fake's ``handler`` on a free local port (``url``); ``stop()`` and
    leaving a ``with`` block close it. A fake with more to tear down extends ``stop()``."""

    handler: ClassVar[type[JsonHandler]]
    thread_name: ClassVar[str]
    _server: LocalServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return self._server.url

    def start(self) -> Self:
        self._server = LocalServer(self, self.handler, name=self.thread_name)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

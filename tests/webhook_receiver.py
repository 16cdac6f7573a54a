"""A real HTTP webhook receiver on 127.0.0.1 for the alert tests: records every POST, answers as told."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    """http.server on a free loopback port; `.posts` holds (path, headers, parsed JSON body) per POST.

    `status` is the answer's status, `delay_s` how long it waits before answering, `redirect_to` a
    Location for a 3xx status.
    """

    def __init__(self, status: int = 200, delay_s: float = 0.0, redirect_to: str | None = None) -> None:
        self.status, self.delay_s, self.redirect_to = status, delay_s, redirect_to
        self.posts: list[tuple[str, dict[str, str], Any]] = []
        self.gets: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                receiver.posts.append((self.path, dict(self.headers), json.loads(raw)))
                time.sleep(receiver.delay_s)
                self.send_response(receiver.status)
                if receiver.redirect_to:
                    self.send_header("Location", receiver.redirect_to)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def do_GET(self) -> None:  # noqa: N802
                receiver.gets.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *args: None  # type: ignore[method-assign]  # a client that gave up
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/services/T000/B000/secret-token-1234") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

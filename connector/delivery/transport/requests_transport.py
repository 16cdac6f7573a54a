"""The requests transport: a pooled Session, one thread per exchange (sync runs).

`send()` runs the exchange on the calling thread; `send_async()` (the writer's event loop) on a pool of at
most MAX_THREADS threads, so requests in flight through this transport are bounded by that pool too.

With requests each worker thread drives its own HTTP exchange in Python, which on a 2-core machine tops out
near 600 requests/s at 100 ms latency while using over a full core; it suits the sync endpoint (500
requests/minute). Bulk runs use the aiohttp transports (bench/transport_choice.py).
"""

from __future__ import annotations

import os
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from connector.delivery.transport.base import (
    CONNECT_TIMEOUT_S,
    Answer,
    DaemonPool,
    Gate,
    NotSent,
    SentLost,
    awaitable,
)

# Threads driving send_async() exchanges: requests blocks a thread per exchange, so this bounds both the
# threads and the requests in flight (32 at 100 ms latency: about 300 requests/s; bulk runs use aiohttp).
MAX_THREADS = 32

_NOT_SENT_MARKERS = (
    "NewConnectionError",
    "ConnectTimeoutError",
    "NameResolutionError",
    "ConnectionRefusedError",
)


class RequestsTransport:
    """A requests.Session pooled to the concurrency; thread-safe for concurrent send() calls."""

    def __init__(self, base_url: str, headers: dict[str, str], *, concurrency: int, timeout_s: float) -> None:
        self._timeout = (min(CONNECT_TIMEOUT_S, timeout_s), timeout_s)
        self._session = requests.Session()
        # Resolve proxies and the CA bundle from the environment ONCE: with trust_env on, requests rescans
        # os.environ on every request (about 1 ms of CPU each), and a ~/.netrc entry could silently replace
        # the Bearer header.
        self._session.proxies.update(requests.utils.get_environ_proxies(base_url))
        self._session.verify = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
        self._session.trust_env = False
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=concurrency, pool_block=True, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update(headers)
        self._pool = DaemonPool(min(concurrency, MAX_THREADS), "braze-http")

    def send(self, url: str, body: bytes, gate: Gate | None = None) -> Answer:
        if gate is not None:
            gate()
        try:
            resp = self._session.post(url, data=body, timeout=self._timeout)
        except requests.exceptions.RequestException as exc:
            kind = type(exc).__name__
            not_sent = (
                requests.exceptions.ConnectTimeout,
                requests.exceptions.SSLError,
                requests.exceptions.ProxyError,
            )
            if isinstance(exc, not_sent) or (
                isinstance(exc, requests.exceptions.ConnectionError) and not _was_sent(exc)
            ):
                raise NotSent(kind) from None
            raise SentLost(kind) from None
        return Answer(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.content)

    async def send_async(self, url: str, body: bytes, gate: Gate | None = None) -> Answer:
        try:
            future = self._pool.submit(self.send, url, body, gate)
        except RuntimeError:  # the pool is shut down
            raise NotSent("transport closed") from None
        return await awaitable(future)

    def close(self, wait_s: float | None = None) -> None:
        self._pool.close()  # queued exchanges were not sent (NotSent)
        self._session.close()  # never waits: requests still in flight end on their own timeout


def _was_sent(exc: BaseException) -> bool:
    """False when the chain shows the connection was never made (nothing reached the server)."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if type(e).__name__ in _NOT_SENT_MARKERS or isinstance(e, ConnectionRefusedError):
            return False
        todo.extend([getattr(e, "reason", None), e.__cause__, e.__context__])
        todo.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
    return True

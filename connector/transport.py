"""HTTP transports under the client's one retry policy: requests (pooled Session) and aiohttp.

A transport sends one POST and returns the raw answer, or raises `NotSent` (nothing reached the server:
safe to resend) or `SentLost` (the connection failed after the request was sent: Braze may or may not have
applied it). Status codes, retries and the rate limiter are the client's business (client.py).

Why two: with requests, each worker thread drives its own HTTP exchange in Python, which on this 2-core
machine tops out near 600 requests/s at 100 ms latency while using over a full core. aiohttp runs every
exchange on one event-loop thread; the worker threads only wait on futures, reaching 1,150 requests/s on
0.6 cores (bench/transport_choice.py). Bulk runs use aiohttp; sync runs (500 requests/minute) requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import requests
from requests.adapters import HTTPAdapter

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
_NOT_SENT_MARKERS = (
    "NewConnectionError",
    "ConnectTimeoutError",
    "NameResolutionError",
    "ConnectionRefusedError",
)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    content: bytes


class NotSent(Exception):
    """The request never reached the server (refused, DNS, connect timeout, TLS): safe to resend."""


class SentLost(Exception):
    """The connection failed after the request was sent (reset, read timeout): outcome unknown."""


class Transport(Protocol):
    def send(self, url: str, body: bytes) -> Answer: ...

    def close(self) -> None: ...


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

    def send(self, url: str, body: bytes) -> Answer:
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

    def close(self) -> None:
        self._session.close()


class AiohttpTransport:
    """One aiohttp ClientSession on a private event-loop thread; send() blocks the calling thread only."""

    def __init__(self, base_url: str, headers: dict[str, str], *, concurrency: int, timeout_s: float) -> None:
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=min(CONNECT_TIMEOUT_S, timeout_s), sock_read=timeout_s
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="braze-http", daemon=True)
        self._thread.start()
        self._closed = False
        scheme = base_url.split(":", 1)[0]
        self._proxy = requests.utils.get_environ_proxies(base_url).get(scheme)  # resolved once, like requests

        async def make() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, ttl_dns_cache=300)
            return aiohttp.ClientSession(connector=connector, headers=headers, timeout=self._timeout)

        self._session = asyncio.run_coroutine_threadsafe(make(), self._loop).result()

    async def _post(self, url: str, body: bytes) -> Answer:
        return await post_once(self._session, url, body, self._proxy)

    def send(self, url: str, body: bytes) -> Answer:
        if self._closed:
            raise NotSent("transport closed")
        return asyncio.run_coroutine_threadsafe(self._post(url, body), self._loop).result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._session.close(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._loop.is_running():
                self._loop.close()


async def post_once(session: aiohttp.ClientSession, url: str, body: bytes, proxy: str | None) -> Answer:
    """One POST on an aiohttp session; NotSent / SentLost as the Transport protocol says."""
    try:
        async with session.post(url, data=body, proxy=proxy) as resp:
            content = await resp.read()
            return Answer(resp.status, {k.lower(): v for k, v in resp.headers.items()}, content)
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.ClientSSLError) as exc:
        raise NotSent(type(exc).__name__) from None
    except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
        raise SentLost(type(exc).__name__) from None


def make_transport(
    kind: str, base_url: str, headers: dict[str, str], *, concurrency: int, timeout_s: float
) -> Transport:
    """`requests`, `aiohttp` or `aiohttp-process` (the client resolves `auto` before calling)."""
    if kind == "aiohttp-process":
        from connector.transport_process import ProcessTransport, ProcessTransportError

        try:
            return ProcessTransport(base_url, headers, concurrency=concurrency, timeout_s=timeout_s)
        except ProcessTransportError as exc:
            logger.warning("%s; sending from this process instead (slower on a busy run)", exc)
            kind = "aiohttp"
    cls: Any = AiohttpTransport if kind == "aiohttp" else RequestsTransport
    return cls(base_url, headers, concurrency=concurrency, timeout_s=timeout_s)  # type: ignore[no-any-return]


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

"""The aiohttp transport: every exchange on one event-loop thread; callers wait on futures or await them.

It reached 1,150 requests/s on 0.6 cores where requests topped out near 600 (bench/transport_choice.py).
`post_once` is also what the HTTP child process (process.py) runs.
"""

from __future__ import annotations

import asyncio
import threading

import aiohttp

from connector.delivery.transport.base import (
    CONNECT_TIMEOUT_S,
    Answer,
    Gate,
    NotSent,
    SentLost,
    awaitable,
    environ_proxy,
)


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
        self._proxy = environ_proxy(base_url)

        async def make() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, ttl_dns_cache=300)
            return aiohttp.ClientSession(connector=connector, headers=headers, timeout=self._timeout)

        self._session = asyncio.run_coroutine_threadsafe(make(), self._loop).result()

    async def _post(self, url: str, body: bytes) -> Answer:
        return await post_once(self._session, url, body, self._proxy)

    def send(self, url: str, body: bytes, gate: Gate | None = None) -> Answer:
        if self._closed:
            raise NotSent("transport closed")
        if gate is not None:
            gate()
        return asyncio.run_coroutine_threadsafe(self._post(url, body), self._loop).result()

    async def send_async(self, url: str, body: bytes, gate: Gate | None = None) -> Answer:
        if self._closed:
            raise NotSent("transport closed")
        if gate is not None:  # it may wait for the journal's disk write: not on the caller's event loop
            await asyncio.get_running_loop().run_in_executor(None, gate)
        return await awaitable(asyncio.run_coroutine_threadsafe(self._post(url, body), self._loop))

    def close(self, wait_s: float | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        wait = 10.0 if wait_s is None else wait_s
        try:
            asyncio.run_coroutine_threadsafe(self._session.close(), self._loop).result(timeout=wait)
        except TimeoutError:
            pass  # a stopped run does not wait past its bound; the loop stops below
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=wait)
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

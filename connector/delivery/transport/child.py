"""The HTTP child process (`python -m connector.delivery.transport.child`): one HTTP engine, one loop.

process.py starts it and speaks the protocol described there over its stdin/stdout. Two engines speak it
alike: `curl` (libcurl's multi interface through pycurl, curl_child.py; the default, about a third of
aiohttp's CPU per request) and `aiohttp` (an asyncio event loop; the fallback when pycurl cannot be
imported). BRAZE_CONNECTOR_HTTP_ENGINE=aiohttp|curl picks one; the ready frame names the engine serving.
The child imports only its engine, orjson and the transport's base types (not the `connector` package's
config or pipeline), so it is ready to send soon after it is spawned.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import orjson

from connector.delivery.transport.base import NotSent
from connector.delivery.transport.frames import ANSWER as _ANSWER
from connector.delivery.transport.frames import NOT_SENT as _NOT_SENT
from connector.delivery.transport.frames import SENT_LOST as _SENT_LOST
from connector.delivery.transport.frames import Frames, engine_wanted


class _Pipe(asyncio.Protocol):
    """Frames on our stdin for the aiohttp engine: the config frame first, then requests to `on_request`."""

    def __init__(self) -> None:
        self.frames = Frames()
        self.config: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_request: Callable[[int, bytes, bytes], None] | None = None

    def data_received(self, data: bytes) -> None:
        frames = self.frames
        if not frames.configured:
            raw = frames.feed_config(data)
            if raw is None:
                return
            self.config.set_result(raw)
        else:
            frames.buf += data
        if self.on_request is not None:  # requests before we are ready (the parent waits for that): kept
            frames.cut(self.on_request)

    def serve(self, on_request: Callable[[int, bytes, bytes], None]) -> None:
        """From now on hand each request frame to `on_request` (the ones already here too)."""
        self.on_request = on_request
        self.frames.cut(on_request)

    def eof_received(self) -> bool:
        self._close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._close()

    def _close(self) -> None:
        if not self.config.done():
            self.config.set_exception(EOFError())
        if not self.closed.done():
            self.closed.set_result(None)


async def _serve_aiohttp(out_fd: int) -> None:
    import aiohttp

    from connector.delivery.transport.aiohttp_transport import post_once

    loop = asyncio.get_running_loop()
    out = os.fdopen(out_fd, "wb", buffering=0)
    frames = _Pipe()
    await loop.connect_read_pipe(lambda: frames, os.fdopen(0, "rb", buffering=0))
    w_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, out)

    try:
        cfg: dict[str, Any] = orjson.loads(await frames.config)
    except EOFError:
        return
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=cfg["sock_connect"], sock_read=cfg["sock_read"])
    limit = int(cfg["concurrency"])
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, ttl_dns_cache=300)
    # No cookie jar (Braze's REST API sets none that matter; a jar costs a lookup per request).
    session = aiohttp.ClientSession(
        connector=connector, headers=cfg["headers"], timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    )
    proxy = cfg.get("proxy")

    # Answers finished in one turn of the loop leave in one write (one syscall, one wake-up of the parent's
    # reader) instead of one each.
    outgoing: list[bytes] = []

    def flush() -> None:
        data = b"".join(outgoing)
        outgoing.clear()
        w_transport.write(data)

    def answer(rid: int, status: int, headers: bytes, content: bytes) -> None:
        if not outgoing:
            loop.call_soon(flush)
        outgoing.append(_ANSWER.pack(rid, status, len(headers), len(content)))
        outgoing.append(headers)
        outgoing.append(content)

    async def one(rid: int, url: str, body: bytes) -> None:
        try:
            a = await post_once(session, url, body, proxy)
            answer(rid, a.status, orjson.dumps(a.headers), a.content)
        except NotSent as exc:
            answer(rid, _NOT_SENT, b"{}", str(exc).encode())
        except Exception as exc:  # SentLost, or anything unexpected: the outcome is unknown
            answer(rid, _SENT_LOST, b"{}", (str(exc) or type(exc).__name__).encode())

    tasks: set[asyncio.Task[None]] = set()
    urls: dict[bytes, str] = {}  # every request of a run goes to one of a few URLs

    def on_request(rid: int, raw_url: bytes, body: bytes) -> None:
        url = urls.get(raw_url)
        if url is None:
            url = urls[raw_url] = raw_url.decode()
        task = loop.create_task(one(rid, url, body))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    frames.serve(on_request)
    answer(0, 0, b"{}", b"aiohttp")
    try:
        await frames.closed  # the parent closed our stdin (or exited)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if outgoing:
            flush()
        # Let the last answers leave before the pipe closes.
        while w_transport.get_write_buffer_size() and not w_transport.is_closing():
            await asyncio.sleep(0.01)
    finally:
        await session.close()
        w_transport.close()


def _serve(out_fd: int) -> None:
    """Serve with the engine wanted; the aiohttp one if pycurl cannot be imported here."""
    if engine_wanted() == "curl":
        try:
            from connector.delivery.transport import curl_child
        except ImportError:
            pass  # the ready frame says "aiohttp": the parent logs it
        else:
            curl_child.serve(0, out_fd)
            return
    asyncio.run(_serve_aiohttp(out_fd))


def main() -> None:
    # BRAZE_CONNECTOR_PROFILE=path: cProfile this process and write its stats there at exit (bench/child_cost.py).
    profile_to = os.environ.get("BRAZE_CONNECTOR_PROFILE")
    prof = None
    if profile_to:
        import cProfile
        import time

        prof = cProfile.Profile(time.process_time)  # CPU, not wall time: a loaded machine's waits stay out
        prof.enable()
    # Our answers own the real stdout; anything else printed in this process goes to stderr.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        _serve(out_fd)
    except (BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        pass  # the parent went away: nobody is left to answer
    finally:
        if prof is not None and profile_to:
            prof.disable()
            prof.dump_stats(profile_to)


if __name__ == "__main__":
    main()

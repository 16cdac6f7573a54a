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
import struct
from collections.abc import Callable
from typing import Any

import orjson

from connector.delivery.transport.base import NotSent

_REQUEST = struct.Struct("!III")
_ANSWER = struct.Struct("!IiII")
_LENGTH = struct.Struct("!I")
_NOT_SENT, _SENT_LOST = -1, -2

ENGINE_VAR = "BRAZE_CONNECTOR_HTTP_ENGINE"
ENGINES = ("curl", "aiohttp")


class Frames:
    """The parent's frames on our stdin, cut out of what each read brings (often several at once): the
    config frame first, then request frames."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.configured = False

    def feed_config(self, data: bytes) -> bytes | None:
        """Add `data`; the config frame's content once it is whole (later bytes stay in `buf`), else None."""
        buf = self.buf
        buf += data
        if len(buf) < _LENGTH.size or len(buf) < _LENGTH.size + _LENGTH.unpack_from(buf)[0]:
            return None
        end = _LENGTH.size + _LENGTH.unpack_from(buf)[0]
        raw = bytes(buf[_LENGTH.size : end])
        del buf[:end]
        self.configured = True
        return raw

    def cut(self, on_request: Callable[[int, bytes, bytes], None]) -> None:
        """Hand every whole request frame in `buf` to on_request(id, url, body) and drop it from `buf`."""
        buf = self.buf
        pos, n = 0, len(buf)
        head = _REQUEST.size
        while n - pos >= head:
            rid, n_url, n_body = _REQUEST.unpack_from(buf, pos)
            end = pos + head + n_url + n_body
            if end > n:
                break
            on_request(rid, bytes(buf[pos + head : pos + head + n_url]), bytes(buf[pos + head + n_url : end]))
            pos = end
        if pos:
            del buf[:pos]


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


def engine_wanted(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """BRAZE_CONNECTOR_HTTP_ENGINE if it names an engine, else `curl` (the default)."""
    value = environ.get(ENGINE_VAR, "").strip().lower()
    return value if value in ENGINES else "curl"


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

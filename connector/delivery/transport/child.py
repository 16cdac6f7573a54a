"""The HTTP child process (`python -m connector.delivery.transport.child`): aiohttp and one event loop.

process.py starts it and speaks the protocol described there over its stdin/stdout. It imports only
asyncio, orjson, aiohttp and the transport's base types (not the `connector` package's config or
pipeline), so it is ready to send soon after it is spawned.
"""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any

import orjson

from connector.delivery.transport.base import NotSent

_REQUEST = struct.Struct("!III")
_ANSWER = struct.Struct("!IiII")
_LENGTH = struct.Struct("!I")
_NOT_SENT, _SENT_LOST = -1, -2


async def _serve() -> None:
    import aiohttp

    from connector.delivery.transport.aiohttp_transport import post_once

    loop = asyncio.get_running_loop()
    # Our answers own the real stdout; anything else printed in this process goes to stderr.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    reader = asyncio.StreamReader(limit=1 << 16)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0))
    w_transport, w_protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, out)
    writer = asyncio.StreamWriter(w_transport, w_protocol, None, loop)

    (n,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    cfg: dict[str, Any] = orjson.loads(await reader.readexactly(n))
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=cfg["sock_connect"], sock_read=cfg["sock_read"])
    limit = int(cfg["concurrency"])
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, ttl_dns_cache=300)
    session = aiohttp.ClientSession(connector=connector, headers=cfg["headers"], timeout=timeout)
    proxy = cfg.get("proxy")

    def answer(rid: int, status: int, headers: bytes, content: bytes) -> None:
        writer.write(_ANSWER.pack(rid, status, len(headers), len(content)) + headers + content)

    async def one(rid: int, url: str, body: bytes) -> None:
        try:
            a = await post_once(session, url, body, proxy)
            answer(rid, a.status, orjson.dumps(a.headers), a.content)
        except NotSent as exc:
            answer(rid, _NOT_SENT, b"{}", str(exc).encode())
        except Exception as exc:  # SentLost, or anything unexpected: the outcome is unknown
            answer(rid, _SENT_LOST, b"{}", (str(exc) or type(exc).__name__).encode())
        await writer.drain()

    answer(0, 0, b"{}", b"")
    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            try:
                rid, n_url, n_body = _REQUEST.unpack(await reader.readexactly(_REQUEST.size))
                url = (await reader.readexactly(n_url)).decode()
                body = await reader.readexactly(n_body)
            except asyncio.IncompleteReadError:
                break  # the parent closed our stdin (or exited)
            task = asyncio.create_task(one(rid, url, body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await writer.drain()
    finally:
        await session.close()
        writer.close()


def main() -> None:
    # BRAZE_CONNECTOR_PROFILE=path: cProfile this process and write its stats there at exit (bench/child_cost.py).
    profile_to = os.environ.get("BRAZE_CONNECTOR_PROFILE")
    prof = None
    if profile_to:
        import cProfile
        import time

        prof = cProfile.Profile(time.process_time)  # CPU, not wall time: a loaded machine's waits stay out
        prof.enable()
    try:
        asyncio.run(_serve())
    except (BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        pass  # the parent went away: nobody is left to answer
    finally:
        if prof is not None and profile_to:
            prof.disable()
            prof.dump_stats(profile_to)


if __name__ == "__main__":
    main()

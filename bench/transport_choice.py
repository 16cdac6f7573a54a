"""The measurement behind the bulk transport choice (issue 5): requests+threads vs aiohttp.

Posts the same 75-object /users/track body to the nginx sink (100 ms latency, no limit) for a bounded time
with: requests.Session shared by N threads; aiohttp with N concurrent coroutines; and the bridge the
connector uses (N blocking worker threads, each request run on one aiohttp event-loop thread). Prints
requests/s and CPU cores used for each, and the ratio to the requests baseline.

    python bench/transport_choice.py [--seconds 5] [--concurrency 128]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
import requests
from requests.adapters import HTTPAdapter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sink import NginxSink  # noqa: E402

BODY = orjson.dumps(
    {
        "attributes": [
            {"external_id": f"u{i}", "first_name": "Ann", "email": f"u{i}@example.com", "age": 33, "plan": "pro"}
            for i in range(75)
        ]
    }
)
HEADERS = {"Authorization": "Bearer bench", "Content-Type": "application/json"}


def _threads(post: Callable[[], None], n: int, seconds: float) -> tuple[float, float]:
    stop = time.perf_counter() + seconds
    counts = [0] * n

    def work(i: int) -> None:
        while time.perf_counter() < stop:
            post()
            counts[i] += 1

    t0, c0 = time.perf_counter(), time.process_time()
    ts = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    el = time.perf_counter() - t0
    return sum(counts) / el, (time.process_time() - c0) / el


def with_requests(url: str, n: int, seconds: float) -> tuple[float, float]:
    s = requests.Session()
    s.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=n))
    return _threads(lambda: s.post(url, data=BODY, headers=HEADERS, timeout=30).content and None, n, seconds)


async def _aio(url: str, n: int, seconds: float) -> tuple[float, float]:
    count = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n)) as s:
        stop = time.perf_counter() + seconds

        async def work() -> None:
            nonlocal count
            while time.perf_counter() < stop:
                async with s.post(url, data=BODY, headers=HEADERS) as r:
                    await r.read()
                count += 1

        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*[work() for _ in range(n)])
        el = time.perf_counter() - t0
    return count / el, (time.process_time() - c0) / el


def with_bridge(url: str, n: int, seconds: float) -> tuple[float, float]:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def make() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n))

    session = asyncio.run_coroutine_threadsafe(make(), loop).result()

    async def one() -> None:
        async with session.post(url, data=BODY, headers=HEADERS) as r:
            await r.read()

    try:
        return _threads(lambda: asyncio.run_coroutine_threadsafe(one(), loop).result(), n, seconds)
    finally:
        asyncio.run_coroutine_threadsafe(session.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--latency-ms", type=float, default=100)
    a = ap.parse_args()
    with NginxSink(latency_ms=a.latency_ms) as sink:
        url = sink.url + "/users/track"
        base = with_requests(url, a.concurrency, a.seconds)
        rows = [
            ("requests + threads", base),
            ("aiohttp coroutines", asyncio.run(_aio(url, a.concurrency, a.seconds))),
            ("threads -> aiohttp bridge", with_bridge(url, a.concurrency, a.seconds)),
        ]
    print(f"{a.concurrency} concurrent, {a.latency_ms:.0f} ms latency, {len(BODY)}-byte bodies, {a.seconds:.0f} s each")
    for name, (rps, cores) in rows:
        print(f"  {name:28s} {rps:8.0f} req/s  {cores:5.2f} cores  x{rps / base[0]:.2f} vs requests")


if __name__ == "__main__":
    main()

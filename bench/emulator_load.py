"""Emulator throughput on /users/track with 75-object bodies (issue 2).

Starts the emulator as a subprocess on 127.0.0.1 (rate limits lifted), then N concurrent aiohttp clients
post 75-object bodies (25 attributes with inc, 25 events, 25 purchases over 1,000 users) for a bounded
time. Prints the command, requests/s, objects/s and p50/p99 latency.

    python bench/emulator_load.py [--seconds 10] [--concurrency 32] [--db :memory:]
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time

import aiohttp
import orjson

from connector.emulator import start_subprocess

KEY = "bench-key"


def _body(n: int) -> bytes:
    users = [f"user-{(n * 25 + i) % 1000}" for i in range(25)]
    t = "2024-06-01T12:00:00Z"
    return orjson.dumps(
        {
            "attributes": [{"external_id": u, "plan": "pro", "age": 33, "visits": {"inc": 1}} for u in users],
            "events": [
                {"external_id": u, "name": "viewed", "time": t, "properties": {"page": "home"}} for u in users
            ],
            "purchases": [
                {"external_id": u, "product_id": "sku-1", "currency": "USD", "price": 9.5, "time": t}
                for u in users
            ],
        }
    )


async def _run(url: str, seconds: float, concurrency: int) -> tuple[int, list[float], dict[int, int]]:
    bodies = [_body(n) for n in range(40)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker(w: int) -> None:
            n = w
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                async with session.post(
                    url + "/users/track", data=bodies[n % len(bodies)], headers=headers
                ) as r:
                    await r.read()
                latencies.append(time.perf_counter() - start)
                statuses[r.status] = statuses.get(r.status, 0) + 1
                n += concurrency

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return len(latencies), latencies, statuses


def main() -> None:
    """Run the benchmark and print its results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--db", default=":memory:")
    ap.add_argument("--ledger-detail", default="full", choices=["full", "ids", "none"])
    args = ap.parse_args()
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    proc = start_subprocess(
        "--db",
        args.db,
        "--rate-limit",
        "users_track=1000000000/1",
        "--ledger-detail",
        args.ledger_detail,
        api_keys=(KEY,),
    )
    try:
        started = time.perf_counter()
        n, lat, statuses = asyncio.run(_run(proc.url, args.seconds, args.concurrency))
        elapsed = time.perf_counter() - started
    finally:
        proc.stop()
    lat.sort()
    p50 = lat[len(lat) // 2] * 1000 if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")
    print(f"concurrency={args.concurrency} seconds={elapsed:.1f} requests={n} statuses={statuses}")
    print(f"requests/s={n / elapsed:.0f} objects/s={n * 75 / elapsed:.0f} p50_ms={p50:.1f} p99_ms={p99:.1f}")


if __name__ == "__main__":
    main()

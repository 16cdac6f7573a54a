"""CPU per request of the HTTP child process and of the parent's pipe side, without the writer.

    python bench/child_cost.py --requests 4000 --latency 100 --rate 1000
    python bench/child_cost.py --profile /tmp/child.prof   # + cProfile of the child (BRAZE_CONNECTOR_PROFILE)

One ProcessTransport (connector/delivery/transport/process.py, the bulk runs' transport) posts the same
75-object /users/track body `--requests` times to the nginx sink (bench/sink.py) at `--latency` ms, from
coroutines on one event loop released at `--rate` requests/s, one by one or in steps of `--group-ms` (the
writer's limiter releases them in 10 ms steps, delivery/waits.py). No
writer, journal or limiter: what is left is the cost of one request crossing the pipe, the child's aiohttp
exchange and the answer coming back. CPU comes from /proc for the child (its utime + stime just before it
is closed, its start excluded) and time.process_time for this process; the calibration loop runs in the
same invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import pstats
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import orjson  # noqa: E402
from calibration import calibration_s  # noqa: E402
from sink import NginxSink, nginx_available  # noqa: E402

from connector.delivery.transport.process import ProcessTransport  # noqa: E402

BODY = orjson.dumps(
    {
        "attributes": [
            {"external_id": f"u{i}", "first_name": "Ann", "email": f"u{i}@example.com", "age": 33, "plan": "pro",
             "country": "DE", "lifetime_value": 12.5, "signup_at": "2024-01-02T03:04:05Z"}
            for i in range(75)
        ]
    }
)  # fmt: skip
HEADERS = {"Authorization": "Bearer bench-key-not-secret", "Content-Type": "application/json"}


def proc_cpu(pid: int) -> float:
    """utime + stime of a live process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _send_all(
    transport: ProcessTransport, url: str, n: int, rate: float, concurrency: int, group_s: float = 0.0
) -> dict[int, int]:
    statuses: dict[int, int] = {}
    gate = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(i: int) -> None:
        try:
            a = await transport.send_async(url, BODY)
            statuses[a.status] = statuses.get(a.status, 0) + 1
        finally:
            gate.release()

    tasks = []
    for i in range(n):
        await gate.acquire()
        due = start + i / rate
        if group_s:  # as the writer's limiter releases them (delivery/waits.py GROUP_S): in steps
            due = start + math.ceil(i / rate / group_s) * group_s
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return statuses


def measure(n: int, latency: float, rate: float, concurrency: int, profile: str | None,
            group_s: float = 0.0) -> list[str]:  # fmt: skip
    if profile:
        os.environ["BRAZE_CONNECTOR_PROFILE"] = profile
    with NginxSink(latency_ms=latency) as sink:
        url = sink.url + "/users/track"
        transport = ProcessTransport(sink.url, HEADERS, concurrency=concurrency, timeout_s=30)
        transport.wait_ready()
        asyncio.run(_send_all(transport, url, 50, rate, concurrency))  # warm: connections open, code paths run
        pid = transport.pid
        child0, self0, t0 = proc_cpu(pid), time.process_time(), time.perf_counter()
        statuses = asyncio.run(_send_all(transport, url, n, rate, concurrency, group_s))
        wall = time.perf_counter() - t0
        child, parent = proc_cpu(pid) - child0, time.process_time() - self0
        transport.close()
    per = 1e6 / n
    out = [
        f"{n:,} requests at {rate:g}/s (released every {group_s * 1000 if group_s else 1000 / rate:g} ms), "
        f"{latency:g} ms, concurrency {concurrency}: {n / wall:,.0f} requests/s; "
        f"statuses {dict(sorted(statuses.items()))}",
        f"CPU per request: HTTP child {child * per:.0f} us, this process {parent * per:.0f} us (the pipe threads and "
        f"the sending loop); cores at 1,000 requests/s: child {child * per / 1000:.2f}, parent {parent * per / 1000:.2f}",
    ]
    if profile and Path(profile).exists():
        out.append(f"child profile (cumulative top) from {profile}:")
        stats = pstats.Stats(profile)
        raw = stats.stats  # type: ignore[attr-defined]
        for (f, line, fn), (_cc, nc, tt, _ct, _c) in sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:25]:
            out.append(f"  {tt:6.2f} s  {nc:>9,} calls  {f.split('site-packages/')[-1]}:{line} {fn}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--latency", type=float, default=100)
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--concurrency", type=int, default=160)
    ap.add_argument("--group-ms", type=float, default=0.0,
                    help="release the requests in steps of this many ms (the writer's limiter: 10)")  # fmt: skip
    ap.add_argument("--profile", default=None, help="write the child's cProfile stats here and print the top")
    a = ap.parse_args()
    if reason := nginx_available():
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    print(f"# bench/child_cost.py --requests {a.requests} --latency {a.latency:g} --rate {a.rate:g}  ({os.cpu_count()} cores)")
    print(f"calibration loop (10M-iteration for): {calibration_s():.2f} s CPU")
    for line in measure(a.requests, a.latency, a.rate, a.concurrency, a.profile, a.group_ms / 1000):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

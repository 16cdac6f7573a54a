"""One worker process for the shared-limit tests: a BrazeClient posting small /users/track requests.

    python limiter_worker.py EMULATOR_URL --requests N --threads T [--redis URL --namespace NS] [--limit 20]

Prints one JSON line at the end: statuses, 429s seen, the intervals its threads waited in acquire()
(epoch seconds), the lowest X-RateLimit-Remaining seen per server window (keyed by X-RateLimit-Reset), and
the shared limiter's summary. Without --redis it uses the local limiter at the full limit, as a pipeline
without write.shared_limits does.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from connector.config import Write
from connector.delivery import shared_limits
from connector.delivery.client import BrazeClient
from connector.delivery.ratelimit import Limiter, RateLimiter
from connector.delivery.shared_budget import SharedTarget
from connector.errors import ApiError


class Recording:
    """A limiter wrapper that records when each acquire() started and ended (epoch seconds)."""

    def __init__(self, inner: Limiter) -> None:
        self.inner = inner
        self.waits: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def acquire(self, endpoint: str, n: int = 1, *, max_wait: float | None = None) -> float:
        t0 = time.time()
        waited = self.inner.acquire(endpoint, n, max_wait=max_wait)
        with self._lock:
            self.waits.append((t0, time.time()))
        return waited

    def observe(self, endpoint: str, headers: Any, now_epoch: float | None = None) -> None:
        self.inner.observe(endpoint, headers, now_epoch)

    def penalize(self, endpoint: str, seconds: float) -> None:
        self.inner.penalize(endpoint, seconds)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--redis")
    ap.add_argument("--namespace", default="test")
    ap.add_argument("--workers", type=int, default=4, help="expected_workers")
    ap.add_argument("--worker-ttl", type=float, default=None)
    ap.add_argument("--tag", default="w")
    a = ap.parse_args()
    if a.worker_ttl is not None:
        shared_limits.WORKER_TTL_S = a.worker_ttl
    write = Write.model_validate({"rate_limits": {"users_track": {"requests": a.limit, "per_seconds": 1}},
                                  "retry": {"max_attempts": 20, "max_elapsed_s": 120}})  # fmt: skip
    shared = None
    if a.redis:
        shared = shared_limits.SharedRateLimiter(write, SharedTarget(a.redis, a.namespace, a.workers))
        inner: Limiter = shared
    else:
        inner = RateLimiter.from_write(write)
    limiter = Recording(inner)
    retries: Counter[str] = Counter()
    client = BrazeClient(a.url, "test-key", write=write, limiter=limiter, transport="requests",
                         on_retry=lambda _e, reason: retries.update([reason]))  # fmt: skip
    statuses: Counter[str] = Counter()
    windows: dict[str, int] = {}
    lock = threading.Lock()
    print(json.dumps({"started": time.time()}), flush=True)

    def one(i: int) -> None:
        body = json.dumps({"attributes": [{"external_id": f"{a.tag}-{i}", "n": i}]}).encode()
        try:
            resp = client.post("users_track", body, idempotent=True)
        except ApiError as e:
            with lock:
                statuses[str(e.status)] += 1
            return
        with lock:
            statuses[str(resp.status)] += 1
            reset, remaining = resp.headers.get("x-ratelimit-reset"), resp.headers.get("x-ratelimit-remaining")
            if reset is not None and remaining is not None:
                windows[reset] = min(windows.get(reset, 10**9), int(remaining))

    with ThreadPoolExecutor(a.threads) as pool:
        list(pool.map(one, range(a.requests)))
    client.close()
    summary = shared.summary() if shared is not None else None
    if shared is not None:
        shared.close()
    out = {"statuses": statuses, "retries": retries, "waits": limiter.waits, "windows": windows, "summary": summary,
           "finished": time.time()}  # fmt: skip
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

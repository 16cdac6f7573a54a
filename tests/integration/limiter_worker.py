"""One worker process for the shared-limit tests: a BrazeClient posting small /users/track requests.

    python limiter_worker.py EMULATOR_URL --requests N --threads T [--redis URL --namespace NS] [--limit 20]

Prints one JSON line at the end: statuses, 429s seen, the lowest X-RateLimit-Remaining seen per server
window (keyed by X-RateLimit-Reset), the shared limiter's summary and the shared slots it was granted, in
Redis TIME (`slots`: [granted at, slot, queued]). Without --redis it uses the local limiter at the full
limit, as a pipeline without write.shared_limits does.
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


def record_slots(shared: shared_limits.SharedRateLimiter) -> list[tuple[int, int, bool]]:
    """The shared slots granted to this process, as the budget's script computed them, in Redis TIME
    microseconds: (when the script ran, the slot, whether the slot was queued behind an earlier one).
    Counted by Redis, not timed here."""
    slots: list[tuple[int, int, bool]] = []
    script = shared._acquire_script

    def recorded(*args: Any, **kw: Any) -> Any:
        reply = script(*args, **kw)
        granted, wait_us, _pause_us, redis_now = (int(x) for x in reply)
        if granted:
            slots.append((redis_now, redis_now + wait_us, wait_us > 0))
        return reply

    shared._acquire_script = recorded
    return slots


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
    slots: list[tuple[int, int, bool]] = []
    if a.redis:
        shared = shared_limits.SharedRateLimiter(write, SharedTarget(a.redis, a.namespace, a.workers))
        slots = record_slots(shared)
        inner: Limiter = shared
    else:
        inner = RateLimiter.from_write(write)
    retries: Counter[str] = Counter()
    client = BrazeClient(a.url, "test-key", write=write, limiter=inner, transport="requests",
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
    out = {"statuses": statuses, "retries": retries, "windows": windows, "summary": summary,
           "slots": slots, "finished": time.time()}  # fmt: skip
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

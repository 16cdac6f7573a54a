"""The start-up of several SharedRateLimiters on one real redis-server: their slots, counted, stay in the budget.

Issue 15's start-up herd: 2-4 pipelines starting together drew 429s from an nginx sink in their first
seconds. These tests check the limiter's part of it without timing anything: each limiter reserves slots
(its own arithmetic, no sleeping) on a clock skewed by seconds from the others and with its first round
trips made slow (a thread descheduled before it reads its answer, as at start-up); the slots, taken back
to one clock, must keep every window within the budget (GCRA: burst + rate x window) and pass nginx's
limit_req accounting (bench/sink.py). The cause the sink's log showed lies after the limiter (see
BENCHMARKS.md); bench/shared_limits.py measures that part.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from connector.config import RateLimit, Write
from connector.delivery.shared_budget import SharedTarget
from connector.delivery.shared_limits import SharedRateLimiter

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from sink import limit_req_refusals  # noqa: E402  (nginx's accounting, as bench/sink.py replays it)

LIMIT = 1000  # requests per second: burst 20, steady rate 970/s (ratelimit.py)
SKEWS = (3.0, -2.0, 0.5, 0.0)  # seconds each limiter's clock is off from the others
SLOW_S = 0.06  # each limiter's first round trips: answers read this late


def slow_start(lim: SharedRateLimiter, calls: int) -> None:
    """Make the limiter's first `calls` slot reservations slow: the answer is read SLOW_S late."""
    script = lim._acquire_script
    left = [calls]
    lock = threading.Lock()

    def slow(*args: Any, **kw: Any) -> Any:
        reply = script(*args, **kw)
        with lock:
            late = left[0] > 0
            left[0] -= 1
        if late:
            time.sleep(SLOW_S)
        return reply

    lim._acquire_script = slow


def reserve_all(redis_url: str, per_limiter: int, threads: int) -> tuple[list[float], list[SharedRateLimiter]]:
    """Slots (one common clock) reserved by len(SKEWS) limiters of one namespace, `threads` callers each."""
    ns = uuid.uuid4().hex
    write = Write(rate_limits={"users_track": RateLimit(requests=LIMIT, per_seconds=1)})
    limiters = []
    for k, skew in enumerate(SKEWS):
        lim = SharedRateLimiter(write, SharedTarget(redis_url, ns, 4), heartbeat=False,
                                clock=lambda skew=skew: time.monotonic() + skew)  # fmt: skip
        if k:  # the first one is running already; the others start (slowly) while it takes slots
            slow_start(lim, threads)
        limiters.append(lim)
    slots: list[float] = []
    lock = threading.Lock()

    def caller(lim: SharedRateLimiter, skew: float) -> None:
        shape = lim._shapes["users_track"]
        for _ in range(per_limiter // threads):
            got = lim._reserve(shape, lim._known[shape.name], 1)
            assert got is not None
            with lock:
                slots.append(got[0] - skew)
            time.sleep(max(0.0, got[0] - skew - time.monotonic()))  # a sender: the queue moves in real time

    workers = [[threading.Thread(target=caller, args=(lim, skew)) for _ in range(threads)]
               for lim, skew in zip(limiters, SKEWS, strict=True)]  # fmt: skip
    for k, group in enumerate(workers):
        for w in group:
            w.start()
        if k == 0:
            time.sleep(0.1)  # the first limiter's senders keep the budget busy when the others start
    for group in workers:
        for w in group:
            w.join()
    return sorted(slots), limiters


def worst_window_excess(slots: list[float], burst: float, rate: float, tolerance_s: float) -> float:
    """How far the busiest window exceeds burst + rate x (its length + tolerance): <= 0 when within the budget."""
    worst = -burst
    for i, start in enumerate(slots):
        for j in range(i, len(slots)):
            worst = max(worst, (j - i + 1) - (burst + rate * (slots[j] - start + tolerance_s)))
    return worst


@pytest.mark.parametrize("threads", [1, 16])
def test_limiters_starting_together_keep_every_window_in_the_budget(redis_server: Any, threads: int) -> None:
    slots, limiters = reserve_all(redis_server.url, per_limiter=192, threads=threads)
    try:
        assert len(slots) == 4 * 192
        # 5 ms for each limiter's conversion of Redis time (half its calibrated bounds, asserted below); a
        # first slow round trip alone would put slots up to 30 ms off.
        assert worst_window_excess(slots, burst=20, rate=970, tolerance_s=0.005) <= 1
        assert limit_req_refusals(slots, LIMIT, LIMIT // 10) == 0  # the sink of bench/shared_limits.py
        for lim in limiters:
            assert lim.summary()["clock_uncertainty_ms"] <= 5.0
    finally:
        for lim in limiters:
            lim.close()

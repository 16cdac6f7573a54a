"""delivery/waits.py: a coroutine's sleep ends when the run is stopped; limiter slots without a thread."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from connector.config import RateLimit
from connector.delivery.ratelimit import RateLimiter
from connector.delivery.waits import GROUP_S, LATE_S, Acquirer, Sleeper, SlotGroups
from connector.stop import StopToken


def test_a_stop_from_another_thread_ends_every_sleep_at_once() -> None:
    token = StopToken()
    sleeper = Sleeper(token)

    async def main() -> float:
        t0 = time.monotonic()
        threading.Timer(0.1, token.request).start()
        await asyncio.gather(*(sleeper.sleep(60) for _ in range(50)))
        return time.monotonic() - t0

    assert asyncio.run(main()) < 30  # not the 60 s asked for (a generous bound)
    assert asyncio.run(asyncio.wait_for(sleeper.sleep(60), 30)) is None  # once stopped: no sleep at all


def test_without_a_stop_the_sleep_is_asyncios() -> None:
    async def main() -> float:
        t0 = time.monotonic()
        await Sleeper(None).sleep(0.05)
        return time.monotonic() - t0

    assert asyncio.run(main()) >= 0.04


class BlockingOnly:
    """A limiter with acquire() only (as the shared Redis limiter): it counts the threads that called it."""

    def __init__(self) -> None:
        self.threads: set[str] = set()

    def acquire(self, endpoint: str, n: int = 1, *, max_wait: float | None = None) -> float:
        self.threads.add(threading.current_thread().name)
        return 0.0


def test_a_limiter_without_reserve_runs_on_the_acquirer_threads_not_the_loop() -> None:
    limiter = BlockingOnly()
    acquirer = Acquirer(limiter, Sleeper(None))  # type: ignore[arg-type]

    async def main() -> None:
        await asyncio.gather(*(acquirer.acquire("users_track", 10.0) for _ in range(20)))

    asyncio.run(main())
    acquirer.close()
    assert limiter.threads and all(t.startswith("braze-limiter") for t in limiter.threads)


class Recording(Sleeper):
    """Records the sleeps asked for and returns at once."""

    def __init__(self) -> None:
        super().__init__(None)
        self.asked: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)


def test_local_limiter_slots_are_reserved_and_slept_on_the_loop() -> None:
    now = [0.0]
    limiter = RateLimiter({"users_track": RateLimit(requests=50, per_seconds=1)}, clock=lambda: now[0])
    sleeper = Recording()
    acquirer = Acquirer(limiter, sleeper)

    async def main() -> None:
        await asyncio.gather(*(acquirer.acquire("users_track", 10.0) for _ in range(10)))

    asyncio.run(main())
    # burst 1, then one slot every 1/48.5 s: the first goes at once, the others sleep until their slot,
    # rounded up to the next GROUP_S step (never before the slot, less than a step after it)
    assert len(sleeper.asked) == 9
    assert sleeper.asked == sorted(sleeper.asked)
    for k, asked in enumerate(sleeper.asked, start=1):
        assert k / 48.5 - 1e-9 <= asked < k / 48.5 + GROUP_S


def test_the_daemon_pool_is_bounded_dies_with_the_process_and_cancels_what_it_never_started() -> None:
    from connector.delivery.transport.base import DaemonPool

    pool = DaemonPool(3, "t-pool")
    release = threading.Event()
    seen: set[tuple[str, bool]] = set()

    def blocked(i: int) -> int:
        seen.add((threading.current_thread().name, threading.current_thread().daemon))
        release.wait(30)
        return i

    futures = [pool.submit(blocked, i) for i in range(10)]
    end = time.monotonic() + 30
    while len(seen) < 3 and time.monotonic() < end:
        time.sleep(0.01)
    pool.close()  # the 7 calls not started are cancelled; the 3 running ones finish on their own
    release.set()
    assert [f.result(30) for f in futures[:3]] == [0, 1, 2]
    assert all(f.cancelled() for f in futures[3:])
    assert len(seen) == 3 and all(daemon for _, daemon in seen)
    with pytest.raises(RuntimeError):
        pool.submit(blocked, 99)


class Late(Sleeper):
    """Each sleep ends `late` seconds after it should (a machine too busy to run the loop on time)."""

    def __init__(self, now: list[float], late: float) -> None:
        super().__init__(None)
        self.now, self.late = now, late
        self.asked: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        self.now[0] += seconds + self.late


def test_a_coroutine_woken_late_takes_a_fresh_slot_instead_of_bursting() -> None:
    now = [0.0]
    limiter = RateLimiter({"users_track": RateLimit(requests=50, per_seconds=1)}, clock=lambda: now[0])
    reservations: list[float] = []
    reserve = limiter.reserve

    def counted(endpoint: str, n: int = 1, *, max_wait: float | None = None) -> float:
        reservations.append(now[0])
        return reserve(endpoint, n, max_wait=max_wait)

    limiter.reserve = counted  # type: ignore[method-assign]
    limiter.reserve("users_track")  # takes the burst token: the next reservation has to wait
    reservations.clear()
    asyncio.run(Acquirer(limiter, Late(now, late=0.0), clock=lambda: now[0]).acquire("users_track", 10.0))
    assert len(reservations) == 1  # woken on time: one slot
    reservations.clear()
    late = Late(now, late=0.2)
    asyncio.run(Acquirer(limiter, late, clock=lambda: now[0]).acquire("users_track", 10.0))
    assert len(reservations) == 2  # woken 0.2 s after its slot: a second, fresh slot
    assert late.asked[0] > 0 and (len(late.asked) == 1 or late.asked[1] <= late.asked[0])


class Steps:
    """SlotGroups' scheduler in a test: records (delay, key) and fires on demand, on a fake clock."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[tuple[float, Any, int | None]] = []  # (due, fn, key)

    def schedule(self, delay: float, fn: Any, key: int | None) -> None:
        self.timers.append((self.now + max(delay, 0.0), fn, key))

    def run_until(self, t: float) -> None:
        """Advance the clock to `t`, firing every timer due by then in order (each at its own time)."""
        while True:
            due = sorted((d, i) for i, (d, _, _) in enumerate(self.timers) if d <= t)
            if not due:
                break
            d, i = due[0]
            _, fn, key = self.timers.pop(i)
            self.now = max(self.now, d)
            fn(key)
        self.now = t


def test_slot_groups_release_the_items_of_one_step_together_with_one_timer() -> None:
    steps = Steps()
    released: list[tuple[list[str], bool]] = []
    groups: SlotGroups[str] = SlotGroups(lambda items, late: released.append((items, late)),
                                         clock=lambda: steps.now, schedule=steps.schedule)  # fmt: skip
    # slots 1, 4 and 9 ms ahead fall in one 10 ms step; 12 and 19 ms in the next; 0 is due at once
    for name, wait in [("a", 0.001), ("b", 0.004), ("c", 0.009), ("d", 0.012), ("e", 0.019), ("now", 0.0)]:
        groups.add(name, wait)
    assert len(steps.timers) == 3  # one per step (and one for the items due at once), not one per item
    assert len(groups) == 6
    groups.release_now()
    assert released == [(["now"], False)]
    steps.run_until(100.0099)
    assert len(released) == 1  # never before the slot: at the end of its step
    steps.run_until(100.0101)
    assert released[-1] == (["a", "b", "c"], False)
    steps.run_until(100.05)
    assert released[-1] == (["d", "e"], False) and len(released) == 3 and len(groups) == 0


def test_slot_groups_say_when_a_step_came_late_and_release_everything_at_a_stop() -> None:
    steps = Steps()
    released: list[tuple[list[str], bool]] = []
    groups: SlotGroups[str] = SlotGroups(lambda items, late: released.append((items, late)),
                                         clock=lambda: steps.now, schedule=steps.schedule)  # fmt: skip
    groups.add("x", 0.005)
    steps.timers[0] = (steps.timers[0][0] + LATE_S + 0.01, *steps.timers[0][1:])  # the loop was held up
    steps.run_until(101.0)
    assert released == [(["x"], True)]
    groups.add("p", 0.5)
    groups.add("q", 0.03)
    groups.add("r", 0.0)
    groups.release_all()  # a stop: every item now, the earliest step first; the timers find nothing later
    assert released[1:] == [(["r"], False), (["q"], False), (["p"], False)]
    steps.run_until(110.0)
    assert len(released) == 4 and len(groups) == 0

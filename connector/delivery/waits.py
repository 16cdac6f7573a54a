"""Waiting inside a coroutine without holding a thread: stop-aware sleeps and rate-limiter acquisition.

The writer's event loop (sender.py) keeps every request in flight as a coroutine; a backoff or a rate-limit
wait must then not block the loop's thread. `Sleeper.sleep` is asyncio's sleep that ends early once the run
is stopped (as StopToken.sleep does for a thread). `acquire` takes a request's rate-limit slot: the local
limiter reserves it at once and the coroutine sleeps until it is due (rounded up to a GROUP_S step, so
requests leave in small groups); a limiter without `reserve` (the
shared Redis limiter, which talks to Redis and sleeps in acquire()) runs on a few threads of its own.
A coroutine that wakes well after its slot (the machine was busy) takes a fresh slot rather than leave
in a burst with every other late one. `FirstAnswer` holds every attempt but the first until the server has
answered it once, so a refused key costs one request, not one per request in flight.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import weakref
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from connector.delivery.ratelimit import Limiter
from connector.delivery.transport.base import DaemonPool, awaitable
from connector.errors import RunStopped

if TYPE_CHECKING:
    from connector.stop import StopToken

T = TypeVar("T")

# Threads for limiters that block in acquire(): each holds one reservation while it waits for its slot, so
# a few keep the rate whatever the requests in flight (slots are granted in order, 1 ms apart at 1,000/s).
LIMITER_THREADS = 8
# A coroutine woken this much later than its rate-limit slot takes a new slot (see Acquirer.acquire).
LATE_S = 0.05
# Rate-limit slots are slept until the next multiple of this (on the acquirer's clock): at 1,000 requests/s
# the ten requests whose slots fall in one 10 ms step leave together, so the event loop, the pipe threads
# and the HTTP child wake once for ten instead of once each (each wake-up costs every one of them CPU).
# Never earlier than the limiter allows: any window holds at most rate x GROUP_S more requests than the
# bucket's own bound (10 of the 30 that SAFETY leaves under a 3,000-per-3-s limit).
GROUP_S = 0.01


class Sleeper:
    """asyncio sleeps on any loop that end early once `stop` is requested (no stop: plain sleeps)."""

    def __init__(self, stop: StopToken | None) -> None:
        self._stop = stop
        self._lock = threading.Lock()
        # per loop (weakly: a loop that is gone takes its set with it)
        self._waiting: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[asyncio.Future[None]]] = (
            weakref.WeakKeyDictionary()
        )
        if stop is not None:
            stop.on_stop(self._wake_all)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._stop is None:
            await asyncio.sleep(seconds)
            return
        if self._stop.stopping:
            return
        loop = asyncio.get_running_loop()
        with self._lock:
            waiting = self._waiting.setdefault(loop, set())
        done: asyncio.Future[None] = loop.create_future()
        waiting.add(done)  # only this loop's thread touches its set
        timer = loop.call_later(seconds, _resolve, done)
        try:
            if not self._stop.stopping:  # a stop between the check above and the add: no wake-up came
                await done
        finally:
            timer.cancel()
            waiting.discard(done)

    def _wake_all(self) -> None:
        """The stop was requested (any thread): end every sleep, on every loop."""
        with self._lock:
            loops = list(self._waiting.items())
        for loop, waiting in loops:
            try:
                loop.call_soon_threadsafe(_resolve_all, waiting)
            except RuntimeError:
                pass  # that loop is closed: nothing sleeps on it


def _resolve(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


def _resolve_all(waiting: set[asyncio.Future[None]]) -> None:
    for done in list(waiting):
        _resolve(done)


class Acquirer:
    """Rate-limit slots for coroutines: `await acquire(endpoint, max_wait)` as Limiter.acquire would block."""

    def __init__(self, limiter: Limiter, sleeper: Sleeper, clock: Callable[[], float] = time.monotonic) -> None:
        self._limiter = limiter
        self._sleeper = sleeper
        self._clock = clock
        self._reserve = getattr(limiter, "reserve", None)
        self._pool: DaemonPool | None = None
        self._lock = threading.Lock()

    @property
    def reserves(self) -> bool:
        """Whether the limiter reserves slots without blocking (`reserve`)."""
        return self._reserve is not None

    def reserve(self, endpoint: str, max_wait: float) -> float:
        """Reserve a slot at once: the seconds until it is due (the limiter must reserve: `reserves`).

        Raises:
            LimitBeyondWait: as the limiter does.
        """
        assert self._reserve is not None
        wait: float = self._reserve(endpoint, max_wait=max_wait)
        return wait

    async def acquire(self, endpoint: str, max_wait: float) -> None:
        """Raises LimitBeyondWait as the limiter does."""
        if self._reserve is not None:
            wait = self.reserve(endpoint, max_wait)
            if wait > 0:
                now = self._clock()
                due = math.ceil((now + wait) / GROUP_S) * GROUP_S
                await self._sleeper.sleep(due - now)
                if self._clock() - due > LATE_S:
                    # Held up past its slot (a busy machine kept this thread or process off a core): the
                    # requests whose slots fell due meanwhile would leave in one burst with it, more than the
                    # server's window allows. Take a fresh slot instead, once (the missed one stays unused).
                    wait = self.reserve(endpoint, max_wait)
                    if wait > 0:
                        await self._sleeper.sleep(wait)
            return
        with self._lock:
            if self._pool is None:
                self._pool = DaemonPool(LIMITER_THREADS, "braze-limiter")
            pool = self._pool
        await awaitable(pool.submit(partial(self._limiter.acquire, endpoint, max_wait=max_wait)))

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


class SlotGroups(Generic[T]):
    """Items waiting for their rate-limit slots, released in GROUP_S steps: one timer per step, not per item.

    `add(item, wait)` (on the loop's thread) files an item whose slot is due in `wait` seconds under the step
    that slot falls in (rounded up on `clock`, as Acquirer.acquire sleeps); when the step comes, `release`
    gets all of that step's items in one call, with `late` True when the step came more than LATE_S after
    its time (a busy machine): those items should take fresh slots rather than leave in one burst with every
    other late one. Items due at once (wait <= 0) are released together at the loop's next turn.
    `release_all()` releases every item at once (the run was stopped: nothing waits for its slot).

    `schedule(delay, fn, key)` runs fn(key) `delay` seconds later (at the next turn for delay <= 0); the
    default uses the running event loop; tests pass their own.
    """

    def __init__(self, release: Callable[[list[T], bool], None], clock: Callable[[], float] = time.monotonic,
                 schedule: Callable[[float, Callable[[int | None], None], int | None], Any] | None = None,
                 step: float = GROUP_S) -> None:  # fmt: skip
        self._release = release
        self._clock = clock
        self._schedule = schedule or _on_running_loop
        self._step = step
        self._due: dict[int | None, list[T]] = {}  # step number (None: at once) -> its items, in order added

    def add(self, item: T, wait: float) -> None:
        if wait <= 0:
            key: int | None = None
            delay = 0.0
        else:
            now = self._clock()
            key = math.ceil((now + wait) / self._step)
            delay = key * self._step - now
        items = self._due.get(key)
        if items is None:
            self._due[key] = [item]
            self._schedule(delay, self._come, key)
        else:
            items.append(item)

    def __len__(self) -> int:
        return sum(map(len, self._due.values()))

    def release_now(self) -> None:
        """Release the items due at once now rather than at the loop's next turn."""
        self._come(None)

    def release_all(self) -> None:
        """Release every item now, the earliest steps first."""
        for key in sorted(self._due, key=lambda k: -1 if k is None else k):
            self._come(key, late=False)

    def _come(self, key: int | None, late: bool | None = None) -> None:
        items = self._due.pop(key, None)
        if not items:
            return  # released already (release_all)
        if late is None:
            late = key is not None and self._clock() - key * self._step > LATE_S
        self._release(items, late)


def _on_running_loop(delay: float, fn: Callable[[int | None], None], key: int | None) -> None:
    loop = asyncio.get_running_loop()
    if delay <= 0:
        loop.call_soon(fn, key)
    else:
        loop.call_later(delay, fn, key)
class FirstAnswer:
    """Until the server has answered one attempt, that attempt is the only one on the wire.

    A refused key (401) is refused on every request: with `write.concurrency` requests sent at once, a revoked
    key used to cost that many 401s before the run ended. The first attempt to come leads; the others wait
    here (holding no thread) until it ends. Any HTTP answer but a 401, or none at all (a connection error:
    the retry policy and the unreachable-destination check deal with it as before), opens the gate for
    good; a 401 closes it for good, and the waiting attempts raise RunStopped (not sent: their rows are
    not_sent, the run ends with the leader's AuthError). A stop wakes them too (the client's stop check then
    says not sent). The cost of an accepted key: the other requests start one round trip later.
    """

    def __init__(self, stop: StopToken | None) -> None:
        self.open = False
        self._refused: str | None = None
        self._leader: object | None = None
        self._lock = threading.Lock()
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        if stop is not None:
            stop.on_stop(self._wake)

    async def wait(self, call: object) -> None:
        """Return when `call` (one post's state, the same object across its retries) may leave.

        Raises:
            RunStopped: the first answer refused the key; `call` was not sent.
        """
        with self._lock:
            if self.open:
                return
            if self._refused is None and self._leader in (None, call):
                self._leader = call
                return
            if self._refused is None:
                loop = asyncio.get_running_loop()
                woken: asyncio.Future[None] = loop.create_future()
                self._waiting.append((loop, woken))
        if self._refused is None:
            await woken
        if self._refused is not None:
            raise RunStopped(f"not sent: {self._refused}")

    def ended(self, call: object, refused: str | None = None) -> None:
        """`call`'s attempt ended: `refused` says why when it was a 401 (the leader's only; others: no-op)."""
        with self._lock:
            if call is not self._leader or self.open or self._refused is not None:
                return
            if refused is None:
                self.open = True
            else:
                self._refused = f"an earlier request's answer refused the key ({refused})"
        self._wake()

    def answered_elsewhere(self) -> None:
        """The key was answered already (the sync probe's answer, with the same key and server): open."""
        with self._lock:
            if self._refused is None:
                self.open = True
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for loop, woken in waiting:
            try:
                loop.call_soon_threadsafe(_resolve, woken)
            except RuntimeError:
                pass  # that loop is closed: nothing waits on it

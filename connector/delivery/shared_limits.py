"""A rate limiter shared by every process of one Braze workspace, through Redis (`write.shared_limits`).

Braze's limits belong to the workspace, not to a process. `SharedRateLimiter` has the local limiter's
interface (`acquire`, `observe`, `penalize`; ratelimit.Limiter), so the client uses either. Design:

- One GCRA per endpoint bucket, keyed by namespace and bucket, in an atomic Lua script that reads Redis
  TIME: only differences computed inside Redis cross to a worker, so the workers' clocks never matter
  (redis_clock.py converts a slot to the local clock, calibrated before the first grant).
  Same shape as the local bucket (ratelimit.py): a burst of BURST_FRACTION of the window and a steady
  rate of SAFETY * limit minus the burst, so every window of any alignment stays under the limit for all
  processes together. GCRA keeps one timestamp per bucket: there are no tokens a worker could hold.
- acquire() reserves the next free slot (one script call) and sleeps until it locally. A slot is
  reserved at most HORIZON_S ahead; a caller further back is told when to ask again, so a killed worker
  leaves at most HORIZON_S of unused slots behind.
- A 429 pause (`penalize`) and an exhausted X-RateLimit-Remaining window (`observe`) are written to
  Redis; every process's next reservation starts after them. A thread that learns of a pause while it
  waits for its slot reserves again.
- Heartbeats: each process adds itself to a sorted set every HEARTBEAT_S; members older than
  WORKER_TTL_S are dropped, so a killed worker stops counting after that.
- Redis lost: the process sends at its share (the steady rate divided by the most workers seen in the
  last WORKER_TTL_S; `expected_workers` if it never reached Redis), without a burst, starting after the
  last shared slot it knew of, and warns. Its heartbeat thread probes Redis every PROBE_S. The first
  process to find Redis again sets a common rejoin time REJOIN_S ahead; the shared budget grants no slot
  before it and no process takes a local slot after it, so the local shares and the shared budget never
  overlap.
"""

from __future__ import annotations

import logging
import math
import os
import random
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Literal

from connector.config import Write
from connector.delivery.ratelimit import MAX_RESET_S, SAFETY, LimitBeyondWait
from connector.delivery.redis_clock import RedisClock
from connector.delivery.shared_budget import (
    ACQUIRE,
    BUDGET,
    HEARTBEAT,
    PAUSE,
    US,
    Shape,
    SharedTarget,
    read_window,
    shapes_of,
)

logger = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
PROBE_S = 0.5
WORKER_TTL_S = 10.0
HORIZON_S = 1.0
REJOIN_S = 2.0
REDIS_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 16
LOW_REMAINING = 0.1  # share X-RateLimit-Remaining once under this fraction of the limit (+ the burst)


class _Known:
    """What this process knows of one bucket (its monotonic clock), and its slots on the local share."""

    def __init__(self) -> None:
        self.last_slot = -math.inf  # the latest shared slot granted here: the queue end as last seen
        self.pause_until = -math.inf  # a 429 pause or an exhausted window, as last learned
        self.pause_epoch = 0  # bumped when a longer pause is learned
        self.tat = -math.inf  # the next free slot on the local share


Mode = Literal["shared", "local", "rejoining"]


class SharedRateLimiter:
    """Per-endpoint budgets shared through Redis by every process of one namespace; thread-safe."""

    def __init__(
        self,
        write: Write,
        target: SharedTarget,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_warning: Callable[[str], None] | None = None,
        heartbeat: bool = True,
    ) -> None:
        """`on_warning` gets the fallback warnings (the run's report); `heartbeat=False` leaves the heartbeat
        thread out (tests call `beat()` themselves)."""
        import redis  # only runs with shared limits need the client
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._redis_errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._shapes = shapes_of(write)
        self._by_bucket = {s.name: s for s in self._shapes.values()}
        self._target = target
        self._clock, self._sleep = clock, sleep
        self._warn = on_warning or logger.warning
        self._lock = threading.Lock()
        self._known = {name: _Known() for name in self._by_bucket}
        self._offset = RedisClock(clock)
        self._mode: Mode = "shared"
        self._rejoin_at = math.inf
        self._divisor = target.expected_workers
        self._seen: list[tuple[float, int]] = []  # (clock, workers counted) within WORKER_TTL_S
        self._reached = False
        self._lost_at: float | None = None
        self.stats: Counter[str] = Counter()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        prefix = f"braze-connector:{{{target.namespace}}}"  # one hash slot per namespace (Redis Cluster)
        self._keys = {
            name: [
                f"{prefix}:{name}:tat",
                f"{prefix}:{name}:pause",
                f"{prefix}:{name}:budget",
                f"{prefix}:rejoin",
            ]
            for name in self._by_bucket
        }
        self._workers_key, self._rejoin_key = f"{prefix}:workers", f"{prefix}:rejoin"
        # A bounded pool that makes a thread wait for a free connection (up to the timeout) rather than fail:
        # 160 sending threads must not look like a lost Redis.
        pool = redis.BlockingConnectionPool.from_url(
            target.url,
            max_connections=MAX_CONNECTIONS,
            timeout=REDIS_TIMEOUT_S,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
            client_name=f"braze-connector-{os.getpid()}",
        )
        self._redis = redis.Redis(connection_pool=pool)
        self._acquire_script = self._redis.register_script(ACQUIRE)
        self._pause_script = self._redis.register_script(PAUSE)
        self._budget_script = self._redis.register_script(BUDGET)
        self._heartbeat_script = self._redis.register_script(HEARTBEAT)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.beat()
        if self._mode == "shared":
            try:  # before the first grant: its slots are converted with the fastest of these round trips
                self._offset.calibrate(self._redis.time)
            except self._redis_errors as e:
                self._lose(e)
        self._thread: threading.Thread | None = None
        if heartbeat:
            self._thread = threading.Thread(
                target=self._heartbeats, name="shared-limits-heartbeat", daemon=True
            )
            self._thread.start()

    # ---- the Limiter interface ---------------------------------------------------------------------
    def acquire(self, endpoint: str, n: int = 1, *, max_wait: float | None = None) -> float:
        """Block until `n` requests may be sent (the shared budget, or this process's share without Redis);
        return the seconds waited.

        Raises:
            LimitBeyondWait: the server paused the bucket (a 429 or a spent window, shared by every worker)
                for longer than `max_wait`, as the local limiter does.
        """
        shape = self._shape(endpoint)
        known = self._known[shape.name]
        start = self._clock()
        while True:
            paused = known.pause_until - self._clock()
            if max_wait is not None and paused > max_wait:
                raise LimitBeyondWait(endpoint, paused)
            if self._mode == "shared":
                got = self._reserve(shape, known, n)
                if got is None:
                    continue  # Redis failed: on the local share now
                ready, epoch = got
                self._sleep_until(ready)
                if known.pause_epoch != epoch and known.pause_until > self._clock():
                    continue  # a pause began while this thread waited for its slot: a new slot after it
                self._count("granted_shared", n)
                return self._clock() - start
            ready, granted = self._local_slot(shape, known, n)
            self._sleep_until(ready)
            if granted:
                return self._clock() - start

    def observe(self, endpoint: str, headers: Mapping[str, str], now_epoch: float | None = None) -> None:
        """Share what X-RateLimit-Remaining/-Reset said once the window runs low (any header case)."""
        window = read_window(headers, now_epoch)
        if window is None:
            return
        remaining, seconds = window
        shape = self._shape(endpoint)
        if remaining <= 0:
            self.penalize(endpoint, seconds)
            return
        if remaining > LOW_REMAINING * shape.requests + shape.capacity or self._mode != "shared":
            return
        self._call(
            self._budget_script, keys=[self._keys[shape.name][2]], args=[int(remaining), int(seconds * US)]
        )

    def penalize(self, endpoint: str, seconds: float) -> None:
        """After a 429 (or an exhausted window): no process of the namespace sends on this bucket for `seconds`."""
        if seconds <= 0:
            return
        seconds = min(seconds, MAX_RESET_S)
        shape = self._shape(endpoint)
        with self._lock:
            self._learn_pause(self._known[shape.name], self._clock() + seconds)
        if self._mode == "shared":
            self._call(self._pause_script, keys=[self._keys[shape.name][1]], args=[int(seconds * US)])

    # ---- life cycle --------------------------------------------------------------------------------
    def beat(self) -> None:
        """One heartbeat: count this worker, learn how many are alive, and find Redis again after a loss."""
        asking = self._mode == "local"
        try:
            count, rejoin_us = self._heartbeat_script(
                keys=[self._workers_key, self._rejoin_key],
                args=[self.worker_id, int(WORKER_TTL_S * US), int(self._rejoin_us()), "1" if asking else "0"],
            )
        except self._redis_errors as e:
            self._lose(e)
            return
        now = self._clock()
        with self._lock:
            self._reached = True
            self._seen = [(t, c) for t, c in self._seen if now - t < WORKER_TTL_S] + [(now, int(count))]
            self.stats["workers_seen_max"] = max(self.stats["workers_seen_max"], int(count))
            if not asking or self._mode != "local":
                return
            self._mode = "rejoining"
            self._rejoin_at = now + max(0, int(rejoin_us)) / US
        logger.info("shared limits: Redis at %s is back; the shared budget resumes in %.1f s",
                    self._target.where, max(0.0, self._rejoin_at - now))  # fmt: skip

    def close(self) -> None:
        """Stop the heartbeats and leave the worker set (best effort)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            self._end_fallback(self._clock())
        if self._mode == "shared":
            try:
                self._redis.zrem(self._workers_key, self.worker_id)
            except self._redis_errors:
                pass
        self._redis.close()

    def summary(self) -> dict[str, Any]:
        """What the run's report says about the shared budget."""
        with self._lock:
            if self._lost_at is not None:
                lost = round(self.stats["fallback_ms"] / 1000 + self._clock() - self._lost_at, 3)
            else:
                lost = round(self.stats["fallback_ms"] / 1000, 3)
            return {
                "namespace": self._target.namespace,
                "redis": self._target.where,
                "worker_id": self.worker_id,
                "mode_at_end": self._mode,
                "workers_seen_max": self.stats["workers_seen_max"],
                "granted_shared": self.stats["granted_shared"],
                "granted_local": self.stats["granted_local"],
                "asked_again": self.stats["asked_again"],
                "fallbacks": self.stats["fallbacks"],
                "fallback_s": lost,
                # how far this process may place a slot from where the budget put it (half the width, ms)
                "clock_uncertainty_ms": (
                    round(self._offset.uncertainty * 500, 3) if math.isfinite(self._offset.uncertainty) else None
                ),
            }

    @property
    def mode(self) -> Mode:
        """Where slots come from: "shared", "local" (Redis lost: its share), "rejoining" (share until the rejoin)."""
        return self._mode

    # ---- internals ---------------------------------------------------------------------------------
    def _shape(self, endpoint: str) -> Shape:
        if endpoint not in self._shapes:
            raise ValueError(f"unknown endpoint {endpoint!r}; use one of {', '.join(sorted(self._shapes))}")
        return self._shapes[endpoint]

    def _count(self, key: str, n: int) -> None:
        with self._lock:
            self.stats[key] += n

    def _sleep_until(self, when: float) -> None:
        wait = when - self._clock()
        if wait > 0:
            self._sleep(wait)

    def _call(self, script: Any, *, keys: list[str], args: list[Any]) -> Any:
        try:
            return script(keys=keys, args=args)
        except self._redis_errors as e:
            self._lose(e)
            return None

    def _reserve(self, shape: Shape, known: _Known, n: int) -> tuple[float, int] | None:
        """A shared slot (local clock) and the pause epoch it was taken under; None when Redis failed."""
        while True:
            sent = self._clock()
            reply = self._call(self._acquire_script, keys=self._keys[shape.name],
                               args=[shape.interval_us, shape.capacity, n, int(HORIZON_S * US)])  # fmt: skip
            if reply is None:
                return None
            granted, wait_us, pause_us, redis_now = (int(x) for x in reply)
            now = self._offset.local(redis_now, sent, self._clock())
            with self._lock:
                if pause_us > 0:
                    self._learn_pause(known, now + pause_us / US)
                if granted:
                    known.last_slot = max(known.last_slot, now + wait_us / US)
                    return now + wait_us / US, known.pause_epoch
                self.stats["asked_again"] += 1
            # Further back than the horizon: ask again when the queue has moved (jitter spreads the askers).
            self._sleep(wait_us / US + random.uniform(0, HORIZON_S / 4))

    def _local_slot(self, shape: Shape, known: _Known, n: int) -> tuple[float, bool]:
        """(when, granted): a slot on this process's share, or (rejoin time, False) to go back to Redis."""
        with self._lock:
            now = self._clock()
            if self._mode == "shared":
                return now, False
            if self._mode == "rejoining" and now >= self._rejoin_at:
                self._end_fallback(now)
                return now, False
            slot = max(now, known.tat, known.pause_until)
            interval = self._local_interval(shape)
            if slot >= self._rejoin_at - interval:
                return self._rejoin_at, False  # the last local slot is one interval before the shared budget resumes
            known.tat = slot + n * interval
            self.stats["granted_local"] += n
            return slot, True

    def _local_interval(self, shape: Shape) -> float:
        """Seconds between this process's slots on its local share: the local bucket's formula (ratelimit.py)
        for the limit divided by the workers, with a burst of one."""
        return shape.per_seconds / max(SAFETY * shape.requests / self._divisor - 1.0, 0.5)

    def _rejoin_us(self) -> float:
        """The common rejoin time, from now: REJOIN_S for every process to hear of it, plus one local interval
        (the gap between the last local slots and the first shared one)."""
        return (REJOIN_S + max(self._local_interval(s) for s in self._by_bucket.values())) * US

    def _learn_pause(self, known: _Known, until: float) -> None:
        if until > known.pause_until + 0.001:
            known.pause_until = until
            known.pause_epoch += 1

    def _workers(self, now: float) -> int | None:
        recent = [c for t, c in self._seen if now - t < WORKER_TTL_S]
        return max(recent) if recent else None

    def _lose(self, err: BaseException) -> None:
        """Redis failed: from now on this process sends at its share, after every shared slot it knew of."""
        with self._lock:
            if self._mode == "local":
                return
            now = self._clock()
            self._divisor = self._workers(now) or self._target.expected_workers
            for name, known in self._known.items():
                # Two of its own intervals after the last shared slot it knew of: the other processes' last
                # slots (at most a few intervals later) and everyone's first local slot fit under the limit.
                known.tat = max(known.tat, known.last_slot + 2 * self._local_interval(self._by_bucket[name]))
            if self._mode == "shared":
                self._lost_at = now
                self.stats["fallbacks"] += 1
            self._mode, self._rejoin_at = "local", math.inf
            counted = (
                f"workers seen in the last {WORKER_TTL_S:.0f} s" if self._reached else "expected_workers"
            )
        self._warn(
            f"shared limits: Redis at {self._target.where} is unreachable ({type(err).__name__}: {err}); this "
            f"process sends at 1/{self._divisor} of each limit ({counted}) until Redis is back"
        )
        self._wake.set()

    def _end_fallback(self, now: float) -> None:
        """Back on the shared budget (the caller holds the lock)."""
        if self._mode == "shared":
            return
        if self._lost_at is not None:
            self.stats["fallback_ms"] += int((now - self._lost_at) * 1000)
            self._lost_at = None
        if self._mode == "rejoining":
            self._mode, self._rejoin_at = "shared", math.inf
            logger.info("shared limits: back on the shared budget at %s", self._target.where)

    def _heartbeats(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(HEARTBEAT_S if self._mode == "shared" else PROBE_S)
            self._wake.clear()
            if not self._stop.is_set():
                self.beat()

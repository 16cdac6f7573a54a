"""Client-side rate limiting: smoothed token buckets per endpoint that learn from Braze's X-RateLimit-* headers.

Design (why the numbers are what they are):

- Braze counts requests in fixed windows (3,000 per 3 s on /users/track). A token bucket with capacity C
  and refill rate r admits at most C + r*T requests in ANY interval of length T, so choosing
  r = (SAFETY * limit - C) / window keeps every window, fixed or sliding, under the limit.
- Capacity is small (BURST_FRACTION of the window's allowance, at least 1): /users/track gets a burst of
  60 requests instead of 3,000, so a run starts at full speed but never fires the whole window in the
  first millisecond and then stalls. With SAFETY = 0.99 the steady rate is 97 % of Braze's limit.
- Acquisition reserves tokens under a lock (tokens may go negative = a queue of reservations) and then
  sleeps outside it through the injected `sleep`, so threads are served in arrival order and tests use a
  fake clock.
- `observe()` keeps a per-window budget from X-RateLimit-Remaining; local acquisitions decrement it, and
  when it runs out the bucket pauses until the server's window resets (slowing down BEFORE a 429).
  `penalize()` pauses every worker sharing the bucket after a 429.
- No herd after a pause: once the server has paused a bucket (a 429, or its window spent), the bucket
  takes the server's own limit (X-RateLimit-Limit per window, the window being the longest wait to a reset
  seen) when it is lower than the configured one, with a burst of BURST_FRACTION of it (at least 1). The
  workers that waited out the pause then get their tokens one by one at that rate, spread over the window,
  instead of all firing into the next window together (160 workers, a 10/s server: 1,320 429s for 668
  requests before).
- A wait the caller cannot afford: `acquire(max_wait=...)` raises LimitBeyondWait instead of sleeping when
  a server-paused bucket would make it wait longer (an hourly window spent: the run stops and says so).
- The two send endpoints (canvas_trigger_send, live_activity_update) share Braze's 250,000/h bucket, so
  they share one bucket here too (SHARED_BUCKETS) unless the pipeline gives them different limits.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from connector.config import DEFAULT_RATE_LIMITS, RateLimit, Write

logger = logging.getLogger(__name__)

BURST_FRACTION = 0.02
SAFETY = 0.99
EPOCH_THRESHOLD = 1e9
MAX_RESET_S = 3600.0  # Braze's longest window (hourly limits reset on the clock hour)
SHARED_BUCKETS: dict[str, tuple[str, ...]] = {"send": ("canvas_trigger_send", "live_activity_update")}


class LimitBeyondWait(Exception):
    """acquire() would wait `seconds` for a server-paused bucket, more than the caller's `max_wait`."""

    def __init__(self, endpoint: str, seconds: float) -> None:
        super().__init__(f"{endpoint}: the rate limit frees a request in {seconds:.0f} s")
        self.endpoint = endpoint
        self.seconds = seconds


def _pacing(requests: float, per_seconds: float) -> tuple[float, float]:
    """(burst capacity, steady rate) keeping any window of `per_seconds` under `requests` (module doc)."""
    capacity = max(1.0, BURST_FRACTION * requests)
    return capacity, max(SAFETY * requests - capacity, 0.5) / per_seconds


class _Bucket:
    """One token bucket plus the server-reported window budget; callers hold `lock`."""

    def __init__(self, name: str, limit: RateLimit, now: float) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.limit = limit
        self.capacity, self.rate = _pacing(limit.requests, limit.per_seconds)
        self.tokens = self.capacity
        self.last = now  # refill starts here; may lie in the future while paused
        self.budget: float | None = None  # requests the server still allows in its current window
        self.budget_until = 0.0  # monotonic end of that window
        self.server_limit: int | None = None
        self.server_window = 0.0  # the longest wait to a reset seen: a lower bound of the server's window
        self.server_paused = False  # the server has paused this bucket (429 or window spent)

    def learn(self, limit: int | None = None, window: float = 0.0) -> None:
        """Take the server's limit per window, once it has paused this bucket and when it is lower."""
        if limit is not None:
            self.server_limit = limit
        self.server_window = min(max(self.server_window, window), MAX_RESET_S)
        if not (self.server_paused and self.server_limit and self.server_window > 0):
            return
        capacity, rate = _pacing(self.limit.requests, self.limit.per_seconds)
        own_capacity, own_rate = _pacing(self.server_limit, self.server_window)
        if own_rate < rate:
            if own_rate < 0.9 * self.rate:  # said once, not at every small change of the window seen
                logger.info("%s: the server allows %d per %.0f s; pacing at %.2f requests/s", self.name,
                            self.server_limit, self.server_window, own_rate)  # fmt: skip
            capacity, rate = min(capacity, own_capacity), own_rate
        if self.tokens < 0:  # reservations already handed out keep their times at the new rate
            self.tokens *= rate / self.rate
        self.capacity, self.rate = capacity, rate
        self.tokens = min(self.tokens, capacity)

    def refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def pause_until(self, until: float, now: float) -> None:
        """The server says: no token before `until`; reservations queue up after it, at its own rate."""
        self.refill(now)  # reservations already due are spent: only those still ahead delay the new ones
        self.server_paused = True
        self.learn(window=until - now)
        if until > self.last:
            self.tokens = min(self.tokens, 0.0)
            self.last = until


class RateLimiter:
    """Thread-safe token buckets per endpoint name; acquire() before every request, observe() after it."""

    def __init__(
        self,
        limits: Mapping[str, RateLimit] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        *,
        shared: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        """Args:
        limits: per endpoint name; missing endpoints get config.DEFAULT_RATE_LIMITS.
        shared: bucket name -> endpoints sharing it (default SHARED_BUCKETS); endpoints whose limits differ
            get their own buckets anyway.
        """
        self._clock = clock
        self._sleep = sleep
        merged = {**DEFAULT_RATE_LIMITS, **dict(limits or {})}
        now = clock()
        self._buckets: dict[str, _Bucket] = {}
        for bucket_name, members in (SHARED_BUCKETS if shared is None else shared).items():
            present = [m for m in members if m in merged]
            if len(present) > 1 and len({merged[m] for m in present}) == 1:
                bucket = _Bucket(bucket_name, merged[present[0]], now)
                for m in present:
                    self._buckets[m] = bucket
        for endpoint, limit in merged.items():
            if endpoint not in self._buckets:
                self._buckets[endpoint] = _Bucket(endpoint, limit, now)

    @classmethod
    def from_write(cls, write: Write, **kwargs: object) -> RateLimiter:
        """The limiter for a pipeline's `write` section (its rate_limits over Braze's defaults)."""
        limits = {name: write.rate_limit(name) for name in DEFAULT_RATE_LIMITS}
        return cls(limits, **kwargs)  # type: ignore[arg-type]

    def bucket_name(self, endpoint: str) -> str:
        """The bucket an endpoint draws from (shared buckets have their own name, e.g. "send")."""
        return self._bucket(endpoint).name

    def rate(self, endpoint: str) -> float:
        """The steady admission rate (requests/s) of the endpoint's bucket."""
        return self._bucket(endpoint).rate

    def _bucket(self, endpoint: str) -> _Bucket:
        try:
            return self._buckets[endpoint]
        except KeyError:
            raise ValueError(
                f"unknown endpoint {endpoint!r}; use one of {', '.join(sorted(self._buckets))}"
            ) from None

    def acquire(self, endpoint: str, n: int = 1, *, max_wait: float | None = None) -> float:
        """Block (through the injected sleep) until `n` requests may be sent; return the seconds waited.

        Raises:
            LimitBeyondWait: the server has paused the bucket and the wait would exceed `max_wait`
                (nothing is reserved).
        """
        wait = self.reserve(endpoint, n, max_wait=max_wait)
        if wait > 0:
            self._sleep(wait)
            return wait
        return 0.0

    def reserve(self, endpoint: str, n: int = 1, *, max_wait: float | None = None) -> float:
        """Reserve `n` requests without waiting: the seconds the caller must wait before sending them
        (an event loop waits without a thread; acquire() sleeps).

        Raises:
            LimitBeyondWait: as acquire().
        """
        b = self._bucket(endpoint)
        with b.lock:
            now = self._clock()
            if b.budget is not None and now >= b.budget_until:
                b.budget = None
            b.refill(now)
            ready_at = max(now, b.last) + (max(0.0, n - b.tokens) / b.rate)
            # The server's budget counts requests sent in its window: a reservation for later does not spend it.
            if b.budget is not None and ready_at < b.budget_until:
                b.budget -= n
                if b.budget < 0:
                    # The server's window is used up: wait for its reset, then start a fresh window.
                    b.pause_until(b.budget_until, now)
                    b.budget = None
                    ready_at = max(now, b.last) + (max(0.0, n - b.tokens) / b.rate)
            if max_wait is not None and b.server_paused and ready_at - now > max_wait:
                raise LimitBeyondWait(endpoint, ready_at - now)
            b.tokens -= n
        return max(0.0, ready_at - now)

    def observe(self, endpoint: str, headers: Mapping[str, str], now_epoch: float | None = None) -> None:
        """Learn from a response's X-RateLimit-Limit / -Remaining / -Reset headers (any case; blanks ignored)."""
        limit, remaining, reset = rate_headers(headers)
        if remaining is None or reset is None:
            return
        if reset > EPOCH_THRESHOLD:
            seconds = reset - (time.time() if now_epoch is None else now_epoch)
        else:
            seconds = reset
        if seconds <= 0:
            return
        seconds = min(seconds, MAX_RESET_S)  # a garbled far-future reset must not stall the run for good
        b = self._bucket(endpoint)
        with b.lock:
            now = self._clock()
            until = now + seconds
            if limit is not None and limit >= 1 and b.server_limit != int(limit):
                logger.debug("%s: server reports a limit of %d per window", b.name, int(limit))
            b.learn(int(limit) if limit is not None and limit >= 1 else None, seconds)
            # Responses of an older window can arrive late: never let them reopen a budget.
            new_window = until > b.budget_until + 0.5
            if new_window or (b.budget is None and now >= b.budget_until):
                b.budget, b.budget_until = remaining, until
            elif b.budget is not None:
                b.budget = min(b.budget, remaining)
                b.budget_until = max(b.budget_until, until)
            if remaining <= 0:
                b.pause_until(until, now)
                b.budget = None
                logger.info("%s: server window exhausted, pausing %.2f s until it resets", b.name, seconds)
            else:
                b.tokens = min(b.tokens, remaining)

    def penalize(self, endpoint: str, seconds: float) -> None:
        """After a 429: no worker sharing this endpoint's bucket sends for `seconds`."""
        if seconds <= 0:
            return
        seconds = min(seconds, MAX_RESET_S)  # a garbled far-future reset must not stall the run for good
        b = self._bucket(endpoint)
        with b.lock:
            now = self._clock()
            b.pause_until(now + seconds, now)


def rate_headers(headers: Mapping[str, str]) -> tuple[float | None, float | None, float | None]:
    """X-RateLimit-Limit, -Remaining and -Reset as numbers (any header case; None when absent or blank)."""
    get = headers.get
    limit, remaining, reset = get("x-ratelimit-limit"), get("x-ratelimit-remaining"), get("x-ratelimit-reset")
    if limit is not None and remaining is not None and reset is not None:  # the transports' lower-case names
        return _number(limit), _number(remaining), _number(reset)
    found: dict[str, float | None] = {}
    for key, value in headers.items():
        k = key.lower()
        if k in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
            found[k] = _number(value)
    return found.get("x-ratelimit-limit"), found.get("x-ratelimit-remaining"), found.get("x-ratelimit-reset")


def _number(value: object) -> float | None:
    """A header value as a finite number, or None (empty strings appear on 401 responses)."""
    try:
        x = float(str(value).strip())
    except ValueError:
        return None
    return x if math.isfinite(x) else None


class Limiter(Protocol):
    """What the client needs of a limiter: RateLimiter here, or shared_limits.SharedRateLimiter (Redis)."""

    def acquire(self, endpoint: str, n: int = 1, *, max_wait: float | None = None) -> float: ...

    def observe(self, endpoint: str, headers: Mapping[str, str], now_epoch: float | None = None) -> None: ...

    def penalize(self, endpoint: str, seconds: float) -> None: ...

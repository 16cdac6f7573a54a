"""This process's clock against Redis TIME: converts the shared limiter's slots (Redis time) to local time.

The shared budget's scripts (shared_budget.py) answer in Redis's own microseconds; a worker sleeps on its
own monotonic clock. `RedisClock` keeps bounds on the difference between the two from round trips: Redis
TIME was read somewhere between a call's send and its answer, so every call narrows the bounds to the
fastest round trip seen, and a slot is converted with the middle of the bounds (an error of at most half
their width).

Why `calibrate()` before the first grant: a worker's first calls are its slowest (the interpreter is still
importing, other workers start on the same cores, redis-py loads each script on its first use), and round
trips of 10-70 ms were measured there (bench/shared_limits.py, 2 to 4 pipelines on 2 loaded cores). Each
worker would then place its first slots up to half that away from where the budget put them, and the
workers' errors differ. A few bare TIME calls before the first grant bound the error by the fastest of them.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

US = 1_000_000  # Redis TIME in microseconds
CALIBRATION_CALLS = (3, 10)  # at least, at most
CALIBRATED_S = 0.001  # stop calibrating once the bounds are this narrow


class RedisClock:
    """Bounds on (local clock - Redis clock) from round trips; thread-safe. Bounds that contradict each
    other (a clock stepped) start again from the latest round trip."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.base: int | None = None  # Redis microseconds subtracted before converting (float precision)
        self.lo, self.hi = -math.inf, math.inf
        self._lock = threading.Lock()

    def local(self, redis_us: int, sent: float, answered: float) -> float:
        """The local clock reading matching Redis time `redis_us`, read by a call sent at `sent` and answered
        at `answered` (local clock)."""
        with self._lock:
            if self.base is None:
                self.base = redis_us
            at = (redis_us - self.base) / US
            lo, hi = max(self.lo, sent - at), min(self.hi, answered - at)
            if lo > hi:
                lo, hi = sent - at, answered - at
            self.lo, self.hi = lo, hi
            return at + (lo + hi) / 2

    def calibrate(self, redis_time: Callable[[], tuple[int, int]]) -> None:
        """Narrow the bounds with bare round trips (`redis_time` returns Redis TIME as (s, us)): at least
        CALIBRATION_CALLS[0], more until they are within CALIBRATED_S, at most CALIBRATION_CALLS[1]."""
        least, most = CALIBRATION_CALLS
        for i in range(most):
            if i >= least and self.uncertainty <= CALIBRATED_S:
                return
            sent = self._clock()
            seconds, micros = redis_time()
            self.local(int(seconds) * US + int(micros), sent, self._clock())

    @property
    def uncertainty(self) -> float:
        """Seconds: the width of the bounds (a converted slot is off by at most half of it); inf before any call."""
        with self._lock:
            return self.hi - self.lo

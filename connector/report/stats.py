"""Bounded statistics for a run: the latency histogram."""

from __future__ import annotations

import math
from collections import Counter


class LatencyHistogram:
    """Bounded latency store: 1 ms buckets up to 10 s, then 1 % log buckets; percentiles like numpy's."""

    LINEAR_MAX = 10_000

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.n = 0
        self.max = 0.0

    def add(self, ms: float) -> None:
        ms = max(0.0, float(ms))
        self.counts[self._bucket(ms)] += 1
        self.n += 1
        self.max = max(self.max, ms)

    def _bucket(self, ms: float) -> int:
        if ms < self.LINEAR_MAX:
            return int(ms)
        return self.LINEAR_MAX + int(math.log(ms / self.LINEAR_MAX) / math.log(1.01))

    def _value(self, bucket: int) -> float:
        if bucket < self.LINEAR_MAX:
            return bucket + 0.5
        return float(self.LINEAR_MAX * 1.01 ** (bucket - self.LINEAR_MAX + 0.5))

    def percentile(self, p: float) -> float | None:
        """The p-th percentile (0..100), linear interpolation between ranks as numpy's default."""
        if not self.n:
            return None
        rank = (self.n - 1) * p / 100.0
        lo, hi = math.floor(rank), math.ceil(rank)
        values: dict[int, float] = {}
        seen = 0
        for bucket in sorted(self.counts):
            nxt = seen + self.counts[bucket]
            for r in (lo, hi):
                if seen <= r < nxt:
                    values[r] = min(self._value(bucket), self.max)
            if hi < nxt:
                break
            seen = nxt
        return round(values[lo] + (values[hi] - values[lo]) * (rank - lo), 3)

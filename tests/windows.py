"""Counting timestamps in sliding windows: what rate-limit tests assert, on counted (not timed) instants."""

from __future__ import annotations

from collections.abc import Sequence


def max_in_window(times: Sequence[float], window: float) -> int:
    """The largest number of the sorted `times` inside any half-open window [t, t + window)."""
    best, j = 0, 0
    for i in range(len(times)):
        while times[i] - times[j] >= window:
            j += 1
        best = max(best, i - j + 1)
    return best

"""Retry log lines, aggregated: one line per endpoint every few seconds with counts, the detail at debug.

A closed port used to print one WARNING per attempt (190 lines for 27 requests over 69 s). Now each
attempt is a DEBUG line; the first retry of an endpoint is logged at once, then at most one line per
endpoint every `interval_s` seconds sums up the retries since the last one, by reason, with the longest
wait. `flush()` writes what is left when the client closes. Only 429s: INFO (the limiter adapts);
anything else: WARNING.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger("connector.delivery.client")


@dataclass
class _Window:
    """Retries of one endpoint since its last summary line."""

    reasons: Counter[str] = field(default_factory=Counter)
    max_wait_s: float = 0.0
    since: float = 0.0
    last_line: float | None = None


class RetryDigest:
    """Thread-safe aggregation of retry attempts into periodic per-endpoint summary lines."""

    def __init__(
        self,
        interval_s: float = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger = logger,
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._log = log
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}

    def note(self, endpoint: str, attempt: int, reason: str, wait_s: float) -> None:
        """One failed attempt about to be retried: a DEBUG line now, a summary line when one is due."""
        self._log.debug("%s: attempt %d failed (%s), retrying in %.2f s", endpoint, attempt, reason, wait_s)
        now = self._clock()
        with self._lock:
            w = self._windows.setdefault(endpoint, _Window(since=now))
            if not w.reasons:
                w.since = now
            w.reasons[reason] += 1
            w.max_wait_s = max(w.max_wait_s, wait_s)
            due = w.last_line is None or now - w.last_line >= self.interval_s
            line = self._take(endpoint, w, now) if due else None
        if line is not None:
            self._emit(*line)

    def flush(self) -> None:
        """Write the summary of every endpoint with retries not yet reported."""
        now = self._clock()
        with self._lock:
            lines = [self._take(ep, w, now) for ep, w in self._windows.items() if w.reasons]
        for line in lines:
            self._emit(*line)

    def _take(self, endpoint: str, w: _Window, now: float) -> tuple[int, str, dict[str, object]]:
        total = sum(w.reasons.values())
        span = max(0.0, now - w.since)
        reasons = ", ".join(f"{r} {n}" for r, n in w.reasons.most_common())
        level = logging.INFO if set(w.reasons) <= {"429"} else logging.WARNING
        text = (
            f"{endpoint}: {total} {'retry' if total == 1 else 'retries'} in the last {span:.1f} s ({reasons}); "
            f"longest wait {w.max_wait_s:.2f} s"
        )
        counters: dict[str, object] = {"endpoint": endpoint, "retries": total, "by_reason": dict(w.reasons),
                                       "window_s": round(span, 3), "max_wait_s": round(w.max_wait_s, 3)}  # fmt: skip
        w.reasons.clear()
        w.max_wait_s = 0.0
        w.last_line = now
        return level, text, counters

    def _emit(self, level: int, text: str, counters: dict[str, object]) -> None:
        self._log.log(level, "%s", text, extra={"counters": counters})

"""Server-side rate limits: fixed windows aligned to the clock (Braze's hourly limits reset on the hour).

Each endpoint maps to a bucket; by default the two send endpoints share the 250,000/h bucket. The headers
follow the general Braze docs: X-RateLimit-Reset is the epoch second at which the window ends.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ENDPOINTS = {
    "users_track": "/users/track",
    "users_track_sync": "/users/track/sync",
    "canvas_trigger_send": "/canvas/trigger/send",
    "live_activity_update": "/messages/live_activity/update",
}
PATH_TO_ENDPOINT = {path: name for name, path in ENDPOINTS.items()}

DEFAULT_LIMITS: dict[str, tuple[int, float]] = {
    "users_track": (3000, 3.0),
    "users_track_sync": (500, 60.0),
    "send": (250_000, 3600.0),
}
DEFAULT_BUCKETS = {
    "users_track": "users_track",
    "users_track_sync": "users_track_sync",
    "canvas_trigger_send": "send",
    "live_activity_update": "send",
}


@dataclass
class Decision:
    """The outcome of one admission check, with the headers to send."""

    allowed: bool
    headers: dict[str, str]


class _Window:
    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.start = -1.0
        self.used = 0


def parse_rate_limit(text: str) -> tuple[str, tuple[int, float]]:
    """Parse `ENDPOINT=N/SECONDS` (e.g. `users_track=5/1`); ValueError with a clear message otherwise."""
    name, sep, spec = text.partition("=")
    n, slash, secs = spec.partition("/")
    if not sep or not slash or name not in ENDPOINTS:
        raise ValueError(
            f"--rate-limit {text!r}: expected ENDPOINT=N/SECONDS with ENDPOINT one of {', '.join(ENDPOINTS)}"
        )
    try:
        limit, seconds = int(n), float(secs)
    except ValueError:
        raise ValueError(f"--rate-limit {text!r}: N must be an integer and SECONDS a number") from None
    if limit < 1 or seconds <= 0:
        raise ValueError(f"--rate-limit {text!r}: N and SECONDS must be positive")
    return name, (limit, seconds)


def normalise_limit(endpoint: str, value: Any) -> tuple[int, float]:
    """Accept `(N, SECONDS)`, `"N/SECONDS"` or an object with `.requests`/`.per_seconds` (config.RateLimit)."""
    if isinstance(value, str):
        return parse_rate_limit(f"{endpoint}={value}")[1]
    if hasattr(value, "requests") and hasattr(value, "per_seconds"):
        return int(value.requests), float(value.per_seconds)
    limit, seconds = value
    return int(limit), float(seconds)


class RateLimits:
    """Per-endpoint fixed-window counters. `rate_limits` overrides give that endpoint its own bucket."""

    def __init__(
        self, rate_limits: dict[str, Any] | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        self.bucket_of = dict(DEFAULT_BUCKETS)
        self.windows = {name: _Window(*lim) for name, lim in DEFAULT_LIMITS.items()}
        for endpoint, value in (rate_limits or {}).items():
            if endpoint not in ENDPOINTS:
                known = ", ".join(ENDPOINTS)
                raise ValueError(f"unknown rate-limit endpoint {endpoint!r}; use one of {known}")
            self.bucket_of[endpoint] = endpoint
            self.windows[endpoint] = _Window(*normalise_limit(endpoint, value))

    def admit(self, endpoint: str) -> Decision:
        """Count one request against the endpoint's bucket; say whether it may proceed."""
        w = self.windows[self.bucket_of[endpoint]]
        now = self.clock()
        start = math.floor(now / w.seconds) * w.seconds
        if start != w.start:
            w.start, w.used = start, 0
        reset = start + w.seconds
        if w.used >= w.limit:
            return Decision(False, {"X-Ratelimit-Retry-After": str(max(1, math.ceil(reset - now)))})
        w.used += 1
        return Decision(
            True,
            {
                "X-RateLimit-Limit": str(w.limit),
                "X-RateLimit-Remaining": str(w.limit - w.used),
                "X-RateLimit-Reset": str(math.ceil(reset)),
            },
        )

    def peek(self, endpoint: str) -> dict[str, str]:
        """Headers describing the bucket without counting a request (for 4xx answered before admission)."""
        w = self.windows[self.bucket_of[endpoint]]
        now = self.clock()
        start = math.floor(now / w.seconds) * w.seconds
        used = w.used if start == w.start else 0
        return {
            "X-RateLimit-Limit": str(w.limit),
            "X-RateLimit-Remaining": str(max(0, w.limit - used)),
            "X-RateLimit-Reset": str(math.ceil(start + w.seconds)),
        }

"""Server-side rate limits: fixed windows aligned to the clock (Braze's hourly limits reset on the hour).

Each endpoint maps to a bucket; by default the two send endpoints share the 250,000/h bucket, and
/users/delete has its own 20,000/min. Broadcast
canvas triggers are counted apart (braze-api.md §7.4): 250/min across all audiences and 10/min per unique
audience (Canvas id + `audience` object), whichever is hit first. The headers follow the general Braze
docs: X-RateLimit-Reset is the epoch second at which the window ends.
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
    "users_delete": "/users/delete",
}
PATH_TO_ENDPOINT = {path: name for name, path in ENDPOINTS.items()}
BROADCAST_LIMITS = ("broadcast", "broadcast_audience")
LIMIT_NAMES = (*ENDPOINTS, *BROADCAST_LIMITS)

DEFAULT_LIMITS: dict[str, tuple[int, float]] = {
    "users_track": (3000, 3.0),
    "users_track_sync": (500, 60.0),
    "send": (250_000, 3600.0),
    "broadcast": (250, 60.0),
    "broadcast_audience": (10, 60.0),
    # /users/delete shares 20,000/min with /users/alias/new, /users/identify, /users/merge and
    # /users/alias/update (Braze's api_limits page); the emulator serves only /users/delete of them.
    "users_delete": (20_000, 60.0),
}
DEFAULT_BUCKETS = {
    "users_track": "users_track",
    "users_track_sync": "users_track_sync",
    "canvas_trigger_send": "send",
    "live_activity_update": "send",
    "users_delete": "users_delete",
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

    def roll(self, now: float) -> float:
        """Start a new window if the clock has left the current one; return when the window ends."""
        start = math.floor(now / self.seconds) * self.seconds
        if start != self.start:
            self.start, self.used = start, 0
        return start + self.seconds

    def headers(self, reset: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.limit - self.used),
            "X-RateLimit-Reset": str(math.ceil(reset)),
        }


def _refuse(reset: float, now: float) -> Decision:
    return Decision(False, {"X-Ratelimit-Retry-After": str(max(1, math.ceil(reset - now)))})


def parse_rate_limit(text: str) -> tuple[str, tuple[int, float]]:
    """Parse `ENDPOINT=N/SECONDS` (e.g. `users_track=5/1`); ValueError with a clear message otherwise."""
    name, sep, spec = text.partition("=")
    n, slash, secs = spec.partition("/")
    if not sep or not slash or name not in LIMIT_NAMES:
        raise ValueError(
            f"--rate-limit {text!r}: expected ENDPOINT=N/SECONDS with ENDPOINT one of {', '.join(LIMIT_NAMES)}"
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
    """Per-endpoint fixed-window counters. `rate_limits` overrides give that endpoint its own bucket.

    `broadcast` and `broadcast_audience` override the two broadcast limits (the second one per audience).
    """

    def __init__(
        self, rate_limits: dict[str, Any] | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        self.bucket_of = dict(DEFAULT_BUCKETS)
        self.windows = {name: _Window(*lim) for name, lim in DEFAULT_LIMITS.items()}
        self.audience_limit = DEFAULT_LIMITS["broadcast_audience"]
        self.audiences: dict[str, _Window] = {}
        for endpoint, value in (rate_limits or {}).items():
            if endpoint not in LIMIT_NAMES:
                known = ", ".join(LIMIT_NAMES)
                raise ValueError(f"unknown rate-limit endpoint {endpoint!r}; use one of {known}")
            limit = normalise_limit(endpoint, value)
            if endpoint == "broadcast_audience":
                self.audience_limit = limit
            elif endpoint == "broadcast":
                self.windows[endpoint] = _Window(*limit)
            else:
                self.bucket_of[endpoint] = endpoint
                self.windows[endpoint] = _Window(*limit)

    def admit(self, endpoint: str) -> Decision:
        """Count one request against the endpoint's bucket; say whether it may proceed."""
        w = self.windows[self.bucket_of[endpoint]]
        now = self.clock()
        reset = w.roll(now)
        if w.used >= w.limit:
            return _refuse(reset, now)
        w.used += 1
        return Decision(True, w.headers(reset))

    def admit_broadcast(self, audience: str) -> Decision:
        """Count one broadcast call against the shared broadcast window and its audience's window.

        Refused (nothing counted) when either is full; the headers describe the window with less room.
        """
        now = self.clock()
        shared = self.windows["broadcast"]
        own = self.audiences.get(audience)
        if own is None:
            if len(self.audiences) >= 10_000:
                self._forget_idle_audiences(now)
            own = self.audiences[audience] = _Window(*self.audience_limit)
        resets = [(w, w.roll(now)) for w in (own, shared)]
        full = [reset for w, reset in resets if w.used >= w.limit]
        if full:
            return _refuse(max(full), now)
        for w, _ in resets:
            w.used += 1
        w, reset = min(resets, key=lambda pair: pair[0].limit - pair[0].used)
        return Decision(True, w.headers(reset))

    def _forget_idle_audiences(self, now: float) -> None:
        self.audiences = {k: w for k, w in self.audiences.items() if w.start + w.seconds > now}

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

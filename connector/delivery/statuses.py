"""Braze's answers read: the status-to-action table, the server's wait headers, bodies and retry reasons.

Pure functions of an answer, shared by the client's two drivers (client.py: threads and coroutines).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson

from connector.delivery.ratelimit import EPOCH_THRESHOLD
from connector.errors import AmbiguousApiError, ApiError, RateLimitedError

Action = Literal["delivered", "permanent", "auth", "rate_limited", "transient"]


def action_for(status: int) -> Action:
    """The status-to-action table: what a response status means for the caller."""
    if 200 <= status < 300:
        return "delivered"
    if status == 401:
        return "auth"
    if status == 429:
        return "rate_limited"
    if status == 408 or status >= 500:
        return "transient"
    return "permanent"  # 400, 403, 404, 413 and any other 3xx/4xx: resending unchanged cannot succeed


def retry_after_s(headers: dict[str, str], now_epoch: float | None = None) -> float | None:
    """Seconds to wait after a 429: X-Ratelimit-Retry-After, then Retry-After, then X-RateLimit-Reset."""
    for name in ("x-ratelimit-retry-after", "retry-after"):
        value = header_float(headers.get(name))
        if value is not None:
            return max(0.0, value)
    reset = header_float(headers.get("x-ratelimit-reset"))
    if reset is None:
        return None
    if reset > EPOCH_THRESHOLD:
        return max(0.0, reset - (time.time() if now_epoch is None else now_epoch))
    return max(0.0, reset)


def header_float(value: str | None) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        return float(value)
    except ValueError:
        return None


def parse_body(content: bytes) -> Any:
    if not content:
        return None
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def message_of(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or "").strip()[:300]
    return str(body or "").strip()[:300]


def retry_reason(exc: BaseException | None) -> str:
    if isinstance(exc, AmbiguousApiError):
        return "ambiguous"
    if isinstance(exc, RateLimitedError):
        return "429"
    if isinstance(exc, ApiError) and exc.status is not None:
        return str(exc.status)
    return "connection" if exc is not None else "unknown"


def duration_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

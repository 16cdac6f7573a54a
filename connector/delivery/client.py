"""The Braze HTTP client: one status-to-action table and one tenacity retry policy over a transport.

The only module importing tenacity; the HTTP itself is in transport.py (requests or aiohttp). `post()` acquires the rate limiter before every attempt,
feeds every response's headers back to it, and retries transient failures (408, 5xx, 429, timeouts,
dropped connections) with exponential backoff and jitter, honouring the server's wait headers on 429.
The API key never appears in a log line or exception message.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import tenacity

from connector.config import Pipeline, Write
from connector.delivery.batching import ENDPOINT_PATHS
from connector.delivery.ratelimit import EPOCH_THRESHOLD, Limiter, RateLimiter
from connector.delivery.transport import NotSent, SentLost, make_transport
from connector.errors import (
    AmbiguousApiError,
    ApiError,
    AuthError,
    ConfigError,
    PermanentApiError,
    RateLimitedError,
    TransientApiError,
)
from connector.version import __version__

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A delivered (2xx) response.

    `headers` has lower-case names; `attempts` counts every try (1 = no retry); `elapsed_ms` is the wall
    time of the whole post() including limiter waits and backoff; `rate_limited` counts the 429s seen;
    `http_ms` is the round trip of the last attempt alone (what the server took, as the report shows it).
    """

    status: int
    body: Any
    headers: dict[str, str]
    attempts: int
    elapsed_ms: float
    rate_limited: int = 0
    http_ms: float = 0.0


@dataclass(slots=True)
class _Call:
    """State of one post() across its attempts (tenacity passes it to the stop/retry/wait callbacks)."""

    endpoint: str
    url: str
    body: bytes
    idempotent: bool
    start: float
    attempts: int = 0
    rate_limited: int = 0
    http_ms: float = 0.0
    maybe_applied: bool = False  # an attempt's connection dropped after sending


class BrazeClient:
    """Posts request bodies to a Braze REST endpoint; thread-safe for concurrent post() calls."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        write: Write,
        limiter: Limiter,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_retry: Callable[[str, str], None] | None = None,
        seed: int | None = None,
        transport: Literal["requests", "aiohttp", "aiohttp-process"] | None = None,
    ) -> None:
        """`transport` overrides write.transport; `auto` there means requests here (the pipeline picks
        aiohttp for bulk runs)."""
        self._base = check_base_url(base_url)
        self._key = api_key
        self._write = write
        self._limiter = limiter
        self._sleep = sleep
        self._clock = clock
        self._on_retry = on_retry
        self._random = random.Random(seed)
        headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"braze-connector/{__version__}",
        }
        kind = transport or write.transport
        if kind == "auto":
            kind = "requests"
        self.transport = kind
        self._transport = make_transport(
            kind, self._base, headers, concurrency=write.workers("bulk"), timeout_s=write.timeout_s
        )
        retry = write.retry
        self._retrying = tenacity.Retrying(
            stop=self._should_stop,
            wait=self._wait_s,
            retry=self._should_retry,
            sleep=sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        self._max_attempts = retry.max_attempts
        self._max_elapsed_s = retry.max_elapsed_s

    def close(self) -> None:
        """Close the pooled connections."""
        self._transport.close()

    def __enter__(self) -> BrazeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def post(self, endpoint: str, body: bytes, *, idempotent: bool) -> ApiResponse:
        """POST `body` to the endpoint (a name from ENDPOINT_PATHS), retrying what is safe to retry.

        Raises:
            AuthError: 401 (never retried).
            PermanentApiError: 400/403/404/413 (with .status and .body).
            AmbiguousApiError: the connection dropped after sending and the payload may not be resent.
            TransientApiError / RateLimitedError: still failing after the retry policy's caps.
        """
        try:
            path = ENDPOINT_PATHS[endpoint]
        except KeyError:
            raise ValueError(
                f"unknown endpoint {endpoint!r}; use one of {', '.join(ENDPOINT_PATHS)}"
            ) from None
        call = _Call(endpoint, self._base + path, body, idempotent, self._clock())
        try:
            response: ApiResponse = self._retrying(self._attempt, call)
        except TransientApiError as e:
            if call.maybe_applied and not call.idempotent and not isinstance(e, AmbiguousApiError):
                # A later attempt failed plainly, but an earlier one may have been applied: the rows'
                # outcome is unknown, and a retry run must not resend them without being told to.
                raise AmbiguousApiError(
                    f"{e}; an earlier attempt's connection dropped after the request was sent, so Braze may "
                    "have applied it",
                    status=e.status,
                    body=e.body,
                ) from None
            raise
        return response

    # ------------------------------------------------------------------ one attempt

    def _attempt(self, call: _Call) -> ApiResponse:
        self._limiter.acquire(call.endpoint)
        call.attempts += 1
        sent = self._clock()
        try:
            resp = self._transport.send(call.url, call.body)
        except NotSent as exc:
            raise TransientApiError(
                self._scrub(f"{call.endpoint}: cannot connect to {self._base} ({exc})")
            ) from None
        except SentLost as exc:
            call.maybe_applied = True
            raise AmbiguousApiError(
                self._scrub(
                    f"{call.endpoint}: the connection failed after the request was sent ({exc}); "
                    "Braze may or may not have applied it"
                )
            ) from None
        call.http_ms = (self._clock() - sent) * 1000
        headers = resp.headers
        self._limiter.observe(call.endpoint, headers)
        status = resp.status
        action = action_for(status)
        if action == "delivered":
            return ApiResponse(
                status,
                _parse(resp.content),
                headers,
                call.attempts,
                (self._clock() - call.start) * 1000,
                call.rate_limited,
                call.http_ms,
            )
        body = _parse(resp.content)
        if body is None and resp.content:
            body = resp.content[:2000].decode("utf-8", "replace")
        body = self._scrub_body(body)  # some servers echo the key they refused
        text = self._scrub(f"{call.endpoint}: HTTP {status} {_message(body)}".rstrip())
        if action == "auth":
            raise AuthError(
                f"{text}: the API key is missing, wrong, lacks permission or belongs to another Braze instance "
                "(check the key's environment variable and the REST endpoint)",
                status=status,
                body=body,
            )
        if action == "permanent":
            raise PermanentApiError(text, status=status, body=body)
        if action == "rate_limited":
            call.rate_limited += 1
            wait = retry_after_s(headers)
            if wait is not None:
                self._limiter.penalize(call.endpoint, wait)
            raise RateLimitedError(text, retry_after=wait, status=status, body=body)
        raise TransientApiError(text, status=status, body=body)

    # ------------------------------------------------------------------ the retry policy

    def _should_retry(self, state: tenacity.RetryCallState) -> bool:
        call: _Call = state.args[0]
        exc = state.outcome.exception() if state.outcome else None
        if not isinstance(exc, TransientApiError):
            return False
        if isinstance(exc, AmbiguousApiError) and self._write.on_ambiguous == "fail":
            return call.idempotent  # at-most-once: resend only what Braze may safely apply twice
        return True

    def _should_stop(self, state: tenacity.RetryCallState) -> bool:
        call: _Call = state.args[0]
        if state.attempt_number >= self._max_attempts:
            return True
        upcoming = state.upcoming_sleep or 0.0
        return self._clock() - call.start + upcoming > self._max_elapsed_s

    def _wait_s(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            # The server said when; a little jitter spreads the workers that all got the same answer.
            return float(exc.retry_after) + self._random.uniform(0, 0.1)
        retry = self._write.retry
        base = min(retry.max_backoff_s, retry.initial_backoff_s * 2.0 ** (state.attempt_number - 1))
        return base / 2 + self._random.uniform(0, base / 2)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        call: _Call = state.args[0]
        exc = state.outcome.exception() if state.outcome else None
        reason = _reason(exc)
        wait = state.upcoming_sleep or 0.0
        # 429s are routine under load (the limiter adapts): INFO; other retries: WARNING.
        level = logging.INFO if reason == "429" else logging.WARNING
        msg = "%s: attempt %d failed (%s), retrying in %.2f s"
        logger.log(level, msg, call.endpoint, state.attempt_number, reason, wait)
        if self._on_retry is not None:
            self._on_retry(call.endpoint, reason)

    def _scrub_body(self, body: Any) -> Any:
        if not self._key:
            return body
        if isinstance(body, str):
            return self._scrub(body)
        if isinstance(body, dict):
            return {k: self._scrub_body(v) for k, v in body.items()}
        if isinstance(body, list):
            return [self._scrub_body(v) for v in body]
        return body

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


def check_base_url(base_url: str) -> str:
    """The base URL without its trailing slash; plain HTTP only to loopback (the key travels in a header).

    Raises:
        ConfigError: not an http(s) URL, or http:// to a host that is not loopback.
    """
    parts = urllib.parse.urlsplit(base_url.strip())
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(
            f"REST endpoint {base_url!r} is not an http(s) URL such as https://rest.iad-01.braze.com"
        )
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigError(
            f"REST endpoint {base_url!r} uses plain http to a non-loopback host; use https:// "
            "(the API key would otherwise travel unencrypted)"
        )
    return base_url.strip().rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def retry_after_s(headers: dict[str, str], now_epoch: float | None = None) -> float | None:
    """Seconds to wait after a 429: X-Ratelimit-Retry-After, then Retry-After, then X-RateLimit-Reset."""
    for name in ("x-ratelimit-retry-after", "retry-after"):
        value = _float(headers.get(name))
        if value is not None:
            return max(0.0, value)
    reset = _float(headers.get("x-ratelimit-reset"))
    if reset is None:
        return None
    if reset > EPOCH_THRESHOLD:
        return max(0.0, reset - (time.time() if now_epoch is None else now_epoch))
    return max(0.0, reset)


def _float(value: str | None) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _parse(content: bytes) -> Any:
    if not content:
        return None
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def _message(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or "").strip()[:300]
    return str(body or "").strip()[:300]


def _reason(exc: BaseException | None) -> str:
    if isinstance(exc, AmbiguousApiError):
        return "ambiguous"
    if isinstance(exc, RateLimitedError):
        return "429"
    if isinstance(exc, ApiError) and exc.status is not None:
        return str(exc.status)
    return "connection" if exc is not None else "unknown"


def client_for(pipeline: Pipeline, url: str, api_key: str, mode: str, limiter: Limiter | None = None) -> BrazeClient:
    """The client of a run: the pipeline's write settings, its rate limits (or `limiter`, e.g. the shared one)
    and the transport for `mode`."""
    transport = pipeline.write.transport
    if transport == "auto":  # bulk needs aiohttp on its own core to fill 1,000 requests/s; sync suits requests
        transport = "requests" if mode == "sync" else "aiohttp-process"
    limiter = limiter or RateLimiter.from_write(pipeline.write)
    return BrazeClient(url, api_key, write=pipeline.write, limiter=limiter, transport=transport)

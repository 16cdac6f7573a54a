"""The Braze HTTP client: one status-to-action table and one tenacity retry policy over a transport.

The only module importing tenacity; the HTTP itself is in transport/ (requests or aiohttp). `post()` (a
thread) and `post_async()` (a coroutine: the writer's event loop) run the same policy; each acquires the
rate limiter before every attempt,
feeds every response's headers back to it, and retries transient failures (408, 5xx, 429, timeouts,
dropped connections) with exponential backoff and jitter, honouring the server's wait headers on 429.
The API key never appears in a log line or exception message.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import tenacity

from connector.config import Pipeline, Write
from connector.delivery.batching import ENDPOINT_PATHS
from connector.delivery.mode import transport_kind
from connector.delivery.ratelimit import LimitBeyondWait, Limiter, RateLimiter
from connector.delivery.retry_log import RetryDigest
from connector.delivery.statuses import (
    action_for,
    duration_text,
    message_of,
    parse_body,
    retry_after_s,
    retry_reason,
)
from connector.delivery.transport import Answer, Gate, NotSent, SentLost, make_transport
from connector.delivery.urls import check_base_url
from connector.delivery.waits import Acquirer, FirstAnswer, Sleeper
from connector.errors import (
    AmbiguousApiError,
    ApiError,
    AuthError,
    PermanentApiError,
    RateLimitedError,
    RateLimitSpent,
    RunStopped,
    TransientApiError,
)
from connector.version import __version__

if TYPE_CHECKING:
    from connector.stop import StopToken

# Endpoints whose 403 refuses one feature, not the run (the sync beta: the run goes on in bulk; a Canvas: its
# rows are rejected; deletes: reported, tried again next run): there, the first answer's 403 opens
# FirstAnswer's gate like any other answer. Elsewhere the writer ends the run on a 403, as on a 401.
PERMISSION_REFUSALS = ("users_track_sync", "canvas_trigger_send", "users_delete")

logger = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A delivered (2xx) response.

    `headers` has lower-case names; `attempts` counts every try (1 = no retry); `elapsed_ms` is the wall
    time of the whole post() including limiter waits and backoff; `rate_limited` counts the 429s seen;
    `http_ms` is the round trip of the last attempt alone (what the server took, as the report shows it);
    `resent_after_drop`: an earlier attempt's connection dropped after sending, so Braze may have applied the
    body twice (the rows are reported as possibly duplicated).
    """

    status: int
    body: Any
    headers: dict[str, str]
    attempts: int
    elapsed_ms: float
    rate_limited: int = 0
    http_ms: float = 0.0
    resent_after_drop: bool = False


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
    gate: Gate | None = None  # the transport calls it before the body leaves (the journal's record on disk)
    maybe_applied: bool = False  # an attempt's connection dropped after sending
    last_error: ApiError | None = None  # the failure of the previous attempt
    resent_after_drop: bool = False  # an attempt went out after one that may have been applied
    sent: float = 0.0  # when the current attempt left (its round trip is timed from here)


# A grouped first attempt's outcome: the transport's Answer, or what it raised (NotSent, SentLost, a gate's error).
Outcome = Answer | BaseException


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
        stop: StopToken | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """`transport` overrides write.transport; `auto` there means requests here (the pipeline picks
        aiohttp for bulk runs). Once `stop` is requested nothing more is sent: no first attempt (RunStopped)
        and no retry (the last failure is raised)."""
        self._base = check_base_url(base_url)
        self._key = api_key
        self._write = write
        self._limiter = limiter
        self._sleep = sleep
        self._clock = clock
        self._wall = wall  # epoch seconds, to say when a spent rate limit resets
        self._on_retry = on_retry
        self._stop = stop
        self._random = random.Random(seed)
        self._retry_log = RetryDigest(clock=clock)
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
        # A transport that starts in the background (the HTTP child) is waited for before the first attempt's
        # clock starts: its start is not the server's latency, nor part of the time spent sending.
        self._wait_ready: Callable[[], None] | None = getattr(self._transport, "wait_ready", None)
        self._sleeper = Sleeper(stop)  # post_async's waits: the backoff and the limiter's
        self._acquirer = Acquirer(limiter, self._sleeper)
        self._first = FirstAnswer(stop)  # post_async: one request on the wire until the key is answered
        self._max_attempts = retry.max_attempts
        self._max_elapsed_s = retry.max_elapsed_s

    @property
    def http_engine(self) -> str:
        """What sent this client's requests, for the report: `curl` or `aiohttp` in the HTTP process (`ready`
        never came: "HTTP process, not started"), or `aiohttp` / `requests` in this process."""
        engine = getattr(self._transport, "engine", None)
        if engine is None:
            return self.transport
        if "this process" in engine:
            return engine
        return f"{engine} (HTTP process)" if engine else "HTTP process, not started"

    @property
    def key_accepted(self) -> bool:
        """The server has answered this key once, not with a 401 (FirstAnswer): requests go at full
        concurrency; until then the coroutine path sends one and holds the others."""
        return self._first.open

    def key_answered(self) -> None:
        """The server answered this key already (the sync probe, same server): post_async need not wait for
        a first answer before sending at full concurrency (FirstAnswer)."""
        self._first.answered_elsewhere()

    def close(self, wait_s: float | None = None) -> None:
        """Close the pooled connections (and log the retries not yet summed up); `wait_s` bounds the wait
        for requests still in flight."""
        self._retry_log.flush()
        self._acquirer.close()
        self._transport.close(wait_s)

    def __enter__(self) -> BrazeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def post(self, endpoint: str, body: bytes, *, idempotent: bool, gate: Gate | None = None) -> ApiResponse:
        """POST `body` to the endpoint (a name from ENDPOINT_PATHS), retrying what is safe to retry.

        `gate` is called before the body first leaves (the run journal's record on disk); what it raises
        (JournalError) comes out of post() unchanged, and nothing was sent.

        Raises:
            AuthError: 401 (never retried).
            PermanentApiError: 400/403/404/413 (with .status and .body).
            AmbiguousApiError: the connection dropped after sending and the payload may not be resent.
            TransientApiError / RateLimitedError: still failing after the retry policy's caps (or when the
                run was stopped before the next attempt).
            RunStopped: the run was stopped before the first attempt was sent.
            RateLimitSpent: the server's rate limit resets beyond write.retry.max_elapsed_s (not retried).
        """
        call = _Call(endpoint, self._url(endpoint), body, idempotent, self._clock(), gate=gate)
        try:
            response: ApiResponse = self._retrying(self._attempt, call)
        except ApiError as e:
            final = self._final(call, e)
            if final is e:
                raise
            raise final from None
        return response

    async def post_async(self, endpoint: str, body: bytes, *, idempotent: bool, gate: Gate | None = None) -> ApiResponse:
        """post() for a coroutine (the writer's event loop): the same retry policy, status table and errors;
        the rate-limit waits, the backoff and the wait for the answer hold no thread."""
        call = _Call(endpoint, self._url(endpoint), body, idempotent, self._clock(), gate=gate)
        return await self.resume_async(call, None)

    # ---- first attempts in groups (the writer's event loop: delivery/volleys.py) ----------------------
    @property
    def groups_first_attempts(self) -> bool:
        """Whether first attempts can be sent in groups (`prepare` .. `conclude`): the limiter reserves slots
        without blocking (not the shared Redis limiter, whose acquire() sleeps)."""
        return self._acquirer.reserves

    def wait_ready(self) -> None:
        """Wait for a transport that starts in the background (the HTTP child), once: before a first attempt
        starts its clock (its start is not the server's latency)."""
        if self._wait_ready is not None:
            wait_ready, self._wait_ready = self._wait_ready, None
            try:
                wait_ready()
            except (NotSent, SentLost):
                pass  # the send raises it again, where an attempt's failures are handled

    def prepare(self, endpoint: str, body: bytes, *, idempotent: bool) -> _Call:
        """The state of one post, for a first attempt sent in a group (then `slot`, `launch`, `conclude`,
        and `resume_async` when that attempt failed)."""
        return _Call(endpoint, self._url(endpoint), body, idempotent, self._clock())

    def slot(self, call: _Call) -> float:
        """Reserve the attempt's rate-limit slot without waiting: the seconds until it is due.

        Raises:
            RateLimitSpent: as post() (the server's window resets beyond the retry budget).
        """
        try:
            return self._acquirer.reserve(call.endpoint, self._max_elapsed_s)
        except LimitBeyondWait as exc:
            raise self._spent(call.endpoint, exc.seconds) from None

    def launch(self, calls: list[tuple[_Call, Any]], gate: Gate | None,
               answered: Callable[[list[tuple[Any, Outcome]]], None]) -> None:  # fmt: skip
        """Send the first attempts of `calls` (each with its caller's token), their slots due, on the running
        loop: `answered([(token, outcome), ...])` is called on the loop with their outcomes, several at once
        where the transport can (one call per batch of answers, not per request); `conclude` turns each into
        the ApiResponse or the error. `gate` runs once before the bodies leave (their journal records on disk)."""
        out: list[tuple[_Call, Any]] = []
        stopped: list[tuple[Any, Outcome]] = []
        for call, token in calls:
            try:
                call.sent = self._leaving(call)
            except RunStopped as exc:
                stopped.append((token, exc))
            else:
                call.gate = gate
                out.append((call, token))
        loop = asyncio.get_running_loop()
        if stopped:
            loop.call_soon(answered, stopped)
        if not out:
            return
        start_many = getattr(self._transport, "start_many", None)
        if start_many is not None and start_many([(c.url, c.body, token) for c, token in out], gate, answered):
            return
        for call, token in out:  # a transport without groups: one task per request
            loop.create_task(self._send_one(call, token, answered))

    async def _send_one(self, call: _Call, token: Any, answered: Callable[[list[tuple[Any, Outcome]]], None]) -> None:
        outcome: Outcome
        try:
            outcome = await self._transport.send_async(call.url, call.body, call.gate)
        except Exception as exc:
            outcome = exc
        answered([(token, outcome)])

    def conclude(self, call: _Call, outcome: Outcome) -> ApiResponse:
        """A launched first attempt's outcome: the delivered response, or the error the attempt raises (which
        `resume_async` then takes through the retry policy)."""
        if isinstance(outcome, NotSent | SentLost):
            raise self._lost(call, outcome)
        if isinstance(outcome, BaseException):
            raise outcome
        return self._answer(call, outcome, call.sent)

    async def resume_async(self, call: _Call, failed: tuple[Any, Any, Any] | None) -> ApiResponse:
        """post_async() after its first attempt failed with `failed` (sys.exc_info()): the retry policy from
        there, the same final errors (None: from the first attempt, as post_async)."""
        try:
            response: ApiResponse = await self._retried_async(call, failed)
        except ApiError as e:
            final = self._final(call, e)
            if final is e:
                raise
            raise final from None
        return response

    async def _retried_async(self, call: _Call, first: Any = None) -> ApiResponse:
        """The retry loop of tenacity.AsyncRetrying, driven by the very Retrying object post() uses (one
        policy): its iter() decides (the callbacks are plain functions, so it never awaits and no other
        coroutine can interleave with it); only the attempt and the backoff are awaited. Cheaper than
        AsyncRetrying, which inspects every callback for being a coroutine on every attempt.

        The first attempt needs no decision (the policy has no `before` hook, and a result is never retried:
        `_should_retry` retries transient errors only), so it runs before the policy is consulted; nearly
        every request ends there, and only a failed one pays for the retry state. `first`: that attempt was
        made already (a grouped one), and failed so."""
        if first is None:
            try:
                return await self._attempt_async(call)
            except BaseException:
                first = sys.exc_info()
        self._retrying.begin()  # its statistics (informational, per thread) must exist for iter()
        state = tenacity.RetryCallState(self._retrying, fn=None, args=(call,), kwargs={})
        state.set_exception(first)  # type: ignore[arg-type]
        while True:
            do = self._retrying.iter(state)
            if isinstance(do, tenacity.DoAttempt):
                try:
                    result = await self._attempt_async(call)
                except BaseException:
                    state.set_exception(sys.exc_info())  # type: ignore[arg-type]
                else:
                    state.set_result(result)
            elif isinstance(do, tenacity.DoSleep):
                state.prepare_for_next_attempt()
                await self._sleeper.sleep(float(do))
            else:
                return do  # type: ignore[no-any-return]

    def _url(self, endpoint: str) -> str:
        try:
            return self._base + ENDPOINT_PATHS[endpoint]
        except KeyError:
            raise ValueError(
                f"unknown endpoint {endpoint!r}; use one of {', '.join(ENDPOINT_PATHS)}"
            ) from None

    def _final(self, call: _Call, e: ApiError) -> ApiError:
        """The error post() raises once the retries are over: `e`, or AmbiguousApiError when an earlier
        attempt may have been applied."""
        e.resent_after_drop = call.resent_after_drop
        if isinstance(e, RateLimitSpent):
            e.maybe_applied = call.maybe_applied and not call.idempotent
            return e
        if not isinstance(e, TransientApiError):
            return e
        if call.maybe_applied and not call.idempotent and not isinstance(e, AmbiguousApiError):
            # A later attempt failed plainly, but an earlier one may have been applied: the rows'
            # outcome is unknown, and a retry run must not resend them without being told to.
            ambiguous = AmbiguousApiError(
                f"{e}; an earlier attempt's connection dropped after the request was sent, so Braze may "
                "have applied it",
                status=e.status,
                body=e.body,
            )
            ambiguous.resent_after_drop = call.resent_after_drop
            return ambiguous
        return e

    # ------------------------------------------------------------------ one attempt

    def _attempt(self, call: _Call) -> ApiResponse:
        self._check_stop(call)
        try:
            self._limiter.acquire(call.endpoint, max_wait=self._max_elapsed_s)
        except LimitBeyondWait as exc:
            raise self._spent(call.endpoint, exc.seconds) from None
        sent = self._leaving(call)
        try:
            resp = self._transport.send(call.url, call.body, call.gate)
        except (NotSent, SentLost) as exc:
            raise self._lost(call, exc) from None
        return self._answer(call, resp, sent)

    async def _attempt_async(self, call: _Call, admitted: bool = False) -> ApiResponse:
        """_attempt() on an event loop: only the waits differ (and the first answer's gate, FirstAnswer)."""
        if not (admitted or self._first.open):
            return await self._first_attempt_async(call)
        self._check_stop(call)
        try:
            await self._acquirer.acquire(call.endpoint, self._max_elapsed_s)
        except LimitBeyondWait as exc:
            raise self._spent(call.endpoint, exc.seconds) from None
        sent = self._leaving(call)
        try:
            resp = await self._transport.send_async(call.url, call.body, call.gate)
        except (NotSent, SentLost) as exc:
            raise self._lost(call, exc) from None
        return self._answer(call, resp, sent)

    async def _first_attempt_async(self, call: _Call) -> ApiResponse:
        """An attempt before the server has answered one: it waits for the first (FirstAnswer), or leads."""
        await self._first.wait(call)
        refused = None
        try:
            return await self._attempt_async(call, True)
        except AuthError as e:
            refused = f"HTTP {e.status}"
            raise
        except PermanentApiError as e:
            if e.status == 403 and call.endpoint not in PERMISSION_REFUSALS:
                refused = "HTTP 403: access denied"  # the key lacks the permission: every request would be
            raise
        finally:
            self._first.ended(call, refused)

    def _leaving(self, call: _Call) -> float:
        """An attempt is about to leave (the limiter let it through): count it; returns when it left."""
        if self._wait_ready is not None:
            self.wait_ready()
        self._check_stop(call)  # the limiter's wait ends early when the run is stopped
        call.attempts += 1
        if call.maybe_applied:
            call.resent_after_drop = True
        return self._clock()

    def _lost(self, call: _Call, exc: NotSent | SentLost) -> ApiError:
        """The error of an attempt that got no HTTP answer."""
        if isinstance(exc, NotSent):
            return TransientApiError(self._scrub(f"{call.endpoint}: cannot connect to {self._base} ({exc})"))
        call.maybe_applied = True
        return AmbiguousApiError(
            self._scrub(
                f"{call.endpoint}: the connection failed after the request was sent ({exc}); "
                "Braze may or may not have applied it"
            )
        )

    def _answer(self, call: _Call, resp: Answer, sent: float) -> ApiResponse:
        """An attempt's HTTP answer: the delivered response, or the error the status table says."""
        call.http_ms = (self._clock() - sent) * 1000
        headers = resp.headers
        self._limiter.observe(call.endpoint, headers)
        status = resp.status
        action = action_for(status)
        if action == "delivered":
            return ApiResponse(
                status,
                self._delivered_body(resp.content),
                headers,
                call.attempts,
                (self._clock() - call.start) * 1000,
                call.rate_limited,
                call.http_ms,
                call.resent_after_drop,
            )
        body = parse_body(resp.content)
        if body is None and resp.content:
            body = self._scrub(resp.content.decode("utf-8", "replace"))[:2000]  # masked before it is cut
        body = self._scrub_body(body)  # some servers echo the key they refused
        text = self._scrub(f"{call.endpoint}: HTTP {status} {message_of(body)}".rstrip())
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
                if wait > self._max_elapsed_s:
                    raise self._spent(call.endpoint, wait, status)
            raise RateLimitedError(text, retry_after=wait, status=status, body=body)
        raise TransientApiError(text, status=status, body=body)

    def _check_stop(self, call: _Call) -> None:
        """No new attempt once the run is stopped: the previous failure stands, or nothing was sent."""
        if self._stop is None or not self._stop.stopping:
            return
        if call.last_error is not None:
            raise call.last_error
        raise RunStopped(f"{call.endpoint}: not sent, the run was {self._stop.reason}")

    def _spent(self, endpoint: str, wait: float, status: int | None = None) -> RateLimitSpent:
        """The error that stops a run whose rate limit resets beyond the retry budget, saying when."""
        resets = time.strftime("%H:%M:%S UTC", time.gmtime(self._wall() + wait))
        return RateLimitSpent(
            f"Braze's rate limit for {ENDPOINT_PATHS[endpoint]} is spent: it resets at {resets}, in "
            f"{duration_text(wait)}, beyond the retry budget (write.retry.max_elapsed_s: {self._max_elapsed_s:g} s); "
            "the rows not sent are listed in failed.csv as not_sent: send them after the reset",
            endpoint=endpoint, wait_s=wait, resets_at=resets, status=status,
        )  # fmt: skip

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
        if state.attempt_number >= self._max_attempts or (self._stop is not None and self._stop.stopping):
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
        if isinstance(exc, ApiError):
            call.last_error = exc
        reason = retry_reason(exc)
        self._retry_log.note(call.endpoint, state.attempt_number, reason, state.upcoming_sleep or 0.0)
        if self._on_retry is not None:
            self._on_retry(call.endpoint, reason)

    def _delivered_body(self, content: bytes) -> Any:
        """A 2xx body, parsed; masked when it echoes the key (its errors[] texts reach the rejects file)."""
        body = parse_body(content)
        if self._key and self._key.encode() in content:
            body = self._scrub_body(body)
        return body

    def _scrub_body(self, body: Any) -> Any:
        if not self._key:
            return body
        if isinstance(body, str):
            return self._scrub(body)
        if isinstance(body, dict):
            return {self._scrub_body(k): self._scrub_body(v) for k, v in body.items()}
        if isinstance(body, list):
            return [self._scrub_body(v) for v in body]
        return body

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


def client_for(pipeline: Pipeline, url: str, api_key: str, mode: str, stop: StopToken | None = None,
               on_retry: Callable[[str, str], None] | None = None, limiter: Limiter | None = None) -> BrazeClient:  # fmt: skip
    """The client of a run: the pipeline's write settings, its rate limits and the transport for `mode`.

    With a stop token, its waits (rate limiter, backoff) end as soon as a stop is requested;
    `on_retry(endpoint, reason)` hears of every retry (the report counts them); `limiter` replaces the
    local one (the shared limiter of `write.shared_limits`).
    """
    transport = transport_kind(pipeline, mode)
    sleep = stop.sleep if stop is not None else time.sleep
    limiter = limiter or RateLimiter.from_write(pipeline.write, sleep=sleep)
    return BrazeClient(url, api_key, write=pipeline.write, limiter=limiter, transport=transport, sleep=sleep,
                       stop=stop, on_retry=on_retry)  # fmt: skip

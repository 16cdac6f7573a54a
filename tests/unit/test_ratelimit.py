"""RateLimiter: token buckets with a fake clock (no real waits), header learning, penalties, threads."""

from __future__ import annotations

import threading

import pytest
from windows import max_in_window

from connector.config import DEFAULT_RATE_LIMITS, RateLimit, Write
from connector.delivery.ratelimit import BURST_FRACTION, MAX_RESET_S, RateLimiter


class FakeClock:
    """A monotonic clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def make(limits: dict[str, RateLimit] | None = None) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(limits, clock=clock, sleep=clock.sleep), clock



@pytest.mark.parametrize("endpoint", ["users_track", "users_track_sync"])
def test_default_rate_never_exceeded_in_any_window_and_nearly_filled(endpoint: str) -> None:
    limiter, clock = make()
    limit = DEFAULT_RATE_LIMITS[endpoint]
    n = limit.requests * 5
    times = []
    for _ in range(n):
        limiter.acquire(endpoint)
        times.append(clock())
    assert max_in_window(times, limit.per_seconds) <= limit.requests
    achieved = n / (times[-1] + 1e-9) * limit.per_seconds / limit.requests
    assert 0.95 <= achieved <= 1.0


def test_start_is_smoothed_not_a_full_window_burst() -> None:
    limiter, clock = make()
    granted_at_zero = 0
    for _ in range(500):
        limiter.acquire("users_track")
        if clock() == 0.0:
            granted_at_zero += 1
    assert granted_at_zero == int(BURST_FRACTION * 3000)
    assert clock() < 0.5  # 500 requests at ~970/s, not a stall until the 3 s window ends


def test_custom_tiny_limit_respected() -> None:
    limiter, clock = make({"users_track": RateLimit(requests=5, per_seconds=1)})
    times = []
    for _ in range(40):
        limiter.acquire("users_track")
        times.append(clock())
    assert max_in_window(times, 1.0) <= 5
    assert times[-1] > 39 / 5  # never faster than the limit


def test_observe_remaining_zero_epoch_reset_pauses_until_reset() -> None:
    limiter, clock = make()
    epoch = 1_800_000_000.0
    limiter.observe(
        "users_track",
        {"X-RateLimit-Limit": "3000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(epoch + 2)},
        now_epoch=epoch,
    )
    waited = limiter.acquire("users_track")
    assert 2.0 <= waited < 2.1


def test_observe_seconds_form_and_lower_case_names() -> None:
    limiter, clock = make()
    limiter.observe("users_track", {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1.5"})
    assert 1.5 <= limiter.acquire("users_track") < 1.6


def test_observe_ignores_empty_values_as_on_401() -> None:
    limiter, clock = make()
    limiter.observe(
        "users_track", {"X-RateLimit-Limit": "", "X-RateLimit-Remaining": "", "X-RateLimit-Reset": ""}
    )
    assert limiter.acquire("users_track") == 0.0


def test_low_remaining_slows_down_before_a_429() -> None:
    limiter, clock = make()
    limiter.observe("users_track", {"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": "10"})
    waits = [limiter.acquire("users_track") for _ in range(6)]
    assert waits[:5] == [0.0] * 5  # within the budget and the bucket's burst
    assert clock() >= 10.0  # the 6th waited for the server's window to reset


def test_late_response_from_old_window_does_not_reopen_budget() -> None:
    limiter, clock = make()
    limiter.observe("users_track", {"X-RateLimit-Remaining": "2", "X-RateLimit-Reset": "10"})
    limiter.acquire("users_track")
    limiter.acquire("users_track")
    limiter.observe("users_track", {"X-RateLimit-Remaining": "50", "X-RateLimit-Reset": "10"})  # stale
    limiter.acquire("users_track")
    assert clock() >= 10.0


def test_penalize_pauses_every_endpoint_sharing_the_bucket() -> None:
    limiter, clock = make()
    assert limiter.bucket_name("canvas_trigger_send") == limiter.bucket_name("live_activity_update") == "send"
    limiter.penalize("canvas_trigger_send", 3.0)
    assert limiter.acquire("users_track") == 0.0
    assert limiter.acquire("live_activity_update") >= 3.0
    assert clock() >= 3.0


def test_send_endpoints_split_when_limits_differ() -> None:
    write = Write(rate_limits={"live_activity_update": RateLimit(requests=10, per_seconds=1)})
    clock = FakeClock()
    limiter = RateLimiter.from_write(write, clock=clock, sleep=clock.sleep)
    assert limiter.bucket_name("live_activity_update") == "live_activity_update"
    assert limiter.bucket_name("canvas_trigger_send") == "canvas_trigger_send"
    assert limiter.rate("live_activity_update") < 10


def test_unknown_endpoint_is_a_clear_error() -> None:
    limiter, _ = make()
    with pytest.raises(ValueError, match="unknown endpoint 'users_merge'"):
        limiter.acquire("users_merge")


def test_thread_safety_with_real_threads_and_tiny_limit() -> None:
    """8 real threads race for 80 tokens; the clock is frozen, so each reservation's send time is exact.

    A token lost or granted twice would put two sends in one slot; counted on the reserved times, not on
    when a (possibly descheduled) thread woke, so a loaded machine cannot fail it."""
    limit = RateLimit(requests=40, per_seconds=0.5)
    limiter = RateLimiter({"users_track": limit}, clock=lambda: 0.0, sleep=lambda s: None)
    sends: list[float] = []
    lock = threading.Lock()
    go = threading.Barrier(8)

    def worker() -> None:
        go.wait()
        for _ in range(10):
            at = limiter.reserve("users_track")
            with lock:
                sends.append(at)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    sends.sort()
    assert len(sends) == 80
    rate = limiter.rate("users_track")
    # The k-th send (after the one-token burst) is reserved no earlier than k / rate: each slot granted once.
    assert all(at >= (k - 1) / rate - 1e-9 for k, at in enumerate(sends, start=1)), sends
    assert sends[-1] <= 79 / rate + 1e-9  # and none skipped: the last is as early as the rate allows
    assert max_in_window(sends, limit.per_seconds) <= limit.requests


def test_garbled_far_future_reset_is_capped() -> None:
    limiter, clock = make()
    limiter.observe(
        "users_track", {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "9999999999"}, now_epoch=1.8e9
    )
    assert limiter.acquire("users_track") <= MAX_RESET_S + 0.01


def test_after_a_429_pause_waiting_workers_resume_spread_at_the_servers_rate() -> None:
    """160 workers against a server allowing 10 per second: all wait out the pause, then reserve at once.

    The limiter has seen the server's limit (X-RateLimit-Limit 10, resets within 1 s); after the 429 it paces
    at that limit, so the reservations spread over the following windows, never more than 10 in a second
    (before, the 60-request burst and the configured 970/s sent them all into the next window together)."""
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=lambda s: None)  # every worker reserves at the same instant
    limiter.observe("users_track", {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "3", "X-RateLimit-Reset": "1"})
    limiter.penalize("users_track", 1.0)  # a 429 with X-Ratelimit-Retry-After: 1
    sends = sorted(limiter.acquire("users_track") for _ in range(160))
    assert sends[0] >= 1.0  # nothing before the server's window resets
    assert max_in_window(sends, 1.0) <= 10
    assert sends[-1] < 1.0 + 160 / 8  # and no slower than needed (8.9 per second)


def test_the_servers_limit_is_taken_only_after_it_paused_the_bucket() -> None:
    limiter, clock = make()
    rate = limiter.rate("users_track")
    limiter.observe("users_track", {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "9", "X-RateLimit-Reset": "1"})
    assert limiter.rate("users_track") == rate  # a lower reported limit alone changes nothing
    limiter.observe("users_track", {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1"})
    assert limiter.rate("users_track") < 10  # its window was spent: pace at its limit
    big, _ = make()
    big.penalize("users_track", 1.0)
    big.observe("users_track", {"X-RateLimit-Limit": "3000", "X-RateLimit-Remaining": "5", "X-RateLimit-Reset": "3"})
    assert big.rate("users_track") == rate  # a server allowing as much as configured: unchanged


def test_a_wait_beyond_max_wait_raises_only_for_a_server_pause() -> None:
    from connector.delivery.ratelimit import LimitBeyondWait

    limiter, clock = make()
    limiter.observe("users_track", {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3000"})
    with pytest.raises(LimitBeyondWait) as err:
        limiter.acquire("users_track", max_wait=300)
    assert err.value.seconds >= 2999 and clock() == 0.0  # raised at once, nothing reserved
    assert limiter.acquire("users_track", max_wait=None) >= 2999  # without a limit it waits, as before
    slow, clock2 = make({"users_track": RateLimit(requests=1, per_seconds=3600)})
    slow.acquire("users_track", max_wait=300)
    assert slow.acquire("users_track", max_wait=300) > 300  # a slow limit of one's own is not the server's


def test_users_delete_has_its_own_bucket_at_brazes_20000_a_minute() -> None:
    limiter = RateLimiter()
    assert limiter.bucket_name("users_delete") == "users_delete"
    assert limiter.rate("users_delete") == pytest.approx(20_000 / 60 * 0.97, rel=0.05)


def test_the_shared_budget_knows_users_delete_too() -> None:
    from connector.delivery.shared_budget import shapes_of

    shape = shapes_of(Write(rate_limits={"users_delete": {"requests": 600, "per_seconds": 60}}))["users_delete"]
    assert (shape.name, shape.requests, shape.per_seconds) == ("users_delete", 600, 60)


def test_reserve_hands_out_the_waits_acquire_would_sleep() -> None:
    """reserve() (the event loop's acquire) reserves in order and returns the wait instead of sleeping."""
    limits = {"users_track": RateLimit(requests=10, per_seconds=1)}
    sleeping, clock = make(limits)
    waits = []
    for _ in range(6):
        sleeping.acquire("users_track")
        waits.append(clock.now)
    reserving, clock2 = make(limits)
    reserved = [reserving.reserve("users_track") for _ in range(6)]
    assert clock2.slept == [] and clock2.now == 0.0  # nothing slept
    assert reserved == pytest.approx(waits)  # the wait of the k-th reservation is when acquire let it go
    assert reserved[0] == 0.0 and all(b > a for a, b in zip(reserved[1:], reserved[2:], strict=False))

"""RedisClock: bounds on the local clock minus Redis's, from round trips (an injected clock; no Redis)."""

from __future__ import annotations

import math

import pytest

from connector.delivery import redis_clock
from connector.delivery.redis_clock import RedisClock


class Fake:
    """A local clock 5 s ahead of a fake Redis; each round trip's answer is read `delays[i]` seconds late."""

    def __init__(self, delays: list[float]) -> None:
        self.now = 100.0  # local seconds
        self.delays = delays
        self.calls = 0

    def clock(self) -> float:
        return self.now

    def redis_time(self) -> tuple[int, int]:
        redis_us = round((self.now - 5.0) * 1_000_000) + 100  # Redis read 0.1 ms into the round trip
        self.now += 0.0002 + self.delays[min(self.calls, len(self.delays) - 1)]
        self.calls += 1
        return redis_us // 1_000_000, redis_us % 1_000_000

    def round_trip(self, rc: RedisClock) -> tuple[float, float]:
        """(converted local time of Redis's reading, the true one)."""
        sent = self.now
        s, us = self.redis_time()
        true = sent + 0.0001
        return rc.local(s * 1_000_000 + us, sent, self.now), true


def test_a_slow_first_round_trip_converts_with_half_its_width() -> None:
    fake = Fake([0.060, 0.0])
    rc = RedisClock(fake.clock)
    assert math.isinf(rc.uncertainty)
    got, true = fake.round_trip(rc)
    assert got - true == pytest.approx(0.030, abs=0.001)  # the middle of a 60 ms round trip
    got, true = fake.round_trip(rc)  # a fast one narrows the bounds
    assert abs(got - true) < 0.0002
    assert rc.uncertainty < 0.0003


def test_calibration_before_the_first_grant_bounds_its_error() -> None:
    fake = Fake([0.060, 0.0])  # the first calibrating call is slow too, the later ones are not
    rc = RedisClock(fake.clock)
    rc.calibrate(fake.redis_time)
    assert fake.calls == redis_clock.CALIBRATION_CALLS[0]  # narrow enough after the minimum
    fake.delays = [0.080]  # the first grant's own round trip is slow: it no longer moves the slot
    got, true = fake.round_trip(rc)
    assert abs(got - true) < 0.0002


def test_calibration_goes_on_while_the_round_trips_stay_slow() -> None:
    fake = Fake([0.020])
    rc = RedisClock(fake.clock)
    rc.calibrate(fake.redis_time)
    assert fake.calls == redis_clock.CALIBRATION_CALLS[1]
    assert rc.uncertainty == pytest.approx(0.0202, abs=0.0005)


def test_contradicting_bounds_start_again() -> None:
    fake = Fake([0.0])
    rc = RedisClock(fake.clock)
    fake.round_trip(rc)
    fake.now += 2.0  # the local clock stepped forward while Redis's did not
    sent = fake.now
    got = rc.local(round((sent - 5.0 - 2.0) * 1_000_000), sent, sent + 0.0002)
    assert got == pytest.approx(sent + 0.0001, abs=0.0002)

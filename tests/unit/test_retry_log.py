"""RetryDigest: retries summed up per endpoint every few seconds; each attempt's detail at debug."""

from __future__ import annotations

import logging

import pytest

from connector.delivery.retry_log import RetryDigest


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def summaries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.INFO]


def test_many_retries_give_a_few_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="connector.delivery.client")
    clock = FakeClock()
    digest = RetryDigest(5.0, clock=clock)
    for i in range(190):  # a closed port: 190 attempts over 69 s
        clock.t = i * 69 / 190
        digest.note("users_track", 1 + i % 7, "connection", 0.5)
    digest.flush()
    lines = summaries(caplog)
    assert 10 <= len(lines) <= 16  # one at once, then one per 5 s (69 s), then the flush
    assert sum(r.counters["retries"] for r in lines) == 190  # type: ignore[attr-defined]
    assert all(r.levelno == logging.WARNING for r in lines)
    assert lines[0].getMessage() == "users_track: 1 retry in the last 0.0 s (connection 1); longest wait 0.50 s"
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == 190  # the detail stays


def test_endpoints_are_summed_apart_and_429s_are_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="connector.delivery.client")
    clock = FakeClock()
    digest = RetryDigest(5.0, clock=clock)
    digest.note("users_track", 1, "429", 1.0)
    digest.note("users_track_sync", 1, "503", 2.0)
    clock.t = 1.0
    digest.note("users_track", 2, "429", 3.0)
    digest.note("users_track", 2, "timeout", 0.5)
    assert len(summaries(caplog)) == 2  # the first retry of each endpoint, at once
    digest.flush()
    last = summaries(caplog)[-1]
    assert last.getMessage() == "users_track: 2 retries in the last 0.0 s (429 1, timeout 1); longest wait 3.00 s"
    assert last.levelno == logging.WARNING
    assert summaries(caplog)[0].levelno == logging.INFO  # only 429s: the limiter adapts
    digest.flush()  # nothing new: no line
    assert len(summaries(caplog)) == 3

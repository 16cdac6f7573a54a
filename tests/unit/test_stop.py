"""StopToken: graceful then immediate, deadlines on an injected clock, callbacks; handle_signals."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from connector.stop import StopToken, handle_signals


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_first_request_is_graceful_second_is_immediate() -> None:
    clock = Clock()
    token = StopToken(clock)
    assert not token.stopping and token.deadline(10) is None and token.remaining(10) is None
    token.request("stopped by SIGTERM", signum=signal.SIGTERM)
    assert token.stopping and not token.immediate
    assert token.reason == "stopped by SIGTERM"
    assert token.deadline(10) == 110.0
    clock.now = 104.0
    assert token.remaining(10) == 6.0
    assert token.exit_code == 4
    token.request("stopped by SIGINT", signum=signal.SIGINT)
    assert token.immediate
    assert token.deadline(10) == 100.0 and token.remaining(10) == 0.0
    assert token.reason == "stopped by SIGTERM"  # the first reason names the stop
    assert token.exit_code == 128 + signal.SIGINT


def test_immediate_without_a_signal_exits_4() -> None:
    token = StopToken()
    token.request(now=True)
    assert token.stopping and token.immediate and token.exit_code == 4


def test_callbacks_run_once_at_the_first_request_or_at_once_when_late() -> None:
    token = StopToken()
    calls: list[str] = []
    token.on_stop(lambda: calls.append("early"))
    token.request()
    token.request()
    token.on_stop(lambda: calls.append("late"))
    assert calls == ["early", "late"]


def test_sleep_returns_early_once_stopped() -> None:
    token = StopToken()
    threading.Timer(0.05, token.request).start()
    t0 = time.monotonic()
    token.sleep(30)
    assert time.monotonic() - t0 < 20  # generous: it returned on the request, not after 30 s


def test_signals_become_requests_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    token = StopToken()
    with handle_signals(token) as installed:
        assert installed
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(500):
            if token.stopping:
                break
            time.sleep(0.01)
        assert token.stopping and not token.immediate
        assert token.reason == "stopped by SIGTERM" and token.signum == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(500):
            if token.immediate:
                break
            time.sleep(0.01)
        assert token.immediate and token.exit_code == 130
        # after the second signal a third one would kill: the default action is back
        assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) == before


def test_no_handlers_outside_the_main_thread() -> None:
    result: list[bool] = []

    def other() -> None:
        with handle_signals(StopToken()) as installed:
            result.append(installed)

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert result == [False]


@pytest.mark.parametrize("grace", [0.0, 10.0])
def test_deadline_is_the_request_time_plus_the_grace(grace: float) -> None:
    clock = Clock()
    token = StopToken(clock)
    token.request()
    assert token.deadline(grace) == 100.0 + grace

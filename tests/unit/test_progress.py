"""Tests for connector.progress: plain log lines, rich display, disabled mode, thread safety."""

from __future__ import annotations

import io
import logging
import re
import threading
import time

import pytest

from connector.progress import Progress


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_line_counts_rate_and_eta() -> None:
    clock = FakeClock()
    progress = Progress(total=1000, terminal=False, clock=clock, interval_s=3600)
    with progress:
        clock.t += 10
        progress.update(read=250, delivered=200, rejected=30, skipped=15, failed=5, requests=4)
        clock.t += 2
        progress.update(requests=6)
        line = progress.line()
    assert line.startswith(
        "progress: read 250/1,000 rows, delivered 200, rejected 30, skipped 15, failed 5, requests 10"
    )
    assert "(3.0/s)" in line  # 6 requests over the last 2 s
    assert progress.eta_s() == pytest.approx(36.0)  # 750 rows left at 250 settled rows per 12 s
    assert line.endswith("ETA 36s")


def test_eta_follows_delivery_not_reading() -> None:
    """Reading far ahead of delivery does not make the ETA zero: it is the settling rate that counts."""
    clock = FakeClock()
    progress = Progress(total=100_000, terminal=False, clock=clock, interval_s=3600)
    with progress:
        clock.t += 10
        progress.update(read=100_000, delivered=1_000)  # every row read, 1,000 delivered in 10 s
        clock.t += 10
        progress.update(delivered=1_000)  # 100 rows/s
        assert progress.eta_s() == pytest.approx(980.0)  # 98,000 rows left at 100 rows/s


def test_follow_reads_counts_from_the_source() -> None:
    counts = {"read": 10, "delivered": 4, "rejected": 1, "skipped": 3, "failed": 0, "requests": 2}
    progress = Progress(total=10, terminal=False, interval_s=3600)
    progress.follow(lambda: counts)
    assert "delivered 4, rejected 1, skipped 3, failed 0" in progress.line()
    counts["delivered"] = 6
    assert "delivered 6" in progress.line()


@pytest.mark.parametrize("width", [80, 60, 40])
def test_display_fits_the_width_with_large_counts(width: int) -> None:
    clock = FakeClock()
    progress = Progress(total=12_345_678, terminal=False, clock=clock, interval_s=3600)
    with progress:
        clock.t += 3700
        progress.update(read=9_876_543, delivered=8_765_432, rejected=123_456, skipped=1_234_567,
                        failed=98_765, requests=116_873)  # fmt: skip
        lines = progress.render_lines(width)
    assert len(lines) == 2 and all(len(line) <= width for line in lines), lines
    if width == 80:
        assert "ETA" in lines[0] and "req/s" in lines[0] and "%" in lines[0]
        for word in ("read", "delivered", "rejected", "skipped", "failed"):
            assert word in lines[1]
        assert "8.77M" in lines[1]  # compact numbers when full ones do not fit


def test_no_eta_without_total() -> None:
    clock = FakeClock()
    progress = Progress(terminal=False, clock=clock)
    clock.t += 5
    progress.update(read=10, requests=5)
    assert progress.eta_s() is None
    assert "ETA" not in progress.line()
    assert "(1.0/s)" in progress.line()


def test_plain_mode_logs_periodically(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="connector.progress")
    with Progress(terminal=False, interval_s=0.05) as progress:
        progress.update(read=7, delivered=5, rejected=2)
        deadline = time.monotonic() + 5
        while (
            not any(r.message.startswith("progress:") for r in caplog.records) and time.monotonic() < deadline
        ):
            time.sleep(0.01)
    messages = [r.message for r in caplog.records if r.name == "connector.progress"]
    periodic = [m for m in messages if m.startswith("progress:")]
    assert periodic and "read 7 rows, delivered 5, rejected 2" in periodic[0]
    assert messages[-1].startswith("done: read 7 rows")
    last = [r for r in caplog.records if r.name == "connector.progress"][-1]
    assert last.counters["delivered"] == 5  # type: ignore[attr-defined]  # JSON logs carry the counters


def test_terminal_mode_renders_rich_display() -> None:
    out = io.StringIO()
    with Progress(total=10, terminal=True, stream=out) as progress:
        progress.update(read=10, delivered=8, rejected=2, requests=3)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "delivered 8" in text and "rejected 2" in text and "100% of 10 rows" in text


def test_an_estimated_total_is_shown_as_one() -> None:
    """A CSV's row count before reading is an estimate: the bar and the log line say "~N"; a total set
    exact (the rows read, at the end) drops the "~"."""
    progress = Progress(terminal=False, interval_s=3600)
    progress.set_total(1200, exact=False)
    progress.update(read=600, delivered=600)
    assert "read 600/~1,200 rows" in progress.line()
    assert progress.render_lines(100)[0].split("  ")[1].strip() == "50% of ~1,200 rows"
    progress.set_total(600)
    assert "read 600/600 rows" in progress.line() and "100% of 600 rows" in progress.render_lines(100)[0]


def test_disabled_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="connector.progress")
    progress = Progress.disabled()
    with progress:
        progress.update(read=5)
        progress.set_total(9)
    assert progress.counts["read"] == 0
    assert not [r for r in caplog.records if r.name == "connector.progress"]


def test_update_is_thread_safe() -> None:
    progress = Progress(terminal=False, interval_s=3600)

    def work() -> None:
        for _ in range(2000):
            progress.update(read=1, delivered=1, requests=1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert progress.counts == {
        "read": 16000,
        "delivered": 16000,
        "rejected": 0,
        "skipped": 0,
        "failed": 0,
        "requests": 16000,
    }

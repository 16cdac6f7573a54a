"""readers/ahead.py: order kept, errors raised to the reader, bounded look-ahead, and a close that stops the
thread and ends the source in the thread that used it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from connector.errors import SourceError
from connector.readers.ahead import read_ahead


def counted(n: int, log: list[str], fail_at: int | None = None) -> Iterator[int]:
    try:
        for i in range(n):
            if i == fail_at:
                raise SourceError(f"reading the rows failed at {i}")
            log.append(f"made {i}")
            yield i
    finally:
        log.append(f"closed in {threading.current_thread().name}")


def test_items_come_in_order_and_the_source_ends_in_the_reading_thread() -> None:
    log: list[str] = []
    assert list(read_ahead(counted(50, log), name="t-ahead")) == list(range(50))
    assert log[-1] == "closed in t-ahead"


def test_an_error_of_the_source_reaches_the_reader_after_the_items_before_it() -> None:
    log: list[str] = []
    got: list[int] = []
    with pytest.raises(SourceError, match="failed at 3"):
        for item in read_ahead(counted(10, log, fail_at=3)):
            got.append(item)
    assert got == [0, 1, 2] and log[-1].startswith("closed in")


def test_look_ahead_is_bounded_and_close_stops_the_thread() -> None:
    log: list[str] = []
    ahead = read_ahead(
        counted(
            1_000,
            log,
        ),
        depth=1,
        name="t-bounded",
    )
    assert next(ahead) == 0
    deadline = time.monotonic() + 5
    while sum(e.startswith("made") for e in log) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # had it no bound, it would have read on by now
    made = sum(e.startswith("made") for e in log)
    assert made <= 3  # the one handed over, depth (1) queued, one held by the blocked thread
    ahead.close()
    assert (
        log[-1] == "closed in t-bounded"
    )  # the source's finally ran, in its own thread, before close returned
    assert not any(t.name == "t-bounded" for t in threading.enumerate())


def test_closing_before_the_first_item_starts_no_thread() -> None:
    log: list[str] = []
    ahead = read_ahead(counted(5, log), name="t-never")
    ahead.close()
    assert log == [] and not any(t.name == "t-never" for t in threading.enumerate())

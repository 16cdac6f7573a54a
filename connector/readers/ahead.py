"""Read ahead: a source's next batches fetched in a thread while the run works on the current chunk.

Why: reading a SQL source is mostly waiting for the database and decoding its answer into Arrow in C (the
GIL released), while validating, mapping and the delta decision are Python on the main thread. Fetching
the next batch meanwhile puts the two on different cores: an unchanged delta re-run of a PostgreSQL table
takes about the longer of the two instead of their sum.

Memory stays bounded: at most `depth` batches wait in the queue, plus the one being fetched. Stops:
closing the iterator (a halted run, an error downstream, a generator collected) tells the thread to stop,
closes the source's own iterator in that thread (its `finally` runs where it was suspended: the cursor and
transaction are ended by the thread that used them) and waits for it, so the connection is never used by
two threads and never closed under a fetch. An error the source raises is raised to the reader, as is.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import TypeVar

T = TypeVar("T")

_POLL_S = 0.05  # how often a thread blocked on a full queue looks at the stop flag


def read_ahead(source: Iterator[T], depth: int = 1, name: str = "read-ahead") -> Generator[T, None, None]:
    """`source`'s items, in order, fetched up to `depth` ahead in a daemon thread."""
    box: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(kind: str, value: object) -> bool:
        while not stop.is_set():
            try:
                box.put((kind, value), timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in source:
                if not put("item", item):
                    return
            put("end", None)
        except BaseException as e:  # noqa: BLE001 - handed to the reader, who raises it
            put("error", e)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = box.get()
            if kind == "item":
                yield value  # type: ignore[misc]
            elif kind == "error":
                assert isinstance(value, BaseException)
                raise value
            else:
                return
    finally:
        stop.set()
        thread.join()

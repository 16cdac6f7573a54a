"""Group commit: the delta state's writes from several threads in few transactions, each committed before
the call that made it returns.

A change (a key's record to confirm, or None to forget it) is first put in the *unwritten* map under the
state's lock (the latest change of a key wins: changes are put in the order they were decided); until its
transaction commits it shows through `overlay`, so a decision sees every key as pending, unwritten or
stored. `flush(ticket)` returns once a transaction holding the change has committed: the thread that takes
the write lock writes everything unwritten so far (one transaction per stream), and the threads that
waited for it find theirs written. The writer settles answers from a few threads (delivery/writer.py), so
confirmations of several answers share one transaction, and the state's lock is never held across one:
deciding a chunk does not wait for the store's disk or PostgreSQL's round trip.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from connector.delta.stores import Store

Change = tuple[str, bytes | None]  # (key, record to confirm, or None: forget the key)
# A caller that may wait (state.py: attributes' confirmations) leaves its changes to a later transaction
# until this many are waiting, or the first of them waited this long.
DEFER_CHANGES = 2000
DEFER_SECONDS = 0.1


class GroupCommit:
    """The unwritten changes of one state; `put` and `overlay` under the state's `lock`, `flush` without."""

    def __init__(self, store: Store, lock: threading.Lock,
                 written: Callable[[str, Iterable[str]], None] | None = None) -> None:  # fmt: skip
        """`written(stream, keys)`: called under the lock once their transaction committed (a decision that
        read the store before then reads these keys again)."""
        self.store = store
        self._on_written = written
        self._lock = lock
        self._write_lock = threading.Lock()
        self._unwritten: dict[str, dict[str, bytes | None]] = {}  # stream -> key -> change
        self._writing: dict[str, dict[str, bytes | None]] = {}  # the batch being written, still shown
        self._put = 0  # tickets handed out
        self._written = 0  # every ticket up to this one is committed
        self._waiting = 0  # changes put since the last transaction began
        self._since = 0.0  # when the first of them was put

    def put(self, stream: str, changes: Iterable[Change]) -> int:
        """Queue changes (under the state's lock); the ticket to `flush`."""
        unwritten = self._unwritten.setdefault(stream, {})
        before = len(unwritten)
        unwritten.update(changes)
        if not self._waiting:
            self._since = time.monotonic()
        self._waiting += len(unwritten) - before or 1
        self._put += 1
        return self._put

    def unwritten(self) -> dict[str, dict[str, bytes | None]]:
        """The changes not committed yet, by stream (under the state's lock)."""
        return self._unwritten

    def due(self) -> bool:
        """Whether the changes waiting are many or old enough to be written now (under the state's lock)."""
        return self._waiting >= DEFER_CHANGES or time.monotonic() - self._since >= DEFER_SECONDS

    def everything(self) -> int:
        """The ticket covering every change put so far (under the state's lock)."""
        return self._put

    def overlay(self, stream: str, keys: list[str], stored: list[bytes | None]) -> None:
        """Replace, in `stored` (the store's records of `keys`), those with a change not committed yet."""
        for layer in (self._writing.get(stream), self._unwritten.get(stream)):  # older, then newer
            if layer:
                for j, key in enumerate(keys):
                    if key in layer:
                        stored[j] = layer[key]

    def flush(self, ticket: int) -> None:
        """Return once the changes of `ticket` are committed (written by this thread or another)."""
        with self._write_lock:
            with self._lock:
                if self._written >= ticket:
                    return
                batch, self._unwritten, upto = self._unwritten, {}, self._put
                self._waiting = 0
                self._writing = batch
            try:
                for stream, changes in batch.items():
                    confirm = [(k, r) for k, r in changes.items() if r is not None]
                    self.store.write(stream, confirm, [k for k, r in changes.items() if r is None])
            except BaseException:
                with self._lock:  # not committed: unwritten again (behind any newer change of the same key)
                    for stream, changes in batch.items():
                        self._unwritten[stream] = {**changes, **self._unwritten.get(stream, {})}
                    self._writing = {}
                raise
            with self._lock:
                self._writing = {}
                self._written = upto
                if self._on_written is not None:
                    for stream, changes in batch.items():
                        self._on_written(stream, changes.keys())

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

A change may be *deferred* (state.py: attributes' confirmations wait for a later transaction, DEFER_CHANGES
or DEFER_SECONDS); `defer()` arms a timer that commits them DEFER_SECONDS after the first was put, so they
do not wait for the end of the run when no later settle comes. `stop()` ends it (DeltaState.close).

Source prints (rowprint.py, delta sync's fast path) ride along when the store keeps them (stores.keeps_sources):
`put(..., sources)` gives the print of confirmed keys (a later change of a key without one drops it), and
`mark(stream, marks)` queues prints for records already confirmed, written after the batch's changes (the
store attaches each only while the key still has the record it was decided against). Marks are never waited
for and never shown by `overlay`: a mark lost costs only a slower next run.

New users confirmed by position (flights.py) are put as slices of their flights (`put_bulk`) and written
before the stream's changes by key in the same transaction, as one log row (a store without bulk writes gets
them as (key, record) pairs, in a write of their own before the others). A key's positional confirmation is
always older than any change of it by key (state.py drains a flight's answers before deciding a key again),
so `overlay_bulk` shows them first.

A store error (a full disk, PostgreSQL gone) is not raised: it ends the state's writes for the rest of the
run (`failed`). The changes of the failed transaction, those waiting and every later `put` go to
`dropped(stream, changes)` and are not kept (unrecorded.py says why that is safe and what it costs); a
`flush` whose changes were dropped returns False. Rows' outcomes never depend on the state.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from itertools import repeat
from operator import itemgetter

import numpy as np

from connector.delta.flights import Flight, end_timer, gather
from connector.delta.stores import Store, keeps_sources

Change = tuple[str, bytes | None]  # (key, record to confirm, or None: forget the key)
# A caller that may wait (state.py: attributes' confirmations) leaves its changes to a later transaction
# until this many are waiting, or the first of them waited this long. A store may ask for larger
# transactions (`group_rows`: PostgreSQL's, where a transaction costs the server more than a row).
DEFER_CHANGES = 2000
DEFER_SECONDS = 0.1


Parts = list[tuple[Flight, np.ndarray]]  # flights' confirmed positions


def _split(changes: dict[str, bytes | None]) -> tuple[list[tuple[str, bytes]], list[str]]:
    """(records to confirm, keys to forget) of a stream's batch; a batch that forgets nothing in one C step."""
    if None not in changes.values():
        return list(changes.items()), []  # type: ignore[arg-type]  # no None among them
    return [(k, r) for k, r in changes.items() if r is not None], [k for k, r in changes.items() if r is None]


class GroupCommit:
    """The unwritten changes of one state; `put`, `overlay`, `defer` under the state's `lock`, `flush` without."""

    def __init__(self, store: Store, lock: threading.Lock,
                 written: Callable[[str, Iterable[str]], None] | None = None,
                 dropped: Callable[[str, dict[str, bytes | None]], None] | None = None) -> None:  # fmt: skip
        """`written(stream, keys)`: called under the lock once their transaction committed (a decision that
        read the store before then reads these keys again). `dropped(stream, changes)`: called under the lock
        with changes that will never be written, once the store failed (`failed`)."""
        self.store = store
        self._on_written = written
        self._on_dropped = dropped
        self._lock = lock
        self._write_lock = threading.Lock()
        self._unwritten: dict[str, dict[str, bytes | None]] = {}  # stream -> key -> change
        self._writing: dict[str, dict[str, bytes | None]] = {}  # the batch being written, still shown
        self._bulk: dict[str, Parts] = {}  # stream -> confirmed positions of flights, unwritten
        self._bulk_writing: dict[str, Parts] = {}  # ... being written, still shown
        self._writes_bulk = bool(getattr(store, "writes_bulk", False))
        self._group_rows: int | None = getattr(store, "group_rows", None)
        self._prints = keeps_sources(store)
        self._sources: dict[str, dict[str, int]] = {}  # stream -> key -> source print of its unwritten record
        self._marks: dict[str, dict[str, tuple[int, int]]] = {}  # stream -> key -> (print, record digest)
        self._put = 0  # tickets handed out
        self._written = 0  # every ticket up to this one is committed
        self._waiting = 0  # changes put since the last transaction began
        self._asked = False  # due() told a caller to write them (it flushes: the others need not wait)
        self._since = 0.0  # when the first of them was put
        self._timer: threading.Timer | None = None  # commits deferred changes (defer)
        self._stopped = False
        self.failed: Exception | None = None  # the store's first error: nothing is written after it

    def put(self, stream: str, changes: Iterable[Change], sources: dict[str, int] | None = None) -> int:
        """Queue changes (under the state's lock); the ticket to `flush` (0: dropped, the store failed).
        `sources`: the source print of confirmed keys that have one."""
        if self.failed is not None:
            self._drop(stream, dict(changes))
            return 0
        unwritten = self._unwritten.setdefault(stream, {})
        before = len(unwritten)
        if self._prints:
            changes = list(changes)
            self._keep_sources(stream, changes, sources)
        unwritten.update(changes)
        if not self._waiting:
            self._since = time.monotonic()
        self._waiting += len(unwritten) - before or 1
        self._put += 1
        return self._put

    def put_bulk(self, stream: str, flight: Flight, positions: np.ndarray) -> int:
        """Queue a flight's confirmed positions (under the state's lock); the ticket to `flush` (0: dropped)."""
        if self.failed is not None:
            self._drop(stream, flight.changes(positions))
            return 0
        self._bulk.setdefault(stream, []).append((flight, positions))
        if not self._waiting:
            self._since = time.monotonic()
        self._waiting += len(positions)
        self._put += 1
        return self._put

    def _keep_sources(self, stream: str, changes: list[Change], sources: dict[str, int] | None) -> None:
        """The prints that go with `changes`: a key's latest change carries its print, or none."""
        known = self._sources.get(stream)
        if known and not (sources and len(sources) == len(changes)):  # else every key gets its print anew below
            deque(map(known.pop, map(itemgetter(0), changes), repeat(None)), maxlen=0)
        if sources:
            self._sources.setdefault(stream, {}).update(sources)

    def mark(self, stream: str, marks: dict[str, tuple[int, int]]) -> None:
        """Queue prints of records already confirmed (under the state's lock), written by the next flush."""
        if self._prints and self.failed is None and marks:
            self._marks.setdefault(stream, {}).update(marks)
            self._put += 1  # so that commit() at the end of the run writes them

    def writing(self, stream: str) -> list[Collection[str]]:
        """The keys of `stream` with a change not committed yet, as the layers that hold them (not copied:
        read them under the state's lock)."""
        return [layer for layer in (self._unwritten.get(stream), self._writing.get(stream)) if layer]

    def unwritten(self) -> dict[str, dict[str, bytes | None]]:
        """The changes not committed yet, by stream (under the state's lock)."""
        return self._unwritten

    def due(self) -> bool:
        """Whether the changes waiting are many or old enough to be written now (under the state's lock). True
        once per transaction: the caller told so flushes, taking along whatever later callers put meanwhile,
        so those may leave theirs to it (and to the timer, `defer`) instead of each waiting for a commit."""
        if self._asked:
            return False
        self._asked = self._waiting >= self.group_rows() or time.monotonic() - self._since >= DEFER_SECONDS
        return self._asked

    def group_rows(self) -> int:
        """How many changes may wait for a transaction (the store's `group_rows`, else DEFER_CHANGES)."""
        return self._group_rows or DEFER_CHANGES

    def defer(self) -> None:
        """The caller leaves its changes to a later transaction (under the state's lock): make sure one comes
        DEFER_SECONDS after the first of them was put, whether or not another change does."""
        if self._timer is None and not self._stopped and self.failed is None and self._waiting:
            delay = max(0.0, DEFER_SECONDS - (time.monotonic() - self._since))
            self._timer = threading.Timer(delay, self._deferred)
            self._timer.daemon = True  # never keeps a process alive; stop() ends it at the end of a run
            self._timer.name = "delta-deferred-commit"
            self._timer.start()

    def _deferred(self) -> None:
        with self._lock:
            self._timer = None
            ticket = self._put
        self.flush(ticket)  # a store error ends the writes (flush), it is not raised here

    def stop(self) -> None:
        """End the timer (waiting for a commit it runs): the state closes after this (not under the lock)."""
        with self._lock:
            self._stopped = True
            timer, self._timer = self._timer, None
        end_timer(timer)

    def everything(self) -> int:
        """The ticket covering every change put so far (under the state's lock)."""
        return self._put

    def overlay_bulk(self, stream: str, keys: list[str], at: list[int], stored: list[bytes | None]) -> None:
        """overlay() for flights' confirmed positions not committed yet: `keys` (a few: a later chunk's
        repeats) are stored[at[i]]. Call it before overlay(): a change by key is newer."""
        for layer in (self._bulk_writing.get(stream), self._bulk.get(stream)):
            for flight, positions in layer or ():
                found = flight.find(keys)
                hit = np.flatnonzero(found >= 0)
                if len(hit):
                    mine = np.isin(found[hit], positions)
                    for i in hit[mine].tolist():
                        stored[at[i]] = flight.rows[int(found[i])]

    def overlay(self, stream: str, keys: list[str], stored: list[bytes | None]) -> None:
        """Replace, in `stored` (the store's records of `keys`), those with a change not committed yet."""
        for layer in (self._writing.get(stream), self._unwritten.get(stream)):  # older, then newer
            if layer and not layer.keys().isdisjoint(keys):  # a first run's chunk: other users than those settled
                for j, key in enumerate(keys):
                    if key in layer:
                        stored[j] = layer[key]

    def flush(self, ticket: int) -> bool:
        """Return once the changes of `ticket` are committed (written by this thread or another): True, or
        False when they were dropped because the store failed (`failed`)."""
        with self._write_lock:
            with self._lock:
                if self._written >= ticket:
                    return True
                if self.failed is not None:
                    return False
                batch, self._unwritten, upto = self._unwritten, {}, self._put
                bulk, self._bulk = self._bulk, {}
                sources, self._sources, marks, self._marks = self._sources, {}, self._marks, {}
                self._waiting, self._asked = 0, False
                self._writing, self._bulk_writing = batch, bulk
            done: list[str] = []
            try:
                for stream in [*bulk, *(s for s in batch if s not in bulk)]:
                    self._write(stream, batch.get(stream, {}), sources.get(stream), bulk.get(stream))
                    done.append(stream)
                for stream, marked in marks.items():  # after the changes: a mark finds the record it was decided on
                    self.store.mark(stream, marked)  # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001 - any store error (sqlite3, OSError, the driver's): see the doc
                self._fail(exc, batch, done, bulk)
                return False
            except BaseException:
                with self._lock:  # not committed: unwritten again (behind any newer change of the same key)
                    for stream, parts in bulk.items():
                        self._bulk[stream] = [*parts, *self._bulk.get(stream, [])]
                    self._bulk_writing = {}
                    for stream, changes in batch.items():
                        newer = self._unwritten.get(stream, {})
                        self._unwritten[stream] = {**changes, **newer}
                        old = {k: v for k, v in sources.get(stream, {}).items() if k not in newer}
                        if old:
                            self._sources[stream] = {**old, **self._sources.get(stream, {})}
                    self._writing = {}
                raise
            with self._lock:
                self._writing, self._bulk_writing = {}, {}
                self._written = upto
                self._announce(batch, done, bulk)
            return True

    def _write(self, stream: str, changes: dict[str, bytes | None], sources: dict[str, int] | None,
               parts: Parts | None) -> None:  # fmt: skip
        """One stream's batch: the flights' confirmed positions first (one transaction with the changes by key
        when the store takes a Bulk, else a write of their own before them), then the changes by key."""
        confirm, forget = _split(changes)
        kwargs: dict[str, object] = {}
        if parts:
            bulk = gather(parts)
            if self._writes_bulk:
                kwargs["bulk"] = bulk
            else:
                src = bulk.sources() if self._prints else None
                if src:
                    self.store.write(stream, bulk.pairs(), [], src)  # type: ignore[call-arg]
                else:
                    self.store.write(stream, bulk.pairs(), [])
        if sources:  # only a store that keeps prints is given any
            kwargs["sources"] = sources
        if kwargs or confirm or forget:
            self.store.write(stream, confirm, forget, **kwargs)  # type: ignore[call-arg]

    def _fail(self, exc: Exception, batch: dict[str, dict[str, bytes | None]], done: list[str],
              bulk: dict[str, Parts]) -> None:  # fmt: skip
        """The store failed: no write after this one; what was not written is dropped (see the module doc)."""
        with self._lock:
            self.failed = exc
            self._writing, self._bulk_writing = {}, {}
            self._announce(batch, done, bulk)  # streams written before the error are committed
            waiting, self._unwritten, self._waiting = self._unwritten, {}, 0
            waiting_bulk, self._bulk = self._bulk, {}
            lost = [(s, p) for s, p in bulk.items() if s not in done]
            for stream, parts in [*lost, *waiting_bulk.items()]:
                for flight, positions in parts:
                    self._drop(stream, flight.changes(positions))
            for stream, changes in batch.items():
                if stream not in done:
                    self._drop(stream, changes)
            for stream, changes in waiting.items():
                self._drop(stream, changes)
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _announce(self, batch: dict[str, dict[str, bytes | None]], streams: list[str], bulk: dict[str, Parts]) -> None:
        if self._on_written is not None:
            for stream in streams:
                if parts := bulk.get(stream):
                    self._on_written(stream, (k for f, p in parts for k in f.keys_at(p)))  # read only if watched
                if stream in batch:
                    self._on_written(stream, batch[stream].keys())

    def _drop(self, stream: str, changes: dict[str, bytes | None]) -> None:
        if changes and self._on_dropped is not None:
            self._on_dropped(stream, changes)

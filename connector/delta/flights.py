"""New users in flight by position: a chunk's users the state did not know, tracked as arrays, not per key.

A first delta run sends every user as new, and so do later runs for the users they add. Keeping each one in
a dict until its answer (and its print in another), popping it per key when the answer comes and handing
the records to the store as (key, record) pairs cost about as much CPU as delivering the rows. Instead, when
a chunk's decision (state.py, on a stream whose state was empty when the run began: seen.py) sends users
that are new, their keys, records (the rows' JSON), key hashes, record digests and source prints are kept as
arrays of the chunk sent (`Flight`, indexed by the positions the writer's requests carry). An answer is its
request's positions (`Positions`): it is queued without the state's lock (`Answers`: the writer's event loop
never waits for a decision), and the queue is drained under the lock by whoever commits next (a group commit
every commit.DEFER_CHANGES positions or DEFER_SECONDS, the state's commit at the end of the run, or a
decision that needs to know what settled). Positions a 2xx confirmed are handed to the group commit as a
slice of the flight and written as one log row per transaction (`Bulk`, logfile.append_bulk); positions that
failed are simply dropped: the user was not in the store and is not written (the next run sends it again).

The semantics are the state's (state.py): a user is recorded only once a 2xx confirmed it; a crashed run
forgets what it was sending (and what waited for a transaction, as any deferred attribute confirmation);
a stopped run commits what was confirmed when it finishes. A user seen again in a later chunk while its
position is still in flight is *moved* to the state's per-key bookkeeping (its position then settles through
it, by key), so later rows compare against what was sent, as before. Positions that were not new (the
chunk's changed users, a user twice in the chunk) are marked so from the start and settle by key too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain

import numpy as np

from connector.delta.keyindex import digests, hashes, key_hashes

IN_FLIGHT, SETTLED, KEYED = 1, 0, 2  # a position's state: awaiting its answer, answered, settled by key


class Flight:
    """The users of one sent chunk, by position: the new ones in flight (state IN_FLIGHT) and the others
    (KEYED); every method under the state's lock, except the read-only arrays."""

    __slots__ = ("keys", "rows", "kb", "h", "d", "s", "klen", "rlen", "state", "flying", "_order")

    def __init__(self, keys: list[str], rows: list[bytes], prints: np.ndarray | None, new: np.ndarray | slice) -> None:
        """`keys`, `rows`: each position's key and record (its JSON); `prints`: its source print (None: none);
        `new`: the positions in flight (the others settle by key)."""
        n = len(keys)
        self.keys, self.rows = keys, rows
        self.kb = list(map(str.encode, keys))  # what the log holds; hashed once, here
        self.h = hashes(self.kb)
        self.d = digests(rows)
        self.s = np.zeros(n, np.int64) if prints is None else np.asarray(prints, np.int64)
        self.klen = np.fromiter(map(len, self.kb), np.int64, n)
        self.rlen = np.fromiter(map(len, rows), np.int64, n)
        self.state = np.full(n, KEYED, np.int8)
        self.state[new] = IN_FLIGHT
        self.flying = int(np.count_nonzero(self.state == IN_FLIGHT))
        self._order: np.ndarray | None = None  # positions sorted by key hash (find)

    def at(self, tokens: list[int]) -> Positions:
        """An answer's positions."""
        return Positions(self, tokens)

    def find(self, keys: list[str]) -> np.ndarray:
        """The position of each key in this flight (-1: not here); a few keys (a later chunk's repeats)."""
        if self._order is None:
            self._order = np.argsort(self.h, kind="stable")
        h = key_hashes(keys)
        ordered = self.h[self._order]
        lo = np.searchsorted(ordered, h, "left")
        hi = np.searchsorted(ordered, h, "right")
        out = np.full(len(keys), -1, np.int64)
        for i in np.flatnonzero(hi > lo).tolist():  # a hash two keys share: the key decides
            for p in self._order[lo[i] : hi[i]].tolist():
                if self.keys[p] == keys[i]:
                    out[i] = p
        return out

    def changes(self, positions: np.ndarray) -> dict[str, bytes | None]:
        """The (key, record) of positions, for a store that takes no Bulk and for the losses' count."""
        at = positions.tolist()
        return dict(zip(map(self.keys.__getitem__, at), map(self.rows.__getitem__, at), strict=True))

    def keys_at(self, positions: np.ndarray) -> Iterator[str]:
        return map(self.keys.__getitem__, positions.tolist())


def end_timer(timer: threading.Timer | None) -> None:
    """Cancel a batching timer taken out of its owner (under the owner's lock) and wait for a run of it already
    under way, unless this is that run."""
    if timer is not None:
        timer.cancel()
        if timer is not threading.current_thread():
            timer.join()

@dataclass(frozen=True, slots=True)
class Positions:
    """One answer's objects of a flight: its request's positions (the writer's tokens)."""

    flight: Flight
    tokens: list[int]

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True, slots=True)
class Bulk:
    """Confirmed new users of one stream as the log stores them: keys and records as blobs with their ends,
    key hashes, record digests and source prints (0: none), in one order."""

    keys: bytes
    key_ends: np.ndarray
    records: bytes
    record_ends: np.ndarray
    h: np.ndarray
    d: np.ndarray
    s: np.ndarray
    parts: tuple[tuple[Flight, np.ndarray], ...]

    def __len__(self) -> int:
        return len(self.h)

    def pairs(self) -> list[tuple[str, bytes]]:
        """(key, record) of each user, for a store without bulk writes (tests' stores), or a Bulk the PostgreSQL
        store cannot append by COPY (pg_rows.bulk_pairs)."""
        return [(k, r) for f, p in self.parts for k, r in f.changes(p).items() if r is not None]

    def sources(self) -> dict[str, int]:
        """key -> source print of the users that have one."""
        out: dict[str, int] = {}
        for f, p in self.parts:
            s = f.s[p]
            if s.any():
                out.update((k, v) for k, v in zip(f.keys_at(p), s.tolist(), strict=True) if v)
        return out

    def key_texts(self) -> Iterator[str]:
        return chain.from_iterable(f.keys_at(p) for f, p in self.parts)


def gather(parts: list[tuple[Flight, np.ndarray]]) -> Bulk:
    """One Bulk of flights' confirmed positions (each part's positions once, none of another part's keys)."""
    kb: list[bytes] = []
    rb: list[bytes] = []
    for f, p in parts:
        at = p.tolist()
        kb.append(b"".join(map(f.kb.__getitem__, at)))
        rb.append(b"".join(map(f.rows.__getitem__, at)))

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(f, name)[p] for f, p in parts]) if parts else np.empty(0, np.int64)

    return Bulk(b"".join(kb), cat("klen").cumsum(), b"".join(rb), cat("rlen").cumsum(), cat("h"), cat("d"), cat("s"),
                tuple(parts))  # fmt: skip


Answer = tuple[str, Flight, list[int], bool]  # stream, flight, positions, delivered


class Answers:
    """Answers of flights not yet applied to the state: queued by any thread without the state's lock, taken
    under it. `add` says when enough waited (`due_after` positions, or `wait_s` since the first) for its
    caller to have them committed now (once per drain); a timer drains them `wait_s` after the first was
    queued in any case (`on_timer`), so no confirmation waits longer for a lull in the answers."""

    def __init__(self, due_after: int, wait_s: float, on_timer: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._items: list[Answer] = []
        self._count = 0
        self._since = 0.0
        self._asked = False
        self._due_after, self._wait_s = due_after, wait_s
        self._on_timer = on_timer
        self._timer: threading.Timer | None = None
        self._stopped = False

    def add(self, stream: str, flight: Flight, tokens: list[int], delivered: bool) -> bool:
        """Queue an answer; True: the caller should have the queue committed now (no one else was told)."""
        with self._lock:
            now = time.monotonic()
            if not self._items:
                self._since = now
                if self._timer is None and not self._stopped:
                    self._timer = threading.Timer(self._wait_s, self._fire)
                    self._timer.daemon = True  # never keeps a process alive; stop() ends it
                    self._timer.name = "delta-answers"
                    self._timer.start()
            self._items.append((stream, flight, tokens, delivered))
            self._count += len(tokens)
            if self._asked:
                return False
            self._asked = self._count >= self._due_after or now - self._since >= self._wait_s
            return self._asked

    def take(self) -> list[Answer]:
        """Every answer queued so far (under the state's lock)."""
        with self._lock:
            items, self._items, self._count, self._asked = self._items, [], 0, False
        return items

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
        self._on_timer()

    def stop(self) -> None:
        """End the timer (waiting for a drain it runs); answers queued later are taken by the caller's commit."""
        with self._lock:
            self._stopped = True
            timer, self._timer = self._timer, None
        end_timer(timer)

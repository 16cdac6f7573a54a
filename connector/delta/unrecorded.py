"""What a run could not record once its delta state failed to write (a full disk, PostgreSQL gone).

The first store error stops every later write of the run (commit.py): retrying a full disk thousands of
times only fills the log, and the rows' outcomes never depend on the state. What the run would have
written is dropped, not kept: a record per confirmed user would grow with the run (10M rows, 10M
records). Kept instead, for the rest of the run and the warning, is a 64-bit hash per key (8 bytes):

- *confirmed*: keys Braze confirmed whose confirmation was not written. The next run sends them again:
  for attributes the same values (Braze sets them again: harmless); for events and purchases the same
  object, which Braze counts a second time. So within this run an event confirmed here still counts as
  delivered (`overlay`): an identical event later in the run is skipped, as if the state held it.
- *stale*: keys whose older record could not be removed (commit.py's invalidation before a changed user is
  sent, or a forget of a user deleted at Braze). The store keeps a record of values Braze no longer holds:
  within this run such a key is looked up as unknown (sent whole); the next run compares against that
  record and still sends the values that differ from it, but skips a user whose source values went back
  to it. The warning says to run once with `--full` (it sends everything and rewrites the state).

Forgets the run dropped otherwise (a rejected, failed or unsent object: state.py's settle) need nothing:
the key was either unknown to the store (a new user, an event), or its record was removed before it was
sent (a changed user: an invalidation, above), or nothing it sent changed a value the record holds (only
operations, which are never recorded). The store's record, or its absence, is then still right, and the
next run sends the user again (all of it, or what differs). See state.py.

A hash collision (two keys, one 64-bit hash) could only skip, in this run, an event that differs from one
confirmed here: about one run in 10^5 with 10M events each side; counts are of distinct hashes.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator

import numpy as np

EMPTY: frozenset[str] = frozenset()


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error, then what caused it or was being handled when it was raised."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _full(e: BaseException) -> bool:
    if isinstance(e, sqlite3.Error) and getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return True
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e).lower()  # sqlite3 without error codes; PostgreSQL's SQLSTATE 53100 through the driver's text
    return any(s in text for s in ("database or disk is full", "no space left on device", "disk quota exceeded",
                                   "53100", "disk_full"))  # fmt: skip


def cause(error: BaseException) -> str:
    """The store error in words: "the disk is full" for SQLITE_FULL or ENOSPC (anywhere in its chain), else its
    text. SQLite rolls a transaction back on its own when the disk fills, so the store's ROLLBACK then fails
    with "cannot rollback - no transaction is active": the error it was handling is the one that says why."""
    chain = list(_chain(error))
    if any(map(_full, chain)):
        return "the disk is full"
    first = next((e for e in chain if "cannot rollback" not in str(e)), chain[0])
    return str(first) or type(first).__name__


class Hashes:
    """A set of keys kept as 64-bit hashes: sorted arrays merged as they grow (8 bytes a key, a few arrays)."""

    def __init__(self) -> None:
        self._sorted = np.empty(0, np.int64)
        self._recent: list[np.ndarray] = []
        self._n_recent = 0

    def add(self, keys: list[str]) -> None:
        if keys:
            self._recent.append(np.fromiter(map(hash, keys), np.int64, len(keys)))
            self._n_recent += len(keys)
            if self._n_recent > max(65_536, len(self._sorted) // 4):
                self._merge()

    def _merge(self) -> None:
        if self._recent:
            self._sorted = np.unique(np.concatenate([self._sorted, *self._recent]))
            self._recent, self._n_recent = [], 0

    def holds(self, keys: list[str]) -> np.ndarray:
        """A bool per key: added before."""
        self._merge()
        h = np.fromiter(map(hash, keys), np.int64, len(keys))
        at = np.searchsorted(self._sorted, h)
        inside = at < len(self._sorted)
        out = np.zeros(len(keys), bool)
        out[inside] = self._sorted[at[inside]] == h[inside]
        return out

    def __len__(self) -> int:
        """Distinct keys added (by hash)."""
        self._merge()
        return len(self._sorted)

    @property
    def nbytes(self) -> int:
        return int(self._sorted.nbytes) + sum(int(a.nbytes) for a in self._recent)


class Unrecorded:
    """The state's losses since its first store error; every method under the state's lock."""

    def __init__(self, label: str, error: BaseException) -> None:
        self.label = label
        self.cause = cause(error)
        self.error = f"{type(error).__name__}: {error}"  # for the log's detail, not the warning
        self._confirmed: dict[str, Hashes] = {}  # stream -> keys Braze confirmed, not written
        self._stale: dict[str, Hashes] = {}  # stream -> keys whose older record stays in the store
        self._kinds: dict[str, str] = {}

    def add(self, stream: str, kind: str, confirmed: list[str], stale: list[str]) -> None:
        self._kinds[stream] = kind
        if confirmed:
            self._confirmed.setdefault(stream, Hashes()).add(confirmed)
        if stale:
            self._stale.setdefault(stream, Hashes()).add(stale)

    def overlay(self, stream: str, attributes: bool, keys: list[str], stored: list[bytes | None],
                event_record: bytes) -> None:  # fmt: skip
        """What this run knows better than the store: an event it confirmed (delivered), an attributes key
        whose stored record is older than what Braze holds (unknown: sent whole)."""
        kept = (self._stale if attributes else self._confirmed).get(stream)
        if kept is None or not keys:
            return
        value = None if attributes else event_record
        for j in np.flatnonzero(kept.holds(keys)).tolist():
            stored[j] = value

    def counts(self) -> dict[str, int | str]:
        """report.json `delta.not_recorded`: the cause, then distinct keys by what the next run does."""
        out: dict[str, int | str] = {"cause": self.cause, "users": 0, "events": 0, "purchases": 0, "stale_records": 0}
        for stream, hashes in self._confirmed.items():
            kind = self._kinds.get(stream, "attributes")
            field = "users" if kind == "attributes" else ("purchases" if kind == "purchases" else "events")
            out[field] = int(out[field]) + len(hashes)
        out["stale_records"] = sum(len(h) for h in self._stale.values())
        return out

    @property
    def nbytes(self) -> int:
        """Memory held (the hashes): 8 bytes a key."""
        return sum(h.nbytes for d in (self._confirmed, self._stale) for h in d.values())

    def warning(self) -> str:
        """The one warning of the run (log and report.json `warnings`)."""
        c = self.counts()
        parts = [f"delta state {self.label}: could not be written ({self.cause}), so this run stopped recording "
                 "what Braze confirmed; every row's outcome stands (deliveries are not affected)"]  # fmt: skip
        if c["users"]:
            parts.append(f"what Braze confirmed for {_users(c['users'])} was not recorded: the next run sends those "
                         "users again (the same values, which Braze sets again)")  # fmt: skip
        for kind in ("events", "purchases"):
            if c[kind]:
                parts.append(f"{c[kind]:,} {kind} may be sent again: their confirmations were not recorded, so the "
                             f"next run sends those {kind} again and Braze counts them twice")  # fmt: skip
        if c["stale_records"]:
            parts.append(f"{_users(c['stale_records'])} keep an older record in the state (a change or a deletion "
                         "could not be recorded): run once with --full to refresh the state, or a user whose "
                         "source values go back to that record is skipped")  # fmt: skip
        if len(parts) == 1:
            parts.append("no confirmation was lost")
        fix = "free space on its disk" if self.cause == "the disk is full" else "fix the state's storage"
        parts.append(f"{fix} before the next run")
        return "; ".join(parts)


def _users(n: int | str) -> str:
    return f"{int(n):,} users" if n != 1 else "1 user"

"""The delta state's side of source prints (rowprint.py): which print goes with which confirmed record.

A print is stored with a user's record only when Braze confirmed that record (a 2xx), and it is the print of
the last row of the user that the record was sent for: a record always holds that row's values as they are
(later rows of a user win, state.py), so the same row again would be found unchanged by the object
comparison. While a user's objects are in flight the print waits here (`of(stream)`); settling hands it to
the group commit with the record (commit.py), or drops it with the user when the user is forgotten.

Rows the object comparison finds unchanged, whose user's record has no print or another one (the first run
after an upgrade or a change of the mapping or suite, a record written by an earlier version), are *marked*:
their print is attached to the record they were compared with, if the record is still that one when the
mark is written (SqliteStore.mark, PgStore.mark), so the next run takes them by the fast path. A user twice
in a chunk, or with objects in flight, is never marked; nor is anything written by a store without prints
(stores.keeps_sources false), for which all this is skipped.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Collection, Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np

from connector.delta.keyindex import digests
from connector.delta.stores import Store, keeps_sources

if TYPE_CHECKING:
    from connector.delta.commit import GroupCommit
    from connector.delta.users import ChunkUsers


def once(keys: Sequence[str | None]) -> set[str] | None:
    """The keys found more than once in `keys` (None: every key is there once and none is None)."""
    if None not in keys and len(set(keys)) == len(keys):
        return None
    return {k for k, c in Counter(keys).items() if c > 1 and k is not None}


def rowprint_candidates(users: ChunkUsers, busy: Sequence[Collection[str]]) -> tuple[np.ndarray, np.ndarray]:
    """The rows the fast path may take: a user, once in the chunk (by the hash of its key: two keys sharing
    one are both left out), in none of the `busy` collections; their positions and key hashes, in the order
    of the hashes (the state's index is searched in that order)."""
    at, h = users.hashed()
    order = np.argsort(h)  # equal hashes are all left out: their order does not matter
    hs = h[order]
    same = hs[1:] == hs[:-1]
    alone = np.ones(len(hs), dtype=bool)
    alone[1:][same] = False
    alone[:-1][same] = False
    pick = order[alone]
    at, h = at[pick], hs[alone]
    if busy and len(at):  # users in flight are looked for by their keys (none in flight: no key is made)
        keys = users.keys
        wanted = [keys[j] for j in at.tolist()]
        free = np.ones(len(at), dtype=bool)
        for held in busy:
            free &= np.fromiter((k not in held for k in wanted), bool, len(wanted))
        at, h = at[free], h[free]
    return at, h


class Flying:
    """One stream's users in flight -> the print of the last row sent for them (under the state's lock)."""

    __slots__ = ("prints",)

    def __init__(self) -> None:
        self.prints: dict[str, int] = {}

    def settle(self, confirm: Collection[str], forget: Collection[str]) -> dict[str, int] | None:
        """The prints of the confirmed users (None: none); the users' prints leave the flight either way."""
        prints = self.prints
        if not prints:
            return None
        if forget:
            deque(map(prints.pop, forget, repeat(None)), maxlen=0)
        got = list(map(prints.pop, confirm, repeat(0)))  # one C loop per answer, as settle() does
        out = dict(zip(confirm, got, strict=True)) if 0 not in got else {k: p for k, p in zip(confirm, got, strict=True) if p}
        return out or None


class InFlight:
    """Source prints of a run's delta state: those in flight by stream, and the marks of unchanged rows."""

    def __init__(self, store: Store, commit: GroupCommit) -> None:
        self.kept = keeps_sources(store)  # False: the store keeps no prints, nothing here does anything
        self._store = store
        self._commit = commit
        self._flying: dict[str, Flying] = {}

    def of(self, stream: str) -> Flying | None:
        return self._flying.get(stream)

    def hold(self, stream: str, key: str, source: int) -> None:
        """A user in flight by position moves to the per-key bookkeeping with its print (0: none)."""
        if self.kept:
            prints = self._flying.setdefault(stream, Flying()).prints
            if source:
                prints[key] = source
            else:
                prints.pop(key, None)

    def note(self, stream: str, keys: list[str], keep: list[int], refresh: list[tuple[str, bytes]],
             stored: list[bytes | None], pending: Collection[str], new: Collection[str],
             prints: np.ndarray | None) -> dict[str, int] | None:  # fmt: skip
        """After a chunk's decision (under the state's lock): the prints of the rows sent wait for their
        answers, unchanged rows are marked; returns the prints of the records refreshed (sent with them)."""
        if not self.kept:
            return None
        flying = self._flying.setdefault(stream, Flying()).prints
        if prints is None:  # a row sent without a print: the record it makes has none
            if flying:
                for j in keep:
                    flying.pop(keys[j], None)
            return None
        p: list[Any] = prints.tolist()
        if len(keep) == len(keys):  # every row sent (keep: positions in order, each once); the last row wins
            flying.update(zip(keys, p, strict=True))
        else:
            flying.update(zip(map(keys.__getitem__, keep), map(p.__getitem__, keep), strict=True))
        if not refresh and stored.count(None) == len(stored):
            return None  # no record to attach a print to (a first run's chunks)
        twice = once(keys) or set()
        sources: dict[str, int] | None = None
        if refresh:
            at = {k: j for j, k in enumerate(keys)}
            sources = {k: p[at[k]] for k, _ in refresh if k not in twice}
        sent = set(keep)
        refreshed = sources.keys() if sources else ()
        same = [j for j, (k, rec) in enumerate(zip(keys, stored, strict=True))
                if rec is not None and j not in sent and k not in twice and k not in pending and k not in new
                and k not in refreshed]  # fmt: skip
        if same:
            users = [keys[j] for j in same]
            have = self._store.sources(stream, users)  # type: ignore[attr-defined]
            want = prints[same]
            stale = np.flatnonzero(have != want).tolist()
            if stale:
                recs = digests([stored[same[i]] for i in stale])  # type: ignore[misc]  # not None: filtered
                self._commit.mark(
                    stream,
                    {users[i]: (p[same[i]], int(d)) for i, d in zip(stale, recs.tolist(), strict=True)},
                )
        return sources

"""The delta state's index in memory: for each key a stream knows, the 64-bit hash of the key, the 64-bit
digest of its confirmed record, the id of the row holding the record (stores.py) and the source print of
the row it was confirmed for (rowprint.py; 0: none, the fast path does not apply to the key).

Hashes and digests are XXH3 (`xxhash`: a fixed specification, the same on every machine and version), so a
state file written on one machine reads alike on another. A lookup is a binary search of the chunk's key
hashes in sorted arrays, 24 bytes per known key (24 MB at 1M keys), with no access to the file: a row whose
JSON has the digest of the record is unchanged without reading the record. The source prints (8 more bytes
per key) go with the record: an entry that forgets a key or confirms a record without a print drops it. Entries made since the arrays
were last merged wait in a list, merged into the arrays once they are `_RECENT` or half the index (so a run
that writes n keys merges O(log n) times, not n / _RECENT times an O(n) copy), or before a lookup of more
than a few keys; a few (a first run's lookups, only keys it decided before) are looked up in the list.

Two keys with one hash (about one chance in 10**7 in a state of 10M keys) are told apart where it matters:
a record read back names its key (stores.py checks it), and a row's JSON holds its identifier, so equal
digests mean the same user.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import xxhash

_RECENT = 100_000  # entries waiting before they are merged into the sorted arrays (or half the index, if more)
_FEW = 16  # find() looks up at most 1/_FEW as many hashes as are waiting in them as they are, without a merge
_key_hash = xxhash.xxh3_64_intdigest
_digest = xxhash.xxh3_64_intdigest
I8 = np.dtype("<i8")  # hashes, digests and row ids, as stored (little-endian on every machine)


def key_hashes(keys: Sequence[str]) -> np.ndarray:
    """The hash of each key (its UTF-8), as int64."""
    return np.fromiter(map(_key_hash, map(str.encode, keys)), np.uint64, len(keys)).view(np.int64)


def key_hashes_of(keys: Iterable[str]) -> np.ndarray:
    """key_hashes of keys as an iterator gives them (not listed first: the state's 1M keys)."""
    return np.fromiter(map(_key_hash, map(str.encode, keys)), np.uint64).view(np.int64)


def hashes(keys: Sequence[bytes]) -> np.ndarray:
    """The hash of each key's UTF-8, as int64."""
    return np.fromiter(map(_key_hash, keys), np.uint64, len(keys)).view(np.int64)


def digests(records: Sequence[bytes]) -> np.ndarray:
    """The digest of each record, as int64; never 0 (0 marks a forgotten key)."""
    out = np.fromiter(map(_digest, records), np.uint64, len(records)).view(np.int64)
    out[out == 0] = 1
    return out


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # hashes, digests, names, source prints


def _four(h: np.ndarray, d: np.ndarray, r: np.ndarray, s: np.ndarray | None = None) -> Arrays:
    """Entries with their source prints (0 where none were given: rows written before prints existed)."""
    return h, d, r, np.zeros(len(h), np.int64) if s is None else s


def _last_of_each(h: np.ndarray, d: np.ndarray, r: np.ndarray, s: np.ndarray, *, keep_forgotten: bool = False,
                  ) -> Arrays:  # fmt: skip
    """Sorted by hash, the last entry of each hash (entries are in the order they were made), without the
    forgotten ones (name 0) unless `keep_forgotten`."""
    order = np.argsort(h, kind="stable")
    hs = h[order]
    last = np.ones(len(hs), dtype=bool)
    last[:-1] = hs[1:] != hs[:-1]
    pick = order[last]
    if not keep_forgotten:
        pick = pick[r[pick] != 0]
    return h[pick], d[pick], r[pick], s[pick]


def _inserted(a: np.ndarray, at: np.ndarray, keep: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`a` with `values` inserted so that they end at `at` (`keep`: the other positions, where `a` goes)."""
    out = np.empty(len(keep), a.dtype)
    out[at] = values
    out[keep] = a
    return out


class KeyIndex:
    """One stream's known keys: hash -> (record digest, record name, source print); not thread-safe (the
    store locks)."""

    __slots__ = ("h", "d", "r", "s", "_recent", "_pending")

    def __init__(self, parts: Iterable[Sequence[np.ndarray]] = ()) -> None:
        """From entries (hashes, digests, names and source prints, or none: 0; name 0: forgotten) in the order
        they were made."""
        self.h, self.d, self.r, self.s = (np.empty(0, np.int64) for _ in range(4))
        self._recent: list[Arrays] = [_four(*p) for p in parts]
        self._pending = sum(len(p[0]) for p in self._recent)
        if len(self._recent) == 1:  # one row written as one (stores.py): sorted, each hash once, none forgotten
            h, d, r, s = self._recent[0]
            if bool(np.all(h[1:] > h[:-1])) and bool(np.all(r != 0)):
                # As read (views of the file's blobs, read-only): a run that finds every row unchanged never
                # writes them, and copying 32 MB at 1M keys was a third of opening the state. A merge that
                # writes in place copies them first (_writable).
                self.h, self.d, self.r, self.s = h, d, r, s
                self._recent, self._pending = [], 0
        self.merge()

    def apply(self, h: np.ndarray, d: np.ndarray, r: np.ndarray, s: np.ndarray | None = None) -> None:
        """Entries made after those the index holds (later ones win; no source prints: 0)."""
        self._recent.append(_four(h, d, r, s))
        self._pending += len(h)
        if self._pending >= max(_RECENT, len(self.h) // 2):  # a merge costs the whole index: O(n) in all
            self.merge()

    def merge(self) -> None:
        """Move the recent entries into the sorted arrays."""
        if not self._recent:
            return
        h, d, r, s = (np.concatenate([p[i] for p in self._recent]) for i in range(4))
        self._recent, self._pending = [], 0
        h, d, r, s = _last_of_each(h, d, r, s, keep_forgotten=True)
        pos = np.searchsorted(self.h, h)
        hit = pos < len(self.h)
        hit[hit] = self.h[pos[hit]] == h[hit]
        if hit.any():  # (even an empty assignment raises on the file's read-only arrays)
            self._writable()
            self.d[pos[hit]] = d[hit]
            self.r[pos[hit]] = r[hit]
            self.s[pos[hit]] = s[hit]
        new = ~hit & (r != 0)
        if new.any():
            # Where each new entry lands (`h` is sorted, so `pos` is too), and one mask shared by the four
            # arrays: a third less than np.insert, which works both out again for each array.
            at = pos[new] + np.arange(int(np.count_nonzero(new)))
            keep = np.ones(len(self.h) + len(at), dtype=bool)
            keep[at] = False
            pairs = ((self.h, h), (self.d, d), (self.r, r), (self.s, s))
            self.h, self.d, self.r, self.s = (_inserted(a, at, keep, v[new]) for a, v in pairs)
        if (hit & (r == 0)).any():  # forgotten keys leave the arrays
            keep = self.r != 0
            self.h, self.d, self.r, self.s = self.h[keep], self.d[keep], self.r[keep], self.s[keep]

    def _writable(self) -> None:
        """The arrays as copies of their own where they are still the file's read-only blobs (__init__)."""
        if not (self.d.flags.writeable and self.r.flags.writeable and self.s.flags.writeable):
            self.h, self.d, self.r, self.s = (np.array(a) for a in (self.h, self.d, self.r, self.s))

    def rename(self, names: np.ndarray) -> None:
        """New record names of the merged keys, in the order of `rows()` (0 forgets the key); no entry may be
        waiting (call `rows()` first)."""
        assert not self._recent and len(names) == len(self.h)
        keep = names != 0
        self.h, self.d, self.r, self.s = self.h[keep], self.d[keep], names[keep], self.s[keep]

    def _positions(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each hash is in the arrays, and whether it is there at all (the arrays are not empty)."""
        if len(h) < 2 or bool(np.all(h[1:] >= h[:-1])):  # sorted already (the fast path's candidates)
            pos = np.minimum(np.searchsorted(self.h, h), len(self.h) - 1)
            return pos, self.h[pos] == h
        order = np.argsort(h)  # searched in order: 6 x faster than in the chunk's (random) order at 1M keys
        pos = np.empty(len(h), np.int64)
        pos[order] = np.minimum(np.searchsorted(self.h, h[order]), len(self.h) - 1)
        return pos, self.h[pos] == h

    def find(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(digest, record name) of each hash; name 0 where the index does not know it. A few hashes (a first
        run's lookups: only keys it decided before) are looked up in the waiting entries as they are."""
        few = len(h) * _FEW < self._pending
        if not few:
            self.merge()
        d = np.zeros(len(h), np.int64)
        r = np.zeros(len(h), np.int64)
        if len(self.h):
            pos, hit = self._positions(h)
            d[hit], r[hit] = self.d[pos[hit]], self.r[pos[hit]]
        if few:
            self._find_waiting(h, d, r)
        return d, r

    def _find_waiting(self, h: np.ndarray, d: np.ndarray, r: np.ndarray) -> None:
        """Overwrite (d, r) of the hashes that entries not merged yet name, in the order they were made (the
        last wins; a forgotten key's name is 0)."""
        wanted = np.unique(h)
        for ph, pd, pr, _ in self._recent:
            at = np.flatnonzero(np.isin(ph, wanted))
            if not len(at):
                continue
            for x, dx, rx in zip(ph[at].tolist(), pd[at].tolist(), pr[at].tolist(), strict=True):
                same = h == x
                d[same], r[same] = (dx, rx) if rx else (0, 0)

    def find_all(self, h: np.ndarray) -> Arrays:
        """(hash, digest, record name, source print) of each hash; all 0 but the hash where it is unknown."""
        self.merge()
        d, r, s = (np.zeros(len(h), np.int64) for _ in range(3))
        if len(self.h):
            pos, hit = self._positions(h)
            d[hit], r[hit], s[hit] = self.d[pos[hit]], self.r[pos[hit]], self.s[pos[hit]]
        return h, d, r, s

    def sources(self, h: np.ndarray) -> np.ndarray:
        """The source print of each hash; 0 where the index does not know it or keeps no print (the fast
        path's lookup: nothing else gathered)."""
        self.merge()
        s = np.zeros(len(h), np.int64)
        if len(self.h):
            pos, hit = self._positions(h)
            s[hit] = self.s[pos[hit]]
        return s

    def count(self) -> int:
        self.merge()
        return len(self.h)

    def rows(self) -> np.ndarray:
        """The record names of every known key."""
        self.merge()
        return self.r

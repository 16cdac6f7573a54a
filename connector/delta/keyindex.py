"""The delta state's index in memory: for each key a stream knows, the 64-bit hash of the key, the 64-bit
digest of its confirmed record and the id of the row holding the record (stores.py).

Hashes and digests are XXH3 (`xxhash`: a fixed specification, the same on every machine and version), so a
state file written on one machine reads alike on another. A lookup is a binary search of the chunk's key
hashes in sorted arrays, 24 bytes per known key (24 MB at 1M keys), with no access to the file: a row whose
JSON has the digest of the record is unchanged without reading the record. Entries made since the arrays
were last merged wait in a list, merged into the arrays before a lookup or once they are `_RECENT`.

Two keys with one hash (about one chance in 10**7 in a state of 10M keys) are told apart where it matters:
a record read back names its key (stores.py checks it), and a row's JSON holds its identifier, so equal
digests mean the same user.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import xxhash

_RECENT = 100_000  # entries waiting before they are merged into the sorted arrays
_key_hash = xxhash.xxh3_64_intdigest
_digest = xxhash.xxh3_64_intdigest
I8 = np.dtype("<i8")  # hashes, digests and row ids, as stored (little-endian on every machine)


def key_hashes(keys: Sequence[str]) -> np.ndarray:
    """The hash of each key (its UTF-8), as int64."""
    return np.fromiter(map(_key_hash, map(str.encode, keys)), np.uint64, len(keys)).view(np.int64)


def hashes(keys: Sequence[bytes]) -> np.ndarray:
    """The hash of each key's UTF-8, as int64."""
    return np.fromiter(map(_key_hash, keys), np.uint64, len(keys)).view(np.int64)


def digests(records: Sequence[bytes]) -> np.ndarray:
    """The digest of each record, as int64; never 0 (0 marks a forgotten key)."""
    out = np.fromiter(map(_digest, records), np.uint64, len(records)).view(np.int64)
    out[out == 0] = 1
    return out


def _last_of_each(h: np.ndarray, d: np.ndarray, r: np.ndarray, *, keep_forgotten: bool = False,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Sorted by hash, the last entry of each hash (entries are in the order they were made), without the
    forgotten ones (name 0) unless `keep_forgotten`."""
    order = np.argsort(h, kind="stable")
    hs = h[order]
    last = np.ones(len(hs), dtype=bool)
    last[:-1] = hs[1:] != hs[:-1]
    pick = order[last]
    if not keep_forgotten:
        pick = pick[r[pick] != 0]
    return h[pick], d[pick], r[pick]


class KeyIndex:
    """One stream's known keys: hash -> (record digest, record name); not thread-safe (the store locks)."""

    __slots__ = ("h", "d", "r", "_recent", "_pending")

    def __init__(self, parts: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]] = ()) -> None:
        """From entries (hashes, digests, names; name 0: forgotten) in the order they were made."""
        self.h, self.d, self.r = (np.empty(0, np.int64) for _ in range(3))
        self._recent: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = list(parts)
        self._pending = sum(len(p[0]) for p in self._recent)
        if len(self._recent) == 1:  # one row written as one (stores.py): sorted, each hash once, none forgotten
            h, d, r = self._recent[0]
            if bool(np.all(h[1:] > h[:-1])) and bool(np.all(r != 0)):
                self.h, self.d, self.r = np.array(h), np.array(d), np.array(r)  # writable copies
                self._recent, self._pending = [], 0
        self.merge()

    def apply(self, h: np.ndarray, d: np.ndarray, r: np.ndarray) -> None:
        """Entries made after those the index holds (later ones win)."""
        self._recent.append((h, d, r))
        self._pending += len(h)
        if self._pending >= _RECENT:
            self.merge()

    def merge(self) -> None:
        """Move the recent entries into the sorted arrays."""
        if not self._recent:
            return
        h, d, r = (np.concatenate([p[i] for p in self._recent]) for i in range(3))
        self._recent, self._pending = [], 0
        h, d, r = _last_of_each(h, d, r, keep_forgotten=True)
        pos = np.searchsorted(self.h, h)
        hit = pos < len(self.h)
        hit[hit] = self.h[pos[hit]] == h[hit]
        self.d[pos[hit]] = d[hit]
        self.r[pos[hit]] = r[hit]
        new = ~hit & (r != 0)
        if new.any():
            at = pos[new]
            self.h, self.d, self.r = (np.insert(a, at, v[new]) for a, v in ((self.h, h), (self.d, d), (self.r, r)))
        if (hit & (r == 0)).any():  # forgotten keys leave the arrays
            keep = self.r != 0
            self.h, self.d, self.r = self.h[keep], self.d[keep], self.r[keep]

    def rename(self, names: np.ndarray) -> None:
        """New record names of the merged keys, in the order of `rows()` (0 forgets the key); no entry may be
        waiting (call `rows()` first)."""
        assert not self._recent and len(names) == len(self.h)
        keep = names != 0
        self.h, self.d, self.r = self.h[keep], self.d[keep], names[keep]

    def find(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(digest, record name) of each hash; name 0 where the index does not know it."""
        self.merge()
        d = np.zeros(len(h), np.int64)
        r = np.zeros(len(h), np.int64)
        if len(self.h):
            order = np.argsort(h)  # searched in order: 6 x faster than in the chunk's (random) order at 1M keys
            pos = np.empty(len(h), np.int64)
            pos[order] = np.minimum(np.searchsorted(self.h, h[order]), len(self.h) - 1)
            hit = self.h[pos] == h
            d[hit], r[hit] = self.d[pos[hit]], self.r[pos[hit]]
        return d, r

    def count(self) -> int:
        self.merge()
        return len(self.h)

    def rows(self) -> np.ndarray:
        """The record names of every known key."""
        self.merge()
        return self.r

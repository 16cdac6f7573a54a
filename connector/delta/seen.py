"""The keys one run has decided so far, as a Bloom filter: a run that starts on an empty state looks up
only the keys it may have confirmed itself, not every key of every chunk.

A fixed 2**26-bit filter (8 MB, whatever the run's size) with two probes per key from Python's string hash
(stable within the process): about 0.1 % false positives at 1M keys, 7 % at 10M. A false positive only
costs a lookup; there are no false negatives, so a key the filter has never seen cannot be in the store.
"""

from __future__ import annotations

import numpy as np

_BITS = 26
_MASK = (1 << _BITS) - 1


class Seen:
    """Keys added so far; `add` answers, for each key, whether it may have been added before."""

    def __init__(self) -> None:
        self._bits = np.zeros(1 << (_BITS - 3), dtype=np.uint8)

    def add(self, keys: list[str]) -> np.ndarray:
        """Add the keys; a bool per key: possibly added before this call (a repeat within `keys` is not)."""
        h = np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys)).view(np.uint64)
        probes = [(h & _MASK).astype(np.int64), ((h >> np.uint64(32)) & _MASK).astype(np.int64)]
        bits = self._bits
        maybe = np.ones(len(keys), dtype=bool)
        for p in probes:
            maybe &= (bits[p >> 3] >> (p & 7).astype(np.uint8)) & 1 == 1
        for p in probes:  # one bit of each byte at a time: a repeated byte index then sets one bit (no ufunc.at)
            at, bit = p >> 3, p & 7
            for b in range(8):
                bits[at[bit == b]] |= np.uint8(1 << b)
        return maybe

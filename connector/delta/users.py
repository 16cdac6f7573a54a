"""A chunk's users as delta sync's fast path and mirror mode read them: each row's key (identifier_keys:
"external_id:u1", None where the row names nobody) and the key's XXH3 hash (keyindex.key_hashes), which the
state's index is searched by and mirror mode keeps for each row read.

Both read every row of every chunk, and an unchanged re-run does little else: where the identifier is one
Arrow text column (external_id, braze_id: mapping.objects.identifier_text), the keys are joined by Arrow and
hashed straight from its bytes, and no Python string is made per row; the key texts are made only when
asked (a user in flight is looked for by its key). Other identifiers (user alias, email, phone) make the keys
first, as identifier_keys does, and hash them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connector.arrow_values import scalar, to_numpy
from connector.config import Stream
from connector.delta.keyindex import hashes, key_hashes
from connector.records import Chunk

_EMPTY_TEXT = scalar("")


class ChunkUsers:
    """The users of one chunk's rows: `keys` (made when first read) and `hashed()`."""

    __slots__ = ("_stream", "_chunk", "_keys", "_hashed")

    def __init__(self, stream: Stream | None = None, chunk: Chunk | None = None,
                 keys: Sequence[str | None] | None = None) -> None:  # fmt: skip
        """From a stream's chunk, or from the keys themselves (`keys`)."""
        self._stream, self._chunk = stream, chunk
        self._keys: Sequence[str | None] | None = keys
        self._hashed: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def keys(self) -> Sequence[str | None]:
        """Each row's key (identifier_keys)."""
        if self._keys is None:
            assert self._stream is not None and self._chunk is not None
            # mapping's objects.py, imported here: a chunk the memo knew (delta/memo.py) never needs it
            from connector.mapping import identifier_keys

            self._keys = identifier_keys(self._stream, self._chunk)
        return self._keys

    def hashed(self) -> tuple[np.ndarray, np.ndarray]:
        """The positions of the rows that name a user, and the XXH3 hash of each one's key (int64)."""
        if self._hashed is None:
            self._hashed = self._from_arrow() or self._from_keys()
        return self._hashed

    def hashed_from_arrow(self) -> tuple[np.ndarray, np.ndarray] | None:
        """hashed() where the identifier is one Arrow text column (a C loop, no Python string per row); else
        None, and nothing is made."""
        if self._hashed is None:
            self._hashed = self._from_arrow()
        return self._hashed

    def made(self) -> tuple[np.ndarray, np.ndarray] | None:
        """hashed(), if it was made (or preset) already; else None (nothing is made)."""
        return self._hashed

    def preset(self, at: np.ndarray, hashes: np.ndarray) -> None:
        """What hashed() returns, known already (memo.py: the same chunk's users, remembered)."""
        self._hashed = (at, hashes)

    def _from_keys(self) -> tuple[np.ndarray, np.ndarray]:
        keys = self.keys
        if None in keys:
            at = np.fromiter((j for j, k in enumerate(keys) if k is not None), np.int64)
            return at, key_hashes([keys[j] for j in at.tolist()])  # type: ignore[misc]  # not None: filtered
        return np.arange(len(keys), dtype=np.int64), key_hashes(keys)  # type: ignore[arg-type]

    def _from_arrow(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self._keys is not None or self._stream is None or self._chunk is None:
            return None
        from connector.mapping.objects import identifier_text

        found = identifier_text(self._stream, self._chunk)
        if found is None:
            return None
        prefix, values = found
        if values.null_count:
            valid = pc.is_valid(values)
            at = np.flatnonzero(to_numpy(valid))
            values = values.filter(valid)
        else:
            at = np.arange(len(values), dtype=np.int64)
        # The key's UTF-8 is the prefix's then the value's: one join, then one C loop of XXH3 calls. Arrow
        # scalars and to_pylist: a Python value given to pyarrow, or to_numpy() of text, imports pandas
        # (arrow_values.py), 0.13-0.25 s of an unchanged re-run that otherwise never needs it.
        joined = pc.binary_join_element_wise(scalar(prefix), values, _EMPTY_TEXT).cast(pa.large_binary())
        return at.astype(np.int64, copy=False), hashes(joined.to_pylist())

"""The rows one write of the PostgreSQL delta state sends (pg_store.py): confirmations given by key, and new
users confirmed by position (flights.Bulk), as the arrays the upsert binds or the Arrow table COPY appends.

A first run's confirmations come as a Bulk: keys and records already joined into blobs with their ends, key
hashes, record digests and prints computed once when the chunk was sent (flights.Flight). They become the
COPY's Arrow columns without a Python object per row (the blobs are the string arrays' data, the ends their
offsets): about 2 µs of this process's CPU a row less than making (key, record) pairs, hashing both again and
building the arrays from Python lists (bench/pg_state_cost.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import repeat
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa

from connector.delta.keyindex import digests, key_hashes

if TYPE_CHECKING:
    from connector.delta.flights import Bulk

_MAX_OFFSET = 2**31 - 1  # an Arrow string array's offsets are int32


class Rows(NamedTuple):
    """The confirmations of one write given by key: keys, records (JSON), key hashes, digests, source prints
    (0: none)."""

    keys: list[str]
    records: list[bytes]
    h: np.ndarray
    d: np.ndarray
    s: np.ndarray

    @property
    def p(self) -> np.ndarray:
        """The prints as stored (bound)."""
        return bound(self.s, self.d)

    @staticmethod
    def of(confirm: list[tuple[str, bytes]], sources: Mapping[str, int] | None) -> Rows:
        """One row per key (the last change of a key wins: ON CONFLICT may touch a row once)."""
        last = dict(confirm)
        keys, records = list(last), list(last.values())
        h, d = key_hashes(keys), digests(records)
        n = len(keys)
        s = np.fromiter(map(sources.get, keys, repeat(0)), np.int64, n) if sources else np.zeros(n, np.int64)
        return Rows(keys, records, h, d, s)

    def table(self, pipeline: str, stream: str, at: np.ndarray | None) -> pa.Table:
        """The rows `at` (None: all) as the table's columns, for COPY: Arrow arrays built in C, no str per
        record (the JSON is checked as UTF-8 by the cast)."""
        keys, records = pa.array(self.keys, pa.string()), pa.array(self.records, pa.binary()).cast(pa.string())
        h, d, p = self.h, self.d, self.p
        if at is not None:
            keys, records, h, d, p = keys.take(at), records.take(at), h[at], d[at], p[at]
        return columns(pipeline, stream, keys, records, h, d, p)

    def lists(self, at: np.ndarray) -> list[Any]:
        """The rows `at` as the arrays the upsert binds: keys, records, hashes, digests, prints."""
        j = at.tolist()
        return [[self.keys[i] for i in j], [self.records[i].decode() for i in j],
                *(a[at].tolist() for a in (self.h, self.d, self.p))]  # fmt: skip


def fits(bulk: Bulk) -> bool:
    """Whether a Bulk's blobs fit Arrow string arrays (bulk_table)."""
    return len(bulk) > 0 and int(bulk.key_ends[-1]) <= _MAX_OFFSET and int(bulk.record_ends[-1]) <= _MAX_OFFSET


def bulk_table(pipeline: str, stream: str, bulk: Bulk) -> pa.Table:
    """A Bulk's users as the table's columns, for COPY: the blobs are the string arrays' data (checked as
    UTF-8, in C). The Bulk must fit (fits)."""
    keys, records = _strings(bulk.keys, bulk.key_ends), _strings(bulk.records, bulk.record_ends)
    records.validate(full=True)  # pa.ArrowInvalid on bad UTF-8, as the cast of Rows.table
    return columns(pipeline, stream, keys, records, bulk.h, bulk.d, bound(bulk.s, bulk.d))


def bulk_pairs(bulk: Bulk, confirm: list[tuple[str, bytes]], forget: list[str],
               sources: Mapping[str, int] | None) -> tuple[list[tuple[str, bytes]], dict[str, int]]:  # fmt: skip
    """A Bulk and the changes by key of the same write as one list of (key, record) with their prints, for a
    write whose Bulk cannot go by COPY as it is. The changes by key are the newer ones: a key they confirm
    takes their record and print (none: none), a key they forget is not confirmed from the Bulk."""
    newer = {k for k, _ in confirm}.union(forget)
    pairs = [(k, r) for k, r in bulk.pairs() if k not in newer]
    prints = {k: v for k, v in bulk.sources().items() if k not in newer}
    return [*pairs, *confirm], {**prints, **(sources or {})}


def columns(pipeline: str, stream: str, keys: pa.Array, records: pa.Array, h: np.ndarray, d: np.ndarray,
            p: np.ndarray) -> pa.Table:  # fmt: skip
    """The delta table's columns, in its order, for COPY (print 0: NULL)."""
    n = len(h)
    return pa.table({"pipeline": pa.repeat(pipeline, n).cast(pa.string()), "stream": pa.repeat(stream, n).cast(pa.string()),
                     "key": keys, "record": records, "key_hash": h, "digest": d,
                     "print": pa.array(p, pa.int64(), mask=p == 0)})  # fmt: skip


def bound(s: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Prints as stored: XOR their record's digest (0: none, NULL on the server). A process of an earlier
    version that replaces a record leaves its print in place; bound to the digest it no longer has, that
    print reads back as a number no row's print is, never as a skip."""
    return np.where(s != 0, s ^ d, 0)


def _strings(blob: bytes, ends: np.ndarray) -> pa.Array:
    offsets = np.zeros(len(ends) + 1, np.int32)
    offsets[1:] = ends
    return pa.Array.from_buffers(pa.string(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(blob)])

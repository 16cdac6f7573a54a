"""The local delta state file's tables (stores.SqliteStore keeps the logic): the log of confirmed records and
the index rows, as blobs, read and written inside the caller's transaction.

- `delta_log`: one row per transaction that confirmed records: their keys and records, each as one blob
  with the offsets where each ends (int64, little-endian). A record is named by its row id and position
  (`row << 32 | position`).
- `delta_index`: one row per transaction, its entries as three int64 arrays (key hashes, record digests,
  record names; 0 forgets the key), applied in id order (keyindex.KeyIndex), and a fourth, `sources`: the
  source print each record was confirmed for (rowprint.py; 0: none). Files written before it get the column
  (NULL: no prints) when a run that may write opens them; a version that does not know it reads the rest.

A name whose row or position is not in the log yields nothing (`lost` gets the row): the reader decides
(stores.py reads the index again, a rewrite forgets the key). A key that is not UTF-8 means bytes SQLite
cannot check (a blob's overflow pages) are damaged: it raises sqlite3.DatabaseError, as SQLite does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING

import numpy as np
import orjson

from connector.delta.keyindex import I8, KeyIndex, digests, hashes, key_hashes

if TYPE_CHECKING:
    from connector.delta.flights import Bulk

SCHEMA = """
CREATE TABLE IF NOT EXISTS delta_log (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    n INTEGER NOT NULL,
    key_ends BLOB NOT NULL,
    record_ends BLOB NOT NULL,
    keys BLOB NOT NULL,
    records BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS delta_index (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    hashes BLOB NOT NULL,
    digests BLOB NOT NULL,
    rids BLOB NOT NULL,
    sources BLOB
);
DROP TABLE IF EXISTS state;
"""
ADD_SOURCES = "ALTER TABLE delta_index ADD COLUMN sources BLOB"  # a file written before the source prints
# `state` held the per-attribute fingerprints of earlier versions (pending/confirmed per key): a state file
# written by them loses it once, and the first delta run after the upgrade sends everything again.
_LOG_ROWS = "SELECT id, key_ends, record_ends, keys, records FROM delta_log WHERE id IN (SELECT value FROM json_each(?))"
_LOG_KEYS = "SELECT id, key_ends, keys FROM delta_log WHERE id IN (SELECT value FROM json_each(?))"
_INSERT_LOG = "INSERT INTO delta_log (stream, n, key_ends, record_ends, keys, records) VALUES (?, ?, ?, ?, ?, ?)"
_INSERT_INDEX = "INSERT INTO delta_index (stream, hashes, digests, rids, sources) VALUES (?, ?, ?, ?, ?)"
BATCH = 100_000  # records per log row written by a conversion or a compaction
_POS = 32  # a record's name: its log row << _POS | its position in the row
_MASK = (1 << _POS) - 1
Entries = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # an index row: hashes, digests, names, prints


def has_sources(db: sqlite3.Connection) -> bool:
    """Whether the file's index rows have the `sources` column (a file from before it may not)."""
    return any(name == "sources" for _, name, *_ in db.execute("PRAGMA table_info(delta_index)"))


def as_json(values: Sequence[str] | Sequence[int]) -> str:
    return orjson.dumps(values).decode()


def _arrays(h: bytes, d: bytes, r: bytes, s: bytes | None) -> Entries:
    """Read-only views of an index row's blobs (KeyIndex copies what it keeps); no prints: zeros."""
    hashes_, digests_, names = (np.frombuffer(b, I8).astype(np.int64, copy=False) for b in (h, d, r))
    prints = np.zeros(len(hashes_), np.int64) if s is None else np.frombuffer(s, I8).astype(np.int64, copy=False)
    return hashes_, digests_, names, prints


def _blobs(*arrays: np.ndarray) -> list[bytes]:
    return [a.astype(I8).tobytes() for a in arrays]


def _ends(parts: Sequence[bytes]) -> bytes:
    return np.fromiter(map(len, parts), np.int64, len(parts)).cumsum().astype(I8).tobytes()


def _slices(ends: bytes, data: bytes, positions: Iterable[int]) -> Iterator[tuple[int, bytes]]:
    """(position, bytes) of each wanted part of a log row's blob (none for a position past its end)."""
    e = np.frombuffer(ends, I8)
    for p in positions:
        if p < len(e):
            yield p, data[(int(e[p - 1]) if p else 0) : int(e[p])]


def _not_utf8() -> sqlite3.DatabaseError:
    return sqlite3.DatabaseError("database disk image is malformed (a key read back is not UTF-8)")


def index_rows(db: sqlite3.Connection, after: int, *, sources: bool = True) -> list[tuple[int, str, Entries]]:
    """(id, stream, entries) of the index rows after id `after`, in id order (`sources`: the file has the
    column; else every print is 0)."""
    prints = "sources" if sources else "NULL"
    return [(rid, stream, _arrays(h, d, r, s)) for rid, stream, h, d, r, s in db.execute(
        f"SELECT id, stream, hashes, digests, rids, {prints} FROM delta_index WHERE id > ? ORDER BY id", (after,))]  # fmt: skip


def write_index(db: sqlite3.Connection, stream: str, h: np.ndarray, d: np.ndarray, r: np.ndarray,
                s: np.ndarray | None = None) -> int:  # fmt: skip
    """Append an index row (`s`: the source prints; None: none); its id."""
    prints = None if s is None or not s.any() else _blobs(s)[0]
    return int(db.execute(_INSERT_INDEX, (stream, *_blobs(h, d, r), prints)).lastrowid or 0)


def append(db: sqlite3.Connection, stream: str, confirm: Sequence[tuple[str, bytes]], forget: Sequence[str],
           sources: Mapping[str, int] | None = None) -> tuple[int, Entries]:  # fmt: skip
    """Append the records and their index row (forget, then confirm): (index row id, entries). `sources`:
    the source print of confirmed keys that have one (rowprint.py)."""
    names = np.empty(0, np.int64)
    keys: list[str] = list(map(itemgetter(0), confirm))  # C loops: a first run writes every key once
    key_bytes = list(map(str.encode, keys))
    records: list[bytes] = list(map(itemgetter(1), confirm))
    if confirm:
        names = _log(db, stream, key_bytes, records)
    zeros = np.zeros(len(forget), np.int64)
    h = np.concatenate([key_hashes(forget), hashes(key_bytes)])
    d = np.concatenate([zeros, digests(records)])
    r = np.concatenate([zeros, names])
    s = np.zeros(len(h), np.int64)
    if sources:
        s[len(forget):] = np.fromiter(map(sources.get, keys, repeat(0)), np.int64, len(confirm))
    return write_index(db, stream, h, d, r, s), (h, d, r, s)


def append_bulk(db: sqlite3.Connection, stream: str, bulk: Bulk) -> tuple[int, Entries]:
    """Append new users confirmed by position (flights.py) as one log row and its index row, from arrays the
    flight made when the users were decided: no per-key work here but the blobs' joins (flights.gather)."""
    cur = db.execute(_INSERT_LOG, (stream, len(bulk), bulk.key_ends.astype(I8).tobytes(),
                                   bulk.record_ends.astype(I8).tobytes(), bulk.keys, bulk.records))  # fmt: skip
    names = (int(cur.lastrowid or 0) << _POS) + np.arange(len(bulk), dtype=np.int64)
    return write_index(db, stream, bulk.h, bulk.d, names, bulk.s), (bulk.h, bulk.d, names, bulk.s)


def _log(db: sqlite3.Connection, stream: str, keys: list[bytes], records: list[bytes]) -> np.ndarray:
    """Append one log row; the names of its records."""
    cur = db.execute(_INSERT_LOG, (stream, len(keys), _ends(keys), _ends(records), b"".join(keys), b"".join(records)))
    return (int(cur.lastrowid or 0) << _POS) + np.arange(len(keys), dtype=np.int64)


def records(db: sqlite3.Connection, names: Iterable[int], lost: set[int] | None = None,
            ) -> Iterator[tuple[int, str, bytes]]:  # fmt: skip
    """(name, key, record) of the named records, by log row (one row's blobs in memory at a time); the rows
    not found are added to `lost`."""
    by_row: dict[int, list[int]] = {}
    for name in names:
        by_row.setdefault(name >> _POS, []).append(name & _MASK)
    rows = sorted(by_row)
    for a in range(0, len(rows), 1000):
        missing = set(rows[a : a + 1000])
        for row, key_ends, record_ends, keys, recs in db.execute(_LOG_ROWS, (as_json(rows[a : a + 1000]),)):
            missing.discard(row)
            wanted = by_row[row]
            found = dict(_slices(record_ends, recs, wanted))
            for p, key in _slices(key_ends, keys, wanted):
                try:
                    text = key.decode()
                except UnicodeDecodeError:
                    raise _not_utf8() from None
                yield row << _POS | p, text, found.get(p, b"")
        if lost is not None:
            lost.update(missing)


def keys_of(db: sqlite3.Connection, names: np.ndarray, lost: set[int]) -> list[str]:
    """The keys of the named records (in no order), reading only the key blobs; the rows not found are added
    to `lost`."""
    names = np.sort(names)
    rows, first = np.unique(names >> _POS, return_index=True)
    bounds = [*first.tolist(), len(names)]
    out: list[str] = []
    for a in range(0, len(rows), 1000):
        ids = rows[a : a + 1000].tolist()
        where = {row: a + k for k, row in enumerate(ids)}
        for row, key_ends, keys in db.execute(_LOG_KEYS, (as_json(ids),)):
            i = where.pop(row)
            ends = np.frombuffer(key_ends, I8)
            pos = names[bounds[i] : bounds[i + 1]] & _MASK
            pos = pos[pos < len(ends)]
            starts = np.concatenate([[0], ends[:-1]])
            try:
                out.extend(keys[x:y].decode() for x, y in zip(starts[pos].tolist(), ends[pos].tolist(), strict=True))
            except UnicodeDecodeError:
                raise _not_utf8() from None
        lost.update(where)
    return out


def rewrite(db: sqlite3.Connection, stream: str, index: KeyIndex) -> None:
    """Append the stream's live records as new log rows and point the index at them, pairing records and
    entries by name: a key whose record is not in the log (lost, or named by a stale index) is forgotten."""
    names = index.rows()
    order = np.argsort(names)
    ordered = names[order]
    renamed = np.zeros_like(names)
    keys: list[bytes] = []
    recs: list[bytes] = []
    got: list[int] = []
    for name, key, record in records(db, ordered.tolist()):
        keys.append(key.encode())
        recs.append(record)
        got.append(name)
        if len(got) == BATCH:
            renamed[order[np.searchsorted(ordered, got)]] = _log(db, stream, keys, recs)
            keys, recs, got = [], [], []
    if got:
        renamed[order[np.searchsorted(ordered, got)]] = _log(db, stream, keys, recs)
    index.rename(renamed)

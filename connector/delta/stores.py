"""Where delta sync's confirmed records live: a local SQLite file (default) or PostgreSQL (pg_store.py).

A store holds only what Braze confirmed, as (stream, key) -> record bytes. `lookup` answers a whole chunk
at once; given the rows' own JSON it answers a row whose JSON is the confirmed record with that JSON, so
unchanged rows cost no read. `write` confirms and forgets in one transaction; `empty(stream)` says whether
a stream has no record at all (a run that starts so looks nothing up), `keys(stream)` lists a stream's keys
in code-point order and `count(stream)` counts them.

The local file is a log, so that writing and reading cost the same whatever order the keys come in (user
ids are often random, UUIDs say; a table keyed by them took 21 s of CPU to write 1M records, 20 times more
than keys in order, because every write touched a page of its own):
- `delta_log`: one row per transaction that confirmed records, only ever appended: their keys and records,
  each as one blob with the offsets where each ends. A record is named by its row id and position
  (`row << 32 | position`). Records that later ones replaced stay until they outnumber the live ones, and
  are then rewritten away at the end of a run (`_compact`);
- `delta_index`: one row per transaction, its entries as three arrays (key hashes, record digests, record
  names; 0 forgets the key). Read once when the store is first asked, they give keyindex.KeyIndex in
  memory (24 bytes per known key); the end of a run that wrote many rows writes them again as one row.
A kill -9 loses nothing committed: the index is rebuilt from the rows whatever the last run did.

A file written by earlier versions (one `delta` table keyed by (stream, key)) is converted when it is first
opened for a run that may write; a dry run reads it as it is (tests/unit/test_delta.py).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import orjson

from connector.delta.keyindex import I8, KeyIndex, digests, hashes, key_hashes
from connector.errors import ConfigError


class Store(Protocol):
    """The confirmed records of one pipeline's delta streams."""

    label: str

    def lookup(self, stream: str, keys: list[str], rows: Sequence[bytes] | None = None) -> list[bytes | None]: ...

    def empty(self, stream: str) -> bool: ...

    def write(self, stream: str, confirm: list[tuple[str, bytes]], forget: list[str]) -> None: ...

    def keys(self, stream: str) -> list[str]: ...

    def count(self, stream: str) -> int: ...

    def close(self) -> None: ...


def open_db(path: Path) -> sqlite3.Connection:
    """The state file, opened for several threads (autocommit; WAL, so a killed run keeps what it committed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def open_state_file(path: Path, schema: str, *, read_only: bool) -> sqlite3.Connection | None:
    """The state file with `schema`'s tables (None: a read-only run and no file yet: create nothing).

    Raises:
        ConfigError: the file cannot be opened or its tables created.
    """
    if read_only and not path.exists():
        return None
    try:
        db = open_db(path)
        if not read_only:
            db.executescript(schema)
    except (sqlite3.Error, OSError) as exc:
        raise ConfigError(f"state file {path}: cannot be opened ({exc}); check state.path") from None
    return db


_SCHEMA = """
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
    rids BLOB NOT NULL
);
DROP TABLE IF EXISTS state;
"""
# `state` held the per-attribute fingerprints of earlier versions (pending/confirmed per key): a state file
# written by them loses it once, and the first delta run after the upgrade sends everything again.
# `delta` is the layout before the log (converted by _convert; read as it is by a read-only store).
_LEGACY_LOOKUP = "SELECT d.record FROM json_each(?) AS j LEFT JOIN delta AS d ON d.stream = ? AND d.key = j.value"
_LOG_ROWS = "SELECT id, key_ends, record_ends, keys, records FROM delta_log WHERE id IN (SELECT value FROM json_each(?))"
_INSERT_LOG = "INSERT INTO delta_log (stream, n, key_ends, record_ends, keys, records) VALUES (?, ?, ?, ?, ?, ?)"
_INSERT_INDEX = "INSERT INTO delta_index (stream, hashes, digests, rids) VALUES (?, ?, ?, ?)"
_BATCH = 100_000  # records per log row written by a conversion or a compaction
_SNAPSHOT_ROWS = 64  # index rows of one stream above which the end of a run writes them again as one
_POS = 32  # a record's name: its log row << _POS | its position in the row
_MASK = (1 << _POS) - 1


def _json(values: Sequence[str] | Sequence[int]) -> str:
    return orjson.dumps(values).decode()


def _arrays(h: bytes, d: bytes, r: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read-only views of an index row's blobs (KeyIndex copies what it keeps)."""
    return tuple(np.frombuffer(b, I8).astype(np.int64, copy=False) for b in (h, d, r))  # type: ignore[return-value]


def _blobs(*arrays: np.ndarray) -> list[bytes]:
    return [a.astype(I8).tobytes() for a in arrays]


def _ends(parts: Sequence[bytes]) -> bytes:
    return np.fromiter(map(len, parts), np.int64, len(parts)).cumsum().astype(I8).tobytes()


def _slices(ends: bytes, data: bytes, positions: Iterable[int]) -> Iterator[tuple[int, bytes]]:
    """(position, bytes) of each wanted part of a log row's blob."""
    e = np.frombuffer(ends, I8)
    for p in positions:
        yield p, data[(int(e[p - 1]) if p else 0) : int(e[p])]


class SqliteStore:
    """The state file (`state.path`); thread-safe."""

    def __init__(self, path: Path, *, read_only: bool) -> None:
        self.path, self.label = path, str(path)
        self._lock = threading.Lock()
        self._read_only = read_only
        self._db = open_state_file(path, _SCHEMA, read_only=read_only)  # None: compare against nothing
        self._index: dict[str, KeyIndex] | None = None  # loaded at the first question
        self._applied = 0  # the last delta_index row the index holds
        self._rows: dict[str, int] = {}  # stream -> delta_index rows read for it
        self._legacy = False  # a read-only store on a file of the previous layout
        self._wrote = False  # whether this store wrote anything (the end of its run may compact)
        if self._db is not None:
            try:
                tables = {t for (t,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "delta" in tables:
                    if read_only:
                        self._legacy = "delta_index" not in tables
                    else:
                        self._convert()
            except sqlite3.Error as exc:
                raise ConfigError(f"state file {path}: cannot be read ({exc}); check state.path") from None

    # ---- the previous layout --------------------------------------------------------------------------
    def _convert(self) -> None:
        """Rewrite a `delta` table of the previous layout as the log, in one transaction."""
        assert self._db is not None
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            cur = db.execute("SELECT stream, key, record FROM delta ORDER BY stream, key")
            while batch := cur.fetchmany(_BATCH):
                by_stream: dict[str, list[tuple[str, bytes]]] = {}
                for stream, key, record in batch:
                    by_stream.setdefault(stream, []).append((key, bytes(record)))
                for stream, confirm in by_stream.items():
                    self._append(stream, confirm, [])
            db.execute("DROP TABLE delta")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # ---- the index ---------------------------------------------------------------------------------------
    def _indexes(self) -> dict[str, KeyIndex]:
        """The index, with every row committed so far (by this store or another on the same file); under the lock."""
        assert self._db is not None
        if self._index is None:
            parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
            for stream, arrays in self._index_rows(0):
                parts.setdefault(stream, []).append(arrays)
            self._index = {stream: KeyIndex(p) for stream, p in parts.items()}
            self._rows = {stream: len(p) for stream, p in parts.items()}
            return self._index
        (last,) = self._db.execute("SELECT coalesce(max(id), 0) FROM delta_index").fetchone()
        if last > self._applied:  # another store wrote to the file
            for stream, arrays in self._index_rows(self._applied):
                self._index.setdefault(stream, KeyIndex()).apply(*arrays)
                self._rows[stream] = self._rows.get(stream, 0) + 1
        return self._index

    def _index_rows(self, after: int) -> list[tuple[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        assert self._db is not None
        out = []
        for rid, stream, h, d, r in self._db.execute(
                "SELECT id, stream, hashes, digests, rids FROM delta_index WHERE id > ? ORDER BY id", (after,)):  # fmt: skip
            out.append((stream, _arrays(h, d, r)))
            self._applied = rid
        return out

    def _stream(self, stream: str) -> KeyIndex | None:
        """The stream's index (None: no file, or no table yet on a read-only run); under the lock."""
        if self._db is None:
            return None
        try:
            return self._indexes().get(stream)
        except sqlite3.OperationalError:  # a read-only run on a file without the tables yet
            return None

    def _records(self, names: Iterable[int], with_records: bool = True) -> Iterator[tuple[int, str, bytes]]:
        """(name, key, record) of the named records, by log row (one row's blobs in memory at a time)."""
        assert self._db is not None
        by_row: dict[int, list[int]] = {}
        for name in names:
            by_row.setdefault(name >> _POS, []).append(name & _MASK)
        rows = sorted(by_row)
        for a in range(0, len(rows), 1000):
            for row, key_ends, record_ends, keys, records in self._db.execute(_LOG_ROWS, (_json(rows[a : a + 1000]),)):
                wanted = by_row[row]
                recs = dict(_slices(record_ends, records, wanted)) if with_records else {}
                for p, key in _slices(key_ends, keys, wanted):
                    yield row << _POS | p, key.decode(), recs.get(p, b"")

    # ---- the Store protocol ----------------------------------------------------------------------------
    def lookup(self, stream: str, keys: list[str], rows: Sequence[bytes] | None = None) -> list[bytes | None]:
        """The confirmed record of each key (None: none), in the order of `keys`. With `rows` (the JSON each
        key's row would be recorded as), a row equal to the record is answered with the row itself."""
        if self._db is None or not keys:
            return [None] * len(keys)
        if self._legacy:
            return self._legacy_lookup(stream, keys)
        out: list[bytes | None] = [None] * len(keys)
        with self._lock:
            index = self._stream(stream)
            if index is None:
                return out
            dig, name = index.find(key_hashes(keys))
            found = np.flatnonzero(name)
            if rows is not None and len(found):
                same = digests([rows[j] for j in found.tolist()]) == dig[found]
                for j in found[same].tolist():
                    out[j] = rows[j]
                found = found[~same]
            if not len(found):
                return out
            wanted: dict[int, list[int]] = {}
            for j, n in zip(found.tolist(), name[found].tolist(), strict=True):
                wanted.setdefault(n, []).append(j)
            for n, key, record in self._records(wanted):
                for j in wanted[n]:
                    if keys[j] == key:  # not another key with the same hash
                        out[j] = record
        return out

    def _legacy_lookup(self, stream: str, keys: list[str]) -> list[bytes | None]:
        assert self._db is not None
        with self._lock:
            return [r for (r,) in self._db.execute(_LEGACY_LOOKUP, (_json(keys), stream)).fetchall()]

    def empty(self, stream: str) -> bool:
        """Whether the stream has no confirmed record."""
        return self.count(stream) == 0

    def write(self, stream: str, confirm: list[tuple[str, bytes]], forget: list[str]) -> None:
        """Forget then confirm, in one transaction."""
        if self._db is None or not (confirm or forget):
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row, entries = self._append(stream, confirm, forget)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._wrote = True
            if self._index is not None:
                if self._applied == row - 1:  # nothing else was written meanwhile: apply ours
                    self._applied = row
                    self._index.setdefault(stream, KeyIndex()).apply(*entries)
                    self._rows[stream] = self._rows.get(stream, 0) + 1
                else:
                    self._indexes()

    def _append(self, stream: str, confirm: Sequence[tuple[str, bytes]], forget: Sequence[str],
                ) -> tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:  # fmt: skip
        """Append the records and the index row, inside the caller's transaction: (index row id, entries)."""
        assert self._db is not None
        names = np.empty(0, np.int64)
        key_bytes = [k.encode() for k, _ in confirm]
        if confirm:
            records = [r for _, r in confirm]
            cur = self._db.execute(_INSERT_LOG, (stream, len(confirm), _ends(key_bytes), _ends(records),
                                                 b"".join(key_bytes), b"".join(records)))  # fmt: skip
            names = (int(cur.lastrowid or 0) << _POS) + np.arange(len(confirm), dtype=np.int64)
        zeros = np.zeros(len(forget), np.int64)
        h = np.concatenate([key_hashes(forget), hashes(key_bytes)])
        d = np.concatenate([zeros, digests([r for _, r in confirm])])
        r = np.concatenate([zeros, names])
        cur = self._db.execute(_INSERT_INDEX, (stream, *_blobs(h, d, r)))
        return int(cur.lastrowid or 0), (h, d, r)

    def keys(self, stream: str) -> list[str]:
        """Every confirmed key of the stream, sorted by code point."""
        if self._db is None:
            return []
        if self._legacy:
            with self._lock:
                return [k for (k,) in self._db.execute("SELECT key FROM delta WHERE stream = ? ORDER BY key", (stream,))]
        with self._lock:
            index = self._stream(stream)
            if index is None:
                return []
            names = np.sort(index.rows())
            rows, first = np.unique(names >> _POS, return_index=True)
            bounds = [*first.tolist(), len(names)]
            out: list[str] = []
            for a in range(0, len(rows), 1000):
                ids = rows[a : a + 1000].tolist()
                where = {row: a + k for k, row in enumerate(ids)}
                for row, key_ends, keys in self._db.execute(
                        "SELECT id, key_ends, keys FROM delta_log WHERE id IN (SELECT value FROM json_each(?))", (_json(ids),)):  # fmt: skip
                    i = where[row]
                    pos = names[bounds[i] : bounds[i + 1]] & _MASK
                    ends = np.frombuffer(key_ends, I8)
                    starts = np.concatenate([[0], ends[:-1]])
                    out.extend(keys[x:y].decode() for x, y in zip(starts[pos].tolist(), ends[pos].tolist(), strict=True))
        out.sort()
        return out

    def count(self, stream: str) -> int:
        """How many confirmed keys the stream has."""
        if self._db is None:
            return 0
        with self._lock:
            if self._legacy:
                try:
                    return int(self._db.execute("SELECT count(*) FROM delta WHERE stream = ?", (stream,)).fetchone()[0])
                except sqlite3.OperationalError:
                    return 0
            index = self._stream(stream)
            return 0 if index is None else index.count()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                if not self._read_only and not self._legacy:
                    try:
                        self._compact()
                    except sqlite3.Error:
                        pass  # best effort (a full disk, say): the log as it was reads alike
                self._db.close()
                self._db = None

    def _compact(self) -> None:
        """At the end of a run, in one transaction: rewrite the log without the records later ones replaced,
        once they outnumber the live ones; write a stream's index again as one row once it has many."""
        assert self._db is not None
        if not self._wrote:
            return
        db = self._db
        self._indexes()
        assert self._index is not None
        live = sum(i.count() for i in self._index.values())
        (logged,) = db.execute("SELECT coalesce(sum(n), 0) FROM delta_log").fetchone()
        rewrite = logged - live > max(live, 10_000)
        snapshot = list(self._index) if rewrite else [s for s, n in self._rows.items() if n > _SNAPSHOT_ROWS]
        if not snapshot:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            if rewrite:
                (last_log,) = db.execute("SELECT coalesce(max(id), 0) FROM delta_log").fetchone()
                for stream, index in self._index.items():
                    self._rewrite(stream, index)
                db.execute("DELETE FROM delta_log WHERE id <= ?", (last_log,))
            for stream in snapshot:
                index = self._index[stream]
                index.merge()
                db.execute("DELETE FROM delta_index WHERE stream = ? AND id <= ?", (stream, self._applied))
                cur = db.execute(_INSERT_INDEX, (stream, *_blobs(index.h, index.d, index.r)))
                self._rows[stream] = 1
                self._applied = int(cur.lastrowid or self._applied)
        except BaseException:
            db.execute("ROLLBACK")
            self._index = None  # read again from the file if asked
            raise
        db.execute("COMMIT")

    def _rewrite(self, stream: str, index: KeyIndex) -> None:
        """Append the stream's live records as new log rows and point the index at them."""
        assert self._db is not None
        names = index.rows()
        order = np.argsort(names)
        renamed = np.empty_like(names)
        batch: list[tuple[str, bytes]] = []
        at: list[int] = []
        for (_name, key, record), j in zip(self._records(names[order].tolist()), order.tolist(), strict=True):
            batch.append((key, record))
            at.append(j)
            if len(batch) == _BATCH:
                self._log_only(stream, batch, at, renamed)
                batch, at = [], []
        if batch:
            self._log_only(stream, batch, at, renamed)
        index.r = renamed

    def _log_only(self, stream: str, batch: list[tuple[str, bytes]], at: list[int], renamed: np.ndarray) -> None:
        assert self._db is not None
        keys = [k.encode() for k, _ in batch]
        records = [r for _, r in batch]
        cur = self._db.execute(_INSERT_LOG, (stream, len(batch), _ends(keys), _ends(records), b"".join(keys),
                                             b"".join(records)))  # fmt: skip
        renamed[at] = (int(cur.lastrowid or 0) << _POS) + np.arange(len(batch), dtype=np.int64)

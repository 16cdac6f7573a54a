"""Where delta sync's confirmed records live: a local SQLite file (default) or PostgreSQL (pg_store.py).

A store holds only what Braze confirmed, as (stream, key) -> record bytes. `lookup` answers a whole chunk
at once; given the rows' own JSON it answers a row whose JSON is the confirmed record with that JSON, so
unchanged rows cost no read. `write` confirms and forgets in one transaction; `empty(stream)` says whether
a stream has no record at all (a run that starts so looks nothing up), `keys(stream)` lists a stream's keys
in code-point order and `count(stream)` counts them.

Both stores also keep, with each confirmed record, the source print of the row it was confirmed for
(rowprint.py, delta sync's fast path): `write(..., sources)` stores them with the records, `mark` attaches a
print to a record already confirmed (only while the key still has that record), and `sources(stream, keys)`
answers them from the index in memory. A forgotten or replaced record loses its print. A store without them
(`keeps_sources` false) would simply give the fast path nothing to match.

The local file is a log, so that writing and reading cost the same whatever order the keys come in (user
ids are often random, UUIDs say; a table keyed by them took 21 s of CPU to write 1M records, 20 times more
than keys in order, because every write touched a page of its own; the tables and their blobs are read
and written by logfile.py):
- `delta_log`: one row per transaction that confirmed records, only ever appended: their keys and records,
  each as one blob with the offsets where each ends. A record is named by its row id and position
  (`row << 32 | position`). Records that later ones replaced stay until they outnumber the live ones, and
  are then rewritten away at the end of a run (`_compact`; a key whose record is gone is forgotten);
- `delta_index`: one row per transaction, its entries as three arrays (key hashes, record digests, record
  names; 0 forgets the key). Read when the store is opened, they give keyindex.KeyIndex in memory (24
  bytes per known key); the end of a run that wrote many rows writes them again as one row, inserted
  before the rows it replaces are deleted, so row ids never go back.
A kill -9 loses nothing committed: the index is rebuilt from the rows whatever the last run did.

Several stores (processes) may share one file. Each question is answered in one read transaction (one
state of the file, WAL): the index first takes the rows others committed since; when another store's end
of run removed rows this index had not read, or log rows it names, the index is read again whole. A
compaction decides and works in one write transaction, so nothing committed meanwhile is lost.

A damaged file (SQLite finds it malformed, or it is not a database) stops the run with a ConfigError
(exit code 2) saying to delete the file (the next run then sends every row again) or restore it; the index
is read as the store opens so that this comes before anything is sent. Damage found later (in a log row)
stops the run alike. A failed transaction is rolled back only if SQLite has not already done so, so the
error raised is the real one (a full disk), not the ROLLBACK's.

A file written by earlier versions (one `delta` table keyed by (stream, key)) is converted when it is first
opened for a run that may write, in one transaction that drops `delta` as it commits; a dry run reads it as
it is while `delta` is there (also when a run created the new tables and its conversion was cut short),
and the new tables once a run converted it (tests/unit/test_delta_store.py).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from connector.delta import logfile
from connector.delta.keyindex import KeyIndex, digests, key_hashes
from connector.errors import ConfigError

if TYPE_CHECKING:
    from connector.delta.flights import Bulk


class Store(Protocol):
    """The confirmed records of one pipeline's delta streams."""

    label: str

    def lookup(self, stream: str, keys: list[str], rows: Sequence[bytes] | None = None) -> list[bytes | None]: ...

    def empty(self, stream: str) -> bool: ...

    def write(self, stream: str, confirm: list[tuple[str, bytes]], forget: list[str]) -> None: ...

    def keys(self, stream: str) -> list[str]: ...

    def count(self, stream: str) -> int: ...

    def close(self) -> None: ...


def keeps_sources(store: Store) -> bool:
    """Whether the store keeps source prints with its records (SqliteStore and PgStore do); delta sync's fast
    path never applies to a store that does not: every row goes through the object comparison."""
    return bool(getattr(store, "keeps_sources", False))


PAGE_SIZE = 16384


def open_db(path: Path) -> sqlite3.Connection:
    """The state file, opened for several threads (autocommit; WAL, so a killed run keeps what it committed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    # A new file's pages: the log's blobs span many (a transaction of 2,000 records is about 400 KB), and
    # SQLite's CPU per byte written halves from 4 KB to 16 KB pages. An existing file keeps its own.
    db.execute(f"PRAGMA page_size={PAGE_SIZE}")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def open_state_file(path: Path, schema: str, *, read_only: bool) -> sqlite3.Connection | None:
    """The state file with `schema`'s tables (None: a read-only run and no file yet: create nothing).

    Raises:
        ConfigError: the file cannot be opened or its tables created (state_error).
    """
    if read_only and not path.exists():
        return None
    db = None
    try:
        db = open_db(path)
        if not read_only:
            db.executescript(schema)
    except (sqlite3.Error, OSError) as exc:
        if db is not None:
            db.close()
        raise state_error(path, exc, "opened") from None
    return db


def state_error(path: Path, exc: Exception, failed: str = "read") -> ConfigError:
    """The error a run stops with when its state file fails: what is wrong and what to do, in one line."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if type(exc) is sqlite3.DatabaseError or code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return ConfigError(f"state file {path} is damaged: {exc}; delete it to start over (the next run then sends "
                           "every row again, as added) or restore it from a backup")  # fmt: skip
    return ConfigError(f"state file {path}: cannot be {failed} ({exc}); check state.path")


def rollback(db: sqlite3.Connection) -> None:
    """Undo what a failed transaction did, if SQLite has not already (a failed COMMIT, a full disk): never
    raise over the failure itself ("cannot rollback - no transaction is active")."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


def no_table(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("no such table")


# `delta` is the layout before the log (converted by _convert; read as it is by a read-only store).
_LEGACY_LOOKUP = "SELECT d.record FROM json_each(?) AS j LEFT JOIN delta AS d ON d.stream = ? AND d.key = j.value"
_REWRITE_MIN = 10_000  # replaced records the log holds before the end of a run may rewrite it
_SNAPSHOT_ROWS = 64  # index rows of one stream above which the end of a run writes them again as one
T = TypeVar("T")


class SqliteStore:
    """The state file (`state.path`); thread-safe; keeps source prints (keeps_sources).

    Raises:
        ConfigError: (opening, and every question) the file is damaged or cannot be read (state_error).
    """

    keeps_sources = True
    writes_bulk = True  # write(..., bulk=): flights.py's confirmed new users as arrays

    def __init__(self, path: Path, *, read_only: bool) -> None:
        self.path, self.label = path, str(path)
        self._prints = False  # the index rows have the `sources` column
        self._lock = threading.Lock()
        self._read_only = read_only
        self._db = open_state_file(path, logfile.SCHEMA, read_only=read_only)  # None: compare against nothing
        self._index: dict[str, KeyIndex] | None = None  # None: read at the next question
        self._applied = 0  # the last delta_index row the index holds
        self._rows: dict[str, int] = {}  # stream -> delta_index rows read for it
        self._legacy = False  # a read-only store on a file of the previous layout
        self._wrote = False  # whether this store wrote anything (the end of its run may compact)
        self._write_failed = False  # a write failed (a full disk): the end of the run does not compact
        if self._db is not None:
            try:
                self._open(self._db)
            except BaseException:
                self._db.close()
                self._db = None
                raise

    def _open(self, db: sqlite3.Connection) -> None:
        """Convert a file of the previous layout (a run that may write), then read the index: a damaged file
        stops the run now, before anything is sent."""
        try:
            tables = {t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "delta" in tables:
                if self._read_only:  # also beside the new tables: a conversion drops `delta` as it commits
                    self._legacy = True
                    return
                self._convert()
            if "delta_index" in tables or not self._read_only:
                self._prints = logfile.has_sources(db)
                if not self._prints and not self._read_only:
                    db.execute(logfile.ADD_SOURCES)
                    self._prints = True
        except sqlite3.Error as exc:
            raise state_error(self.path, exc) from None
        if "delta_index" in tables or not self._read_only:
            with self._reading():
                self._indexes()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """One read transaction: one state of the file, whatever other stores commit meanwhile (WAL).

        Raises:
            ConfigError: the file is damaged or cannot be read.
        """
        db = self._db
        assert db is not None
        try:
            db.execute("BEGIN")
            try:
                yield
            finally:
                if db.in_transaction:
                    db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise state_error(self.path, exc) from None

    def _answer(self, question: Callable[[set[int]], T]) -> T:
        """`question(lost)`, under the lock in one read transaction; asked again with the index read again
        whole when it named log rows that are gone (`lost`: another store's compaction removed them)."""
        with self._lock, self._reading():
            lost: set[int] = set()
            out = question(lost)
            if lost:
                self._index = None
                out = question(set())  # a row still missing now: its keys are unknown (sent again: safe)
            return out

    # ---- the previous layout --------------------------------------------------------------------------
    def _convert(self) -> None:
        """Rewrite a `delta` table of the previous layout as the log, in one transaction."""
        assert self._db is not None
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            cur = db.execute("SELECT stream, key, record FROM delta ORDER BY stream, key")
            while batch := cur.fetchmany(logfile.BATCH):
                by_stream: dict[str, list[tuple[str, bytes]]] = {}
                for stream, key, record in batch:
                    by_stream.setdefault(stream, []).append((key, bytes(record)))
                for stream, confirm in by_stream.items():
                    logfile.append(db, stream, confirm, [])
            db.execute("DROP TABLE delta")
            db.execute("COMMIT")
        except BaseException:
            rollback(db)
            raise

    def _legacy_rows(self, sql: str, params: tuple[Any, ...]) -> list[Any] | None:
        """The rows of a query on the previous layout's table; None once a run converted the file since the
        store opened (it answers from the new tables from then on); in a read transaction."""
        assert self._db is not None
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if not no_table(exc):
                raise
        self._legacy = False
        return None

    # ---- the index ---------------------------------------------------------------------------------------
    def _indexes(self) -> dict[str, KeyIndex]:
        """The index, with every row committed so far (by this store or another on the same file); under the
        lock, in a transaction. Read again whole when rows it had not read are gone: another store's end of
        run replaced them with a row of its own index, which holds no key they forgot."""
        assert self._db is not None
        if self._index is not None:
            (last, after), = self._db.execute(
                "SELECT (SELECT coalesce(max(id), 0) FROM delta_index), (SELECT count(*) FROM delta_index "
                "WHERE id > ?)", (self._applied,))  # fmt: skip
            if last == self._applied:
                return self._index
            if after == last - self._applied:  # every row since the index's last one is there: take them
                for rid, stream, arrays in logfile.index_rows(self._db, self._applied, sources=self._prints):
                    self._index.setdefault(stream, KeyIndex()).apply(*arrays)
                    self._rows[stream] = self._rows.get(stream, 0) + 1
                    self._applied = rid
                return self._index
        parts: dict[str, list[logfile.Entries]] = {}
        self._applied = 0
        for rid, stream, arrays in logfile.index_rows(self._db, 0, sources=self._prints):
            parts.setdefault(stream, []).append(arrays)
            self._applied = rid
        self._index = {stream: KeyIndex(p) for stream, p in parts.items()}
        self._rows = {stream: len(p) for stream, p in parts.items()}
        return self._index

    def _stream(self, stream: str) -> KeyIndex | None:
        """The stream's index (None: no file, or no table yet on a read-only run); in a transaction."""
        if self._db is None:
            return None
        try:
            return self._indexes().get(stream)
        except sqlite3.OperationalError as exc:
            if self._read_only and no_table(exc):  # a read-only run on a file without the tables yet
                return None
            raise

    # ---- the Store protocol ----------------------------------------------------------------------------
    def lookup(self, stream: str, keys: list[str], rows: Sequence[bytes] | None = None) -> list[bytes | None]:
        """The confirmed record of each key (None: none), in the order of `keys`. With `rows` (the JSON each
        key's row would be recorded as), a row equal to the record is answered with the row itself."""
        if self._db is None or not keys:
            return [None] * len(keys)
        return self._answer(lambda lost: self._lookup(stream, keys, rows, lost))

    def _lookup(self, stream: str, keys: list[str], rows: Sequence[bytes] | None, lost: set[int],
                ) -> list[bytes | None]:  # fmt: skip
        assert self._db is not None
        out: list[bytes | None] = [None] * len(keys)
        if self._legacy and (found := self._legacy_rows(_LEGACY_LOOKUP, (logfile.as_json(keys), stream))) is not None:
            return [r for (r,) in found]
        index = self._stream(stream)
        if index is None:
            return out
        dig, name = index.find(key_hashes(keys))
        found_at = np.flatnonzero(name)
        if rows is not None and len(found_at):
            same = digests([rows[j] for j in found_at.tolist()]) == dig[found_at]
            for j in found_at[same].tolist():
                out[j] = rows[j]
            found_at = found_at[~same]
        if not len(found_at):
            return out
        wanted: dict[int, list[int]] = {}
        for j, n in zip(found_at.tolist(), name[found_at].tolist(), strict=True):
            wanted.setdefault(n, []).append(j)
        for n, key, record in logfile.records(self._db, wanted, lost):
            for j in wanted[n]:
                if keys[j] == key:  # not another key with the same hash
                    out[j] = record
        return out

    def empty(self, stream: str) -> bool:
        """Whether the stream has no confirmed record."""
        return self.count(stream) == 0

    def write(self, stream: str, confirm: list[tuple[str, bytes]], forget: list[str],
              sources: Mapping[str, int] | None = None, bulk: Bulk | None = None) -> None:  # fmt: skip
        """Forget then confirm, in one transaction (`sources`: the source prints of confirmed keys that have one).
        `bulk`: new users confirmed by position (flights.py), written first in the same transaction (the
        changes given by key are later ones)."""
        if self._db is None or not (confirm or forget or bulk):
            return

        def rows(db: sqlite3.Connection) -> list[tuple[int, logfile.Entries]]:
            out = [logfile.append_bulk(db, stream, bulk)] if bulk else []
            if confirm or forget:
                out.append(logfile.append(db, stream, confirm, forget, sources))
            return out

        with self._lock:
            self._append(stream, rows)

    def mark(self, stream: str, marks: Mapping[str, tuple[int, int]]) -> None:
        """Attach source prints to records already confirmed: key -> (print, digest of the record it was
        decided against); a key whose record is no longer that one (replaced or forgotten since) is left
        alone. One transaction; nothing when no key qualifies."""
        if self._db is None or not marks:
            return
        keys = list(marks)
        want = np.fromiter((marks[k][1] for k in keys), np.int64, len(keys))
        prints = np.fromiter((marks[k][0] for k in keys), np.int64, len(keys))

        def entries(db: sqlite3.Connection) -> list[tuple[int, logfile.Entries]]:
            index = self._indexes().get(stream)
            if index is None:
                return []
            h, d, r, _ = index.find_all(key_hashes(keys))
            ok = (r != 0) & (d == want)
            if not ok.any():
                return []
            arrays = (h[ok], d[ok], r[ok], prints[ok])
            return [(logfile.write_index(db, stream, *arrays), arrays)]

        with self._lock:
            self._append(stream, entries)

    def _append(self, stream: str, rows: Callable[[sqlite3.Connection], list[tuple[int, logfile.Entries]]]) -> None:
        """Write index rows (and their log) in one transaction, and apply them to the index in memory, in the
        order written; under the lock."""
        db = self._db
        assert db is not None
        try:
            db.execute("BEGIN IMMEDIATE")
            written = rows(db)
            db.execute("COMMIT")
        except BaseException:
            rollback(db)
            self._write_failed = True  # no compaction at the end: it would fail alike (a full disk)
            raise
        for row, entries in written:
            self._wrote = True
            if self._index is None or self._applied != row - 1:
                break  # something else was written meanwhile: the next question reads the rows the index has not
            self._applied = row
            self._index.setdefault(stream, KeyIndex()).apply(*entries)
            self._rows[stream] = self._rows.get(stream, 0) + 1

    def sources(self, stream: str, keys: list[str]) -> np.ndarray:
        """The source print each key's record was confirmed for (0: none, or no record), from the index."""
        return self.sources_of(stream, key_hashes(keys))

    def sources_of(self, stream: str, hashes: np.ndarray) -> np.ndarray:
        """sources() by the keys' hashes (keyindex.key_hashes). A hash another key shares may answer that
        key's print: a print covers the identifier's column, so it never matches the other key's row."""
        if self._db is None or not len(hashes) or not self._prints:
            return np.zeros(len(hashes), np.int64)
        return self._answer(lambda lost: self._sources(stream, hashes))

    def _sources(self, stream: str, hashes: np.ndarray) -> np.ndarray:
        index = None if self._legacy else self._stream(stream)
        if index is None:
            return np.zeros(len(hashes), np.int64)
        return index.sources(hashes)

    def keys(self, stream: str) -> list[str]:
        """Every confirmed key of the stream, sorted by code point."""
        if self._db is None:
            return []
        return self._answer(lambda lost: self._keys(stream, lost))

    def _keys(self, stream: str, lost: set[int]) -> list[str]:
        assert self._db is not None
        if self._legacy and (found := self._legacy_rows("SELECT key FROM delta WHERE stream = ?", (stream,))) is not None:
            return sorted(k for (k,) in found)
        index = self._stream(stream)
        if index is None:
            return []
        return sorted(logfile.keys_of(self._db, index.rows(), lost))

    def count(self, stream: str) -> int:
        """How many confirmed keys the stream has."""
        if self._db is None:
            return 0
        return self._answer(lambda lost: self._count(stream))

    def _count(self, stream: str) -> int:
        sql = "SELECT count(*) FROM delta WHERE stream = ?"
        if self._legacy and (found := self._legacy_rows(sql, (stream,))) is not None:
            return int(found[0][0])
        index = self._stream(stream)
        return 0 if index is None else index.count()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                if not self._read_only and not self._write_failed:
                    try:
                        if self._compact():
                            self._vacuum()
                    except sqlite3.Error:
                        pass  # best effort (a full disk, say): the log as it was reads alike
                self._db.close()
                self._db = None

    def _compact(self) -> bool:
        """At the end of a run, in one transaction (nothing another store commits meanwhile is missed):
        rewrite the log without the records later ones replaced, once they outnumber the live ones; write a
        stream's index again as one row once it has many. True: the log was rewritten."""
        assert self._db is not None
        if not self._wrote:
            return False
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            index = self._indexes()
            live = sum(i.count() for i in index.values())
            (logged,) = db.execute("SELECT coalesce(sum(n), 0) FROM delta_log").fetchone()
            rewrite = logged - live > max(live, _REWRITE_MIN)
            snapshot = list(index) if rewrite else [s for s, n in self._rows.items() if n > _SNAPSHOT_ROWS]
            if snapshot:
                self._snapshot(index, snapshot, rewrite)
            db.execute("COMMIT")
        except BaseException:
            rollback(db)
            self._index = None  # read again from the file if asked
            raise
        return rewrite

    def _vacuum(self) -> None:
        """Give back the pages a rewrite of the log freed, once they are most of the file: SQLite reuses free
        pages but never returns them, so a 150k-user file grew to 133 MB, two thirds of it free, after three
        full writes. Outside a transaction; best effort: a failed VACUUM (a full disk, another store reading)
        leaves the file as it was, and valid. Row ids are kept (INTEGER PRIMARY KEY), so are the log's names."""
        assert self._db is not None
        with contextlib.suppress(sqlite3.Error):
            (free,) = self._db.execute("PRAGMA freelist_count").fetchone()
            (pages,) = self._db.execute("PRAGMA page_count").fetchone()
            if free * 2 > pages:
                self._db.execute("VACUUM")

    def _snapshot(self, index: dict[str, KeyIndex], streams: list[str], rewrite: bool) -> None:
        """Write each stream's index as one row, then delete the rows it replaces (and, with `rewrite`, the
        log rows before the live records written again): inserted first, the new rows' ids are above every
        id another store on the file may have read, so it reads them (SQLite reuses an id above the highest
        left, with INTEGER PRIMARY KEY)."""
        assert self._db is not None
        db = self._db
        (last_log,) = db.execute("SELECT coalesce(max(id), 0) FROM delta_log").fetchone()
        if rewrite:
            for stream, keys in index.items():
                logfile.rewrite(db, stream, keys)
        applied = self._applied
        for stream in streams:
            keys = index[stream]
            keys.merge()
            self._applied = logfile.write_index(db, stream, keys.h, keys.d, keys.r, keys.s)
            db.execute("DELETE FROM delta_index WHERE stream = ? AND id <= ?", (stream, applied))
            self._rows[stream] = 1
        if rewrite:
            db.execute("DELETE FROM delta_log WHERE id <= ?", (last_log,))

"""Delta sync's state in PostgreSQL (`state: {url_env: STATE_PG_URL}`), shared by machines and processes.

One table, `braze_connector_delta (pipeline, stream, key, record, key_hash, digest, print)`, keyed by the
first three, so pipelines and their streams never touch each other's rows. `key_hash` and `digest` are the
XXH3 hash of the key and digest of the record (keyindex.py, as the local file keeps them); `print` (NULL:
none) the source print of the row the record was confirmed for (delta sync's fast path, rowprint.py), with
the local store's semantics (stores.py): written only with a confirmed record, in the same statement,
dropped whenever the record is replaced or forgotten, attached by `mark` only while the record is still the
one compared. It is stored XOR the record's digest, so a record replaced by a process of an earlier version
(whose upsert leaves the column alone) keeps no usable print. The store reads them
for its pipeline once, as it opens (one Arrow read), into a keyindex.KeyIndex per stream, and keeps that
index up to date with its own writes: a row whose JSON has the digest of its key's record is answered from
memory, and only keys whose digest differs have their records read from the server (one statement per
chunk). An unchanged 1M-row re-run so asks the server nothing (issue 13: it used to probe every key). A run
on the machine that wrote the state last does not even read the index: it takes the local copy its
predecessor left (pg_cache.py), checked against the generation numbers every write bumps.

Why a snapshot taken at open stays right: every key is written by one run at a time. The run lock
(runlock.py, pg.PgRunLock) admits one run of a pipeline, or its partitions, each holding users of its own
(an identifier split; a file split holds whole files: a user in files of two partitions was never safe,
as lookup and write were never one transaction), so no other process changes a key this run owns after it
opened; what this run writes, it applies to its index as it commits. Keys that other partitions write
meanwhile are missing from this index, and never looked up here. Another pipeline's rows are never read.
A dry run takes no lock: it sees the state as it was when it began (tests/integration/test_pg_index.py).

A write is one transaction: keys the index does not know are appended by COPY (binary, ADBC's ingest of
Arrow arrays: PostgreSQL inserts them in batches, about 30 % less server CPU a row than `INSERT ... SELECT
FROM unnest(...)` at the 2,000-2,500 rows a group commit writes; a first run's new users come as the
flights' blobs, pg_rows.py, and transactions hold up to `group_rows`); the others are upserts binding arrays
(`unnest($3::text[], ...)`, `INSERT ... ON CONFLICT DO UPDATE`). Should a key new to the index be there
after all (another process wrote it), the COPY fails and the write is done again as upserts, so two
processes writing the same table (two pipelines, or the partitions of one) never fail or lose each other's
rows.
Creating the table takes a transaction-level advisory lock, so two first runs starting at once do not race.

A table without `print` (the index's version) gets the column, nullable so no row is rewritten, from the
first run that may write; a dry run reads such a table as it is, without prints. A table of the layout
before that (no `key_hash` / `digest`) is converted by the first run that may write, in
one transaction under the same lock: the columns are added (`print` too) and filled for every pipeline's rows (computed
here: PostgreSQL has no XXH3), a row changed since it was read is deleted (its user is sent again in full:
safe), then both columns become NOT NULL, so a process of an earlier version writing the table afterwards
fails (its store error costs resends, never a wrong skip) rather than leave a record with a stale digest.
A dry run reads such a table as it is, computing the digests of its pipeline's records in memory.

The URL comes from the environment only; it never reaches a message, a log line or the report (the
variable's name stands for it). The connection goes through the SQL readers' ADBC module.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connector.delta import pg_cache
from connector.delta.keyindex import KeyIndex, digests, key_hashes
from connector.delta.pg import connect
from connector.delta.pg_cache import IndexCache, Stamp
from connector.delta.pg_rows import Rows, bound, bulk_pairs, bulk_table, fits
from connector.errors import SourceError
from connector.readers.sql.drivers import Database, Params

if TYPE_CHECKING:
    from connector.delta.flights import Bulk

log = logging.getLogger(__name__)

TABLE = "braze_connector_delta"
_LOCK_ID = 0x62726164656C7461  # pg_advisory_xact_lock: creating or converting the table
_CREATE = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    pipeline TEXT NOT NULL,
    stream TEXT NOT NULL,
    key TEXT NOT NULL,
    record TEXT NOT NULL,
    key_hash BIGINT NOT NULL,
    digest BIGINT NOT NULL,
    print BIGINT,
    PRIMARY KEY (pipeline, stream, key)
)"""
_HAS_COLUMN = ("SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 "
               "AND NOT attisdropped)")  # fmt: skip
_ADD_PRINT = f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS print BIGINT"  # nullable: no row is rewritten
# The print is stored bound to its record's digest (print XOR digest, NULL: none), unbound as it is read
# (_indexes: in numpy, about 0.15 s less of the server's CPU at 1M keys than the XOR in the query).
_LOAD = f"SELECT stream, key_hash, digest, print FROM {TABLE} WHERE pipeline = $1"
_LOAD_NO_PRINTS = f"SELECT stream, key_hash, digest, NULL::int8 FROM {TABLE} WHERE pipeline = $1"
# One primary-key probe per key (a subquery per element, so the key is bound in the index condition): a table
# filled during the run still has an empty table's statistics, and a join let the planner scan every row of
# the pipeline once per key (measured: 36 s for 20,000 keys).
_LOOKUP = (f"SELECT (SELECT d.record FROM {TABLE} AS d WHERE d.pipeline = $1 AND d.stream = $2 AND d.key = j.key) "
           "FROM unnest($3::text[]) WITH ORDINALITY AS j(key, n) ORDER BY j.n")  # fmt: skip
# Deletes by the row addresses the same per-key probe finds (a TID scan), for the same reason.
_FORGET = (f"DELETE FROM {TABLE} WHERE ctid = ANY (ARRAY(SELECT (SELECT d.ctid FROM {TABLE} AS d WHERE d.pipeline = $1 "
           "AND d.stream = $2 AND d.key = j.key) FROM unnest($3::text[]) AS j(key)))")  # fmt: skip
# Binary arrays, not a JSON document: the server parses no JSON.
_CONFIRM = (f"INSERT INTO {TABLE} (pipeline, stream, key, record, key_hash, digest, print) SELECT $1, $2, x.k, x.r, "
            "x.h, x.d, NULLIF(x.p, 0) FROM unnest($3::text[], $4::text[], $5::int8[], $6::int8[], $7::int8[]) AS "
            "x(k, r, h, d, p) ON CONFLICT (pipeline, stream, key) DO UPDATE SET record = excluded.record, "
            "key_hash = excluded.key_hash, digest = excluded.digest, print = excluded.print")  # fmt: skip
# A print attached to a record already confirmed, only while the key still has that record (digest); by the
# row address of the same per-key probe as _LOOKUP.
_MARK = (f"UPDATE {TABLE} AS t SET print = NULLIF(u.p, 0) FROM (SELECT (SELECT d.ctid FROM {TABLE} AS d WHERE "
         "d.pipeline = $1 AND d.stream = $2 AND d.key = j.k) AS tid, j.d, j.p FROM unnest($3::text[], $4::int8[], "
         "$5::int8[]) AS j(k, d, p)) AS u WHERE t.ctid = u.tid AND t.digest = u.d")  # fmt: skip
_FOLD = 100_000  # keys written before _Index folds them into its arrays
_FILL = (f"UPDATE {TABLE} AS t SET key_hash = u.h, digest = u.d FROM unnest($1::text[], $2::text[], $3::text[], "
         "$4::text[], $5::int8[], $6::int8[]) AS u(p, s, k, r, h, d) WHERE t.pipeline = u.p AND t.stream = u.s "
         "AND t.key = u.k AND t.record = u.r AND t.digest IS NULL")  # fmt: skip


class _Index:
    """One stream's index: what the store read at open (`base`, a keyindex.KeyIndex, sorted arrays, with the source
    prints) and what this store wrote since (`recent`, a small KeyIndex of its own: name 1 a confirmed record,
    2 a forgotten key, digest and print 0), folded into `base` every _FOLD keys. A KeyIndex merges its
    waiting entries at every find, an O(known keys) copy: `recent` keeps a write's cost to the keys written
    since the last fold (about 5 s of CPU over a 1M-row first run written into `base` directly; a dict of
    Python ints, before this, cost about 2 µs a key). Not thread-safe (the store locks)."""

    __slots__ = ("base", "recent")

    def __init__(self, base: KeyIndex | None = None) -> None:
        self.base = base if base is not None else KeyIndex()
        self.recent = KeyIndex()

    def find(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(digest, known, source print) of each hash (print 0: none)."""
        _, d, name, s = self.base.find_all(h)
        known = name != 0
        if self.recent.count():
            _, rd, rname, rs = self.recent.find_all(h)
            there = rname != 0
            d[there], s[there], known[there] = rd[there], rs[there], rname[there] == 1
        return d, known, s

    def sources(self, h: np.ndarray) -> np.ndarray:
        """The source print of each hash (0: none, or not known): find()'s third array, gathering nothing else
        (the fast path's lookup of every row of an unchanged run)."""
        s = self.base.sources(h)
        if self.recent.count():
            _, _, rname, rs = self.recent.find_all(h)
            there = rname != 0
            s[there] = rs[there]
        return s

    def put(self, h: np.ndarray, d: np.ndarray, s: np.ndarray | None = None) -> None:
        """Keys written (digest 0: forgotten) with their prints (None: none), later ones winning."""
        self.recent.apply(h, d, np.where(d != 0, 1, 2), s)
        self.recent.merge()
        if self.recent.count() >= _FOLD:
            self.fold()

    def fold(self) -> None:
        r = self.recent
        if r.count():
            self.base.apply(r.h, r.d, (r.r == 1).astype(np.int64), r.s)
            self.base.merge()
            self.recent = KeyIndex()

    def count(self) -> int:
        self.fold()
        return self.base.count()


class PgStore:
    """The confirmed records of one pipeline in a PostgreSQL database, with their index in memory;
    thread-safe (one connection, one lock); keeps source prints (stores.keeps_sources)."""

    keeps_sources = True
    writes_bulk = True  # write(..., bulk=): flights.py's confirmed new users as arrays
    # Confirmations a transaction may wait for (commit.py; DEFER_SECONDS still bounds the wait): measured at 1M
    # new keys, groups of 8,000 cost the server about 15 % less CPU a row than 2,000 (bench/pg_state_cost.py).
    group_rows = 8000

    def __init__(self, url_env: str, pipeline: str, env: Mapping[str, str], *, read_only: bool,
                 cache: Path | None = None, part: str = "all") -> None:  # fmt: skip
        """`cache`: the file of the local copy of the index (pg_cache.py; None: none); `part`: the run's
        partition label, whose gen its writes bump."""
        self.pipeline = pipeline
        self.label = f"postgresql (${url_env})"
        self._lock = threading.Lock()
        self._read_only, self._part = read_only, part
        self._cache = IndexCache(cache, pipeline) if cache is not None else None
        self._gens = False  # the gen table and trigger are there: writes bump this partition's gen
        self._stamp: Stamp | None = None  # the stamp the index was read at (None: not known)
        self._writes = 0  # this store's writes since (each bumped the gen once)
        self._token = ""  # the token its last write set
        self._copied = False  # the index came from the copy, or the copy was written at _stamp
        self._db: Database | None = connect(url_env, env, () if read_only else [_CREATE], _LOCK_ID)
        try:
            self._index = self._open(self._db, read_only)
        except BaseException:
            self._db.close()
            self._db = None
            raise

    # ---- opening: the previous layout, the index ------------------------------------------------------
    def _open(self, db: Database, read_only: bool) -> dict[str, _Index]:
        """Convert a table of the previous layout (a run that may write), then read the pipeline's index."""
        if not db.scalar("SELECT to_regclass($1) IS NOT NULL", [TABLE]):
            return {}  # a read-only run before the first run created the table
        if db.scalar(_HAS_COLUMN, [TABLE, "digest"]):
            prints = bool(db.scalar(_HAS_COLUMN, [TABLE, "print"]))
            if not prints and not read_only:  # a table of the index's layout, from before the prints
                db.transaction([("SELECT pg_advisory_xact_lock($1)", [_LOCK_ID]), (_ADD_PRINT, [])])
                prints = True
            if prints:
                return self._open_stamped(db, read_only)
            return self._indexes(db.transaction_table([(_LOAD_NO_PRINTS, [self.pipeline])]))
        if not read_only:
            convert(db)
            return self._open_stamped(db, read_only)
        rows = db.transaction_table([(f"SELECT stream, key, record FROM {TABLE} WHERE pipeline = $1", [self.pipeline])])
        rows = _with_digests(rows)
        return self._indexes(rows.select(["stream", "key_hash", "digest"]).append_column(
            "print", pa.nulls(rows.num_rows, pa.int64())))  # fmt: skip

    def _open_stamped(self, db: Database, read_only: bool) -> dict[str, _Index]:
        """The index from the local copy when it was written at the table's stamp now (pg_cache.py), else read
        from the server; the stamp it was read at kept when nothing changed meanwhile."""
        self._gens = pg_cache.prepare(db, TABLE, _LOCK_ID, self.pipeline, None if read_only else self._part, self.label)
        stamp = pg_cache.stamp_now(db, TABLE, self.pipeline) if self._gens and self._cache is not None else None
        if stamp is not None and self._cache is not None:
            arrays = self._cache.load(stamp)
            if arrays is not None:
                self._stamp, self._copied = stamp, True
                return {k: _Index(KeyIndex([(h, d, np.ones(len(h), np.int64), s)])) for k, (h, d, s) in arrays.items()}
        index = self._indexes(db.transaction_table([(_LOAD, [self.pipeline])]))
        if stamp is not None and pg_cache.stamp_now(db, TABLE, self.pipeline) == stamp:
            self._stamp = stamp
        return index

    def _commit(self, statements: list[tuple[str, Params]]) -> None:
        """One write transaction; with the gens, it says it is this version's (the trigger leaves the gens alone)
        and bumps its partition's gen. A write that fails leaves the stamp unknown (its COMMIT may have
        happened): no copy is written at close."""
        assert self._db is not None
        token = secrets.token_hex(8)
        if self._gens:
            statements = [(pg_cache.MARK_WRITER, []), (pg_cache.BUMP, [self.pipeline, self._part, token]), *statements]
        try:
            self._db.transaction(statements)
        except BaseException:
            self._stamp = None
            raise
        self._writes, self._token = self._writes + 1, token

    def _save_copy(self) -> None:
        """Write the local copy of the index at close, when it is the table's rows at a stamp (see pg_cache.py)."""
        if self._read_only or self._cache is None or self._stamp is None or self._db is None:
            return
        if self._copied and not self._writes:
            return  # the copy it opened from is still right
        expected = pg_cache.bumped(self._stamp, self._part, self._writes, self._token)
        if pg_cache.stamp_now(self._db, TABLE, self.pipeline) != expected:
            return  # another process wrote meanwhile: its rows are not in this index
        arrays: pg_cache.Arrays = {}
        for stream, index in self._index.items():
            index.fold()
            b = index.base
            b.merge()
            if len(b.h):
                arrays[stream] = (b.h, b.d, b.s)
        self._cache.save(expected, arrays)

    @staticmethod
    def _indexes(rows: pa.Table) -> dict[str, _Index]:
        """An index per stream from (stream, key_hash, digest, stored print) rows (name 1: a known key). Sorted by
        hash here, so that KeyIndex takes the arrays as they are (its merge of unsorted entries, a stable
        sort and a dedup, took twice as long at 1M keys); two keys of one hash still go through it."""
        out: dict[str, _Index] = {}
        streams = rows.column(0)
        names = pc.unique(streams).to_pylist()
        for stream in names:
            part = rows if len(names) == 1 else rows.filter(pc.equal(streams, stream))
            h, d, p = (pc.fill_null(part.column(i), 0).to_numpy().astype(np.int64, copy=False) for i in (1, 2, 3))
            s = np.where(p != 0, p ^ d, 0)  # the stored print unbound (NULL: none)
            order = np.argsort(h)
            out[stream] = _Index(KeyIndex([(h[order], d[order], np.ones(len(h), np.int64), s[order])]))
        return out

    # ---- the Store protocol ---------------------------------------------------------------------------
    def lookup(self, stream: str, keys: list[str], rows: Sequence[bytes] | None = None) -> list[bytes | None]:
        """The confirmed record of each key (None: none), in the order of `keys`. With `rows` (the JSON each
        key's row would be recorded as), a row whose digest is its key's record's is answered with the row
        itself, from memory; the server is asked only for the other known keys."""
        out: list[bytes | None] = [None] * len(keys)
        with self._lock:
            index = self._index.get(stream)
            if self._db is None or index is None or not keys:
                return out
            dig, known, _ = index.find(key_hashes(keys))
            found = np.flatnonzero(known)
            if rows is not None and len(found):
                same = digests([rows[j] for j in found.tolist()]) == dig[found]
                for j in found[same].tolist():
                    out[j] = rows[j]
                found = found[~same]
            if not len(found):
                return out
            at = found.tolist()
            table = self._db.transaction_table([(_LOOKUP, [self.pipeline, stream, [keys[j] for j in at]])])
        records = cast(list[bytes | None], pc.cast(table.column(0), pa.binary()).to_pylist())  # the UTF-8, no copy
        for j, record in zip(at, records, strict=True):
            out[j] = record
        return out

    def empty(self, stream: str) -> bool:
        """Whether the stream had no confirmed record when the store opened, and this store wrote none since."""
        with self._lock:
            index = self._index.get(stream)
            return index is None or index.count() == 0

    def write(self, stream: str, confirm: list[tuple[str, bytes]], forget: list[str],
              sources: Mapping[str, int] | None = None, bulk: Bulk | None = None) -> None:  # fmt: skip
        """Forget then confirm, in one transaction; the index takes them once it committed. `sources`: the
        source prints of confirmed keys that have one, written with their records (a record confirmed
        without one drops its key's print). `bulk`: new users confirmed by position (flights.py), older than
        the changes by key. Keys the index does not know are appended by COPY (binary; a Bulk's as the
        blobs it holds, pg_rows.py), without ON CONFLICT (less than half an upsert's server CPU a row): no
        other run writes this run's keys. Should one be there after all (two runs sharing users), the
        transaction is rolled back and done again as upserts, so two writers still never fail."""
        if bulk is not None and not len(bulk):
            bulk = None
        if self._db is None or not (confirm or forget or bulk):
            return
        gone = key_hashes(forget)
        rows = Rows.of(confirm, sources)  # hashed before the lock: lookups wait on it
        with self._lock:
            index = self._index.setdefault(stream, _Index())
            if bulk is not None and not self._apart(index, bulk, rows.h, gone):
                confirm, sources = bulk_pairs(bulk, confirm, forget, sources)
                rows, bulk = Rows.of(confirm, sources), None
            new = ~index.find(rows.h)[1]
            if forget:  # forgotten in this transaction: inserted afresh
                new |= np.isin(rows.h, gone)
            try:
                self._commit(self._statements(stream, forget, rows, new, bulk))
            except SourceError as e:
                if "SQLSTATE: 23505" not in str(e) or not (new.any() or bulk is not None):
                    raise
                if bulk is not None:
                    confirm, sources = bulk_pairs(bulk, confirm, forget, sources)
                    rows, bulk = Rows.of(confirm, sources), None
                self._commit(self._statements(stream, forget, rows, np.zeros(len(rows.keys), bool), None))
            index.put(gone, np.zeros(len(gone), np.int64))
            if bulk is not None:  # none of its keys among the others (_apart)
                index.put(*(np.concatenate([a, b]) for a, b in ((bulk.h, rows.h), (bulk.d, rows.d), (bulk.s, rows.s))))
            else:
                index.put(rows.h, rows.d, rows.s)

    def _apart(self, index: _Index, bulk: Bulk, changed: np.ndarray, gone: np.ndarray) -> bool:
        """Whether a Bulk can be appended by COPY as it is: none of its keys known to the index, nor changed
        by key in the same write (a hash shared with such a key counts as one), and its blobs fit an Arrow
        string array. Else (rare: a user moved to the bookkeeping by key) the write goes as pairs."""
        if index.find(bulk.h)[1].any():
            return False
        if len(changed) or len(gone):  # `changed`: the key hashes confirmed by key in the same write
            other = np.concatenate([changed, gone])
            if np.isin(bulk.h, other).any():
                return False
        return fits(bulk)

    def _statements(self, stream: str, forget: list[str], rows: Rows, new: np.ndarray,
                    bulk: Bulk | None) -> list[tuple[str, Params]]:  # fmt: skip
        """The statements of one write: delete `forget`, upsert the known keys, append the `new` ones and the
        Bulk's. The COPY goes last, and there is one: ADBC's driver forgets the open transaction after an
        ingest and begins it again at the next statement (harmless, but a WARNING in the server's log each
        time)."""
        out: list[tuple[str, Params]] = [(_FORGET, [self.pipeline, stream, forget])] if forget else []
        if not new.all():
            out.append((_CONFIRM, [self.pipeline, stream, *rows.lists(np.flatnonzero(~new))]))
        tables = [rows.table(self.pipeline, stream, None if new.all() else np.flatnonzero(new))] if new.any() else []
        if bulk is not None:
            tables.append(bulk_table(self.pipeline, stream, bulk))
        if tables:
            out.append((TABLE, tables[0] if len(tables) == 1 else pa.concat_tables(tables)))
        return out

    def mark(self, stream: str, marks: Mapping[str, tuple[int, int]]) -> None:
        """Attach source prints to records already confirmed: key -> (print, digest of the record it was
        decided against); a key whose record is no longer that one (replaced or forgotten since, in the
        index or on the server) is left alone. One statement; none when no key qualifies."""
        if self._db is None or not marks:
            return
        keys = list(marks)
        want = np.fromiter((marks[k][1] for k in keys), np.int64, len(keys))
        prints = np.fromiter((marks[k][0] for k in keys), np.int64, len(keys))
        h = key_hashes(keys)
        with self._lock:
            index = self._index.get(stream)
            if index is None:
                return
            d, known, _ = index.find(h)
            ok = known & (d == want)
            if not ok.any():
                return
            at = np.flatnonzero(ok).tolist()
            self._commit([(_MARK, [self.pipeline, stream, [keys[j] for j in at], want[ok].tolist(),
                                           bound(prints[ok], want[ok]).tolist()])])  # fmt: skip
            index.put(h[ok], want[ok], prints[ok])

    def sources(self, stream: str, keys: list[str]) -> np.ndarray:
        """The source print each key's record was confirmed for (0: none, or no record), from the index."""
        return self.sources_of(stream, key_hashes(keys))

    def sources_of(self, stream: str, hashes: np.ndarray) -> np.ndarray:
        """sources() by the keys' hashes (keyindex.key_hashes); from memory, nothing asked of the server. A
        hash another key shares may answer that key's print: a print covers the identifier's column, so it
        never matches the other key's row."""
        with self._lock:
            index = self._index.get(stream)
            if self._db is None or index is None or not len(hashes):
                return np.zeros(len(hashes), np.int64)
            return index.sources(hashes)

    def keys(self, stream: str) -> list[str]:
        """Every confirmed key of the stream, sorted by code point (COLLATE "C", as Python sorts); asked of
        the server (mirror mode: every partition's keys)."""
        if self._db is None:
            return []
        with self._lock:
            try:
                rows = self._db.transaction_table([(f'SELECT key FROM {TABLE} WHERE pipeline = $1 AND stream = $2 '
                                                    'ORDER BY key COLLATE "C"', [self.pipeline, stream])])  # fmt: skip
            except SourceError as e:
                if "does not exist" in str(e):
                    return []
                raise
        return cast(list[str], rows.column(0).to_pylist())

    def count(self, stream: str) -> int:
        """How many confirmed keys the stream has (counted by the server: no key is sent)."""
        if self._db is None:
            return 0
        with self._lock:
            try:
                rows = self._db.transaction([(f"SELECT count(*) FROM {TABLE} WHERE pipeline = $1 AND stream = $2",
                                              [self.pipeline, stream])])  # fmt: skip
            except SourceError as e:
                if "does not exist" in str(e):
                    return 0
                raise
        return int(rows[0][0])

    def close(self) -> None:
        """Write the local copy of the index where it is right (never raises for it), then close."""
        with self._lock:
            if self._db is not None:
                try:
                    self._save_copy()
                except Exception as e:  # the copy is an optimisation: the run's outcome stands
                    log.warning("%s: the local copy of the state's index was not written (%s)", self.label, e)
                finally:
                    self._db.close()
                    self._db = None


def _with_digests(rows: pa.Table) -> pa.Table:
    """`rows` (with `key` and `record` columns) and their key hashes and record digests."""
    keys = cast(list[str], rows.column("key").to_pylist())
    records = cast(list[bytes], pc.cast(rows.column("record"), pa.binary()).to_pylist())
    return rows.append_column("key_hash", pa.array(key_hashes(keys))).append_column("digest", pa.array(digests(records)))


def convert(db: Database) -> None:
    """Give a table of the previous layout its `key_hash` and `digest` columns, filled for every pipeline's
    rows, in one transaction (see the module's docstring). Two processes converting at once: the second
    waits for the lock, then finds nothing left to fill."""
    rows = _with_digests(db.transaction_table([(f"SELECT pipeline, stream, key, record FROM {TABLE}", [])]))
    fill: list[tuple[str, list[Any]]] = []
    if rows.num_rows:
        fill.append((_FILL, [rows.column(c).to_pylist() for c in ("pipeline", "stream", "key", "record")]
                     + [rows.column("key_hash").to_pylist(), rows.column("digest").to_pylist()]))  # fmt: skip
    db.transaction([
        ("SELECT pg_advisory_xact_lock($1)", [_LOCK_ID]),
        (f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE", []),
        (f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS key_hash BIGINT, ADD COLUMN IF NOT EXISTS digest BIGINT, "
         "ADD COLUMN IF NOT EXISTS print BIGINT", []),
        *fill,
        (f"DELETE FROM {TABLE} WHERE digest IS NULL", []),  # changed or added since read: forgotten (sent again)
        (f"ALTER TABLE {TABLE} ALTER COLUMN key_hash SET NOT NULL, ALTER COLUMN digest SET NOT NULL", []),
    ])  # fmt: skip

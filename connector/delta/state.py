"""Delta sync: send only what changed since the last delivered run (streams with `delta: true`).

Braze bills every attribute written, changed or not, and every event (braze-api.md §12: "only pass deltas").
The state (a SQLite file by default, or PostgreSQL: stores.py, pg_store.py) remembers what Braze confirmed:

- attributes: per user (the identifier), a record of every attribute value delivered (fingerprints.py). A
  row is sent with only the attributes whose value differs from what Braze last confirmed; a row with none
  is skipped ("unchanged since the last delivered run"). Operations (`inc`, array add/remove) are always
  sent and never remembered: they change the profile each time by design.
- events and purchases: a digest of the whole object. An event or purchase already delivered (same user,
  name or product, time, properties, ...) is skipped, so re-running a file never counts it twice.

The decision is a set operation per chunk, on the objects' JSON as mapping built it (records.EncodedObjects;
nothing is decoded or serialised again): the chunk's keys are looked up in the store at once (none at all
on a state that was empty when the run began, except keys the run itself decided before: seen.py), and a
row whose JSON equals the stored record is unchanged, one bytes comparison in C (both stores answer such a
row by digests in their index in memory, without reading its record: stores.py, pg_store.py, keyindex.py).
Only the other rows are decoded and compared attribute by attribute; a row with the same values in other JSON (a
record written by an earlier version, sorted) is unchanged too, and its record is rewritten as the row's
JSON so the next run compares the JSON alone. New users are sent and kept in flight as their JSON.

Before all that, the fast path (`may_skip`, `unchanged_rows`; delta/fastpath.py, rowprint.py) takes rows
whose *source print* (a hash of the row's cells, before validation and mapping) is the one both stores keep
with the user's confirmed record: such a row would be found unchanged, so it is skipped without being
validated or mapped. A print is stored only with a record Braze confirmed, goes when the record does, and is
attached to a record the comparison found unchanged only while it is still that record (prints.py).

New users of a stream whose state was empty when the run began (a first run's every user) are kept in
flight by position instead, as arrays of the chunk sent; answers settle them by the positions their requests
carry and confirmed ones are written as array slices (flights.py).

Nothing is remembered before Braze confirmed it. What a run sends is *pending* in memory, so later rows of
the same run compare against what was just sent (source order, as the writer delivers it); it is written
to the store as *confirmed* when the last request in flight for that user gets a 2xx (several threads'
confirmations share a transaction: commit.py). An event's confirmation is committed before settle()
returns, so a run killed after Braze confirmed it never sends it again; an attribute's may wait for a
later transaction (up to commit.DEFER_CHANGES changes, or the store's group_rows, or DEFER_SECONDS), so a run killed meanwhile sends
those users' attributes again next time: the same values, which Braze sets again (idempotent). Any other outcome (rejected, failed, unknown, not sent)
forgets the user's confirmed record, so the next run sends all of the user's attributes again (safe:
attribute sets are idempotent). Before a changed user is sent, its confirmed record is deleted from the
store (committed before the request leaves), so a run that crashes leaves no record for what it may have
delivered: the next run sends it again, never loses it.

A store error (a full disk, PostgreSQL gone) never reaches the rows: it ends the state's writes for the
rest of the run, what was to be written is dropped (only a hash per key is kept), and `finish` returns what
was lost for the run's one warning (commit.py, unrecorded.py: why that is safe, and the events it costs).

The state assumes the connector is the only writer of these attributes; a profile edited elsewhere in
Braze is not noticed (`--full` sends everything and refreshes the state).
"""

from __future__ import annotations

import logging
import operator
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, compress, repeat
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from connector.delta import commit as group_commit
from connector.delta import fingerprints as fp
from connector.delta.commit import GroupCommit
from connector.delta.flights import IN_FLIGHT, KEYED, SETTLED, Answers, Flight, Positions
from connector.delta.keyindex import key_hashes
from connector.delta.prints import InFlight, rowprint_candidates
from connector.delta.seen import Seen
from connector.delta.stores import Store
from connector.delta.unrecorded import EMPTY, Unrecorded
from connector.delta.users import ChunkUsers
from connector.records import EncodedObjects, MappedChunk

SKIP_UNCHANGED = "unchanged since the last delivered run (delta)"
DRAIN = -1  # settle_nowait's ticket for "have the queued answers committed now" (committed(DRAIN))
log = logging.getLogger(__name__)


def _is_some(record: bytes | None) -> bool:
    return record is not None


def _settle_new(new: dict[str, bytes], keys: list[str], delivered: bool,
                ) -> tuple[dict[str, bytes], list[str], list[str]]:  # fmt: skip
    """settle() for keys none of which is pending: each is a new user with one object in flight (its record
    leaves `new`), or not in `new` at all (returned last: in flight by position, settled already, or never
    sent). Every step a C loop."""
    records: list[bytes | None] = list(map(new.pop, keys, repeat(None)))
    missing: list[str] = []
    if None in records:
        missing = [k for k, r in zip(keys, records, strict=True) if r is None]
        keys = list(compress(keys, map(_is_some, records)))
        records = [r for r in records if r is not None]
    if delivered:
        return dict(zip(keys, records, strict=True)), [], missing  # type: ignore[arg-type]  # not None: filtered
    return {}, keys, missing


@dataclass(slots=True)
class _Pending:
    """A key with objects in flight: what the store will hold once they are all confirmed."""

    values: dict[str, Any] | None  # attributes: the values as sent so far (None: not decoded yet, or an event)
    record: bytes
    inflight: int = 0
    failed: bool = False


def _settle_each(pending: dict[str, _Pending], new: dict[str, bytes], keys: list[str], delivered: bool,
                 ) -> tuple[dict[str, bytes], list[str], list[str]]:  # fmt: skip
    """settle() key by key: a pending key is confirmed (or forgotten, if any of its objects failed) when the
    last of its objects in flight settles; any other is a new user (_settle_new)."""
    confirm: dict[str, bytes] = {}
    forget: list[str] = []
    missing: list[str] = []
    for key in keys:
        entry = pending.get(key)
        if entry is None:
            record = new.pop(key, None)
            if record is None:
                missing.append(key)
                continue
            if delivered:
                confirm[key] = record
            else:
                forget.append(key)
            continue
        entry.inflight -= 1
        if not delivered:
            entry.failed = True
        if entry.inflight > 0:
            continue
        del pending[key]
        if entry.failed:
            forget.append(key)
        else:
            confirm[key] = entry.record
    return confirm, forget, missing


@dataclass(slots=True)
class Counts:
    """Rows of one stream: sent for a key the state did not know (added), sent with changes, unchanged."""

    added: int = 0
    changed: int = 0
    unchanged: int = 0
    repeated: int = 0  # attributes: rows whose user has an earlier row in the same chunk (never unchanged)


class DeltaState:
    """The delta state of one run; thread-safe (the writer's workers settle outcomes concurrently)."""

    def __init__(self, store: Store, *, read_only: bool = False, full: bool = False, memo: Path | None = None) -> None:
        """`read_only`: compare but never write (validate, dry run). `full`: send everything, still record.
        `memo`: the folder of the fast path's prints memo (memo.py; None: none)."""
        self.store = store
        self.memo = memo
        self.label = store.label
        self.read_only = read_only
        self.full = full
        self.last = Counts()  # the counts of the last changed() call
        self._lock = threading.Lock()
        self._pending: dict[str, dict[str, _Pending]] = {}  # stream -> key -> what is in flight
        self._new: dict[str, dict[str, bytes]] = {}  # stream -> key -> record: new users with one object in flight
        self._watch: dict[str, set[str]] = {}  # stream -> keys committed while a chunk's lookup ran
        self._seen: dict[str, Seen | None] = {}  # stream -> keys decided so far, when the state started empty
        # stream -> hashes of the keys its lookups found while nothing of it was written yet (mirror mode:
        # track_found); None once something was, because from then on a lookup may find what the run wrote
        self._found: dict[str, list[np.ndarray] | None] = {}
        self._commit = GroupCommit(store, self._lock, self._written, self._dropped)
        self._kinds: dict[str, str] = {}  # stream -> its objects' kind
        # stream -> (keys refreshed, keys whose record goes) of the changes being committed by the main thread:
        # if the store fails, a refresh lost costs nothing, a record kept is stale (unrecorded.py)
        self._tags: dict[str, tuple[Sequence[tuple[str, bytes]], set[str] | frozenset[str]]] = {}
        self._lost: Unrecorded | None = None  # once the store failed: what it could not record
        self._prints = InFlight(store, self._commit)  # source prints of what is in flight (rowprint.py)
        self._flights: dict[str, list[Flight]] = {}  # stream -> chunks with new users in flight by position
        self._answers = Answers(self._commit.group_rows(), group_commit.DEFER_SECONDS, self._answers_due)  # not applied yet
        self._told = False  # finish() handed the warning to the caller

    @property
    def unrecorded(self) -> Unrecorded | None:
        """What the run could not record since the store failed (None: nothing failed)."""
        return self._lost

    def finish(self) -> Unrecorded | None:
        """The end of the run's writes: stop the deferred commits' timer and commit what is settled. Returns
        what the store could not record (None when it never failed): the caller reports its warning, and
        close() then logs nothing. Never raises a store error (commit.py)."""
        if not self.read_only:
            self._commit.stop()
            self._answers.stop()
            self.commit()
        self._told = True
        return self._lost

    def close(self) -> None:
        """Commit what is settled, and close the store. A store error is never raised: the run's deliveries
        stand; its one warning is logged here unless finish() handed it to the run's report already."""
        try:
            told = self._told
            lost = self.finish()
            if lost is not None and not told:
                log.warning("%s", lost.warning())
        finally:
            self.store.close()

    # ---- deciding (main thread) ---------------------------------------------------------------------
    def changed(self, stream: str, kind: str, mapped: MappedChunk, id_key: str | None = None,
                prints: np.ndarray | None = None) -> tuple[MappedChunk, int]:  # fmt: skip
        """The objects to send (attributes reduced to their changed keys) and how many rows are unchanged.

        `id_key`: the object key that identifies the user (email or phone identify by a key that is
        otherwise an attribute); it is always sent and never compared. `prints`: each object's source print
        (rowprint.py), stored with the record Braze confirms for it. `self.last` holds the counts.
        """
        n = len(mapped)
        self.last = Counts()
        self._kinds[stream] = kind
        if n == 0:
            return mapped, 0
        attributes = kind == "attributes"
        if attributes:
            keys = list(mapped.user_keys)
            rows = fp.encodings(mapped.objects)  # slices of the JSON built by mapping: nothing decoded
        else:
            objs = mapped.objects if isinstance(mapped.objects, list) else list(mapped.objects)
            keys = fp.object_keys(objs)
            rows = [fp.EVENT_RECORD] * n  # what an event's record is
        # A read-only run keeps what it would send for the chunk only (settle never comes to free it).
        pending: dict[str, _Pending] = {} if self.read_only else self._pending.setdefault(stream, {})
        new: dict[str, bytes] = {} if self.read_only else self._new.setdefault(stream, {})
        with self._lock:
            watch = self._watch[stream] = set()
        try:  # the lookup runs without the lock, so the writer's threads settle meanwhile
            stored: list[bytes | None]
            again: list[int] | None
            if self.full and not attributes:
                stored, again = [None] * n, None
            else:
                stored, again = self._lookup(stream, keys, rows)
        except BaseException:
            with self._lock:
                del self._watch[stream]
            raise
        with self._lock:  # settle() confirms under it: a key is pending, unwritten or in the store, never none
            del self._watch[stream]
            found = self._found.get(stream) if attributes else None
            if found is not None:  # nothing of the stream written yet (_put): what was found, was known at the start
                found.append(key_hashes(list(compress(keys, map(_is_some, stored)))))  # as the fast path's
            if watch and not watch.isdisjoint(keys):  # committed during the lookup: read again (committing waits for the lock meanwhile)
                again = [j for j, k in enumerate(keys) if k in watch]
                for j, rec in zip(again, self.store.lookup(stream, [keys[j] for j in again], [rows[j] for j in again]),
                                  strict=True):  # fmt: skip
                    stored[j] = rec
            fly = attributes and again is not None and not self.read_only and self._lost is None
            if again and attributes:  # keys this run decided before (seen.py): settled by position, or in flight
                if self._drain():
                    self._commit.defer()  # committed with later ones, or by its timer
                self._commit.overlay_bulk(stream, [keys[j] for j in again], again, stored)
            self._commit.overlay(stream, keys, stored)  # settled, its transaction not committed yet
            if self._lost is not None:  # settled, never to be committed: the store failed
                self._lost.overlay(stream, attributes, keys, stored, fp.EVENT_RECORD)
            sources: dict[str, int] | None = None
            flight: Flight | None = None
            if attributes:
                if again and not self.read_only:
                    self._move(stream, [keys[j] for j in again], pending)
                keep, objects, invalidate, refresh, added = self._attributes(mapped.objects, rows, keys, stored,
                                                                             pending, new, id_key, fly)  # fmt: skip
                if not self.read_only:
                    keyed = keep if not (fly and added) else [] if len(added) == len(keep) else sorted(set(keep) - set(added))
                    sources = self._prints.note(stream, keys, keyed, refresh, stored, pending, new, prints)
                if fly and added:
                    flight = self._fly(stream, keys, rows, prints, keep, added)
            else:
                keep, objects, invalidate = self._objects(keys, objs, stored, pending)
                refresh = []
            ticket, tagged = 0, bool(invalidate or refresh) and not self.read_only
            if tagged:
                self._tags[stream] = (refresh, invalidate)  # read only if the store fails (_dropped)
                ticket = self._put(stream, [*refresh, *((k, None) for k in invalidate)], sources)
        if tagged:
            try:
                if ticket:  # committed before the request leaves (or dropped: unrecorded.py)
                    self._commit.flush(ticket)
            finally:
                with self._lock:
                    del self._tags[stream]
        self.last.unchanged = n - len(keep)
        every = len(keep) == n
        out = MappedChunk(
            mapped.kind,
            mapped.chunk,
            objects,
            mapped.indices if every else [mapped.indices[j] for j in keep],
            mapped.user_keys if every else [mapped.user_keys[j] for j in keep],
            mapped.rejects,
            delta_keys=flight.keys if flight is not None else keys if every else [keys[j] for j in keep],
            delta_flight=flight,
        )
        return out, n - len(keep)

    def _fly(self, stream: str, keys: list[str], rows: list[bytes], prints: np.ndarray | None, keep: list[int],
             added: list[int]) -> Flight:  # fmt: skip
        """The chunk sent as a flight (under the lock): `added` (new users, positions of the chunk) in flight by
        position, the other rows kept (`keep`) by key; indexed by the positions of the chunk sent."""
        every = len(keep) == len(keys)
        if not every:
            keys, rows = [keys[j] for j in keep], [rows[j] for j in keep]
            prints = None if prints is None else prints[keep]
        at: slice | np.ndarray = slice(None) if len(added) == len(keep) else np.searchsorted(keep, added)
        flight = Flight(keys, rows, prints if self._prints.kept else None, at)
        self._flights.setdefault(stream, []).append(flight)
        return flight

    def _move(self, stream: str, keys: list[str], pending: dict[str, _Pending]) -> None:
        """Users of `keys` (a chunk's repeats) still in flight by position go to the per-key bookkeeping (under
        the lock): their later rows compare against what was sent, and their answers settle by key."""
        for flight in self._flights.get(stream, ()):
            found = flight.find(keys)
            for i in np.flatnonzero(found >= 0).tolist():
                p = int(found[i])
                if flight.state[p] != IN_FLIGHT:
                    continue
                flight.state[p] = KEYED
                flight.flying -= 1
                pending[keys[i]] = _Pending(None, flight.rows[p], 1)
                self._prints.hold(stream, keys[i], int(flight.s[p]))

    @property
    def keeps_prints(self) -> bool:
        """Whether the store keeps source prints (both the local file and PostgreSQL do: stores.keeps_sources)."""
        return self._prints.kept

    def may_skip(self, stream: str) -> bool:
        """Whether the fast path (unchanged_rows) may take any row of `stream` now: not with --full, after the
        store failed, on a store without prints, or on a state that held nothing of the stream when the run
        began (only what this run confirmed could match, and that is in flight or just sent)."""
        if self.full or self._lost is not None or not self._prints.kept:
            return False
        if stream not in self._seen:
            self._seen[stream] = Seen() if self.store.empty(stream) else None
        return self._seen[stream] is None

    def unchanged_rows(self, stream: str, keys: Sequence[str | None] | ChunkUsers, prints: np.ndarray) -> np.ndarray:
        """Delta sync's fast path, before a chunk is validated or mapped (rowprint.py): True for each row whose
        source print is the one stored with its user's confirmed record, so that its objects would be found
        unchanged too. Never for a row without a user, a user twice in the chunk or with anything in flight or
        not yet committed, on a state that was empty when the run began, after the store failed, or with
        --full: those rows go through the object comparison (`changed`). `keys`: the rows' users (users.py),
        or their keys."""
        users = keys if isinstance(keys, ChunkUsers) else ChunkUsers(keys=keys)
        out = np.zeros(len(prints), dtype=bool)
        if not len(prints) or not self.may_skip(stream):
            return out
        with self._lock:  # settle() confirms under it: nothing changes between what is busy and the store's prints
            busy = [*self._commit.writing(stream), self._pending.get(stream, ()), self._new.get(stream, ())]
            at, hashes = rowprint_candidates(users, [b for b in busy if b])  # the sets as they are: no union per chunk
            if not len(at):
                return out
            hit = self.store.sources_of(stream, hashes) == prints[at]  # type: ignore[attr-defined]
            out[at[hit]] = True
            found = self._found.get(stream)
            if found is not None and hit.any():  # mirror mode: these users were known when the run began
                found.append(hashes[hit])
        return out

    def _lookup(self, stream: str, keys: list[str], rows: list[bytes]) -> tuple[list[bytes | None], list[int] | None]:
        """The confirmed record of each key, or None (the row itself where it is the record: the store reads
        no record for it). On a state that held nothing for the stream when the run began, only keys this
        run decided before can have one: their positions come second (None: any key may have one)."""
        if stream not in self._seen:
            self._seen[stream] = Seen() if self.store.empty(stream) else None
        seen = self._seen[stream]
        if seen is None:
            return self.store.lookup(stream, keys, rows), None
        stored: list[bytes | None] = [None] * len(keys)
        again = np.flatnonzero(seen.add(keys)).tolist()
        if again:
            for j, rec in zip(again, self.store.lookup(stream, [keys[j] for j in again], [rows[j] for j in again]),
                              strict=True):  # fmt: skip
                stored[j] = rec
        return stored, again

    def _attributes(self, objs: list[dict[str, Any]] | EncodedObjects, rows: list[bytes], keys: list[str],
                    stored: list[bytes | None], pending: dict[str, _Pending], new: dict[str, bytes],
                    id_key: str | None, fly: bool = False,
                    ) -> tuple[list[int], list[dict[str, Any]] | EncodedObjects, set[str], list[tuple[str, bytes]],
                               list[int]]:  # fmt: skip
        """Keep, objects to send, keys to invalidate, records to refresh (unchanged, stored otherwise), and the
        new users sent whole (kept in `new`, or by the caller in a flight when `fly`)."""
        n, counts, full, long = len(keys), self.last, self.full, fp.LONG
        # A row whose JSON is the record Braze confirmed, with nothing of its user in flight, is unchanged:
        # one comparison per row in C; the rest of this method sees only the other rows.
        known = stored.count(None) < n  # False: no key of the chunk is known (a first run's chunks)
        todo: list[int] = list(range(n)) if full or not known else list(compress(range(n), map(operator.ne, stored, rows)))
        if len(todo) < n and (pending or new or todo):  # ... unless its user is in flight, or sent earlier in
            busy = {keys[j] for j in todo}  # the chunk (then it is compared with what was sent)
            same = set(range(n)).difference(todo)
            todo = sorted([*todo, *(j for j in same if keys[j] in busy or keys[j] in pending or keys[j] in new)])
        # New users (no record, nothing in flight, once in the chunk, no nested value so no operation) are
        # sent whole as mapping encoded them, and kept in flight as their JSON.
        added: list[int] = []
        unique = set(keys)
        counts.repeated = n - len(unique)  # rows whose user has an earlier row in the chunk
        if todo and len(unique) == n:
            busy = (unique & pending.keys()) | (unique & new.keys())
            added = [j for j in todo if stored[j] is None] if known else todo
            if busy:
                added = [j for j in added if keys[j] not in busy]
            if not fp.flat(rows, objs):  # the per-row check only when some row may hold a nested value
                added = [j for j in added if len(rows[j]) <= long and rows[j].find(b"{", 1) < 0]
            if fly:
                pass  # the caller keeps them in flight by position (flights.py)
            elif len(added) == n:  # every row (added holds positions in order, each once)
                new.update(zip(keys, rows, strict=True))
            else:
                new.update(zip(map(keys.__getitem__, added), map(rows.__getitem__, added), strict=True))
            counts.added += len(added)
            if added:
                todo = [] if added is todo else sorted(set(todo).difference(added))
        keep, parts, decoded, invalidate, refresh = self._compare(objs, rows, keys, stored, pending, new, id_key, todo)
        if added:
            keep = sorted([*added, *keep]) if keep else added
        if len(keep) == n and not decoded:
            return keep, objs, invalidate, refresh, added  # every object whole, as mapping built it
        if isinstance(objs, list):
            return keep, [decoded[j] if j in decoded else objs[j] for j in keep], invalidate, refresh, added
        cached = {i: decoded[j] for i, j in enumerate(keep) if j in decoded}  # EncodedObjects counts its own objects
        return keep, fp.encoded_objects([parts.get(j, rows[j]) for j in keep], cached), invalidate, refresh, added

    def _compare(self, objs: Sequence[dict[str, Any]], rows: list[bytes], keys: list[str],
                 stored: list[bytes | None], pending: dict[str, _Pending], new: dict[str, bytes],
                 id_key: str | None, todo: list[int],
                 ) -> tuple[list[int], dict[int, bytes], dict[int, dict[str, Any]], set[str], list[tuple[str, bytes]]]:  # fmt: skip
        """The rows that need their attributes compared, one by one: keep, the JSON and dict of the objects
        reduced to their changed attributes, keys to invalidate, records to refresh."""
        control = fp.CONTROL | {id_key} if id_key else fp.CONTROL
        counts, full, long = self.last, self.full, fp.LONG
        keep: list[int] = []
        parts: dict[int, bytes] = {}  # row -> the JSON of the object to send, when not the row's own
        decoded: dict[int, dict[str, Any]] = {}  # row -> ... its dict
        invalidate: set[str] = set()  # keys whose confirmed record goes before their new values are sent
        refresh: list[tuple[str, bytes]] = []
        differs = fp.differs
        for j in todo:
            key, row, known = keys[j], rows[j], stored[j]
            entry = pending.get(key)
            if entry is None and key in new:  # sent earlier in this run as a new user
                entry = pending[key] = _Pending(None, new.pop(key), 1)
            if entry is None:
                if known is None:
                    if len(row) <= long and row.find(b"{", 1) < 0:  # a new user, no nested value (no operation)
                        pending[key] = _Pending(None, row, 1)
                        keep.append(j)
                        counts.added += 1
                        continue
                elif not full and known == row:
                    continue  # the JSON Braze confirmed (a record never holds an operation)
            raw = None if full else known  # --full compares against nothing, but still replaces what is known
            obj = objs[j]  # decoded from its JSON only now
            values, ops = fp.split(obj)
            if ops or len(row) > long:
                rec = fp.record(values)
                if entry is None and raw is not None and raw == rec and not ops:
                    continue
            if entry is not None:
                if entry.values is None:
                    entry.values = fp.load(entry.record)
                base: dict[str, Any] | None = entry.values
            else:
                base = fp.load(raw) if raw is not None else None
            if base is None:  # a user the state does not know (or --full): everything goes, even no attributes
                sent, fresh = obj, True
            else:
                news = {a for a, v in values.items() if a not in control and (a not in base or differs(v, base[a]))}
                fresh = bool(news)
                if not fresh and not ops:
                    if entry is None and raw is not None and raw != row and len(row) <= long and base.keys() <= values.keys():
                        refresh.append((key, row))  # the same values: the next run compares the JSON alone
                    continue
                sent = {a: v for a, v in obj.items() if a in news or a in control or a not in values}  # ops too
            if entry is None and known is None:
                counts.added += 1
            else:
                counts.changed += 1
            if fresh and known is not None:
                invalidate.add(key)
            if entry is None:
                covered = base is None or base.keys() <= values.keys()  # what Braze will hold is the row itself
                merged = values if covered else {**base, **values}  # type: ignore[dict-item]
                record = row if covered and not ops and len(row) <= long else fp.record(merged)
                pending[key] = entry = _Pending(merged, record)
            elif fresh:
                assert entry.values is not None
                entry.values = {**entry.values, **values}
                entry.record = fp.record(entry.values)
            entry.inflight += 1
            keep.append(j)
            if sent is not obj:
                parts[j] = orjson.dumps(sent)
                decoded[j] = sent
        return keep, parts, decoded, invalidate, refresh

    def _objects(self, keys: list[str], objs: list[dict[str, Any]], stored: list[bytes | None],
                 pending: dict[str, _Pending]) -> tuple[list[int], list[dict[str, Any]], set[str]]:  # fmt: skip
        keep: list[int] = []
        objects: list[dict[str, Any]] = []
        for j, key in enumerate(keys):
            entry = pending.get(key)
            if not self.full and (stored[j] is not None or entry is not None):
                continue
            if entry is None:
                entry = pending[key] = _Pending(None, fp.EVENT_RECORD)
            entry.inflight += 1
            keep.append(j)
            objects.append(objs[j])
        self.last.added = len(keep)
        return keep, objects, set()

    # ---- settling (writer threads) ------------------------------------------------------------------
    def settle(self, stream: str, keys: Iterable[str] | Positions, delivered: bool) -> None:
        """Objects with a final outcome: delivered (2xx, not named in errors[]) or anything else. `keys`: their
        keys, or their positions in the chunk sent (MappedChunk.delta_rows: what the writer passes).

        When the last object in flight for a key settles, its record is confirmed, or the key forgotten if
        any of its objects failed."""
        if isinstance(keys, Positions):
            ticket: int | None = self._settle_at(stream, keys, delivered)
        else:
            ticket = self._settle(stream, keys, delivered, block=True)
        if ticket:
            self.committed(ticket)  # committed before this returns, with other threads' changes

    def settle_nowait(self, stream: str, keys: Iterable[str] | Positions, delivered: bool) -> int | None:
        """settle() for a caller that must not wait (the writer's event loop, for every answer): None when the
        state's lock is held (a chunk being decided, a transaction being handed over) and nothing was done:
        call settle(); else the settle is done in memory, and the result is the ticket of the transaction that
        must commit before it counts as recorded, as settle() would have waited for (0: none, the usual case
        for attributes: see the module doc); pass it to `committed`, off the loop. Positions never wait for the
        lock: they are queued (flights.Answers), and the ticket is DRAIN once enough of them wait."""
        if isinstance(keys, Positions):
            return self._settle_at(stream, keys, delivered)
        return self._settle(stream, keys, delivered, block=False)

    def committed(self, ticket: int) -> None:
        """Return once the transaction of a settle_nowait() ticket committed (or was dropped: commit.py)."""
        if ticket == DRAIN:
            self.commit()
        else:
            self._commit.flush(ticket)

    def _settle_at(self, stream: str, at: Positions, delivered: bool) -> int:
        """Queue a flight's answer (no lock); DRAIN: the caller should commit the queue (committed)."""
        if self.read_only:
            return 0
        return DRAIN if self._answers.add(stream, at.flight, at.tokens, delivered) else 0

    def _answers_due(self) -> None:
        """The answers' timer (flights.Answers): commit what waited DEFER_SECONDS. A store error is not raised."""
        self.commit()

    def _drain(self) -> int:
        """Apply the queued answers of flights (under the lock): confirmed positions go to the group commit as
        slices, failed ones are dropped, positions kept by key settle by key. The ticket to flush (0: none)."""
        items = self._answers.take()
        if not items:
            return 0
        groups: dict[int, tuple[str, Flight, list[list[int]], list[list[int]]]] = {}
        for stream, flight, tokens, delivered in items:
            g = groups.get(id(flight))
            if g is None:
                g = groups[id(flight)] = (stream, flight, [], [])
            (g[2] if delivered else g[3]).append(tokens)
        ticket = 0
        for stream, flight, ok, failed in groups.values():
            for lists, delivered in ((ok, True), (failed, False)):
                if lists:
                    at = np.fromiter(chain.from_iterable(lists), np.int64)
                    ticket = max(ticket, self._apply(stream, flight, at, delivered))
        for stream in {g[0] for g in groups.values()}:
            self._flights[stream] = [f for f in self._flights.get(stream, ()) if f.flying]
        return ticket

    def _apply(self, stream: str, flight: Flight, tokens: np.ndarray, delivered: bool) -> int:
        """One flight's answers of one outcome (under the lock); the ticket to flush (0: none)."""
        state = flight.state[tokens]
        ticket = 0
        live = tokens[state == IN_FLIGHT]
        if len(live):
            flight.state[live] = SETTLED
            flight.flying -= len(live)
            if delivered:  # a failed new user was not in the store: nothing to write (unrecorded.py)
                if stream in self._found:
                    self._found[stream] = None
                ticket = self._commit.put_bulk(stream, flight, live)
        keyed = tokens[state == KEYED]
        if len(keyed):
            ticket = max(ticket, self._settle_keys(stream, list(flight.keys_at(keyed)), delivered))
        return ticket

    def _flown(self, stream: str, keys: list[str], delivered: bool) -> int:
        """settle() by key of users in flight by position (callers that settle keys: tests, benches)."""
        ticket = 0
        for flight in self._flights.get(stream, ()):
            found = flight.find(keys)
            at = found[found >= 0]
            at = at[flight.state[at] == IN_FLIGHT]
            if len(at):
                ticket = max(ticket, self._apply(stream, flight, at, delivered))
        return ticket

    def _settle(self, stream: str, keys: Iterable[str], delivered: bool, *, block: bool) -> int | None:
        """settle() in memory, under the lock (None: not `block` and the lock was held); the ticket to flush."""
        if self.read_only:
            return 0
        keys = keys if isinstance(keys, list) else list(keys)
        if not self._lock.acquire(blocking=block):
            return None
        try:
            return self._settle_keys(stream, keys, delivered)
        finally:
            self._lock.release()

    def _settle_keys(self, stream: str, keys: list[str], delivered: bool) -> int:
        """_settle() under the lock."""
        pending, new = self._pending.get(stream, {}), self._new.get(stream, {})
        flying = self._prints.of(stream)
        if pending and not pending.keys().isdisjoint(keys):
            confirm, forget, missing = _settle_each(pending, new, keys, delivered)
        else:  # new users only, settled in C (one pop per key)
            confirm, forget, missing = _settle_new(new, keys, delivered)
        ticket = self._flown(stream, missing, delivered) if missing and self._flights.get(stream) else 0
        if confirm or forget:
            sources = flying.settle(confirm, forget) if flying is not None else None
            ticket = max(ticket, self._put(stream, [*confirm.items(), *zip(forget, repeat(None))], sources))
        if ticket and self._kinds.get(stream) == "attributes" and not self._commit.due():
            self._commit.defer()  # written with later ones, or by its timer (see the module's docstring)
            return 0
        return ticket

    def _put(self, stream: str, changes: Iterable[tuple[str, bytes | None]],
             sources: dict[str, int] | None = None) -> int:  # fmt: skip
        """Hand changes (and the source prints of confirmed keys) to the group commit (under the lock); the
        stream's lookups stop proving what was known when the run began (track_found)."""
        if stream in self._found:
            self._found[stream] = None
        return self._commit.put(stream, changes, sources)

    def _dropped(self, stream: str, changes: dict[str, bytes | None]) -> None:
        """Changes the store will never hold (under the lock; commit.py): kept as hashes, to count them and for
        this run's later decisions. Other forgets need nothing: see unrecorded.py."""
        if self._lost is None:
            assert self._commit.failed is not None
            self._lost = Unrecorded(self.label, self._commit.failed)
        refresh, stale = self._tags.get(stream, ((), EMPTY))
        refreshed = {k for k, _ in refresh}
        confirmed = [k for k, r in changes.items() if r is not None and k not in refreshed]
        kept = [k for k, r in changes.items() if r is None and k in stale] if stale else []
        self._lost.add(stream, self._kinds.get(stream, "attributes"), confirmed, kept)

    def _written(self, stream: str, keys: Iterable[str]) -> None:
        """Keys committed to the store (under the lock): a chunk being looked up reads them again."""
        watch = self._watch.get(stream)
        if watch is not None:
            watch.update(keys)

    # ---- what the state knows (mirror mode) ---------------------------------------------------------
    def known_keys(self, stream: str) -> Iterator[str]:
        """The keys of `stream` whose records Braze confirmed, sorted (mirror mode lists them in this order)."""
        self.commit()
        return iter(self.store.keys(stream))

    def known_count(self, stream: str) -> int:
        """How many keys of `stream` Braze confirmed (counted by the store; no key is listed)."""
        self.commit()
        return self.store.count(stream)

    def track_found(self, stream: str) -> None:
        """Note, from now on, which keys of `stream` its lookups find (found_count); call before the first chunk."""
        if not self.read_only:
            self._found.setdefault(stream, [])

    def found_count(self, stream: str) -> int | None:
        """How many distinct keys (by their hash: a collision can only lower it) the lookups of `stream` found
        in the state while nothing of the stream had been written in this run, so all of them were known
        when it began; None when not tracked, or once the run wrote something of the stream."""
        with self._lock:
            found = self._found.get(stream)
            if found is None:
                return None
            hashes = np.concatenate(found) if found else np.empty(0, np.int64)
        hashes.sort()  # distinct values by sorting: numpy's hashed unique measured 10 x slower at 1M
        return int(np.count_nonzero(hashes[1:] != hashes[:-1])) + (len(hashes) > 0)

    def holds_nothing(self, stream: str) -> bool:
        """Whether the store has no confirmed key for `stream` (asked before a run sends anything)."""
        return self.store.empty(stream)

    def commit(self) -> None:
        """Return once every change settled so far is committed to the store (settle() returns so already;
        this waits for other threads' settles in progress)."""
        if not self.read_only:
            with self._lock:
                self._drain()
                ticket = self._commit.everything()
            self._commit.flush(ticket)

    def forget(self, stream: str, keys: Iterable[str]) -> None:
        """Forget these keys' confirmed records (users deleted at Braze, say)."""
        if not self.read_only:
            gone = set(keys)
            with self._lock:
                self._tags[stream] = ((), gone)  # not forgotten (the store failed): a stale record
                ticket = self._put(stream, ((k, None) for k in gone))
            try:
                if ticket:
                    self._commit.flush(ticket)
            finally:
                with self._lock:
                    del self._tags[stream]

"""Delta sync: send only what changed since the last delivered run (streams with `delta: true`).

Braze bills every attribute written, changed or not, and every event (braze-api.md §12: "only pass deltas").
A SQLite state file (`state.path`) remembers what Braze confirmed:

- attributes: per user (the identifier), a fingerprint of every attribute value delivered. A row is sent
  with only the attributes whose value differs from what Braze last confirmed; a row with none is skipped
  ("unchanged since the last delivered run"). Operations (`inc`, array add/remove) are always sent and
  never remembered: they change the profile each time by design.
- events and purchases: a fingerprint of the whole object. An event or purchase already delivered (same
  user, name or product, time, properties, ...) is skipped, so re-running a file never counts it twice.

Nothing is remembered before Braze confirmed it. Decisions are recorded as *pending* when a row is sent, so
later rows of the same run compare against what was just sent (source order, as the writer delivers it);
a pending entry becomes *confirmed* when its request gets a 2xx. Any other outcome (rejected, failed,
unknown, not sent) forgets the user's confirmed state, so the next run sends all of that user's attributes
again (safe: attribute sets are idempotent). A run that crashes leaves pending entries, which the next run
discards: what it may have delivered is sent again, never lost.

The state assumes the connector is the only writer of these attributes; a profile edited elsewhere in
Braze is not noticed (`--full` sends everything and refreshes the state).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from connector.errors import ConfigError
from connector.records import MappedChunk

SKIP_UNCHANGED = "unchanged since the last delivered run (delta)"
# Keys of an attributes object that are not attribute values.
_CONTROL = frozenset(("external_id", "user_alias", "braze_id", "_update_existing_only"))
_OPERATIONS = frozenset(("inc", "add", "remove", "update", "$add", "$remove", "$update"))
_BATCH = 500  # keys per SELECT ... IN (...)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    stream TEXT NOT NULL,
    key TEXT NOT NULL,
    confirmed BLOB,
    pending BLOB,
    inflight INTEGER NOT NULL DEFAULT 0,
    dirty INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stream, key)
) WITHOUT ROWID;
"""


_SETTLE_OK = """
UPDATE state SET
    inflight = inflight - 1,
    confirmed = CASE WHEN inflight > 1 THEN confirmed WHEN dirty THEN NULL ELSE pending END,
    pending = CASE WHEN inflight > 1 THEN pending ELSE NULL END,
    dirty = CASE WHEN inflight > 1 THEN dirty ELSE 0 END
WHERE stream = ? AND key = ?
"""
_SETTLE_FAILED = """
UPDATE state SET
    inflight = inflight - 1,
    confirmed = CASE WHEN inflight > 1 THEN confirmed ELSE NULL END,
    pending = CASE WHEN inflight > 1 THEN pending ELSE NULL END,
    dirty = CASE WHEN inflight > 1 THEN 1 ELSE 0 END
WHERE stream = ? AND key = ?
"""


def _fp(value: Any) -> str:
    """A value's fingerprint: its JSON when short (cheaper than hashing), else an 8-byte BLAKE2b digest."""
    raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    if len(raw) <= 24:
        return raw.decode()
    return "#" + hashlib.blake2b(raw, digest_size=8).hexdigest()


def open_db(path: Path) -> sqlite3.Connection:
    """The state file, opened for several threads (autocommit; WAL, so a killed run keeps what it committed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class DeltaState:
    """The state file of one run; thread-safe (the writer's workers settle outcomes concurrently)."""

    def __init__(self, path: Path, *, read_only: bool = False, full: bool = False) -> None:
        """`read_only`: compare but never write (validate, dry run). `full`: send everything, still record."""
        self.path = path
        self.read_only = read_only
        self.full = full
        self._lock = threading.Lock()
        if read_only and not path.exists():
            self._db: sqlite3.Connection | None = None
            return
        try:
            self._db = open_db(path)
            self._db.executescript(_SCHEMA)
            if not read_only:
                # A crashed run's pending decisions: Braze may or may not have applied them, so the user's
                # confirmed state is forgotten too, and everything is sent again (never lost).
                self._db.execute("UPDATE state SET confirmed = NULL, pending = NULL, inflight = 0, dirty = 0 "
                                 "WHERE inflight != 0 OR pending IS NOT NULL OR dirty != 0")  # fmt: skip
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"state file {path}: cannot be opened ({exc}); check state.path") from None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ---- deciding (main thread) ---------------------------------------------------------------------
    def changed(self, stream: str, kind: str, mapped: MappedChunk, id_key: str | None = None) -> tuple[MappedChunk, int]:
        """The objects to send (attributes reduced to their changed keys) and how many rows are unchanged.

        `id_key`: the object key that identifies the user (email or phone identify by a key that is
        otherwise an attribute); it is always sent and never compared.
        """
        n = len(mapped)
        if n == 0:
            return mapped, 0
        control = _CONTROL | {id_key} if id_key else _CONTROL
        keys = list(mapped.user_keys) if kind == "attributes" else [_fp(obj) for obj in mapped.objects]
        known = self._lookup(stream, set(keys))
        keep: list[int] = []
        objects: list[dict[str, Any]] = []
        updates: dict[str, dict[str, str]] = {}
        inflight: dict[str, int] = {}
        for j, obj in enumerate(mapped.objects):
            key = keys[j]
            if kind == "attributes":
                base = updates.get(key)
                seen = base is not None or (key in known and not self.full)
                if base is None:
                    base = {} if self.full else known.get(key, {})
                sent: dict[str, Any] = {}
                fresh: dict[str, str] = {}
                ops = 0
                for a, v in obj.items():
                    if a in control:
                        sent[a] = v
                    elif type(v) is dict and v and v.keys() <= _OPERATIONS:
                        sent[a] = v  # an operation: always sent, never remembered
                        ops += 1
                    else:
                        f = _fp(v)
                        if base.get(a) != f:
                            fresh[a] = f
                            sent[a] = v
                if not fresh and not ops and seen:
                    continue  # nothing changed (a user never sent goes even with no attributes)
                updates[key] = {**base, **fresh} if fresh else base
                objects.append(sent)
            else:
                if not self.full and (key in known or key in updates):
                    continue
                updates[key] = {}
                objects.append(obj)
            keep.append(j)
            inflight[key] = inflight.get(key, 0) + 1
        if not self.read_only:
            self._mark_pending(stream, updates, inflight)
        out = MappedChunk(
            mapped.kind,
            mapped.chunk,
            objects,
            [mapped.indices[j] for j in keep],
            [mapped.user_keys[j] for j in keep],
            mapped.rejects,
            delta_keys=[keys[j] for j in keep],
        )
        return out, n - len(keep)

    def _lookup(self, stream: str, keys: set[str]) -> dict[str, dict[str, str]]:
        """key -> the fingerprints to compare against (pending if a send is in flight, else confirmed)."""
        out: dict[str, dict[str, str]] = {}
        if self._db is None or not keys:
            return out
        items = list(keys)
        with self._lock:
            for i in range(0, len(items), _BATCH):
                part = items[i : i + _BATCH]
                marks = ",".join("?" * len(part))
                sql = f"SELECT key, confirmed, pending, dirty FROM state WHERE stream = ? AND key IN ({marks})"
                for key, confirmed, pending, dirty in self._db.execute(sql, [stream, *part]):
                    blob = pending if pending is not None else confirmed
                    if blob is not None and not dirty:
                        out[key] = orjson.loads(blob)
        return out

    def _mark_pending(self, stream: str, updates: dict[str, dict[str, str]], inflight: dict[str, int]) -> None:
        if self._db is None or not updates:
            return
        rows = [(stream, k, orjson.dumps(v), inflight[k]) for k, v in updates.items()]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO state (stream, key, pending, inflight) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (stream, key) DO UPDATE SET pending = excluded.pending, "
                "inflight = state.inflight + excluded.inflight",
                rows,
            )
            self._db.execute("COMMIT")

    # ---- settling (writer threads) ------------------------------------------------------------------
    def settle(self, stream: str, keys: Iterable[str], delivered: bool) -> None:
        """Objects with a final outcome: delivered (2xx, not named in errors[]) or anything else."""
        if self._db is None or self.read_only:
            return
        rows = [(stream, k) for k in keys]
        if not rows:
            return
        # One statement per object; SET expressions all read the row as it was. When the user's last object
        # in flight settles: promote what was sent, or forget the user if any of its objects failed.
        sql = _SETTLE_OK if delivered else _SETTLE_FAILED
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(sql, rows)
            self._db.execute("COMMIT")

    # ---- mirror mode (delivery/mirror.py) ----------------------------------------------------------
    def known_keys(self, stream: str) -> Iterator[str]:
        """The users of a stream whose values Braze confirmed (the candidates for removal), in pages."""
        if self._db is None:
            return
        last = ""
        while True:
            with self._lock:
                page = [k for (k,) in self._db.execute(
                    "SELECT key FROM state WHERE stream = ? AND key > ? AND confirmed IS NOT NULL ORDER BY key "
                    "LIMIT ?", (stream, last, _BATCH * 10))]  # fmt: skip
            yield from page
            if len(page) < _BATCH * 10:
                return
            last = page[-1]

    def forget(self, stream: str, keys: Iterable[str]) -> None:
        """Drop users from the state (Braze confirmed their deletion)."""
        rows = [(stream, k) for k in keys]
        if self._db is None or self.read_only or not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM state WHERE stream = ? AND key = ?", rows)
            self._db.execute("COMMIT")

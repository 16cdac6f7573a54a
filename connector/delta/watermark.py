"""Incremental cursors: read only rows past what Braze confirmed (streams with `incremental: {cursor: col}`).

The state (tables `watermark` and `watermark_done` in the pipeline's state file, or in the PostgreSQL state
database with `state.url_env`: marks.py) holds, per stream:

- W, the watermark: every row whose cursor is below W has its final outcome;
- D, the rows with a cursor of W or above that already have theirs, as (row identity, cursor value).

A run reads the rows with cursor >= W (pushed into the SQL `WHERE` as a bound parameter, ordered by the
cursor; a filter for files) and drops those in D. Reading `>=` rather than `>` is what keeps ties whole:
when a run ends between two rows with the same cursor value, or a row with that value arrives later, the
next run reads the value again and D says which of its rows were already confirmed, so nothing at the
watermark is lost and nothing is sent twice. D also holds rows above W confirmed while an earlier row
failed, so a re-run after a partial failure resends only what did not go through.

A row is done when Braze confirmed it (a 2xx, not named in `errors[]`), when it was rejected (locally or
by Braze: resending would be rejected again; fixing the row at the source moves its cursor, so it is read
again), or when delta sync found it unchanged. Failed, unknown and unsent rows are not done. W then moves
to the lowest cursor among the rows that are not done (still in flight, failed, or not yet read: for an
ordered SQL read, rows at or past the last value read; for files, any row until the whole stream was
read), or to the highest value read once every row is done. It never moves past a row that is not done,
so a failed, stopped or killed run leaves W where the confirmed rows put it: nothing after the first
unconfirmed row is lost. Rows in flight when a run is killed were not recorded as done and are sent again
(at least once, as for any request whose answer was lost).

D is written as outcomes arrive and W right after, both committed at once, so a killed run keeps what it
confirmed. Rows with a NULL cursor are read only by a run without a watermark (the first, or `--full`)
and never move it. The cursor must not go backwards for a changed row (a row written later with an older
cursor value than W is not seen): use a column the database sets on every write.
"""

from __future__ import annotations

import heapq
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from connector.delta.marks import MarkStore, SqliteMarks
from connector.delta.unrecorded import cause
from connector.errors import SourceError
from connector.records import RowRef

log = logging.getLogger(__name__)

Outcome = Literal["delivered", "rejected", "skipped", "failed"]
DONE: frozenset[str] = frozenset(("delivered", "rejected", "skipped"))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)



def encode(v: Any) -> tuple[str, Any]:
    """A cursor value as (exact text with its type, a value SQLite orders like the cursor)."""
    if isinstance(v, datetime):
        if v.tzinfo is not None:
            v = v.astimezone(UTC)
            return "t:" + v.isoformat(), (v - _EPOCH) // _US
        return "n:" + v.isoformat(), (v - _EPOCH_NAIVE) // _US
    if isinstance(v, date):
        return "d:" + v.isoformat(), v.toordinal()
    if isinstance(v, bool):
        raise TypeError("a boolean cannot be a cursor")
    if isinstance(v, int):
        return "i:" + str(v), v if -(2**63) <= v < 2**63 else float(v)
    if isinstance(v, float):
        return "f:" + repr(v), v
    if isinstance(v, Decimal):
        return "m:" + str(v), float(v)
    if isinstance(v, str):
        return "s:" + v, v
    raise TypeError(f"a {type(v).__name__} cannot be a cursor")


def decode(text: str) -> Any:
    """The cursor value `encode` wrote."""
    kind, raw = text[:2], text[2:]
    if kind in ("t:", "n:"):
        return datetime.fromisoformat(raw)
    if kind == "d:":
        return date.fromisoformat(raw)
    if kind == "i:":
        return int(raw)
    if kind == "f:":
        return float(raw)
    if kind == "m:":
        return Decimal(raw)
    return raw


class Watermarks:
    """The incremental streams' watermarks in one state; thread-safe (writer threads settle outcomes)."""

    def __init__(self, where: Path | MarkStore, *, read_only: bool = False, full: bool = False) -> None:
        """`where`: the state file, or an open MarkStore (PostgreSQL: marks.PgMarks). `read_only`: filter as
        usual but never write (validate, dry run, retry runs). `full`: read everything."""
        self.read_only, self.full = read_only, full
        self.lock = threading.Lock()
        self._marks: dict[str, StreamMark] = {}
        self.db: MarkStore = SqliteMarks(where, read_only=read_only) if isinstance(where, Path) else where
        self.label = self.db.label
        self.failed: str | None = None  # why a write failed (a full disk): nothing more is written this run
        self.unwritten = 0  # writes skipped since

    def write(self, fn: Callable[..., None], *args: Any) -> None:
        """A write to the store (under the lock). The first that fails (a full disk, PostgreSQL gone) ends the
        run's writes, and is reported, never raised: the rows' outcomes do not depend on it. What it loses is
        safe to lose: the stored watermark stays where the last write put it, below every row not confirmed,
        so the next run reads again the rows after it and sends again those this run delivered (at least
        once); a done row not recorded is such a row too."""
        if self.failed is not None:
            self.unwritten += 1
            return
        try:
            fn(*args)
        except (sqlite3.Error, OSError, SourceError) as exc:
            self.failed = cause(exc)
            log.warning("incremental state %s: cannot be written (%s); the watermark stays where it was stored",
                        self.label, self.failed)  # fmt: skip

    def warning(self) -> str | None:
        """The report's words for a failed write (None: every write went through)."""
        if self.failed is None:
            return None
        return (f"incremental state {self.label}: could not be written ({self.failed}); {self.unwritten:,} later "
                "write(s) skipped. The stored watermark stays where the last write put it: the next run reads the "
                "rows after it again and sends again those this run delivered (events, purchases and inc may "
                "count twice). Free the space (or fix the database) before the next run")  # fmt: skip

    def stored(self, stream: str, cursor: str) -> Any | None:
        """The stream's watermark (None: none yet, `--full`, or it was kept for another cursor column)."""
        if self.full:
            return None
        with self.lock:
            row = self.db.get(stream)
        if row is None or row[0] != cursor:
            return None
        return decode(row[1])

    def mark(self, stream: str, cursor: str, *, ordered: bool) -> StreamMark:
        """The run's tracker for one stream (`ordered`: rows arrive sorted by the cursor, as SQL reads do)."""
        if stream not in self._marks:
            value = self.stored(stream, cursor)
            if value is None and not self.read_only:
                # A new cursor column: rows done at the old one's values mean nothing now. --full starts afresh:
                # every row is read and sent again, so none is done yet (a done row kept from before would be
                # skipped by the next run once a stopped --full moved the watermark below it).
                with self.lock:
                    self.write(self.db.reset_done, stream, None if self.full else cursor)
            self._marks[stream] = StreamMark(self, stream, cursor, value, ordered)
        return self._marks[stream]

    def settle(self, stream: str, refs: Sequence[RowRef], outcome: Outcome) -> None:
        """Rows with their final outcome (the writer's and the pipeline's); other streams' rows are ignored."""
        mark = self._marks.get(stream)
        if mark is not None and refs:
            mark.settle(refs, outcome)

    def close(self) -> None:
        """Forget confirmed rows the watermark has passed, then close the state."""
        with self.lock:
            if not self.read_only:
                for mark in self._marks.values():
                    if mark.value is not None and self.failed is None:
                        self.write(self.db.prune, mark.stream, encode(mark.value)[1])
            self.db.close()


class StreamMark:
    """One stream's watermark during a run: which rows to read, and how far confirmed rows move it."""

    def __init__(self, owner: Watermarks, stream: str, cursor: str, value: Any | None, ordered: bool) -> None:
        self.owner, self.stream, self.cursor, self.ordered = owner, stream, cursor, ordered
        self.value = value  # W: the watermark as stored
        self._inflight: dict[RowRef, tuple[Any, str, Any, str]] = {}
        self._heap: list[tuple[Any, str]] = []
        self._count: dict[str, int] = {}
        self._blocked: Any = None  # the lowest cursor of a row that failed
        self._frontier: Any = None  # ordered reads: every row below it was read
        self._complete = False
        self._max: Any = None

    # ---- reading (the pipeline's thread) ----------------------------------------------------------
    def take(self, refs: Sequence[RowRef], values: Sequence[Any], ids: Sequence[str], *, below: bool) -> list[bool]:
        """Which rows of a chunk to process; those kept are tracked until `settle` gives their outcome.

        `below`: also drop rows under the watermark (files; SQL sources already did it in the query).
        """
        start = self.value
        skip_done = not self.owner.full and start is not None
        done = self._done({i for i, v in zip(ids, values, strict=True) if v is not None}) if skip_done else {}
        keep: list[bool] = []
        last: Any = None
        with self.owner.lock:
            try:
                for ref, v, rid in zip(refs, values, ids, strict=True):
                    if v is None:
                        keep.append(start is None)  # never >= a watermark, as in SQL
                        continue
                    if below and start is not None and v < start:
                        keep.append(False)
                        continue
                    last = v
                    self._max = v if self._max is None or v > self._max else self._max
                    text, sort = encode(v)
                    if text in done.get(rid, ()):
                        keep.append(False)
                        continue
                    keep.append(True)
                    self._inflight[ref] = (v, text, sort, rid)
                    self._count[text] = self._count.get(text, 0) + 1
                    heapq.heappush(self._heap, (v, text))
            except TypeError as exc:
                raise SourceError(
                    f"stream {self.stream}: the cursor column {self.cursor!r} changed type since the watermark "
                    f"was stored ({exc}); run once with --full"
                ) from None
            if self.ordered and last is not None:
                self._frontier = last
        self._advance()
        return keep

    def finish(self, complete: bool) -> None:
        """The stream was read to its end (`complete`) or stopped early; W moves as far as it may."""
        if complete:
            self._complete = True
        self._advance()

    # ---- outcomes (writer threads) ----------------------------------------------------------------
    def settle(self, refs: Iterable[RowRef], outcome: Outcome) -> None:
        done: list[tuple[str, str, Any]] = []
        with self.owner.lock:
            for ref in refs:
                entry = self._inflight.pop(ref, None)
                if entry is None:
                    continue
                v, text, sort, rid = entry
                self._count[text] -= 1
                if outcome in DONE:
                    done.append((rid, text, sort))
                elif self._blocked is None or v < self._blocked:
                    self._blocked = v
            if done and not self.owner.read_only:
                self.owner.write(self.owner.db.add_done, self.stream, done)
        self._advance()

    # ---- the watermark ----------------------------------------------------------------------------
    def _lowest_open(self) -> Any:
        """The lowest cursor of a row read but not done (in flight or failed), or None."""
        while self._heap and self._count.get(self._heap[0][1], 0) <= 0:
            self._count.pop(heapq.heappop(self._heap)[1], None)
        low = self._heap[0][0] if self._heap else None
        if self._blocked is not None and (low is None or self._blocked < low):
            low = self._blocked
        return low

    def _advance(self) -> None:
        with self.owner.lock:
            low = self._lowest_open()
            if self._complete:
                new = self._max if low is None else low
            elif self._frontier is not None:
                new = self._frontier if low is None or self._frontier < low else low
            else:
                return  # unordered and not read to the end: an unread row may sit anywhere
            if new is None or (self.value is not None and not new > self.value):
                return
            self.value = new
            if not self.owner.read_only:
                self.owner.write(self.owner.db.put, self.stream, self.cursor, encode(new)[0], datetime.now(UTC).isoformat())

    def _done(self, ids: set[str]) -> dict[str, set[str]]:
        """Row identity -> the cursor values (as text) at which it is already done."""
        out: dict[str, set[str]] = {}
        if not ids:
            return out
        with self.owner.lock:
            for rid, value in self.owner.db.done(self.stream, list(ids)):
                out.setdefault(rid, set()).add(value)
        return out

"""The run journal: which source rows each request carries, written before it leaves, and their outcomes.

`journal.log` sits in the run's report folder. One record per line, `<crc32 as 8 hex digits> <JSON>`, appended
as the run goes, so whatever stops the run (kill -9, power loss, a bug) the next command can tell, for every
row, whether Braze confirmed it, refused it, never got it, or got it without the run seeing the answer
(`--resume`, connector/delivery/resume.py). A line whose checksum does not match is a write the machine did
not finish: reading stops there, and a resumed run cuts it off before appending.

Durability: a request's record is on disk (fdatasync) before the request is sent. The records of the
requests leaving meanwhile share one flush (group commit, at most one fdatasync per SYNC_GAP_S), and the
wait happens at the transport (a gate the HTTP process's writer thread calls once per flush), not in every
sender. Outcome records ride along with the next flush, and are synced at the end. Records (JSON):

- `{"k": "run", ...}`: an attempt starts (run id, pipeline, attempt number, mode, on_ambiguous, and the
  size and modification time of every source file); indices below are per attempt;
- `{"k": "file", "i": n, "stream": s, "file": f}`: rows of (stream, source file) are named by n;
- `["s", id, n, [rows]]`: request `id` is about to leave with these rows;
- `["d", id, dup, [rows]]`: request `id` got a 2xx; every row delivered except the listed ones (refused);
- `["o", n, code, [rows], a, b, dup]`: final outcomes: `R` refused by Braze (a = rule, b = reason), `F`
  failed, not applied as far as anyone knows, `U` unknown, may have been applied (a = status, b = error),
  `N` not applied and safe to send (an aborted run, a request refused as a whole);
- `["p", n, [rows]]`: rows that may be applied twice because a resumed run sends them again;
- `["r", n, [[row, stage, rule, column, reason], ...]]`: rows the run's own checks rejected (parse,
  expectations, mapping): a resumed run keeps them rejected, counted as carried over;
- `{"k": "read", "stream": s, "rows": n}`: the attempt read stream s to its end, n rows (a resumed run need
  not read again a stream every row of which has its final outcome);
- `{"k": "end", "exit_code": c}`: the attempt finished and wrote its report.

`dup` is 1 when the request went out again after an attempt whose connection dropped after sending.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from connector.delivery.outcomes import DUP_DROPPED
from connector.errors import JournalError
from connector.records import MappedChunk, Rejected

if TYPE_CHECKING:
    from connector.report import RunReport

logger = logging.getLogger(__name__)

JOURNAL_FILE = "journal.log"
# Outcome records wait at most this long for a request record's flush to carry them to the file (a run
# killed meanwhile sees their rows as sent without an answer: listed as possibly duplicated, never lost).
OUTCOME_FLUSH_S = 0.5
# At most one fdatasync per this many seconds: the requests that arrive meanwhile share the next one (an
# fdatasync costs ~0.1 ms of CPU whatever it carries; waiting a few ms costs a request nothing at 100 ms).
SYNC_GAP_S = 0.005
# Records of requests that leave later (a group waiting for its rate-limit slot: leaving_many) are synced
# within this; a sender that comes to wait for one first hurries its flush. At 1,000 requests/s their slots
# are mostly tens of ms ahead, so one fdatasync carries two or three passes of the sender, not one.
SOON_S = 0.02
FORMAT_VERSION = 1


def encode(record: Any) -> bytes:
    """One journal line: checksum, space, compact JSON, newline."""
    payload = orjson.dumps(record)
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


@dataclass(frozen=True, slots=True)
class JournalLines:
    """The whole records of a journal file and the byte length they span (a torn tail is left out)."""

    records: list[Any]
    valid_bytes: int
    torn_bytes: int


def read_journal(path: Path) -> JournalLines:
    """Every whole record of `path`, in order; stops at the first line whose checksum does not match.

    Raises:
        JournalError: the file cannot be read.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise JournalError(f"{path}: the run journal cannot be read ({exc})") from None
    records: list[Any] = []
    pos = 0
    for line in _lines(data):
        rec = decode(line)
        if rec is None:
            break
        records.append(rec)
        pos += len(line)
    return JournalLines(records, pos, len(data) - pos)


def _lines(data: bytes) -> Iterator[bytes]:
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            yield data[start:]  # no newline: a torn last line
            return
        yield data[start : end + 1]
        start = end + 1


def decode(line: bytes) -> Any:
    """One line's record, or None when the line is not a whole record (torn, or its checksum is wrong)."""
    if len(line) < 11 or line[8:9] != b" " or not line.endswith(b"\n"):
        return None
    payload = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(payload):
            return None
        return orjson.loads(payload)
    except (ValueError, orjson.JSONDecodeError):
        return None


class _Flush:
    """One write + fdatasync of the records gathered meanwhile; `done` is set once it is over."""

    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


class _Gate:
    """A request's gate: calling it returns once its record is on disk (raises JournalError if it cannot be);
    `passed()` tells without waiting (the transport then need not hand the request to its writer thread)."""

    __slots__ = ("_journal", "_flush")

    def __init__(self, journal: Journal, flush: _Flush) -> None:
        self._journal = journal
        self._flush = flush

    def __call__(self) -> None:
        if not self._flush.done.is_set():
            self._journal._hurry(self._flush)
        self._journal._wait(self._flush)

    def passed(self) -> bool:
        return self._flush.done.is_set() and self._flush.ok


class Journal:
    """Appends a run's records to journal.log; thread-safe. `sending()` returns once its record is durable.

    A fresh run truncates the file; a resumed run (`keep_bytes`) keeps the whole records of the earlier
    attempts and cuts off a torn tail. `sync=False` skips fdatasync (the records still reach the operating
    system before each request, which survives kill -9 but not power loss).
    """

    def __init__(self, path: Path, header: dict[str, Any], *, keep_bytes: int | None = None,
                 sync: bool = True) -> None:  # fmt: skip
        self.path = path
        self._sync = sync
        try:
            flags = os.O_WRONLY | os.O_CREAT | (0 if keep_bytes is not None else os.O_TRUNC)
            self._fd = os.open(path, flags, 0o644)
            if keep_bytes is not None:
                os.ftruncate(self._fd, keep_bytes)
            os.lseek(self._fd, 0, os.SEEK_END)
        except OSError as exc:
            raise JournalError(f"{path}: the run journal cannot be written ({exc})") from None
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the flusher waits here for records
        self._buf: list[bytes] = []
        self._flush = _Flush()  # the flush that will carry the records now in _buf
        self._urgent = False  # a record in _buf has a sender waiting for it
        self._soon_at: float | None = None  # a request record in _buf must be on disk by then (leaving_many)
        self._synced_at = 0.0  # time.monotonic() of the last fdatasync
        self._files: dict[tuple[str, str], int] = {}
        self._next_id = 0
        self._error: str | None = None
        self._closing = False
        self._append(dict(header, k="run", v=FORMAT_VERSION))
        first = self._flush
        self._thread = threading.Thread(target=self._flush_loop, name="braze-journal", daemon=True)
        self._thread.start()
        try:
            self._wait(first)
        except JournalError:
            self.close()
            raise
        _sync_dir(path.parent)

    # ---- records ----------------------------------------------------------------------------------
    def sending(self, stream: str, mapped: MappedChunk, tokens: Sequence[int]) -> int:
        """Record that a request with these objects is about to leave; returns its id once on disk.

        Raises:
            JournalError: the record could not be written (the request must not be sent).
        """
        rid, gate = self.leaving(stream, mapped, tokens)
        gate()
        return rid

    def leaving(self, stream: str, mapped: MappedChunk, tokens: Sequence[int]) -> tuple[int, Callable[[], None]]:
        """Record a request's rows without waiting: its id, and the gate to call before it leaves (returns
        once the record is on disk; raises JournalError if it cannot be written)."""
        rows = _rows(mapped, tokens)
        with self._lock:
            n = self._file(stream, mapped.chunk.file)
            self._next_id += 1
            rid = self._next_id
            self._add(encode(["s", rid, n, rows]), urgent=True)
            flush = self._flush
        return rid, _Gate(self, flush)

    def leaving_many(self, requests: Sequence[tuple[str, MappedChunk, Sequence[int]]]) -> tuple[list[int], Callable[[], None]]:
        """leaving() for requests that leave together (a group): their ids, and one gate (their records share
        one flush: one wake-up of the flusher and one fdatasync for the group)."""
        rows = [_rows(mapped, tokens) for _, mapped, tokens in requests]
        rids: list[int] = []
        with self._lock:
            for (stream, mapped, _), numbers in zip(requests, rows, strict=True):
                n = self._file(stream, mapped.chunk.file)
                self._next_id += 1
                rids.append(self._next_id)
                self._add(encode(["s", self._next_id, n, numbers]), soon=True)
            flush = self._flush
        return rids, _Gate(self, flush)

    def delivered(self, rid: int, mapped: MappedChunk, refused: Sequence[int] = (), *, dup: bool = False) -> None:
        """Request `rid` got a 2xx: its rows are delivered, except the `refused` objects (recorded apart)."""
        self._quietly(["d", rid, int(dup), _rows(mapped, refused)])

    def delivered_many(self, rids: Sequence[int]) -> None:
        """delivered() for requests answered together, every row of each delivered (none refused, no dup)."""
        lines = [encode(["d", rid, 0, []]) for rid in rids]
        with self._lock:
            if self._error is not None or self._closing:
                return
            self._buf += lines

    def outcome(self, stream: str, mapped: MappedChunk, tokens: Sequence[int], code: str, a: Any = None,
                b: Any = None, *, dup: bool = False) -> None:  # fmt: skip
        """Final outcome `code` (R, F, U or N) of these objects; a, b: rule and reason, or status and error."""
        if tokens:
            self._quietly(["o", (stream, mapped.chunk.file), code, _rows(mapped, tokens), a, b, int(dup)])

    def rejected(self, stream: str, file: str, rejects: Sequence[Rejected]) -> None:
        """Rows of (stream, file) rejected by the run's own checks, with the rule and reason (for --resume)."""
        if rejects:
            self._quietly(["r", (stream, file), [[r.ref.row, r.stage, r.rule, r.column, r.reason] for r in rejects]])

    def read(self, stream: str, rows: int) -> None:
        """The stream was read to its end: `rows` rows, each rejected, sent or skipped."""
        with self._lock:
            if self._error is None and not self._closing:
                self._add(encode({"k": "read", "stream": stream, "rows": rows}))

    def resent(self, stream: str, file: str, rows: Sequence[int]) -> None:
        """These rows had no answer before an interruption and are sent again: possibly applied twice."""
        if rows:
            self._quietly(["p", (stream, file), list(rows)])

    def close(self, exit_code: int | None = None) -> None:
        """Write the end record (when `exit_code` is given), flush, sync and close the file."""
        with self._lock:
            if self._closing:
                return
            if exit_code is not None and self._error is None:
                self._add(encode({"k": "end", "exit_code": exit_code}))
            self._closing = True
            self._work.notify()
        self._thread.join()
        try:
            os.close(self._fd)
        except OSError:
            pass

    # ---- internals --------------------------------------------------------------------------------
    def _file(self, stream: str, file: str) -> int:
        """The index naming (stream, file) in this attempt; declares it first (caller holds the lock)."""
        key = (stream, file)
        n = self._files.get(key)
        if n is None:
            n = self._files[key] = len(self._files)
            self._add(encode({"k": "file", "i": n, "stream": stream, "file": file}))
        return n

    def _append(self, record: Any) -> None:
        line = encode(record)
        with self._lock:
            self._add(line, urgent=True)

    def _quietly(self, record: list[Any]) -> None:
        """Append an outcome record. After a write failure (logged; the next `sending` aborts the run)
        outcomes are dropped rather than raised into the writer's accounting. A (stream, file) pair as the
        record's second item is replaced by the pair's index."""
        with self._lock:
            if self._error is not None or self._closing:
                return
            if isinstance(record[1], tuple):
                record[1] = self._file(*record[1])
            self._add(encode(record))

    def _add(self, line: bytes, *, urgent: bool = False, soon: bool = False) -> None:
        """Buffer a line (caller holds the lock). An urgent one (someone waits for it) wakes the flusher; a
        `soon` one (requests that leave later: leaving_many) is synced within SOON_S, sooner if someone comes
        to wait for it (_Gate); outcome records ride along with the next flush, or go within OUTCOME_FLUSH_S."""
        if self._error is not None:
            raise JournalError(self._error)
        if self._closing:
            raise JournalError(f"{self.path}: the run journal is closed")
        self._buf.append(line)
        if urgent and not self._urgent:
            self._urgent = True
            self._work.notify()
        elif soon and self._soon_at is None and not self._urgent:
            self._soon_at = time.monotonic() + SOON_S
            self._work.notify()

    def _hurry(self, flush: _Flush) -> None:
        """Someone waits for `flush` (a gate): make it urgent if it is still gathering records."""
        with self._lock:
            if self._flush is flush and self._buf and not self._urgent:
                self._urgent = True
                self._work.notify()

    def _wait(self, flush: _Flush) -> None:
        """Until `flush` is on disk; each waiter wakes once, when its own flush is done (group commit)."""
        flush.done.wait()
        if not flush.ok:
            raise JournalError(str(self._error))

    def _flush_loop(self) -> None:
        while True:
            with self._lock:
                while not self._urgent and not self._closing:
                    if self._soon_at is not None:
                        left = self._soon_at - time.monotonic()
                        if left <= 0:
                            break
                        self._work.wait(timeout=left)  # more records join this flush, or someone waits
                    elif not self._work.wait(timeout=OUTCOME_FLUSH_S if self._buf else None):
                        break  # only outcome records, waiting for a while: write them (no sync needed)
                if not self._buf:
                    if self._closing:
                        return
                    continue
                gap = self._synced_at + SYNC_GAP_S - time.monotonic()
                soon = self._soon_at is not None
                if gap > 0 and (self._urgent or soon) and not self._closing:
                    self._work.wait(timeout=gap)  # let more requests join this flush
                data = b"".join(self._buf)
                self._buf.clear()
                sync = self._sync and (self._urgent or soon or self._closing)
                self._urgent = False
                self._soon_at = None
                flush, self._flush = self._flush, _Flush()
            try:
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                if sync:
                    os.fdatasync(self._fd)
                    self._synced_at = time.monotonic()
            except OSError as exc:
                with self._lock:
                    self._error = f"{self.path}: the run journal cannot be written ({exc})"
                    pending = self._flush
                logger.error("%s", self._error)
                flush.done.set()
                pending.done.set()  # records appended meanwhile fail too (and nothing more can be)
                return
            flush.ok = True
            flush.done.set()


class RowLog:
    """The writer's record of row outcomes: journal lines (when the run keeps a journal), and the rows that
    may have been applied twice, counted in the report."""

    def __init__(self, journal: Journal | None, report: RunReport) -> None:
        self.journal = journal
        self.report = report

    def sending(self, stream: str, mapped: MappedChunk, tokens: list[int]) -> tuple[int, Callable[[], None] | None]:
        """The request's id (0 without a journal) and the gate the transport calls before it leaves."""
        return self.journal.leaving(stream, mapped, tokens) if self.journal is not None else (0, None)

    def sending_many(self, requests: Sequence[tuple[str, MappedChunk, Sequence[int]]]
                     ) -> tuple[list[int], Callable[[], None] | None]:  # fmt: skip
        """sending() for requests that leave together: their ids and one gate for them all."""
        if self.journal is None:
            return [0] * len(requests), None
        return self.journal.leaving_many(requests)

    def delivered(self, stream: str, mapped: MappedChunk, rid: int, tokens: list[int], refused: list[int], *,
                  dup: bool) -> None:  # fmt: skip
        """A 2xx for request `rid`: its objects are delivered but the `refused` ones."""
        if self.journal is not None:
            self.journal.delivered(rid, mapped, refused, dup=dup)
        if dup:
            no = set(refused)
            self.report.add_possibly_duplicated([mapped.ref(j) for j in tokens if j not in no], DUP_DROPPED, stream)

    def delivered_many(self, rids: Sequence[int]) -> None:
        """A 2xx for each of these requests, every object delivered, none sent again after a dropped attempt."""
        if self.journal is not None:
            self.journal.delivered_many(rids)

    def outcome(self, stream: str, mapped: MappedChunk, tokens: list[int], code: str, a: Any = None,
                b: Any = None, *, dup: bool = False) -> None:  # fmt: skip
        """Any other final outcome (R, F, U, N); `dup`: the request went out again after a dropped attempt."""
        if self.journal is not None:
            self.journal.outcome(stream, mapped, tokens, code, a, b, dup=dup)
        if dup and tokens:
            self.report.add_possibly_duplicated([mapped.ref(j) for j in tokens], DUP_DROPPED, stream)


def _rows(mapped: MappedChunk, tokens: Sequence[int]) -> list[int]:
    """The source row numbers of a chunk's objects (tokens are positions in `mapped`)."""
    numbers, indices = mapped.chunk.row_numbers, mapped.indices
    if type(numbers) is range and type(indices) is range and tokens:
        # The usual request: consecutive positions of a chunk whose rows are consecutive and all mapped. Its
        # rows are then a slice of `numbers`: no int made twice per row (a request record's main cost).
        first = tokens[0]
        if 0 <= first and first + len(tokens) <= len(indices) and (tokens if type(tokens) is list else list(tokens)) == list(range(first, first + len(tokens))):
            at = indices[first : first + len(tokens)]
            if at.step > 0 and 0 <= at[0] and at[-1] < len(numbers):
                return list(numbers[at.start : at.stop : at.step])
    return list(map(numbers.__getitem__, map(indices.__getitem__, tokens)))  # in C: no Python step per row


def _sync_dir(folder: Path) -> None:
    """Make the journal's directory entry durable too (a new file is lost on power loss otherwise)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

"""First attempts in groups: the usual request's way through the writer's event loop, without a coroutine.

Why (issue 12; BENCHMARKS.md, "Fifth pass"): requests already leave in 10 ms groups (waits.GROUP_S), but
each was a task whose coroutine chain (writer, client, acquirer, transport) was resumed three times, with
a timer and two futures of its own, its own journal record and flush, and its own hand-off to the pipe.
Here the loop does that work once per group:

- `start(job)`: a job whose request can go as is (the run not stopped, nothing refused, not oversize)
  reserves its rate-limit slot at once (client.slot) and waits in the group of its GROUP_S step
  (waits.SlotGroups: one timer per step);
- when the step comes, the group's journal records are written under one lock (one flush, one gate), and
  the requests leave together (client.launch: one hand-off to the HTTP process's writer thread);
- their answers come back in the batches the transport read them in (one call on the loop per read);
  each 2xx is recorded at once (Writer._delivered) and its job finished.

Anything else goes on exactly as the coroutine path would from there: a failed first attempt (a 429, a
5xx, a dropped connection, a split, a stop) continues as the job's coroutine through the same retry policy
(Writer._resume, client.resume_async), and so does a 2xx whose delta answer must wait for a commit. A
step that comes late (a busy machine) gives its requests fresh slots, once, as Acquirer.acquire does.
Requests in flight never exceed the jobs running, which the sender caps at write.concurrency; the
per-user order, the journal's gate (a request's record on disk before its body leaves) and the stop
handling (a stop releases every group at once: nothing more leaves, client._leaving) are unchanged.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from connector.delivery.waits import SlotGroups
from connector.errors import ApiError, JournalError

if TYPE_CHECKING:
    from connector.delivery.batching import PackedItem, Request
    from connector.delivery.canvases import CanvasReplies
    from connector.delivery.client import ApiResponse, BrazeClient, Outcome
    from connector.delivery.inflight import InFlight
    from connector.delivery.journal import RowLog
    from connector.delivery.schedule import Job
    from connector.delivery.sender import Sender
    from connector.delivery.sync_access import SyncRefusal
    from connector.delivery.transport import Gate
    from connector.stop import StopToken

logger = logging.getLogger(__name__)

_Batch = Any  # the writer's _Batch (stream, mapped, idempotent, canvas_id): writer.py imports this module


class Writer(Protocol):
    """What the volleys use of their writer (delivery/writer.py's Writer, which imports this module): its
    records, its stop and refusal state, and how it settles a job's rows."""

    _log: RowLog
    _inflight: InFlight
    _sync: SyncRefusal
    _canvases: CanvasReplies

    def _halted(self) -> bool: ...

    def _fail(self, batch: _Batch, items: list[PackedItem], error: str, status: int | None) -> None: ...

    def _delivered_all(self, answers: list[tuple[_Batch, Request, int, Any]]) -> dict[int, tuple[Any, ...]]: ...

    def _settled_later(self, wait: tuple[Any, ...]) -> Coroutine[Any, Any, None]: ...

    def _resume(self, batch: _Batch, req: Request, ticket: int, call: Any, failed: Any, rid: int | None,
                t0: float) -> Coroutine[Any, Any, None]: ...  # fmt: skip


class _Flight:
    """One job's request on its way: its first attempt grouped with the others of its step."""

    __slots__ = ("job", "batch", "req", "ticket", "call", "t0", "rid", "gate", "relaid")

    def __init__(self, job: Job, batch: _Batch, req: Request, ticket: int, call: Any) -> None:
        self.job = job
        self.batch = batch
        self.req = req
        self.ticket = ticket
        self.call = call  # the client's state of this post (client.prepare)
        self.t0 = time.perf_counter()
        self.rid: int | None = None  # the journal's id, once its record is written
        self.gate: Gate | None = None  # returns once that record is on disk
        self.relaid = False  # its step came late and it took a fresh slot (once only)


def _rid(f: _Flight) -> int:
    return f.rid or 0


class Volleys:
    """The writer's first attempts, sent a rate-limit group at a time (on the sender's loop)."""

    def __init__(self, writer: Writer, client: BrazeClient, sender: Sender, stop: StopToken | None) -> None:
        self._w = writer
        self._client = client
        self._sender = sender
        self._groups: SlotGroups[_Flight] = SlotGroups(self._release)
        self._unrecorded: list[_Flight] = []  # started in the sender's current pass: journal records to write
        sender.after_pass = self.after_pass
        if stop is not None:
            stop.on_stop(self._stopped)

    def start(self, job: Job) -> bool:
        """Take a job on (True), or leave it to the coroutine path (False: a case this path does not handle)."""
        w = self._w
        batch, req = job.payload
        if (
            req.oversize
            or not self._client.key_accepted  # until the first answer: one request alone (waits.FirstAnswer)
            or w._halted()
            or (req.endpoint == "users_track_sync" and w._sync.refused)
            or (req.endpoint == "canvas_trigger_send" and w._canvases.refused(batch.canvas_id))
        ):
            return False
        # The HTTP child's start is waited for first (once), as the coroutine path does before it sends: not
        # with requests registered on the wire that have not left.
        self._client.wait_ready()
        ticket = w._inflight.begin(batch, req, [])
        if ticket is None:  # the stopped run gave up: the coroutine path records the rows as not sent
            return False
        f = _Flight(job, batch, req, ticket, self._client.prepare(req.endpoint, req.body, idempotent=batch.idempotent))
        try:
            wait = self._client.slot(f.call)
        except ApiError:
            self._resume(f, sys.exc_info())
            return True
        self._unrecorded.append(f)
        self._groups.add(f, wait)
        return True

    def after_pass(self) -> None:
        """The sender started jobs (on the loop, in the same step): write their journal records together, then
        send those whose slots are due at once, as one group."""
        if self._unrecorded:
            self._record()
        self._groups.release_now()

    def _record(self) -> None:
        """Write the journal records of the requests started in one pass of the sender, together (their gate
        mostly passes long before their step comes: the flush is not in the way of a request)."""
        flights, self._unrecorded = self._unrecorded, []
        flights = [f for f in flights if f.rid is None]  # a stop may have released (and recorded) some already
        try:
            self._write_records(flights)
        except JournalError:
            pass  # each is recorded (or failed) again at its release

    def _write_records(self, flights: list[_Flight]) -> None:
        rids, gate = self._w._log.sending_many([(f.batch.stream, f.batch.mapped, f.req.tokens) for f in flights])
        for f, rid in zip(flights, rids, strict=True):
            f.rid, f.gate = rid, gate

    def _stopped(self) -> None:
        """The run was stopped (any thread): release every group now (nothing more leaves: client._leaving)."""
        try:
            self._sender.loop.call_soon_threadsafe(self._groups.release_all)
        except RuntimeError:
            pass  # the loop has finished: no group is left

    def _release(self, flights: list[_Flight], late: bool) -> None:
        """A step came: record the group's requests in the journal and send them."""
        go: list[_Flight] = []
        for f in flights:
            if late and not f.relaid:
                # Held up past its slot: take a fresh one rather than leave in a burst with the other late ones.
                f.relaid = True
                try:
                    wait = self._client.slot(f.call)
                except ApiError:
                    self._resume(f, sys.exc_info())
                    continue
                if wait > 0:
                    self._groups.add(f, wait)
                    continue
            go.append(f)
        if not go:
            return
        unrecorded = [f for f in go if f.rid is None]  # the journal failed when they started
        if unrecorded:
            try:
                self._write_records(unrecorded)
            except JournalError:
                failed = sys.exc_info()
                for f in unrecorded:
                    self._resume(f, failed)
                go = [f for f in go if f.rid is not None]
                if not go:
                    return
        # Flushes are done in order: the latest record's gate passes once every record of the group is on disk.
        gate = max(go, key=_rid).gate
        passed = getattr(gate, "passed", None)
        if passed is not None and passed():
            gate = None  # on disk already (the usual group): the transport may write them out at once
        self._client.launch([(f.call, f) for f in go], gate, self._answered)

    def _answered(self, items: list[tuple[_Flight, Outcome]]) -> None:
        """Outcomes of first attempts (on the loop, as the transport read them): the 2xx ones recorded
        together (Writer._delivered_all), their jobs finished together (and the next ones started)."""
        w = self._w
        ok: list[_Flight] = []
        answers: list[tuple[_Batch, Request, int, ApiResponse]] = []
        done: list[Job] = []
        for f, outcome in items:
            try:
                resp = self._client.conclude(f.call, outcome)
            except Exception:
                self._resume(f, sys.exc_info())
                continue
            if not w._inflight.end(f.ticket):
                done.append(f.job)  # the stopped run gave up waiting for this answer and recorded its rows
                continue
            assert f.rid is not None
            ok.append(f)
            answers.append((f.batch, f.req, f.rid, resp))
        waits: dict[int, tuple[Any, ...]] = {}
        if answers:
            try:
                waits = w._delivered_all(answers)
            except Exception:  # a bug must not lose rows: count them failed, keep the run going
                logger.exception("unexpected error while delivering %d request(s)", len(answers))
                for f in ok:
                    w._fail(f.batch, f.req.items, "internal error while delivering (see the log)", None)
        for i, f in enumerate(ok):
            wait = waits.get(i)
            if wait is None:
                done.append(f.job)
            else:  # the delta state commits first: wait for it off the loop, as the coroutine path does
                self._sender.adopt(f.job, w._settled_later(wait))
        if done:
            self._sender.finished_many(done)

    def _resume(self, f: _Flight, failed: Any) -> None:
        """The first attempt failed (or never left): the job goes on as a coroutine from there."""
        self._sender.adopt(f.job, self._w._resume(f.batch, f.req, f.ticket, f.call, failed, f.rid, f.t0))

"""Deliver mapped objects to Braze: bulk or sync, concurrent workers, per-user order, every row accounted for.

The submitting thread packs requests (batching) and puts them on a bounded queue that releases a request
only after every earlier request touching one of its users has its final outcome (delivery.schedule).
One event-loop thread (delivery.sender) keeps up to `write.concurrency` of them in flight through the client
(which rate-limits and retries, holding no thread while it waits): a first attempt with the others of its
10 ms rate-limit step (delivery.volleys), the rest of a job as a coroutine. It turns each reply
into row outcomes: delivered; rejected by Braze (per-object errors, or a request-level 400/413 isolated by
splitting); failed after the retries (outcome "unknown" when the connection dropped after sending); or
skipped (dry run, aborted run). Every object submitted gets exactly one of these.

A stop token (SIGTERM, SIGINT, an embedder) stops it like an abort: nothing new is sent, queued requests'
rows are not_sent, and close() waits up to `write.stop_grace_s` for the answers of requests in flight; then
it gives up on them (inflight.py): their rows are failed with outcome "unknown".
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from connector import config
from connector.delivery import batching, outcomes
from connector.delivery.canvases import CANVAS_RULE, CanvasReplies
from connector.delivery.inflight import InFlight, wait_for_jobs, waiting_over
from connector.delivery.journal import Journal, RowLog
from connector.delivery.outcomes import ObjectError
from connector.delivery.schedule import Job, OrderedQueue
from connector.delivery.sender import Sender
from connector.delivery.sync_access import REFUSED_STATUSES, SyncRefusal
from connector.delivery.volleys import Volleys
from connector.errors import (
    AmbiguousApiError,
    ApiError,
    AuthError,
    ConnectorError,
    DestinationUnreachable,
    JournalError,
    PermanentApiError,
    RateLimitedError,
    RateLimitSpent,
    RunStopped,
    TransientApiError,
)
from connector.records import Failed, MappedChunk, Rejected, RowRef

if TYPE_CHECKING:
    from connector.delivery.client import BrazeClient
    from connector.delivery.transport import Gate
    from connector.delta import DeltaState
    from connector.report import RunReport
    from connector.stop import StopToken

logger = logging.getLogger(__name__)

# The array an object of each kind sits in (Braze's per-object errors name it as `input_array`).
ARRAY_OF_KIND = {
    "attributes": "attributes",
    "events": "events",
    "purchases": "purchases",
    "canvas_trigger": "recipients",
    "live_activity": "live_activity",
}
# Consecutive requests that got no HTTP reply at all (connection refused, after every retry) before the run
# is aborted with DestinationUnreachable.
UNREACHABLE_ABORT_AFTER = 3
# Requests queued or in flight per worker: enough to keep the workers busy, few enough to bound memory.
QUEUE_PER_WORKER = 8
SETTLE_THREADS = 32  # delta answers committing at once (threads waiting on one transaction cost nothing)
# Statuses for which a refused request is split to isolate the offending objects (others fail the rows).
SPLIT_STATUSES = (400, 413)

Packed = batching.Request
# Endpoints whose 2xx answers need nothing beyond counting (not sync's confirmed profiles, not Canvas replies).
_PLAIN_ENDPOINTS = frozenset({"users_track", "live_activity_update"})
Outcome = Literal["delivered", "rejected", "failed"]


class Settled(Protocol):
    """Told each row's final outcome (incremental cursors: connector/delta/watermark.py)."""

    def settle(self, stream: str, refs: list[RowRef], outcome: Outcome) -> None: ...


class _GivenUp(Exception):
    """The stopped run gave up waiting for this request's answer: its rows are recorded already."""


@dataclass(frozen=True, slots=True)
class _Batch:
    """The objects of one submit() call and how their requests are built and sent."""

    stream: str
    endpoint: str
    mapped: MappedChunk
    idempotent: bool
    canvas_id: str | None
    canvas_extra: dict[str, Any] | None = None  # top-level keys of a Canvas request (shared properties)


def is_idempotent(stream: config.Stream) -> bool:
    """Whether Braze may apply the stream's objects twice with no harm: plain attribute sets (`inc`, events
    and purchases would count twice, a Canvas would send twice) and Live Activity updates without a
    notification (an update only sets state; a notification would alert the user twice)."""
    if stream.kind == "live_activity":
        assert stream.live_activity is not None
        return stream.live_activity.notification_json_column is None
    return stream.kind == "attributes" and all(f.op != "inc" for f in stream.attributes)


class Writer:
    """Delivers MappedChunks to Braze and records every object's outcome in the RunReport."""

    def __init__(
        self,
        pipeline: config.Pipeline,
        client: BrazeClient | None,
        report: RunReport,
        *,
        mode: Literal["bulk", "sync"],
        dry_run: bool = False,
        delta: DeltaState | None = None,
        settled: Settled | None = None,
        stop: StopToken | None = None,
        journal: Journal | None = None,
    ) -> None:
        if mode not in ("bulk", "sync"):
            raise ValueError(f"writer mode must be 'bulk' or 'sync', not {mode!r}")
        if client is None and not dry_run:
            raise ValueError("a client is required unless dry_run is set")
        self.pipeline = pipeline
        self.write = pipeline.write
        self.client = client
        self.report = report
        self.mode = mode
        self.dry_run = dry_run
        self.delta = delta
        self.settled = settled
        self._log = RowLog(journal, report)  # journal records (on disk before a request leaves), duplicates
        self._samples_left = pipeline.report.sample_bodies
        self._lock = threading.Lock()
        self._fatal: ConnectorError | None = None
        self._abort_reason = ""
        self._stop = threading.Event()
        self._unreachable_run = 0
        self._canvases = CanvasReplies(report)
        self._sync = SyncRefusal(report, confirm_profiles=self.write.confirm_profiles,
                                 from_file=pipeline.file is not None)
        self._closed = False
        self._settle_errors = 0  # answers the delta state failed to record (a bug: _settle_delta)
        self._token = stop
        self._inflight = InFlight()
        workers = 0 if dry_run else self.write.workers(mode)  # requests in flight at most
        self._queue = OrderedQueue(max(1, workers) * QUEUE_PER_WORKER)
        if stop is not None:
            stop.on_stop(self._queue.refuse_new)  # a submit blocked on a full queue returns at once
        self._volleys: Volleys | None = None
        self._sender = Sender(self._queue, self._start, workers) if workers else None
        if self._sender is not None and client is not None and getattr(client, "groups_first_attempts", False):
            self._volleys = Volleys(self, client, self._sender, stop)
        # Delta answers that must wait (the state busy deciding a chunk, or a transaction to commit) settle on
        # these threads, off the event loop (_send; the others settle on the loop, DeltaState.settle_nowait);
        # answers settled at once share the state's transaction (delta/commit.py).
        self._settling = ThreadPoolExecutor(SETTLE_THREADS, "delta-settle") if delta is not None and workers else None

    # ---- public interface -------------------------------------------------------------------------
    @property
    def abort_reason(self) -> str:
        """Why sending stopped ("" while it has not): a fatal destination error, else a stop request."""
        if self._abort_reason or self._token is None or not self._token.stopping:
            return self._abort_reason
        return outcomes.stopped_reason(self._token.reason)

    @property
    def aborted(self) -> bool:
        """True once a fatal destination error stopped sending (the caller can stop reading)."""
        return self._stop.is_set()

    def submit(self, stream: config.Stream, mapped: MappedChunk) -> None:
        """Pack the chunk's objects into requests and queue them; blocks while the in-flight queue is full.

        Only the objects are handled here: `mapped.rejects` are the caller's to record.
        """
        if self._closed:
            raise RuntimeError("Writer.submit() called after close()")
        n = len(mapped)
        if n == 0:
            return
        batch = self._batch(stream, mapped)
        if self._halted():
            self._not_sent(batch, range(n))
            return
        if self.dry_run:
            for req in self._pack(batch, range(n)):
                if self._samples_left > 0:
                    self._samples_left -= 1
                    self.report.add_sample_body(req.endpoint, req.body)
            self.report.add_skipped(n, outcomes.DRY_RUN, stream.name)
            return
        for req in self._pack(batch, range(n)):
            if self._halted() or not self._queue.put((batch, req), req.keys):
                self._not_sent(batch, list(req.tokens))

    def close(self) -> None:
        """Wait for every queued and in-flight request, then re-raise a fatal destination error, if any.

        After a stop, requests in flight are waited for until `write.stop_grace_s` after the stop (not at
        all after a stop at once); then their rows are failed with outcome "unknown".

        Raises:
            AuthError: the API key was refused (401) or lacks the permission (403); unsent rows are skipped.
            DestinationUnreachable: consecutive requests got no HTTP reply after every retry.
        """
        if not self._closed:
            self._closed = True
            self._queue.close()
            grace = self.write.stop_grace_s
            if self._sender is None or wait_for_jobs(self._queue, self._token, grace):
                if self._sender is not None:
                    self._sender.join()
            else:  # the grace period is over: give up on the answers still awaited (inflight.py)
                assert self._token is not None
                self._inflight.give_up(
                    self._queue,
                    waiting_over(self._token, grace),
                    unknown=lambda b, r, why: self._fail(b, r.items, why, None, outcome="unknown"),
                    not_sent=lambda b, r: self._not_sent(b, list(r.tokens)),
                )
        if self._settling is not None:
            self._settling.shutdown(wait=True)  # every delta answer committed before the run reads the state
        if self._settle_errors:
            self.report.add_warning(
                f"delta state: {self._settle_errors:,} answer(s) could not be recorded (an internal error, logged "
                "with the first); their rows' outcomes stand, and the next run may send those users or events again"
            )
            self._settle_errors = 0
        if self._fatal is not None:
            raise self._fatal

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- packing (submitting thread) --------------------------------------------------------------
    def _batch(self, stream: config.Stream, mapped: MappedChunk) -> _Batch:
        kind = stream.kind
        if kind == "canvas_trigger":
            c = stream.canvas
            assert c is not None
            shared: dict[str, Any] | None = (
                {c.properties_key: dict(c.shared_properties)} if c.shared_properties else None
            )
            return _Batch(stream.name, "canvas_trigger_send", mapped, False, c.canvas_id, shared)
        if kind == "live_activity":
            endpoint = "live_activity_update"
        else:
            endpoint = "users_track_sync" if self.mode == "sync" else "users_track"
        return _Batch(stream.name, endpoint, mapped, is_idempotent(stream), None)

    def _pack(self, batch: _Batch, positions: Iterable[int]) -> Iterator[Packed]:
        """Requests for the objects at `positions` of the batch's chunk (each item's token is its position)."""
        mapped = batch.mapped
        objects, keys = mapped.objects, mapped.user_keys
        array = ARRAY_OF_KIND[mapped.kind]
        w = self.write
        if batch.endpoint == "users_track" or (batch.endpoint == "users_track_sync" and self._sync.refused):
            # One chunk is one kind, so every object sits in one array: "combined" and "per_array" coincide.
            yield from batching.pack_track_array(
                array,
                objects,
                keys,
                positions if isinstance(positions, range) else list(positions),
                max_objects=batching.objects_cap(w.batching, w.max_objects_per_request),
                max_bytes=w.max_request_bytes,
            )
            return
        items = (batching.Item(array, objects[j], keys[j], j) for j in positions)
        if batch.endpoint == "canvas_trigger_send":
            assert batch.canvas_id is not None
            yield from batching.pack_canvas(
                items, batch.canvas_id, max_bytes=w.max_request_bytes, extra=batch.canvas_extra
            )
        else:
            yield from batching.pack_single(batch.endpoint, items, max_bytes=w.max_request_bytes)

    # ---- sending (the event loop of sender.py: first attempts in groups, the rest one coroutine per job) --
    def _start(self, job: Job) -> Coroutine[Any, Any, None] | None:
        """Start a job on the loop: its request waits for its rate-limit group (volleys.py), or, when it
        cannot go as is, the job runs as a coroutine (returned)."""
        if self._volleys is not None and self._volleys.start(job):
            return None
        return self._run(job)

    async def _run(self, job: Job) -> None:
        batch, req = job.payload
        await self._run_todo(batch, [req])

    async def _run_todo(self, batch: _Batch, todo: list[Packed]) -> None:
        """Send a job's requests (`todo`, in source order; a split puts its halves in front)."""
        while todo:
            current = todo.pop(0)
            if self._halted():
                self._not_sent(batch, list(current.tokens))
            elif current.endpoint == "users_track_sync" and self._sync.refused:
                todo[:0] = self._pack(batch, current.tokens)  # queued before the refusal: resent in bulk
            elif current.endpoint == "canvas_trigger_send" and (why := self._canvases.refused(batch.canvas_id)):
                self._reject_rows(batch, [(j, CANVAS_RULE, why) for j in current.tokens])
            elif current.oversize:
                self._reject_oversize(batch, current)
            elif (ticket := self._inflight.begin(batch, current, todo)) is None:  # the stopped run gave up
                self._not_sent(batch, list(current.tokens))
            else:
                try:
                    todo[:0] = await self._send(batch, current, ticket)
                except _GivenUp:
                    return  # the stopped run gave up waiting for this answer and recorded the job's rows
                except Exception:  # a bug must not lose rows: count them failed, keep the run going
                    logger.exception("unexpected error while delivering a %s request", current.endpoint)
                    self._fail(batch, current.items, "internal error while delivering (see the log)", None)

    async def _send(self, batch: _Batch, req: Packed, ticket: int) -> list[Packed]:
        """Send one request and record its rows' outcomes; returns the requests still to send (split parts)."""
        t0 = time.perf_counter()
        try:
            rid, gate = self._log.sending(batch.stream, batch.mapped, req.tokens)
            resp = await self._post(batch, req, ticket, gate)
        except (JournalError, RunStopped, ApiError) as e:
            return self._failed(batch, req, e, t0)
        return await self._answered(batch, req, rid, resp)

    async def _resume(self, batch: _Batch, req: Packed, ticket: int, call: Any, failed: Any, rid: int | None,
                      t0: float) -> None:  # fmt: skip
        """The rest of a job whose first attempt, sent in a group (volleys.py), failed with `failed`
        (sys.exc_info()): the retry policy from there (client.resume_async), then as _send and _run would go
        on. `rid` is None when the request's journal record is not written yet (it failed before its group
        left): written first, as _send does."""
        assert self.client is not None
        try:
            try:
                if rid is None:
                    rid, call.gate = self._log.sending(batch.stream, batch.mapped, req.tokens)
                resp = await self.client.resume_async(call, failed)
            except BaseException:
                if not self._inflight.end(ticket):
                    return  # the stopped run gave up waiting for this answer and recorded the job's rows
                raise
            if not self._inflight.end(ticket):
                return
            todo = await self._answered(batch, req, rid, resp)
        except (JournalError, RunStopped, ApiError) as e:
            todo = self._failed(batch, req, e, t0)
        except Exception:  # a bug must not lose rows: count them failed, keep the run going
            logger.exception("unexpected error while delivering a %s request", req.endpoint)
            self._fail(batch, req.items, "internal error while delivering (see the log)", None)
            return
        await self._run_todo(batch, todo)

    def _failed(self, batch: _Batch, req: Packed, e: ConnectorError, t0: float) -> list[Packed]:
        """A request's final error (after the retries): record its rows' outcomes; returns the requests still
        to send (split parts, or a refused sync request resent in bulk). Re-raises an error it does not know."""
        if isinstance(e, JournalError):  # the request's record is not on disk: it was not sent
            self._abort(e, outcomes.ABORT_JOURNAL)
            self._not_sent(batch, list(req.tokens))
            return []
        if isinstance(e, RunStopped):
            self._not_sent(batch, list(req.tokens))
            return []
        if isinstance(e, RateLimitSpent):
            self._limit_spent(batch, req, e, t0)
            return []
        if isinstance(e, AuthError):
            self._record_error(req, e, t0)
            self._abort(e, outcomes.ABORT_AUTH)
            self._not_sent(batch, list(req.tokens))
            return []
        if isinstance(e, PermanentApiError):
            self._record_error(req, e, t0)
            self._reachable()
            if req.endpoint == "users_track_sync" and e.status in REFUSED_STATUSES:
                self._sync.refuse(e.status, e.body)  # the beta is not granted: nothing was applied
                return list(self._pack(batch, req.tokens))
            if req.endpoint == "canvas_trigger_send" and (why := self._canvases.refusal(e.status, e.body)):
                why = self._canvases.refuse(batch.stream, batch.canvas_id, why)
                self._reject_rows(batch, [(j, CANVAS_RULE, why) for j in req.tokens])
                return []
            if e.status == 403:
                self._abort(AuthError(str(e), 403, e.body), outcomes.ABORT_FORBIDDEN)
                self._not_sent(batch, list(req.tokens))
                return []
            if e.status in SPLIT_STATUSES:
                return self._refused(batch, req, e.status, outcomes.parse_body(e.body))
            # 404 and the like mean a wrong URL or endpoint, not a bad row: fail the rows (retryable later).
            self._fail(batch, req.items, outcomes.error_text(e), e.status)
            return []
        if isinstance(e, AmbiguousApiError):
            self._record_error(req, e, t0)
            self._fail(batch, req.items, outcomes.error_text(e), e.status, outcome="unknown",
                       dup=e.resent_after_drop)  # fmt: skip
            return []
        if isinstance(e, TransientApiError):
            self._record_error(req, e, t0)
            self._fail(batch, req.items, outcomes.error_text(e), e.status, dup=e.resent_after_drop)
            if e.status is None and not isinstance(e, RateLimitedError):
                self._unreachable(e)
            else:
                self._reachable()
            return []
        raise e

    async def _answered(self, batch: _Batch, req: Packed, rid: int, resp: Any) -> list[Packed]:
        """_delivered, then the wait for the delta state's commit when it needs one (off the loop)."""
        wait = self._delivered(batch, req, rid, resp)
        if wait is not None:
            await self._settled_later(wait)
        return []

    async def _settled_later(self, wait: tuple[Any, ...]) -> None:
        """Wait off the loop for the delta state to settle (and commit) an answer: _delivered's `wait`."""
        await asyncio.get_running_loop().run_in_executor(self._settling, self._settle_delta, *wait)

    def _delivered_all(self, answers: list[tuple[_Batch, Packed, int, Any]]) -> dict[int, tuple[Any, ...]]:
        """_delivered() for 2xx answers read together: the plain ones (no object named in errors[], not sent
        again after a dropped attempt, nothing else to tell: no cursor, no delta state, a bulk endpoint) are
        counted and journaled in one go; the others one by one. Returns the positions in `answers` whose
        delta answer must be waited for off the loop, with _delivered's `wait`."""
        waits: dict[int, tuple[Any, ...]] = {}
        plain: list[tuple[_Batch, Packed, int, Any]] = []
        simple = self.settled is None
        for i, (batch, req, rid, resp) in enumerate(answers):
            if (
                simple
                and not resp.resent_after_drop
                and (self.delta is None or batch.mapped.delta_keys is None)
                and req.endpoint in _PLAIN_ENDPOINTS
                and not outcomes.object_errors(outcomes.parse_body(resp.body))
            ):
                plain.append((batch, req, rid, resp))
                continue
            try:
                wait = self._delivered(batch, req, rid, resp)
            except Exception:  # a bug must not lose rows: this request's rows failed (as _run does), the rest go on
                logger.exception("unexpected error while delivering a %s request", req.endpoint)
                self._fail(batch, req.items, "internal error while delivering (see the log)", None)
                continue
            if wait is not None:
                waits[i] = wait
        if plain:
            self._reachable()
            # Retries and the 429s they answered were counted as they happened (client on_retry).
            self.report.record_requests(
                [(req.endpoint, resp.status, float(resp.http_ms or resp.elapsed_ms), req.count) for _, req, _, resp in plain]
            )
            self._log.delivered_many([rid for _, _, rid, _ in plain])
            by_stream: dict[str, int] = {}
            for batch, req, _, _ in plain:
                by_stream[batch.stream] = by_stream.get(batch.stream, 0) + req.count
            for stream, n in by_stream.items():
                self.report.add_delivered(n, stream)
        return waits

    def _delivered(self, batch: _Batch, req: Packed, rid: int, resp: Any) -> tuple[Any, ...] | None:
        """A 2xx: record its rows' outcomes (the per-object errors it names rejected). Returns the arguments of
        the _settle_delta call to wait for off the loop, when the delta state must commit first, else None."""
        n = req.count
        tokens = list(req.tokens)
        self._reachable()
        # Retries and the 429s they answered were counted as they happened (client on_retry).
        self.report.record_request(req.endpoint, resp.status, float(resp.http_ms or resp.elapsed_ms), n)
        doc = outcomes.parse_body(resp.body)
        errors = outcomes.object_errors(doc)
        named = self._named(req, errors) if errors else {}
        # Most answers name no object: then the request's items (one object each) are never built.
        rejected = self._reject_named(batch, req, named) if named else 0
        refused = [it.token for it in req.items if (it.array, it.index) in named] if named else []
        self._log.delivered(batch.stream, batch.mapped, rid, tokens, refused, dup=resp.resent_after_drop)
        kept = [it.token for it in req.items if (it.array, it.index) not in named] if named else tokens
        if self.settled is not None:
            self.settled.settle(batch.stream, [batch.mapped.ref(j) for j in kept], "delivered")
        if n - rejected:
            self.report.add_delivered(n - rejected, batch.stream)
        if req.endpoint == "users_track_sync" and self.write.confirm_profiles and not rejected:
            user = outcomes.confirmed_user(doc)
            if user is not None:
                self.report.add_confirmed(batch.mapped.ref(req.items[0].token), user)
        if req.endpoint == "canvas_trigger_send":
            self._canvases.notice(batch.stream, batch.canvas_id, doc)
        keys = batch.mapped.delta_keys
        if self.delta is not None and keys is not None and kept:
            # Last. On the loop when the state's lock is free and nothing must commit first (the usual answer,
            # a few µs); else off the loop: the state commits before settle returns (a disk write or a
            # PostgreSQL round trip) and the loop keeps sending meanwhile.
            done = batch.mapped.delta_rows(kept)  # positions of a flight, or keys (delta/flights.py)
            commit = self._settle_delta(batch.stream, done, True, wait=False)
            if commit != 0:  # None: the state was busy, settle there; a ticket: wait there for its commit
                return (batch.stream, done, True, True, commit or 0)
        return None

    async def _post(self, batch: _Batch, req: Packed, ticket: int, gate: Gate | None = None) -> Any:
        """client.post_async, then claim the outcome: _GivenUp when the stopped run no longer waits for it.
        `gate` runs before the body first leaves (the journal's record on disk)."""
        assert self.client is not None
        try:
            resp = await self.client.post_async(req.endpoint, req.body, idempotent=batch.idempotent, gate=gate)
        except BaseException:
            if not self._inflight.end(ticket):
                raise _GivenUp from None
            raise
        if not self._inflight.end(ticket):
            raise _GivenUp
        return resp

    def _refused(self, batch: _Batch, req: Packed, status: int, doc: Any) -> list[Packed]:
        """A request-level 400/413: reject the objects Braze names, else split until offenders stand alone."""
        errors = outcomes.object_errors(doc)
        if errors:
            named = self._named(req, errors)
            if named:
                self._reject_named(batch, req, named)
                rest = [it.token for it in req.items if (it.array, it.index) not in named]
                # The request was refused as a whole, so nothing in it was applied: resend the others.
                self._log.outcome(batch.stream, batch.mapped, rest, "N")
                return list(self._pack(batch, rest)) if rest else []
        if len(req.items) > 1:
            logger.info(
                "%s: HTTP %s for %d objects; splitting the request", req.endpoint, status, len(req.items)
            )
            self._log.outcome(batch.stream, batch.mapped, list(req.tokens), "N")
            return list(batching.split(req))
        self._reject_one(batch, req.items[0].token, outcomes.request_reason(status, doc))
        return []

    # ---- outcomes ---------------------------------------------------------------------------------
    @staticmethod
    def _named(req: Packed, errors: list[ObjectError]) -> dict[tuple[str, int], str]:
        """(array, index) -> Braze's text for the errors that name an object of this request (first wins)."""
        present = {(it.array, it.index) for it in req.items}
        named: dict[tuple[str, int], str] = {}
        for e in errors:
            pos = (e.array, e.index)
            if pos not in present:
                logger.warning("Braze named %s[%d], which is not in the request; ignored", e.array, e.index)
            elif pos not in named:
                named[pos] = e.text
        return named

    def _reject_named(self, batch: _Batch, req: Packed, named: dict[tuple[str, int], str]) -> int:
        """Reject the rows Braze's per-object errors point at (`_named`); returns how many were rejected."""
        hit = [it for it in req.items if (it.array, it.index) in named]
        self._reject_rows(batch, [(it.token, f"braze.{it.array}", named[(it.array, it.index)]) for it in hit])
        return len(hit)

    def _reject_one(self, batch: _Batch, j: int, reason: str) -> None:
        self._reject_rows(batch, [(j, "braze.request", reason)])

    def _reject_rows(self, batch: _Batch, rows: list[tuple[int, str, str]]) -> None:
        """Reject objects (token, rule, reason) at the destination stage."""
        if rows:
            mapped = batch.mapped
            rejects = [Rejected(mapped.ref(j), "destination", rule, why, values=mapped.values(j)) for j, rule, why in rows]
            self.report.add_rejects(rejects, batch.stream)
            for r, (j, _, _) in zip(rejects, rows, strict=True):
                self._log.outcome(batch.stream, mapped, [j], "R", r.rule, r.reason)
            self._settle(batch, [j for j, _, _ in rows], "rejected")

    def _reject_oversize(self, batch: _Batch, req: Packed) -> None:
        """An object larger on its own than the request size cap: Braze would refuse it (413), so it is not sent."""
        reason = (
            f"the object alone makes a {len(req.body):,}-byte request, over write.max_request_bytes "
            f"({self.write.max_request_bytes:,}); Braze refuses bodies over 4 MB with HTTP 413"
        )
        for it in req.items:
            self._reject_one(batch, it.token, reason)

    def _fail(self, batch: _Batch, items: list[batching.PackedItem], error: str, status: int | None,
              outcome: Literal["failed", "unknown"] = "failed", dup: bool = False) -> None:  # fmt: skip
        mapped = batch.mapped
        self.report.add_failed(
            [Failed(mapped.ref(it.token), error, status, outcome, mapped.values(it.token)) for it in items],
            batch.stream,
        )
        tokens = [it.token for it in items]
        code = "U" if outcome == "unknown" else "F"
        self._log.outcome(batch.stream, mapped, tokens, code, status, error, dup=dup)
        self._settle(batch, tokens, "failed")

    def _not_sent(self, batch: _Batch, positions: Iterable[int]) -> None:
        """Objects of a stopped run that were never sent: skipped, and listed for a retry run."""
        mapped = batch.mapped
        tokens = list(positions)
        rows = [(mapped.ref(j), mapped.values(j)) for j in tokens]
        self.report.add_not_sent(rows, self.abort_reason, batch.stream)
        self._log.outcome(batch.stream, batch.mapped, tokens, "N")
        self._settle(batch, tokens, "failed")

    def _settle(self, batch: _Batch, tokens: list[int], outcome: Outcome) -> None:
        """Delta sync and incremental cursors: tell the state which objects reached their final outcome."""
        if self.delta is not None and batch.mapped.delta_keys is not None and tokens:
            self._settle_delta(batch.stream, batch.mapped.delta_rows(tokens), outcome == "delivered")
        if self.settled is not None and tokens:
            self.settled.settle(batch.stream, [batch.mapped.ref(j) for j in tokens], outcome)

    def _settle_delta(self, stream: str, keys: Any, delivered: bool, wait: bool = True,
                      ticket: int = 0) -> int | None:  # fmt: skip
        """Tell the delta state the final outcome of objects already counted (`wait` False: only if that needs
        no waiting, DeltaState.settle_nowait, whose answer is returned; `ticket`: the settle was done so, wait
        for its commit). A store error (a full disk) is never raised by the state (delta/commit.py); anything
        else is a bug in it, which must not turn rows Braze accepted into failed ones, nor log a traceback per
        answer: the first is logged, and close() puts the count in the report."""
        assert self.delta is not None
        try:
            if ticket:
                self.delta.committed(ticket)
            elif not wait:
                return self.delta.settle_nowait(stream, keys, delivered)
            else:
                self.delta.settle(stream, keys, delivered)
        except Exception:
            with self._lock:
                self._settle_errors += 1
                first = self._settle_errors == 1
            if first:
                logger.exception("delta state: recording the outcome of %d object(s) of stream %s failed; their "
                                 "outcomes stand", len(keys), stream)  # fmt: skip
        return 0

    def _record_error(self, req: Packed, e: ApiError, t0: float) -> None:
        status = e.status if e.status is not None else 0
        latency_ms = (time.perf_counter() - t0) * 1000.0
        self.report.record_request(req.endpoint, status, latency_ms, req.count)

    # ---- stopping and aborting ---------------------------------------------------------------------
    def _halted(self) -> bool:
        """Nothing new is sent: a fatal error aborted the run, or a stop was requested."""
        return self._stop.is_set() or (self._token is not None and self._token.stopping)

    def _limit_spent(self, batch: _Batch, req: Packed, e: RateLimitSpent, t0: float) -> None:
        """The rate limit resets beyond the retry budget: stop the run; this request's rows were not sent
        (unknown when an earlier attempt of a non-idempotent request may have been applied)."""
        if e.status is not None:  # a 429 answered it; else the limiter stopped it before sending
            self._record_error(req, e, t0)
        self._abort(e, e.reason)
        if e.maybe_applied:
            self._fail(batch, req.items, outcomes.error_text(e), e.status, outcome="unknown")
        else:
            self._not_sent(batch, list(req.tokens))

    def _abort(self, error: ConnectorError, reason: str) -> None:
        """Stop sending: the first fatal error wins; rows not yet sent are skipped with its reason."""
        with self._lock:
            if self._fatal is None:
                self._fatal = error
                self._abort_reason = reason
                logger.error("%s; skipping the rows not yet sent", reason)
        self._stop.set()

    def _reachable(self) -> None:
        if self._unreachable_run:
            with self._lock:
                self._unreachable_run = 0

    def _unreachable(self, e: TransientApiError) -> None:
        with self._lock:
            self._unreachable_run += 1
            count = self._unreachable_run
        if count >= UNREACHABLE_ABORT_AFTER:
            self._abort(
                DestinationUnreachable(
                    f"the Braze API stayed unreachable: {count} consecutive requests got no reply after every "
                    f"retry (last error: {outcomes.error_text(e)})"
                ),
                outcomes.ABORT_UNREACHABLE,
            )

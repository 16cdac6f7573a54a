"""A bounded work queue that releases each request only after every earlier request touching one of its users.

The submitting thread adds jobs in source order; consumers (worker threads, or the writer's event loop)
take the jobs that are ready. A job that shares a user with an earlier unfinished job waits until that job
is done (retries and splits included), so one user's updates are never in flight together and never swap,
while different users run concurrently.

Consumers either block in `get()` (threads) or, like the writer's event loop (delivery/sender.py), take
ready jobs with `take()` and are told of new ones by the `on_ready` callback: put() calls it only when a
job becomes ready, so the producer pays no lock handoff to a sleeping consumer per request.

Cost (issue 12): a request's users are looked up and recorded with C-level set and dict operations, with
a Python step only for a user an earlier unfinished request also has. A finished job does not delete its
users one by one (75 cold dict deletions per request, the larger half of this queue's CPU in a run): it
empties the one entry object its users share, and an entry pointing at an emptied one counts as absent.
Once such entries outnumber the live ones, the table is rebuilt from the unfinished jobs (in C, later jobs
last): at most about twice the live entries are kept, and an emptied entry holds no job.

A stopped run calls `refuse_new()` (a blocked `put` returns False at once) and, when it gives up waiting,
`drain()`: every job not yet taken by a worker is removed and returned, so its rows can be listed unsent.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False, slots=True)
class Job:
    """One request waiting to be sent, with the users it touches and the jobs waiting on it."""

    payload: Any
    keys: frozenset[str]
    waiting_on: int = 0
    successors: list[Job] = field(default_factory=list)
    dropped: bool = False  # removed by drain(): never released to a worker


class _Tail:
    """What a user's entry in the queue's table points at, one per job (its users share it): the last job
    added with that user, or None once that job is finished or drained (then the entry counts as absent)."""

    __slots__ = ("job",)

    def __init__(self, job: Job) -> None:
        self.job: Job | None = job


# The table is rebuilt once its entries exceed twice the unfinished jobs' users by this many.
PRUNE_SLACK = 4096


class OrderedQueue:
    """Bounded queue of jobs with per-user ordering; `put` blocks while `capacity` jobs are unfinished."""

    def __init__(self, capacity: int, on_ready: Callable[[], None] | None = None) -> None:
        """`on_ready` is called (under the queue's lock: it must be quick and not call back into the queue)
        when a job becomes ready, and when the queue is closed or drained."""
        self._capacity = max(1, capacity)
        # A producer blocked on a full queue is woken once an eighth of it is free, not at every job done:
        # it then adds a run of jobs in one go instead of trading the lock (and the GIL) with the consumer
        # for every request.
        self._resume_at = self._capacity - max(1, self._capacity // 8)
        self._on_ready = on_ready
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._ready_cv = threading.Condition(self._lock)
        self._idle_cv = threading.Condition(self._lock)
        self._ready: deque[Job] = deque()
        self._tails: dict[str, _Tail] = {}  # user -> the last job added with it (emptied once that is finished)
        self._live: dict[Job, _Tail] = {}  # jobs added and neither finished nor drained, in the order added
        self._live_keys = 0  # the users of the jobs in _live, summed
        self._unfinished = 0
        self._closed = False
        self._refusing = False
        self._drained = False
        self._waiting: dict[Job, None] = {}  # added and not yet taken by a worker (ready or not), in order

    def listen(self, on_ready: Callable[[], None]) -> None:
        """Set the `on_ready` callback (see __init__)."""
        with self._lock:
            self._on_ready = on_ready

    def put(self, payload: Any, keys: Iterable[str]) -> bool:
        """Add a job (blocks while the queue is full); it runs after earlier jobs sharing any of `keys`.

        `keys` may repeat (a request's per-object user keys): one dict lookup per distinct key.
        Returns False, without adding it, once `refuse_new()` was called.
        """
        job = Job(payload, frozenset(keys))
        with self._lock:
            if self._closed:
                raise RuntimeError("the queue is closed")
            while self._unfinished >= self._capacity and not self._refusing:
                self._not_full.wait()
            if self._refusing:
                return False
            self._unfinished += 1
            self._waiting[job] = None
            tails, users = self._tails, job.keys
            tail = self._live[job] = _Tail(job)
            self._live_keys += len(users)
            for key in tails.keys() & users:  # the users an earlier job had (in C; usually none)
                prev = tails[key].job
                # one edge per earlier unfinished job, however many users the two share
                if prev is not None and (not prev.successors or prev.successors[-1] is not job):
                    prev.successors.append(job)
                    job.waiting_on += 1
            tails.update(dict.fromkeys(users, tail))
            if len(tails) > 2 * self._live_keys + PRUNE_SLACK:
                self._prune()
            if job.waiting_on == 0:
                self._ready.append(job)
                self._ready_cv.notify()
                if self._on_ready is not None:
                    self._on_ready()
        return True

    def get(self) -> Job | None:
        """The next ready job, blocking; None once the queue is closed and every job has finished."""
        with self._lock:
            while not self._ready:
                if self._closed and (self._unfinished == 0 or self._drained):
                    return None
                self._ready_cv.wait()
            job = self._ready.popleft()
            self._waiting.pop(job, None)
            return job

    def take(self) -> Job | None:
        """The next ready job, or None at once when there is none (see `exhausted`)."""
        with self._lock:
            if not self._ready:
                return None
            job = self._ready.popleft()
            self._waiting.pop(job, None)
            return job

    @property
    def exhausted(self) -> bool:
        """No job will ever be ready again: closed with every job finished, or drained."""
        with self._lock:
            return self._closed and not self._ready and (self._unfinished == 0 or self._drained)

    def done(self, job: Job) -> None:
        """Mark a job finished (its final outcome recorded): release the jobs that waited on it."""
        self.done_many((job,))

    def done_many(self, jobs: Iterable[Job]) -> None:
        """done() for several jobs, under one hold of the lock (answers read together)."""
        with self._lock:
            released = 0
            for job in jobs:
                self._unfinished -= 1
                self._forget(job)
                for nxt in job.successors:
                    nxt.waiting_on -= 1
                    if nxt.waiting_on == 0 and not nxt.dropped:
                        self._ready.append(nxt)
                        released += 1
                job.successors = []
            if released:
                self._ready_cv.notify(released)
            if self._on_ready is not None and (released or (self._closed and self._unfinished == 0)):
                self._on_ready()
            if self._unfinished <= self._resume_at:
                self._not_full.notify()
            if self._closed:
                self._idle_cv.notify_all()  # wait_idle()
                if self._unfinished == 0:
                    self._ready_cv.notify_all()

    def close(self) -> None:
        """No more jobs: workers drain what is queued and then get None."""
        with self._lock:
            self._closed = True
            self._ready_cv.notify_all()
            self._idle_cv.notify_all()
            if self._on_ready is not None:
                self._on_ready()

    def refuse_new(self) -> None:
        """From now on `put` adds nothing and returns False (a put blocked on a full queue too)."""
        with self._lock:
            self._refusing = True
            self._not_full.notify_all()

    def drain(self) -> list[Any]:
        """Close the queue and remove every job no worker has taken; returns their payloads, oldest first.

        Workers finishing the jobs they hold then get None.
        """
        with self._lock:
            self._closed = self._refusing = self._drained = True
            dropped = list(self._waiting)
            for j in dropped:
                j.dropped = True
                self._forget(j)
            self._waiting.clear()
            self._ready.clear()
            self._unfinished -= len(dropped)
            self._ready_cv.notify_all()
            self._idle_cv.notify_all()
            self._not_full.notify_all()
            if self._on_ready is not None:
                self._on_ready()
        return [j.payload for j in dropped]

    def _forget(self, job: Job) -> None:
        """The job is finished or drained: its users' entries no longer count (caller holds the lock)."""
        tail = self._live.pop(job, None)
        if tail is not None:
            tail.job = None
            self._live_keys -= len(job.keys)

    def _prune(self) -> None:
        """Rebuild the users' table from the unfinished jobs, in the order added (caller holds the lock)."""
        tails: dict[str, _Tail] = {}
        for job, tail in self._live.items():
            tails.update(dict.fromkeys(job.keys, tail))
        self._tails = tails

    def wait_idle(self, timeout: float, allow: int = 0) -> bool:
        """Wait up to `timeout` s until the queue is closed with at most `allow` jobs unfinished."""
        end = time.monotonic() + timeout
        with self._lock:
            while not (self._closed and self._unfinished <= allow):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle_cv.wait(left)
            return True

    @property
    def unfinished(self) -> int:
        """Jobs added and not yet done."""
        with self._lock:
            return self._unfinished

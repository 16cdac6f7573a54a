"""A bounded work queue that releases each request only after every earlier request touching one of its users.

The submitting thread adds jobs in source order; consumers (worker threads, or the writer's event loop)
take the jobs that are ready. A job that shares a user with an earlier unfinished job waits until that job
is done (retries and splits included), so one user's updates are never in flight together and never swap,
while different users run concurrently.

Consumers either block in `get()` (threads) or, like the writer's event loop (delivery/sender.py), take
ready jobs with `take()` and are told of new ones by the `on_ready` callback: put() calls it only when a
job becomes ready, so the producer pays no lock handoff to a sleeping consumer per request.

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
        self._tails: dict[str, Job] = {}
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
            tails = self._tails
            for key in tails.keys() & job.keys:  # the users an unfinished earlier job has (in C; usually none)
                prev = tails[key]
                # one edge per earlier job, however many users the two share
                if not prev.successors or prev.successors[-1] is not job:
                    prev.successors.append(job)
                    job.waiting_on += 1
            tails.update(dict.fromkeys(job.keys, job))
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
        with self._lock:
            self._unfinished -= 1
            tails = self._tails
            if job.successors:  # a later job took over some of its users: only the others are its own
                for key in job.keys:
                    if tails.get(key) is job:
                        del tails[key]
            else:  # no later job shares a user with it, so every one of its users is still its own
                deque(map(tails.__delitem__, job.keys), 0)  # deleted in C, no Python step per user
            released = 0
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
            self._waiting.clear()
            self._ready.clear()
            self._unfinished -= len(dropped)
            self._ready_cv.notify_all()
            self._idle_cv.notify_all()
            self._not_full.notify_all()
            if self._on_ready is not None:
                self._on_ready()
        return [j.payload for j in dropped]

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

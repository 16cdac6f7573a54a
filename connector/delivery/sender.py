"""The sending side of the writer: one event-loop thread keeps up to `concurrency` requests in flight.

A request waiting for its answer (or its rate-limit slot, or its backoff) is a suspended coroutine, not a
blocked thread, so a run at 1,000 requests/s and 100 ms latency keeps ~100 requests in flight with a
handful of threads (this loop, the transport's pipe threads) instead of one thread per request, and the
submitting thread no longer fights 160 others for the GIL.

The loop takes ready jobs from the writer's OrderedQueue (schedule.py: a user's next request becomes ready
only once the previous one has its final outcome) and starts each, at most `concurrency` at once: the
usual one without a task (volleys.py: its first attempt waits in its rate-limit group and its answer is
recorded with the others of one read, which then start the next ready jobs in the same step), the others
as a task. A job's requests are sent one after another (splits, resends), so requests in flight never
exceed `concurrency`. The queue calls `poke()` when a job becomes ready; pokes from other threads are
coalesced into one wake-up of the loop, and none is sent while `concurrency` jobs run.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from connector.delivery.schedule import Job, OrderedQueue

logger = logging.getLogger(__name__)


class Sender:
    """Starts the queue's ready jobs on a private event loop, `concurrency` at most at once.

    `start(job)` (on the loop) returns a coroutine to run as the job's task, or None when it took the job
    on without one (delivery/volleys.py: a request waiting in its rate-limit group, or for its answer); it
    then ends the job with `finished(job)`, or hands it a coroutine to go on with (`adopt`).
    """

    def __init__(self, queue: OrderedQueue, start: Callable[[Job], Coroutine[Any, Any, None] | None],
                 concurrency: int, name: str = "braze-sender") -> None:  # fmt: skip
        self._queue = queue
        self._start = start
        self._concurrency = max(1, concurrency)
        self._loop = asyncio.new_event_loop()
        self._wake = asyncio.Event()
        self._poked = False  # a wake-up is scheduled and has not run yet
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = 0  # jobs started and not finished (as tasks or not)
        self._passing = False  # finished_many is marking jobs done, then runs a pass itself
        self._peak = 0
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._loop_thread: int | None = None
        # Called after each pass that started jobs, in the same step of the loop (volleys.py: the journal
        # records of the jobs just started, and the requests whose slots are due at once, leave together).
        self.after_pass: Callable[[], None] | None = None
        queue.listen(self.poke)
        self._thread.start()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def poke(self) -> None:
        """A job became ready, or the queue closed (any thread; quick: called under the queue's lock).

        From another thread while `concurrency` jobs run, no wake-up is sent: the loop takes the next ready
        job when one of those finishes (the job is in the queue before this is called), and looks at the
        queue's end once none runs. That is most pokes of a run at the rate limit (a wake-up of the loop and
        a write to its self-pipe from the submitting thread, each)."""
        if threading.get_ident() == self._loop_thread:
            if not self._passing:  # a pass runs right after (finished_many): no wake-up needed
                self._wake.set()
            return
        if self._poked or self._running >= self._concurrency:
            return
        self._poked = True
        try:
            self._loop.call_soon_threadsafe(self._woken)
        except RuntimeError:
            pass  # the loop has finished: nothing is left to wake

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every job is done and the loop has ended; False past `timeout`."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def in_progress(self) -> int:
        """Jobs being run now (each has at most one request in flight)."""
        return self._running

    @property
    def peak(self) -> int:
        """The most jobs run at once so far."""
        return self._peak

    def finished(self, job: Job) -> None:
        """A job started without a task is done (on the loop's thread)."""
        self._running -= 1
        self._queue.done(job)
        self._wake.set()

    def finished_many(self, jobs: list[Job]) -> None:
        """Jobs started without a task are done (on the loop's thread, answers read together): mark them done
        in one go and start the jobs that are ready now, in the same step (no wake-up of the loop for it)."""
        self._running -= len(jobs)
        self._passing = True
        try:
            self._queue.done_many(jobs)
        finally:
            self._passing = False
        self._pass()
        if not self._running:  # the dispatch loop looks at the queue's end
            self._wake.set()

    def adopt(self, job: Job, run: Coroutine[Any, Any, None]) -> None:
        """A job started without a task goes on as the task running `run` (on the loop's thread)."""
        task = self._loop.create_task(self._one(job, run))
        self._tasks.add(task)

    # ---- the loop thread ---------------------------------------------------------------------------
    def _woken(self) -> None:
        self._poked = False  # before the event: a poke from now on schedules another wake-up
        self._wake.set()

    def _main(self) -> None:
        self._loop_thread = threading.get_ident()
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._dispatch())
        except BaseException:
            logger.exception("the writer's event loop failed")
            raise
        finally:
            try:
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            finally:
                self._loop.close()

    def _pass(self) -> None:
        """Start ready jobs while fewer than `concurrency` run."""
        queue = self._queue
        started = False
        while self._running < self._concurrency:
            job = queue.take()
            if job is None:
                break
            started = True
            self._running += 1
            try:
                run = self._start(job)
            except Exception:  # the writer records a job's rows itself; this is a bug, not a row outcome
                logger.exception("unexpected error in the writer's event loop")
                self.finished(job)
                continue
            if run is not None:
                self.adopt(job, run)
        if started and self.after_pass is not None:
            try:
                self.after_pass()
            except Exception:
                logger.exception("unexpected error in the writer's event loop")
        self._peak = max(self._peak, self._running)

    async def _dispatch(self) -> None:
        while True:
            self._wake.clear()
            self._pass()
            if self._queue.exhausted:
                break
            await self._wake.wait()
        # Drained by a stopped run: the jobs still running wait for answers nobody records any more (their
        # rows were given up on); they end when the transport answers or closes.
        while self._running:
            self._wake.clear()
            await self._wake.wait()

    async def _one(self, job: Job, run: Coroutine[Any, Any, None]) -> None:
        try:
            await run
        except Exception:  # the writer records a job's rows itself; this is a bug, not a row outcome
            logger.exception("unexpected error in the writer's event loop")
        finally:
            self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
            self.finished(job)

"""The sending side of the writer: one event-loop thread keeps up to `concurrency` requests in flight.

A request waiting for its answer (or its rate-limit slot, or its backoff) is a suspended coroutine, not a
blocked thread, so a run at 1,000 requests/s and 100 ms latency keeps ~100 requests in flight with a
handful of threads (this loop, the transport's pipe threads) instead of one thread per request, and the
submitting thread no longer fights 160 others for the GIL.

The loop takes ready jobs from the writer's OrderedQueue (schedule.py: a user's next request becomes ready
only once the previous one has its final outcome) and runs each as a task, at most `concurrency` at once;
a job's requests are sent one after another (splits, resends), so requests in flight never exceed it.
The queue calls `poke()` when a job becomes ready; pokes from other threads are coalesced into one
wake-up of the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable

from connector.delivery.schedule import Job, OrderedQueue

logger = logging.getLogger(__name__)


class Sender:
    """Runs `run(job)` for the queue's ready jobs on a private event loop, `concurrency` at most at once."""

    def __init__(self, queue: OrderedQueue, run: Callable[[Job], Awaitable[None]], concurrency: int,
                 name: str = "braze-sender") -> None:  # fmt: skip
        self._queue = queue
        self._run = run
        self._concurrency = max(1, concurrency)
        self._loop = asyncio.new_event_loop()
        self._wake = asyncio.Event()
        self._poked = False  # a wake-up is scheduled and has not run yet
        self._tasks: set[asyncio.Task[None]] = set()
        self._peak = 0
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._loop_thread: int | None = None
        queue.listen(self.poke)
        self._thread.start()

    def poke(self) -> None:
        """A job became ready, or the queue closed (any thread; quick: called under the queue's lock)."""
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
            return
        if self._poked:
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
        return len(self._tasks)

    @property
    def peak(self) -> int:
        """The most jobs run at once so far."""
        return self._peak

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

    async def _dispatch(self) -> None:
        queue, tasks = self._queue, self._tasks
        while True:
            self._wake.clear()
            while len(tasks) < self._concurrency:
                job = queue.take()
                if job is None:
                    break
                task = asyncio.create_task(self._one(job))
                tasks.add(task)
            self._peak = max(self._peak, len(tasks))
            if queue.exhausted:
                break
            await self._wake.wait()
        # Drained by a stopped run: the jobs still running wait for answers nobody records any more (their
        # rows were given up on); they end when the transport answers or closes.
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, job: Job) -> None:
        try:
            await self._run(job)
        except Exception:  # the writer records a job's rows itself; this is a bug, not a row outcome
            logger.exception("unexpected error in the writer's event loop")
        finally:
            self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._queue.done(job)
            self._wake.set()

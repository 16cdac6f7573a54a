"""delivery/sender.py: jobs started without a task (volleys.py) count against write.concurrency until they
are finished; finished_many starts the next ready jobs in the same step of the loop; a poke while the loop
runs as many jobs as it may sends no wake-up."""

from __future__ import annotations

import threading
from typing import Any

from connector.delivery.schedule import Job, OrderedQueue
from connector.delivery.sender import Sender


class Starts:
    """A start callback that keeps every job (no task), as volleys.py does, and records what it saw."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.passes = 0
        self.changed = threading.Condition()

    def __call__(self, job: Job) -> None:
        with self.changed:
            self.jobs.append(job)
            self.changed.notify_all()

    def after_pass(self) -> None:
        self.passes += 1

    def wait_for(self, n: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.jobs) >= n, timeout=30)


def on_loop(sender: Sender, fn: Any) -> Any:
    """Run fn() on the sender's loop and return what it returned."""
    done = threading.Event()
    out: list[Any] = []

    def run() -> None:
        out.append(fn())
        done.set()

    sender.loop.call_soon_threadsafe(run)
    assert done.wait(30)
    return out[0]


def test_jobs_without_a_task_hold_their_place_until_finished_many_starts_the_next_in_the_same_step() -> None:
    queue = OrderedQueue(16)
    starts = Starts()
    sender = Sender(queue, starts, concurrency=2)  # type: ignore[arg-type]
    sender.after_pass = starts.after_pass
    for i in range(5):
        queue.put(i, [f"u{i}"])
    starts.wait_for(2)
    assert on_loop(sender, lambda: (len(starts.jobs), sender.in_progress)) == (2, 2)  # capped at 2
    assert starts.passes >= 1

    def finish_two() -> tuple[int, int]:
        sender.finished_many(starts.jobs[:2])
        return len(starts.jobs), sender.in_progress  # before the loop turns again

    assert on_loop(sender, finish_two) == (4, 2)
    queue.close()
    on_loop(sender, lambda: sender.finished_many(starts.jobs[2:4]))
    starts.wait_for(5)
    on_loop(sender, lambda: sender.finished_many(starts.jobs[4:]))
    assert sender.join(30) and queue.unfinished == 0 and sender.peak == 2


def test_a_poke_from_another_thread_sends_no_wake_up_while_the_loop_runs_all_it_may() -> None:
    queue = OrderedQueue(16)
    starts = Starts()
    sender = Sender(queue, starts, concurrency=1)  # type: ignore[arg-type]
    queue.put("a", ["u1"])
    starts.wait_for(1)
    on_loop(sender, lambda: None)  # the wake-up of that put has run
    queue.put("b", ["u2"])  # ready, but one job runs already: the loop is not woken for it
    assert sender._poked is False and len(starts.jobs) == 1
    queue.close()
    on_loop(sender, lambda: sender.finished_many(starts.jobs[:1]))  # the next ready job starts here
    assert len(starts.jobs) == 2 and starts.jobs[1].payload == "b"
    on_loop(sender, lambda: sender.finished_many(starts.jobs[1:]))
    assert sender.join(30) and queue.unfinished == 0

"""The writer's per-user ordered, bounded queue (connector.delivery.schedule)."""

from __future__ import annotations

import random
import threading
import time

import pytest

from connector.delivery import schedule
from connector.delivery.schedule import OrderedQueue


def _drain_ready(q: OrderedQueue) -> list[str]:
    """Payloads of the jobs ready right now (taken, not done)."""
    out = []
    while True:
        with q._lock:  # peek without blocking
            if not q._ready:
                return out
        job = q.get()
        assert job is not None
        out.append(job.payload)


def test_jobs_sharing_a_user_wait_for_the_earlier_one() -> None:
    q = OrderedQueue(10)
    for name, keys in (("a1", {"u1", "u2"}), ("b", {"u3"}), ("a2", {"u2"}), ("a3", {"u1", "u3"})):
        q.put(name, keys)
    jobs = {}
    for _ in range(2):
        job = q.get()
        assert job is not None
        jobs[job.payload] = job
    assert set(jobs) == {"a1", "b"} and _drain_ready(q) == []
    q.done(jobs["b"])  # a3 still waits on a1 (u1)
    assert _drain_ready(q) == []
    q.done(jobs["a1"])
    assert sorted(_drain_ready(q)) == ["a2", "a3"]


def test_put_blocks_while_full_and_resumes_when_a_job_is_done() -> None:
    q = OrderedQueue(2)
    q.put(1, {"a"})
    q.put(2, {"b"})
    added = threading.Event()

    def third() -> None:
        q.put(3, {"c"})
        added.set()

    t = threading.Thread(target=third, daemon=True)
    t.start()
    assert not added.wait(0.2)
    job = q.get()
    assert job is not None
    q.done(job)
    assert added.wait(5)
    t.join(5)
    assert q.unfinished == 2


def test_get_returns_none_after_close_once_everything_is_done() -> None:
    q = OrderedQueue(4)
    q.put("x", {"u"})
    q.close()
    job = q.get()
    assert job is not None and job.payload == "x"
    with pytest.raises(RuntimeError):
        q.put("y", {"u"})
    q.done(job)
    assert q.get() is None


def test_concurrent_workers_keep_each_users_order() -> None:
    """Random jobs over few users, many workers: each user's jobs run one at a time, in submission order."""
    rng = random.Random(7)
    q = OrderedQueue(8)
    users = [f"u{i}" for i in range(6)]
    seen: dict[str, list[int]] = {u: [] for u in users}
    active: dict[str, int] = dict.fromkeys(users, 0)
    lock = threading.Lock()
    errors: list[str] = []

    def worker() -> None:
        while (job := q.get()) is not None:
            with lock:
                for u in job.keys:
                    active[u] += 1
                    if active[u] > 1:
                        errors.append(f"{u} in flight twice")
                    seen[u].append(job.payload)
            time.sleep(rng.random() / 2000)
            with lock:
                for u in job.keys:
                    active[u] -= 1
            q.done(job)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    expected: dict[str, list[int]] = {u: [] for u in users}
    for seq in range(600):
        keys = set(rng.sample(users, rng.randint(1, 3)))
        for u in keys:
            expected[u].append(seq)
        q.put(seq, keys)
    q.close()
    for t in threads:
        t.join(30)
    assert not errors
    assert seen == expected


def test_repeated_and_shared_keys_make_one_dependency_per_earlier_job() -> None:
    q = OrderedQueue(10)
    q.put("first", ["u1", "u1", "u2", "u2", "u1"])  # a request's per-object keys, repeats included
    q.put("second", ["u2", "u1", "u1"])
    first = q.get()
    assert first is not None and first.payload == "first" and first.keys == frozenset({"u1", "u2"})
    assert len(first.successors) == 1 and first.successors[0].waiting_on == 1
    assert _drain_ready(q) == []
    q.done(first)
    assert _drain_ready(q) == ["second"]


def test_refuse_new_wakes_a_blocked_put_and_adds_nothing() -> None:
    q = OrderedQueue(1)
    assert q.put("a", {"u1"}) is True
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(q.put("b", {"u2"})))
    t.start()
    time.sleep(0.05)
    assert result == []  # blocked: the queue is full
    q.refuse_new()
    t.join(10)
    assert result == [False] and q.unfinished == 1
    assert q.put("c", {"u3"}) is False


def test_drain_removes_every_job_not_taken_and_frees_the_workers() -> None:
    q = OrderedQueue(10)
    for name, keys in (("a1", {"u1"}), ("b", {"u2"}), ("a2", {"u1"}), ("c", {"u3"})):
        q.put(name, keys)
    taken = q.get()
    assert taken is not None and taken.payload == "a1"
    assert q.drain() == ["b", "a2", "c"]  # oldest first, waiting ones (a2 waits on a1) included
    assert q.unfinished == 1
    assert not q.wait_idle(0.01) and q.wait_idle(0.01, allow=1)
    q.done(taken)  # releasing a1 does not bring the dropped a2 back
    assert q.get() is None and q.wait_idle(0.01)


def test_wait_idle_waits_for_the_last_job() -> None:
    q = OrderedQueue(4)
    q.put("a", {"u1"})
    job = q.get()
    assert job is not None
    q.close()
    threading.Timer(0.05, q.done, args=(job,)).start()
    assert q.wait_idle(30)


def test_take_never_blocks_and_on_ready_tells_of_each_ready_job() -> None:
    told: list[int] = []
    q = OrderedQueue(10, on_ready=lambda: told.append(1))
    assert q.take() is None and not q.exhausted
    q.put("a1", {"u1"})
    q.put("a2", {"u1"})  # waits on a1: not ready, nobody is told
    q.put("b", {"u2"})
    assert len(told) == 2
    a1 = q.take()
    b = q.take()
    assert a1 is not None and b is not None and (a1.payload, b.payload) == ("a1", "b")
    assert q.take() is None
    q.done(a1)  # releases a2
    assert len(told) == 3
    a2 = q.take()
    assert a2 is not None and a2.payload == "a2"
    q.close()
    assert len(told) == 4 and not q.exhausted  # two jobs still unfinished
    q.done(a2)
    q.done(b)  # the last one: the consumer is told it can stop
    assert len(told) == 5 and q.exhausted and q.take() is None


def test_drained_queue_is_exhausted_with_jobs_still_running() -> None:
    q = OrderedQueue(10)
    q.put("a", {"u1"})
    q.put("b", {"u2"})
    running = q.take()
    assert running is not None
    assert q.drain() == ["b"] and q.exhausted


def test_finished_jobs_users_no_longer_count_and_the_table_stays_bounded() -> None:
    """A finished job's users are emptied, not deleted: a later job sharing them is ready at once, a job
    sharing a user with a job still unfinished waits for it across the table's rebuilds, and the table holds
    at most about twice the unfinished jobs' users (plus a fixed slack) as they are added."""
    q = OrderedQueue(50)
    q.put("old", ["keep", "x0"])  # stays unfinished throughout
    old = q.take()
    assert old is not None
    for i in range(2_000):
        q.put(i, [f"u{i}-{k}" for k in range(20)] + (["shared"] if i % 2 else []))
        job = q.take()
        assert job is not None and job.payload == i  # users of finished jobs (and "shared") never hold it
        q.done(job)
        assert len(q._tails) <= 2 * (2 + 21) + schedule.PRUNE_SLACK  # checked as a job is added
    q.put("later", ["u5-3", "keep"])  # u5-3's job is finished; "keep" belongs to "old", still unfinished
    assert q.take() is None
    q.done(old)
    later = q.take()
    assert later is not None and later.payload == "later"
    q.put("after", ["keep"])
    assert q.take() is None  # waits for "later", the last job with "keep"
    q.done(later)
    assert _drain_ready(q) == ["after"]


def test_done_many_releases_what_each_job_held_back_and_tells_once() -> None:
    told: list[int] = []
    q = OrderedQueue(16, on_ready=lambda: told.append(1))
    for payload, keys in [("a", ["u1"]), ("b", ["u2"]), ("a2", ["u1"]), ("b2", ["u2", "u3"]), ("c", ["u3"])]:
        q.put(payload, keys)
    first = [q.take(), q.take()]
    assert [j.payload for j in first if j] == ["a", "b"] and q.take() is None
    told.clear()
    q.done_many([j for j in first if j])
    assert len(told) == 1  # one call for the two jobs released
    assert [q.take().payload for _ in range(2)] == ["a2", "b2"]  # type: ignore[union-attr]
    assert q.take() is None and q.unfinished == 3  # c still waits for b2 (u3)

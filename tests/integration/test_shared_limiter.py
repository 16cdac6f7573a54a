"""SharedRateLimiter against a real redis-server: slots, shared pauses and windows, heartbeats, the local share.

Slots are read from the limiter's own arithmetic (the times acquire() would sleep until) rather than from
wall-clock rates: a recording `sleep` returns at once, so these tests count slots, not seconds.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from connector.config import Pipeline, RateLimit, Write
from connector.delivery import shared_limits
from connector.delivery.shared_budget import SharedTarget, resolve_shared_limits
from connector.delivery.shared_limits import SharedRateLimiter
from connector.errors import ConfigError


class Recorder:
    """A clock and sleep: real time plus everything "slept" (nothing waits for real)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.offset += seconds


def write_at(requests: int, per_seconds: float = 1.0) -> Write:
    return Write(rate_limits={"users_track": RateLimit(requests=requests, per_seconds=per_seconds)})


def limiter(redis_url: str, ns: str, write: Write, clock: Recorder | None = None, **kw: Any) -> SharedRateLimiter:
    clock = clock or Recorder()
    return SharedRateLimiter(write, SharedTarget(redis_url, ns, 4), clock=clock, sleep=clock.sleep,
                             heartbeat=False, **kw)  # fmt: skip


def test_two_limiters_draw_slots_from_one_budget(redis_server: Any) -> None:
    ns = uuid.uuid4().hex
    write = write_at(100)
    a, b = limiter(redis_server.url, ns, write), limiter(redis_server.url, ns, write)
    shape = a._shapes["users_track"]
    slots = []
    for i in range(90):  # within the horizon: every call is granted a slot
        lim = a if i % 2 else b
        got = lim._reserve(shape, lim._known[shape.name], 1)
        assert got is not None
        slots.append(got[0])
    slots.sort()
    assert all(b - a >= 1.0 for a, b in zip(slots, slots[100:], strict=False))  # never 101 in one second
    # One budget, not two: 90 slots at the steady rate (97 a second after a burst of 2) span ~0.9 s.
    assert max(slots) - min(slots) >= (90 - 2) / 97.0 - 0.05
    other = limiter(redis_server.url, uuid.uuid4().hex, write)  # another namespace: its own budget
    got = other._reserve(shape, other._known[shape.name], 1)
    assert got is not None and got[0] - time.monotonic() < 0.05
    for lim in (a, b, other):
        lim.close()


def test_slots_further_than_the_horizon_are_asked_again(redis_server: Any) -> None:
    clock = Recorder()
    lim = limiter(redis_server.url, uuid.uuid4().hex, write_at(10), clock)
    for _ in range(25):
        lim.acquire("users_track")
    assert lim.stats["asked_again"] > 0  # 25 requests at ~8.9/s lie beyond the 1 s horizon
    assert lim.stats["granted_shared"] == 25
    lim.close()


@pytest.mark.parametrize(
    "tell",
    [lambda lim: lim.penalize("users_track", 0.6),  # a 429 with a wait
     lambda lim: lim.observe("users_track", {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "0.6"})],
    ids=["429 pause", "exhausted window"],
)  # fmt: skip
def test_a_pause_reaches_every_process(redis_server: Any, tell: Any) -> None:
    ns = uuid.uuid4().hex
    a = limiter(redis_server.url, ns, write_at(1000))
    clock = Recorder()
    b = limiter(redis_server.url, ns, write_at(1000), clock)
    tell(a)
    b.acquire("users_track")
    assert 0.5 < sum(clock.slept) <= 0.65
    a.close()
    b.close()


def test_a_low_remaining_budget_is_shared_and_counted_down(redis_server: Any) -> None:
    ns = uuid.uuid4().hex
    a = limiter(redis_server.url, ns, write_at(1000))
    clock = Recorder()
    b = limiter(redis_server.url, ns, write_at(1000), clock)
    a.observe("users_track", {"x-ratelimit-remaining": "2", "x-ratelimit-reset": "0.8"})
    b.acquire("users_track")
    b.acquire("users_track")
    assert sum(clock.slept) < 0.1  # the two requests left in the server's window
    b.acquire("users_track")
    assert sum(clock.slept) > 0.6  # the third waits for the window's reset
    a.observe("users_track", {"x-ratelimit-remaining": "900", "x-ratelimit-reset": "3"})  # plenty: not shared
    a.close()
    b.close()


def test_heartbeats_count_workers_and_forget_a_dead_one(redis_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_limits, "WORKER_TTL_S", 0.5)
    ns = uuid.uuid4().hex
    a, b, c = (limiter(redis_server.url, ns, write_at(100)) for _ in range(3))
    a.beat()
    assert a.stats["workers_seen_max"] == 3
    c.close()  # a clean exit leaves the set at once
    b._stop.set()  # b "dies": no more heartbeats, no goodbye
    time.sleep(0.7)
    a.beat()
    assert a._seen[-1][1] == 1
    a.close()


def test_losing_redis_falls_back_to_a_share_without_a_burst_and_rejoins(redis_server: Any) -> None:
    ns = uuid.uuid4().hex
    warnings: list[str] = []
    clock = Recorder()
    a = limiter(redis_server.url, ns, write_at(20), clock, on_warning=warnings.append)
    b = limiter(redis_server.url, ns, write_at(20))
    a.beat()  # a has seen two workers
    a.acquire("users_track")
    redis_server.stop()
    clock.slept.clear()
    last_shared = a._known["users_track"].last_slot
    granted = []
    for _ in range(6):
        a.acquire("users_track")
        granted.append(clock())
    assert a.mode == "local"
    assert len(warnings) == 1 and "1/2 of each limit" in warnings[0] and "redis://127.0.0.1" in warnings[0]
    interval = 1.0 / (0.99 * 20 / 2 - 1)  # the local bucket's formula for 10/s with a burst of one
    assert granted[0] - last_shared >= 2 * interval - 0.01  # no burst: two intervals after its last shared slot
    gaps = [y - x for x, y in zip(granted, granted[1:], strict=False)]
    assert all(abs(g - interval) < 0.02 for g in gaps), gaps
    assert a.stats["granted_local"] == 6
    redis_server.start()
    a.beat()
    assert a.mode == "rejoining"
    for _ in range(30):
        a.acquire("users_track")
        if a.mode == "shared":
            break
    assert a.mode == "shared"
    summary = a.summary()
    assert summary["fallbacks"] == 1 and summary["fallback_s"] > 0 and summary["granted_shared"] >= 2
    a.close()
    b.close()


def test_redis_unreachable_at_the_start_uses_expected_workers(tmp_path: Any) -> None:
    warnings: list[str] = []
    clock = Recorder()
    lim = SharedRateLimiter(write_at(20), SharedTarget("redis://127.0.0.1:1/0", "ns", 5), clock=clock,
                            sleep=clock.sleep, heartbeat=False, on_warning=warnings.append)  # fmt: skip
    assert lim.mode == "local"
    assert "1/5 of each limit (expected_workers)" in warnings[0]
    lim.acquire("users_track")
    lim.acquire("users_track")
    assert clock.slept[-1] == pytest.approx(1.0 / max(0.99 * 20 / 5 - 1, 0.5), abs=0.01)
    lim.close()


def test_resolve_shared_limits_reads_the_url_from_the_environment() -> None:
    data = {"name": "p", "write": {"shared_limits": {"namespace": "acme-prod"}},
            "streams": [{"name": "s", "source": {"path": "x.csv"}, "kind": "attributes",
                         "identifier": {"external_id": "id"}, "attributes": [{"column": "a"}]}]}  # fmt: skip
    pipeline = Pipeline.model_validate(data)
    target = resolve_shared_limits(pipeline, {"REDIS_URL": "redis://:secret@cache:6380/2"}, offline=False)
    assert target is not None and target.namespace == "acme-prod" and target.expected_workers == 4
    assert target.where == "redis://cache:6380/2"  # never the password
    assert resolve_shared_limits(pipeline, {}, offline=True) is None  # dry runs and validate send nothing
    with pytest.raises(ConfigError, match="REDIS_URL is not set"):
        resolve_shared_limits(pipeline, {}, offline=False)
    with pytest.raises(ConfigError, match="not a redis://"):
        resolve_shared_limits(pipeline, {"REDIS_URL": "http://cache"}, offline=False)
    with pytest.raises(ValueError, match="namespace"):
        Pipeline.model_validate({**data, "write": {"shared_limits": {"namespace": "has space"}}})


def test_a_run_without_redis_warns_in_its_report_and_delivers(emulator: Any, tmp_path: Any) -> None:
    from connector.pipeline import run_pipeline

    (tmp_path / "u.csv").write_text("user_id,plan\n" + "".join(f"u{i},p\n" for i in range(30)))
    pipeline = Pipeline.model_validate({
        "name": "no_redis", "base_dir": str(tmp_path),
        "destination": {"url": emulator.url, "api_key_env": "K"},
        "write": {"mode": "bulk", "transport": "requests", "max_objects_per_request": 5,
                  "shared_limits": {"redis_url_env": "R", "namespace": "ns", "expected_workers": 2}},
        "streams": [{"name": "s", "source": {"path": "u.csv"}, "kind": "attributes",
                     "identifier": {"external_id": "user_id"}, "attributes": [{"column": "plan"}]}],
    })  # fmt: skip
    report = run_pipeline(pipeline, report_dir=tmp_path / "r", env={"K": "test-key", "R": "redis://127.0.0.1:1/0"})
    doc = report.to_dict()
    assert doc["rows"]["delivered"] == 30 and doc["exit_code"] == 0
    assert any("Redis at redis://127.0.0.1:1/0 is unreachable" in w for w in doc["warnings"])
    assert doc["shared_limits"]["fallbacks"] == 1 and doc["shared_limits"]["granted_local"] == 6

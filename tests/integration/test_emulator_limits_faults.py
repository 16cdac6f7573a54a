"""Server-side rate limits and seeded fault injection, over real HTTP."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from connector.emulator import EmulatorServer

H = {"Authorization": "Bearer test-key"}
BODY = {"attributes": [{"external_id": "u", "n": {"inc": 1}}]}


def post(server: EmulatorServer, path: str = "/users/track", body: Any = BODY) -> requests.Response:
    return requests.post(server.url + path, json=body, headers=H, timeout=10)


def frozen_clock(server: EmulatorServer, at: float) -> list[float]:
    """Give the emulator's rate limits a clock of the test's own, standing at `at` (epoch seconds) until the
    test moves it (`clock[0] += s`): requests share a window however long a loaded machine takes over them."""
    clock = [at]
    app = server._runner.app if server._runner else None  # type: ignore[union-attr]
    assert app is not None
    emulator_app = next(iter(app.router.routes())).handler.__self__  # EmulatorApp.handle, bound
    emulator_app.limits.clock = lambda: clock[0]
    return clock


WINDOW_START = 1_800_000_000.0  # a whole hour (and minute, and second): the start of a window of each kind


def test_rate_limit_headers_and_429(emulator_factory: Any) -> None:
    s = emulator_factory(rate_limits={"users_track": (5, 1.0)})
    clock = frozen_clock(s, WINDOW_START + 0.25)  # a quarter into a 1 s window, for all five requests
    remaining = []
    for _ in range(5):
        r = post(s)
        assert r.status_code == 201
        assert r.headers["X-RateLimit-Limit"] == "5"
        assert int(r.headers["X-RateLimit-Reset"]) == WINDOW_START + 1
        remaining.append(int(r.headers["X-RateLimit-Remaining"]))
    assert remaining == [4, 3, 2, 1, 0]
    r = post(s)
    assert r.status_code == 429
    assert r.json() == {"message": "Rate Limited"}
    assert r.headers["X-Ratelimit-Retry-After"] == "1"
    assert "X-RateLimit-Limit" not in r.headers
    clock[0] += float(r.headers["X-Ratelimit-Retry-After"])  # as long as it says: into the next window
    assert post(s).status_code == 201
    assert s.user("external_id", "u")["attributes"]["n"] == 6  # the 429 applied nothing
    assert s.stats()["requests"]["/users/track"] == {"201": 6, "429": 1}


def test_send_endpoints_share_a_bucket(emulator_factory: Any) -> None:
    emulator = emulator_factory(canvases=("c",))
    r1 = post(emulator, "/canvas/trigger/send", {"canvas_id": "c", "recipients": [{"external_user_id": "u"}]})
    r2 = post(
        emulator, "/messages/live_activity/update", {"app_id": "a", "activity_id": "b", "content_state": {}}
    )
    assert r1.status_code == r2.status_code == 201
    assert r1.headers["X-RateLimit-Limit"] == r2.headers["X-RateLimit-Limit"] == "250000"
    assert int(r2.headers["X-RateLimit-Remaining"]) == int(r1.headers["X-RateLimit-Remaining"]) - 1
    assert int(r1.headers["X-RateLimit-Reset"]) % 3600 == 0  # hourly windows reset on the clock hour


@pytest.mark.parametrize("mode", ["500", "502", "503", "504", "429"])
def test_error_faults_apply_nothing(emulator_factory: Any, mode: str) -> None:
    s = emulator_factory(faults={f"users_track:{mode}": 1.0})
    r = post(s)
    assert r.status_code == int(mode)
    assert "message" in r.json()
    if mode == "429":
        assert r.headers["X-Ratelimit-Retry-After"] == "1"
    assert s.user("external_id", "u") is None
    assert s.stats()["requests"]["/users/track"] == {mode: 1}
    assert (
        post(
            s, "/messages/live_activity/update", {"app_id": "a", "activity_id": "b", "content_state": {}}
        ).status_code
        == 201
    )


def test_slow_fault_and_latency_do_not_block_others(emulator_factory: Any) -> None:
    s = emulator_factory(faults={"users_track:slow": 1.0}, slow_ms=4000)
    import threading

    slow_status: list[int] = []
    t = threading.Thread(target=lambda: slow_status.append(post(s).status_code))
    start = time.monotonic()
    t.start()
    time.sleep(0.1)
    fast = post(s, "/messages/live_activity/update", {"app_id": "a", "activity_id": "b", "content_state": {}})
    slow_answered_first = bool(slow_status)
    t.join()
    # The fast answer came while the slow one was still held (no wall-clock bound: a loaded machine may
    # take seconds for the fast one too).
    assert fast.status_code == 201 and not slow_answered_first
    assert slow_status == [201] and time.monotonic() - start >= 4.0


LATENCY_MS = 500
LIVE = {"app_id": "a", "activity_id": "b", "content_state": {}}


def _mixed_request(server: EmulatorServer, i: int, timeout: float = 10) -> tuple[int, float]:
    """One of the four endpoints (by i); returns its status and its own wall time."""
    path, body = [
        ("/users/track", {"attributes": [{"external_id": f"lat{i}", "n": i}]}),
        (
            "/users/track/sync",
            {"events": [{"external_id": f"lat{i}", "name": "e", "time": "2024-01-01T00:00:00Z"}]},
        ),
        ("/canvas/trigger/send", {"canvas_id": "c", "recipients": [{"external_user_id": f"lat{i}"}]}),
        ("/messages/live_activity/update", LIVE),
    ][i % 4]
    start = time.monotonic()
    status = requests.post(server.url + path, json=body, headers=H, timeout=timeout).status_code
    return status, time.monotonic() - start


def test_latency_ms_does_not_serialise_concurrent_requests(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request is delayed by the latency, and the delays overlap: all n requests are held in their
    latency at once. No clock bound (a loaded machine may take seconds to send them): the emulator's latency
    sleep is wrapped to count the requests held and to keep each one held, after its latency, until all n
    have been held together. A server that serialised its requests (a blocking sleep, a lock) would never
    hold two at once: the count stays below n and the clients' requests time out."""
    import asyncio
    import types

    from connector.emulator import app as emulator_app

    s = emulator_factory(latency_ms=LATENCY_MS, canvases=("c",))
    n = 20
    held = {"now": 0, "most": 0}
    real_sleep = asyncio.sleep

    async def latency(delay: float) -> None:
        held["now"] += 1  # the emulator's event loop only: no lock needed
        held["most"] = max(held["most"], held["now"])
        try:
            await real_sleep(delay)
            # a hang detector only: the clients' timeouts fail the test first
            give_up = time.monotonic() + 120
            while held["most"] < n and time.monotonic() < give_up:
                await real_sleep(0.01)
        finally:
            held["now"] -= 1

    shim = types.ModuleType("asyncio")
    shim.__dict__.update(vars(asyncio))
    shim.sleep = latency  # type: ignore[attr-defined]
    monkeypatch.setattr(emulator_app, "asyncio", shim)
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(lambda i: _mixed_request(s, i, timeout=90), range(n)))
    assert [status for status, _ in results] == [201] * n
    assert min(elapsed for _, elapsed in results) >= LATENCY_MS / 1000  # every request was delayed...
    assert held["most"] == n  # ...concurrently: all n were in their latency at once
    stats = s.stats()
    assert sum(sum(codes.values()) for codes in stats["requests"].values()) == n
    assert stats["objects_applied"]["attributes"] == stats["objects_applied"]["events"] == n // 4
    assert stats["objects_applied"]["live_activities"] == n // 4


def test_drop_after_apply(emulator_factory: Any) -> None:
    s = emulator_factory(faults={"users_track:drop": 1.0})
    with pytest.raises(requests.ConnectionError):
        post(s)
    entry = s.ledger()[-1]
    assert entry["dropped"] is True and entry["status"] == 201 and entry["objects"]["attributes"] == 1
    assert s.user("external_id", "u")["attributes"]["n"] == 1  # applied although the client saw an error


def _sequence(s: EmulatorServer, n: int) -> list[int]:
    out = []
    for _ in range(n):
        try:
            out.append(post(s).status_code)
        except requests.ConnectionError:
            out.append(-1)
    return out


def test_same_seed_same_fault_sequence(emulator_factory: Any) -> None:
    opts = {"fault_rate": 0.6, "slow_ms": 1}
    a = _sequence(emulator_factory(seed=7, **opts), 40)
    b = _sequence(emulator_factory(seed=7, **opts), 40)
    c = _sequence(emulator_factory(seed=8, **opts), 40)
    assert a == b
    assert a != c
    assert len(set(a)) >= 4  # several modes actually occurred


def test_429_fault_bursts_over_http(emulator_factory: Any) -> None:
    s = emulator_factory(faults={"users_track:429": 0.25}, seed=11, burst_429=3)
    seq = _sequence(s, 60)
    runs = "".join("x" if code == 429 else "." for code in seq).split(".")
    assert any(runs) and all(len(r) % 3 == 0 for r in runs[:-1] if r)
    assert s.stats()["requests"]["/users/track"]["201"] == seq.count(201)


def _broadcast(s: EmulatorServer, canvas: str = "c", audience: Any = None) -> requests.Response:
    body: dict[str, Any] = {"canvas_id": canvas, "broadcast": True}
    if audience is not None:
        body["audience"] = audience
    return post(s, "/canvas/trigger/send", body)


def test_broadcast_limit_per_unique_audience(emulator_factory: Any) -> None:
    emulator = emulator_factory(canvases=("c", "other"))
    frozen_clock(emulator, WINDOW_START + 10)  # every call inside one minute (and hour) window
    seen = [_broadcast(emulator) for _ in range(10)]
    assert [r.status_code for r in seen] == [201] * 10
    assert {r.headers["X-RateLimit-Limit"] for r in seen} == {"10"}  # the tighter of 10/min and 250/min
    assert [int(r.headers["X-RateLimit-Remaining"]) for r in seen] == list(range(9, -1, -1))
    assert int(seen[0].headers["X-RateLimit-Reset"]) % 60 == 0
    refused = _broadcast(emulator)
    assert (refused.status_code, refused.json()) == (429, {"message": "Rate Limited"})
    assert 1 <= int(refused.headers["X-Ratelimit-Retry-After"]) <= 60
    assert "X-RateLimit-Limit" not in refused.headers
    # Another audience (other Canvas, or same Canvas with an `audience` object) has its own 10/min.
    segment = {"custom_attribute": {"custom_attribute_name": "tier", "comparison": "equals", "value": 2}}
    assert _broadcast(emulator, audience=segment).status_code == 201
    assert _broadcast(emulator, canvas="other").status_code == 201
    # Calls naming recipients use the 250,000/h bucket, which broadcasts did not touch.
    r = post(emulator, "/canvas/trigger/send", {"canvas_id": "c", "recipients": [{"external_user_id": "u"}]})
    assert r.status_code == 201
    assert (r.headers["X-RateLimit-Limit"], r.headers["X-RateLimit-Remaining"]) == ("250000", "249999")
    assert len(emulator.dispatches()) == 13  # the 429 dispatched nothing
    assert emulator.stats()["requests"]["/canvas/trigger/send"] == {"201": 13, "429": 1}


def test_broadcast_limit_across_audiences_and_overrides(emulator_factory: Any) -> None:
    s = emulator_factory(
        rate_limits={"broadcast": (3, 3600), "broadcast_audience": "2/3600"}, canvases=("c", "b", "d")
    )
    frozen_clock(s, WINDOW_START + 600)  # ten minutes into an hour window: every call in it
    one = {"AND": [{"push_subscription_status": {"comparison": "is", "value": "opted_in"}}, {"x": 1, "y": 2}]}
    same = {
        "AND": [{"push_subscription_status": {"value": "opted_in", "comparison": "is"}}, {"y": 2, "x": 1}]
    }
    assert _broadcast(s, audience=one).headers["X-RateLimit-Limit"] == "2"
    assert _broadcast(s, audience=same).status_code == 201  # key order does not make a new audience
    assert _broadcast(s, audience=one).status_code == 429
    r = _broadcast(s, canvas="b")
    assert (r.status_code, r.headers["X-RateLimit-Limit"], r.headers["X-RateLimit-Remaining"]) == (
        201,
        "3",
        "0",
    )
    reset = r.headers["X-RateLimit-Reset"]
    r = _broadcast(s, canvas="d")  # a fresh audience, but 3 per window across all audiences are used
    # The wait is what is left of the hour-long window (windows are fixed to the clock hour), and it agrees
    # with the reset time the 201 above announced.
    retry = int(r.headers["X-Ratelimit-Retry-After"])
    assert r.status_code == 429 and retry == 3000 == int(reset) - (WINDOW_START + 600)


def test_queued_fault_applies_and_answers_202(emulator_factory: Any) -> None:
    s = emulator_factory(faults={"202": 1.0}, canvases=("c",))
    mixed = {"attributes": [{"external_id": "u", "n": 1}, {"external_id": "v", "email": "bad"}]}
    r = post(s, body=mixed)
    assert (r.status_code, r.json()) == (202, {"message": "queued"})  # no per-object errors when queued
    assert s.user("external_id", "u")["attributes"] == {"n": 1}  # queued means accepted: it is applied
    assert post(s, body={"attributes": [{"email": "bad"}]}).status_code == 400  # invalid stays invalid
    r = post(s, "/canvas/trigger/send", {"canvas_id": "c", "recipients": [{"external_user_id": "u"}]})
    assert (r.status_code, r.json()) == (202, {"message": "queued"})
    assert len(s.dispatches()) == 1
    live = {"app_id": "a", "activity_id": "b", "content_state": {}}
    assert post(s, "/messages/live_activity/update", live).status_code == 202
    entry = s.ledger()[0]
    assert (entry["status"], entry["fault"], entry["objects"]["attributes"]) == (202, "202", 1)
    assert s.stats()["requests"]["/users/track"] == {"202": 1, "400": 1}

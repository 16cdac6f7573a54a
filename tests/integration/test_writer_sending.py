"""The writer's sending side (delivery/sender.py) against the emulator: requests in flight are coroutines on
one event loop, not threads. At concurrency 160 the run keeps many requests in flight with a handful of
threads, never more than `concurrency` at once, keeps each user's order, and a stop mid-flight still
gives every row one outcome."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_writer import (  # noqa: F401 (close_reports: autouse here too)
    accounted,
    applied_ids,
    close_reports,
    failed_file,
    make_pipeline,
    mapped_chunk,
    opened,
    stream_of,
)

from connector import config
from connector.delivery.client import BrazeClient, client_for
from connector.delivery.transport import Answer, Gate
from connector.delivery.writer import Writer
from connector.emulator import EmulatorServer
from connector.report import RunReport
from connector.stop import StopToken

pytestmark = pytest.mark.timeout(120)


class Counting:
    """Wraps the client's real transport (HTTP to the emulator) and counts the requests on the wire."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.now = 0
        self.peak = 0
        self.sent = 0
        self._lock = threading.Lock()

    def _enter(self) -> None:
        with self._lock:
            self.now += 1
            self.sent += 1
            self.peak = max(self.peak, self.now)

    def _leave(self) -> None:
        with self._lock:
            self.now -= 1

    def send(self, url: str, body: bytes, gate: Gate | None = None) -> Answer:
        self._enter()
        try:
            return self.inner.send(url, body, gate)  # type: ignore[no-any-return]
        finally:
            self._leave()

    async def send_async(self, url: str, body: bytes, gate: Gate | None = None) -> Answer:
        self._enter()
        try:
            return await self.inner.send_async(url, body, gate)  # type: ignore[no-any-return]
        finally:
            self._leave()

    def close(self, wait_s: float | None = None) -> None:
        self.inner.close(wait_s)


def counted_writer(pipeline: config.Pipeline, url: str, tmp_path: Path, token: StopToken | None = None
                   ) -> tuple[Writer, RunReport, BrazeClient, Counting]:  # fmt: skip
    """A bulk writer over the run's own client (bulk: aiohttp in a child process), its transport counted."""
    report = opened(RunReport("t", report_dir=tmp_path / "report"))
    client = client_for(pipeline, url, "test-key", "bulk", token, on_retry=report.record_retry)
    counting = Counting(client._transport)
    client._transport = counting  # type: ignore[assignment]
    return Writer(pipeline, client, report, mode="bulk", stop=token), report, client, counting


class ThreadPeak:
    """The most threads alive in this process while it runs (sampled every 10 ms)."""

    def __init__(self) -> None:
        self.base = threading.active_count()
        self.peak = self.base
        self._done = threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()

    def _watch(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, threading.active_count())

    def stop(self) -> int:
        """Threads added at most during the run, not counting this sampler."""
        self._done.set()
        self._t.join()
        return self.peak - self.base - 1


def objects(n: int, users: int | None = None) -> list[dict[str, Any]]:
    users = users or n
    return [{"external_id": f"u{i % users}", "plan": f"v{i}"} for i in range(n)]


def test_concurrency_160_keeps_many_requests_in_flight_with_few_threads(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    emu = emulator_factory(latency_ms=150)
    pipeline = make_pipeline(concurrency=160, max_objects_per_request=10)
    n = 6000  # 600 requests at 150 ms: the limiter's burst and 1,000/s keep over 100 on the wire
    peak = ThreadPeak()
    writer, report, client, counting = counted_writer(pipeline, emu.url, tmp_path)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects(n)))
    writer.close()
    client.close()
    added = peak.stop()
    assert report.rows["delivered"] == n and counting.sent == 600
    assert 100 <= counting.peak <= 160
    # the event loop, the HTTP child's writer and reader threads, (the report's sinks): not one per request
    assert added <= 8, f"{added} threads for {counting.peak} requests in flight"
    assert sum(applied_ids(emu).values()) == n


@pytest.mark.parametrize("concurrency", [1, 7])
def test_requests_in_flight_never_exceed_the_concurrency(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path, concurrency: int
) -> None:
    emu = emulator_factory(latency_ms=20)
    pipeline = make_pipeline(concurrency=concurrency, max_objects_per_request=5)
    writer, report, client, counting = counted_writer(pipeline, emu.url, tmp_path)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects(300)))
    writer.close()
    client.close()
    assert report.rows["delivered"] == 300 and counting.sent == 60
    assert counting.peak == concurrency


def test_each_users_updates_stay_in_order_at_concurrency_160(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    """One object per request, 20 users, 2,000 updates, a jittery server: each user's last value wins."""
    emu = emulator_factory(faults={"slow": 0.3}, slow_ms=25, seed=3)
    pipeline = make_pipeline(concurrency=160, max_objects_per_request=1)
    writer, report, client, counting = counted_writer(pipeline, emu.url, tmp_path)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects(2000, users=20)))
    writer.close()
    client.close()
    assert report.rows["delivered"] == 2000
    assert counting.peak <= 20  # one request per user at a time
    for u in range(20):
        assert emu.user("external_id", f"u{u}")["attributes"]["plan"] == f"v{1980 + u}"  # type: ignore[index]


def test_a_stop_mid_flight_at_concurrency_160_accounts_every_row(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    """Stopped with ~100 requests on the wire and a short grace period: each row delivered, unknown (on the
    wire when the grace ended) or not sent, once; Braze applied exactly the delivered and some unknown."""
    emu = emulator_factory(latency_ms=2000)
    pipeline = make_pipeline(concurrency=160, max_objects_per_request=5, stop_grace_s=0.2)
    token = StopToken()
    writer, report, client, counting = counted_writer(pipeline, emu.url, tmp_path, token)
    n = 20_000

    def stop_when_busy() -> None:
        end = time.monotonic() + 60
        # After the first answers, and with a later wave on the wire (sent well inside the 2 s latency, so
        # unanswered when the 0.2 s grace ends, however late this thread runs on a loaded machine)
        while (report.rows["delivered"] < 500 or counting.now < 50) and time.monotonic() < end:
            time.sleep(0.005)
        token.request("stopped by SIGTERM")

    threading.Thread(target=stop_when_busy, daemon=True).start()
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects(n)))  # returns once stopped
    writer.close()
    counts = dict(report.rows)
    assert accounted(report) == n
    outcomes: dict[str, set[str]] = {}
    for row in failed_file(report):
        outcomes.setdefault(row["_outcome"], set()).add("u" + row["id"].removeprefix("row"))
    unknown, not_sent = outcomes.get("unknown", set()), outcomes.get("not_sent", set())
    assert len(unknown) == report.unknown > 0 and len(not_sent) == report.not_sent > 0
    assert counts["delivered"] + len(unknown) + len(not_sent) == n
    client.close(5.0)  # the child answers what it holds, then exits
    time.sleep(0.5)
    applied = applied_ids(emu)
    assert set(applied.values()) == {1}
    assert not set(applied) & not_sent and set(applied) <= {f"u{i}" for i in range(n)} - not_sent
    assert len(applied) >= counts["delivered"]
    assert dict(report.rows) == counts  # the late answers recorded nothing more


def grouped_writer(pipeline: config.Pipeline, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                   ) -> tuple[Writer, RunReport, BrazeClient, list[int]]:  # fmt: skip
    """A bulk writer over the HTTP child (its own transport), and the size of each group handed to it."""
    from connector.delivery.transport import process

    sizes: list[int] = []
    start_many = process._Child.start_many

    def recorded(self: Any, requests: list[Any], gate: Any) -> list[int]:
        sizes.append(len(requests))
        return start_many(self, requests, gate)

    monkeypatch.setattr(process._Child, "start_many", recorded)
    report = opened(RunReport("t", report_dir=tmp_path / "report"))
    client = client_for(pipeline, url, "test-key", "bulk", on_retry=report.record_retry)
    assert client.transport == "aiohttp-process" and client.groups_first_attempts
    return Writer(pipeline, client, report, mode="bulk"), report, client, sizes


def test_first_attempts_leave_in_rate_limit_groups_through_the_http_child(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 1,000 requests/s the requests whose slots fall in one 10 ms step reach the HTTP child in one hand-off
    (delivery/volleys.py); every request goes that way once, every row is delivered once."""
    emu = emulator_factory(latency_ms=20)
    limits = {e: {"requests": 1000, "per_seconds": 1} for e in config.DEFAULT_RATE_LIMITS}
    pipeline = make_pipeline(concurrency=160, max_objects_per_request=5, rate_limits=limits)
    writer, report, client, sizes = grouped_writer(pipeline, emu.url, tmp_path, monkeypatch)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects(2000)))
    writer.close()
    client.close()
    assert report.rows["delivered"] == 2000 and accounted(report) == 2000
    assert sum(sizes) == 400  # each request's one attempt, all through groups
    assert len(sizes) < 400 and max(sizes) > 1
    assert set(applied_ids(emu).values()) == {1} and len(applied_ids(emu)) == 2000


def test_failed_first_attempts_of_a_group_go_on_through_the_retry_policy(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 or a 429 to a grouped first attempt: the job goes on as a coroutine (Writer._resume) through the
    same retries; each row ends delivered or failed once, and the retries are counted."""
    emu = emulator_factory(faults={"503": 0.2, "429": 0.1}, seed=5)
    pipeline = make_pipeline(concurrency=40, max_objects_per_request=5)
    writer, report, client, sizes = grouped_writer(pipeline, emu.url, tmp_path, monkeypatch)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects(1000)))
    writer.close()
    client.close()
    assert accounted(report) == 1000 and report.rows["delivered"] + report.rows["failed"] == 1000
    assert report.rows["delivered"] > 900
    retries = report.to_dict()["requests"]["retries"]
    assert retries > 0
    assert sum(sizes) == 200 + retries  # 200 first attempts in groups, then each retry on its own, as before
    applied = applied_ids(emu)
    assert len(applied) >= report.rows["delivered"]

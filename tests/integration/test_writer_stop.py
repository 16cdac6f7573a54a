"""A stopped writer against the emulator: nothing new is sent, in-flight answers within the grace period are
kept, unanswered requests are given up as unknown (recorded once), and every object has one outcome."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_writer import accounted, applied_ids, failed_file, make_pipeline, mapped_chunk, stream_of

from connector import config
from connector.delivery.client import client_for
from connector.delivery.writer import Writer
from connector.emulator import EmulatorServer
from connector.report import ReportInvariantError, RunReport
from connector.stop import StopToken

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def new_report(tmp_path: Path) -> Iterator[Callable[[], RunReport]]:
    """Makes the test's RunReport; when the test ends, its rejects and failed files are closed (by finish(),
    as a run does), whatever the test asserted, so no file is left open (ResourceWarning)."""
    made: list[RunReport] = []

    def make() -> RunReport:
        made.append(RunReport("t", report_dir=tmp_path / "report"))
        return made[-1]

    yield make
    for report in made:
        with contextlib.suppress(ReportInvariantError):  # the writer alone counts no rows read
            report.finish()


def stopping_writer(pipeline: config.Pipeline, url: str, report: RunReport, token: StopToken,
                    answered: bool = True) -> Writer:  # fmt: skip
    """A bulk writer with a stop token; `answered`: as if a probe had accepted the key already, so the first
    requests leave together (else one leaves alone until its answer: FirstAnswer)."""
    client = client_for(pipeline, url, "test-key", "bulk", token)
    if answered:
        client.key_answered()
    return Writer(pipeline, client, report, mode="bulk", stop=token)


def slow_setup(emulator_factory: Any, new_report: Callable[[], RunReport], emulator: dict[str, Any],
               **write: Any) -> Any:  # fmt: skip
    """An emulator with `emulator` options, and a bulk writer with a stop token and `write` settings."""
    emu: EmulatorServer = emulator_factory(**emulator)
    pipeline = make_pipeline(max_objects_per_request=5, **write)
    token = StopToken()
    report = new_report()
    return emu, pipeline, token, stopping_writer(pipeline, emu.url, report, token), report


def when(condition: Callable[[], bool], then: Callable[[], None], timeout: float = 60.0) -> threading.Thread:
    """Run `then` on a thread as soon as `condition` holds."""

    def watch() -> None:
        end = time.monotonic() + timeout
        while not condition() and time.monotonic() < end:
            time.sleep(0.005)
        then()

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def objects(n: int) -> list[dict[str, Any]]:
    return [{"external_id": f"u{i}", "plan": "pro"} for i in range(n)]


def by_outcome(report: RunReport) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for row in failed_file(report):
        out.setdefault(row["_outcome"], set()).add("u" + row["id"].removeprefix("row"))
    return out


def test_a_graceful_stop_keeps_the_answers_in_flight_and_sends_nothing_new(
    emulator_factory: Any, new_report: Callable[[], RunReport]
) -> None:
    emu, pipeline, token, writer, report = slow_setup(emulator_factory, new_report, {"latency_ms": 150},
                                                      concurrency=4, stop_grace_s=30)  # fmt: skip
    n = 400
    when(lambda: report.rows["delivered"] >= 20, token.request)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects(n)))  # returns once stopped
    writer.close()
    writer.client.close()  # type: ignore[union-attr]
    assert accounted(report) == n
    assert report.rows["failed"] == 0  # every request in flight was answered within the grace period
    assert 20 <= report.rows["delivered"] < n
    assert report.rows["skipped"] == report.not_sent == n - report.rows["delivered"]
    not_sent = by_outcome(report)["not_sent"]
    applied = applied_ids(emu)
    # Braze applied exactly the delivered rows, once each; the others are listed as not sent.
    assert set(applied.values()) == {1}
    assert set(applied) | not_sent == {f"u{i}" for i in range(n)} and not set(applied) & not_sent
    reasons = {r["_error"] for r in failed_file(report)}
    assert reasons == {"run stopped by the caller"}


def test_past_the_grace_period_requests_in_flight_are_unknown_and_recorded_once(
    emulator_factory: Any, new_report: Callable[[], RunReport]
) -> None:
    emu, pipeline, token, writer, report = slow_setup(emulator_factory, new_report, {"latency_ms": 4000},
                                                      concurrency=4, stop_grace_s=0.3)  # fmt: skip
    n = 60  # 12 requests: 4 on the wire, the rest queued
    when(lambda: len(writer._inflight) == 4, token.request)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects(n)))
    writer.close()  # no answer is waited for past the grace period: nothing delivered, 20 rows unknown
    counts = dict(report.rows)
    assert accounted(report) == n and counts["delivered"] == 0
    outcomes = by_outcome(report)
    assert len(outcomes["unknown"]) == 20 and len(outcomes["not_sent"]) == 40
    assert report.unknown == 20
    # The emulator applies the abandoned requests later: unknown was the honest outcome, and the workers
    # that get those answers record nothing more.
    end = time.monotonic() + 30
    while sum(applied_ids(emu).values()) < 20 and time.monotonic() < end:
        time.sleep(0.1)
    time.sleep(0.5)
    assert set(applied_ids(emu)) == outcomes["unknown"]
    assert dict(report.rows) == counts
    writer.client.close(1.0)  # type: ignore[union-attr]


def test_a_stop_while_the_first_request_awaits_its_answer_sends_none_of_the_waiting_ones(
    emulator_factory: Any, new_report: Callable[[], RunReport]
) -> None:
    """Before the key has been answered one request is on the wire and the others wait for its answer
    (FirstAnswer): a stop then leaves them unsent (not_sent), and only the first one's rows are unknown."""
    emu: EmulatorServer = emulator_factory(latency_ms=4000)
    pipeline = make_pipeline(max_objects_per_request=5, concurrency=4, stop_grace_s=0.3)
    token, report = StopToken(), new_report()
    writer = stopping_writer(pipeline, emu.url, report, token, answered=False)
    n = 60
    when(lambda: len(writer._inflight) == 4, token.request)  # the 4 jobs begun: 1 sent, 3 waiting
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects(n)))
    writer.close()
    outcomes = by_outcome(report)
    assert accounted(report) == n and report.rows["delivered"] == 0
    assert len(outcomes["unknown"]) == 5 and len(outcomes["not_sent"]) == 55
    end = time.monotonic() + 30
    while not applied_ids(emu) and time.monotonic() < end:
        time.sleep(0.1)
    time.sleep(0.3)
    assert set(applied_ids(emu)) == outcomes["unknown"]  # the one request that left, applied later
    writer.client.close(1.0)  # type: ignore[union-attr]


def test_a_stop_at_once_does_not_wait_at_all(emulator_factory: Any, new_report: Callable[[], RunReport]) -> None:
    emu, pipeline, token, writer, report = slow_setup(emulator_factory, new_report, {"latency_ms": 3000},
                                                      concurrency=2, stop_grace_s=600)  # fmt: skip
    when(lambda: len(writer._inflight) == 2, lambda: token.request(now=True))
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects(30)))
    writer.close()
    # not waited for (600 s grace, 3 s answers): nothing delivered, the 10 rows on the wire unknown
    assert report.rows["delivered"] == 0
    assert accounted(report) == 30 and report.unknown == 10 and report.not_sent == 20
    writer.client.close(1.0)  # type: ignore[union-attr]


def test_no_retry_after_a_stop(emulator_factory: Any, new_report: Callable[[], RunReport]) -> None:
    """A request waiting to retry a 503 is not sent again once the run is stopped: its rows fail (503)."""
    retry = {"max_attempts": 5, "initial_backoff_s": 60, "max_backoff_s": 60, "max_elapsed_s": 300}
    emu, pipeline, token, writer, report = slow_setup(emulator_factory, new_report, {"faults": {"503": 1.0}},
                                                      concurrency=2, retry=retry)  # fmt: skip
    when(lambda: len(emu.ledger(applied=False)) >= 2, token.request)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects(20)))
    t0 = time.monotonic()
    writer.close()
    assert time.monotonic() - t0 < 30  # the 60 s backoff was cut short (generous bound)
    assert accounted(report) == 20
    rows = failed_file(report)
    assert {r["_status"] for r in rows if r["_outcome"] == "failed"} == {"503"}
    assert len([r for r in rows if r["_outcome"] == "failed"]) == 10
    assert len(emu.ledger(applied=False)) == 2  # one attempt each, no retry
    writer.client.close()  # type: ignore[union-attr]


def test_a_stop_before_anything_is_sent_sends_nothing(emulator: EmulatorServer,
                                                     new_report: Callable[[], RunReport]) -> None:  # fmt: skip
    pipeline = make_pipeline()
    token = StopToken()
    token.request("stopped by SIGTERM")
    report = new_report()
    writer = stopping_writer(pipeline, emulator.url, report, token)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects(10)))
    writer.close()
    writer.client.close()  # type: ignore[union-attr]
    assert report.not_sent == 10 and writer.abort_reason == "run stopped by SIGTERM"
    assert emulator.ledger(applied=False) == []

"""The writer with delta sync, against the real emulator over HTTP: whatever happens to the state (its store
failing, an error inside it), the rows keep the outcome Braze gave them and the accounting adds up."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from test_writer import accounted, attrs, make_pipeline, mapped_chunk, stream_of

from connector.delivery.client import BrazeClient
from connector.delivery.ratelimit import RateLimiter
from connector.delivery.writer import Writer
from connector.delta import DeltaState
from connector.delta.stores import SqliteStore
from connector.emulator import EmulatorServer
from connector.report import RunReport

pytestmark = pytest.mark.timeout(60)


class FullDisk(SqliteStore):
    """A real state file on a disk with no room: every write raises SQLite's full-disk error."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, read_only=False)
        self.tried = 0

    def write(self, stream: str, confirm: list[tuple[str, bytes]], forget: list[str], **kw: object) -> None:
        self.tried += 1
        raise sqlite3.OperationalError("database or disk is full")


class Broken(DeltaState):
    """A state with a bug: recording an answer raises."""

    def settle(self, stream: str, keys: object, delivered: bool) -> None:
        raise RuntimeError("a bug in the state")

    def settle_nowait(self, stream: str, keys: object, delivered: bool) -> int | None:
        raise RuntimeError("a bug in the state")


def delta_writer(emulator: EmulatorServer, tmp_path: Path, state: DeltaState) -> tuple[Writer, RunReport]:
    pipeline = make_pipeline(concurrency=8)
    report = RunReport("t", report_dir=tmp_path / "report")
    client = BrazeClient(emulator.url, "test-key", write=pipeline.write, limiter=RateLimiter.from_write(pipeline.write))
    return Writer(pipeline, client, report, mode="bulk", delta=state), report


def submit(writer: Writer, state: DeltaState, n: int, bad_every: int = 0) -> None:
    """n users through delta (so they carry their state keys), every bad_every-th with an email Braze refuses."""
    objects = attrs(n)
    for i in range(0, n, bad_every or n + 1):
        objects[i]["email"] = "not-an-email"
    mapped, _ = state.changed("s", "attributes", mapped_chunk("attributes", objects))
    writer.submit(stream_of(make_pipeline()), mapped)


def test_a_state_that_cannot_write_changes_no_outcome(emulator: EmulatorServer, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    store = FullDisk(tmp_path / "s.sqlite")
    state = DeltaState(store)
    writer, report = delta_writer(emulator, tmp_path, state)
    with caplog.at_level(logging.WARNING):
        submit(writer, state, 1500, bad_every=10)  # delivered answers settle off the loop, rejects inline
        writer.close()
        lost = state.finish()
        state.close()
    r = report.rows
    assert (r["delivered"], r["rejected"], r["failed"]) == (1350, 150, 0) and accounted(report) == 1500
    assert emulator.stats()["objects_applied"]["attributes"] == 1350
    assert lost is not None and lost.counts()["users"] == 1350 and store.tried == 1
    assert [r.levelname for r in caplog.records] == []  # the warning is the caller's to report (finish)


def test_an_error_inside_the_state_fails_no_delivered_row(emulator: EmulatorServer, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    state = Broken(SqliteStore(tmp_path / "s.sqlite", read_only=False))
    writer, report = delta_writer(emulator, tmp_path, state)
    with caplog.at_level(logging.WARNING):
        submit(writer, state, 300, bad_every=10)
        writer.close()
        state.close()
    r = report.rows
    assert (r["delivered"], r["rejected"], r["failed"]) == (270, 30, 0) and accounted(report) == 300
    errors = [x for x in caplog.records if x.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None  # the first, with its traceback: a bug
    [warning] = report.warnings
    assert warning.startswith("delta state: ") and "could not be recorded" in warning


def test_the_writer_records_exactly_the_users_braze_confirmed(emulator: EmulatorServer, tmp_path: Path) -> None:
    """A first run's users settle by their requests' positions (delta/flights.py): the rows Braze refused are
    not recorded, every other one is, and the next run sends exactly the refused ones again."""
    path = tmp_path / "s.sqlite"
    state = DeltaState(SqliteStore(path, read_only=False))
    writer, report = delta_writer(emulator, tmp_path, state)
    objects = attrs(600)
    for i in range(0, 600, 7):
        objects[i]["email"] = "not-an-email"
    mapped, _ = state.changed("s", "attributes", mapped_chunk("attributes", objects))
    assert mapped.delta_flight is not None and mapped.delta_keys is not None
    writer.submit(stream_of(make_pipeline()), mapped)
    writer.close()
    state.close()
    assert report.rows["rejected"] == len(range(0, 600, 7)) and accounted(report) == 600
    again = DeltaState(SqliteStore(path, read_only=False))
    resent, unchanged = again.changed("s", "attributes", mapped_chunk("attributes", objects))
    again.close()
    assert unchanged == 600 - len(range(0, 600, 7))
    assert resent.delta_keys == [f"external_id:u{i}" for i in range(0, 600, 7)]

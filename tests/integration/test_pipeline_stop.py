"""run_pipeline with a stop token (what an embedder or the CLI's signal handlers use), RunFailed, pre-flight
checks and empty sources, against the emulator on 127.0.0.1."""

from __future__ import annotations

import csv
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_pipeline_run import (
    applied_by_identifier,
    env_for,
    events_stream,
    project,
    report_json,
    users_stream,
    write_events,
)

from connector import RunFailed, StopToken, run_pipeline
from connector.delivery.resume import ResumeSet
from connector.emulator import EmulatorServer
from connector.errors import RunLocked, SourceError
from connector.readers import load_failed
from connector.runlock import RunLocks

pytestmark = pytest.mark.timeout(120)

SLOW_WRITE = {"concurrency": 4, "max_objects_per_request": 10, "stop_grace_s": 30}


def failed_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def stop_when(condition: Any, token: StopToken, **kw: Any) -> None:
    def watch() -> None:
        end = time.monotonic() + 60
        while not condition() and time.monotonic() < end:
            time.sleep(0.005)
        token.request(**kw)

    threading.Thread(target=watch, daemon=True).start()


@pytest.mark.parametrize("finish", ["--resume", "--retry-failed"])
def test_a_stopped_run_lists_every_unprocessed_row_and_either_advised_command_completes_it_once(
    emulator_factory: Any, tmp_path: Path, finish: str
) -> None:
    """The stop warning (what the CLI prints, and README's Stopping a run) names --resume DIR and
    --retry-failed DIR: each finishes the run, every event applied once."""
    emu: EmulatorServer = emulator_factory(latency_ms=60)
    good, _ = write_events(tmp_path / "data" / "events.parquet", 3000)
    p = project(tmp_path, [events_stream(), users_stream()], write=SLOW_WRITE)
    token = StopToken()
    stop_when(lambda: emu.stats()["objects_applied"]["events"] >= 100, token)
    with pytest.raises(RunFailed) as info:
        run_pipeline(p, mode="bulk", report_dir=tmp_path / "r1", env=env_for(emu), stop=token)
    report = info.value.report
    doc = report_json(report)
    assert doc["exit_code"] == 4 and info.value.exit_code == 4 and doc["invariant_ok"] is True
    assert doc["exit_meaning"].startswith("stopped by a signal or the caller")
    assert report.stopped and doc["stop"] == {"reason": "stopped by the caller", "how": "gracefully", "exit_code": 4}
    # Every row of both streams is read and accounted for, including the users stream never started.
    assert doc["rows"]["read"] == 3000 + 6
    assert doc["failed"]["unknown"] == 0  # answers came within the grace period
    assert 100 <= doc["rows"]["delivered"] < 3000
    rows = failed_rows(report.failed.path)
    assert len(rows) == doc["failed"]["not_sent"] == doc["rows"]["skipped"]
    assert {r["_outcome"] for r in rows} == {"not_sent"}
    assert {r["_stream"] for r in rows} == {"events", "users"}
    said = next(w for w in doc["warnings"] if w.startswith("stopped: the run was stopped by the caller"))
    # Counted as skipped, listed in failed.csv: the summary, report.json, report.html and the warning agree.
    n = doc["rows"]["skipped"]
    assert doc["rows"]["failed"] == doc["failed"]["count"] == 0 and doc["skipped"]["not_sent"] == n
    assert f"{n:,} row(s) not sent (counted as skipped) and 0 with an unknown outcome (counted as failed)" in said
    from connector.cli import _summary

    summary = "\n".join(_summary(report, {}))
    assert f"skipped: {n:,} run stopped by the caller; {n:,} of them not sent, listed in failed.csv as not_sent" in summary
    assert f"failed: {report.failed.path} (0 failed, {n:,} skipped as not_sent)" in summary
    html = (report.report_dir / "report.html").read_text(encoding="utf-8")
    assert f"{n:,} of them not sent: listed in failed.csv as not_sent" in html
    assert f"finish the run with braze-connector run {p.file} --resume {report.report_dir} (or send the listed rows " \
           f"with braze-connector run {p.file} --retry-failed {report.report_dir})" in said  # fmt: skip
    assert Counter(a["identifier"]["external_id"] for e in emu.ledger() for a in e["applied"]
                   if a["array"] == "events").total() == doc["streams"][0]["delivered"]  # fmt: skip
    # The listed rows are exactly the rest: a retry run, or the resumed run, sends them, each event once.
    if finish == "--resume":
        again = run_pipeline(p, env=env_for(emu), resume=ResumeSet(report.report_dir), raise_on_failure=False)
    else:
        again = run_pipeline(p, mode="bulk", report_dir=tmp_path / "r2", env=env_for(emu),
                             retry=load_failed(report.report_dir), raise_on_failure=False)  # fmt: skip
    assert report_json(again)["rows"]["failed"] == 0
    assert not again.stopped and report_json(again)["stop"] is None
    applied = applied_by_identifier(emu)
    events = Counter({k[1]: v for k, v in applied.items() if k[0] == "events"})
    assert events == good


def test_a_stop_at_once_lists_no_unread_rows_and_keeps_the_count(emulator_factory: Any, tmp_path: Path) -> None:
    emu: EmulatorServer = emulator_factory(latency_ms=60)
    write_events(tmp_path / "data" / "events.parquet", 3000)
    p = project(tmp_path, [events_stream(), users_stream()], write=SLOW_WRITE)
    token = StopToken()
    stop_when(lambda: emu.stats()["objects_applied"]["events"] >= 50, token, now=True)
    report = run_pipeline(p, mode="bulk", report_dir=tmp_path / "r1", env=env_for(emu), stop=token,
                          raise_on_failure=False)  # fmt: skip
    doc = report_json(report)
    assert doc["exit_code"] == 4 and doc["invariant_ok"] is True  # no signal: 4 (a signal makes it 128+n)
    assert report.stopped and doc["stop"]["how"] == "at once"
    assert doc["rows"]["read"] < 3006  # rows not read are not listed (the warning says so)
    assert any("stopped at once" in w and "not read" in w for w in doc["warnings"])


# --------------------------------------------------------------------------- RunFailed


def test_run_failed_carries_the_report_and_raise_on_failure_false_returns_it(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    p = project(tmp_path, [users_stream()], report={"max_reject_fraction": 0.1})
    with pytest.raises(RunFailed, match="exit code 1") as info:
        run_pipeline(p, mode="bulk", report_dir=tmp_path / "a", env=env_for(emulator))
    assert info.value.exit_code == 1 and info.value.report.exit_code == 1
    assert (info.value.report.report_dir / "report.json").is_file()
    report = run_pipeline(p, mode="bulk", report_dir=tmp_path / "b", env=env_for(emulator), raise_on_failure=False)
    assert report.exit_code == 1


# --------------------------------------------------------------------------- pre-flight


def purchases_stream(path: str) -> dict[str, Any]:
    return {
        "name": "purchases", "source": {"path": path}, "kind": "purchases",
        "identifier": {"external_id": "user_id"},
        "purchase": {"product_id": "sku", "currency": "currency", "price": "price", "time": "ts"},
    }  # fmt: skip


def test_a_bad_third_stream_fails_the_run_before_anything_is_sent(emulator: EmulatorServer, tmp_path: Path) -> None:
    write_events(tmp_path / "data" / "events.parquet", 50)
    (tmp_path / "data" / "purchases.csv").write_text("user_id,sku,price,ts\nu1,p1,3.5,2024-01-01\n")
    p = project(tmp_path, [users_stream(), events_stream(), purchases_stream("data/purchases.csv")])
    with pytest.raises(SourceError) as info:
        run_pipeline(p, mode="bulk", report_dir=tmp_path / "out", env=env_for(emulator))
    text = str(info.value)
    assert "purchases.csv: stream 'purchases' reads column 'currency' (purchase.currency)" in text
    assert info.value.exit_code == 2
    assert emulator.ledger(applied=False) == []  # streams 1 and 2 were not delivered
    assert not (tmp_path / "out").exists()


def test_a_zero_byte_csv_is_an_empty_table_with_a_loud_warning(emulator: EmulatorServer, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "purchases.csv").write_bytes(b"")
    p = project(tmp_path, [users_stream(), purchases_stream("data/purchases.csv")])
    report = run_pipeline(p, mode="bulk", report_dir=tmp_path / "out", env=env_for(emulator))
    doc = report_json(report)
    assert doc["exit_code"] == 0 and doc["streams"][1]["read"] == 0
    assert any(w.startswith("empty source: stream purchases:") and "0 bytes" in w for w in doc["warnings"])


def test_a_zero_byte_csv_fails_an_expectation_that_requires_rows(emulator: EmulatorServer, tmp_path: Path) -> None:
    (tmp_path / "expectations").mkdir()
    (tmp_path / "expectations" / "some_rows.json").write_text(
        '{"name": "some_rows", "expectations": [{"type": "expect_table_row_count_to_be_between", '
        '"kwargs": {"min_value": 1}}]}'
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "empty.csv").write_bytes(b"")
    stream = {**users_stream("data/empty.csv"), "expectations": ["some_rows"]}
    p = project(tmp_path, [stream])
    report = run_pipeline(p, mode="bulk", report_dir=tmp_path / "out", env=env_for(emulator), raise_on_failure=False)
    doc = report_json(report)
    assert doc["exit_code"] == 1 and doc["rows"]["read"] == 0
    assert [c["success"] for c in doc["table_checks"]] == [False]


# --------------------------------------------------------------------------- one run at a time


def test_runs_sharing_a_delta_state_are_refused_even_with_other_report_folders(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    p = project(tmp_path, [{**users_stream(), "delta": True}], state={"path": "state/{pipeline}.sqlite"})
    held = RunLocks()
    held.acquire("t", [tmp_path / "state" / "t.sqlite.lock"])  # as a run with another report folder would
    try:
        with pytest.raises(RunLocked, match=r"state/t\.sqlite\.lock") as info:
            run_pipeline(p, mode="bulk", report_dir=tmp_path / "elsewhere", env=env_for(emulator))
        assert info.value.exit_code == 2 and emulator.ledger(applied=False) == []
        # validate and dry runs send nothing and change no state: they do not need the lock
        run_pipeline(p, report_dir=tmp_path / "v", validate_only=True, env={}, raise_on_failure=False)
        run_pipeline(p, report_dir=tmp_path / "d", dry_run=True, env={}, raise_on_failure=False)
    finally:
        held.release()
    report = run_pipeline(p, mode="bulk", report_dir=tmp_path / "elsewhere", env=env_for(emulator),
                          raise_on_failure=False)  # fmt: skip
    assert report.rows["delivered"] == 3


def test_another_report_dir_does_not_let_a_second_run_of_the_pipeline_start(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Both runs also lock the root of the pipeline's own report.dir, whatever --report-dir says."""
    from connector.runlock import lock_files

    p = project(tmp_path, [users_stream()])
    first = lock_files(p, tmp_path / "one")
    held = RunLocks()
    held.acquire("t", first)  # a run writing its report to ./one
    try:
        with pytest.raises(RunLocked) as info:
            run_pipeline(p, mode="bulk", report_dir=tmp_path / "two", env=env_for(emulator))
        assert info.value.exit_code == 2 and emulator.ledger(applied=False) == []
    finally:
        held.release()
    assert run_pipeline(p, mode="bulk", report_dir=tmp_path / "two", env=env_for(emulator)).rows["delivered"] == 3

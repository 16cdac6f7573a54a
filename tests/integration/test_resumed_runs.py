"""Resuming a run from its journal, and the rows Braze may have applied twice, against the emulator.

An interruption is made exact here by cutting a finished run's journal after the k-th request record (as
kill -9 would leave it: requests before it answered, request k sent with no answer, the rest never sent)
and resuming against a fresh emulator, whose ledger then holds exactly what the resumed run sent.
(test_crash_resume.py kills real runs.)
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from test_pipeline_run import (
    FAST_RETRY,
    env_for,
    events_stream,
    project,
    report_json,
    users_stream,
    write_events,
)
from typer.testing import CliRunner

from connector.cli import app
from connector.delivery.journal import JOURNAL_FILE, read_journal
from connector.delivery.resume import ResumeSet
from connector.errors import ConfigError, SourceError
from connector.pipeline import run_pipeline

pytestmark = pytest.mark.timeout(180)

ROWS = 200  # events over 50 users, 10 per request: 20 requests


def applied_rows(em: Any) -> Counter[int]:
    """Source row (Parquet: 1-based) -> how many times the emulator applied its event (score = row - 1)."""
    out: Counter[int] = Counter()
    for entry in em.ledger():
        for a in entry["applied"]:
            if a["array"] == "events":
                out[int(a["object"]["properties"]["score"]) + 1] += 1
    return out


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def first_run(tmp_path: Path, emulator_factory: Any, **write: Any) -> tuple[Any, Path]:
    """A finished run of ROWS events, one request at a time (so the journal is in request order)."""
    write_events(tmp_path / "data" / "events.parquet", ROWS)
    pipeline = project(tmp_path, [events_stream()], write={"retry": FAST_RETRY, "max_objects_per_request": 10,
                                                           "concurrency": 1, **write})  # fmt: skip
    run_dir = tmp_path / "run"
    report = run_pipeline(pipeline, raise_on_failure=False, mode="bulk", report_dir=run_dir, env=env_for(emulator_factory()))
    assert report_json(report)["rows"]["delivered"] == ROWS
    return pipeline, run_dir


def cut_after_request(run_dir: Path, k: int) -> list[int]:
    """Keep the journal up to the k-th request record (its answer lost); returns that request's rows."""
    path = run_dir / JOURNAL_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    records = read_journal(path).records
    sends = [i for i, r in enumerate(records) if isinstance(r, list) and r[0] == "s"]
    cut = sends[k - 1]
    path.write_bytes(b"".join(lines[: cut + 1]) + b"0000")  # and a torn half-written line
    rows: list[int] = records[cut][3]
    return rows


def answered_before(run_dir: Path, k: int) -> set[int]:
    """The rows of the requests recorded before the k-th (requests group each user's rows, delivery/bins.py,
    so request k holds no fixed range of rows)."""
    records = read_journal(run_dir / JOURNAL_FILE).records
    sends = [r for r in records if isinstance(r, list) and r[0] == "s"]
    return {row for r in sends[: k - 1] for row in r[3]}


def test_resuming_a_finished_run_sends_nothing_twice(emulator_factory: Any, tmp_path: Path) -> None:
    write_events(tmp_path / "data" / "events.parquet", ROWS)
    pipeline = project(tmp_path, [events_stream()], write={"max_objects_per_request": 10})
    em = emulator_factory()
    first = run_pipeline(pipeline, raise_on_failure=False, mode="bulk", report_dir=tmp_path / "run", env=env_for(em))
    before = len(em.ledger())
    for attempt in (2, 3):
        again = run_pipeline(pipeline, raise_on_failure=False, report_dir=None, env=env_for(em), resume=ResumeSet(tmp_path / "run"))
        doc = report_json(again)
        assert len(em.ledger()) == before  # nothing sent
        assert doc["run_id"] == first.run_id and doc["exit_code"] == 0 and doc["invariant_ok"] is True
        assert doc["rows"]["delivered"] == ROWS and doc["requests"]["total"] == 0
        assert doc["resume"]["attempt"] == attempt and doc["resume"]["carried"]["delivered"] == ROWS
        assert doc["resume"]["previous_exit_code"] == 0
        assert doc["mode"] == "bulk"


def test_a_resumed_run_sends_exactly_the_rows_not_confirmed(emulator_factory: Any, tmp_path: Path) -> None:
    pipeline, run_dir = first_run(tmp_path, emulator_factory)
    answered = answered_before(run_dir, 8)
    unanswered = cut_after_request(run_dir, 8)
    assert len(unanswered) == 10 and len(answered) == 70

    fresh = emulator_factory()
    report = run_pipeline(pipeline, raise_on_failure=False, env=env_for(fresh), resume=ResumeSet(run_dir))
    doc = report_json(report)
    sent = applied_rows(fresh)
    assert set(sent) == set(range(1, ROWS + 1)) - answered  # request 8 again, 9..20 for the first time
    assert set(unanswered) <= set(sent)
    assert all(n == 1 for n in sent.values())
    assert doc["exit_code"] == 0 and doc["invariant_ok"] is True
    assert doc["rows"]["delivered"] == ROWS and doc["rows"]["possibly_duplicated"] == 10
    assert doc["resume"]["carried"]["delivered"] == 70 and doc["resume"]["resent_unanswered"] == 10
    listed = csv_rows(run_dir / "possibly_duplicated.csv")
    assert sorted(int(r["_row_number"]) for r in listed) == sorted(unanswered)
    assert {r["_stream"] for r in listed} == {"events"} and "resume" in listed[0]["_reason"]
    assert any("unfinished write" in w for w in doc["warnings"])

    # Resumed again, it sends nothing and still lists the same possible duplicates.
    report3 = run_pipeline(pipeline, raise_on_failure=False, env=env_for(fresh), resume=ResumeSet(run_dir))
    doc3 = report_json(report3)
    assert applied_rows(fresh) == sent and doc3["requests"]["total"] == 0
    assert doc3["rows"]["delivered"] == ROWS and doc3["rows"]["possibly_duplicated"] == 10


def test_with_on_ambiguous_fail_unanswered_rows_are_listed_unknown_not_sent(
    emulator_factory: Any, tmp_path: Path
) -> None:
    pipeline, run_dir = first_run(tmp_path, emulator_factory, on_ambiguous="fail")
    answered = answered_before(run_dir, 3)
    unanswered = cut_after_request(run_dir, 3)
    fresh = emulator_factory()
    doc = report_json(run_pipeline(pipeline, raise_on_failure=False, env=env_for(fresh), resume=ResumeSet(run_dir)))
    assert set(applied_rows(fresh)) == set(range(1, ROWS + 1)) - answered - set(unanswered)
    assert doc["exit_code"] == 1 and doc["invariant_ok"] is True
    assert doc["rows"]["delivered"] == ROWS - 10 and doc["rows"]["failed"] == 10
    assert doc["rows"]["possibly_duplicated"] == 0
    failed = csv_rows(run_dir / "failed.csv")
    assert sorted(int(r["_row_number"]) for r in failed) == sorted(unanswered)
    assert {r["_outcome"] for r in failed} == {"unknown"} and "no answer" in failed[0]["_error"]


def test_a_source_changed_since_the_interruption_is_refused(emulator_factory: Any, tmp_path: Path) -> None:
    pipeline, run_dir = first_run(tmp_path, emulator_factory)
    cut_after_request(run_dir, 2)
    before = (run_dir / "report.json").read_bytes()
    write_events(tmp_path / "data" / "events.parquet", ROWS + 5)  # the export was replaced
    with pytest.raises(SourceError, match="changed since run"):
        run_pipeline(pipeline, raise_on_failure=False, env=env_for(emulator_factory()), resume=ResumeSet(run_dir))
    assert (run_dir / "report.json").read_bytes() == before  # the interrupted run's files are untouched


def test_resume_refuses_another_pipeline_a_dry_run_and_a_folder_without_journal(
    emulator_factory: Any, tmp_path: Path
) -> None:
    pipeline, run_dir = first_run(tmp_path, emulator_factory)
    with pytest.raises(ConfigError, match="not with validate, --dry-run"):
        run_pipeline(pipeline, raise_on_failure=False, dry_run=True, resume=ResumeSet(run_dir))
    other = pipeline.model_copy(update={"name": "other"})
    with pytest.raises(ConfigError, match="of pipeline 't'"):
        run_pipeline(other, env=env_for(emulator_factory()), resume=ResumeSet(run_dir))
    with pytest.raises(ConfigError, match="no journal.log there"):
        ResumeSet(tmp_path / "data")


def test_rows_resent_after_a_dropped_connection_are_listed_as_possibly_duplicated(
    emulator_factory: Any, tmp_path: Path
) -> None:
    """The emulator applies the request, then drops the connection: the client sends it again."""
    write_events(tmp_path / "data" / "events.parquet", ROWS)
    retry = {**FAST_RETRY, "max_attempts": 10, "max_elapsed_s": 30}
    pipeline = project(tmp_path, [events_stream()], write={"retry": retry, "max_objects_per_request": 10})
    em = emulator_factory(faults={"drop": 0.3}, seed=11)
    doc = report_json(run_pipeline(pipeline, raise_on_failure=False, mode="bulk", report_dir=tmp_path / "run", env=env_for(em)))
    applied = applied_rows(em)
    assert doc["rows"]["delivered"] == ROWS and sum(applied.values()) > ROWS
    listed = {int(r["_row_number"]) for r in csv_rows(tmp_path / "run" / "possibly_duplicated.csv")}
    twice = {row for row, n in applied.items() if n > 1}
    assert twice <= listed and doc["rows"]["possibly_duplicated"] == len(listed)
    assert sum(applied.values()) - doc["rows"]["delivered"] <= sum(applied[r] - 1 for r in listed)
    assert doc["possibly_duplicated"]["by_reason"] == {
        "sent again after an attempt whose connection dropped after sending": len(listed)
    }
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "possibly applied more than once" in html


def test_the_cli_resumes_the_latest_run_of_the_pipeline(emulator_factory: Any, tmp_path: Path) -> None:
    write_events(tmp_path / "data" / "events.parquet", ROWS)
    project(tmp_path, [events_stream()], write={"max_objects_per_request": 10, "concurrency": 1})
    em = emulator_factory()
    env = env_for(em)
    runs = str(tmp_path / "runs" / "{run_id}")
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        first = CliRunner().invoke(app, ["run", "pipelines/t.yaml", "--mode", "bulk", "--report-dir", runs, "-q"], env=env)
        assert first.exit_code == 0, first.output
        [run_dir] = [d for d in (tmp_path / "runs").iterdir() if d.is_dir()]
        cut_after_request(run_dir, 5)
        again = CliRunner().invoke(app, ["run", "pipelines/t.yaml", "--resume", "--report-dir", runs, "-q"], env=env)
        assert again.exit_code == 0, again.output
        assert "resumed (attempt 2)" in again.output and "possibly duplicated: 10 row(s)" in again.output
        assert [d for d in (tmp_path / "runs").iterdir() if d.is_dir()] == [run_dir]
        explicit = CliRunner().invoke(app, ["run", "pipelines/t.yaml", "--resume", str(run_dir), "-q"], env=env)
        assert explicit.exit_code == 0 and "resumed (attempt 3)" in explicit.output
        stray = CliRunner().invoke(app, ["run", "pipelines/t.yaml", str(run_dir)], env=env)
        assert stray.exit_code == 2 and "goes with --resume" in stray.output
        none = CliRunner().invoke(app, ["run", "pipelines/t.yaml", "--resume", "--report-dir",
                                        str(tmp_path / "nothing" / "{run_id}")], env=env)  # fmt: skip
        assert none.exit_code == 2 and "no run of pipeline t" in none.output
    finally:
        os.chdir(cwd)


def test_an_interrupted_retry_run_resumes_with_the_same_failed_rows(emulator_factory: Any, tmp_path: Path) -> None:
    """The journal remembers the failed file a --retry-failed run was sending: a resume sends only those."""
    from connector.readers import load_failed

    write_events(tmp_path / "data" / "events.parquet", ROWS)
    pipeline = project(tmp_path, [events_stream()], write={"retry": FAST_RETRY, "max_objects_per_request": 10,
                                                           "concurrency": 1})  # fmt: skip
    flaky = emulator_factory(faults={"503": 0.5}, seed=3)
    run_pipeline(pipeline, raise_on_failure=False, mode="bulk", report_dir=tmp_path / "r1", env=env_for(flaky))
    failed = {int(r["_row_number"]) for r in csv_rows(tmp_path / "r1" / "failed.csv")}
    assert 0 < len(failed) < ROWS
    retry_dir = tmp_path / "r2"
    run_pipeline(pipeline, raise_on_failure=False, mode="bulk", report_dir=retry_dir, env=env_for(emulator_factory()),
                 retry=load_failed(tmp_path / "r1"))  # fmt: skip
    cut_after_request(retry_dir, 1)
    fresh = emulator_factory()
    doc = report_json(run_pipeline(pipeline, raise_on_failure=False, env=env_for(fresh), resume=ResumeSet(retry_dir)))
    assert set(applied_rows(fresh)) == failed
    assert doc["retry"]["rows"] == len(failed) and doc["rows"]["delivered"] == len(failed)
    assert doc["rows"]["read"] == len(failed) and doc["rows"]["possibly_duplicated"] == 10


def test_a_journal_that_cannot_be_written_stops_the_run_before_a_request_leaves(
    emulator: Any, tmp_path: Path
) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    from test_writer import make_pipeline, mapped_chunk

    from connector.delivery.client import BrazeClient
    from connector.delivery.journal import Journal
    from connector.delivery.outcomes import ABORT_JOURNAL
    from connector.delivery.ratelimit import RateLimiter
    from connector.delivery.writer import Writer
    from connector.errors import JournalError
    from connector.report import RunReport

    pipeline = make_pipeline("events", max_objects_per_request=5)
    report = RunReport("t", report_dir=tmp_path / "report")
    journal = Journal(tmp_path / "report" / JOURNAL_FILE, {"run_id": "r"})
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, journal._fd)  # the disk is full from now on
    os.close(full)
    client = BrazeClient(emulator.url, "test-key", write=pipeline.write,
                         limiter=RateLimiter.from_write(pipeline.write))  # fmt: skip
    writer = Writer(pipeline, client, report, mode="bulk", journal=journal)
    objects = [{"external_id": f"u{i}", "name": "e", "time": "2026-01-01T00:00:00Z"} for i in range(20)]
    writer.submit(pipeline.streams[0], mapped_chunk("events", objects))
    with pytest.raises(JournalError, match="cannot be written"):
        writer.close()
    client.close()
    journal.close()
    assert emulator.ledger() == []  # nothing left without its record on disk
    assert writer.abort_reason == ABORT_JOURNAL and report.rows["skipped"] == 20 and report.not_sent == 20


def test_a_run_whose_failed_rows_a_retry_run_resent_is_not_resumed(tmp_path: Path) -> None:
    """--retry-failed marks the run it resends; --resume of that run would send those rows a second time."""
    from connector.delivery.resume import mark_retried

    (tmp_path / "run").mkdir()
    mark_retried(tmp_path / "run" / "failed.csv", "started 2026-01-01T00:00:00Z, pid 1")
    with pytest.raises(ConfigError, match="already sent this run's failed rows again"):
        ResumeSet(tmp_path / "run")


def test_rows_rejected_before_the_interruption_are_carried_over_with_their_reasons(
    emulator_factory: Any, tmp_path: Path
) -> None:
    """The journal keeps the rows the run's own checks rejected: a resumed run counts them as carried over (as
    it does delivered and failed rows), once each, with their rule, reason and values, within the totals."""
    write_events(tmp_path / "data" / "events.parquet", ROWS, bad_every=10)  # 20 events without a time
    pipeline = project(tmp_path, [events_stream()], write={"retry": FAST_RETRY, "max_objects_per_request": 10,
                                                           "concurrency": 1})  # fmt: skip
    run_dir = tmp_path / "run"
    run_pipeline(pipeline, raise_on_failure=False, mode="bulk", report_dir=run_dir, env=env_for(emulator_factory()))
    cut_after_request(run_dir, 8)
    doc = report_json(run_pipeline(pipeline, raise_on_failure=False, env=env_for(emulator_factory()),
                                   resume=ResumeSet(run_dir)))  # fmt: skip
    assert doc["invariant_ok"] is True and doc["rows"]["delivered"] == ROWS - 20 and doc["rows"]["rejected"] == 20
    assert doc["resume"]["carried"] == {"delivered": 70, "rejected": 20, "failed": 0, "unknown": 0}
    assert sum(doc["rejects"]["by_rule"].values()) == 20
    rejects = pq.read_table(doc["rejects"]["file"]).to_pylist()
    assert sorted(int(r["_row_number"]) for r in rejects) == list(range(1, ROWS + 1, 10))  # each once
    assert all(r["user_id"] and r["_rule"] and r["_reason"] for r in rejects)  # rule, reason and values


def cut_once_delivered(run_dir: Path, stream: str) -> None:
    """Keep the journal up to the last answer to a request of `stream` (and the record that it was read to its
    end), without the answers to the other streams' requests: as a kill -9 then would leave it."""
    path = run_dir / JOURNAL_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    records = read_journal(path).records
    files = {r["i"]: r["stream"] for r in records if isinstance(r, dict) and r.get("k") == "file"}
    ours = {r[1] for r in records if isinstance(r, list) and r[0] == "s" and files[r[2]] == stream}
    cut = max(i for i, r in enumerate(records) if (isinstance(r, list) and r[0] == "d" and r[1] in ours)
              or (isinstance(r, dict) and r.get("k") == "read" and r["stream"] == stream))  # fmt: skip
    lost = [i for i, r in enumerate(records) if isinstance(r, list) and r[0] == "d" and r[1] not in ours]
    path.write_bytes(b"".join(line for i, line in enumerate(lines[: cut + 1]) if i not in lost))


def test_a_changed_file_of_a_stream_every_row_of_which_had_its_outcome_does_not_stop_a_resume(
    emulator_factory: Any, tmp_path: Path
) -> None:
    """Interrupted on its second stream (users), the run had delivered or rejected every event: tonight's events
    export replacing the file does not refuse the resume, which carries the events over without reading them
    (nothing resent) and finishes users. A changed file of a stream still to read is refused, naming both."""
    write_events(tmp_path / "data" / "events.parquet", ROWS, bad_every=10)
    pipeline = project(tmp_path, [events_stream(), users_stream()],
                       write={"retry": FAST_RETRY, "max_objects_per_request": 10, "concurrency": 1})  # fmt: skip
    run_dir = tmp_path / "run"
    run_pipeline(pipeline, raise_on_failure=False, mode="bulk", report_dir=run_dir, env=env_for(emulator_factory()))
    cut_once_delivered(run_dir, "events")
    journaled = sum(len(r[2]) for r in read_journal(run_dir / JOURNAL_FILE).records if isinstance(r, list) and r[0] == "r")
    assert journaled >= 20  # the events' rejects, and those of users the run got to
    users_csv = tmp_path / "data" / "users.csv"
    kept = users_csv.read_bytes(), users_csv.stat()
    users_csv.write_bytes(kept[0] + b"u9,z@example.com,Zed,9\n")
    with pytest.raises(SourceError, match=r"users\.csv \(stream users\) changed since run .* stream users still has rows"):
        run_pipeline(pipeline, raise_on_failure=False, env=env_for(emulator_factory()), resume=ResumeSet(run_dir))
    users_csv.write_bytes(kept[0])
    os.utime(users_csv, ns=(kept[1].st_atime_ns, kept[1].st_mtime_ns))  # restored, as with cp -p
    write_events(tmp_path / "data" / "events.parquet", ROWS + 5)  # tonight's export replaced the events file
    fresh = emulator_factory()
    doc = report_json(run_pipeline(pipeline, raise_on_failure=False, env=env_for(fresh), resume=ResumeSet(run_dir)))
    assert not applied_rows(fresh), "events already delivered were sent again"
    assert doc["invariant_ok"] is True and doc["rows"]["read"] == ROWS + 6
    assert [(s["name"], s["delivered"], s["rejected"]) for s in doc["streams"]] == [("events", ROWS - 20, 20),
                                                                                     ("users", 3, 3)]
    assert doc["resume"]["carried"]["delivered"] == ROWS - 20 and doc["resume"]["carried"]["rejected"] == journaled
    [w] = [w for w in doc["warnings"] if "not read again" in w]
    assert "events.parquet (stream events) changed since run" in w and "(180 delivered, 20 rejected)" in w
    assert len(csv_rows(run_dir / "rejects.csv")) == 23  # the events' 20 by file, row and rule; users' 3 whole
    # Resumed again: the new events file is still not the one the journal's row numbers name.
    again = report_json(run_pipeline(pipeline, raise_on_failure=False, env=env_for(fresh), resume=ResumeSet(run_dir)))
    assert not applied_rows(fresh) and again["streams"] == doc["streams"] and again["requests"]["total"] == 0
    assert [w for w in again["warnings"] if "not read again" in w]

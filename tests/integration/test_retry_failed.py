"""Retry runs: a later run sends again exactly the rows an earlier run left in failed.csv.

The first run talks to an emulator that fails (503 on every request, or connections dropped after the
request was applied); the retry run talks to a healthy one. Each run's rows add up, the retry sends only
the failed rows (with their original file and row numbers), and rows whose outcome is unknown are resent
only when asked.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cli_invoke import invoke
from test_pipeline_run import (
    FAST_RETRY,
    applied_by_identifier,
    env_for,
    events_stream,
    project,
    report_json,
    users_stream,
    write_events,
)

from connector.config import Pipeline
from connector.errors import SourceError
from connector.pipeline import run_pipeline as _run_pipeline
from connector.readers import load_failed
from connector.report import RunReport

pytestmark = pytest.mark.timeout(180)


def run_pipeline(pipeline: Pipeline, *args: Any, **kwargs: Any) -> RunReport:
    """These tests read the reports of runs that fail on purpose: no RunFailed. A bulk run with the default
    transport sends through aiohttp on a thread of this process: the same HTTP code as the default's child
    process, which is not what these tests are about (test_transport_process.py tests it) and costs a Python
    start per run."""
    if kwargs.get("mode") == "bulk" and pipeline.write.transport == "auto":
        pipeline = pipeline.model_copy(update={"write": pipeline.write.model_copy(update={"transport": "aiohttp"})})
    return _run_pipeline(pipeline, *args, raise_on_failure=False, **kwargs)


def failed_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_a_retry_run_sends_exactly_the_failed_rows(emulator_factory: Any, tmp_path: Path) -> None:
    write_events(tmp_path / "data" / "events.parquet", 120)
    pipeline = project(tmp_path, [users_stream(), events_stream()],
                       write={"retry": FAST_RETRY, "max_objects_per_request": 10})  # fmt: skip
    down = emulator_factory(faults={"503": 1.0})
    first = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r1", env=env_for(down))
    doc1 = report_json(first)
    assert doc1["exit_code"] == 1 and doc1["rows"]["failed"] == 3 + 120 and doc1["rows"]["delivered"] == 0
    failed = failed_rows(first.failed.path)
    assert len(failed) == 123

    up = emulator_factory()
    retry = load_failed(tmp_path / "r1")  # the report folder works as well as the file
    second = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r2", env=env_for(up), retry=retry)
    doc2 = report_json(second)
    assert doc2["exit_code"] == 0 and doc2["invariant_ok"] is True
    assert doc2["rows"] == {"read": 123, "delivered": 123, "rejected": 0, "failed": 0, "skipped": 0, "valid": 123,
                           "possibly_duplicated": 0}  # fmt: skip
    assert doc2["retry"]["rows"] == 123 and doc2["retry"]["unknown_outcome_excluded"] == 0
    applied = applied_by_identifier(up)
    assert sum(n for (array, _), n in applied.items() if array == "attributes") == 3
    assert sum(n for (array, _), n in applied.items() if array == "events") == 120
    assert all(n == 1 for (array, _), n in applied.items() if array == "attributes")


def test_a_retry_run_skips_rows_already_rejected_and_keeps_their_row_numbers(
    emulator_factory: Any, tmp_path: Path
) -> None:
    """Only the failed rows are read back: the first run's rejects are not read again, row numbers stay."""
    pipeline = project(tmp_path, [users_stream()], write={"retry": FAST_RETRY})
    down = emulator_factory(faults={"503": 1.0})
    first = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r1", env=env_for(down))
    assert {int(r["_row_number"]) for r in failed_rows(first.failed.path)} == {2, 6, 7}  # u1, u5, u6

    up = emulator_factory()
    second = run_pipeline(pipeline, mode="sync", report_dir=tmp_path / "r2", env=env_for(up),
                          retry=load_failed(first.failed.path))  # fmt: skip
    doc2 = report_json(second)
    assert doc2["rows"]["read"] == 3 and doc2["rows"]["rejected"] == 0 and doc2["rows"]["delivered"] == 3
    assert {k for (_a, k) in applied_by_identifier(up)} == {"u1", "u5", "u6"}


def test_unknown_outcomes_are_resent_only_when_asked(emulator_factory: Any, tmp_path: Path) -> None:
    """Dropped connections after Braze applied the request: with on_ambiguous fail, events are not resent."""
    write_events(tmp_path / "data" / "events.parquet", 60)
    pipeline = project(tmp_path, [events_stream()], write={
        "retry": FAST_RETRY, "on_ambiguous": "fail", "max_objects_per_request": 10})  # fmt: skip
    flaky = emulator_factory(faults={"drop": 1.0})
    first = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r1", env=env_for(flaky))
    outcomes = Counter(r["_outcome"] for r in failed_rows(first.failed.path))
    assert outcomes == {"unknown": 60}
    from connector.cli import _summary

    said = "\n".join(_summary(first, {}))  # the whole command (an upload's points at its folder's pipeline.yaml)
    assert f"then send them again with braze-connector run {pipeline.file} --retry-failed {first.failed.path} " \
           "--include-unknown" in said  # fmt: skip

    up = emulator_factory()
    cautious = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r2", env=env_for(up),
                            retry=load_failed(first.failed.path))  # fmt: skip
    doc = report_json(cautious)
    assert doc["rows"]["read"] == 0 and doc["retry"]["unknown_outcome_excluded"] == 60
    assert doc["exit_code"] == 1  # it sent nothing and left 60 rows behind: not a success
    assert doc["exit_meaning"] == (f"60 failed row(s) of {first.failed.path} left out of this retry: 60 of outcome "
                                   "unknown (add --include-unknown to send them)")  # fmt: skip
    assert any("--include-unknown" in w for w in doc["warnings"])
    assert not up.ledger()

    bold = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r3", env=env_for(up),
                        retry=load_failed(first.failed.path, include_unknown=True))  # fmt: skip
    assert report_json(bold)["rows"]["delivered"] == 60


def test_failed_rows_missing_from_a_replaced_source_are_reported(emulator_factory: Any, tmp_path: Path) -> None:
    write_events(tmp_path / "data" / "events.parquet", 40)
    pipeline = project(tmp_path, [events_stream()], write={"retry": FAST_RETRY, "max_objects_per_request": 10})
    first = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r1",
                         env=env_for(emulator_factory(faults={"503": 1.0})))  # fmt: skip
    assert report_json(first)["rows"]["failed"] == 40
    write_events(tmp_path / "data" / "events.parquet", 25)  # the nightly export was replaced, shorter
    second = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r2", env=env_for(emulator_factory()),
                          retry=load_failed(first.failed.path))  # fmt: skip
    doc = report_json(second)
    assert doc["rows"]["delivered"] == 25 and doc["exit_code"] == 1
    assert any("15 failed row(s)" in w and "not in the file any more" in w for w in doc["warnings"])


def test_not_a_failed_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(SourceError, match="not a failed file"):
        load_failed(tmp_path / "x.csv")
    with pytest.raises(SourceError, match="no failed file here"):
        load_failed(tmp_path / "nothing")


def test_cli_retry_failed(emulator_factory: Any, tmp_path: Path) -> None:
    pipeline = project(tmp_path, [users_stream()], write={"retry": FAST_RETRY})
    first = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r1",
                         env=env_for(emulator_factory(faults={"503": 1.0})))  # fmt: skip
    up = emulator_factory()
    cmd = [sys.executable, "-m", "connector", "run", str(tmp_path / "pipelines" / "t.yaml"), "--quiet",
           "--retry-failed", str(tmp_path / "r1"), "--report-dir", str(tmp_path / "r2")]  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", **env_for(up)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"retry of {first.failed.path}: 3 row(s) listed there (failed or not sent) sent" in res.stdout
    bad = invoke(*cmd[3:5], "--include-unknown", cwd=tmp_path)  # a usage error: in-process (tests/cli_invoke.py)
    assert bad.exit_code == 2 and "--include-unknown goes with --retry-failed" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_retry_failed_of_a_killed_run_points_to_resume(tmp_path: Path) -> None:
    """A killed run (kill -9) wrote its journal but no report nor failed file: --retry-failed of it says so
    and gives the --resume command that finishes it, instead of "no failed file here"."""
    project(tmp_path, [users_stream()])
    killed = tmp_path / "reports" / "killed"
    killed.mkdir(parents=True)
    (killed / "journal.log").write_text("", encoding="utf-8")
    for given in ("reports/killed", "reports/killed/failed.csv"):
        res = invoke("run", "pipelines/t.yaml", "--retry-failed", given, cwd=tmp_path)
        assert res.exit_code == 2, res.output
        assert "that run did not finish" in res.stderr and "Traceback" not in res.stderr
        assert "finish it with braze-connector run pipelines/t.yaml --resume reports/killed" in res.stderr


def test_resume_after_an_outage_applies_every_row_once(emulator_factory: Any, tmp_path: Path) -> None:
    """Braze goes away mid-run (exit 3): the rows not yet processed are listed as not_sent, and a retry run
    against a healthy Braze sends exactly what is missing; each event is applied once, never twice."""
    import threading
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 1500
    (tmp_path / "data").mkdir(exist_ok=True)
    pq.write_table(pa.table({"user_id": [f"r{i}" for i in range(n)], "event": ["played"] * n,
                             "ts": ["2026-01-02T10:00:00Z"] * n, "score": list(range(n))}),
                   tmp_path / "data" / "events.parquet")  # fmt: skip
    stream = events_stream()
    stream["source"]["chunk_rows"] = 100
    pipeline = project(tmp_path, [stream], write={"retry": FAST_RETRY, "max_objects_per_request": 10,
                                                   "concurrency": 2, "on_ambiguous": "fail"})  # fmt: skip
    db = str(tmp_path / "braze.sqlite")
    first_em = emulator_factory(latency_ms=5, db=db)

    def outage() -> None:
        while first_em.stats()["requests"].get("/users/track", {}).get("201", 0) < 20:
            time.sleep(0.01)
        first_em.stop()

    t = threading.Thread(target=outage)
    t.start()
    first = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r1", env=env_for(first_em))
    t.join(timeout=30)
    doc1 = report_json(first)
    assert doc1["exit_code"] == 3 and doc1["invariant_ok"] is True and doc1["rows"]["read"] == n
    assert doc1["failed"]["not_sent"] > 0 and doc1["rows"]["delivered"] > 0
    outcome = {int(r["_row_number"]): r["_outcome"] for r in failed_rows(first.failed.path)}
    first_ledger = emulator_factory(db=db).ledger()  # what the first Braze applied before it went away

    second_em = emulator_factory()
    second = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r2", env=env_for(second_em),
                          retry=load_failed(tmp_path / "r1"))  # fmt: skip
    doc2 = report_json(second)
    unknown = {row for row, o in outcome.items() if o == "unknown"}
    assert doc2["exit_code"] == (1 if unknown else 0)  # unknown rows left out: the retry is not a success
    assert doc2["rows"]["delivered"] == len(outcome) - len(unknown)

    applied: Counter[str] = Counter()
    for ledger in (first_ledger, second_em.ledger()):
        for entry in ledger:
            for a in entry["applied"]:
                applied[a["identifier"]["external_id"]] += 1
    # every row applied exactly once, except rows whose outcome is unknown: at most once, and reported
    for i in range(n):
        row = i + 1  # Parquet rows are numbered from 1
        if row in unknown:
            assert applied[f"r{i}"] <= 1
        else:
            assert applied[f"r{i}"] == 1, (i, outcome.get(row))


def test_a_moved_project_still_retries_and_unmatched_rows_fail_the_run(emulator_factory: Any, tmp_path: Path) -> None:
    import shutil

    from connector import load_pipeline

    (tmp_path / "a").mkdir()
    project(tmp_path / "a", [users_stream()], write={"retry": FAST_RETRY})
    pipeline = load_pipeline(tmp_path / "a" / "pipelines" / "t.yaml")
    first = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r1",
                         env=env_for(emulator_factory(faults={"503": 1.0})))  # fmt: skip
    assert report_json(first)["rows"]["failed"] == 3
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the project moved (another checkout, another box)
    moved = load_pipeline(tmp_path / "b" / "pipelines" / "t.yaml")
    up = emulator_factory()
    doc = report_json(run_pipeline(moved, mode="bulk", report_dir=tmp_path / "r2", env=env_for(up),
                                   retry=load_failed(tmp_path / "r1")))  # fmt: skip
    assert doc["exit_code"] == 0 and doc["rows"]["delivered"] == 3

    (tmp_path / "c").mkdir()
    other = project(tmp_path / "c", [{**users_stream("data/people.csv"), "name": "people"}])
    (tmp_path / "c" / "data" / "people.csv").write_text("user_id,email,first_name,age\n", encoding="utf-8")
    doc = report_json(run_pipeline(other, mode="bulk", report_dir=tmp_path / "r3", env=env_for(up),
                                   retry=load_failed(tmp_path / "r1")))  # fmt: skip
    assert doc["exit_code"] == 1 and doc["rows"]["read"] == 0
    assert any("3 failed row(s)" in w and "belong to no stream" in w for w in doc["warnings"])


def test_a_retry_resends_a_shared_files_rows_only_in_the_stream_that_failed(
    emulator_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One CSV feeds an events stream (delivered) and an attributes stream (failed: Braze went away between
    them). The retry sends the two attribute rows, never the events again."""
    import time

    from connector import stages as stages_module

    csv_text = "user_id,email,event,ts\nu1,a@example.com,signed_up,2026-01-01T10:00:00Z\n" \
               "u2,b@example.com,signed_up,2026-01-01T10:00:00Z\n"  # fmt: skip
    events = {"name": "ev", "source": {"path": "data/u.csv"}, "kind": "events", "identifier": {"external_id": "user_id"},
              "event": {"name": "event", "time": {"column": "ts", "type": "time"}}}  # fmt: skip
    attributes = {"name": "at", "source": {"path": "data/u.csv"}, "kind": "attributes",
                  "identifier": {"external_id": "user_id"}, "attributes": [{"column": "email"}]}  # fmt: skip
    pipeline = project(tmp_path, [events, attributes], write={"retry": FAST_RETRY})
    (tmp_path / "data" / "u.csv").write_text(csv_text, encoding="utf-8")
    first_em = emulator_factory()
    original = stages_module.Run.stream

    def stream_then_outage(self: Any, plan: Any) -> None:
        original(self, plan)
        if plan.stream.name == "ev":
            time.sleep(1.0)  # the events are answered; then Braze goes away
            first_em.stop()

    monkeypatch.setattr(stages_module.Run, "stream", stream_then_outage)
    first = report_json(run_pipeline(pipeline, mode="sync", report_dir=tmp_path / "r1", env=env_for(first_em)))
    monkeypatch.setattr(stages_module.Run, "stream", original)
    assert [(s["name"], s["delivered"], s["failed"]) for s in first["streams"]] == [("ev", 2, 0), ("at", 0, 2)]
    assert {r["_stream"] for r in failed_rows(tmp_path / "r1" / "failed.csv")} == {"at"}

    up = emulator_factory()
    second = report_json(run_pipeline(pipeline, mode="sync", report_dir=tmp_path / "r2", env=env_for(up),
                                      retry=load_failed(tmp_path / "r1")))  # fmt: skip
    assert second["rows"]["read"] == 2 and second["rows"]["delivered"] == 2
    assert applied_by_identifier(up) == Counter({("attributes", "u1"): 1, ("attributes", "u2"): 1})


def test_a_retry_reads_back_a_failed_file_whose_cells_were_escaped(
    emulator_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """failed.csv neutralises cells a spreadsheet would run: here the file, the stream and the values start
    with '=', '-' or '@'. The retry run still finds those rows, in that file and stream."""
    from connector.config import Pipeline

    monkeypatch.chdir(tmp_path)
    Path("=users.csv").write_text("user_id,note\n-u1,=1+1\nu2,@SUM(A1)\n", encoding="utf-8")
    stream = {"name": "=users", "source": {"path": "=users.csv"}, "kind": "attributes",
              "identifier": {"external_id": "user_id"}, "attributes": [{"column": "note"}]}  # fmt: skip
    pipeline = Pipeline.model_validate({"name": "t", "streams": [stream], "write": {"retry": FAST_RETRY}})
    down = emulator_factory(faults={"503": 1.0})
    first = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r1", env=env_for(down))
    rows = failed_rows(first.failed.path)
    assert [(r["user_id"], r["note"], r["_source_file"], r["_stream"]) for r in rows] == [
        ("'-u1", "'=1+1", "'=users.csv", "'=users"),
        ("u2", "'@SUM(A1)", "'=users.csv", "'=users"),
    ]
    up = emulator_factory()
    second = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r2", env=env_for(up),
                          retry=load_failed(first.failed.path))  # fmt: skip
    doc = report_json(second)
    assert doc["exit_code"] == 0 and doc["rows"]["delivered"] == 2 and doc["warnings"] == []
    assert up.user("external_id", "-u1")["attributes"]["note"] == "=1+1"  # the source's value, unescaped


def test_the_summary_says_what_unknown_rows_are_and_a_retry_leaving_them_does_not_exit_0(
    emulator_factory: Any, tmp_path: Path
) -> None:
    """Braze was down for a while (connections dropped after sending): the rows are unknown. The CLI says how
    many and what to do; a retry without --include-unknown leaves them and exits 1, with it exits 0."""
    write_events(tmp_path / "data" / "events.parquet", 30)
    project(tmp_path, [events_stream()], write={"retry": FAST_RETRY, "on_ambiguous": "fail",
                                                 "max_objects_per_request": 10})  # fmt: skip
    yaml_file = str(tmp_path / "pipelines" / "t.yaml")

    def cli(server: Any, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "connector", "run", yaml_file, "--quiet", "--mode", "bulk", *args]
        env = {"PATH": "/usr/bin:/bin", **env_for(server)}
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)

    first = cli(emulator_factory(faults={"drop": 1.0}), "--report-dir", str(tmp_path / "r1"))
    failed_csv = tmp_path / "r1" / "failed.csv"
    assert first.returncode == 1, first.stderr
    assert "unknown: 30 failed row(s) may or may not have been applied by Braze" in first.stdout
    assert f"--retry-failed {failed_csv} --include-unknown" in first.stdout

    up = emulator_factory()
    cautious = cli(up, "--retry-failed", str(failed_csv), "--report-dir", str(tmp_path / "r2"))
    assert cautious.returncode == 1, cautious.stdout
    assert "30 row(s) with outcome 'unknown'" in cautious.stdout and "--include-unknown" in cautious.stdout
    assert not up.ledger()
    bold = cli(up, "--retry-failed", str(failed_csv), "--include-unknown", "--report-dir", str(tmp_path / "r3"))
    assert bold.returncode == 0, bold.stdout
    assert "unknown:" not in bold.stdout

"""Run history: one JSON line per run beside the reports; `braze-connector history` lists the last runs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_invoke import invoke

from connector import load_pipeline, run_pipeline
from connector.report.history import history_lines, history_path, read_history, recent_runs

pytestmark = pytest.mark.timeout(120)

CSV = "user_id,email,age\nu1,ann@example.com,31\nu2,bob@example.com,x\nu3,not-an-email,40\n"


@pytest.fixture
def project(make_project: Callable[..., Path]) -> Callable[..., Path]:
    def make(root: Path | None = None, **report: object) -> Path:
        return make_project(root, name="hist", csv=CSV, max_reject_fraction=0.9, **report,
                            attributes=[{"column": "email"}, {"column": "age", "type": "integer"}])  # fmt: skip

    return make


@pytest.fixture(autouse=True)
def _configured_history(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRAZE_CONNECTOR_HISTORY")  # these tests follow report.history (conftest sets it)


def test_each_run_appends_its_summary_beside_the_reports(tmp_path: Path, project: Callable[..., Path]) -> None:
    p = load_pipeline(project())
    path = history_path(p)
    assert path == tmp_path / "reports" / "hist" / "history.jsonl"
    first = run_pipeline(p, validate_only=True, env={})
    second = run_pipeline(p, dry_run=True, env={})
    assert first.report_dir.parent == path.parent  # the default report.dir: run folders beside the history
    entries = read_history(path)
    assert [e["run_id"] for e in entries] == [first.run_id, second.run_id]
    assert [e["kind"] for e in entries] == ["validate", "dry_run"]
    e = entries[0]
    assert e["rows"] == {"read": 3, "delivered": 0, "rejected": 2, "failed": 0, "skipped": 1}
    assert e["exit_code"] == 0 and e["rejects_by_stage"] == {"mapping": 1, "contract": 1}
    assert e["report_dir"] == str(first.report_dir) and e["requests"] == 0 and e["rate_limited"] == 0
    assert read_history(path, last=1) == entries[-1:]


def test_each_partition_has_its_own_trend(tmp_path: Path, project: Callable[..., Path]) -> None:
    """Runs with --partition record it; a run's trend shows the earlier runs of its own partition only (the
    whole pipeline's runs, and lines written before the partition was recorded, go with unpartitioned runs)."""
    from connector.readers.partition import Partition

    p = load_pipeline(project())
    path = history_path(p)
    assert path is not None
    path.parent.mkdir(parents=True)
    path.write_text('{"run_id": "old", "rows": {"read": 7}}\n', encoding="utf-8")  # no partition key
    runs = {}
    for name, part in [("whole", None), ("p1a", Partition(1, 2)), ("p2a", Partition(2, 2)), ("p1b", Partition(1, 2)),
                       ("whole2", None)]:  # fmt: skip
        runs[name] = run_pipeline(p, dry_run=True, env={}, partition=part)
    entries = read_history(path)
    assert [e.get("partition") for e in entries] == [None, None, "1/2", "2/2", "1/2", None]
    assert [e["run_id"] for e in runs["p1b"].recent_runs] == [runs["p1a"].run_id]
    assert runs["p2a"].recent_runs == []
    assert [e["run_id"] for e in runs["whole2"].recent_runs] == ["old", runs["whole"].run_id]
    assert [e["run_id"] for e in read_history(path, partition="1/2")] == [runs["p1a"].run_id, runs["p1b"].run_id]
    html = (runs["p1b"].report_dir / "report.html").read_text(encoding="utf-8")
    assert "<h2>Last runs of partition 1/2 (2)</h2>" in html
    empty = (runs["p2a"].report_dir / "report.html").read_text(encoding="utf-8")
    assert "No earlier runs of partition 2/2 in the history yet" in empty
    assert "<h2>Last runs (3)</h2>" in (runs["whole2"].report_dir / "report.html").read_text(encoding="utf-8")


def test_a_torn_line_is_skipped_and_history_can_be_off(tmp_path: Path, project: Callable[..., Path]) -> None:
    p = load_pipeline(project())
    path = history_path(p)
    assert path is not None
    path.parent.mkdir(parents=True)
    path.write_text('{"run_id": "old", "rows": {}}\n{"run_id": "torn", "ro', encoding="utf-8")
    with path.open("a", encoding="utf-8") as fh:
        fh.write("\n")
    run_pipeline(p, validate_only=True, env={})
    assert [e["run_id"] for e in read_history(path)][0] == "old" and len(read_history(path)) == 2
    off = load_pipeline(project(tmp_path / "off", history=None))
    assert history_path(off) is None
    run_pipeline(off, validate_only=True, env={})
    assert not list((tmp_path / "off").rglob("history.jsonl"))
    assert history_path(p, {"BRAZE_CONNECTOR_HISTORY": "off"}) is None
    assert history_path(off, {"BRAZE_CONNECTOR_HISTORY": "/x/h.jsonl"}) == Path("/x/h.jsonl")


def test_the_table_fits_80_columns() -> None:
    entries = [{"started_at": "2024-05-01T12:00:00.123456Z", "kind": "dry_run", "exit_code": 1, "duration_s": 4000.2,
                "rows": {"read": 123_456_789, "delivered": 123_456_789, "rejected": 12_345_678, "failed": 1_234_567},
                "rate_limited": 12_345, "partition": "12/16"},
               {"started_at": "2024-05-02T12:00:00Z", "kind": "validate", "exit_code": 0, "duration_s": 3599,
                "rows": {"read": 9_999_999, "delivered": 99_999_999, "rejected": 9_999_999, "failed": 999_999},
                "rate_limited": 9_999},
               {"started_at": "2024-05-03T12:00:00Z", "kind": "run", "status": "running", "pid": 4_194_304,
                "host": "a-rather-long-host-name.example.com", "partition": "10/16"},
               {"started_at": "2024-05-04T12:00:00Z", "kind": "run", "status": "interrupted", "pid": 4_194_304},
               {"started_at": "2024-05-05T12:00:00Z", "kind": "validate", "status": "error", "exit_code": 2}]  # fmt: skip
    lines = history_lines(entries)
    assert all(len(line) <= 80 for line in lines), [len(x) for x in lines]
    assert lines[0].split() == ["started", "(UTC)", "kind", "part", "exit", "read", "deliv.", "rejects", "failed",
                                "429s", "time"]  # fmt: skip
    assert lines[1].split() == ["2024-05-01", "12:00", "dry_run", "12/16", "1", "123.5M", "123.5M", "12.3M", "1.2M",
                                "12k", "1h06m"]  # fmt: skip
    assert lines[2].split()[3:] == ["-", "0", "10.0M", "100.0M", "10.0M", "1000k", "10k", "59m59s"]
    assert lines[3] == "2024-05-03 12:00 run      10/16    - running (pid 4194304 on a-rather-long-ho)"
    assert lines[4] == "2024-05-04 12:00 run      -        - interrupted (pid 4194304 gone, no report)"
    assert lines[5] == "2024-05-05 12:00 validate -        2 ended in an error, without a report"


def test_a_run_is_listed_from_its_start_and_its_end_line_takes_its_place(tmp_path: Path) -> None:
    """A run writes a start line (status running, pid) and an end line; a start line with no end is running
    while its process lives, interrupted once it is gone (kill -9). Lines of older versions still read."""
    from connector.processes import started_ticks, this_process

    me = this_process()
    path = tmp_path / "history.jsonl"
    lines = [
        {"run_id": "old", "rows": {"read": 7}, "exit_code": 0},  # an older version's line: finished
        {"run_id": "a", "status": "running", **me},
        {"run_id": "b", "status": "running", **me, "pid_started": (started_ticks(os.getpid()) or 0) + 1},  # pid reused
        {"run_id": "gone", "status": "running", "pid": 2**22 + 1, "host": me["host"]},  # no such process
        {"run_id": "c", "status": "running", **me, "partition": "1/2"},
        {"run_id": "a", "status": "finished", **me, "rows": {"read": 3}, "exit_code": 0},
        {"run_id": "a", "status": "running", "pid": 1, "host": me["host"]},  # resumed by another process
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    got = read_history(path)
    assert [(e["run_id"], e["status"]) for e in got] == [
        ("old", "finished"), ("a", "finished"), ("b", "interrupted"), ("gone", "interrupted"), ("c", "running"),
        ("a", "running")]  # fmt: skip
    assert got[1]["rows"] == {"read": 3}
    assert [e["run_id"] for e in read_history(path, last=2)] == ["c", "a"]
    assert [e["run_id"] for e in read_history(path, partition="1/2")] == ["c"]
    assert [e["run_id"] for e in recent_runs(path)] == ["old", "a"]  # the trend: runs with their counts
    assert [e["run_id"] for e in read_history(path, last=1, finished=True)] == ["a"]


def test_a_run_that_ends_in_an_exception_says_so(tmp_path: Path, project: Callable[..., Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A run that started (its start line written) and then raised writes an end line saying so."""
    import connector.pipeline
    from connector.errors import ConfigError

    p = load_pipeline(project())
    path = history_path(p)
    assert path is not None
    for error in (ConfigError("bad state"), KeyboardInterrupt()):

        def failing(*args: object, error: BaseException = error, **kw: object) -> None:
            assert read_history(path)[-1]["status"] == "running"  # type: ignore[arg-type]
            raise error

        monkeypatch.setattr(connector.pipeline, "open_state", failing)
        with pytest.raises(type(error)):
            run_pipeline(p, dry_run=True, env={})
    assert [(e["status"], e["exit_code"]) for e in read_history(path)] == [("error", 2), ("interrupted", None)]


def test_the_history_command(tmp_path: Path, project: Callable[..., Path]) -> None:
    path = project()

    def cli(*args: str) -> Any:  # in-process, without the BRAZE_* variables (so the pipeline's own history)
        return invoke(*args, cwd=tmp_path)

    assert cli("history", str(path)).stdout.startswith("no runs recorded yet in ")
    for _ in range(3):
        assert cli("validate", str(path), "--quiet").exit_code == 0
    res = cli("history", str(path), "--last", "2")
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("started (UTC)") and len(lines) == 4  # header, 2 runs, footer
    assert " validate " in lines[1] and lines[3].startswith("(2 run(s) from ")
    docs = [json.loads(x) for x in cli("history", str(path), "--json").stdout.splitlines()]
    assert len(docs) == 3 and all(d["pipeline"] == "hist" for d in docs)


def test_the_history_command_does_not_need_the_destinations_variables(tmp_path: Path,
                                                                      project: Callable[..., Path]) -> None:  # fmt: skip
    """Listing runs reads no destination: a ${VAR} the environment lacks there is not needed (the trial's
    `destination.url: ${EMU_URL}` made `history` fail); one in the pipeline's name still is, and says so."""
    path = project()
    text = path.read_text(encoding="utf-8")
    path.write_text(text + "destination: {url: '${HISTORY_TEST_UNSET_URL}'}\n", encoding="utf-8")
    res = invoke("history", str(path), cwd=tmp_path)
    assert res.exit_code == 0 and res.stdout.startswith("no runs recorded yet in "), res.stderr
    # a default elsewhere in the file still counts (${VAR:-default} is not taken for unset)
    defaulted = project(dir="${HISTORY_TEST_UNSET_DIR:-runs}")
    defaulted.write_text(defaulted.read_text(encoding="utf-8") + "destination: {url: '${HISTORY_TEST_UNSET_URL}'}\n",
                         encoding="utf-8")  # fmt: skip
    res = invoke("history", str(defaulted), cwd=tmp_path)
    assert res.exit_code == 0 and res.stdout.startswith("no runs recorded yet in "), res.stderr
    assert "runs" in res.stdout and "unset-variable" not in res.stdout, res.stdout
    path.write_text(text.replace("name: hist", "name: ${HISTORY_TEST_UNSET_NAME}"), encoding="utf-8")
    res = invoke("history", str(path), cwd=tmp_path)
    assert res.exit_code == 2 and "environment variable HISTORY_TEST_UNSET_NAME is not set" in res.stderr

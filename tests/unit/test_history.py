"""Run history: one JSON line per run beside the reports; `braze-connector history` lists the last runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_invoke import invoke

from connector import load_pipeline, run_pipeline
from connector.report.history import history_lines, history_path, read_history

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
                "rate_limited": 12_345}]  # fmt: skip
    lines = history_lines(entries)
    assert all(len(line) <= 80 for line in lines), [len(x) for x in lines]
    assert lines[1].split() == ["2024-05-01", "12:00", "dry_run", "1", "123.5M", "123.5M", "12.3M", "1.2M",
                                "12.3k", "1h06m"]  # fmt: skip


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

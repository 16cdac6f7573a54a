"""report merge: the partitions' reports add up to the whole run's, the invariant holds, and bad sets are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connector.cli import app
from connector.config import load_pipeline
from connector.errors import ConfigError
from connector.pipeline import run_pipeline
from connector.readers.partition import Partition
from connector.report.merge import load_report, merge_reports, write_merged

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "pipelines" / "quickstart.yaml"
# One worker for the module (--dist loadgroup): the `runs` fixture's four runs once, not once per worker.
pytestmark = pytest.mark.xdist_group("report_merge")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The quickstart pipeline delivered (embedded emulator) whole and in three partitions."""
    tmp = tmp_path_factory.mktemp("runs")
    pipeline = load_pipeline(QUICKSTART)
    # Its run lock beside reports of its own, not in the repository's reports/quickstart/, which
    # test_pipeline_samples.py's quickstart run may hold at the same time on another xdist worker.
    pipeline = pipeline.model_copy(update={"report": pipeline.report.model_copy(update={"dir": str(tmp / "{run_id}")})})
    whole = run_pipeline(pipeline, report_dir=tmp / "whole").to_dict()
    parts = [run_pipeline(pipeline, report_dir=tmp / "{partition}", partition=Partition(k, 3)).to_dict()
             for k in (1, 2, 3)]  # fmt: skip
    return {"tmp": tmp, "whole": whole, "parts": parts, "dirs": [tmp / f"p{k}of3" for k in (1, 2, 3)]}


def test_each_partition_records_itself_and_counts_only_its_rows(runs: dict[str, Any]) -> None:
    for k, doc in enumerate(runs["parts"], start=1):
        assert doc["partition"]["k"] == k and doc["partition"]["n"] == 3
        assert set(doc["partition"]["by"].values()) == {"identifier"}  # one file per stream
        assert doc["run_id"].endswith(f"-p{k}of3") and doc["invariant_ok"]
        assert 0 < doc["rows"]["read"] < runs["whole"]["rows"]["read"]


def test_merged_counts_are_the_sums_and_equal_the_whole_run(runs: dict[str, Any]) -> None:
    doc, out = write_merged(runs["dirs"])
    assert out == runs["tmp"] / "merged"
    assert (out / "report.json").is_file() and "Partitions" in (out / "report.html").read_text()
    whole = runs["whole"]
    assert doc["rows"] == whole["rows"]  # every row in exactly one partition
    assert doc["invariant_ok"] is True and doc["exit_code"] == 0
    assert doc["rejects"]["by_rule"] == whole["rejects"]["by_rule"]
    assert doc["requests"]["by_endpoint"]["users_track"]["objects"] == whole["requests"]["by_endpoint"]["users_track"]["objects"]
    assert doc["requests"]["total"] == sum(p["requests"]["total"] for p in runs["parts"])
    # One engine sent every part, so the merged report names it once.
    assert {p["requests"]["http_engine"] for p in runs["parts"]} == {whole["requests"]["http_engine"]}
    assert doc["requests"]["http_engine"] == whole["requests"]["http_engine"] is not None
    assert [s["read"] for s in doc["streams"]] == [s["read"] for s in whole["streams"]]
    assert sum(p[1] for p in doc["throughput"]["timeline"]) == sum(p["rows"]["delivered"] for p in runs["parts"])
    assert doc["partition"] == {"n": 3, "k": [1, 2, 3], "missing": []}
    assert [p["partition"] for p in doc["partitions"]] == ["1/3", "2/3", "3/3"]
    assert json.loads((out / "report.json").read_text())["rows"] == whole["rows"]


def test_a_merged_report_is_never_overwritten_unless_asked(runs: dict[str, Any], tmp_path: Path) -> None:
    write_merged(runs["dirs"], tmp_path / "m")
    with pytest.raises(ConfigError, match="already holds a report; give another --out, or --overwrite"):
        write_merged(runs["dirs"][:2], tmp_path / "m")
    assert json.loads((tmp_path / "m" / "report.json").read_text())["partition"]["missing"] == []  # untouched
    doc, _ = write_merged(runs["dirs"][:2], tmp_path / "m", overwrite=True)
    assert json.loads((tmp_path / "m" / "report.json").read_text())["partition"]["missing"] == [3]


def test_a_subset_merges_with_a_warning(runs: dict[str, Any], tmp_path: Path) -> None:
    doc, _ = write_merged(runs["dirs"][:2], tmp_path / "two")
    assert doc["partition"]["missing"] == [3]
    assert doc["warnings"][0].startswith("partitions 3/3 are not in this merge")
    assert doc["invariant_ok"]


def test_refusals(runs: dict[str, Any], tmp_path: Path) -> None:
    docs = [load_report(d) for d in runs["dirs"]]
    with pytest.raises(ConfigError, match="appears twice"):
        merge_reports([docs[0], docs[1], dict(docs[0])], tmp_path)
    with pytest.raises(ConfigError, match="not a partitioned run"):
        merge_reports([docs[0], load_report(runs["tmp"] / "whole")], tmp_path)
    other = {**docs[1], "pipeline": "another"}
    with pytest.raises(ConfigError, match="different pipelines"):
        merge_reports([docs[0], other], tmp_path)
    four = {**docs[1], "partition": {**docs[1]["partition"], "n": 4}}
    with pytest.raises(ConfigError, match="3 and 4 ways"):
        merge_reports([docs[0], four], tmp_path)
    with pytest.raises(ConfigError, match="no report.json"):
        load_report(tmp_path)


def test_cli_report_merge(runs: dict[str, Any], tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["report", "merge", *map(str, runs["dirs"]), "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert "merged 3 of 3 partition(s) of quickstart" in res.output and "invariant holds" in res.output
    res = CliRunner().invoke(app, ["report", "merge", str(runs["dirs"][0]), str(runs["dirs"][0])])
    assert res.exit_code == 2 and "overlap" in res.output


def test_cli_partition_option_and_report_folder(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["run", str(QUICKSTART), "--partition", "5/4", "--dry-run"])
    assert res.exit_code == 2 and "K/N" in res.output
    res = CliRunner().invoke(app, ["run", str(QUICKSTART), "--partition", "1/2", "--dry-run", "--quiet",
                                   "--report-dir", str(tmp_path / "fixed")])  # fmt: skip
    assert res.exit_code == 2 and "{partition}" in res.output  # the partitions would share one folder
    res = CliRunner().invoke(app, ["run", str(QUICKSTART), "--partition", "1/2", "--dry-run", "--quiet",
                                   "--report-dir", str(tmp_path / "{partition}")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "p1of2" / "report.json").read_text())["partition"]["k"] == 1


def test_the_partitions_losses_of_a_failed_state_add_up() -> None:
    from connector.report.merge import _delta

    lost = {"users": 3, "events": 2, "purchases": 0, "stale_records": 1}
    docs = [{"delta": {"state_file": f"s{k}.sqlite", "not_recorded": None if k == 0 else {"cause": why, **lost}}}
            for k, why in enumerate(["", "the disk is full", "the disk is full"])]  # fmt: skip
    merged = _delta(docs)
    assert merged is not None and merged["state_files"] == ["s0.sqlite", "s1.sqlite", "s2.sqlite"]
    assert merged["not_recorded"] == {"cause": "the disk is full", "users": 6, "events": 4, "purchases": 0,
                                      "stale_records": 2}  # fmt: skip
    assert _delta(docs[:1])["not_recorded"] is None  # type: ignore[index]


def test_merged_exit_meaning_keeps_the_failing_parts_own_words(runs: dict[str, Any], tmp_path: Path) -> None:
    """A partition that exited 1 for a table check: the merge says so, not the general 'rows rejected' words."""
    parts = [load_report(d) for d in runs["dirs"]]
    cause = "table check failed (users: expect_table_row_count_to_be_between; see table_checks)"
    parts[1].update(exit_code=1, exit_meaning=cause)
    doc = merge_reports(parts, tmp_path)
    assert doc["exit_code"] == 1 and doc["exit_meaning"] == cause
    parts[2].update(exit_code=1, exit_meaning="rows rejected over the threshold, or rows not delivered")
    assert merge_reports(parts, tmp_path)["exit_meaning"] == cause + "; rows rejected over the threshold, or rows not delivered"

"""The spreadsheet formula escape of rejects.csv and failed.csv (connector/cells.py), and reading it back."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.cells import TRIGGERS, neutralise, restore
from connector.readers import load_failed
from connector.records import Failed, Rejected, RowRef
from connector.report import RunReport

HOSTILE = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "=cmd|' /C calc'!A0"]


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


@given(st.text(alphabet=st.sampled_from(["=", "+", "-", "@", "\t", "\r", "'", "a", " ", "1"]), max_size=6))
def test_escape_is_reversible_and_no_cell_starts_a_formula(cell: str) -> None:
    escaped = neutralise(cell)
    assert restore(escaped) == cell
    assert escaped[:1] not in TRIGGERS


def test_the_owasp_rule() -> None:
    assert [neutralise(c) for c in HOSTILE] == ["'" + c for c in HOSTILE]
    assert [neutralise(c) for c in ("plain", "1-2", "a=b", "", "'quoted", "3.5")] == [
        "plain", "1-2", "a=b", "", "'quoted", "3.5"
    ]  # fmt: skip
    assert neutralise("'=x") == "''=x"  # already looks escaped: one more quote, so it reads back as written


def _hostile_report(tmp_path: Path, **kwargs: object) -> RunReport:
    report = RunReport("p", report_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
    values = {"=evil header": "=1+1", "name": "@SUM(A1)", "n": "-5"}
    report.add_read(3)
    report.add_rejects([Rejected(RowRef("=f.csv", 2), "mapping", "cast.integer", "-bad", "n", values)])
    report.add_failed([Failed(RowRef("=f.csv", 3), "+HTTP 503", 503, "failed", values)], "@users")
    report.add_not_sent([(RowRef("=f.csv", 4), values)], "-aborted", "@users")
    report.finish()
    return report


def test_rejects_and_failed_csv_cells_and_headers_are_neutralised(tmp_path: Path) -> None:
    report = _hostile_report(tmp_path)
    rejects = _rows(report.rejects.path)
    assert rejects[0][:3] == ["'=evil header", "name", "n"]
    assert rejects[1][:3] == ["'=1+1", "'@SUM(A1)", "'-5"]
    assert rejects[1][3:] == ["'=f.csv", "2", "mapping", "cast.integer", "n", "'-bad"]
    failed = _rows(report.failed.path)
    assert failed[0][0] == "'=evil header"
    assert failed[1] == ["'=1+1", "'@SUM(A1)", "'-5", "'=f.csv", "3", "503", "failed", "'+HTTP 503", "'@users"]
    assert all(not c[:1] or c[0] not in TRIGGERS for row in rejects + failed for c in row)


def test_the_escape_can_be_turned_off(tmp_path: Path) -> None:
    report = _hostile_report(tmp_path, csv_formula_escape=False)
    assert _rows(report.rejects.path)[1][:3] == ["=1+1", "@SUM(A1)", "-5"]
    assert _rows(report.failed.path)[0][0] == "=evil header"


def test_parquet_rejects_are_unchanged(tmp_path: Path) -> None:
    report = RunReport("p", report_dir=tmp_path, source_format="parquet")
    report.add_read(1)
    report.add_rejects([Rejected(RowRef("t.parquet", 1), "mapping", "cast.time", "x", "ts", {"=h": "=1+1"})])
    report.finish()
    row = pq.read_table(report.rejects.path).to_pylist()[0]
    assert row["=h"] == "=1+1"


def test_a_retry_reads_escaped_files_and_streams_back_as_they_were(tmp_path: Path) -> None:
    report = _hostile_report(tmp_path)
    retry = load_failed(report.failed.path)
    assert retry.rows == {("@users", "=f.csv"): {3, 4}}
    assert retry.for_stream("@users") == {"=f.csv": {3, 4}}


def test_late_columns_rewrite_keeps_the_escape(tmp_path: Path) -> None:
    report = RunReport("p", report_dir=tmp_path)
    report.add_read(2)
    report.add_rejects([Rejected(RowRef("f.csv", 2), "mapping", "r", "x", None, {"a": "1"})])
    report.add_rejects([Rejected(RowRef("f.csv", 3), "mapping", "r", "x", None, {"a": "2", "+late": "=2"})])
    report.finish()
    rows = _rows(report.rejects.path)
    assert rows[0][:2] == ["a", "'+late"] and rows[2][:2] == ["2", "'=2"]


@pytest.mark.parametrize("cell", HOSTILE)
def test_restore_undoes_neutralise(cell: str) -> None:
    assert restore(neutralise(cell)) == cell


def test_a_long_raw_line_survives_the_late_column_rewrite(tmp_path: Path) -> None:
    import csv as csv_module

    csv_module.field_size_limit(1024)  # as the CSV reader may have left it
    report = RunReport("p", report_dir=tmp_path)
    report.add_read(2)
    report.add_rejects([Rejected(RowRef("f.csv", 2), "parse", "csv.column_count", "x", None, {"_raw": "y" * 5000})])
    report.add_rejects([Rejected(RowRef("f.csv", 3), "mapping", "r", "x", None, {"late": "1"})])
    report.finish()
    rows = _rows(report.rejects.path)
    assert rows[0][:2] == ["_raw", "late"] and len(rows[1][0]) == 5000

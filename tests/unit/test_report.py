"""Tests for connector.report (RunReport, sinks, report.json) and connector.report.html."""

from __future__ import annotations

import csv
import re
import threading
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from connector.errors import ConnectorError, SourceError
from connector.readers import load_failed
from connector.records import Failed, Rejected, RowRef
from connector.report import LatencyHistogram, ReportInvariantError, RunFailed, RunReport
from connector.report.html import render_html


class FakeClock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _rej(row: int, rule: str = "cast.integer", stage: str = "mapping", **values: str) -> Rejected:
    return Rejected(RowRef("people.csv", row), stage, rule, f"bad value in row {row}", "age", values)  # type: ignore[arg-type]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_counts_and_invariant_hold(tmp_path: Path) -> None:
    report = RunReport("p", report_dir=tmp_path / "r")
    report.add_read(10)
    report.add_delivered(6)
    report.add_rejects([_rej(2, id="a"), _rej(3, id="b")])
    report.add_failed([Failed(RowRef("people.csv", 4), "HTTP 503", 503)])
    report.add_skipped(1, "unchanged")
    report.finish()
    doc = report.to_dict()
    assert doc["rows"] == {"read": 10, "delivered": 6, "rejected": 2, "failed": 1, "skipped": 1,
                           "valid": 10 - 2, "possibly_duplicated": 0}  # fmt: skip
    assert doc["invariant_ok"] is True
    assert doc["skipped"]["by_reason"] == {"unchanged": 1}
    assert doc["rejects"]["by_stage"] == {"mapping": 2}


def test_invariant_violation_raises_and_report_stays_writable(tmp_path: Path) -> None:
    report = RunReport("p", report_dir=tmp_path)
    report.add_read(5)
    report.add_delivered(3)
    with pytest.raises(ReportInvariantError, match="read 5 != delivered 3") as info:
        report.finish(0)
    assert isinstance(info.value, ConnectorError)
    assert report.invariant_ok is False
    assert report.exit_code == 1
    paths = report.write()
    assert orjson.loads(paths["report_json"].read_bytes())["invariant_ok"] is False


def test_exit_code_threshold_and_raise_on_failures(tmp_path: Path) -> None:
    ok = RunReport("p", report_dir=tmp_path / "a", max_reject_fraction=0.25)
    ok.add_read(4)
    ok.add_delivered(3)
    ok.add_rejects([_rej(2)])
    ok.finish()
    assert ok.exit_code == 0
    ok.raise_on_failures()

    over = RunReport("p", report_dir=tmp_path / "b", max_reject_fraction=0.2)
    over.add_read(4)
    over.add_delivered(3)
    over.add_rejects([_rej(2)])
    over.finish()
    assert over.exit_code == 1
    with pytest.raises(RunFailed, match="1 rejected"):
        over.raise_on_failures()

    failed = RunReport("p", report_dir=tmp_path / "c")
    failed.add_read(1)
    failed.add_failed([Failed(RowRef("f.csv", 2), "timeout")])
    failed.finish()
    assert failed.exit_code == 1
    with pytest.raises(RunFailed, match="1 of 1 rows not delivered"):
        failed.raise_on_failures()

    fatal = RunReport("p", report_dir=tmp_path / "d")
    fatal.finish(3)
    assert fatal.exit_code == 3
    with pytest.raises(RunFailed, match="exit code 3") as info:
        fatal.raise_on_failures()
    assert info.value.report is fatal and info.value.exit_code == 3

    claimed = RunReport("p", report_dir=tmp_path / "e")
    claimed.add_read(1)
    claimed.add_failed([Failed(RowRef("f.csv", 2), "timeout")])
    claimed.finish(0)  # the counts contradict success
    assert claimed.exit_code == 1
    assert fatal.to_dict()["exit_meaning"].startswith("destination fatal: bad API key, unreachable")
    # the cause, when the report knows it: the abort reason the unsent rows were skipped with
    refused = RunReport("p", report_dir=tmp_path / "f")
    refused.add_read(2)
    refused.add_skipped(2, "run aborted: API key refused (HTTP 401)")
    refused.finish(3)
    assert refused.to_dict()["exit_meaning"] == "destination fatal: API key refused (HTTP 401)"
    # a dry run (or validate) that succeeds delivered nothing: its meaning does not say it did
    dry = RunReport("p", report_dir=tmp_path / "g", dry_run=True)
    dry.add_read(1)
    dry.add_skipped(1, "dry run")
    dry.finish(0)
    assert dry.to_dict()["exit_meaning"] == "success: nothing sent (dry run or validate), rejects under the threshold"


def test_rejects_csv_columns_values_and_late_columns(tmp_path: Path) -> None:
    report = RunReport("p", report_dir=tmp_path)
    report.add_rejects([_rej(2, id="a", age="x"), _rej(3, id="b", age="")])
    raw = Rejected(
        RowRef("people.csv", 4),
        "parse",
        "csv.column_count",
        "3 fields, expected 2",
        None,
        {"_raw": 'a,"b",c'},
    )
    report.add_rejects([raw, _rej(5, id="c", age="y", nickname="Zed")])
    report.add_read(4)
    report.finish()
    with report.rejects.path.open(newline="") as fh:
        header = next(csv.reader(fh))
    assert header == [
        "id",
        "age",
        "_raw",
        "nickname",
        "_source_file",
        "_row_number",
        "_stage",
        "_rule",
        "_column",
        "_reason",
    ]
    rows = _read_csv(report.rejects.path)
    assert [r["_row_number"] for r in rows] == ["2", "3", "4", "5"]
    assert rows[0] == {
        "id": "a", "age": "x", "_raw": "", "nickname": "", "_source_file": "people.csv", "_row_number": "2",
        "_stage": "mapping", "_rule": "cast.integer", "_column": "age", "_reason": "bad value in row 2",
    }  # fmt: skip
    assert rows[2]["_raw"] == 'a,"b",c' and rows[2]["_stage"] == "parse" and rows[2]["_column"] == ""
    assert rows[3]["nickname"] == "Zed" and rows[3]["_rule"] == "cast.integer"


def test_rejects_stream_to_disk_and_sample_is_bounded(tmp_path: Path) -> None:
    report = RunReport("p", report_dir=tmp_path)
    total = 0
    for batch in range(40):
        report.add_rejects([_rej(total + i + 2, id=str(total + i)) for i in range(500)])
        total += 500
        if batch == 1:
            report.rejects.flush()
            assert sum(1 for _ in report.rejects.path.open()) == 1 + 1000  # already on disk, before finish
    report.add_rejects([_rej(99_999, rule="email.invalid", stage="contract", id="late")])
    report.add_read(total + 1)
    report.finish()
    assert len(report.sample) <= 50
    assert {s["rule"] for s in report.sample} == {"cast.integer", "email.invalid"}  # a late rule still shows
    assert sum(1 for _ in report.rejects.path.open()) == 1 + total + 1
    assert report.to_dict()["rejects"]["by_rule"] == {"cast.integer": total, "email.invalid": 1}


def test_parquet_rejects_are_strings_with_nulls_and_extra(tmp_path: Path) -> None:
    report = RunReport("p", report_dir=tmp_path, source_format="parquet")
    first = Rejected(
        RowRef("t.parquet", 1), "mapping", "cast.time", "not a time", "ts", {"id": 7, "ts": "x", "score": 1.5}
    )
    second = Rejected(
        RowRef("t.parquet", 2), "contract", "email.invalid", "bad email", "email", {"id": 8, "email": "no"}
    )
    report.add_rejects([first])
    report.add_rejects([second])
    report.add_read(2)
    report.finish()
    assert report.rejects.path.name == "rejects.parquet"
    table = pq.read_table(report.rejects.path)
    assert all(str(f.type) == "string" for f in table.schema)
    assert table.column_names[:3] == ["id", "ts", "score"]
    assert table.column_names[3:9] == ["_source_file", "_row_number", "_stage", "_rule", "_column", "_reason"]
    rows = table.to_pylist()
    assert rows[0]["id"] == "7" and rows[0]["score"] == "1.5" and rows[0]["_row_number"] == "1"
    assert rows[1]["ts"] is None and rows[1]["_rule"] == "email.invalid"
    assert orjson.loads(rows[1]["_extra"]) == {"email": "no"}


def test_a_run_with_nothing_to_list_leaves_no_empty_files_and_names_none(tmp_path: Path) -> None:
    """The rejects and failed files are created with their first row (a trial found empty failed.csv files
    left by runs that ended on a config error right after starting); report.json names no file then, and a
    file an earlier attempt left in the folder (a resumed run) is not taken for this run's."""
    (tmp_path / "failed.csv").write_text("stale\n", encoding="utf-8")
    for fmt in ("parquet", "csv"):
        report = RunReport("p", report_dir=tmp_path, source_format=fmt)
        report.finish()
        paths = report.write()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]
        assert "rejects" not in paths and "failed" not in paths
        doc = orjson.loads((tmp_path / "report.json").read_bytes())
        assert doc["files"]["rejects"] is None and doc["files"]["failed"] is None
        assert doc["rejects"]["file"] is None and doc["failed"]["file"] is None
        assert load_failed(tmp_path).rows == {}  # --retry-failed of such a run sends nothing, as before
    report = RunReport("p", report_dir=tmp_path, source_format="parquet")
    report.add_read(1)
    report.add_rejects([_rej(2)])
    report.finish()
    assert pq.read_table(report.rejects.path).num_rows == 1 and report.rejects.file == report.rejects.path
    assert report.failed.file is None and not report.failed.path.exists()
    with pytest.raises(SourceError, match="no failed file here"):
        load_failed(tmp_path / "elsewhere")  # not a run's folder


def test_failed_file(tmp_path: Path) -> None:
    report = RunReport("p", report_dir=tmp_path)
    report.add_read(2)
    report.add_failed(
        [Failed(RowRef("a.csv", 2), "HTTP 503 after 8 attempts", 503, "failed", {"external_id": "u1"})]
    )
    report.add_failed(
        [Failed(RowRef("a.csv", 3), "connection dropped", None, "unknown", {"external_id": "u2"})], "users"
    )
    report.finish()
    rows = _read_csv(report.failed.path)
    assert rows == [
        {"external_id": "u1", "_source_file": "a.csv", "_row_number": "2", "_status": "503", "_outcome": "failed",
         "_error": "HTTP 503 after 8 attempts", "_stream": ""},
        {"external_id": "u2", "_source_file": "a.csv", "_row_number": "3", "_status": "", "_outcome": "unknown",
         "_error": "connection dropped", "_stream": "users"},
    ]  # fmt: skip
    assert report.to_dict()["failed"] == {"count": 2, "not_sent": 0, "unknown": 1, "file": str(report.failed.path)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_percentiles_match_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = rng.lognormal(mean=4.0, sigma=1.0, size=5000)
    data = data[data < 9_000]
    hist = LatencyHistogram()
    for v in data:
        hist.add(float(v))
    for p in (50, 95, 99):
        assert hist.percentile(p) == pytest.approx(float(np.percentile(data, p)), abs=1.0)
    assert hist.max == pytest.approx(float(data.max()))
    assert len(hist.counts) <= 10_000


def test_percentiles_edge_cases() -> None:
    hist = LatencyHistogram()
    assert hist.percentile(50) is None
    hist.add(42.2)
    assert hist.percentile(99) == pytest.approx(42.2, abs=1.0)
    for v in (15_000.0, 20_000.0, 30_000.0):  # log buckets beyond 10 s: within 1 %
        hist.add(v)
    assert hist.percentile(100) == pytest.approx(30_000.0, rel=0.01)
    assert hist.percentile(50) == pytest.approx(
        float(np.percentile([42.2, 15_000, 20_000, 30_000], 50)), rel=0.01
    )


def test_throughput_timeline_and_rate_limit(tmp_path: Path) -> None:
    clock = FakeClock()
    report = RunReport("p", report_dir=tmp_path, clock=clock, rate_limits={"users_track": 1000.0})
    clock.t = 0.2
    report.record_request("users_track", 201, 10, 75)
    report.record_request("users_track", 201, 12, 75)
    clock.t = 2.7
    report.record_request("users_track", 201, 30, 50)
    report.record_request("users_track", 500, 30, 75)  # not delivered: counts as a request, not objects
    clock.t = 4.0
    report.add_read(0)
    report.finish()
    doc = report.to_dict()
    assert doc["throughput"]["timeline"] == [[0, 150, 2], [1, 0, 0], [2, 50, 2]]
    assert doc["duration_s"] == 4.0
    assert doc["throughput"]["requests_per_s"] == 1.0
    rl = doc["rate_limit"]["users_track"]
    assert rl["peak_requests_per_s"] == 2 and rl["limit_per_s"] == 1000.0 and rl["utilisation"] == 0.002
    assert doc["requests"]["by_status"] == {"201": 3, "500": 1}


def test_long_timeline_is_binned(tmp_path: Path) -> None:
    clock = FakeClock()
    report = RunReport("p", report_dir=tmp_path, clock=clock)
    for sec in range(0, 3000, 7):
        clock.t = sec + 0.5
        report.record_request("users_track", 201, 5, 10)
    timeline = report.to_dict()["throughput"]["timeline"]
    assert len(timeline) <= 600
    assert sum(p[1] for p in timeline) == 10 * len(range(0, 3000, 7))
    assert report.to_dict()["throughput"]["timeline_bin_s"] == 5


def test_retries_rate_limited_and_endpoint_breakdown(tmp_path: Path) -> None:
    report = RunReport("p", report_dir=tmp_path)
    report.record_retry("users_track", "rate_limited")
    report.record_retry("users_track", "503")
    report.record_request("users_track", 201, 20, 75)
    report.record_request("users_track_sync", 201, 40, 1, retried=2, rate_limited=1)
    req = report.to_dict()["requests"]
    assert req["total"] == 2
    assert req["retries"] == 4 and req["rate_limited"] == 2
    assert req["retry_reasons"] == {"rate_limited": 1, "503": 1}
    assert req["by_endpoint"]["users_track"]["retries"] == 2
    assert req["by_endpoint"]["users_track_sync"] == {
        "requests": 1, "objects": 1, "retries": 2, "rate_limited": 1, "by_status": {"201": 1}
    }  # fmt: skip


REQUIRED_KEYS = {
    "run_id", "pipeline", "started_at", "finished_at", "duration_s", "dry_run", "mode", "mode_reason", "exit_code",
    "destination", "rows", "invariant_ok", "rejects", "failed", "skipped", "requests", "throughput", "latency_ms",
    "rate_limit", "table_checks", "warnings", "streams", "emulator", "files", "possibly_duplicated", "resume",
}  # fmt: skip


def test_report_json_keys_and_files(tmp_path: Path) -> None:
    report = RunReport("nightly", run_id="r1", dry_run=True, report_dir=tmp_path, sample_bodies=2)
    report.set_mode("bulk", "large run")
    report.set_destination("braze", "https://user:s3cret-key@rest.fra-01.braze.eu/path?api_key=s3cret-key")
    report.add_stream("people", "attributes", "people.csv")
    report.add_read(3, stream="people")
    report.add_delivered(2, stream="people")
    report.add_rejects([_rej(2)], stream="people")
    report.add_table_check(
        "people", "expect_column_values_to_be_unique", "id", False, 3, "3 duplicates", "warn"
    )
    for i in range(4):
        report.add_sample_body("users_track", b'{"attributes": [%d]}' % i)
    report.add_confirmed(RowRef("people.csv", 2), {"external_id": "u1", "age": 3})
    report.record_request("users_track", 201, 15, 2)
    report.finish()
    paths = report.write()
    doc = orjson.loads(paths["report_json"].read_bytes())
    assert REQUIRED_KEYS <= doc.keys()
    assert doc["rows"].keys() == {"read", "delivered", "rejected", "failed", "skipped", "valid", "possibly_duplicated"}
    assert doc["requests"].keys() >= {"total", "by_endpoint", "by_status", "retries", "rate_limited"}
    assert doc["throughput"].keys() >= {"objects_per_s", "requests_per_s", "timeline"}
    assert doc["latency_ms"].keys() == {"p50", "p95", "p99", "max"}
    assert doc["mode"] == "bulk" and doc["mode_reason"] == "large run" and doc["dry_run"] is True
    assert doc["destination"] == {"kind": "braze", "url": "https://rest.fra-01.braze.eu/path"}
    assert (
        "s3cret" not in paths["report_json"].read_text() and "s3cret" not in paths["report_html"].read_text()
    )
    assert doc["streams"] == [
        {"name": "people", "kind": "attributes", "source": "people.csv", "read": 3, "delivered": 2, "rejected": 1,
         "failed": 0, "skipped": 0}
    ]  # fmt: skip
    assert doc["table_checks"][0]["action"] == "warn" and doc["table_checks"][0]["observed"] == "3"
    samples = sorted((tmp_path / "sample_requests").iterdir())
    assert [p.read_bytes() for p in samples] == [b'{"attributes": [0]}', b'{"attributes": [1]}']
    confirmed = (tmp_path / "confirmed.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line) for line in confirmed] == [
        {"file": "people.csv", "row": 2, "profile": {"external_id": "u1", "age": 3}}
    ]
    assert doc["files"]["confirmed"] == str(tmp_path / "confirmed.jsonl")
    for key in ("report_json", "report_html", "rejects"):
        assert Path(doc["files"][key]).exists()
    assert doc["files"]["failed"] is None and not (tmp_path / "failed.csv").exists()  # nothing failed


def test_emulator_stats_are_attached(tmp_path: Path, emulator: object) -> None:
    report = RunReport("p", report_dir=tmp_path)
    stats = emulator.stats()  # type: ignore[attr-defined]
    assert isinstance(stats, dict)
    report.set_emulator_stats(stats)
    assert report.to_dict()["emulator"] == stats


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_html_is_self_contained_and_escapes_hostile_strings(tmp_path: Path) -> None:
    report = RunReport(HOSTILE, run_id="r&1", report_dir=tmp_path)
    report.set_mode("sync", HOSTILE)
    report.add_read(2)
    report.add_rejects([Rejected(RowRef(HOSTILE, 2), "contract", HOSTILE, HOSTILE, HOSTILE, {"c": HOSTILE})])
    report.add_skipped(1, HOSTILE)
    report.add_warning(HOSTILE)
    report.add_table_check(HOSTILE, HOSTILE, HOSTILE, False, HOSTILE, HOSTILE, "fail")
    report.record_request("users_track", 201, 10, 1)
    report.finish()
    html = report.write()["report_html"].read_text()
    assert "<script" not in html.lower()
    assert "onerror=alert(1)>" not in html
    assert html.count("&lt;script&gt;") >= 7
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "<link" not in html.lower() and "@import" not in html and "url(" not in html
    assert "<svg" in html and "<style>" in html


def test_recorders_are_thread_safe(tmp_path: Path) -> None:
    report = RunReport("p", report_dir=tmp_path)
    threads, per = 8, 400

    def work(t: int) -> None:
        for i in range(per):
            report.add_read(2, stream=f"s{t % 2}")
            report.add_delivered(1, stream=f"s{t % 2}")
            report.add_rejects([_rej(t * per + i, id=str(t))], stream=f"s{t % 2}")
            report.record_request("users_track", 201, i % 50, 1)
            report.record_retry("users_track", "503")

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    report.finish()
    n = threads * per
    assert report.rows == {"read": 2 * n, "delivered": n, "rejected": n, "failed": 0, "skipped": 0}
    assert report.to_dict()["requests"]["total"] == n and report.retries == n
    assert report.latency.n == n
    assert sum(s["read"] for s in report.streams.values()) == 2 * n
    assert len(_read_csv(report.rejects.path)) == n


def test_render_html_without_requests_or_rejects(tmp_path: Path) -> None:
    report = RunReport("empty", report_dir=tmp_path)
    report.finish()
    html = render_html(report.to_dict())
    assert "No requests were sent." in html and "No rows were rejected." in html and "exit 0" in html


def test_sample_keeps_offending_value_and_meta_named_columns_do_not_clash(tmp_path: Path) -> None:
    report = RunReport("p", report_dir=tmp_path)
    long_value = "y" * 500
    report.add_rejects([Rejected(RowRef("a.csv", 2), "mapping", "cast.float", "not a float", "score",
                                 {"score": long_value, "_reason": "user column"})])  # fmt: skip
    report.add_read(1)
    report.finish()
    assert report.sample[0]["value"] == "y" * 200 + "…"
    with report.rejects.path.open(newline="") as fh:
        header = next(csv.reader(fh))
    assert header.count("_reason") == 1
    assert _read_csv(report.rejects.path)[0]["_reason"] == "not a float"


def test_objects_per_s_counts_only_acknowledged_objects(tmp_path: Path) -> None:
    clock = FakeClock()
    report = RunReport("p", report_dir=tmp_path, clock=clock)
    report.record_request("users_track", 201, 5, 75)
    report.record_request("users_track", 0, 30_000, 75)  # no response
    clock.t = 3.0
    report.finish()
    doc = report.to_dict()
    assert doc["throughput"]["objects_per_s"] == 25.0
    assert doc["requests"]["by_endpoint"]["users_track"]["objects"] == 150
    assert "no response: 1" in render_html(doc)


def test_possibly_duplicated_rows_are_counted_listed_and_a_stale_list_is_removed(tmp_path: Path) -> None:
    (tmp_path / "possibly_duplicated.csv").write_text("left over from an earlier run in this folder\n")
    report = RunReport("p", report_dir=tmp_path)
    assert not (tmp_path / "possibly_duplicated.csv").exists()
    report.add_read(3, stream="s")
    report.add_delivered(3, stream="s")
    report.add_possibly_duplicated([RowRef("a.csv", 2), RowRef("a.csv", 3)], "resent", stream="s")
    report.add_possibly_duplicated([], "nothing")
    report.finish()
    paths = report.write()
    doc = orjson.loads(paths["report_json"].read_bytes())
    assert doc["rows"]["possibly_duplicated"] == 2 and doc["invariant_ok"] is True
    assert doc["possibly_duplicated"] == {"count": 2, "by_reason": {"resent": 2},
                                          "file": str(tmp_path / "possibly_duplicated.csv")}  # fmt: skip
    assert (tmp_path / "possibly_duplicated.csv").read_text().splitlines() == [
        "_source_file,_row_number,_stream,_reason", "a.csv,2,s,resent", "a.csv,3,s,resent"]  # fmt: skip
    assert "possibly applied more than once" in paths["report_html"].read_text(encoding="utf-8")


def test_cells_are_written_as_to_text_writes_them_column_by_column() -> None:
    from datetime import UTC, date, datetime

    from connector.report.sinks import texts, to_text

    columns = [
        ["a", None, "b"],
        [1, None, -2],
        [1.5, float("nan"), None],
        [True, False, None],
        [datetime(2024, 1, 2, 3, 4, tzinfo=UTC), None],
        [date(2024, 1, 2), None],
        [1, "a", 2.5, None, {"k": [1]}, b"\xff", (1, 2)],
    ]
    for values in columns:
        assert texts(list(values)) == [to_text(v) for v in values]


def test_exit_meaning_names_each_cause_of_exit_code_1() -> None:
    from connector.report.document import EXIT_MEANINGS, REFUSED_MEANING, exit_meaning

    failed = {"stream": "users", "expectation": "expect_table_row_count_to_be_between", "column": None,
              "success": False, "action": "fail"}  # fmt: skip
    unique = {**failed, "expectation": "expect_column_values_to_be_unique", "column": "id"}
    warned = {**failed, "action": "warn"}
    refused = {"users": {"refused": True}}
    assert exit_meaning(1, None, True) == EXIT_MEANINGS[1]
    assert exit_meaning(1, None, False) == EXIT_MEANINGS[1]  # no cause known: the general words
    assert exit_meaning(1, None, False, [warned]) == EXIT_MEANINGS[1]  # a warning is not a cause
    only_checks = exit_meaning(1, None, False, [unique, failed])
    assert only_checks == ("table check failed (users: expect_column_values_to_be_unique on 'id', "
                           "users: expect_table_row_count_to_be_between; see table_checks)")  # fmt: skip
    assert "rejected" not in only_checks
    both = exit_meaning(1, refused, True, [failed])
    assert both.startswith(REFUSED_MEANING) and both.count("; also ") == 2 and EXIT_MEANINGS[1] in both
    assert exit_meaning(3, refused, True, [failed]).startswith("destination fatal")

"""report.html: the last runs' trend, the requests/s axis, rule names that wrap at word boundaries, samples
in source order, the alerts card. (tests/integration/test_report_render.py lays the page out in Chromium.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from connector.records import Rejected, RowRef
from connector.report import RunReport
from connector.report.html import render_html


def finished(tmp_path: Path, rejects: list[tuple[str, Any, str]] | None = None) -> dict[str, Any]:
    report = RunReport("p", report_dir=tmp_path, run_id="now")
    for file, row, rule in rejects or []:
        report.add_rejects([Rejected(RowRef(file, row), "mapping", rule, "bad", "age", {"age": "x"})])
    report.add_read(10)
    report.add_delivered(10 - len(rejects or []))
    report.record_request("users_track", 201, 5.0, 8)
    report.record_request("users_track", 429, 5.0, 8)
    report.finish()
    return report.to_dict()


def history(n: int) -> list[dict[str, Any]]:
    return [{"run_id": f"r{i}", "started_at": f"2026-03-0{i + 1}T02:00:00Z", "kind": "run", "exit_code": 1 if i == 1 else 0,
             "duration_s": 10.0 + i, "rows": {"read": 100 * (i + 1), "delivered": 90, "rejected": 7 + i, "failed": i,
             "skipped": 0}, "rate_limited": 3 * i} for i in range(n)]  # fmt: skip


def test_the_trend_shows_earlier_runs_and_this_one(tmp_path: Path) -> None:
    html = render_html(finished(tmp_path), history(3))
    card = html[html.index('id="trend"') :]
    card = card[: card.index("</table>")]
    assert "Last runs (4)" in card
    assert card.count("<svg") == 5
    for title in ("rows read", "rejected", "failed", "duration", "429s"):
        assert f'aria-label="{title} over the last 4 runs"' in card
    rows = re.findall(r"<tr><td>([^<]*)</td>", card)
    assert rows[1:] == ["2026-03-03 02:00:00", "2026-03-02 02:00:00", "2026-03-01 02:00:00"]  # newest first
    assert rows[0].endswith("(this run)")
    assert card.count('fill="#d64545"') == 5  # run r1 exited 1: a red mark under its bar in each chart
    assert "<title>300</title>" in card and "<title>6</title>" in card  # r2: 300 rows read, 6 429s


def test_no_earlier_runs_says_so_and_a_merged_report_has_no_trend(tmp_path: Path) -> None:
    doc = finished(tmp_path)
    assert "No earlier runs of the pipeline in the history yet" in render_html(doc, [])
    assert 'id="trend"' not in render_html(doc)


def test_requests_per_second_has_an_axis_with_ticks_and_a_title(tmp_path: Path) -> None:
    html = render_html(finished(tmp_path), [])
    axis = re.search(r'<g class="axis axis-requests">(.*?)</g>', html)
    assert axis is not None
    ticks = re.findall(r"<text x=[^>]*>([^<]*)</text>", axis.group(1))
    assert ticks == ["0", "0.5", "1", "1.5", "2"]  # 2 requests in the run's one second
    assert ">requests/s</text>" in axis.group(1)
    assert re.search(r'<g class="axis axis-objects">.*>objects/s</text></g>', html)
    assert "seconds since the first read" in html


def test_rule_names_break_only_at_word_boundaries(tmp_path: Path) -> None:
    rule = "expect_column_values_to_match_strftime_format.custom"
    html = render_html(finished(tmp_path, [("a.csv", 2, rule)]), [])
    wrapped = "expect_<wbr>column_<wbr>values_<wbr>to_<wbr>match_<wbr>strftime_<wbr>format.<wbr>custom"
    assert html.count(f'<code class="rule">{wrapped}</code>') == 2  # rejects by rule and the sample
    assert "code.rule{word-break:normal;overflow-wrap:break-word}" in html


def test_the_sample_is_in_source_order(tmp_path: Path) -> None:
    rejects = [("b.csv", 40, "r"), ("b.csv", 3, "r"), ("a.csv", 12, "r"), ("b.csv", 9, "r"), ("a.csv", 2, "r"),
               ("db", "id=7", "r"), ("db", "id=10", "r")]  # fmt: skip
    html = render_html(finished(tmp_path, rejects), [])
    sample = html[html.index("Sample of rejected rows") :]
    found = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td>", sample)
    assert found == [("b.csv", "3"), ("b.csv", "9"), ("b.csv", "40"), ("a.csv", "2"), ("a.csv", "12"),
                     ("db", "id=7"), ("db", "id=10")]  # fmt: skip


def test_the_alerts_card_says_what_fired_and_whether_it_was_delivered(tmp_path: Path) -> None:
    doc = finished(tmp_path)
    doc["alerts"] = {"url_env": "HOOK", "fired": [{"trigger": "rejects", "detail": "3 rows rejected", "delivered": False}],
                     "posted": True, "delivered": False, "status": None, "error": "connection refused"}  # fmt: skip
    html = render_html(doc, [])
    assert "<b>rejects</b>: 3 rows rejected" in html and "NOT delivered: connection refused" in html
    assert "<code>$HOOK</code>" in html


def test_the_requests_card_names_the_http_engine_when_there_was_one(tmp_path: Path) -> None:
    doc = finished(tmp_path)
    assert "sent by" not in render_html(doc, [])  # no client (a dry run, or a bare report): nothing claimed
    doc["requests"]["http_engine"] = "curl (HTTP process)"
    assert "2 requests · 0 retries · 1 rate limited (429) · sent by curl (HTTP process)</p>" in render_html(doc, [])

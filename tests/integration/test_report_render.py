"""report.html rendered for real in headless Chromium (Debian's `chromium`), via docs/render_report.py.

Two runs of a pipeline against the emulator give a report with a trend of the last runs; Chromium lays it
out and a script measures it (on a copy: the report has no script). Skipped where Chromium is missing,
except in CI (CI=true), where that is a failure: .ci/run installs it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from connector import load_pipeline, run_pipeline
from connector.emulator import EmulatorServer
from connector.report.html import render_html
from connector.report.run import RunReport

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs"))
from render_report import check_layout, find_chromium, layout_problems, png_pixels, render_png  # noqa: E402

pytestmark = pytest.mark.timeout(180)

CSV = "user_id,age,email\n" + "".join(
    f"u{i},{'x' if i % 7 == 3 else 20 + i},{'bad' if i % 11 == 5 else f'u{i}@example.com'}\n" for i in range(60)
)
LONG_RULE = "expect_column_values_to_match_strftime_format.from_a_custom_suite_with_an_unusually_long_rule_name"


@pytest.fixture(scope="module")
def chromium() -> str:
    found = find_chromium()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium not found; CI must install it (apt-get install chromium)")
        pytest.skip("chromium not found (apt-get install chromium to run this test)")
    return found


@pytest.fixture
def report(make_project: Callable[..., Path], emulator: EmulatorServer) -> RunReport:
    """The second of two real runs: its report.html has a trend of two runs."""
    p = load_pipeline(make_project(name="rendered", csv=CSV, max_reject_fraction=0.5,
                                   attributes=[{"column": "age", "type": "integer"}, {"column": "email"}]))  # fmt: skip
    env = {"BRAZE_REST_ENDPOINT": emulator.url, "BRAZE_API_KEY": "test-key"}
    run_pipeline(p, mode="bulk", env=env)
    return run_pipeline(p, mode="bulk", env=env)


def test_report_html_renders_with_trend_and_axis_and_nothing_overflows(
    chromium: str, report: RunReport, tmp_path: Path
) -> None:
    html = report.report_dir / "report.html"
    png = render_png(html, tmp_path / "report.png", width=1280, height=2000)
    width, height, colours = png_pixels(png)
    assert (width, height) == (1280, 2000)
    assert len(colours) > 20, "the screenshot is (nearly) blank"

    # The same report with a very long rule name, laid out at 700 px: rule names must wrap, not widen it.
    doc = json.loads((report.report_dir / "report.json").read_text(encoding="utf-8"))
    assert doc["rows"]["rejected"] > 0 and doc["throughput"]["timeline"]
    doc["rejects"]["by_rule"][LONG_RULE] = 1
    doc["rejects"]["sample"].append({**doc["rejects"]["sample"][0], "rule": LONG_RULE})
    earlier = [e for e in report.recent_runs if e["run_id"] != report.run_id]
    narrow = tmp_path / "narrow.html"
    narrow.write_text(render_html(doc, earlier), encoding="utf-8")
    m = check_layout(narrow, width=700, height=2000)
    assert m["viewport"] == 700
    assert layout_problems(m) == [], "\n".join(layout_problems(m))
    assert m["trend_charts"] == 5 and m["trend_rows"] == 2  # the earlier run and this one
    assert m["requests_axis_ticks"] == 5 and m["requests_axis_title"] == "requests/s"
    assert m["rule_breaks"] >= LONG_RULE.count("_") + LONG_RULE.count(".")

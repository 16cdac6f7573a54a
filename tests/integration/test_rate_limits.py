"""Runs against a server whose rate limit is far below the configured one: 10 requests/s, and an hourly window.

No test waits on the clock's speed: counts are compared, and the hourly run must merely not wait for its
window. The emulator's windows are aligned to the clock, so the hourly test picks a window whose reset is
minutes away.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector import load_pipeline, run_pipeline

pytestmark = pytest.mark.timeout(180)


def _project(tmp_path: Path, rows: int, **write: Any) -> Path:
    (tmp_path / "users.csv").write_text(
        "user_id,plan\n" + "".join(f"u{i},pro\n" for i in range(rows)), encoding="utf-8"
    )
    stream = {"name": "users", "source": {"path": "users.csv"}, "kind": "attributes",
              "identifier": {"external_id": "user_id"}, "attributes": [{"column": "plan"}]}  # fmt: skip
    doc = {"name": "limits", "streams": [stream], "write": {"max_objects_per_request": 1, **write}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def _env(url: str) -> dict[str, str]:
    return {"BRAZE_REST_ENDPOINT": url, "BRAZE_API_KEY": "test-key"}


def test_a_server_limit_of_10_per_second_is_met_without_a_herd_and_every_429_counted(
    emulator_factory: Any, tmp_path: Path
) -> None:
    n = 60  # one request per row; 160 workers (the bulk default) against 10 requests/s
    server = emulator_factory(rate_limits={"users_track": (10, 1.0)})
    report = run_pipeline(load_pipeline(_project(tmp_path, n)), mode="bulk", report_dir=tmp_path / "r",
                          env=_env(server.url))  # fmt: skip
    doc = json.loads((tmp_path / "r" / "report.json").read_text("utf-8"))
    received = server.stats()["requests"]["/users/track"]
    assert doc["exit_code"] == 0 and doc["rows"]["delivered"] == n and received["201"] == n
    refused = received.get("429", 0)
    # Every 429 the server sent is in the report, and each was retried (by reason).
    assert doc["requests"]["rate_limited"] == refused
    assert doc["requests"]["retry_reasons"] == ({"429": refused} if refused else {})
    assert doc["requests"]["retries"] == refused
    # No herd: only the first burst, before the limiter knew the server's limit, is refused. Waking all at
    # once into each new window, the workers were refused over and over (93 429s for 60 requests).
    assert refused <= n - 10, refused
    assert report.invariant_ok


def _hour_like_window() -> int:
    """A window of half an hour to two hours whose clock-aligned reset is at least 10 minutes away.

    Windows are aligned on the clock, so a fixed list of sizes can all end within minutes of one another
    (as they do just before an hour boundary); among thousands of sizes one always ends later.
    """
    now = time.time()
    for window in (*range(3600, 1799, -1), *range(3601, 7201)):
        if window - now % window > 600:
            return window
    raise AssertionError("no window of 30 min to 2 h resets more than 10 minutes from now")


def test_an_hourly_window_spent_stops_the_run_at_once_and_lists_every_unsent_row(
    emulator_factory: Any, tmp_path: Path
) -> None:
    window = _hour_like_window()
    server = emulator_factory(rate_limits={"users_track": (20, float(window))})
    retry = {"max_attempts": 8, "max_elapsed_s": 300}  # the defaults: 300 s is far less than the window
    pipeline = _project(tmp_path, 50, retry=retry)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAZE_")} | _env(server.url)
    started = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "connector", "run", str(pipeline), "--mode", "bulk", "--report-dir", str(tmp_path / "r")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=170,
    )  # fmt: skip
    assert time.monotonic() - started < window / 4  # it did not wait for the window (it used to, silently)
    assert res.returncode == 3, res.stderr
    assert "error: run stopped (exit code 3): Braze's rate limit for /users/track is spent: it resets at" in res.stderr
    assert "beyond the retry budget (write.retry.max_elapsed_s: 300 s)" in res.stderr
    doc = json.loads((tmp_path / "r" / "report.json").read_text("utf-8"))
    assert doc["invariant_ok"] and doc["rows"]["read"] == 50
    assert doc["rows"]["delivered"] == 20 and doc["rows"]["failed"] == 0
    assert doc["rows"]["skipped"] == 30 and doc["failed"]["not_sent"] == 30
    (reason,) = doc["skipped"]["by_reason"]
    assert reason.startswith("run aborted: Braze's rate limit is spent until ")
    with (tmp_path / "r" / "failed.csv").open(encoding="utf-8", newline="") as fh:
        unsent = list(csv.DictReader(fh))
    assert len(unsent) == 30 and {r["_outcome"] for r in unsent} == {"not_sent"}
    refused = server.stats()["requests"]["/users/track"].get("429", 0)
    assert doc["requests"]["rate_limited"] == refused and doc["requests"]["retry_reasons"] == {}

"""bench/child_cost.py still runs (a few hundred requests; the figures are in BENCHMARKS.md)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from child_cost import measure  # noqa: E402
from sink import nginx_available  # noqa: E402


@pytest.mark.skipif(nginx_available() is not None, reason="needs nginx with the echo module (bench/sink.py)")
def test_the_child_cost_bench_runs_and_every_request_is_answered() -> None:
    lines = measure(300, latency=20, rate=2000, concurrency=32, profile=None)
    assert "statuses {201: 300}" in lines[0], lines
    assert re.search(r"HTTP child \d+ us, this process \d+ us", lines[1]), lines

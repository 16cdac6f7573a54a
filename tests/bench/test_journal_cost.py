"""bench/journal_cost.py's journal-alone section still runs (tiny sizes; the figures are in BENCHMARKS.md)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from journal_cost import journal_alone  # noqa: E402


def test_the_journal_alone_section_runs() -> None:
    lines = journal_alone(requests=400, threads=4)
    assert len(lines) == 3
    assert all(re.search(r"[\d,]+ requests/s, +\d+ µs CPU per request", line) for line in lines[1:]), lines

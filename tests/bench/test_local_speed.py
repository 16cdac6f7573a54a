"""bench/local_speed.py runs end to end on tiny tables: this code and a git ref, every table measured."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_local_speed_prints_every_table_for_both_sides(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "local_speed.py"), "--rows", "2000", "--rounds", "1",
         "--before", "HEAD", "--data", str(tmp_path)],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=600,
    ).stdout  # fmt: skip
    labels = [f"{k} {f}" for k in ("users", "events") for f in ("pandas", "pyarrow", "csv")]
    for label in [*labels, "users dirty", "wide pyarrow", "wide csv"]:
        line = next(line for line in out.splitlines() if line.startswith(label + " "))
        assert re.search(r"\| +[\d.]+ +[\d.]+ +[\d,]+  x[\d.]+$", line), line
    dirty = next(line for line in out.splitlines() if line.startswith("users dirty "))
    assert int(dirty.split()[2].replace(",", "")) > 0  # its bad rows are rejected

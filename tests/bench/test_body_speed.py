"""bench/body_speed.py runs end to end on tiny tables: this code and a git ref, every table measured."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_body_speed_prints_every_table_for_both_sides(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "body_speed.py"), "--rows", "3000", "--rounds", "1",
         "--before", "HEAD", "--data", str(tmp_path)],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=600,
    ).stdout  # fmt: skip
    for kind in ("users", "events"):
        for fmt in ("pandas", "pyarrow", "csv"):
            line = next(line for line in out.splitlines() if line.startswith(f"{kind} {fmt} "))
            assert re.search(r"\| +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+ +x[\d.]+$", line), line
    assert (tmp_path / "users_3000_pandas.parquet").exists()

"""bench/recurring_users.py still runs end to end (one small table, this tree only; the figures mean nothing,
BENCHMARKS.md has them). Needs nginx with the echo module, like test_bench_quick.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from needs_nginx import require_nginx  # noqa: E402


def test_recurring_users_bench_delivers_and_packs() -> None:
    require_nginx()
    bench = [sys.executable, str(ROOT / "bench" / "recurring_users.py"), "--rows", "3000", "--only", "a."]
    res = subprocess.run([*bench, "--reps", "1"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    row = re.search(r"\| a\. events, 60k users \| after \| 40 \| .* \| 3,000 of 3,000 \| 0 \|", res.stdout)
    assert row, res.stdout
    res = subprocess.run([*bench, "--pack-only"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"after +a\. events, 60k users +[\d.]+ s per 1M objects, 40 requests", res.stdout), res.stdout

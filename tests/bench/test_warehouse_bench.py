"""bench/warehouse_delta.py at a tiny size: a PostgreSQL table synced plain, first delta, unchanged delta and
10 % changed, end to end into the nginx sink. The numbers mean nothing here (BENCHMARKS.md has the real
ones); the counts must: every row delivered, then none, then exactly the changed tenth."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from pg_server import pg_bindir  # noqa: E402
from sink import nginx_available  # noqa: E402

# The bench differs between its state kinds by one setting (state.url_env); the connector's SQLite and
# PostgreSQL delta states are tested in tests/integration (test_delta_sync.py, test_delta_state_pg.py,
# test_delta_fast_path.py). The default (SQLite) run is the soak's: BRAZE_CONNECTOR_SOAK=1 runs it too.
STATES = ["sqlite", "postgresql"] if os.environ.get("BRAZE_CONNECTOR_SOAK") == "1" else ["postgresql"]


@pytest.mark.parametrize("state", STATES)
def test_warehouse_delta_bench_runs(state: str) -> None:
    reason = nginx_available() or (None if pg_bindir() else "PostgreSQL server binaries are not installed")
    if reason:
        if os.environ.get("BENCH_REQUIRE_NGINX") == "1" or os.environ.get("CI") == "true":
            pytest.fail(f"nginx and PostgreSQL are required here: {reason}")
        pytest.skip(reason)
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "warehouse_delta.py"), "--rows", "3000", "--state", state],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)  # fmt: skip
    out = res.stdout
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"calibration: a 10M-iteration Python for loop takes [\d.]+ s CPU", out), out
    assert re.search(r"plain \(no delta\) .* delivered 3,000, skipped 0, requests 40, exit 0\n", out), out
    assert re.search(r"first delta \(all new\) .* delivered 3,000, .* delta: 3,000 added, 0 changed, 0 unchanged", out), out
    assert re.search(r"unchanged delta .* delivered 0, skipped 3,000, requests 0, exit 0; .* 3,000 unchanged", out), out
    assert re.search(r"delta, 10 % changed .* delivered 300, skipped 2,700, .* 0 added, 300 changed, 2,700 unchanged", out), out
    assert re.search(r"ratios: first delta / plain: CPU [\d.]+, wall [\d.]+; unchanged / plain \(a full run\): CPU [\d.]+", out), out

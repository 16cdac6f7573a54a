"""bench/run.py: every section of the issue-5 runner still runs end to end (tiny sizes, smaller than --quick).

The numbers of a quick run mean nothing (the real ones are in BENCHMARKS.md); this keeps the runner, the
nginx sink and the baselines from rotting. It needs nginx with the echo module (.ci/run installs it);
without it the test is skipped, unless BENCH_REQUIRE_NGINX=1 (set by .ci/run) makes that a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from needs_nginx import require_nginx  # noqa: E402
from sink import nginx_available  # noqa: E402


def test_quick_bench_runs_every_section() -> None:
    require_nginx()
    res = subprocess.run(
        # --quick's sections at smaller sizes still (the smoke run of the test suite, at about 1/2 of its CPU);
        # memory at one size (3 fresh processes, not 6): two sizes and their ratio are test_issue12_table.py's
        [sys.executable, str(ROOT / "bench" / "run.py"), "delivery", "local", "memory", "sync", "--rows", "5000",
         "--latencies", "100", "--baseline-seconds", "0.5", "--sizes", "5000", "--seconds", "3"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    out = res.stdout
    assert res.returncode == 0, res.stderr[-3000:]
    delivered = re.search(r"rows delivered ([\d,]+) of ([\d,]+) .*\(exit (\d)", out)
    assert delivered and delivered.group(1) == delivered.group(2) == "5,000" and delivered.group(3) == "0", out
    assert re.search(r"% of the limit .*429s: 0\b", out), out
    assert re.search(r"naive iterrows\+requests.post loop: [\d.]+ requests/s -> connector x\d+", out), out
    assert re.search(r"braze-client loop: +[\d.]+ requests/s -> connector x\d+", out), out
    assert re.search(r"users: [\d,]+ rows/s .*5-expectation suite", out), out
    assert re.search(r"map \+ cast \+ contract \(mapper\) +[\d.]+ s", out), out
    peaks = re.findall(r"^ *(validate|dry-run|run) +5,000 rows: peak RSS +[\d.]+ MB +\(x1\.00 of the smallest\)", out, re.M)
    assert peaks == ["validate", "dry-run", "run"], out
    sync = re.search(r"delivered (\d+)/(\d+)", out.split("## Sync mode")[1])
    assert sync and sync.group(1) == sync.group(2), out


def test_shared_limits_bench_runs() -> None:
    """bench/shared_limits.py end to end at a tiny size (2 partitions sharing the budget through Redis)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from redis_server import redis_server_path

    reason = nginx_available() or (None if redis_server_path() else "redis-server is not installed")
    if reason:
        if os.environ.get("BENCH_REQUIRE_NGINX") == "1":
            pytest.fail(f"nginx and redis-server are required here: {reason}")
        pytest.skip(reason)
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "shared_limits.py"), "--workers", "2", "--modes", "shared",
         "--rows", "20000", "--calibration-seconds", "0.5"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    row = re.search(r"N=2 shared: ([\d,]+) delivered .*exit codes \[0, 0\]", res.stdout)
    assert row and int(row.group(1).replace(",", "")) >= 267, res.stdout  # every request of 20,000 rows
    assert "| 2 | shared (Redis) |" in res.stdout

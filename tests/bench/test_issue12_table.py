"""bench/run.py issue12 at tiny sizes: the issue-12 table has a row for each of the six goals, each met or missed
by the for-loop k and by the workload k.

The numbers of such a run mean nothing; this keeps the table's sections (delivery, end to end, first
request, local stages, delta, memory) running. Needs nginx with the echo module, like test_bench_quick.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from needs_nginx import require_nginx  # noqa: E402


def test_issue12_table_has_six_goals_each_met_or_missed_by_both_scalings() -> None:
    require_nginx()
    # smaller than --quick (20,000 rows, memory at 20,000 and 60,000): the smoke run at about half its CPU
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "issue12", "--rows", "5000",
                          "--sizes", "5000,10000", "--workload-k", "2.5"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"calibration loop [\d.]+ s CPU here, 3.2 s on the reference machine: k = [\d.]+", res.stdout)
    rows = [line for line in res.stdout.splitlines() if re.match(r"\| [1-6]\. ", line)]
    assert [r[2] for r in rows] == list("123456"), res.stdout
    assert "scaled by the for-loop k = " in res.stdout and "workload k (local 2.50, delivery 2.50)" in res.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 5, row
        assert re.search(r"\d", cells[1]) and re.search(r"\d", cells[2]), row  # a measured value and a target
        for scaled in cells[3:]:  # each scaling: its figure (or "not scaled") and met/missed
            assert re.fullmatch(r"(not scaled|.*\d.*): (met|missed)", scaled), row
    # goal 5 measures both key shapes and is judged on the worse, which each scaled cell names
    goal5 = [c.strip() for c in rows[4].strip("|").split("|")]
    assert re.search(r"seq keys: first [\d.]+ s vs plain [\d.]+ s = x[\d.]+, re-run", goal5[1]), goal5
    assert re.search(r"uuid keys: first [\d.]+ s vs plain [\d.]+ s = x[\d.]+, re-run", goal5[1]), goal5
    for scaled in goal5[3:]:
        assert re.fullmatch(r"worse: (seq|uuid) keys, first x[\d.]+, re-run \d+%: (met|missed)", scaled), goal5

"""bench/run.py reference and the workload ratio that bench/issue12.py reads from it.

The reference command exports issue 12's commit from git and re-runs its benchmarks here (tiny sizes: the
numbers mean nothing, the test keeps the export, the old tree's runner and the ratio arithmetic working).
Needs nginx with the echo module, like test_bench_quick.py, and the repository's history (not shallow).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from calibration import REFERENCE_S  # noqa: E402
from reference import (  # noqa: E402
    REF_DELIVERY_CPU_CHILD_S,
    REF_DELIVERY_CPU_MAIN_S,
    REF_EVENTS_ROWS_PER_S,
    REFERENCE_COMMIT,
)
from sink import nginx_available  # noqa: E402


def _has_commit() -> bool:
    res = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{REFERENCE_COMMIT}^{{commit}}"],
                         capture_output=True, check=False)  # fmt: skip
    return res.returncode == 0


def test_reference_reruns_the_old_commit_and_saves_its_ratios(tmp_path: Path) -> None:
    reason = nginx_available() or (None if _has_commit() else f"{REFERENCE_COMMIT[:12]} is not in this clone")
    if reason:
        if os.environ.get("BENCH_REQUIRE_NGINX") == "1" and _has_commit():
            pytest.fail(f"nginx is required here: {reason}")
        pytest.skip(reason)
    saved = tmp_path / "ref.json"
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "reference", "--rows", "5000",
                          "--repeat", "1", "--save", str(saved)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "not comparable" in out, out  # 5,000 rows against the 1M
    assert re.search(r"k_local = [\d.]+ \(= [\d.]+ x the loop's k\)", out), out
    assert re.search(r"k_delivery = [\d.]+ \(= [\d.]+ x the loop's k\)", out), out
    doc = json.loads(saved.read_text())
    assert doc["commit"] == REFERENCE_COMMIT and doc["rows"] == 5_000
    (rnd,) = doc["rounds"]
    assert rnd["local"]["rows"] == 5_000 and rnd["delivery"]["rows"] == 5_000  # every row delivered
    # The saved ratios are the arithmetic of the raw round against the figures.
    cpu = rnd["delivery"]["cpu_main_s"] + rnd["delivery"]["cpu_child_s"]
    assert doc["k_delivery"] == pytest.approx((REF_DELIVERY_CPU_MAIN_S + REF_DELIVERY_CPU_CHILD_S) / cpu)
    assert doc["k_local"] == pytest.approx(rnd["local"]["rows"] / rnd["local"]["cpu_s"] / REF_EVENTS_ROWS_PER_S)
    assert doc["k_loop"] == pytest.approx(REFERENCE_S / (sum(rnd["loops_cpu_s"]) / 3))


def test_a_saved_workload_ratio_is_carried_to_this_runs_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import reference
    from reference import workload_scaling

    saved = tmp_path / "ref.json"
    saved.write_text(json.dumps({"commit": REFERENCE_COMMIT, "rows": 1_000_000, "measured_at": "2026-12-02T16:00:00Z",
                                 "loop_cpu_s": 0.32, "k_loop": 10.0, "k_local": 4.0, "k_delivery": 2.5,
                                 "r_local": 0.4, "r_delivery": 0.25}))  # fmt: skip
    k = workload_scaling(str(saved), 0.4)  # a loop of 0.4 s here: loop k = 8, workload k = r x 8
    assert k.loop == pytest.approx(REFERENCE_S / 0.4)
    assert (k.local, k.delivery) == (pytest.approx(0.4 * 8), pytest.approx(0.25 * 8))
    assert "loop then 0.32 s" in k.source and "local 3.20, delivery 2.00" in k.source
    given = workload_scaling("3.5", 0.4)
    assert (given.loop, given.local, given.delivery) == (pytest.approx(8), 3.5, 3.5)
    monkeypatch.setattr(reference, "LAST", ROOT / "bench" / "out" / "no-such-reference.json")
    missing = workload_scaling(None, 0.4)  # no saved measurement: the workload columns say n/a
    assert missing.local is None and missing.delivery is None and "bench/run.py reference" in missing.source
    with pytest.raises(SystemExit, match="neither a number nor a file"):
        workload_scaling(str(tmp_path / "nope.json"), 0.4)


def test_delivery_targets_print_cores_by_the_loop_and_by_the_workload() -> None:
    from calibration import delivery_targets

    [line] = delivery_targets(0.96, 0, 8.0, 16.0, 0.32, 1.0)  # 0.5 cores here; loop k 10; workload k 1
    assert "96.0% of the limit (target >= 95%: met)" in line and "429s 0 (target 0: met)" in line
    assert "0.50 cores over the run here = 5.00 scaled" in line and "target <= 0.6: missed" in line
    assert "by the delivery workload's k 1.00: 0.50 cores (met)" in line
    [unknown] = delivery_targets(0.5, 3, 8.0, 16.0, 0.32)
    assert "(target >= 95%: missed)" in unknown and "(target 0: missed)" in unknown and "no workload k" in unknown

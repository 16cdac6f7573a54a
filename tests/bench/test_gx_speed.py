"""bench/gx_speed.py, first_cpu.py and first_timeline.py keep running: both plans validate the same rows alike, the first request arrives.

The numbers of these tiny runs mean nothing (the real ones are in BENCHMARKS.md); what is checked is that the
bench still runs and that the native plan and GX reject the same number of rows on its data. gx_speed.py's
first section runs with `--no-pycache` here: one run per case, without the untimed warm-up runs (each a fresh
process, two of them importing GX). Its cached-bytecode helpers (cached_bytecode, warm_up) are still run by
test_issue12_table.py (goal 3). It also runs with `--no-import-figures`: no fresh-process import CPU figures
(three interpreters, one importing GX). BRAZE_CONNECTOR_SOAK=1 runs the section as documented, bytecode
cached, figures measured.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from needs_nginx import require_nginx  # noqa: E402

SOAK = os.environ.get("BRAZE_CONNECTOR_SOAK") == "1"


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One run of both sections (cpu and first), shared by the tests below: one bench process, one set of
    imports and calibration loops instead of two. Under xdist the two tests may land on different workers
    (tests/bench/conftest.py); the first to get here runs the bench under a lock in the session's shared
    temporary folder and leaves its output there for the other."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return _run_bench()
    shared = tmp_path_factory.getbasetemp().parent  # the session's, above each worker's own
    with (shared / "gx_speed.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        saved = shared / "gx_speed.out"
        if saved.exists():
            return saved.read_text(encoding="utf-8")
        out = _run_bench()
        saved.write_text(out, encoding="utf-8")
        return out


def _run_bench() -> str:
    """bench/gx_speed.py all at a tiny size; its stdout (the run must succeed)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Without the soak: no warm-up runs, and no fresh-process import figures (three interpreters, one importing
    # GX, ~6 s of CPU; the same _fresh_cpu runs in test_issue12_table.py's warm-up, bench/issue12.py goal 3).
    quick = [] if SOAK else ["--no-pycache", "--no-import-figures"]
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "gx_speed.py"), "all", "--rows", "4000",
                          "--chunk-rows", "1000", "--repeat", "1", *quick],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_cpu_section_prints_both_plans_with_the_same_rejects(bench_out: str) -> None:
    out = bench_out
    assert re.search(r"calibration loop [\d.]+ s CPU here", out), out
    found = re.findall(r"^(.+) \[(native|GX)\]: [\d.]+ CPU s per 1M rows .*; ([\d,]+) rejected$", out, re.M)
    by_suite: dict[str, dict[str, str]] = {}
    for suite, plan, rejected in found:
        by_suite.setdefault(suite, {})[plan] = rejected
    assert len(by_suite) == 2, out
    for plans in by_suite.values():
        assert plans["native"] == plans["GX"], out
    assert int(by_suite[next(iter(by_suite))]["native"].replace(",", "")) > 0  # the CSV data has bad rows


def test_first_section_sees_the_first_request(bench_out: str) -> None:
    require_nginx()
    firsts = re.findall(r": first request ([\d.]+|nan) s after process start", bench_out)
    assert len(firsts) == 2 and "nan" not in firsts, bench_out
    figures = r"fresh-process CPU beyond a bare interpreter \([\d.]+ s\): `import great_expectations` [\d.]+ s"
    assert re.search(figures if SOAK else r"import figures: not measured \(--no-import-figures\)", bench_out), bench_out


def _bench_script(name: str) -> subprocess.CompletedProcess[str]:
    """bench/NAME --repeat 1 against the nginx sink (skipped without nginx, except where it is required)."""
    require_nginx()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(ROOT / "bench" / name), "--repeat", "1"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_first_cpu_sees_the_first_request_with_and_without_cached_bytecode() -> None:
    """bench/first_cpu.py (this code only): both cases measured, the hook saw the first request."""
    res = _bench_script("first_cpu.py")
    figures = re.findall(r"this code, bytecode (cached|compiled every run): ([\d.]+|nan) ", res.stdout)
    assert [kind for kind, _ in figures] == ["cached", "compiled every run"], res.stdout
    assert all(float(cpu) > 0 for _, cpu in figures), res.stdout


def test_first_timeline_marks_every_step_and_the_child_starts_before_the_heavy_imports() -> None:
    """bench/first_timeline.py (this code only): every step is marked, in the run's order; the HTTP child is
    spawned at the command's start (delivery/spare.py), before the pipeline's imports (pyarrow)."""
    res = _bench_script("first_timeline.py")
    steps = re.findall(r"^    (\S.*?)\s+([\d.]+|nan)\s+([\d.]+|nan)", res.stdout, re.MULTILINE)
    order = [step for step, _, _ in steps]
    assert sorted(order) == sorted(["start", "CLI imported", "child spawned", "imports done", "config sent",
                                    "child ready", "first chunk mapped", "request ready",
                                    "first request left"]), res.stdout  # fmt: skip
    assert all("nan" not in (cpu, wall) for _, cpu, wall in steps), res.stdout
    assert order.index("child spawned") < order.index("imports done"), res.stdout

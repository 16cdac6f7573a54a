"""CPU of the main process from its start to its first request, for this code and a git ref, interleaved.

    python bench/first_cpu.py [--repeat 8] [--before REF]

The wall time to the first request (gx_speed.py first) swings with the other work on a shared machine;
this counts what the main process itself spends before its first request leaves, which is what a slower
machine stretches. Each run is `braze-connector run pipelines/users.yaml --mode bulk` (the sample CSV,
users_suite) against the nginx sink (bench/sink.py, 100 ms), in a fresh process whose first request to the
HTTP child (`_Child.start`/`send` in delivery/transport/process.py) prints the process's user + system CPU
so far; so does the moment that request is ready (the first `Sender.poke`, delivery/sender.py): from then
on the sender only waits for the HTTP child to have started while the main thread goes on with the next
chunks, so the difference is not on the way to the first request when the child is late. The hook is
first_timeline.py's (which prints every step before the first request); it imports nothing early.
Runs of this code and of `--before REF` (extracted with `git archive`) alternate, in an order reversed every
other round (first_timeline.py); each is measured with
bytecode cached (a temporary PYTHONPYCACHEPREFIX, as an installed package has it) and compiled anew
(PYTHONDONTWRITEBYTECODE=1, what this environment sets). The calibration loop is printed at every round.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from calibration import calibration_s
from first_timeline import ROOT, extract
from first_timeline import measure as timeline
from gx_speed import _pipeline_folder
from sink import NginxSink, nginx_available


def measure(tree: Path, pipeline: Path, report_dir: Path, pycache: Path | None) -> tuple[float, float]:
    """Main-process CPU seconds until its first request left, and until it was ready (nan if none)."""
    marks = timeline(tree, pipeline, report_dir, pycache)
    nan = (float("nan"), 0.0, "")
    return marks.get("first request left", nan)[0], marks.get("request ready", nan)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=8)
    ap.add_argument("--before", help="a git ref whose code to measure too (e.g. main)")
    a = ap.parse_args()
    reason = nginx_available()
    if reason:
        print(f"skipped: {reason}")
        return
    with tempfile.TemporaryDirectory(prefix="bench-first-cpu-") as tmp_s, NginxSink(latency_ms=100) as sink:
        tmp = Path(tmp_s)
        pipeline = _pipeline_folder(tmp, sink.url, gx_expectation=False)
        trees = {"this code": ROOT}
        if a.before:
            trees[f"before ({a.before})"] = extract(a.before, tmp / "before")
        caches = {label: tmp / f"pycache-{i}" for i, label in enumerate(trees)}
        cases = [(label, cached) for label in trees for cached in (True, False)]
        figures: dict[tuple[str, bool], list[float]] = {c: [] for c in cases}
        ready: dict[tuple[str, bool], list[float]] = {c: [] for c in cases}
        for label, tree in trees.items():  # untimed: fill each tree's bytecode cache
            measure(tree, pipeline, tmp / "r", caches[label])
        for i in range(a.repeat):
            row = [f"round {i + 1}: calibration loop {calibration_s():.3f} s"]
            for label, cached in cases[:: 1 if i % 2 == 0 else -1]:  # the first of a round runs slower
                cpu, at_ready = measure(trees[label], pipeline, tmp / "r", caches[label] if cached else None)
                figures[(label, cached)].append(cpu)
                ready[(label, cached)].append(at_ready)
                row.append(f"{label}, {'cached' if cached else 'compiled'}: {cpu:.2f} (ready {at_ready:.2f})")
            print(" | ".join(row), flush=True)
        print("main-process CPU s from start to the first request (median of", a.repeat, "rounds):")
        for (label, cached), values in figures.items():
            print(f"  {label}, bytecode {'cached' if cached else 'compiled every run'}: "
                  f"{statistics.median(values):.3f} (min {min(values):.3f})")  # fmt: skip
        print("... and until that request was ready, queued for the sender (median):")
        for (label, cached), values in ready.items():
            print(f"  {label} ({'cached' if cached else 'compiled every run'}): {statistics.median(values):.3f}")


if __name__ == "__main__":
    main()

"""When each step before the first request happens in the main process (CPU and wall), this code vs a git ref.

    python bench/first_timeline.py [--repeat 6] [--before REF] [--no-spare] [--compiled]

The run is first_cpu.py's (`braze-connector run pipelines/users.yaml --mode bulk`, the sample CSV and
users_suite, against the nginx sink at 100 ms), in a fresh process with bytecode cached (`--compiled`:
compiled anew, as PYTHONDONTWRITEBYTECODE has it). A hook marks, in the main process, its CPU (user +
system) and the wall time since the benchmark spawned it, at:

    start               the hook runs (the interpreter is up)
    CLI imported        connector.cli (typer, the pipeline models) imported
    child spawned       the HTTP child's Popen returned (delivery/spare.py at the command's start, or
                        the transport when the run builds its client, before delivery/spare.py)
    imports done        connector.pipeline imported (pyarrow, the readers, the writer)
    config sent         the transport gave the child its config frame (the run built its client)
    child ready         the child's ready frame arrived (its imports done and its config read); the
                        child's own CPU so far is shown beside it
    first chunk mapped  the first map_chunk returned
    request ready       the first request was queued for the sender (Sender.poke)
    first request left  the first request was handed to the child (_Child.start/send)

The hook patches each module when it is first imported (a meta path finder), so it imports nothing early
and the order of imports is the run's own. Runs of this code and of `--before REF` alternate (with
`--no-spare`, also this code with the command's early start of the child turned off: delivery/spare.py's
`start` does nothing, so the transport spawns the child when the run builds its client); the calibration
loop is printed at every round, and the order of the trees alternates from round to round. first_cpu.py
uses the same hook.
"""

from __future__ import annotations

import argparse
import atexit
import math
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from calibration import calibration_s

ROOT = Path(__file__).resolve().parent.parent

STEPS = ("start", "CLI imported", "child spawned", "imports done", "config sent", "child ready",
         "first chunk mapped", "request ready", "first request left")  # fmt: skip

# Run in the measured process: the CLI as `python -m connector` runs it, with the marks above.
HOOK = r"""
import importlib.abc, os, resource, subprocess, sys, time
T0 = float(os.environ.pop("BENCH_T0"))
TICK = os.sysconf("SC_CLK_TCK")
seen = set()

def mark(label, extra=""):
    if label in seen:
        return
    seen.add(label)
    r = resource.getrusage(resource.RUSAGE_SELF)  # microseconds (os.times counts 10 ms ticks)
    sys.stderr.write(f"MARK {r.ru_utime + r.ru_stime:.4f} {time.time() - T0:.4f} {label}{extra}\n")

def before(label, real):
    def call(*a, **k):
        mark(label)
        return real(*a, **k)
    return call

def child_cpu(pid):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return f" (child CPU {(int(fields[11]) + int(fields[12])) / TICK:.2f})"
    except (OSError, IndexError, ValueError):
        return ""

real_popen = subprocess.Popen.__init__
def popen(self, args, *a, **k):
    real_popen(self, args, *a, **k)
    if "connector.delivery.transport.child" in args:
        mark("child spawned")
subprocess.Popen.__init__ = popen

def on_objects(m):  # where map_chunk is defined (stages.py imports it from connector.mapping as it maps)
    real = m.map_chunk
    def map_chunk(*a, **k):
        out = real(*a, **k)
        mark("first chunk mapped")
        return out
    m.map_chunk = map_chunk

def on_sender(m):
    m.Sender.poke = before("request ready", m.Sender.poke)

def on_process(m):
    real = m._Child.__init__
    def init(self, *a, **k):
        real(self, *a, **k)
        mark("config sent")
        pid = self.proc.pid
        self._ready.add_done_callback(lambda f: mark("child ready", child_cpu(pid)))
    m._Child.__init__ = init
    m._Child.start = before("first request left", m._Child.start)
    m._Child.send = before("first request left", m._Child.send)

PATCHES = {"connector.cli": lambda m: mark("CLI imported"), "connector.pipeline": lambda m: mark("imports done"),
           "connector.mapping.objects": on_objects,
           "connector.delivery.sender": on_sender, "connector.delivery.transport.process": on_process}

class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None:
                break
        else:
            return None
        real = spec.loader.exec_module
        def exec_module(module):
            real(module)
            PATCHES[name](module)
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, Watch())
mark("start")
if os.environ.pop("BENCH_NO_SPARE", ""):  # (imports the pipeline models before the CLI does)
    import connector.delivery.spare
    connector.delivery.spare.start = lambda *a, **k: None
import runpy
sys.argv = ["braze-connector", *sys.argv[1:]]
runpy.run_module("connector", run_name="__main__", alter_sys=True)
"""

Marks = dict[str, tuple[float, float, str]]  # step -> (CPU s, wall s, extra)


def extract(ref: str, into: Path) -> Path:
    """The `connector` package of git ref `ref`, under `into`."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "connector"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


_BARE: dict[Path, Path] = {}


def bare_copy(tree: Path) -> Path:
    """A copy of `tree`'s `connector` package without its `__pycache__` folders (made once per tree, removed at
    exit): run with PYTHONDONTWRITEBYTECODE=1, it is compiled at every start, as a source checkout is where the
    environment sets that."""
    if tree not in _BARE:
        into = Path(tempfile.mkdtemp(prefix="bench-bare-"))
        atexit.register(shutil.rmtree, into, True)
        shutil.copytree(tree / "connector", into / "connector", ignore=shutil.ignore_patterns("__pycache__"))
        _BARE[tree] = into
    return _BARE[tree]


def measure(tree: Path, pipeline: Path, report_dir: Path, pycache: Path | None, *, spare: bool = True) -> Marks:
    """One run of the CLI from `tree`: the marks it printed (a step it never reached is missing)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "BRAZE_API_KEY": "bench-key-not-secret"}
    if not spare:
        env["BENCH_NO_SPARE"] = "1"
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        # The tree's package copied without its __pycache__/ (the test suite writes connector's,
        # tests/conftest.py), so "compiled anew" cannot turn cached. Not an empty PYTHONPYCACHEPREFIX, as
        # before: bytecode is then read only from there, so the stdlib and every installed package (numpy,
        # pydantic, typer...: ~0.3 s more here) were compiled at every run too, which PYTHONDONTWRITEBYTECODE
        # alone does not do (their bytecode was written when they were installed).
        env["PYTHONPATH"] = str(bare_copy(tree))
        env.pop("PYTHONPYCACHEPREFIX", None)
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env["BENCH_T0"] = repr(time.time())
    res = subprocess.run(
        [sys.executable, "-c", HOOK, "run", str(pipeline), "--mode", "bulk", "--quiet", "--overwrite",
         "--report-dir", str(report_dir)],
        env=env, capture_output=True, text=True, timeout=300, cwd=pipeline.parent.parent,
    )  # fmt: skip
    marks: Marks = {}
    for line in res.stderr.splitlines():
        if line.startswith("MARK "):
            _, cpu, wall, rest = line.split(" ", 3)
            label, _, extra = rest.partition(" (")
            marks[label] = (float(cpu), float(wall), f"({extra}" if extra else "")
    return marks


def main() -> None:
    from gx_speed import _pipeline_folder
    from sink import NginxSink, nginx_available

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=6)
    ap.add_argument("--before", help="a git ref whose code to measure too (e.g. main)")
    ap.add_argument("--no-spare", action="store_true", help="also this code without the early child start")
    ap.add_argument("--compiled", action="store_true", help="compile the bytecode at every run (not cached)")
    a = ap.parse_args()
    reason = nginx_available()
    if reason:
        print(f"skipped: {reason}")
        return
    with tempfile.TemporaryDirectory(prefix="bench-first-timeline-") as tmp_s, NginxSink(latency_ms=100) as sink:
        tmp = Path(tmp_s)
        pipeline = _pipeline_folder(tmp, sink.url, gx_expectation=False)
        trees = {"this code": ROOT}
        if a.no_spare:
            trees["this code, no spare"] = ROOT
        if a.before:
            trees[f"before ({a.before})"] = extract(a.before, tmp / "before")
        caches = {label: None if a.compiled else tmp / f"pycache-{i}" for i, label in enumerate(trees)}
        runs: dict[str, list[Marks]] = {label: [] for label in trees}
        spare = {label: not label.endswith("no spare") for label in trees}
        for label, tree in trees.items():  # untimed: fill each tree's bytecode cache
            measure(tree, pipeline, tmp / "r", caches[label], spare=spare[label])
        for i in range(a.repeat):
            row = [f"round {i + 1}: calibration loop {calibration_s():.3f} s"]
            # The order alternates round by round: the process run first in a round (after the calibration
            # loop) came out 6-30 ms of CPU slower than the same code run second, which a fixed order would
            # count as a difference between the trees.
            for label in list(trees)[:: 1 if i % 2 == 0 else -1]:
                marks = measure(trees[label], pipeline, tmp / "r", caches[label], spare=spare[label])
                runs[label].append(marks)
                left = marks.get("first request left", (float("nan"),) * 2)
                row.append(f"{label}: first request left at CPU {left[0]:.3f} s, wall {left[1]:.3f} s")
            print(" | ".join(row), flush=True)
        print(f"main process, median of {a.repeat} rounds, bytecode {'compiled every run' if a.compiled else 'cached'}:")
        for label, marks_list in runs.items():
            print(f"  {label}:                CPU s   wall s")
            for step in sorted(STEPS, key=lambda s: _order(marks_list, s)):
                cpu, wall = _median(marks_list, step, 0), _median(marks_list, step, 1)
                extras = [m[step][2] for m in marks_list if step in m and m[step][2]]
                extra = f"  {extras[len(extras) // 2]}" if extras else ""
                print(f"    {step:<20} {cpu:7.3f} {wall:8.3f}{extra}")


def _order(runs: list[Marks], step: str) -> tuple[bool, float]:
    """Steps by their median wall time; those never reached last."""
    wall = _median(runs, step, 1)
    return (math.isnan(wall), wall)


def _median(runs: list[Marks], step: str, index: int) -> float:
    values = [m[step][index] for m in runs if step in m]
    return statistics.median(values) if values else float("nan")


if __name__ == "__main__":
    main()

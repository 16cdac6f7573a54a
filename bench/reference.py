"""How much slower issue 12's reference machine is at the project's own work, not at a bare Python loop.

    python bench/run.py reference                  # 1M rows, 3 rounds (about 5 minutes on a quiet machine)
    python bench/run.py reference --rows 20000 --repeat 1 --save /tmp/ref.json   # a smoke run

Issue 12's targets are for a slow 2-vCPU machine. calibration.py scales CPU figures by the ratio of a
10M-iteration Python `for` loop (3.2 s there), but the issue also measured two of the project's own
workloads there, at the commit it was filed against (REFERENCE_COMMIT). This command exports that
commit's tree from git into a temporary folder and runs the same two workloads here with its own bench
code (its run.py pipelines, runner and nginx sink), interleaved with the calibration loop:

- local: a warm dry run of the 1M-row events table (run.py local); rows per CPU second here against the
  reference's rows/s (a quiet machine: that dry run is single-threaded, its wall time is its CPU time;
  BENCHMARKS.md at that commit: 1.51 s wall, 1.53 s CPU);
- delivery: the 1M-row users table, bulk, 100 ms sink, 1,000 requests/s (run.py delivery), CPU seconds of
  the main process + HTTP child here against the reference's.

k is "how many times slower the reference machine is", in the same sense as calibration.py's
k = REFERENCE_S / loop: k_local = rows per CPU s here / REF_EVENTS_ROWS_PER_S, k_delivery =
(REF_DELIVERY_CPU_MAIN_S + REF_DELIVERY_CPU_CHILD_S) / CPU s here. Each round also gives
r = k_workload / k_loop, how far the loop's k overstates (r < 1) or understates the workload's. The
medians are saved as JSON (bench/out/reference-last.json at 1M rows, or --save) for issue12.py, which
carries r over to its own run's loop (load here inflates the loop and the workloads alike).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from calibration import REFERENCE_S

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LAST = HERE / "out" / "reference-last.json"

# The commit issue 12 measured: main when the issue was filed (the last commit before the 2026-11-26 ->
# 2026-12-02 gap; its BENCHMARKS.md quotes the 961/s, 16.3 s, 8.8 + 3.8 s and 660,457 the issue compares
# with). See BENCHMARKS.md, "Calibrating against the reference machine".
REFERENCE_COMMIT = "058ff63f488f13e60117d27a84d466bfc423bcb8"
REF_ROWS = 1_000_000

# The reference machine's measurements, quoted from issue 12 ("Measured today on another 2-vCPU machine of
# the same kind (Xeon @ 2.0 GHz, slower: a 10M-iteration Python `for` loop takes about 3.2 s), quiet, with
# the project's own runner"), like calibration.REFERENCE_S:
# "`python bench/run.py local --rows 1000000`: events 124,802 rows/s (BENCHMARKS.md: 660,457)."
REF_EVENTS_ROWS_PER_S = 124_802
# "`python bench/run.py delivery --rows 1000000 --latencies 100`: ... CPU 28.7 s in the main process
# + 11.6 s in the HTTP child = 1.14 cores ... BENCHMARKS.md says 961/s, 16.3 s, 8.8 + 3.8 s."
REF_DELIVERY_CPU_MAIN_S = 28.7
REF_DELIVERY_CPU_CHILD_S = 11.6

# Runs in a fresh interpreter inside the exported tree: its bench/run.py, data.py and sink.py, its connector.
_DRIVER = r"""
import json, sys, time
tree, rows, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sys.path[:0] = [tree, tree + "/bench"]
import run as old
from data import write_parquet
from sink import NginxSink

def loop():
    c0, t0 = time.process_time(), time.perf_counter()
    x = 0
    for i in range(10_000_000):
        x += i
    return time.process_time() - c0, time.perf_counter() - t0

events, users = write_parquet("events", rows), write_parquet("users", rows)
local_pipe = old.events_pipeline(events, "local")
old._run(local_pipe, dry_run=True)  # warm-up, as run.py local times a warm run
for _ in range(repeat):
    out = {}
    out["loop_cpu_s"], out["loop_wall_s"] = loop()
    rep, wall, cpu = old._run(local_pipe, dry_run=True)
    out["local"] = {"rows": rep["rows"]["read"], "wall_s": wall, "cpu_s": cpu}
    loop2 = loop()
    with NginxSink(latency_ms=100, limit_rps=1000, burst=100) as sink:
        child0 = old._children_cpu()
        rep, wall, cpu = old._run(old.users_pipeline(users, sink.url, rps=1000, concurrency=160))
        child = old._children_cpu() - child0
    out["delivery"] = {"rows": rep["rows"]["delivered"], "wall_s": wall, "cpu_main_s": cpu, "cpu_child_s": child,
                       "requests_per_s_sending": rep["throughput"]["requests_per_s_sending"]}
    loop3 = loop()
    out["loops_cpu_s"] = [out["loop_cpu_s"], loop2[0], loop3[0]]
    out["loops_wall_s"] = [out["loop_wall_s"], loop2[1], loop3[1]]
    print("ROUND " + json.dumps(out), flush=True)
"""


def export_tree(commit: str, dest: Path) -> None:
    """Write `commit`'s tree (git archive) into dest."""
    res = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"cannot export {commit} from {ROOT} with git archive: "
                         f"{res.stderr.decode(errors='replace').strip()} (a shallow clone lacks it: git fetch --unshallow)")  # fmt: skip
    with tarfile.open(fileobj=BytesIO(res.stdout)) as tar:
        tar.extractall(dest, filter="data")


def round_ratios(r: dict[str, Any]) -> dict[str, float]:
    """The k of each workload and of the loop for one round (each workload against the loop next to it)."""
    local_rate = r["local"]["rows"] / max(r["local"]["cpu_s"], 1e-9)
    delivery_cpu = r["delivery"]["cpu_main_s"] + r["delivery"]["cpu_child_s"]
    loop_local = statistics.mean(r["loops_cpu_s"][:2])  # the loops before and after the local run
    loop_delivery = statistics.mean(r["loops_cpu_s"][1:])
    k_local = local_rate / REF_EVENTS_ROWS_PER_S
    k_delivery = (REF_DELIVERY_CPU_MAIN_S + REF_DELIVERY_CPU_CHILD_S) / max(delivery_cpu, 1e-9)
    return {
        "k_local": k_local,
        "k_delivery": k_delivery,
        "k_loop": REFERENCE_S / statistics.mean(r["loops_cpu_s"]),
        "r_local": k_local / (REFERENCE_S / loop_local),
        "r_delivery": k_delivery / (REFERENCE_S / loop_delivery),
    }


def measure(rows: int, repeat: int, commit: str = REFERENCE_COMMIT) -> list[dict[str, Any]]:
    """Run the old commit's two workloads here, `repeat` rounds interleaved with the loop; the raw rounds."""
    with tempfile.TemporaryDirectory(prefix="bench-reference-") as tmp:
        tree = Path(tmp)
        export_tree(commit, tree)
        res = subprocess.run([sys.executable, "-c", _DRIVER, str(tree), str(rows), str(repeat)],
                             capture_output=True, text=True, cwd=tree, env=_env(tree), check=False)  # fmt: skip
    if res.returncode != 0:
        raise SystemExit(f"the reference run at {commit[:12]} failed:\n{res.stderr[-3000:]}")
    return [json.loads(line[6:]) for line in res.stdout.splitlines() if line.startswith("ROUND ")]


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def reference_section(rows: int, repeat: int, save: Path | None, commit: str = REFERENCE_COMMIT) -> list[str]:
    """`bench/run.py reference`: the workload ratios, per round and their medians; saves them as JSON."""
    rounds = measure(rows, repeat, commit)
    out = [f"## Reference machine by workload: commit {commit[:12]} (issue 12's) re-run here, {rows:,} rows, "
           f"{len(rounds)} rounds"]  # fmt: skip
    if rows != REF_ROWS:
        out.append(f"(the issue's figures are for {REF_ROWS:,} rows: at {rows:,} start-up weighs more, the ratios "
                   f"below are not comparable)")  # fmt: skip
    ks = []
    for i, r in enumerate(rounds, 1):
        k = round_ratios(r)
        ks.append(k)
        d, loc = r["delivery"], r["local"]
        out += [
            f"round {i}: calibration loop {', '.join(f'{c:.2f}' for c in r['loops_cpu_s'])} s CPU "
            f"({', '.join(f'{w:.2f}' for w in r['loops_wall_s'])} s wall) -> for-loop k = {k['k_loop']:.1f}",
            f"  local (events dry run): {loc['rows'] / loc['cpu_s']:,.0f} rows per CPU s here "
            f"({loc['rows'] / loc['wall_s']:,.0f} rows/s wall; CPU {loc['cpu_s']:.2f} s, wall {loc['wall_s']:.2f} s) "
            f"vs {REF_EVENTS_ROWS_PER_S:,} on the reference -> k_local = {k['k_local']:.2f} "
            f"(= {k['r_local']:.2f} x the loop's k)",
            f"  delivery (users, 100 ms): CPU {d['cpu_main_s']:.1f} s main + {d['cpu_child_s']:.1f} s child here "
            f"({d['wall_s']:.1f} s wall, {d['requests_per_s_sending']:,.0f} requests/s, {d['rows']:,} delivered) vs "
            f"{REF_DELIVERY_CPU_MAIN_S} + {REF_DELIVERY_CPU_CHILD_S} s on the reference -> "
            f"k_delivery = {k['k_delivery']:.2f} (= {k['r_delivery']:.2f} x the loop's k)",
        ]
    med = {name: statistics.median(k[name] for k in ks) for name in ks[0]}
    loop_med = statistics.median(c for r in rounds for c in r["loops_cpu_s"])
    out.append(f"median: for-loop k {med['k_loop']:.1f} (loop {loop_med:.2f} s); k_local {med['k_local']:.2f} "
               f"= {med['r_local']:.2f} x the loop's k; k_delivery {med['k_delivery']:.2f} = {med['r_delivery']:.2f} "
               f"x the loop's k")  # fmt: skip
    if save is not None:
        doc = {"commit": commit, "rows": rows, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "loop_cpu_s": loop_med, **med, "rounds": rounds}  # fmt: skip
        save.parent.mkdir(parents=True, exist_ok=True)
        save.write_text(json.dumps(doc, indent=1) + "\n")
        out.append(f"saved to {save} (bench/run.py issue12 reads {LAST.relative_to(ROOT)} unless --workload-k)")
    return out


__all__ = ["REFERENCE_COMMIT", "REF_EVENTS_ROWS_PER_S", "REF_DELIVERY_CPU_MAIN_S", "REF_DELIVERY_CPU_CHILD_S",
           "reference_section", "LAST"]  # fmt: skip


@dataclass(frozen=True)
class Scaling:
    """How many times slower the reference machine is: by the loop, and by the workload (None: unknown)."""

    loop: float
    local: float | None  # the events dry run (reference.py), for local CPU work
    delivery: float | None  # a delivering run's main + child CPU (reference.py)
    source: str  # where the workload ratios come from, printed under the table


def workload_scaling(spec: str | None, loop_s: float) -> Scaling:
    """The loop's k for a loop of loop_s here, and the workload k from spec: a number (taken as both
    workloads' k), a JSON file saved by `bench/run.py reference`, or None (its last save, if any)."""
    k_loop = REFERENCE_S / loop_s
    if spec is not None:
        try:
            k = float(spec)
        except ValueError:
            pass
        else:
            return Scaling(k_loop, k, k, f"workload k = {k:g} given (--workload-k), both workloads")
    path = Path(spec) if spec is not None else LAST
    if not path.exists():
        if spec is not None:
            raise SystemExit(f"--workload-k {spec}: neither a number nor a file")
        return Scaling(k_loop, None, None, f"no workload ratio: {path.relative_to(ROOT)} is missing "
                                           f"(python bench/run.py reference; or --workload-k VALUE)")  # fmt: skip
    doc = json.loads(path.read_text())
    local, delivery = doc["r_local"] * k_loop, doc["r_delivery"] * k_loop
    return Scaling(k_loop, local, delivery,
                   f"workload k from {path.name}: commit {doc['commit'][:12]} re-run here at {doc['rows']:,} rows "
                   f"({doc['measured_at']}, loop then {doc['loop_cpu_s']:.2f} s: k_local {doc['k_local']:.2f} = "
                   f"r {doc['r_local']:.2f} x the loop's k {doc['k_loop']:.1f}, k_delivery {doc['k_delivery']:.2f} = "
                   f"r {doc['r_delivery']:.2f} x it), carried to this run's loop ({loop_s:.2f} s, k {k_loop:.1f}) "
                   f"as r x k: local {local:.2f}, delivery {delivery:.2f}")  # fmt: skip

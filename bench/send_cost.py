"""Issue 12, the sending side: CPU per 1M objects of a delivering run, % of the limit, 429s, threads.

    python bench/send_cost.py --rows 300000 --latency 100            # figures only
    python bench/send_cost.py --rows 300000 --latency 100 --profile  # + cProfile of the main process

One bulk run of the users table (no expectation suite, so the figures are about delivery) against the
nginx sink (bench/sink.py) at `--latency` ms with a 1,000 requests/s limit. CPU is measured with
resource.getrusage: RUSAGE_SELF for this process, RUSAGE_CHILDREN for the HTTP child (it has exited
when the run returns); never wall-clock speed alone. The calibration loop (a 10M-iteration Python `for`)
runs in the same invocation, so a figure can be compared across machines (issue 12: about 3.2 s on the
slow reference machine). `threads` is the most threads seen alive in this process during the run.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from calibration import calibration_s, delivery_targets  # noqa: E402
from data import write_parquet  # noqa: E402
from reference import workload_scaling  # noqa: E402
from run import KEY, users_pipeline  # noqa: E402
from sink import NginxSink, nginx_available  # noqa: E402

from connector.pipeline import run_pipeline  # noqa: E402


def _thread_cpu(native_id: int) -> float:
    """utime + stime of one thread of this process (Linux /proc), in seconds; 0 when it has ended."""
    try:
        fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


class _ThreadPeak:
    """The most threads alive in this process, and each thread's CPU seconds (from /proc), sampled every 50 ms."""

    def __init__(self) -> None:
        self.peak = threading.active_count()
        self.cpu: dict[int, tuple[str, float]] = {}  # native id -> (name, CPU seconds)
        self._start = {t.native_id: _thread_cpu(t.native_id) for t in threading.enumerate() if t.native_id}
        self._done = threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()

    def _watch(self) -> None:
        while not self._done.wait(0.05):
            threads = threading.enumerate()
            self.peak = max(self.peak, len(threads))
            for t in threads:
                if t.native_id and t is not self._t:
                    self.cpu[t.native_id] = (t.name, _thread_cpu(t.native_id) - self._start.get(t.native_id, 0.0))

    def by_name(self) -> str:
        """CPU seconds per thread kind (numbered names folded), largest first."""
        kinds: dict[str, float] = {}
        for name, cpu in self.cpu.values():
            kind = name.rstrip("0123456789_-").split(" (")[0] or name
            kinds[kind] = kinds.get(kind, 0.0) + cpu
        return ", ".join(f"{k} {v:.2f} s" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))

    def stop(self) -> int:
        self._done.set()
        self._t.join()
        return self.peak - 1  # not counting the sampler


def dry_cpu(path: Path, rows: int) -> float:
    """CPU seconds of a dry run of the same table (read, map, pack; nothing sent): what is not delivery."""
    pipeline = users_pipeline(path, "http://127.0.0.1:9", suite=False)
    c0 = _cpu(resource.RUSAGE_SELF)
    run_pipeline(pipeline, env={**os.environ, "BENCH_BRAZE_KEY": KEY}, dry_run=True, raise_on_failure=False)
    return _cpu(resource.RUSAGE_SELF) - c0


def run(rows: int, latency: float, rps: int, profile: bool, concurrency: int | None) -> list[str]:
    path = write_parquet("users", rows)
    calib = calibration_s()
    dry = dry_cpu(path, rows)
    out = [f"# bench/send_cost.py --rows {rows} --latency {latency:g}  ({os.cpu_count()} cores)",
           f"calibration loop (10M-iteration for): {calib:.2f} s CPU (reference slow machine: ~3.2 s)"]  # fmt: skip
    with NginxSink(latency_ms=latency, limit_rps=rps, burst=rps // 10) as sink:
        conc = concurrency or min(512, max(160, int(rps * latency / 1000 * 1.6)))
        pipeline = users_pipeline(path, sink.url, rps=rps, concurrency=conc, suite=False)
        env = {**os.environ, "BENCH_BRAZE_KEY": KEY}
        prof = cProfile.Profile() if profile else None
        loop_prof = _profile_sender() if profile else None
        self0, child0 = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
        peak = _ThreadPeak()
        t0 = time.perf_counter()
        if prof is not None:
            prof.enable()
        rep: Any = run_pipeline(pipeline, env=env, raise_on_failure=False).to_dict()
        if prof is not None:
            prof.disable()
        wall = time.perf_counter() - t0
        threads = peak.stop()
        main_cpu = _cpu(resource.RUSAGE_SELF) - self0
        child_cpu = _cpu(resource.RUSAGE_CHILDREN) - child0
    objects = rep["rows"]["delivered"] or 1
    r = rep["requests"]
    sending = rep["throughput"]["requests_per_s_sending"]
    status_429 = r["by_status"].get("429", 0) + r.get("rate_limited", 0)
    per_m = 1_000_000 / objects
    share = sending / rps
    out += [
        f"rows delivered {rep['rows']['delivered']:,} of {rep['rows']['read']:,} in {wall:.1f} s "
        f"(exit {rep['exit_code']}, concurrency {conc}, latency {latency:g} ms, limit {rps}/s)",
        f"CPU: main {main_cpu:.2f} s + HTTP child {child_cpu:.2f} s = {main_cpu + child_cpu:.2f} s; "
        f"per 1M objects: main {main_cpu * per_m:.1f} s + child {child_cpu * per_m:.1f} s = "
        f"{(main_cpu + child_cpu) * per_m:.1f} s; a dry run of the same table: {dry * per_m:.1f} s, so "
        f"delivery costs {(main_cpu + child_cpu - dry) * per_m:.1f} s per 1M objects; at the full rate "
        f"({rps * 75:,} objects/s) that CPU per object means {(main_cpu + child_cpu) / objects * rps * 75:.2f} cores",
        f"requests/s while sending: {sending:,.0f} = {share:.1%} of the limit; 429s: {status_429}",
        f"CPU by thread (sampled every 50 ms; the last 50 ms of a thread may be missing): {peak.by_name()}",
        f"threads alive at most: {threads}; HTTP p50/p99 {rep['latency_ms']['p50']:.0f}/"
        f"{rep['latency_ms']['p99']:.0f} ms",
    ]
    out += delivery_targets(share, status_429, main_cpu + child_cpu, wall, calib,
                                workload_scaling(None, calib).delivery)
    if prof is not None:
        out += _hottest(prof, "the main thread")
    if loop_prof is not None:
        out += _hottest(loop_prof, "the writer's event-loop thread")
    return out


def _hottest(prof: cProfile.Profile, who: str, n: int = 15) -> list[str]:
    raw = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    out = [f"hottest functions of {who} (own time; profiled total {total:.2f} s):"]
    for (f, line, fn), (_cc, nc, tt, _ct, _c) in sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:n]:
        short = f.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        out.append(f"  {tt:6.2f} s  {nc:>9,} calls  {short}:{line} {fn}")
    return out


def _profile_sender() -> cProfile.Profile | None:
    """Profile the writer's event-loop thread too (delivery/sender.py), where the code has one."""
    try:
        from connector.delivery.sender import Sender
    except ImportError:
        return None
    prof = cProfile.Profile()
    main = Sender._main

    def profiled(self: Sender) -> None:
        prof.enable()
        try:
            main(self)
        finally:
            prof.disable()

    Sender._main = profiled  # type: ignore[method-assign]
    return prof


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--latency", type=float, default=100)
    ap.add_argument("--rps", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=None)
    ap.add_argument("--profile", action="store_true", help="cProfile the main process (slows it down)")
    a = ap.parse_args()
    if reason := nginx_available():
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    for line in run(a.rows, a.latency, a.rps, a.profile, a.concurrency):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

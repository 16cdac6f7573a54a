"""Where a first delta run's extra CPU goes, by thread: a plain run then a first delta run (state file) of
warehouse_delta.py's table, with each thread's CPU seconds read from /proc while it runs.

    python bench/delta_threads.py [--rows 300000] [--profile]

Prints, per run, wall and this process's CPU seconds (the HTTP child's apart), each thread's share (main:
reading, mapping and deciding; braze-sender: the event loop; delta-settle: answers settled and
transactions committed off the loop; ...) and how the writer's loop settled the delta answers
(`settle_nowait`: 0 at once, a ticket or DRAIN to wait for off the loop, None when the state was busy and
the answer went to a settle thread). `--profile` adds a cProfile of every thread of the delta run (thread
CPU clock; slows it down a lot: shares, not seconds). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import warehouse_delta as wd  # noqa: E402
from pg_server import PgServer  # noqa: E402
from sink import NginxSink  # noqa: E402

from connector.delta import state as delta_state  # noqa: E402
from connector.pipeline import run_pipeline  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
ANSWERS: collections.Counter[str] = collections.Counter()


def _count_answers() -> None:
    """Count what settle_nowait returned (the writer's loop settles every delta answer through it)."""
    real = delta_state.DeltaState.settle_nowait

    def counted(self: Any, stream: str, keys: Any, delivered: bool) -> int | None:
        out = real(self, stream, keys, delivered)
        ANSWERS["busy" if out is None else "wait" if out else "at once"] += 1
        return out

    delta_state.DeltaState.settle_nowait = counted  # type: ignore[method-assign]


class Threads:
    """Each thread's CPU seconds since this object was made, sampled every 50 ms (threads end mid-run)."""

    def __init__(self) -> None:
        self.cpu: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._sample()
        self.base = dict(self.cpu)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for t in threading.enumerate():
            if t.native_id:
                self.names[t.native_id] = t.name
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile: its last sample stands
            self.cpu[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def done(self) -> collections.Counter[str]:
        self._sample()
        self._stop.set()
        self._thread.join()
        out: collections.Counter[str] = collections.Counter()
        for tid, c in self.cpu.items():
            name = "main" if tid == os.getpid() else self.names.get(tid, "?")
            name = next((p for p in ("delta-settle", "ThreadPoolExecutor", "Thread-") if name.startswith(p)), name)
            out[name] += c - self.base.get(tid, 0.0)
        return out


def _profile(into: list[cProfile.Profile]) -> None:
    """Profile the calling thread from now on (its CPU clock)."""
    p = cProfile.Profile(time.thread_time)
    into.append(p)
    p.enable()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    _count_answers()
    print(f"# bench/delta_threads.py --rows {a.rows}; calibration loop {wd.calibration():.2f} s CPU", flush=True)
    with PgServer() as pg, tempfile.TemporaryDirectory() as tmp, NginxSink(latency_ms=20, limit_rps=1000, burst=100) as sink:
        wd.make_table(pg.url, a.rows)
        env = {**os.environ, "BENCH_BRAZE_KEY": wd.KEY, "BENCH_PG_URL": pg.url}
        state = {"path": str(Path(tmp) / "state.sqlite")}
        for label, delta in (("plain", False), ("first delta", True)):
            pipe = wd.pipeline("BENCH_PG_URL", sink.url, 1000, delta=delta, state=state, reports=Path(tmp) / "r")
            profiles: list[cProfile.Profile] = []
            if a.profile and delta:
                threading.setprofile(lambda *_, into=profiles: _profile(into))
                _profile(profiles)
            threads, c0, w0, k0 = Threads(), time.process_time(), time.perf_counter(), wd._children_cpu()
            report = run_pipeline(pipe, env=env, raise_on_failure=False).to_dict()
            cpu, wall, child = time.process_time() - c0, time.perf_counter() - w0, wd._children_cpu() - k0
            if profiles:
                threading.setprofile(None)
                profiles[0].disable()
            shares = " ".join(f"{k}={v:.2f}" for k, v in threads.done().most_common() if v >= 0.005)
            print(f"{label}: wall {wall:.1f} s, CPU {cpu:.2f} s (HTTP child {child:.2f} s), delivered "
                  f"{report['rows']['delivered']:,}; threads: {shares}; answers: {dict(ANSWERS)}", flush=True)  # fmt: skip
            ANSWERS.clear()
            if profiles:
                stats = pstats.Stats(profiles[0])
                for p in profiles[1:]:
                    stats.add(p)
                stats.sort_stats("tottime").print_stats(40)


if __name__ == "__main__":
    main()

"""One benchmark runner for issue 5: delivery, local processing, memory, sync mode; ratios in one run.

    python bench/run.py                       # everything, default sizes (about 10 minutes)
    python bench/run.py delivery --rows 1000000
    python bench/run.py local --rows 1000000
    python bench/run.py memory --sizes 200000,2000000,10000000
    python bench/run.py sync --seconds 60
    python bench/run.py delta --rows 1000000   # --keys seq|uuid|both (default both): the users' id shape
    python bench/run.py issue12               # issue 12's six goals: measured, target, met/missed (issue12.py)
    python bench/run.py reference             # issue 12's commit re-run here: the reference machine's k by
                                              # workload (reference.py; saved for issue12)
    python bench/run.py --quick               # tiny sizes: a smoke run (used by the test suite)

Every HTTP target is an nginx sink on 127.0.0.1 (bench/sink.py) that answers like Braze after a fixed
latency and enforces the rate limit with 429s. Baselines (the naive iterrows loop, the braze-client loop)
run in the same invocation on the same sink and data, so the printed ratios compare like with like.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from baselines import braze_client_loop, naive_loop  # noqa: E402
from calibration import calibration_s, delivery_targets  # noqa: E402
from data import CHANGED_EVERY, users_spec, write_parquet  # noqa: E402
from reference import workload_scaling  # noqa: E402
from sink import NginxSink, nginx_available  # noqa: E402

from connector.config import Pipeline  # noqa: E402
from connector.pipeline import run_pipeline  # noqa: E402

KEY = "bench-key-not-secret"


def users_pipeline(path: Path, url: str, *, rps: int = 1000, concurrency: int = 160, suite: bool = True, **write: Any) -> Pipeline:
    """The users table as an analyst would map it, with the 5-expectation suite."""
    return Pipeline.model_validate(
        {
            "name": "bench_users",
            "base_dir": str(ROOT),
            "destination": {"url": url, "api_key_env": "BENCH_BRAZE_KEY"},
            "write": {
                "mode": "bulk",
                "concurrency": concurrency,
                "rate_limits": {"users_track": {"requests": rps, "per_seconds": 1}},
                **write,
            },
            "report": {"dir": str(Path(tempfile.gettempdir()) / "bench-reports" / "{run_id}")},
            "streams": [
                {
                    "name": "users",
                    "source": {"path": str(path), "chunk_rows": 50_000},
                    **users_spec(),
                    "expectations": ["bench_users_suite"] if suite else [],
                }
            ],
        }
    )


def events_pipeline(path: Path, url: str) -> Pipeline:
    return Pipeline.model_validate(
        {
            "name": "bench_events",
            "base_dir": str(ROOT),
            "destination": {"url": url, "api_key_env": "BENCH_BRAZE_KEY"},
            "report": {"dir": str(Path(tempfile.gettempdir()) / "bench-reports" / "{run_id}")},
            "streams": [
                {
                    "name": "events",
                    "source": {"path": str(path), "chunk_rows": 50_000},
                    "kind": "events",
                    "identifier": {"external_id": "user_id"},
                    "event": {
                        "name": "event_name",
                        "time": "event_time",
                        "properties": {"columns": {"amount": "amount", "sku": "sku"}},
                    },
                }
            ],
        }
    )


def _run(pipeline: Pipeline, **kw: Any) -> tuple[dict[str, Any], float, float]:
    env = {**os.environ, "BENCH_BRAZE_KEY": KEY}
    t0, c0 = time.perf_counter(), time.process_time()
    report = run_pipeline(pipeline, env=env, raise_on_failure=False, **kw)  # the report tells, whatever the exit
    return report.to_dict(), time.perf_counter() - t0, time.process_time() - c0


# --------------------------------------------------------------------------- delivery


def _children_cpu() -> float:
    """CPU seconds of finished child processes (the HTTP process of the aiohttp-process transport)."""
    t = os.times()
    return t.children_user + t.children_system


def bench_delivery(rows: int, latencies: list[float], baseline_s: float, rps: int, transport: str = "auto") -> list[str]:
    path = write_parquet("users", rows)
    out = [f"## Delivery: {rows:,}-row users Parquet, bulk mode, limit {rps} requests/s, 75 objects/request"]
    calib = calibration_s()
    out.append(f"calibration loop (10M-iteration for): {calib:.2f} s CPU")
    for latency in latencies:
        with NginxSink(latency_ms=latency, limit_rps=rps, burst=rps // 10) as sink:
            child0 = _children_cpu()
            # Requests in flight needed = rate x latency (Little's law), with room for latency jitter; at
            # least the default (160) that a pipeline without `concurrency` gets in bulk mode.
            concurrency = min(512, max(160, int(rps * latency / 1000 * 1.6)))
            rep, wall, cpu = _run(users_pipeline(path, sink.url, rps=rps, transport=transport, concurrency=concurrency))
            child_cpu = _children_cpu() - child0
            r = rep["requests"]
            sending = rep["throughput"]["requests_per_s_sending"]
            whole = rep["throughput"]["requests_per_s"]
            naive = naive_loop(sink.url, KEY, path, baseline_s)
            bc = braze_client_loop(sink.url, KEY, path, baseline_s)
        status_429 = r["by_status"].get("429", 0) + r.get("rate_limited", 0)
        out += [
            f"latency {latency:.0f} ms: rows delivered {rep['rows']['delivered']:,} of {rep['rows']['read']:,} in {wall:.1f} s "
            f"(exit {rep['exit_code']}, transport {transport}, concurrency {concurrency})",
            f"  connector: {sending:,.0f} requests/s while sending = {sending / rps:.1%} of the limit "
            f"({rep['throughput']['sending_s']:.1f} s from first request to last answer; over the whole run incl. "
            f"startup: {whole:,.0f}/s = {whole / rps:.1%}); 429s: {status_429}",
            f"  CPU: this process {cpu:.1f} s + HTTP child {child_cpu:.1f} s over {wall:.1f} s = "
            f"{(cpu + child_cpu) / wall:.2f} cores of 2; {rep['throughput']['objects_per_s']:,.0f} objects/s; "
            f"HTTP p50/p99 {rep['latency_ms']['p50']:.0f}/{rep['latency_ms']['p99']:.0f} ms",
            f"  naive iterrows+requests.post loop: {naive['requests_per_s']:.1f} requests/s -> connector x{sending / naive['requests_per_s']:.0f}",
            f"  braze-client loop:                 {bc['requests_per_s']:.1f} requests/s -> connector x{sending / bc['requests_per_s']:.0f}",
        ]
        if latency == 100:
            out += delivery_targets(sending / rps, status_429, cpu + child_cpu, wall, calib,
                                    workload_scaling(None, calib).delivery)
    return out


# --------------------------------------------------------------------------- local processing


# Stage -> (file, function) of its entry point; its cumulative time is the stage's time.
_STAGES = {
    "read (readers, pyarrow)": ("connector/readers/__init__.py", "read_source"),
    "expectations (GX suite)": ("connector/validation/__init__.py", "validate"),
    "map + cast + contract (mapper)": ("connector/mapping/objects.py", "map_chunk"),
    "pack + serialise (writer)": ("connector/writer.py", "submit"),
    "report + rejects": ("connector/report/run.py", "add_rejects"),
}


def _stage_breakdown(prof: cProfile.Profile, wall: float) -> list[str]:
    """Cumulative time of each stage's entry point, the contract's share, and the hottest functions."""
    stats = pstats.Stats(prof)
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_f, _l, _fn), (_cc, _nc, tt, _ct, _c) in raw.items())
    lines = []
    for stage, (file, fn) in _STAGES.items():
        ct = sum(v[3] for (f, _l, name), v in raw.items() if f.endswith(file) and name == fn)
        lines.append(f"    {stage:32s} {ct:6.2f} s  {ct / total:5.1%}")
    contract = sum(v[2] for (f, _l, _n), v in raw.items() if "connector/contract" in f)
    lines.append(f"    {'  of which contract checks (own)':32s} {contract:6.2f} s  {contract / total:5.1%}")
    lines.append(f"    (profiled total {total:.2f} s; the same run unprofiled took {wall:.2f} s)")
    top = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:8]
    lines.append("    hottest functions (own time):")
    for (filename, line, fn), (_cc, nc, tt, _ct, _c) in top:
        short = filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        lines.append(f"      {tt:6.2f} s  {nc:>9,} calls  {short}:{line} {fn}")
    return lines


def _naive_local(path: Path, rows: int) -> float:
    """The naive local loop: iterrows + dict + json.dumps per row (rows/s), on a slice of the table."""
    import pandas as pd

    df = pd.read_parquet(path).head(rows)
    t0 = time.perf_counter()
    for _, row in df.iterrows():
        json.dumps({k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}, default=str)
    return len(df) / (time.perf_counter() - t0)


_COLD_CHILD = r"""
import os, sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[3]); sys.path.insert(0, sys.argv[3] + "/bench")
from pathlib import Path
from run import events_pipeline, users_pipeline
from connector.pipeline import run_pipeline
path = Path(sys.argv[2])
pipe = users_pipeline(path, "local") if sys.argv[1] == "users" else events_pipeline(path, "local")
run_pipeline(pipe, dry_run=True, env={"BENCH_BRAZE_KEY": "x"}, raise_on_failure=False)
print(time.perf_counter() - t0)
"""


def _cold_dry_run(kind: str, path: Path) -> float:
    """Seconds for one dry run in a fresh interpreter, imports included (what `braze-connector run` pays)."""
    res = subprocess.run([sys.executable, "-c", _COLD_CHILD, kind, str(path), str(ROOT)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return float(res.stdout.strip().splitlines()[-1])


def bench_local(rows: int) -> list[str]:
    out = [f"## Local processing (dry run: read + suite + map + contract + serialise), {rows:,} rows"]
    for kind in ("users", "events"):
        path = write_parquet(kind, rows)
        pipe = users_pipeline(path, "local") if kind == "users" else events_pipeline(path, "local")
        # A fresh process (imports included, as a CLI run pays them), then a warm-up, the clean timing and a
        # profiled run for the breakdown.
        cold = _cold_dry_run(kind, path)
        _run(pipe, dry_run=True)
        rep, wall, cpu = _run(pipe, dry_run=True)
        prof = cProfile.Profile()
        prof.enable()
        _run(pipe, dry_run=True)
        prof.disable()
        rate = rep["rows"]["read"] / wall
        out.append(
            f"{kind}: {rate:,.0f} rows/s ({rep['rows']['read']:,} rows in {wall:.2f} s, CPU {cpu:.2f} s; "
            f"valid {rep['rows']['skipped']:,}, rejected {rep['rows']['rejected']:,})"
            + (" with the 5-expectation suite" if kind == "users" else "")
            + f"; in a fresh process (imports included): {rep['rows']['read'] / cold:,.0f} rows/s"
        )
        out.append("  per stage (cumulative time of its entry point, cProfile run):")
        out += _stage_breakdown(prof, wall)
    naive = _naive_local(write_parquet("users", rows), min(rows, 50_000))
    users_rate = float(out[1].split(":")[1].split("rows/s")[0].replace(",", ""))
    out.append(f"naive iterrows + json loop: {naive:,.0f} rows/s -> connector users x{users_rate / naive:.0f}")
    return out


# --------------------------------------------------------------------------- memory


_MEM_CHILD = r"""
import os, resource, sys, time
sys.path.insert(0, sys.argv[2]); sys.path.insert(0, sys.argv[2] + "/bench")
from run import users_pipeline
from connector.pipeline import run_pipeline
from pathlib import Path
t0 = time.perf_counter()
command = sys.argv[3]
url = sys.argv[4] if command == "run" else "local"
kw = {"validate_only": True} if command == "validate" else {"dry_run": True} if command == "dry-run" else {}
rep = run_pipeline(users_pipeline(Path(sys.argv[1]), url), env={"BENCH_BRAZE_KEY": "bench-key-not-secret"},
                   raise_on_failure=False, **kw)
# VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec, so a child of a big parent would report the
# parent's size.
try:
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(rep.to_dict()["rows"]["read"], peak, time.perf_counter() - t0)
"""


def bench_memory(sizes: list[int]) -> list[str]:
    out = ["## Memory: peak RSS of `validate`, `run --dry-run` (which also maps, packs and serialises every request"
           " body) and a delivering bulk `run` (main process; the HTTP child is separate) on users Parquet, one fresh"
           " process per size and command"]  # fmt: skip
    # A delivering run (bulk, 20 ms sink, 1,000 requests/s) takes 13 s per million rows: up to 2M only.
    run_sizes = [n for n in sizes if n <= 2_000_000]
    with NginxSink(latency_ms=20) as sink:
        for command, command_sizes in (("validate", sizes), ("dry-run", sizes), ("run", run_sizes)):
            out += _memory_runs(command, command_sizes, sink.url)
    return out


def _memory_runs(command: str, sizes: list[int], url: str) -> list[str]:
    """Peak RSS of one command per size, each in a fresh process (`run` delivers to the sink at `url`)."""
    out = []
    base = None
    for n in sizes:
        read, mb, secs = peak_rss(command, n, url)
        base = base or mb
        out.append(f"{command:>8} {n:>12,} rows: peak RSS {mb:7.1f} MB  (x{mb / base:.2f} of the smallest)  "
                   f"read {read:,} rows in {secs:.1f} s")  # fmt: skip
    return out


def peak_rss(command: str, n: int, url: str) -> tuple[int, float, float]:
    """(rows read, peak RSS in MB, seconds) of one command on n users rows, in a fresh process."""
    path = write_parquet("users", n)
    res = subprocess.run([sys.executable, "-c", _MEM_CHILD, str(path), str(ROOT), command, url],
                         capture_output=True, text=True, check=True)  # fmt: skip
    read, rss_kb, secs = res.stdout.strip().splitlines()[-1].split()
    return int(read), int(rss_kb) / 1024, float(secs)


# --------------------------------------------------------------------------- sync


def bench_sync(seconds: float, latency: float) -> list[str]:
    rows = int(500 / 60 * seconds)
    path = write_parquet("users", max(rows, 1000))
    # The sink enforces Braze's 500 per minute (nginx: a request every 120 ms, a burst of 10 allowed).
    with NginxSink(latency_ms=latency, limit_rps=500, burst=10, per_minute=True) as sink:
        pipe = users_pipeline(path, sink.url, concurrency=8, suite=False)
        data = pipe.model_dump()
        data["write"]["mode"] = "sync"
        data["write"]["rate_limits"] = {}
        data["streams"][0]["source"]["path"] = str(path)
        data["report"]["dir"] = str(Path(tempfile.gettempdir()) / "bench-reports" / "{run_id}")
        # a bounded run: just enough rows for `seconds` at the limit
        import pyarrow.parquet as pq

        small = Path(tempfile.gettempdir()) / f"bench-sync-{rows}.parquet"
        pq.write_table(pq.read_table(path).slice(0, rows), small)
        data["streams"][0]["source"]["path"] = str(small)
        rep, wall, _cpu = _run(Pipeline.model_validate(data), mode="sync")
    r = rep["requests"]
    per_min = r["total"] / rep["duration_s"] * 60
    return [
        f"## Sync mode: {rows} rows, one /users/track/sync request each, {latency:.0f} ms latency",
        f"{per_min:,.0f} requests/minute = {per_min / 500:.1%} of 500/min; 429s: {r['by_status'].get('429', 0) + r.get('rate_limited', 0)}; "
        f"delivered {rep['rows']['delivered']}/{rep['rows']['read']} in {wall:.1f} s",
    ]


# --------------------------------------------------------------------------- delta


KEY_SHAPES = {"seq": "users", "uuid": "users_uuid"}  # key shape -> bench/data.py table kind
DELTA_LABELS = ("plain (delta: false)", "first delta run (all new)", "delta re-run (unchanged)",
                "delta re-run, 5 % changed")  # fmt: skip


def bench_delta(rows: int, rps: int, keys: tuple[str, ...] = tuple(KEY_SHAPES)) -> list[str]:
    """Per key shape: a plain run, then a delta stream delivered three times (bulk, 100 ms sink, one state
    file): the first delta run sends everything, the unchanged re-run nothing, the re-run on the table with
    5 % of the users changed (bench/data.py change_plans) those; wall and CPU (this process + the HTTP child)
    against that shape's plain run (rate-bound: the baseline)."""
    calib = calibration_s()
    out = [f"## Delta sync: {rows:,}-row users Parquet, bulk, 100 ms; per key shape (seq: u0, u1, ... in key order;"
           " uuid: random v4 UUIDs) a plain run, then delta with one state file: first run, unchanged re-run,"
           f" re-run with {100 // CHANGED_EVERY} % of the users changed",
           f"calibration loop (10M-iteration for): {calib:.2f} s CPU"]  # fmt: skip
    for shape in keys:
        runs = delta_runs(rows, rps, plain=True, keys=shape, changed=True)
        _prep, plain_wall, plain_cpu = runs[0]
        for label, (rep, wall, cpu) in zip(DELTA_LABELS, runs, strict=True):
            out.append(f"{shape} keys, {label}: {rows / wall:,.0f} rows/s end to end in {wall:.1f} s (CPU {cpu:.1f} s); "
                       f"delivered {rep['rows']['delivered']:,}, skipped {rep['rows']['skipped']:,}, "
                       f"requests {rep['requests']['total']:,}; x{wall / plain_wall:.2f} plain wall, "
                       f"x{cpu / plain_cpu:.2f} plain CPU")  # fmt: skip
    return out


def delta_runs(rows: int, rps: int, *, plain: bool = False, keys: str = "seq",
               changed: bool = False) -> list[tuple[dict[str, Any], float, float]]:  # fmt: skip
    """(report, wall s, CPU s incl. the HTTP child) of a delta stream's first run and of its unchanged re-run
    (one state file) on the users table with `keys` (KEY_SHAPES), after a plain run of the same pipeline
    without delta when `plain`, then a re-run on the table with 5 % of the users changed when `changed`."""
    kind = KEY_SHAPES[keys]
    path = write_parquet(kind, rows)
    changed_path = write_parquet(f"{kind}_changed", rows) if changed else None  # written before any timing
    with tempfile.TemporaryDirectory() as state, NginxSink(latency_ms=100, limit_rps=rps, burst=rps // 10) as sink:
        data = users_pipeline(path, sink.url, rps=rps).model_dump()
        runs = []
        if plain:
            runs.append(_run_children(Pipeline.model_validate(data)))
        data["streams"][0]["delta"] = True
        data["state"] = {"path": str(Path(state) / "state.sqlite")}
        pipe = Pipeline.model_validate(data)
        runs += [_run_children(pipe), _run_children(pipe)]
        if changed_path is not None:
            data["streams"][0]["source"]["path"] = str(changed_path)
            runs.append(_run_children(Pipeline.model_validate(data)))
        return runs


def _run_children(pipeline: Pipeline) -> tuple[dict[str, Any], float, float]:
    """_run, with the CPU of the HTTP child process it started counted in."""
    child0 = _children_cpu()
    rep, wall, cpu = _run(pipeline)
    return rep, wall, cpu + _children_cpu() - child0


def main() -> int:
    from issue12 import issue12_table  # it imports this module (as `run`) for its pipelines and runs
    from reference import LAST, REF_ROWS, reference_section

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="*", default=["delivery", "local", "memory", "sync", "delta", "issue12"])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--latencies", default="100,20,300")
    ap.add_argument("--rps", type=int, default=1000)
    ap.add_argument("--baseline-seconds", type=float, default=10)
    ap.add_argument("--sizes", default="200000,2000000,10000000")
    ap.add_argument("--seconds", type=float, default=60, help="sync mode duration")
    ap.add_argument("--transport", default="auto", help="delivery: auto, aiohttp-process, aiohttp or requests")
    ap.add_argument("--keys", choices=("seq", "uuid", "both"), default="both",
                    help="delta: the users' key shape, ids u0, u1, ... (seq), random UUIDs (uuid) or both")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    ap.add_argument("--workload-k", default=None, metavar="FILE_OR_VALUE",
                    help="issue12: the reference machine's workload k (a number, or a file saved by `reference`; "
                         "default: bench/out/reference-last.json)")  # fmt: skip
    ap.add_argument("--goals", default=None, help="issue12: only these goals' rows, e.g. 2,3 (default: all six)")
    ap.add_argument("--repeat", type=int, default=3, help="reference: rounds")
    ap.add_argument("--save", type=Path, default=None,
                    help="reference: where to save the ratios (default: bench/out/reference-last.json at 1M rows)")  # fmt: skip
    a = ap.parse_args()
    if a.quick:
        a.rows, a.latencies, a.baseline_seconds, a.sizes, a.seconds = 20_000, "100", 1.5, "20000,60000", 6
    if ({"delivery", "sync", "delta", "memory", "issue12", "reference"} & set(a.what)) and (reason := nginx_available()):
        print(f"cannot run delivery/sync benches: {reason}", file=sys.stderr)
        return 2
    print(f"# bench/run.py {' '.join(sys.argv[1:])}  (python {sys.version.split()[0]}, {os.cpu_count()} cores)")
    sections = {
        "delivery": lambda: bench_delivery(a.rows, [float(x) for x in a.latencies.split(",")], a.baseline_seconds, a.rps, a.transport),
        "local": lambda: bench_local(a.rows),
        "memory": lambda: bench_memory([int(x) for x in a.sizes.split(",")]),
        "sync": lambda: bench_sync(a.seconds, 100),
        "delta": lambda: bench_delta(a.rows, a.rps, tuple(KEY_SHAPES) if a.keys == "both" else (a.keys,)),
        "issue12": lambda: issue12_table(a.rows, [int(x) for x in a.sizes.split(",")], a.rps, a.workload_k,
                                         {int(g) for g in a.goals.split(",")} if a.goals else None),
        "reference": lambda: reference_section(a.rows, a.repeat, a.save or (LAST if a.rows == REF_ROWS else None)),
    }
    for name in a.what:
        for line in sections[name]():
            print(line, flush=True)
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

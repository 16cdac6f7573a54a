"""N workers, one Braze budget: aggregate % of the limit and 429s, with and without the shared limiter.

    python bench/shared_limits.py                                # pipelines: N = 1, 2, 4; 600,000 rows
    python bench/shared_limits.py --transport aiohttp            # the HTTP loop in each worker's own process
    python bench/shared_limits.py --workload client              # BrazeClient processes alone
    python bench/shared_limits.py --workers 1,2 --rows 100000 --calibration-seconds 1   # a short run
    python bench/shared_limits.py --rows 150000 --trace --windows 2   # where requests bunch (BENCHMARKS.md)

`--workload pipeline` (default): each worker is a whole pipeline process (`braze-connector run PIPELINE
--partition K/N`) over one users Parquet file (bench/data.py), bulk mode, 75 objects per request.
`--workload client`: each worker is tests/integration/limiter_worker.py (a BrazeClient with 160 threads
posting small bodies), the limiter without reading and mapping competing for the cores. The target is an
nginx sink (bench/sink.py) that answers after `--latency-ms` and enforces the limit with limit_req (429
above it, a burst of 10 % of a second: stricter than Braze's fixed windows). The sink logs every
request's arrival and status; the figures come from that log, not from the workers:

- aggregate: 2xx answers per second from the first request to the last, as a % of the limit;
- 429s: answers the sink refused;
- busiest 100 ms (most arrivals in any 100 ms) and longest silence (longest gap between two arrivals).

Each worker's base URL ends in `/wK`, so the sink's log says who sent what: `--windows S` prints the first
S seconds per 100 ms and worker. `--trace` runs the shared-limiter workers through bench/traced_worker.py,
which records when the budget placed each request and when acquire() handed it over, and replays nginx's
limit_req accounting (sink.limit_req_refusals) on those and on the sink's arrivals: refusals only on the
arrivals mean the requests bunched after the limiter. `--margin 0.1` configures the workers 10 % under
the sink's limit. The first calibration line is a 10M-iteration Python loop's CPU and wall time.

Three ways to run N workers: `none` (each worker has the whole limit, as N pipelines without
write.shared_limits), `split` (each worker has 1/N of the limit, a static split), `shared` (the limit in
write.shared_limits on a redis-server started here). The calibration line is the naive iterrows loop of
bench/baselines.py against the same sink, so figures from another machine can be compared.
"""

from __future__ import annotations

import argparse
import bisect
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

from baselines import naive_loop  # noqa: E402
from data import write_parquet  # noqa: E402
from redis_server import RedisServer  # noqa: E402
from sink import NginxSink, limit_req_refusals, nginx_available  # noqa: E402

KEY = "bench-key-not-secret"

_PIPELINE = """
name: bench_shared
destination: {{url: "{url}${{BENCH_PREFIX}}", api_key_env: BENCH_BRAZE_KEY}}
write:
  mode: bulk
  transport: {transport}
  rate_limits: {{users_track: {{requests: {limit}, per_seconds: 1}}}}
  {shared}
report: {{dir: "{reports}/{{partition}}"}}
streams:
  - name: users
    source: {{path: {data}, chunk_rows: 50000}}
    kind: attributes
    identifier: {{external_id: user_id}}
    attributes:
      - {{column: first_name}}
      - {{column: email}}
      - {{column: country}}
      - {{column: plan}}
      - {{column: age, type: integer}}
"""


def run_workers(n: int, how: str, data: Path, sink: NginxSink, rps: int, redis_url: str,
                transport: str = "auto", trace: bool = False) -> dict[str, Any]:  # fmt: skip
    """Start N partition processes at once (each with `rps` as its limit, or `rps` / N under a static split);
    wait for all; read the sink's log of what they sent."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-shared-"))
    limit = rps // n if how == "split" else rps
    shared = f"shared_limits: {{namespace: bench-{uuid.uuid4().hex[:8]}}}" if how == "shared" else ""
    pipe = tmp / "pipeline.yaml"
    pipe.write_text(_PIPELINE.format(url=sink.url, limit=limit, shared=shared, reports=tmp / "reports", data=data,
                                     transport=transport))
    env = {**os.environ, "BENCH_BRAZE_KEY": KEY, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    before = len(sink.requests())
    t0 = time.time()
    traced = trace and how == "shared"
    cli = [str(HERE / "traced_worker.py")] if traced else ["-m", "connector"]
    procs = [subprocess.Popen([sys.executable, *cli, *([str(tmp / f"trace-w{k}.txt")] if traced else []), "run", str(pipe),
                               "--partition", f"{k}/{n}", "--quiet"],
                              env={**env, "BENCH_PREFIX": f"/w{k}"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(1, n + 1)]  # fmt: skip
    codes = []
    for p in procs:
        p.communicate()
        codes.append(p.returncode)
    out = _measured(n, how, sink.tagged_requests()[before:], time.time() - t0, codes)
    if traced:
        grants = [tuple(map(float, line.split())) for f in tmp.glob("trace-w*.txt") for line in f.read_text().splitlines()]
        out["replayed"] = {"slots": limit_req_refusals([g[0] for g in grants], sink.limit_rps or rps, sink.burst),
                           "returns": limit_req_refusals([g[1] for g in grants], sink.limit_rps or rps, sink.burst),
                           "arrivals": limit_req_refusals([t for t, _s, _w in out["log"]], sink.limit_rps or rps,
                                                          sink.burst)}  # fmt: skip
    return out


def run_clients(n: int, how: str, requests: int, sink: NginxSink, rps: int, redis_url: str) -> dict[str, Any]:
    """N client processes (tests/integration/limiter_worker.py: BrazeClient + limiter, 160 threads, tiny
    bodies): the limiter alone, without reading and mapping competing for the cores."""
    worker = ROOT / "tests" / "integration" / "limiter_worker.py"
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    limit = rps // n if how == "split" else rps
    extra = ["--redis", redis_url, "--namespace", ns, "--workers", str(n)] if how == "shared" else []
    before = len(sink.requests())
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, str(worker), f"{sink.url}/w{k + 1}", "--requests", str(requests // n), "--threads", "160",
                               "--limit", str(limit), "--tag", f"w{k}", *extra],
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
             for k in range(n)]  # fmt: skip
    codes = [p.wait() for p in procs]
    return _measured(n, how, sink.tagged_requests()[before:], time.time() - t0, codes)


def _measured(n: int, how: str, log: list[tuple[float, int, str]], wall: float, codes: list[int]) -> dict[str, Any]:
    ok = sum(1 for _t, status, _w in log if 200 <= status < 300)
    refused = sum(1 for _t, status, _w in log if status == 429)
    span = (max(t for t, _s, _w in log) - min(t for t, _s, _w in log)) if len(log) > 1 else 0.0
    times = sorted(t for t, _s, _w in log)
    busiest = max((bisect.bisect_left(times, t + 0.1) - i for i, t in enumerate(times)), default=0)
    # The longest time without an arrival while requests were due every millisecond: a stall somewhere
    # between the workers' limiters and nginx's accounting; the requests held up then arrive together.
    silence = max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)
    return {"workers": n, "how": how, "ok": ok, "429": refused, "span": span, "wall": wall, "codes": codes,
            "rate": ok / span if span else 0.0, "log": log, "busiest": busiest, "silence": silence}  # fmt: skip


def loop_seconds() -> tuple[float, float]:
    """(CPU, wall) seconds of a 10M-iteration Python for loop: how fast this machine is, and how loaded
    (wall well above CPU: other processes had the cores)."""
    t0, w0 = time.process_time(), time.perf_counter()
    for _ in range(10_000_000):
        pass
    return time.process_time() - t0, time.perf_counter() - w0


def windows(log: list[tuple[float, int, str]], seconds: float, bin_s: float = 0.1) -> list[str]:
    """The first `seconds` of a run in bins of `bin_s`: requests per worker, and the 429s, from the sink's log."""
    if not log:
        return []
    t0 = min(t for t, _s, _w in log)
    tags = sorted({w for _t, _s, w in log})
    lines = [f"    {'ms':>6} " + " ".join(f"{w:>5}" for w in tags) + "   all  429"]
    for b in range(int(seconds / bin_s)):
        lo, hi = t0 + b * bin_s, t0 + (b + 1) * bin_s
        inside = [(s, w) for t, s, w in log if lo <= t < hi]
        per = " ".join(f"{sum(1 for _s, w in inside if w == tag):5d}" for tag in tags)
        lines.append(f"    {b * bin_s * 1000:6.0f} {per} {len(inside):5d} {sum(1 for s, _w in inside if s == 429):4d}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--rows", type=int, default=600_000)
    ap.add_argument("--rps", type=int, default=1000)
    ap.add_argument("--latency-ms", type=float, default=100)
    ap.add_argument("--modes", default="none,split,shared")
    ap.add_argument("--calibration-seconds", type=float, default=5)
    ap.add_argument("--margin", type=float, default=0.0,
                    help="configure the workers' limit this fraction under the sink's (0.1: 900 of 1,000/s)")
    ap.add_argument("--trace", action="store_true",
                    help="record the shared limiter's grants (bench/traced_worker.py) and replay the sink's accounting on them")
    ap.add_argument("--windows", type=float, default=0, help="print the first SECONDS per 100 ms bin and worker")
    ap.add_argument("--transport", default="auto", help="write.transport of the workers (auto: aiohttp in a child)")
    ap.add_argument("--workload", choices=("pipeline", "client"), default="pipeline",
                    help="pipeline: `run --partition K/N` processes; client: BrazeClient processes alone")  # fmt: skip
    a = ap.parse_args()
    if reason := nginx_available():
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    data = write_parquet("users", a.rows)
    print(f"# bench/shared_limits.py {' '.join(sys.argv[1:])}  (python {sys.version.split()[0]}, {os.cpu_count()} cores)")
    print(f"# {a.workload} workers; {a.rows:,} users rows in {a.rows // 75 + 1:,} requests; sink at {a.latency_ms:.0f} ms "
          f"enforcing {a.rps:,} requests/s (burst {a.rps // 10}); workers configured at {round(a.rps * (1 - a.margin)):,}/s; "
          f"transport {a.transport}")  # fmt: skip
    rows = []
    with RedisServer() as redis, NginxSink(latency_ms=a.latency_ms, limit_rps=a.rps, burst=a.rps // 10,
                                           access_log=True) as sink:  # fmt: skip
        cpu, wall = loop_seconds()
        print(f"calibration: a 10M-iteration Python for loop took {cpu:.2f} CPU s in {wall:.2f} s; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        calib = naive_loop(sink.url, KEY, data, a.calibration_seconds)
        print(f"calibration (bench/baselines.py naive loop, {a.calibration_seconds:.0f} s): "
              f"{calib['requests_per_s']:.1f} requests/s", flush=True)  # fmt: skip
        for n in (int(x) for x in a.workers.split(",")):
            for how in a.modes.split(","):
                if n == 1 and how == "split":
                    continue  # the same as none
                configured = round(a.rps * (1 - a.margin))
                if a.workload == "client":
                    r = run_clients(n, how, a.rows // 75, sink, configured, redis.url)
                else:
                    r = run_workers(n, how, data, sink, configured, redis.url, a.transport, a.trace)
                rows.append(r)
                print(f"  N={n} {how:6s}: {r['ok']:,} delivered in {r['span']:.1f} s = {r['rate']:,.0f}/s = "
                      f"{r['rate'] / a.rps:.1%} of the limit; 429s {r['429']:,}; busiest 100 ms: {r['busiest']}; "
                      f"longest silence {r['silence'] * 1000:.0f} ms; "
                      f"exit codes {r['codes']}; "
                      f"wall {r['wall']:.1f} s", flush=True)  # fmt: skip
                if "replayed" in r:
                    rp = r["replayed"]
                    print(f"    nginx's limit_req replayed on the budget's slots: {rp['slots']} refused; on acquire() "
                          f"returns: {rp['returns']}; on the sink's arrivals: {rp['arrivals']} (the sink refused "
                          f"{r['429']})", flush=True)  # fmt: skip
                if a.windows:
                    print("\n".join(windows(r["log"], a.windows)), flush=True)
    print()
    print("| workers | limiter | requests/s (2xx, first to last request) | % of the limit | 429s | busiest 100 ms | "
          "longest silence | wall |")
    print("|---|---|---|---|---|---|---|---|")
    names = {"none": "none (each the whole limit)", "split": "static split (limit / N each)",
             "shared": "shared (Redis)"}  # fmt: skip
    for r in rows:
        print(f"| {r['workers']} | {names[r['how']]} | {r['rate']:,.0f} | {r['rate'] / a.rps:.1%} | {r['429']:,} | "
              f"{r['busiest']} | {r['silence'] * 1000:.0f} ms | {r['wall']:.1f} s |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

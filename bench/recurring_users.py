"""Users recurring across a file: requests grouped by user (delivery/bins.py) against source-order packing.

    python bench/recurring_users.py --before /tmp/base-packer [--reps 2] [--rows 100000] [--zipf 1.0]
    python bench/recurring_users.py --pack-only --before /tmp/base-packer   # packing CPU, nothing sent
    python bench/recurring_users.py --shapes   # request counts and chains of a chunk per shape, no timing

Four tables, each delivered by this tree and by the `--before` tree (e.g. `git archive 97c12be | tar -x -C
/tmp/base-packer`), interleaved (before/after order alternating per repetition), each run in a fresh
process against one nginx sink (bench/sink.py) at `--latency` ms and a 1,000 requests/s limit:

  a. events, `--rows` rows over 60,000 users drawn uniformly (the README trial's shape);
  b. the same events with every user distinct;
  c. the users table (bench/data.py), each user once;
  d. events written by pandas, users drawn Zipf-like (probability of the k-th user ~ 1/k^`--zipf` over
     60,000 users), rows shuffled.

Per run: requests, requests/s while sending (report.json), requests in flight (that rate x the p50 latency,
Little's law), wall seconds, and CPU per 1M objects of the run's process and its HTTP child (getrusage,
RUSAGE_SELF + RUSAGE_CHILDREN around run_pipeline). The calibration loop and the load average are printed
before and after. `--pack-only` times pack_track_array alone on each table's user keys (best of 5), the
grouped plan against source order, like bench/pack_speed.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
USERS = 60_000


def _tables(rows: int, zipf: float) -> dict[str, tuple[str, Path]]:
    """name -> (stream kind, Parquet path), written once under bench/.data."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    sys.path.insert(0, str(HERE))
    from data import DATA_DIR, write_parquet

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(17)
    names = np.array(["viewed_item", "added_to_cart", "checkout_started", "rented_movie"])

    def events(user_idx: np.ndarray) -> dict[str, Any]:
        n = len(user_idx)
        return {
            "user_id": pc.binary_join_element_wise("u", pc.cast(pa.array(user_idx), pa.string()), ""),
            "event_name": pa.array(names[rng.integers(0, len(names), n)]),
            "event_time": pa.array((1_700_000_000 + rng.integers(0, 10_000_000, n)) * 1000, pa.timestamp("ms", tz="UTC")),
            "amount": pa.array(np.round(rng.random(n) * 200, 2)),
            "sku": pc.binary_join_element_wise("sku-", pc.cast(pa.array(rng.integers(0, 5000, n)), pa.string()), ""),
        }  # fmt: skip

    out: dict[str, tuple[str, Path]] = {}
    recurring = DATA_DIR / f"events_recurring{USERS}_{rows}.parquet"
    if not recurring.exists():
        pq.write_table(pa.table(events(rng.integers(0, USERS, rows))), recurring)
    out["a. events, 60k users"] = ("events", recurring)
    distinct = DATA_DIR / f"events_distinct_{rows}.parquet"
    if not distinct.exists():
        pq.write_table(pa.table(events(rng.permutation(rows))), distinct)
    out["b. events, distinct users"] = ("events", distinct)
    out["c. users table"] = ("attributes", write_parquet("users", rows))
    skewed = DATA_DIR / f"events_zipf{zipf:g}_{USERS}_{rows}.parquet"
    if not skewed.exists():
        weights = 1.0 / np.arange(1, USERS + 1) ** zipf
        ranks = rng.choice(USERS, size=rows, p=weights / weights.sum())
        ids = rng.permutation(USERS)[ranks]  # the heavy users are not u0, u1, ...
        cols = events(ids)
        frame = pd.DataFrame({k: v.to_pandas() for k, v in cols.items()})
        frame.to_parquet(skewed, index=False)  # pandas-written (its schema metadata and index handling)
    out[f"d. events, Zipf {zipf:g} (pandas)"] = ("events", skewed)
    return out


def _pipeline_doc(kind: str, path: Path, url: str, concurrency: int) -> dict[str, Any]:
    stream: dict[str, Any] = {"name": "s", "source": {"path": str(path), "chunk_rows": 50_000}, "kind": kind,
                              "identifier": {"external_id": "user_id"}}  # fmt: skip
    if kind == "events":
        stream["event"] = {"name": "event_name", "time": "event_time",
                           "properties": {"columns": {"amount": "amount", "sku": "sku"}}}  # fmt: skip
    else:
        sys.path.insert(0, str(HERE))
        from data import users_spec

        stream.update(users_spec())
    return {
        "name": "bench_recurring",
        "base_dir": str(ROOT),
        "destination": {"url": url, "api_key_env": "BENCH_BRAZE_KEY"},
        "write": {"mode": "bulk", "concurrency": concurrency,
                  "rate_limits": {"users_track": {"requests": 1000, "per_seconds": 1}}},
        "report": {"dir": str(Path(tempfile.gettempdir()) / "bench-reports" / "{run_id}")},
        "streams": [stream],
    }  # fmt: skip


def _child(a: argparse.Namespace) -> int:
    """One delivering run of one table with the tree `a.tree` (a fresh process: its own imports)."""
    sys.path.insert(0, a.tree)
    from connector.config import Pipeline
    from connector.pipeline import run_pipeline

    assert Path(sys.modules["connector"].__file__ or "").resolve().is_relative_to(Path(a.tree).resolve())
    pipeline = Pipeline.model_validate(_pipeline_doc(a.kind, Path(a.table), a.url, a.concurrency))

    def cpu() -> float:
        s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

    c0, t0 = cpu(), time.perf_counter()
    rep: Any = run_pipeline(pipeline, env={**os.environ, "BENCH_BRAZE_KEY": "bench-key"}, raise_on_failure=False).to_dict()
    wall, used = time.perf_counter() - t0, cpu() - c0
    print(json.dumps({
        "delivered": rep["rows"]["delivered"], "read": rep["rows"]["read"], "exit": rep["exit_code"],
        "requests": rep["requests"]["total"], "rps": rep["throughput"]["requests_per_s_sending"],
        "p50_ms": rep["latency_ms"]["p50"], "wall": wall, "cpu": used,
        "s429": rep["requests"]["by_status"].get("429", 0),
    }))  # fmt: skip
    return 0


def _run(tree: str, kind: str, table: Path, url: str, concurrency: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--tree", tree, "--kind", kind,
           "--table", str(table), "--url", url, "--concurrency", str(concurrency)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), check=False)
    if done.returncode != 0:
        raise SystemExit(f"run failed ({tree}, {table.name}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _pack_only(tables: dict[str, tuple[str, Path]], trees: dict[str, str]) -> list[str]:
    """CPU seconds per 1M objects of pack_track_array over each table's chunks of 50,000 (dict objects)."""
    out = ["", "## packing alone (pack_track_array, dict objects, chunks of 50,000; best of 5, s per 1M objects)"]
    for code, tree in trees.items():
        script = f"""
import sys, time, json
sys.path.insert(0, {tree!r})
import pyarrow.parquet as pq
from connector.delivery.batching import pack_track_array
res = {{}}
for name, path in {json.dumps({k: str(p) for k, (_, p) in tables.items()})}.items():
    t = pq.read_table(path)
    ids = t.column("user_id").to_pylist()
    keys = ["external_id:" + u for u in ids]
    objs = [{{"external_id": u, "name": "e", "time": "2024-01-01T00:00:00Z"}} for u in ids]
    best = 9e9
    for _ in range(5):
        c0 = time.process_time(); reqs = 0
        for lo in range(0, len(keys), 50000):
            reqs += sum(1 for _ in pack_track_array("events", objs, keys, range(lo, min(lo + 50000, len(keys)))))
        best = min(best, time.process_time() - c0)
    res[name] = (best * 1e6 / len(keys), reqs)
print(json.dumps(res))
"""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
        for name, (per_m, reqs) in json.loads(done.stdout).items():
            out.append(f"{code:6} {name:32} {per_m:5.2f} s per 1M objects, {reqs:,} requests")
    return out


def _chain(reqs: list[list[int]], keys: list[str]) -> tuple[int, int]:
    """(the longest run of requests that must go one after another through shared users, users in more than
    one request)."""
    last: dict[str, int] = {}
    depth: list[int] = []
    spread: dict[str, int] = {}
    for i, r in enumerate(reqs):
        users = {keys[p] for p in r}
        depth.append(1 + max((depth[last[u]] for u in users if u in last), default=0))
        last.update(dict.fromkeys(users, i))
        for u in users:
            spread[u] = spread.get(u, 0) + 1
    return max(depth, default=0), sum(1 for v in spread.values() if v > 1)


def _shapes() -> list[str]:
    """Request counts and chains of one 50,000-object chunk per shape: source order against the plan at each
    chain bound (delivery/bins.py MAX_CHAIN), deterministic (no timing)."""
    import random

    from connector.delivery.bins import plan_bins

    rng = random.Random(5)

    def shuffled(sizes: list[int]) -> list[str]:
        keys = [f"u{u}" for u, s in enumerate(sizes) for _ in range(s)]
        rng.shuffle(keys)
        return keys[:50_000]

    zipf = [1.0 / k for k in range(1, USERS + 1)]
    shapes = {
        "events over 60k users (uniform)": ([f"u{rng.randrange(USERS)}" for _ in range(50_000)], 75),
        "1-10 objects a user, shuffled": (shuffled([rng.randint(1, 10) for _ in range(10_000)]), 75),
        "20-60 objects a user, shuffled": (shuffled([rng.randint(20, 60) for _ in range(1_500)]), 75),
        "Zipf 1.0 over 60k users": ([f"u{k}" for k in rng.choices(range(USERS), weights=zipf, k=50_000)], 75),
        "README trial: 750 of 50 users, 25 a request": ([f"u{i % 50}" for i in range(750)], 25),
    }
    out = ["", "## plans of one chunk: requests (minimum), longest chain of requests one after another, users split",
           "| shape | minimum | source order | max_chain 1 | 2 | 3 (default) | 4 |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, (keys, cap) in shapes.items():
        n = len(keys)
        cells = []
        source = [list(range(i, min(i + cap, n))) for i in range(0, n, cap)]
        for plan in [source] + [plan_bins(keys, range(n), cap, mc) or source for mc in (1, 2, 3, 4)]:
            chain, split = _chain(plan, keys)
            cells.append(f"{len(plan):,} / chain {chain} / {split:,} split")
        out.append(f"| {name} | {math.ceil(n / cap):,} | " + " | ".join(cells) + " |")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", help="a tree of the code to compare with (e.g. /tmp/base-packer)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--latency", type=float, default=100)
    ap.add_argument("--concurrency", type=int, default=160)
    ap.add_argument("--only", default="", help="run only the tables whose name contains this")
    ap.add_argument("--pack-only", action="store_true")
    ap.add_argument("--shapes", action="store_true", help="request counts and chains per shape, no timing")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--table", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return _child(a)
    sys.path.insert(0, str(HERE))
    if a.shapes:
        sys.path.insert(0, str(ROOT))
        print("\n".join(_shapes()))
        return 0
    from calibration import calibration_s
    from sink import NginxSink, nginx_available

    trees = {"after": str(ROOT)}
    if a.before:
        trees = {"before": str(Path(a.before).resolve()), **trees}
    tables = {k: v for k, v in _tables(a.rows, a.zipf).items() if a.only in k}
    lines = [f"# bench/recurring_users.py --rows {a.rows} --zipf {a.zipf:g} --latency {a.latency:g} --reps {a.reps}"
             f" ({os.cpu_count()} cores)",
             f"calibration loop (10M-iteration for): {calibration_s():.2f} s CPU; load average {os.getloadavg()[0]:.2f}"]  # fmt: skip
    if a.pack_only:
        lines += _pack_only(tables, trees)
        print("\n".join(lines))
        return 0
    if (why := nginx_available()) is not None:
        raise SystemExit(why)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with NginxSink(latency_ms=a.latency, limit_rps=1000, burst=100) as sink:
        for rep in range(a.reps):
            for name, (kind, path) in tables.items():
                codes = list(trees) if rep % 2 == 0 else list(reversed(trees))
                for code in codes:
                    r = _run(trees[code], kind, path, sink.url, a.concurrency)
                    results.setdefault((name, code), []).append(r)
                    print(f"  rep {rep} {name:30} {code:6} {r['requests']:6,} requests {r['rps']:7.1f}/s "
                          f"wall {r['wall']:6.1f} s cpu {r['cpu']:5.2f} s", file=sys.stderr, flush=True)  # fmt: skip
    lines.append(f"calibration loop after: {calibration_s():.2f} s CPU; load average {os.getloadavg()[0]:.2f}")
    lines.append("")
    lines.append("| table | code | requests | requests/s while sending | in flight (rate x p50) | wall s | CPU s per 1M objects (main + HTTP child) | delivered | 429s |")  # fmt: skip
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for name in tables:
        for code in trees:
            rs = results[(name, code)]
            med = {k: statistics.median(r[k] for r in rs) for k in ("requests", "rps", "wall", "cpu", "p50_ms")}
            per_m = statistics.median(r["cpu"] * 1e6 / max(1, r["delivered"]) for r in rs)
            rps_all = "/".join(f"{r['rps']:.0f}" for r in rs)
            lines.append(
                f"| {name} | {code} | {med['requests']:,.0f} | {med['rps']:.0f} ({rps_all}) | "
                f"{med['rps'] * med['p50_ms'] / 1000:.0f} | {med['wall']:.1f} | {per_m:.2f} | "
                f"{min(r['delivered'] for r in rs):,} of {rs[0]['read']:,} | {max(r['s429'] for r in rs)} |"
            )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""An unchanged delta re-run as a user starts it: `braze-connector run PIPELINE`, process start to exit.

    python bench/rerun_cost.py [--rows 1000000] [--state sqlite|postgresql] [--source parquet|postgresql]
                               [--keys seq|uuid] [--trees DIR[,DIR...]] [--rounds 3] [--profile FILE]
                               [--bytecode cached|compiled]

Per source tree (`--trees`, default this checkout; each is the PYTHONPATH of its CLI processes, so two trees
compare code before and after a change in the same minutes): a pipeline file of its own (the users table
with its 5-expectation suite and `delta: true`, bulk, 1,000 requests/s, the nginx sink at 100 ms; with
`--source postgresql` bench/warehouse_delta.py's table, read through ADBC), a first delta run, then
`--rounds` unchanged re-runs, the trees alternated round by round (which tree runs first alternates too: the
process run first in a round came out slower in A/A runs, BENCHMARKS.md `startup3`). Wall is the CLI process's, start to exit;
CPU is its user + system time and its children's (the HTTP child, when one is started), from
getrusage(RUSAGE_CHILDREN). With `--state postgresql` each tree's state is a database of its own in the
throwaway server (bench/pg_server.py), whose CPU is shown apart. `--profile FILE` runs one more re-run of the
last tree under cProfile on the main thread's CPU clock (time.thread_time) and writes its statistics to FILE
(pstats). `--bytecode compiled` runs each tree's CLI from a copy of its `connector/` without `__pycache__` and
with PYTHONDONTWRITEBYTECODE=1, so every start compiles the connector's modules again (a source checkout in an
environment that sets it); by default (`cached`) they are compiled once, as an installed package has them.
The calibration loop and `uptime`'s load average are printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from calibration import calibration_s  # noqa: E402
from data import users_spec, write_parquet  # noqa: E402
from pg_server import PgServer  # noqa: E402
from sink import NginxSink, nginx_available  # noqa: E402

KEY = "bench-key-not-secret"
_PROFILED = """
import cProfile, sys, time
out = sys.argv.pop(1)
sys.argv[0] = "braze-connector"
prof = cProfile.Profile(time.thread_time)  # the main thread's CPU: process_time would count
# the reader's and the store's threads into whatever the main thread runs meanwhile
code = 0
try:
    prof.enable()
    from connector.cli import main
    main()
except SystemExit as stop:
    code = stop.code or 0
finally:
    prof.disable()
    prof.dump_stats(out)
sys.exit(code)
"""


def _pipeline(name: str, source: dict[str, Any], sink_url: str, state: dict[str, Any], reports: Path,
              suite: bool) -> dict[str, Any]:  # fmt: skip
    return {
        "name": name,
        "expectations_dir": str(HERE.parent / "expectations"),
        "destination": {"url": sink_url, "api_key_env": "BENCH_BRAZE_KEY"},
        "write": {"mode": "bulk", "concurrency": 160, "rate_limits": {"users_track": {"requests": 1000, "per_seconds": 1}}},
        "report": {"dir": str(reports / "{run_id}")},
        "state": state,
        "streams": [{"name": "users", "source": source, **users_spec(), "delta": True,
                     "expectations": ["bench_users_suite"] if suite else []}],
    }  # fmt: skip


def _children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _cli(tree: Path, pipeline: Path, env: dict[str, str], profile: Path | None = None) -> tuple[float, float, str]:
    """(wall s, CPU s incl. children, the report's counts) of one `braze-connector run` process."""
    args = [sys.executable, "-c", _PROFILED, str(profile)] if profile else [sys.executable, "-m", "connector"]
    c0, t0 = _children(), time.perf_counter()
    done = subprocess.run([*args, "run", str(pipeline), "--quiet"], env={**env, "PYTHONPATH": str(tree)},
                          capture_output=True, text=True, cwd=tree)  # fmt: skip
    wall, cpu = time.perf_counter() - t0, _children() - c0
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return wall, cpu, _counts(pipeline)


def _counts(pipeline: Path) -> str:
    """The latest report's rows and delta counts (report.json beside the pipeline's report folders)."""
    reports = sorted((pipeline.parent / "reports").glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    rep = json.loads(reports[-1].read_text())
    rows, d = rep["rows"], rep["streams"][0].get("delta") or {}
    return (f"read {rows['read']:,}, delivered {rows['delivered']:,}, skipped {rows['skipped']:,}, requests "
            f"{rep['requests']['total']:,}; delta {d.get('added', 0):,} added, {d.get('changed', 0):,} changed, "
            f"{d.get('unchanged', 0):,} unchanged")  # fmt: skip


def _bare_copy(tree: Path, into: Path) -> Path:
    """A copy of the tree's `connector` package without `__pycache__` folders (the CLI's PYTHONPATH)."""
    shutil.copytree(tree / "connector", into / "connector", ignore=shutil.ignore_patterns("__pycache__"))
    return into


def _uptime() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def bench(a: argparse.Namespace, trees: list[Path], pg_url: str, server: Callable[[], float]) -> list[str]:
    out = [f"# bench/rerun_cost.py --rows {a.rows} --state {a.state} --source {a.source} --keys {a.keys} --rounds {a.rounds} "
           f"--bytecode {a.bytecode} "
           f"(python {sys.version.split()[0]}, {os.cpu_count()} cores)",
           f"trees: {', '.join(map(str, trees))}",
           f"before: calibration loop {calibration_s():.2f} s CPU; load average {_uptime()}"]  # fmt: skip
    env = {**os.environ, "BENCH_BRAZE_KEY": KEY, "BENCH_PG_URL": pg_url}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the CLI's modules compiled once, as an installed package has them
    if a.bytecode == "compiled":
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    if a.source == "parquet":
        kind = "users" if a.keys == "seq" else "users_uuid"
        source: dict[str, Any] = {"path": str(write_parquet(kind, a.rows)), "chunk_rows": 50_000}
    else:
        from warehouse_delta import TABLE, make_table

        make_table(pg_url, a.rows)
        source = {"table": f"public.{TABLE}", "connection": {"url_env": "BENCH_PG_URL"}, "chunk_rows": 50_000}
    with tempfile.TemporaryDirectory() as tmp, NginxSink(latency_ms=100, limit_rps=1000, burst=100) as sink:
        names = list(map(str, trees))
        if a.bytecode == "compiled":  # each tree's package without its bytecode, which nothing writes then
            trees = [_bare_copy(tree, Path(tmp) / f"src{i}") for i, tree in enumerate(trees)]
        files = []
        for i, tree in enumerate(trees):
            folder = Path(tmp) / f"tree{i}"
            folder.mkdir()
            state: dict[str, Any] = {"path": str(folder / "state.sqlite")}
            if a.state == "postgresql":
                from warehouse_delta import pg_exec

                pg_exec(pg_url, f"CREATE DATABASE tree{i}")
                env[f"BENCH_STATE_PG_URL{i}"] = pg_url.rsplit("/", 1)[0] + f"/tree{i}"
                state["url_env"] = f"BENCH_STATE_PG_URL{i}"
            pipe = folder / "pipeline.yaml"
            pipe.write_text(json.dumps(_pipeline("bench_rerun", source, sink.url, state, folder / "reports",
                                                 a.source == "parquet")))  # fmt: skip
            files.append(pipe)
            s0 = server()
            wall, cpu, counts = _cli(tree, pipe, env)
            out.append(f"tree {i}, first delta run: wall {wall:5.2f} s, CPU {cpu:5.2f} s, server {server() - s0:4.2f} s; {counts}")
        if a.state == "postgresql":
            from warehouse_delta import pg_exec

            for i in range(len(trees)):  # the first run's upkeep, apart from the re-runs (it lands anywhere)
                pg_exec(env[f"BENCH_STATE_PG_URL{i}"], "VACUUM ANALYZE")
        results: dict[int, list[tuple[float, float, float]]] = {i: [] for i in range(len(trees))}
        for r in range(a.rounds):
            order = list(enumerate(zip(trees, files, strict=True)))
            for i, (tree, pipe) in order if r % 2 == 0 else order[::-1]:
                s0 = server()
                wall, cpu, counts = _cli(tree, pipe, env)
                srv = server() - s0
                results[i].append((wall, cpu, srv))
                out.append(f"round {r + 1}, tree {i}, unchanged re-run: wall {wall:5.2f} s, CPU {cpu:5.2f} s, "
                           f"server {srv:4.2f} s; {counts}")  # fmt: skip
        for i in results:
            walls, cpus = sorted(w for w, _c, _s in results[i]), sorted(c for _w, c, _s in results[i])
            out.append(f"tree {i} ({names[i]}): unchanged re-run median wall {walls[len(walls) // 2]:.2f} s "
                       f"(min {walls[0]:.2f}), CPU {cpus[len(cpus) // 2]:.2f} s (min {cpus[0]:.2f})")  # fmt: skip
        if a.profile:
            _cli(trees[-1], files[-1], env, profile=a.profile)
            out.append(f"profile of tree {len(trees) - 1}'s unchanged re-run (its main thread's CPU clock): {a.profile}")
    out.append(f"after: calibration loop {calibration_s():.2f} s CPU; load average {_uptime()}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--state", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--source", choices=("parquet", "postgresql"), default="parquet")
    ap.add_argument("--keys", choices=("seq", "uuid"), default="seq",
                    help="parquet: the users' ids, u0, u1, ... (seq) or random UUIDs (uuid; bench/data.py)")  # fmt: skip
    ap.add_argument("--trees", default=str(HERE.parent), help="comma-separated source trees (PYTHONPATH of the CLI)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", type=Path, default=None, help="pstats file of one more re-run of the last tree")
    ap.add_argument("--bytecode", choices=("cached", "compiled"), default="cached",
                    help="compiled: every start compiles the connector's modules (PYTHONDONTWRITEBYTECODE=1)")  # fmt: skip
    a = ap.parse_args()
    if reason := nginx_available():
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    trees = [Path(t).resolve() for t in a.trees.split(",")]
    if a.state == "postgresql" or a.source == "postgresql":
        with PgServer() as pg:
            lines = bench(a, trees, pg.url, pg.cpu)
    else:
        lines = bench(a, trees, "", lambda: 0.0)
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

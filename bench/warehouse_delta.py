"""A PostgreSQL table synced end to end into an nginx sink that answers like Braze: plain, first delta,
unchanged delta, and a delta with 10 % of the users changed; wall and CPU seconds and their ratios.

    python bench/warehouse_delta.py [--rows 1000000] [--state sqlite|postgresql] [--latency-ms 20] [--rps 1000]

The table (user_id primary key and 7 attribute columns) is generated in a throwaway PostgreSQL server
(bench/pg_server.py; or an existing one with --pg-url-env VAR). Every run is a fresh `run_pipeline` in this
process, reading the table through ADBC in chunks of 50,000 rows, sending bulk /users/track requests to the
sink (bench/sink.py) within --rps. CPU is this process's plus the HTTP child's (the aiohttp-process
transport); the PostgreSQL server's (source reads and state writes, on the same cores) is shown apart as
`server` when the bench started it, with the autovacuum and autoanalyze runs that overlapped the run (their
CPU is in `server`; which run they land in is chance). A 10M-iteration Python loop is timed first, so figures
from a loaded machine can be compared with others (the loop's CPU seconds say how slow the machine was).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from data import users_spec  # noqa: E402
from pg_server import PgServer  # noqa: E402
from sink import NginxSink, nginx_available  # noqa: E402

from connector.config import Pipeline  # noqa: E402
from connector.pipeline import run_pipeline  # noqa: E402

KEY = "bench-key-not-secret"
TABLE = "bench_wh_users"


def calibration() -> float:
    """CPU seconds of a 10M-iteration Python for loop."""
    t = time.process_time()
    for _ in range(10_000_000):
        pass
    return time.process_time() - t


def pg_exec(url: str, *statements: str) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(url, autocommit=True) as con, con.cursor() as cur:
        for sql in statements:
            cur.execute(sql)


def make_table(url: str, rows: int) -> None:
    pg_exec(
        url,
        f"DROP TABLE IF EXISTS {TABLE}",
        f"""CREATE TABLE {TABLE} AS SELECT 'u' || g AS user_id, 'Ann' || (g % 100) AS first_name,
            'u' || g || '@example.com' AS email, (ARRAY['FR','DE','US'])[1 + g % 3] AS country,
            (ARRAY['free','pro'])[1 + g % 2] AS plan, 20 + g % 60 AS age, (g % 1000) * 1.5 AS lifetime_value,
            timestamptz '2024-01-01' + g * interval '1 second' AS signup_at, g
            FROM generate_series(1, {int(rows)}) AS g""",
        f"ALTER TABLE {TABLE} ADD PRIMARY KEY (user_id)",
        f"ANALYZE {TABLE}",
    )


def pipeline(url_env: str, sink_url: str, rps: int, *, delta: bool, state: dict[str, Any], reports: Path) -> Pipeline:
    return Pipeline.model_validate({
        "name": "bench_warehouse",
        "base_dir": str(HERE.parent),
        "destination": {"url": sink_url, "api_key_env": "BENCH_BRAZE_KEY"},
        "write": {"mode": "bulk", "concurrency": 160, "rate_limits": {"users_track": {"requests": rps, "per_seconds": 1}}},
        "report": {"dir": str(reports / "{run_id}"), "history": None},
        "state": state,
        "streams": [{
            "name": "users",
            "source": {"table": f"public.{TABLE}", "connection": {"url_env": url_env}, "chunk_rows": 50_000},
            **users_spec(),
            "delta": delta,
        }],
    })  # fmt: skip


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def timed(pipe: Pipeline, env: dict[str, str], server: Callable[[], float]) -> tuple[dict[str, Any], float, float, float]:
    """(report, wall s, CPU s of this process and its finished children, CPU s of the PostgreSQL server)."""
    t0, c0, k0, s0 = time.perf_counter(), time.process_time(), _children_cpu(), server()
    report = run_pipeline(pipe, env=env, raise_on_failure=False).to_dict()
    return report, time.perf_counter() - t0, time.process_time() - c0 + _children_cpu() - k0, server() - s0


def bench(url: str, rows: int, state_kind: str, latency_ms: float, rps: int,
          server: Callable[[], float] = lambda: 0.0) -> list[str]:  # fmt: skip
    make_table(url, rows)
    env = {**os.environ, "BENCH_BRAZE_KEY": KEY, "BENCH_PG_URL": url, "BENCH_STATE_PG_URL": url}
    out = [f"# bench/warehouse_delta.py --rows {rows} --state {state_kind} --latency-ms {latency_ms:g} --rps {rps} "
           f"(python {sys.version.split()[0]}, {os.cpu_count()} cores)",
           f"calibration: a 10M-iteration Python for loop takes {calibration():.2f} s CPU"]  # fmt: skip
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, NginxSink(latency_ms=latency_ms, limit_rps=rps, burst=rps // 10) as sink:
        # The run lock sits beside state.path (and the report root): both in this run's own folder.
        state: dict[str, Any] = {"path": str(Path(tmp) / "state.sqlite")}
        if state_kind == "postgresql":
            state["url_env"] = "BENCH_STATE_PG_URL"
            pg_exec(url, "DELETE FROM braze_connector_delta WHERE pipeline = 'bench_warehouse'") if _has_state(url) else None
        runs = [("plain (no delta)", False), ("first delta (all new)", True), ("unchanged delta", True),
                ("delta, 10 % changed", True)]  # fmt: skip
        for label, delta in runs:
            if label.startswith("delta, 10"):
                pg_exec(url, f"UPDATE {TABLE} SET age = age + 1 WHERE g % 10 = 0")
            pipe = pipeline("BENCH_PG_URL", sink.url, rps, delta=delta, state=state, reports=Path(tmp) / "reports")
            before = _maintenance(url)
            rep, wall, cpu, srv = timed(pipe, env, server)
            upkeep = _maintenance(url) - before
            r = rep["rows"]
            d = rep["streams"][0].get("delta") or {}
            counts = f"; delta: {d['added']:,} added, {d['changed']:,} changed, {d['unchanged']:,} unchanged" if d else ""
            out.append(f"{label:24s} wall {wall:6.1f} s  CPU {cpu:6.1f} s  server {srv:5.1f} s  read {r['read']:,}, delivered "
                       f"{r['delivered']:,}, skipped {r['skipped']:,}, requests {rep['requests']['total']:,}, "
                       f"exit {rep['exit_code']}{counts}"
                       + (f"; autovacuum/analyze runs meanwhile: {sum(upkeep.values())} ({', '.join(sorted(upkeep))})"
                          if upkeep else ""))  # fmt: skip
            results[label] = (wall, cpu)
    plain, first, same = results["plain (no delta)"], results["first delta (all new)"], results["unchanged delta"]
    out.append(f"ratios: first delta / plain: CPU {first[1] / plain[1]:.2f}, wall {first[0] / plain[0]:.2f}; "
               f"unchanged / plain (a full run): CPU {same[1] / plain[1]:.2f}, wall {same[0] / plain[0]:.2f}")  # fmt: skip
    return out


def _maintenance(url: str) -> Counter[str]:
    """Autovacuum and autoanalyze runs so far, per table: their CPU is the server's too, and lands in whichever
    run they happen to overlap (after a first run's 1M inserts, usually the next one)."""
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(url, autocommit=True) as con, con.cursor() as cur:
        cur.execute("SELECT relname, autovacuum_count + autoanalyze_count FROM pg_stat_user_tables")
        return Counter({str(name): int(n) for name, n in cur.fetchall() if n})


def _has_state(url: str) -> bool:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(url, autocommit=True) as con, con.cursor() as cur:
        cur.execute("SELECT to_regclass('braze_connector_delta') IS NOT NULL")
        return bool(cur.fetchone()[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000, help="table rows (1000000 for the figures in BENCHMARKS.md)")
    ap.add_argument("--state", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--latency-ms", type=float, default=20)
    ap.add_argument("--rps", type=int, default=1000)
    ap.add_argument("--pg-url-env", default=None, help="use this server (URL in the variable) instead of a new one")
    a = ap.parse_args()
    if reason := nginx_available():
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    if a.pg_url_env:
        lines = bench(os.environ[a.pg_url_env], a.rows, a.state, a.latency_ms, a.rps)
    else:
        with PgServer() as pg:
            lines = bench(pg.url, a.rows, a.state, a.latency_ms, a.rps, pg.cpu)
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

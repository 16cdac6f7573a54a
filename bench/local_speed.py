"""CPU seconds per 1M objects of a whole dry run with a suite (read, suite, map, contract, request bodies),
on tables written by pandas, by pyarrow and as CSV, users, events and a wide users table (issue 12, goal 4).

    python bench/local_speed.py [--rows 300000] [--before REF] [--rounds 2] [--only users]

Tables: those of bench/body_speed.py (users with 8 attributes incl. a timestamp and a boolean, events with
name, time and 2 properties; each written by pandas with large_string columns and one row group, by
pyarrow with row groups of 100,000, and as CSV) and a wide users table (40 attributes: the 8 above and 32
more strings, integers, floats, booleans and timestamps), written by pyarrow and as CSV. Every stream has
a suite: users and wide `bench_users_suite` (5 expectations incl. a regex), events a 3-expectation suite
(not null, in set, between). Each figure is the CPU time (time.process_time) of `run_pipeline(...,
dry_run=True)` in a warm process (one warm-up run first), the lowest of 2 per child, printed beside
bench/calibration.py's loop of the same process and the goal-4 rate it implies on issue 12's slow machine
(objects per CPU second x calibration / 3.2 s). `--before REF` runs the same on the code of a git ref in
child processes alternating with this code's (lowest figure of `--rounds` per side) and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from body_speed import EVENTS, USERS, _keep_lowest, extract, write_tables  # noqa: E402
from calibration import REFERENCE_S, calibration_s  # noqa: E402

TARGET = 75_000  # objects/s on the slow machine (issue 12, goal 4)
EXTRA = 32  # wide table: columns beyond the users table's 8 attributes

EVENTS_SUITE = {
    "name": "bench_events_suite",
    "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "user_id"}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "event_name", "value_set":
            ["viewed_item", "added_to_cart", "checkout_started", "rented_movie"]}},  # fmt: skip
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "amount", "min_value": 0, "max_value": 1000}},
    ],
}


def _wide_extra() -> list[tuple[str, str]]:
    """(column, attribute type) of the wide table's extra columns: 8 of each kind."""
    kinds = ["string", "integer", "float", "boolean"]
    return [(f"x{i:02d}_{kinds[i % 4]}", kinds[i % 4]) for i in range(EXTRA)]


def write_wide(rows: int, folder: Path) -> dict[str, Path]:
    """The users table of body_speed with 32 extra attribute columns, by pyarrow and as CSV."""
    import numpy as np  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415
    import pyarrow.csv as pacsv  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415
    from data import users_table  # noqa: PLC0415

    paths = {f: folder / f"wide_{rows}_{f}.{'csv' if f == 'csv' else 'parquet'}" for f in ("pyarrow", "csv")}
    if all(p.exists() for p in paths.values()):
        return {f"wide {f}": p for f, p in paths.items()}
    rng = np.random.default_rng(5)
    table = users_table(rows).append_column("vip", pa.array(rng.random(rows) < 0.3))
    words = np.array(["alpha", "beta", "gamma", "delta", "épsilon", "zeta", "eta", "theta"])
    for name, kind in _wide_extra():
        if kind == "string":
            col = pa.array(words[rng.integers(0, len(words), rows)])
            col = pc.if_else(pa.array(rng.random(rows) < 0.05), pa.scalar(None, pa.string()), col)
        elif kind == "integer":
            col = pa.array(rng.integers(-1000, 100_000, rows))
        elif kind == "float":
            col = pa.array(np.round(rng.random(rows) * 500, 3))
        else:
            col = pa.array(rng.random(rows) < 0.5)
        table = table.append_column(name, col)
    pq.write_table(table, paths["pyarrow"], row_group_size=100_000)
    pacsv.write_csv(table, paths["csv"])
    return {f"wide {f}": p for f, p in paths.items()}


def write_dirty(rows: int, folder: Path) -> dict[str, Path]:
    """The users table of body_speed (pyarrow) with about 2 % bad rows: 0.5 % no user_id, 0.5 % a plan
    outside the suite's set, 0.5 % an age over 150, 0.5 % a malformed e-mail (a contract reject)."""
    import numpy as np  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415
    from data import users_table  # noqa: PLC0415

    path = folder / f"dirty_{rows}_pyarrow.parquet"
    if path.exists():
        return {"users dirty": path}
    rng = np.random.default_rng(9)
    t = users_table(rows).append_column("vip", pa.array(rng.random(rows) < 0.3))

    def spoil(name: str, value: Any) -> None:
        nonlocal t
        mask = pa.array(rng.random(rows) < 0.005)
        col = t.column(name).combine_chunks()
        t = t.set_column(t.schema.get_field_index(name), name, pc.if_else(mask, pa.scalar(value, col.type), col))

    spoil("user_id", None)
    spoil("plan", "platinum")
    spoil("age", 200)
    spoil("email", "not-an-email")
    pq.write_table(t, path, row_group_size=100_000)
    return {"users dirty": path}


def pipeline(label: str, path: Path, suites: Path) -> Any:
    from connector.config import Pipeline  # noqa: PLC0415

    if label.startswith("events"):
        spec, suite = EVENTS, "bench_events_suite"
    else:
        spec, suite = dict(USERS), "bench_users_suite"
        if label.startswith("wide"):
            spec["attributes"] = USERS["attributes"] + [{"column": c, "type": t} for c, t in _wide_extra()]
    return Pipeline.model_validate({
        "name": "bench_local_speed",
        "base_dir": str(ROOT),
        "expectations_dir": str(suites),
        "destination": {"url": "local", "api_key_env": "BENCH_BRAZE_KEY"},
        "report": {"dir": str(Path(tempfile.gettempdir()) / "bench-reports" / "{run_id}")},
        "streams": [{"name": "s", "source": {"path": str(path), "chunk_rows": 50_000}, **spec,
                     "expectations": [suite]}],
    })  # fmt: skip


def measure(label: str, path: Path, suites: Path, repeat: int = 2) -> dict[str, float]:
    from connector.pipeline import run_pipeline  # noqa: PLC0415

    pipe = pipeline(label, path, suites)
    env = {"BENCH_BRAZE_KEY": "x"}
    best = float("inf")
    rep: dict[str, Any] = {}
    run_pipeline(pipe, dry_run=True, env=env, raise_on_failure=False)  # warm-up
    for _ in range(repeat):
        c0 = time.process_time()
        rep = run_pipeline(pipe, dry_run=True, env=env, raise_on_failure=False).to_dict()
        best = min(best, time.process_time() - c0)
    rows = rep["rows"]
    return {"read": rows["read"], "rejected": rows["rejected"], "cpu": best, "per_m": best * 1e6 / max(rows["read"], 1)}


def tables(rows: int, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {**write_tables(rows, folder), **write_dirty(rows, folder), **write_wide(rows, folder)}


def child(rows: int, folder: Path, only: str | None) -> None:
    import shutil  # noqa: PLC0415

    suites = Path(tempfile.mkdtemp())
    try:
        shutil.copy(ROOT / "expectations" / "bench_users_suite.json", suites)
        (suites / "bench_events_suite.json").write_text(json.dumps(EVENTS_SUITE))
        calib = min(calibration_s() for _ in range(2))
        for label, path in tables(rows, folder).items():
            if only and not label.startswith(only):
                continue
            print(json.dumps({"label": label, "calibration": calib, **measure(label, path, suites)}), flush=True)
    finally:
        shutil.rmtree(suites, ignore_errors=True)


def run_tree(tree: Path, rows: int, folder: Path, only: str | None) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(HERE / "local_speed.py"), "--child", "--rows", str(rows), "--data", str(folder)]
    res = subprocess.run(cmd + (["--only", only] if only else []), env=env, capture_output=True, text=True,
                         check=True, cwd=tree)  # fmt: skip
    return {d["label"]: d for d in (json.loads(x) for x in res.stdout.splitlines() if x.startswith("{"))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--before", help="a git ref whose code to measure too (e.g. main)")
    ap.add_argument("--data", type=Path, default=HERE / ".data" / "body_speed")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", help="tables whose label starts with this (users, events, wide)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.rows, a.data, a.only)
        return
    tables(a.rows, a.data)
    after: dict[str, dict[str, float]] = {}
    before: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tree = extract(a.before, Path(tmp)) if a.before else None
        for _ in range(a.rounds):  # alternate, so load from other processes weighs on both sides alike
            _keep_lowest(after, run_tree(ROOT, a.rows, a.data, a.only))
            if tree is not None:
                _keep_lowest(before, run_tree(tree, a.rows, a.data, a.only))
    print(f"## Dry run with a suite, CPU seconds per 1M objects ({a.rows:,} rows per table, chunk_rows 50,000)")
    print("calib = bench/calibration.py's loop (CPU s); slow = objects/s scaled to the 3.2 s machine "
          f"(target >= {TARGET:,})")
    head = "table           rejected | calib  CPU s/1M  slow/s"
    print(head + (" | before: calib  CPU s/1M  slow/s  ratio" if before else ""))
    for label, d in after.items():
        slow = 1e6 / d["per_m"] * d["calibration"] / REFERENCE_S
        line = f"{label:15s} {d['rejected']:8,.0f} | {d['calibration']:5.2f} {d['per_m']:8.2f} {slow:8,.0f}"
        if label in before:
            b = before[label]
            bslow = 1e6 / b["per_m"] * b["calibration"] / REFERENCE_S
            line += f" | {b['calibration']:13.2f} {b['per_m']:8.2f} {bslow:7,.0f}  x{b['per_m'] / d['per_m']:.2f}"
        print(line)


if __name__ == "__main__":
    main()

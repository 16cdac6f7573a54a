"""CPU seconds per 1M objects of the local body-building stages: map + contract (map_chunk) and pack
(pack_track_array into /users/track bodies), on tables as the readers deliver them.

    python bench/body_speed.py [--rows 300000] [--before REF] [--rounds 2]

Tables: users (8 attributes incl. a timestamp and a boolean) and events (name, time, 2 properties), each
written three ways: by pandas (large_string columns, one row group for the whole table), by pyarrow
(row groups of 100,000) and as CSV. Every figure is CPU time (time.process_time), never wall time, printed
beside the calibration loop (a 10M-iteration Python `for`) of the same process, because the machine may
be shared. `--before REF` also runs the same measurement on the code of a git ref (extracted with
`git archive` into a temporary folder) in child processes alternating with this code's, and prints the
ratio (lowest figures of `--rounds` runs per side).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

sys.path.insert(0, str(HERE))
from data import users_spec  # noqa: E402

USERS = users_spec({"column": "vip", "type": "boolean"})  # write_tables adds the boolean column
EVENTS: dict[str, Any] = {
    "kind": "events",
    "identifier": {"external_id": "user_id"},
    "event": {
        "name": "event_name",
        "time": "event_time",
        "properties": {"columns": {"amount": {"column": "amount", "type": "float"}, "sku": "sku"}},
    },
}


def calibration() -> float:
    """CPU seconds of a 10M-iteration Python loop (how fast this machine runs plain Python right now)."""
    t0 = time.process_time()
    for _ in range(10_000_000):
        pass
    return time.process_time() - t0


def write_tables(rows: int, folder: Path) -> dict[str, Path]:
    """users/events written by pandas, by pyarrow and as CSV (once per row count)."""
    import numpy as np  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.csv as pacsv  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415
    from data import events_table, users_table  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for kind in ("users", "events"):
        table = users_table(rows) if kind == "users" else events_table(rows)
        if kind == "users":
            table = table.append_column("vip", pa.array(np.random.default_rng(3).random(rows) < 0.3))
        paths = {f: folder / f"{kind}_{rows}_{f}.{'csv' if f == 'csv' else 'parquet'}" for f in ("pandas", "pyarrow", "csv")}
        if not paths["pandas"].exists():
            wide = table.cast(pa.schema([pa.field(f.name, pa.large_string() if f.type == pa.string() else f.type) for f in table.schema]))
            df = wide.to_pandas(types_mapper=pd.ArrowDtype)
            df.to_parquet(paths["pandas"], engine="pyarrow", index=False, row_group_size=rows)
        if not paths["pyarrow"].exists():
            pq.write_table(table, paths["pyarrow"], row_group_size=100_000)
        if not paths["csv"].exists():
            pacsv.write_csv(table, paths["csv"])
        out.update({f"{kind} {f}": p for f, p in paths.items()})
    return out


def measure(label: str, path: Path) -> dict[str, float]:
    """Read every chunk, then CPU seconds of map_chunk and of packing them (best of 3)."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from connector.config import Stream  # noqa: PLC0415
    from connector.delivery.batching import pack_track_array  # noqa: PLC0415
    from connector.mapping import map_chunk  # noqa: PLC0415
    from connector.readers import read_source  # noqa: PLC0415

    spec = USERS if label.startswith("users") else EVENTS
    stream = Stream.model_validate({"name": "bench", "source": {"path": str(path), "chunk_rows": 50_000}, **spec})
    t0 = time.process_time()
    chunks = list(read_source(stream.source, ROOT))
    read = time.process_time() - t0
    array = "attributes" if spec["kind"] == "attributes" else "events"
    best_map = best_pack = float("inf")
    objects = 0
    for _ in range(3):
        map_cpu = pack_cpu = 0.0
        objects = 0
        for chunk in chunks:
            t0 = time.process_time()
            mapped = map_chunk(stream, chunk, datetime.now(UTC))
            t1 = time.process_time()
            for _req in pack_track_array(array, mapped.objects, mapped.user_keys, range(len(mapped))):
                pass
            map_cpu += t1 - t0
            pack_cpu += time.process_time() - t1
            objects += len(mapped)
        best_map, best_pack = min(best_map, map_cpu), min(best_pack, pack_cpu)
    per = 1e6 / max(objects, 1)
    return {"objects": objects, "read": read * per, "map": best_map * per, "pack": best_pack * per}


def child(rows: int, folder: Path) -> None:
    """Measure every table with the code on sys.path; one JSON line per table."""
    tables = write_tables(rows, folder)
    calib = calibration()
    for label, path in tables.items():
        res = measure(label, path)
        print(json.dumps({"label": label, "calibration": calib, **res}), flush=True)


def run_tree(tree: Path, rows: int, folder: Path) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    res = subprocess.run([sys.executable, __file__, "--child", "--rows", str(rows), "--data", str(folder)],
                         env=env, capture_output=True, text=True, check=True, cwd=tree)  # fmt: skip
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    return {d["label"]: d for d in lines}


def _keep_lowest(best: dict[str, dict[str, float]], new: dict[str, dict[str, float]]) -> None:
    for label, d in new.items():
        old = best.setdefault(label, dict(d))
        for k, v in d.items():
            old[k] = min(old[k], v)


def extract(ref: str, into: Path) -> Path:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "connector"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--before", help="a git ref whose code to measure too (e.g. main)")
    ap.add_argument("--data", type=Path, default=HERE / ".data" / "body_speed")
    ap.add_argument("--rounds", type=int, default=2, help="alternating runs per side; the lowest figures count")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.rows, a.data)
        return
    write_tables(a.rows, a.data)
    # Runs alternate (this code, the ref, this code, ...) and each figure is the lowest seen, so that load
    # from other processes on a shared machine weighs on both sides alike.
    after: dict[str, dict[str, float]] = {}
    before: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tree = extract(a.before, Path(tmp)) if a.before else None
        for _ in range(a.rounds):
            _keep_lowest(after, run_tree(ROOT, a.rows, a.data))
            if tree is not None:
                _keep_lowest(before, run_tree(tree, a.rows, a.data))
    print(f"## Body building, CPU seconds per 1M objects ({a.rows:,} rows per table)")
    print("table            calib s | read  | map+contract  pack  total" + (" | before: calib  map  pack  total  ratio" if before else ""))
    for label, d in after.items():
        total = d["map"] + d["pack"]
        line = f"{label:16s} {d['calibration']:6.2f} | {d['read']:5.2f} | {d['map']:8.2f} {d['pack']:7.2f} {total:6.2f}"
        if label in before:
            b = before[label]
            btotal = b["map"] + b["pack"]
            line += f" | {b['calibration']:6.2f} {b['map']:5.2f} {b['pack']:5.2f} {btotal:6.2f}  x{btotal / total:.2f}"
        print(line)


if __name__ == "__main__":
    main()

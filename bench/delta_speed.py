"""Delta sync's local cost: rows/s of DeltaState.changed (first run: all new; re-run: all unchanged) and of
settling delivered objects, on 7-attribute user objects, in a fresh SQLite state file.

    python bench/delta_speed.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402

from connector.delta import DeltaState  # noqa: E402
from connector.records import Chunk, MappedChunk  # noqa: E402


def chunk(start: int, n: int) -> MappedChunk:
    objects = [
        {"external_id": f"u{i}", "first_name": "Ann", "email": f"u{i}@example.com", "country": "FR",
         "plan": "pro", "age": 30 + i % 50, "lifetime_value": 12.5 * i, "signup_at": "2024-01-01T00:00:00Z"}
        for i in range(start, start + n)
    ]  # fmt: skip
    table = pa.table({"i": list(range(n))})
    return MappedChunk("attributes", Chunk("users", table, list(range(n))), objects, list(range(n)),
                       [f"external_id:{o['external_id']}" for o in objects])  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--chunk", type=int, default=50_000)
    a = ap.parse_args()
    chunks = [chunk(s, min(a.chunk, a.rows - s)) for s in range(0, a.rows, a.chunk)]
    with tempfile.TemporaryDirectory() as d:
        state = DeltaState(Path(d) / "state.sqlite")
        t0 = time.perf_counter()
        decided = [state.changed("users", "attributes", c)[0] for c in chunks]
        t1 = time.perf_counter()
        for m in decided:
            state.settle("users", m.delta_keys or [], True)
        t2 = time.perf_counter()
        unchanged = sum(state.changed("users", "attributes", c)[1] for c in chunks)
        t3 = time.perf_counter()
        state.close()
    print(f"# bench/delta_speed.py --rows {a.rows}")
    print(f"first run (all new):      {a.rows / (t1 - t0):10,.0f} rows/s")
    print(f"settle (all delivered):   {a.rows / (t2 - t1):10,.0f} objects/s")
    print(f"re-run (all unchanged):   {a.rows / (t3 - t2):10,.0f} rows/s  ({unchanged:,} skipped)")


if __name__ == "__main__":
    main()

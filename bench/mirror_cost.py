"""Mirror mode's local cost: CPU seconds of noting who was read (identifier_keys + Presence.see) and of the
comparison with the state's users (Presence.removed, then listing the removed), against the CPU of mapping
the same chunks (map_chunk), measured in the same run. CPU time (process_time), not wall time.

    python bench/mirror_cost.py [--rows 1000000] [--removed 0.01]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402

from connector.config import Stream  # noqa: E402
from connector.delta.removed import Presence  # noqa: E402
from connector.mapping import identifier_keys, map_chunk  # noqa: E402
from connector.records import Chunk  # noqa: E402

STREAM = Stream.model_validate({
    "name": "users", "source": {"path": "users.csv"}, "kind": "attributes", "delta": True,
    "identifier": {"external_id": "user_id"},
    "attributes": [{"column": "email"}, {"column": "plan"}, {"column": "age", "type": "integer"}],
})  # fmt: skip


def chunk(start: int, n: int) -> Chunk:
    ids = [f"user-{i:09d}" for i in range(start, start + n)]
    table = pa.table({"user_id": ids, "email": [f"{u}@example.com" for u in ids], "plan": ["pro"] * n,
                      "age": [str(30 + i % 50) for i in range(n)]})  # fmt: skip
    return Chunk("users.csv", table, list(range(2, n + 2)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--removed", type=float, default=0.01, help="share of the known users absent from the source")
    a = ap.parse_args()
    gone = int(a.rows * a.removed)
    chunks = [chunk(s, min(a.chunk, a.rows - gone - s)) for s in range(0, a.rows - gone, a.chunk)]
    known = [f"external_id:user-{i:09d}" for i in range(a.rows)]
    now = datetime.now(UTC)

    t0 = time.process_time()
    for c in chunks:
        map_chunk(STREAM, c, now)
    t1 = time.process_time()
    presence = Presence()
    for c in chunks:
        presence.see(identifier_keys(STREAM, c))
    t2 = time.process_time()
    removed = presence.removed(lambda: known)
    listed = sum(1 for _ in removed.keys())
    t3 = time.process_time()
    presence.close()
    read = a.rows - gone
    print(f"# bench/mirror_cost.py --rows {a.rows} --removed {a.removed} (CPU seconds, process_time)")
    print(f"mapping the rows read (baseline): {t1 - t0:7.2f} s for {read:,} rows")
    print(f"noting who was read:              {t2 - t1:7.2f} s  ({(t2 - t1) / (t1 - t0):.2f} x the mapping)")
    print(f"comparing with {a.rows:,} known users: {t3 - t2:7.2f} s  ({listed:,} removed listed)")


if __name__ == "__main__":
    main()

"""Mirror mode's local cost: CPU seconds of the removed-user detection as a run does it (delivery/mirror.py's
Mirror on a SQLite state file: noting who each chunk read, then deciding), against the CPU of mapping the
same chunks (map_chunk), measured in the same run. CPU time (process_time), not wall time.

Three runs of one stream over one state file: a first run (the state empty as it begins; the users it
read are then confirmed, outside the timing), an unchanged re-run (every known user read again), and a
run whose source lost `--removed` of the known users (listed in removed.csv as reported). Confirming is
delta's work (bench/delta_speed.py), not mirror mode's, so it is not timed.

    python bench/mirror_cost.py [--rows 1000000] [--removed 0.01]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
from calibration import calibration_s  # noqa: E402

from connector.config import Pipeline  # noqa: E402
from connector.delivery.mirror import Mirror  # noqa: E402
from connector.delta import DeltaState  # noqa: E402
from connector.delta.stores import SqliteStore  # noqa: E402
from connector.mapping import map_chunk  # noqa: E402
from connector.records import Chunk  # noqa: E402
from connector.report import RunReport  # noqa: E402

PIPELINE = Pipeline.model_validate({"name": "m", "streams": [{
    "name": "users", "source": {"path": "users.csv"}, "kind": "attributes", "delta": True, "on_removed": "report",
    "identifier": {"external_id": "user_id"},
    "attributes": [{"column": "email"}, {"column": "plan"}, {"column": "age", "type": "integer"}],
}]})  # fmt: skip
STREAM = PIPELINE.streams[0]


def chunk(start: int, n: int) -> Chunk:
    ids = [f"user-{i:09d}" for i in range(start, start + n)]
    table = pa.table({"user_id": ids, "email": [f"{u}@example.com" for u in ids], "plan": ["pro"] * n,
                      "age": [str(30 + i % 50) for i in range(n)]})  # fmt: skip
    return Chunk("users.csv", table, list(range(2, n + 2)))


def mirror_run(state: Path, out: Path, chunks: list[Chunk], after: Callable[[SqliteStore], None] | None = None
               ) -> tuple[float, float, dict[str, object]]:  # fmt: skip
    """CPU seconds of noting (Mirror init + see) and of deciding (apply), and the stream's report entry."""
    store = SqliteStore(state, read_only=False)
    delta = DeltaState(store)
    report = RunReport("m", report_dir=out)
    t0 = time.process_time()
    mirror = Mirror(PIPELINE, delta, report, dry_run=False, allow_deletes=None, undecided=None)
    for c in chunks:
        mirror.see(STREAM, c)
    mirror.finish(STREAM, True)
    t1 = time.process_time()
    if after is not None:
        after(store)  # what the run confirmed (not timed)
    t2 = time.process_time()
    mirror.apply(None)
    t3 = time.process_time()
    delta.close()
    assert report.removed is not None
    return t1 - t0, t3 - t2, report.removed["users"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--removed", type=float, default=0.01, help="share of the known users absent from the source")
    a = ap.parse_args()
    logging.getLogger("connector").setLevel(logging.ERROR)  # the report's warnings, not this bench's output
    calib = calibration_s()
    gone = int(a.rows * a.removed)
    chunks = [chunk(s, min(a.chunk, a.rows - s)) for s in range(0, a.rows, a.chunk)]
    fewer = [chunk(s, min(a.chunk, a.rows - gone - s)) for s in range(0, a.rows - gone, a.chunk)]
    now = datetime.now(UTC)
    t0 = time.process_time()
    for c in chunks:
        map_chunk(STREAM, c, now)
    mapping = time.process_time() - t0

    def confirm(store: SqliteStore) -> None:
        for s in range(0, a.rows, a.chunk):
            store.write("users", [(f"external_id:user-{i:09d}", b"{}") for i in range(s, min(a.rows, s + a.chunk))], [])

    print(f"# bench/mirror_cost.py --rows {a.rows} --removed {a.removed} (CPU seconds, process_time; "
          f"calibration loop {calib:.2f} s)")  # fmt: skip
    print(f"mapping the {a.rows:,} rows (baseline): {mapping:6.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state.sqlite"
        runs = [("first run (empty state)", chunks, confirm), ("unchanged re-run", chunks, None),
                (f"{gone:,} users removed", fewer, None)]  # fmt: skip
        for n, (label, read, after) in enumerate(runs):
            noting, deciding, entry = mirror_run(state, Path(tmp) / f"r{n}", read, after)
            total = noting + deciding
            print(f"{label:26s} noting {noting:5.2f} s + deciding {deciding:5.2f} s = {total:5.2f} s "
                  f"({total / mapping:.2f} x the mapping; known {entry['known']:,}, removed {entry['removed']:,})")


if __name__ == "__main__":
    main()

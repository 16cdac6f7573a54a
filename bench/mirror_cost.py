"""Mirror mode's local cost: CPU seconds of the removed-user detection as a run does it (delivery/mirror.py's
Mirror on a SQLite state file: noting who each chunk read, then deciding), against the CPU of mapping the
same chunks (map_chunk), measured in the same run. CPU time (process_time), not wall time.

Three runs of one stream over one state file, each chunk noted, mapped and decided by delta as a run does
(what delta sends is confirmed at once, untimed): a first run (the state empty as it begins), an unchanged
re-run (every known user read again), and a run whose source lost `--removed` of the known users (listed in
removed.csv as reported). Delta's decision is timed apart: its lookups note the users they find for mirror
mode (DeltaState.track_found), so that cost shows there.

    python bench/mirror_cost.py [--rows 1000000] [--removed 0.01]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
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


def mirror_run(state: Path, out: Path, chunks: list[Chunk]) -> tuple[float, float, float, dict[str, object]]:
    """CPU seconds of noting (Mirror init + see), of delta's decision (DeltaState.changed: its lookups note
    the users found for mirror mode) and of deciding the removals (apply); and the stream's report entry.
    What delta sends is confirmed at once, outside the timing (delivery's and settling's work)."""
    store = SqliteStore(state, read_only=False)
    delta = DeltaState(store)
    report = RunReport("m", report_dir=out)
    now = datetime.now(UTC)
    noting = deciding = 0.0
    t0 = time.process_time()
    mirror = Mirror(PIPELINE, delta, report, dry_run=False, allow_deletes=None, undecided=None)
    noting += time.process_time() - t0
    for c in chunks:
        t0 = time.process_time()
        mirror.see(STREAM, c)
        t1 = time.process_time()
        mapped = map_chunk(STREAM, c, now)
        t2 = time.process_time()
        sent, _ = delta.changed("users", "attributes", mapped)
        t3 = time.process_time()
        if sent.delta_keys:
            delta.settle("users", sent.delta_keys, True)
        noting += t1 - t0
        deciding += t3 - t2
    mirror.finish(STREAM, True)
    t0 = time.process_time()
    mirror.apply(None)
    applying = time.process_time() - t0
    delta.close()
    assert report.removed is not None
    return noting, deciding, applying, report.removed["users"]


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

    print(f"# bench/mirror_cost.py --rows {a.rows} --removed {a.removed} (CPU seconds, process_time; "
          f"calibration loop {calib:.2f} s)")  # fmt: skip
    print(f"mapping the {a.rows:,} rows (baseline): {mapping:6.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state.sqlite"
        runs = [("first run (empty state)", chunks), ("unchanged re-run", chunks), (f"{gone:,} users removed", fewer)]
        for n, (label, read) in enumerate(runs):
            noting, delta, deciding, entry = mirror_run(state, Path(tmp) / f"r{n}", read)
            total = noting + deciding
            print(f"{label:24s} mirror: noting {noting:5.2f} s + deciding {deciding:5.2f} s = {total:5.2f} s "
                  f"({total / mapping:.2f} x the mapping; known {entry['known']:,}, removed {entry['removed']:,}); "
                  f"delta's decision {delta:5.2f} s")


if __name__ == "__main__":
    main()

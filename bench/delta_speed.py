"""Delta sync's local cost: CPU seconds and rows/s of DeltaState.changed (first run: all new; re-run: all
unchanged; a re-run with one attribute changed on 10 % of the users) and of settling delivered objects, on
7-attribute user objects (as JSON, as mapping builds them; --dicts: as dicts), in a fresh SQLite state file
(or PostgreSQL with --pg-url-env VAR).

    python bench/delta_speed.py [--rows 200000] [--dicts] [--pg-url-env STATE_PG_URL]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from itertools import accumulate
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402
import pyarrow as pa  # noqa: E402
from calibration import calibration_s  # noqa: E402

from connector.delta import DeltaState  # noqa: E402
from connector.delta.pg_store import PgStore  # noqa: E402
from connector.delta.stores import SqliteStore  # noqa: E402
from connector.quiet_gc import quiet_gc  # noqa: E402
from connector.records import Chunk, EncodedObjects, MappedChunk  # noqa: E402


def encoded(objects: list[dict[str, Any]]) -> EncodedObjects:
    """The objects as mapping's column path hands them on: JSON, each followed by a comma."""
    parts = [orjson.dumps(o) for o in objects]
    return EncodedObjects(b",".join(parts) + b",", [0, *accumulate(len(p) + 1 for p in parts)])


def chunk(start: int, n: int, bump: int = 0, dicts: bool = False) -> MappedChunk:
    objects = [
        {"external_id": f"u{i}", "first_name": "Ann", "email": f"u{i}@example.com", "country": "FR",
         "plan": "pro", "age": 30 + i % 50 + (bump if i % 10 == 0 else 0), "lifetime_value": 12.5 * i,
         "signup_at": "2024-01-01T00:00:00Z"}
        for i in range(start, start + n)
    ]  # fmt: skip
    table = pa.table({"i": list(range(n))})
    return MappedChunk("attributes", Chunk("users", table, list(range(n))), objects if dicts else encoded(objects), list(range(n)),
                       [f"external_id:{o['external_id']}" for o in objects])  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--dicts", action="store_true", help="objects as dicts (mapping's row path), not JSON")
    ap.add_argument("--pg-url-env", default=None, help="keep the state in PostgreSQL (the URL in this variable)")
    a = ap.parse_args()
    calib = calibration_s()
    chunks = [chunk(s, min(a.chunk, a.rows - s), dicts=a.dicts) for s in range(0, a.rows, a.chunk)]
    changed = [chunk(s, min(a.chunk, a.rows - s), bump=1, dicts=a.dicts) for s in range(0, a.rows, a.chunk)]
    with tempfile.TemporaryDirectory() as d, quiet_gc():  # the GC settings of a run
        if a.pg_url_env:
            import os

            store: Any = PgStore(a.pg_url_env, f"bench-{os.getpid()}", os.environ, read_only=False)
        else:
            store = SqliteStore(Path(d) / "state.sqlite", read_only=False)
        state = DeltaState(store)
        t0 = time.process_time()
        decided = [state.changed("users", "attributes", c)[0] for c in chunks]
        t1 = time.process_time()
        for m in decided:
            for i in range(0, len(m), 75):  # as the writer settles: one request at a time, by position or key
                state.settle("users", m.delta_rows(list(range(i, min(i + 75, len(m))))), True)
        state.commit()  # every settled answer written (the writer's last answers wait for the run's end)
        t2 = time.process_time()
        unchanged = sum(state.changed("users", "attributes", c)[1] for c in chunks)
        t3 = time.process_time()
        sent = [state.changed("users", "attributes", c)[0] for c in changed]
        t4 = time.process_time()
        state.forget("users", [k for m in sent for k in m.delta_keys or []])  # leave nothing behind (PostgreSQL)
        state.close()
    backend = f"PostgreSQL (${a.pg_url_env})" if a.pg_url_env else "SQLite file"
    print(f"# bench/delta_speed.py --rows {a.rows}{' --dicts' if a.dicts else ''} ({backend}; CPU seconds of this "
          f"process; calibration loop {calib:.2f} s)")
    print(f"first run (all new):        {t1 - t0:6.2f} s CPU  {a.rows / (t1 - t0):10,.0f} rows/s")
    print(f"settle (all delivered):     {t2 - t1:6.2f} s CPU  {a.rows / (t2 - t1):10,.0f} objects/s (75 per call)")
    print(f"re-run (all unchanged):     {t3 - t2:6.2f} s CPU  {a.rows / (t3 - t2):10,.0f} rows/s  ({unchanged:,} skipped)")
    n = sum(len(m) for m in sent)
    print(f"re-run (10 % changed):      {t4 - t3:6.2f} s CPU  {a.rows / (t4 - t3):10,.0f} rows/s  ({n:,} sent)")


if __name__ == "__main__":
    main()

"""A run of delta sync's fast path killed with SIGKILL mid-run (test_delta_fast_path.py).

    python rowprint_worker.py STATE [PIPELINE]   (a state file, or a postgresql:// URL and the pipeline)
    python rowprint_worker.py URL PIPELINE FIRST N   (one partition sharing a PostgreSQL state: see `share`)

Run 1 confirms users 0..99 with their prints. Run 2 (same process, a new state): users 0..49 changed
(other prints), 50..99 unchanged, 100..199 new; the fast path takes what it may, the rest is decided by the
object comparison and sent; only 100..149 are confirmed and committed before the process kills itself, so
0..49 and 150..199 were in flight. Prints one JSON line (what run 2 took and sent) before the kill.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from connector.delta import DeltaState
from connector.delta.pg_store import PgStore
from connector.delta.stores import SqliteStore
from connector.records import Chunk, MappedChunk


def users(ids: list[int], changed: range = range(0)) -> tuple[MappedChunk, list[str | None], np.ndarray]:
    """The mapped users, their keys and their source prints (a changed user has another print)."""
    objects: list[dict[str, Any]] = [
        {"external_id": f"u{i}", "plan": "max" if i in changed else "pro"} for i in ids
    ]
    chunk = Chunk("users", pa.table({"i": list(range(len(ids)))}), list(range(len(ids))))
    keys = [f"external_id:u{i}" for i in ids]
    mapped = MappedChunk("attributes", chunk, objects, list(range(len(ids))), keys)
    prints = np.array([(2_000_000 if i in changed else 1_000_000) + i for i in ids], np.int64)
    return mapped, list(keys), prints


def decide(state: DeltaState, ids: list[int], changed: range = range(0)) -> tuple[list[int], list[str]]:
    """The fast path, then the object comparison on the rest: (users taken by the fast path, keys sent)."""
    _, keys, prints = users(ids, changed)
    fast = state.unchanged_rows("users", keys, prints)
    rest = [i for i, f in zip(ids, fast.tolist(), strict=True) if not f]
    mapped, _, rest_prints = users(rest, changed)
    out, _ = state.changed("users", "attributes", mapped, None, rest_prints)
    return [i for i, f in zip(ids, fast.tolist(), strict=True) if f], list(out.delta_keys or [])


def open_state(where: str, pipeline: str = "rowprint") -> DeltaState:
    """The state at `where`: a PostgreSQL URL (the pipeline's rows of its table) or a local file."""
    if where.startswith("postgresql://"):
        return DeltaState(PgStore("STATE_PG_URL", pipeline, {"STATE_PG_URL": where}, read_only=False))
    return DeltaState(SqliteStore(Path(where), read_only=False))


def main(where: str, pipeline: str = "rowprint") -> None:
    state = open_state(where, pipeline)
    _, sent = decide(state, list(range(100)))
    state.settle("users", sent, True)
    state.close()
    state = open_state(where, pipeline)
    fast, sent = decide(state, list(range(200)), changed=range(50))
    state.settle("users", [k for k in sent if 100 <= int(k.split(":u")[1]) < 150], True)
    state.commit()
    print(json.dumps({"fast": fast, "sent": sorted(int(k.split(":u")[1]) for k in sent)}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def share(url: str, pipeline: str, first: int, n: int) -> None:
    """One of two processes sharing a PostgreSQL state, each with users of its own: confirms them with
    their prints, then decides them again (a new state, as a next run) and half of them changed; prints
    (taken by the fast path, sent) as JSON."""
    ids = list(range(first, first + n))
    state = open_state(url, pipeline)
    _, sent = decide(state, ids)
    state.settle("users", sent, True)
    state.close()
    state = open_state(url, pipeline)
    fast, sent = decide(state, ids, changed=range(first, first + n // 2))
    state.settle("users", sent, True)
    state.close()
    print(json.dumps({"fast": fast, "sent": sorted(int(k.split(":u")[1]) for k in sent)}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 5:
        share(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main(*sys.argv[1:3])

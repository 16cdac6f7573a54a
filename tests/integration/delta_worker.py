"""One process using the PostgreSQL delta state, for the shared-state tests (test_delta_state_pg.py).

    python delta_worker.py share PIPELINE FIRST COUNT       # deliver users FIRST..FIRST+COUNT-1, 100 a chunk
    python delta_worker.py crash PIPELINE                   # deliver, change, confirm half, then kill -9 itself
    python delta_worker.py rounds PIPELINE FIRST COUNT      # one store, three rounds over users FIRST..

The URL is in $STATE_PG_URL ($STATE_PG_INDEX_COPY: the local copy of the index, if any). `share` prints one JSON line: rows sent and unchanged. `crash`: users 0..99
delivered; then users 0..49 change and 100..199 are new, and only 100..149 are confirmed before the
process kills itself with SIGKILL once they are committed (0..49 and 150..199 were in flight). `rounds`
opens one state and delivers its users three times (as they are, every 10th changed, the same again),
printing a JSON list of [sent, unchanged] per round.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa

from connector.delta import DeltaState
from connector.delta.pg_store import PgStore
from connector.records import Chunk, MappedChunk


def users(ids: range, plan: str = "pro", changed: range = range(0)) -> MappedChunk:
    objects: list[dict[str, Any]] = [{"external_id": f"u{i}", "plan": "max" if i in changed else plan, "age": i % 50}
                                     for i in ids]  # fmt: skip
    chunk = Chunk("users", pa.table({"i": list(range(len(objects)))}), list(range(len(objects))))
    return MappedChunk("attributes", chunk, objects, list(range(len(objects))), [f"external_id:u{i}" for i in ids])


def open_state(pipeline: str) -> DeltaState:
    """With $STATE_PG_INDEX_COPY: that file is the local copy of the index (pg_cache.py)."""
    copy = os.environ.get("STATE_PG_INDEX_COPY")
    return DeltaState(PgStore("STATE_PG_URL", pipeline, os.environ, read_only=False, cache=Path(copy) if copy else None))


def deliver(state: DeltaState, first: int, count: int, changed: range = range(0)) -> tuple[int, int]:
    """Users FIRST..FIRST+COUNT-1 through the state, 100 a chunk, every answer a 2xx: (sent, unchanged)."""
    sent = unchanged = 0
    for start in range(first, first + count, 100):
        out, same = state.changed("users", "attributes", users(range(start, min(start + 100, first + count)),
                                                               changed=changed))  # fmt: skip
        assert out.delta_keys is not None
        for i in range(0, len(out.delta_keys), 25):  # answers arrive a request at a time
            state.settle("users", out.delta_keys[i : i + 25], True)
        sent, unchanged = sent + len(out), unchanged + same
    return sent, unchanged


def rounds(pipeline: str, first: int, count: int) -> None:
    state = open_state(pipeline)
    every10 = range(first, first + count, 10)
    out = [deliver(state, first, count), deliver(state, first, count, every10), deliver(state, first, count, every10)]
    state.close()
    print(json.dumps(out), flush=True)


def share(pipeline: str, first: int, count: int) -> None:
    state = open_state(pipeline)
    sent, unchanged = deliver(state, first, count)
    state.close()
    print(json.dumps({"sent": sent, "unchanged": unchanged}), flush=True)


def crash(pipeline: str) -> None:
    state = open_state(pipeline)
    first, _ = state.changed("users", "attributes", users(range(100)))
    state.settle("users", first.delta_keys or [], True)
    second, _ = state.changed("users", "attributes", users(range(200), changed=range(50)))
    keys = second.delta_keys or []
    state.settle("users", [k for k in keys if 100 <= int(k.split(":u")[1]) < 150], True)
    state.commit()  # an attribute's confirmation may wait for a later transaction: these are committed
    print("sent", len(keys), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    if sys.argv[1] == "share":
        share(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "rounds":
        rounds(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        crash(sys.argv[2])

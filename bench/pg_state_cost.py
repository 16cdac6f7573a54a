"""The PostgreSQL delta state's own costs, apart from a run: confirmations written as a first run writes
them (new users confirmed by position, flights.py, handed to the group commit in groups of --group, with
source prints; a tree whose store takes no Bulk gets them as pairs), new keys written by key, the index read as a store opens, upserts of changed
records, and a changed run's lookup + forget + confirm; opening again from the local copy of the index
(pg_cache.py) that the first run's store wrote as it closed. Prints the CPU of the store's server connection
(its backend, /proc: nothing else of the server) and of this process, per row.

    python bench/pg_state_cost.py [--rows 200000] [--group 2000]

A throwaway server (bench/pg_server.py). Run it against two checkouts alternately (PYTHONPATH) to compare
them on a shared machine: the backend's CPU is the store's alone, whatever else runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
from pg_server import PgServer  # noqa: E402

from connector.delta.commit import GroupCommit  # noqa: E402
from connector.delta.flights import Flight  # noqa: E402
from connector.delta.pg_store import PgStore  # noqa: E402


def record(i: int, extra: bytes = b"") -> bytes:
    """A record as the bench's users table gives it (about 190 bytes of JSON)."""
    return (f'{{"external_id":"u{i}","first_name":"Ann{i % 100}","email":"u{i}@example.com","country":"FR",'
            f'"plan":"pro","age":{20 + i % 60},"lifetime_value":{(i % 1000) * 1.5},'
            f'"signup_at":"2024-01-01T00:00:00Z"}}').encode() + extra  # fmt: skip


def backend_cpu(store: PgStore) -> float:
    """CPU seconds of the store's server process (its connection's backend)."""
    assert store._db is not None
    pid = store._db.scalar("SELECT pg_backend_pid()", [])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--group", type=int, default=2000, help="confirmations a write holds (a group commit's)")
    a = ap.parse_args()
    n, g = a.rows, a.group
    keys = [f"u{i}" for i in range(n)]
    t = time.process_time()
    for _ in range(10_000_000):
        pass
    print(f"# bench/pg_state_cost.py --rows {n} --group {g}; calibration loop {time.process_time() - t:.2f} s CPU; "
          "µs a row: the store's backend (server) / this process (building the rows included)")  # fmt: skip
    with PgServer() as pg, tempfile.TemporaryDirectory() as tmp:
        env = {"STATE": pg.url}
        copy = Path(tmp) / "bench.pg-index"
        store = PgStore("STATE", "bench", env, read_only=False, cache=copy)
        # The chunks' flights as a run makes them when it sends a chunk (keys and records hashed there): not timed.
        flights = [Flight(keys[at : at + g], [record(at + j) for j in range(len(keys[at : at + g]))],
                          np.arange(12345, 12345 + len(keys[at : at + g]), dtype=np.int64), slice(None))
                   for at in range(0, n, g)]  # fmt: skip
        lock = threading.Lock()
        group = GroupCommit(store, lock)
        b0, c0 = backend_cpu(store), time.process_time()
        for f in flights:
            with lock:
                ticket = group.put_bulk("users", f, np.arange(len(f.keys)))
            group.flush(ticket)
        b1, c1 = backend_cpu(store), time.process_time()
        print(f"first run's confirmations (by position): {1e6 * (b1 - b0) / n:5.1f} / {1e6 * (c1 - c0) / n:5.1f}")
        del flights
        b0, c0 = backend_cpu(store), time.process_time()
        for at in range(0, n, g):
            part = [f"k{k}" for k in keys[at : at + g]]
            store.write("users", [(k, record(at + j)) for j, k in enumerate(part)], [], {k: 12345 + j for j, k in enumerate(part)})
        b1, c1 = backend_cpu(store), time.process_time()
        print(f"new keys confirmed by key: {1e6 * (b1 - b0) / n:5.1f} / {1e6 * (c1 - c0) / n:5.1f}")
        store.close()
        c0 = time.process_time()
        store = PgStore("STATE", "bench", env, read_only=False)
        store.sources("users", ["u1"])  # the index merged, as a run's first lookup finds it
        c1 = time.process_time()
        print(f"open (index of {2 * n:,} keys): {backend_cpu(store):.2f} s / {c1 - c0:.2f} s (backend: its whole life)")
        c0 = time.process_time()
        again = PgStore("STATE", "bench", env, read_only=False, cache=copy)
        again.sources("users", ["u1"])
        c1 = time.process_time()
        print(f"open from the local copy: {backend_cpu(again):.2f} s / {c1 - c0:.2f} s (used: {again._copied})")
        again.close()
        b0, c0 = backend_cpu(store), time.process_time()
        changed = keys[: n // 10]
        for at in range(0, len(changed), g):
            store.write("users", [(k, record(at + j, b" ")) for j, k in enumerate(changed[at : at + g])], [])
        b1, c1 = backend_cpu(store), time.process_time()
        print(f"upserts of {len(changed):,} changed records: {1e6 * (b1 - b0) / len(changed):5.1f} / {1e6 * (c1 - c0) / len(changed):5.1f}")
        b0, c0 = backend_cpu(store), time.process_time()
        changed = keys[1::10]
        for at in range(0, len(changed), g):
            part = changed[at : at + g]
            new = [record(int(k[1:]), b"x") for k in part]
            store.lookup("users", part, new)
            store.write("users", [], part)  # forgotten before the rows are sent, confirmed after
            store.write("users", list(zip(part, new, strict=True)), [])
        b1, c1 = backend_cpu(store), time.process_time()
        print(f"changed run's {len(changed):,} (lookup, forget, confirm): {1e6 * (b1 - b0) / len(changed):5.1f} / "
              f"{1e6 * (c1 - c0) / len(changed):5.1f}")  # fmt: skip
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

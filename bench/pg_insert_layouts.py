"""What a first delta run's inserts cost the PostgreSQL server per row, by table layout (issue 13 item 5): the
state table as it is (primary key on the key's text), the same key `COLLATE "C"`, a unique index led by the
key's hash, a bigint index alone, no index at all (the floor for a row per key), and a log of one row per
write group (the keys, records, hashes, digests and prints of 2,000 confirmations as blobs, as the state
file's `delta_log` keeps them), with its blobs compressed (STORAGE MAIN) or not (EXTERNAL).

    python bench/pg_insert_layouts.py [--rows 200000] [--group 2000] [--rounds 2]

Rows go in as the store appends new keys (ADBC's binary COPY of Arrow arrays, one transaction a group).
Prints the CPU of the inserting connection's own server backend (/proc) and of this process, µs a row, in
a throwaway server (bench/pg_server.py). Only the layouts' insert cost: none of them but the first is
what the store can use as it is (lookups, upserts, deletes and other processes' writes need more).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from pg_server import PgServer  # noqa: E402
from pg_state_cost import record  # noqa: E402

from connector.delta.keyindex import digests, key_hashes  # noqa: E402

COLS = ("pipeline TEXT NOT NULL, stream TEXT NOT NULL, key TEXT NOT NULL, record TEXT NOT NULL, key_hash BIGINT NOT "
        "NULL, digest BIGINT NOT NULL, print BIGINT")  # fmt: skip
ROW_LAYOUTS = {
    "primary key (pipeline, stream, key): as now": [f"CREATE TABLE t ({COLS}, PRIMARY KEY (pipeline, stream, key))"],
    'the same, key COLLATE "C"': ["CREATE TABLE t (" + COLS.replace("key TEXT NOT NULL", 'key TEXT COLLATE "C" NOT NULL')
                                  + ", PRIMARY KEY (pipeline, stream, key))"],  # fmt: skip
    "unique (key_hash, pipeline, stream, key)": [f"CREATE TABLE t ({COLS})",
                                                 "CREATE UNIQUE INDEX ON t (key_hash, pipeline, stream, key)"],  # fmt: skip
    "index (key_hash), not unique": [f"CREATE TABLE t ({COLS})", "CREATE INDEX ON t (key_hash)"],
    "no index": [f"CREATE TABLE t ({COLS})"],
}
LOG = ("CREATE TABLE g (pipeline TEXT NOT NULL, stream TEXT NOT NULL, seq BIGSERIAL PRIMARY KEY, keys BYTEA NOT NULL, "
       "records BYTEA NOT NULL, hashes BYTEA NOT NULL, digests BYTEA NOT NULL, prints BYTEA NOT NULL)")  # fmt: skip


def backend_cpu(cur: Any) -> float:
    cur.execute("SELECT pg_backend_pid()")
    fields = Path(f"/proc/{cur.fetchone()[0]}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    import adbc_driver_postgresql.dbapi as pg

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--group", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    n, g = a.rows, a.group
    keys = [f"external_id:u{i}" for i in range(n)]
    records = [record(i) for i in range(n)]
    h, d, p = key_hashes(keys), digests(records), np.arange(n, dtype=np.int64) + 7
    text = [r.decode() for r in records]
    print(f"# bench/pg_insert_layouts.py --rows {n} --group {g}; load {os.getloadavg()[0]:.1f}; µs a row: the "
          "inserting backend (server) / this process")  # fmt: skip
    with PgServer() as server, pg.connect(server.url) as con, con.cursor() as cur:

        def timed(label: str, table: str, batch: Any) -> None:
            b0, c0 = backend_cpu(cur), time.process_time()
            for at in range(0, n, g):
                cur.adbc_ingest(table, batch(slice(at, at + g)), mode="append")
                con.commit()
            b1, c1 = backend_cpu(cur), time.process_time()
            print(f"{label:45s} {1e6 * (b1 - b0) / n:5.2f} / {1e6 * (c1 - c0) / n:5.2f}", flush=True)

        def rows(sl: slice) -> pa.Table:
            k = len(keys[sl])
            return pa.table({"pipeline": pa.array(["bench_warehouse"] * k), "stream": pa.array(["users"] * k),
                             "key": pa.array(keys[sl]), "record": pa.array(text[sl]), "key_hash": h[sl],
                             "digest": d[sl], "print": p[sl]})  # fmt: skip

        def group(sl: slice) -> pa.Table:
            blobs = ["\n".join(keys[sl]).encode(), b"\n".join(records[sl]), h[sl].tobytes(), d[sl].tobytes(), p[sl].tobytes()]
            return pa.table({"pipeline": pa.array(["bench_warehouse"]), "stream": pa.array(["users"]),
                             **{c: pa.array([v], pa.binary()) for c, v in zip(("keys", "records", "hashes", "digests",
                                                                              "prints"), blobs, strict=True)}})  # fmt: skip

        for _ in range(a.rounds):
            for label, ddl in ROW_LAYOUTS.items():
                for sql in ["DROP TABLE IF EXISTS t", *ddl]:
                    cur.execute(sql)
                con.commit()
                timed(label, "t", rows)
            for storage in ("MAIN", "EXTERNAL"):
                cur.execute("DROP TABLE IF EXISTS g")
                cur.execute(LOG)
                for column in ("keys", "records", "hashes", "digests", "prints"):
                    cur.execute(f"ALTER TABLE g ALTER COLUMN {column} SET STORAGE {storage}")
                con.commit()
                timed(f"log, a row per group ({storage})", "g", group)
    return 0


if __name__ == "__main__":
    sys.exit(main())

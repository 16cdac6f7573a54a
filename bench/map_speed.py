"""Micro-benchmark: rows/s of mapper.map_chunk (casts + object building + contract) on generated tables.

Run: python bench/map_speed.py [rows]   (default 200,000 rows: CSV-like all-string columns, and the
Parquet-typed users/events tables of bench/run.py). Each line also times the reference path
(map_chunk(..., fast=False): row-by-row building, check_object on every object) and prints the ratio.
"""

from __future__ import annotations

import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from connector.config import Stream
from connector.mapping import map_chunk
from connector.records import Chunk


def users_table(n: int) -> pa.Table:
    """A CSV-like users table: every column a string."""
    rnd = random.Random(1)
    return pa.table(
        {
            "id": [f"user-{i}" for i in range(n)],
            "first": [rnd.choice(["Ann", "Bob", "Chloé", "Dee"]) for _ in range(n)],
            "email": [f"u{i}@example.com" for i in range(n)],
            "age": [str(rnd.randint(18, 90)) for _ in range(n)],
            "vip": [rnd.choice(["true", "false", "yes", "0"]) for _ in range(n)],
            "signup": [f"2024-0{rnd.randint(1, 9)}-1{rnd.randint(0, 9)}T10:00:00Z" for _ in range(n)],
            "gender": [rnd.choice(["M", "F", "O", ""]) for _ in range(n)],
        }
    )


def events_table(n: int) -> pa.Table:
    rnd = random.Random(2)
    return pa.table(
        {
            "id": [f"user-{i % 5000}" for i in range(n)],
            "name": [rnd.choice(["viewed", "clicked", "bought"]) for _ in range(n)],
            "ts": [f"2024-05-0{rnd.randint(1, 9)} 12:3{rnd.randint(0, 9)}:00" for _ in range(n)],
            "sku": [f"sku-{rnd.randint(1, 999)}" for _ in range(n)],
            "amount": [f"{rnd.random() * 100:.2f}" for _ in range(n)],
        }
    )


USERS = {
    "name": "users",
    "source": {"path": "users.csv"},
    "kind": "attributes",
    "identifier": {"external_id": "id"},
    "attributes": [
        {"column": "first", "to": "first_name"},
        {"column": "email"},
        {"column": "age", "type": "integer"},
        {"column": "vip", "type": "boolean"},
        {"column": "signup", "type": "time"},
        {"column": "gender"},
    ],
}
EVENTS = {
    "name": "events",
    "source": {"path": "events.csv"},
    "kind": "events",
    "identifier": {"external_id": "id"},
    "event": {
        "name": "name",
        "time": {"column": "ts", "timezone": "Europe/Paris"},
        "properties": {"columns": {"sku": "sku", "amount": {"column": "amount", "type": "float"}}},
    },
}


def _time(stream: Stream, chunks: list[Chunk], fast: bool) -> tuple[float, int]:
    """Best wall time of 3 runs over every chunk, and the number of mapped rows."""
    best, mapped = float("inf"), 0
    for _ in range(3):
        start = time.perf_counter()
        mapped = sum(len(map_chunk(stream, c, datetime.now(UTC), fast=fast)) for c in chunks)
        best = min(best, time.perf_counter() - start)
    return best, mapped


def bench(label: str, spec: dict[str, object], table: pa.Table, chunk_rows: int = 50_000) -> float:
    stream = Stream.model_validate(spec)
    chunks = [
        Chunk("bench", table.slice(o, chunk_rows), list(range(o, min(o + chunk_rows, table.num_rows))))
        for o in range(0, table.num_rows, chunk_rows)
    ]
    elapsed, mapped = _time(stream, chunks, fast=True)
    ref, _ = _time(stream, chunks, fast=False)
    rate = table.num_rows / elapsed
    print(
        f"{label}: {table.num_rows} rows ({mapped} mapped) in {elapsed:.2f}s = {rate:,.0f} rows/s; "
        f"reference path {table.num_rows / ref:,.0f} rows/s (x{ref / elapsed:.2f})"
    )
    return rate


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    bench("attributes (6 fields)", USERS, users_table(n))
    bench("events (name, time+tz, 2 properties)", EVENTS, events_table(n))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import data  # noqa: PLC0415 - bench/data.py, next to this file
    import run  # noqa: PLC0415

    path = Path("bench.parquet")
    bench(
        "parquet users (bench/run.py, 7 attributes)",
        _spec(run.users_pipeline(path, "local")),
        data.users_table(n),
    )
    bench(
        "parquet events (bench/run.py, 2 properties)",
        _spec(run.events_pipeline(path, "local")),
        data.events_table(n),
    )


def _spec(pipeline: Any) -> dict[str, object]:
    return pipeline.streams[0].model_dump(exclude_unset=True)  # type: ignore[no-any-return]


if __name__ == "__main__":
    main()

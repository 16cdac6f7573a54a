"""Rows per second through SuiteRunner.validate: a 5-expectation row-level suite on 50k-row chunks.

Usage: python bench/gx_speed.py [ROWS] [CHUNK_ROWS]   (defaults 200000 and 50000)

The columns are strings, as the CSV reader delivers them, and about 1% of rows break one expectation.
Setup (GX import, context, suite) is timed separately from validation.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from connector.records import Chunk
from connector.validation import SuiteRunner

SUITE = {
    "name": "bench_rows",
    "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "user_id"}, "meta": {}},
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "age", "min_value": 0, "max_value": 120},
            "meta": {},
        },
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "plan", "value_set": ["free", "pro", "team"]},
            "meta": {},
        },
        {
            "type": "expect_column_values_to_match_regex",
            "kwargs": {"column": "email", "regex": r"^[^@\s]+@[^@\s]+\.[a-z]+$"},
            "meta": {},
        },
        {
            "type": "expect_column_value_lengths_to_be_between",
            "kwargs": {"column": "user_id", "min_value": 2, "max_value": 12},
            "meta": {},
        },
    ],
    "meta": {},
}


def make_chunk(start: int, n: int, rng: np.random.Generator) -> Chunk:
    """A CSV-like chunk (all strings) with ~1% bad rows."""
    ids = np.array([f"u{i}" for i in range(start, start + n)], dtype=object)
    ids[rng.random(n) < 0.002] = None
    ages = rng.integers(0, 100, n).astype(str).astype(object)
    ages[rng.random(n) < 0.002] = "150"
    plans = np.array(["free", "pro", "team"], dtype=object)[rng.integers(0, 3, n)]
    plans[rng.random(n) < 0.002] = "platinum"
    emails = np.array([f"u{i}@example.com" for i in range(start, start + n)], dtype=object)
    emails[rng.random(n) < 0.002] = "not-an-email"
    table = pa.table(
        {"user_id": pa.array(ids), "age": pa.array(ages), "plan": pa.array(plans), "email": pa.array(emails)}
    )
    return Chunk("bench.csv", table, list(range(start + 2, start + 2 + n)))


def main(rows: int = 200_000, chunk_rows: int = 50_000) -> None:
    rng = np.random.default_rng(3)
    chunks = [make_chunk(s, min(chunk_rows, rows - s), rng) for s in range(0, rows, chunk_rows)]
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "bench_rows.json").write_text(json.dumps(SUITE))
        t0 = time.perf_counter()
        runner = SuiteRunner(["bench_rows"], Path(tmp))
        setup = time.perf_counter() - t0
        t0 = time.perf_counter()
        rejected = sum(len(runner.validate(c).rejects) for c in chunks)
        runner.finish()
        elapsed = time.perf_counter() - t0
    print(f"setup (import + context + suite): {setup:.2f} s")
    print(
        f"validated {rows} rows in {len(chunks)} chunks of {chunk_rows}: {elapsed:.2f} s, {rejected} rejected"
    )
    print(f"rows/s: {rows / elapsed:,.0f}")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    main(*args)

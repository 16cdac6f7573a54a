"""Synthetic users and events tables for benchmarks, generated with numpy/pyarrow (fast, deterministic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

DATA_DIR = Path(__file__).resolve().parent / ".data"
# The users table's mapping as an analyst would write it (every column of users_table but the id): one
# definition for every benchmark that sends the table, so they all measure the same mapping.
USERS_ATTRIBUTES: tuple[dict[str, str], ...] = (
    {"column": "first_name"},
    {"column": "email"},
    {"column": "country"},
    {"column": "plan"},
    {"column": "age", "type": "integer"},
    {"column": "lifetime_value", "type": "float"},
    {"column": "signup_at", "type": "time"},
)


def users_spec(*extra: dict[str, str]) -> dict[str, Any]:
    """The users stream's kind, identifier and attributes (a fresh copy), with `extra` attributes after them."""
    return {
        "kind": "attributes",
        "identifier": {"external_id": "user_id"},
        "attributes": [dict(a) for a in (*USERS_ATTRIBUTES, *extra)],
    }
PLANS = np.array(["free", "basic", "pro", "enterprise"])
COUNTRIES = np.array(["US", "GB", "FR", "DE", "AU", "BR", "JP", "IN"])
FIRST = np.array(["Ann", "Bob", "Chloé", "Dmitri", "Eve", "Farah", "Gus", "Hana"])


def users_table(n: int, seed: int = 7, offset: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed + offset)
    ids = np.arange(offset, offset + n)
    id_str = pc.cast(pa.array(ids), pa.string())
    user_id = pc.binary_join_element_wise("u", id_str, "")
    email = pc.binary_join_element_wise(user_id, "example.com", "@")
    signup = pa.array(
        (1_600_000_000 + rng.integers(0, 150_000_000, n)) * 1000, type=pa.timestamp("ms", tz="UTC")
    )
    return pa.table(
        {
            "user_id": user_id,
            "first_name": pa.array(FIRST[rng.integers(0, len(FIRST), n)]),
            "email": email,
            "country": pa.array(COUNTRIES[rng.integers(0, len(COUNTRIES), n)]),
            "plan": pa.array(PLANS[rng.integers(0, len(PLANS), n)]),
            "age": pa.array(rng.integers(18, 90, n)),
            "lifetime_value": pa.array(np.round(rng.random(n) * 1000, 2)),
            "signup_at": signup,
        }
    )


def events_table(n: int, seed: int = 11) -> pa.Table:
    rng = np.random.default_rng(seed)
    uid = pc.binary_join_element_wise("u", pc.cast(pa.array(rng.integers(0, max(n // 3, 1), n)), pa.string()), "")
    names = np.array(["viewed_item", "added_to_cart", "checkout_started", "rented_movie"])
    t = pa.array((1_700_000_000 + rng.integers(0, 10_000_000, n)) * 1000, type=pa.timestamp("ms", tz="UTC"))
    return pa.table(
        {
            "user_id": uid,
            "event_name": pa.array(names[rng.integers(0, len(names), n)]),
            "event_time": t,
            "amount": pa.array(np.round(rng.random(n) * 200, 2)),
            "sku": pc.binary_join_element_wise("sku-", pc.cast(pa.array(rng.integers(0, 5000, n)), pa.string()), ""),
        }
    )


def write_parquet(kind: str, n: int, chunk: int = 1_000_000) -> Path:
    """Write (once) and return bench/.data/<kind>_<n>.parquet, generated in chunks to bound memory."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / f"{kind}_{n}.parquet"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    writer = None
    try:
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            table = users_table(size, offset=start) if kind == "users" else events_table(size, seed=11 + start)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table, row_group_size=100_000)
    finally:
        if writer is not None:
            writer.close()
    tmp.rename(path)
    return path


def write_csv(kind: str, n: int) -> Path:
    """Write (once) and return bench/.data/<kind>_<n>.csv: the Parquet table of write_parquet as CSV (pyarrow)."""
    import pyarrow.csv as pacsv

    path = DATA_DIR / f"{kind}_{n}.csv"
    if path.exists():
        return path
    tmp = path.with_suffix(".csv.tmp")
    source = pq.ParquetFile(write_parquet(kind, n))
    with pacsv.CSVWriter(tmp, source.schema_arrow) as writer:
        for batch in source.iter_batches(batch_size=100_000):
            writer.write_batch(batch)
    tmp.rename(path)
    return path

"""Synthetic users and events tables for benchmarks, generated with numpy/pyarrow (fast, deterministic).

The users table comes in two key shapes: "users" (ids u0, u1, ... in key order, as a sequence would
give them) and "users_uuid" (random version-4 UUIDs, as most real systems give them; every other column
as "users" has it). Each also has a "_changed" kind: the same table with `plan` changed on every 20th row
(5 %, a nightly sync's typical shape), for a delta re-run that sends a few rows and skips the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
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


def uuid_strings(n: int, seed: int = 7, offset: int = 0) -> pa.Array:
    """n random version-4 UUIDs as strings (8-4-4-4-12 lowercase hex), the same for the same seed and offset."""
    raw = np.random.default_rng((seed, offset, 4)).integers(0, 256, (n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    hex_chars = np.frombuffer(raw.tobytes().hex().encode("ascii"), dtype="S1").reshape(n, 32)
    dash = np.full((n, 1), b"-", dtype="S1")
    parts = (hex_chars[:, :8], dash, hex_chars[:, 8:12], dash, hex_chars[:, 12:16], dash, hex_chars[:, 16:20],
             dash, hex_chars[:, 20:])  # fmt: skip
    text = np.ascontiguousarray(np.hstack(parts)).view("S36").ravel()
    return pa.array(text, type=pa.binary(36)).cast(pa.string())


def users_uuid_table(n: int, seed: int = 7, offset: int = 0) -> pa.Table:
    """users_table(n, seed, offset) with a random UUID as user_id (uuid_strings); every other column unchanged."""
    table = users_table(n, seed, offset)
    return table.set_column(0, "user_id", uuid_strings(n, seed, offset))


CHANGED_EVERY = 20  # the "_changed" kinds change `plan` on every 20th row: 5 %


def change_plans(table: pa.Table, offset: int) -> pa.Table:
    """The table with `plan` moved to the next plan on every CHANGED_EVERY-th row, counted from row 0 of the
    whole table (`offset`: the index of this slice's first row); every other value as it was."""
    plan = table.column("plan")
    nxt = PLANS[(pc.index_in(plan, value_set=pa.array(PLANS)).to_numpy() + 1) % len(PLANS)]
    changed = np.arange(offset, offset + table.num_rows) % CHANGED_EVERY == 0
    moved = np.where(changed, nxt, plan.to_numpy(zero_copy_only=False))
    return table.set_column(table.schema.get_field_index("plan"), "plan", pa.array(moved, type=pa.string()))


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


_TABLES = {"users": users_table, "users_uuid": users_uuid_table}
KINDS = ("users", "users_uuid", "events", *(f"{k}_changed" for k in _TABLES))


def _chunks(kind: str, n: int, chunk: int) -> Iterator[pa.Table]:
    """The table of `kind` (KINDS) in slices of at most `chunk` rows."""
    if kind.endswith("_changed") and kind.removesuffix("_changed") in _TABLES:
        source = pq.ParquetFile(write_parquet(kind.removesuffix("_changed"), n, chunk))
        start = 0
        for batch in source.iter_batches(batch_size=min(chunk, 100_000)):
            yield change_plans(pa.Table.from_batches([batch]), start)
            start += batch.num_rows
        return
    if kind != "events" and kind not in _TABLES:
        raise ValueError(f"unknown table kind {kind!r}: one of {', '.join(KINDS)}")
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        yield _TABLES[kind](size, offset=start) if kind in _TABLES else events_table(size, seed=11 + start)


def write_parquet(kind: str, n: int, chunk: int = 1_000_000) -> Path:
    """Write (once) and return bench/.data/<kind>_<n>.parquet (kind: one of KINDS), generated in chunks to
    bound memory."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / f"{kind}_{n}.parquet"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    writer = None
    try:
        for table in _chunks(kind, n, chunk):
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

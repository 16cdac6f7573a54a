"""Objects encoded column by column (mapping/encode.py) against the per-row reference path.

For random typed and all-string chunks (unicode, quotes, backslashes, control characters, nulls, zoned and
naive timestamps, big ints, floats such as 1e16, NaN and inf, booleans, lists, structs, JSON objects), the
batch path's JSON of every object is byte for byte orjson.dumps of the reference path's dict, the decoded
objects are equal with the same key order, the rejects are the same, and the /users/track bodies packed
from the encoded objects are the bodies packed from the dicts.
"""

from __future__ import annotations

import math
import os
import random
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson
import pyarrow as pa
import pytest

from connector.config import Stream
from connector.delivery.batching import pack_track_array
from connector.mapping import map_chunk
from connector.records import Chunk, EncodedObjects, MappedChunk

ROUNDS = 60 if os.environ.get("BRAZE_CONNECTOR_SOAK") == "1" else 12
NOW = datetime(2024, 1, 1, tzinfo=UTC)
WORDS = ["Ann", "Chloé", "日本語", 'say "hi"', "back\\slash", "tab\there", "nl\nx", "ctl\x01", "\u2028", "😀", "  ", "", "x" * 300]
FLOATS = [0.1, 1e16, 1.5e-7, -0.0, 2.5e300, 1e-320, 123456789.123, 3.0, math.nan, math.inf, -math.inf]
INTS = [0, 1, -1, 2**63 - 1, -(2**63), 10**15, 42]


def _pick(rng: random.Random, pool: list[Any], nulls: float) -> Any:
    return None if rng.random() < nulls else rng.choice(pool)


def typed_table(rng: random.Random, n: int) -> pa.Table:
    """A Parquet-like table: one column per Arrow type the casts meet."""
    nulls = rng.choice([0.0, 0.0, 0.2])
    base = datetime(2024, 3, 31, 0, 30)
    stamps = [base + timedelta(hours=rng.randrange(-5000, 5000), milliseconds=rng.randrange(1000)) for _ in range(n)]
    return pa.table(
        {
            "id": pa.array([f"u{rng.randrange(10**6)}" if rng.random() > 0.02 else None for _ in range(n)]),
            "name": pa.array([_pick(rng, WORDS, nulls) for _ in range(n)], type=rng.choice([pa.string(), pa.large_string()])),
            "count": pa.array([_pick(rng, INTS, nulls) for _ in range(n)], type=pa.int64()),
            "small": pa.array([_pick(rng, [1, 2, 3], nulls) for _ in range(n)], type=pa.int8()),
            "score": pa.array([_pick(rng, FLOATS, nulls) for _ in range(n)], type=pa.float64()),
            "ratio": pa.array([_pick(rng, [0.1, 0.5, 1e10], nulls) for _ in range(n)], type=pa.float32()),
            "vip": pa.array([_pick(rng, [True, False], nulls) for _ in range(n)], type=pa.bool_()),
            "naive": pa.array([None if rng.random() < nulls else s for s in stamps], type=pa.timestamp("ms")),
            "zoned": pa.array([None if rng.random() < nulls else s.replace(tzinfo=UTC) for s in stamps], type=pa.timestamp("us", tz="Asia/Kolkata")),
            "day": pa.array([None if rng.random() < nulls else date(2020, 1, 1) + timedelta(days=rng.randrange(2000)) for _ in range(n)]),
            "tags": pa.array([None if rng.random() < nulls else rng.sample(WORDS[:6], rng.randrange(3)) for _ in range(n)], type=pa.list_(pa.string())),
            "meta": pa.array([None if rng.random() < nulls else {"a": rng.randrange(9), "b": rng.choice(WORDS[:4])} for _ in range(n)]),
        }
    )


def string_table(rng: random.Random, n: int) -> pa.Table:
    """A CSV-like table: every column a string, some cells not converting."""
    tz = timezone(timedelta(hours=rng.choice([-7, 0, 5])))
    return pa.table(
        {
            "id": [f"user-{i}" if rng.random() > 0.02 else None for i in range(n)],
            "name": [_pick(rng, WORDS, 0.1) for _ in range(n)],
            "age": [_pick(rng, ["7", "-3", "1.0", "x", "9223372036854775807", " 12 "], 0.1) for _ in range(n)],
            "amount": [_pick(rng, ["2.5", "1e16", "0.1", "-0", "nan", "1e400", "3"], 0.1) for _ in range(n)],
            "vip": [_pick(rng, ["true", "no", "Y", "maybe"], 0.1) for _ in range(n)],
            "at": [
                _pick(rng, [datetime(2024, 5, 1, 10, 0, tzinfo=tz).isoformat(), "2024-05-01 10:00:00", "2024-13-01", "05/01/2024"], 0.1)
                for _ in range(n)
            ],
            "json": [_pick(rng, ['{"k": "v"}', '{"n": 1.5, "u": "é"}', "[1]", "{"], 0.3) for _ in range(n)],
            "list": [_pick(rng, ["a,b", "é, 😀 ,", ",", 'q"x'], 0.2) for _ in range(n)],
        }
    )


TYPED_ATTRIBUTES = {
    "kind": "attributes",
    "identifier": {"external_id": "id"},
    "attributes": [
        {"column": "name"},
        {"column": "count"},
        {"column": "small", "to": "small_n", "on_empty": "null"},
        {"column": "score"},
        {"column": "ratio"},
        {"column": "vip", "on_empty": "null"},
        {"column": "naive", "type": "time", "timezone": "America/New_York"},
        {"column": "zoned"},
        {"column": "day", "type": "date"},
        {"column": "tags"},
        {"column": "meta"},
        {"column": "count", "to": "visits", "op": "inc"},
    ],
}
STRING_ATTRIBUTES = {
    "kind": "attributes",
    "identifier": {"external_id": "id"},
    "update_existing_only": True,
    "attributes": [
        {"column": "name", "to": "first_name", "on_empty": "null"},
        {"column": "age", "type": "integer"},
        {"column": "amount", "type": "float"},
        {"column": "amount", "to": "spent", "op": "inc"},
        {"column": "vip", "type": "boolean"},
        {"column": "at", "type": "time", "timezone": "Europe/Paris"},
        {"column": "list", "type": "array", "split": ","},
    ],
}
TYPED_EVENTS = {
    "kind": "events",
    "identifier": {"external_id": "id"},
    "event": {
        "name": "name",
        "time": "zoned",
        "properties": {"columns": {"n": "count", "s": "score", "v": "vip", "tags": "tags"}},
    },
}
STRING_EVENTS = {
    "kind": "events",
    "identifier": {"external_id": "id"},
    "update_existing_only": False,
    "event": {
        "name": "name",
        "time": {"column": "at", "timezone": "Asia/Tokyo"},
        "properties": {"json_column": "json", "columns": {"amount": {"column": "amount", "type": "float"}}},
    },
}
STRING_PURCHASES = {
    "kind": "purchases",
    "identifier": {"external_id": "id"},
    "purchase": {
        "product_id": "name",
        "currency": {"value": "USD"},
        "price": {"column": "amount", "type": "float"},
        "time": "at",
        "quantity": {"column": "age", "type": "integer", "on_empty": "null"},
    },
}
CASES = [
    (TYPED_ATTRIBUTES, typed_table),
    (STRING_ATTRIBUTES, string_table),
    (TYPED_EVENTS, typed_table),
    (STRING_EVENTS, string_table),
    (STRING_PURCHASES, string_table),
]


def _both(spec: dict[str, Any], table: pa.Table) -> tuple[MappedChunk, MappedChunk]:
    stream = Stream.model_validate({"name": "s", "source": {"path": "x.parquet"}, **spec})
    rows = list(range(1, 1 + table.num_rows))
    fast = map_chunk(stream, Chunk("x.parquet", table, rows), NOW)
    slow = map_chunk(stream, Chunk("x.parquet", table, rows), NOW, fast=False)
    return fast, slow


def _bodies(objects: Any, keys: list[str], positions: Any, max_bytes: int) -> list[tuple[bytes, list[Any], bool]]:
    return [
        (r.body, list(r.tokens), r.oversize)
        for r in pack_track_array("attributes", objects, keys, positions, max_objects=75, max_bytes=max_bytes)
    ]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_encoded_objects_are_the_reference_objects_byte_for_byte(case: int) -> None:
    spec, make = CASES[case]
    encoded_chunks = 0
    for seed in range(ROUNDS):
        rng = random.Random(seed * 31 + case)
        fast, slow = _both(spec, make(rng, rng.choice([1, 7, 200, 400])))
        assert list(fast.indices) == list(slow.indices)
        assert list(fast.user_keys) == list(slow.user_keys)
        assert [(r.ref, r.rule, r.reason, r.column) for r in fast.rejects] == [
            (r.ref, r.rule, r.reason, r.column) for r in slow.rejects
        ]
        if not isinstance(fast.objects, EncodedObjects):
            continue
        encoded_chunks += 1
        for j, obj in enumerate(slow.objects):
            assert fast.objects.encoded(j) == orjson.dumps(obj), (seed, j, obj)
        assert [list(o) for o in fast.objects] == [list(o) for o in slow.objects]
        assert fast.objects == slow.objects
        keys = list(fast.user_keys)
        for cap in (3_900_000, 2_000):
            assert _bodies(fast.objects, keys, range(len(fast)), cap) == _bodies(slow.objects, keys, range(len(slow)), cap)
            picked = sorted(rng.sample(range(len(fast)), len(fast) // 2))
            assert _bodies(fast.objects, keys, picked, cap) == _bodies(slow.objects, keys, picked, cap)
    assert encoded_chunks == ROUNDS  # every chunk went through the column path


def test_values_decoded_from_the_encoding_keep_their_types() -> None:
    table = pa.table(
        {
            "id": ["u1", "u2"],
            "f": pa.array([3.0, 1e16]),
            "i": pa.array([2**63 - 1, -5]),
            "b": pa.array([True, None]),
            "s": ['a "q" \\ \x00 é', "😀"],
        }
    )
    spec = {"kind": "attributes", "identifier": {"external_id": "id"},
            "attributes": [{"column": "f"}, {"column": "i"}, {"column": "b", "on_empty": "null"}, {"column": "s"}]}  # fmt: skip
    fast, _ = _both(spec, table)
    assert isinstance(fast.objects, EncodedObjects)
    first = fast.objects[0]
    assert first == {"external_id": "u1", "f": 3.0, "i": 2**63 - 1, "b": True, "s": 'a "q" \\ \x00 é'}
    assert type(first["f"]) is float and type(first["i"]) is int
    assert fast.objects[1] == {"external_id": "u2", "f": 1e16, "i": -5, "b": None, "s": "😀"}
    assert fast.objects.encoded(1) == b'{"external_id":"u2","f":1e+16,"i":-5,"b":null,"s":"\xf0\x9f\x98\x80"}'


def test_encoded_objects_behave_as_a_list_of_dicts() -> None:
    objs = [{"a": 1}, {"b": "é"}, {"c": [1, 2]}]
    data = b"".join(orjson.dumps(o) + b"," for o in objs)
    offsets = [0]
    for o in objs:
        offsets.append(offsets[-1] + len(orjson.dumps(o)) + 1)
    enc = EncodedObjects(data, offsets, {1: objs[1]})
    assert len(enc) == 3 and enc == objs and list(enc) == objs
    assert enc[1] is objs[1]  # a dict given (a row checked one by one) is the one read back
    assert enc[0] is enc[0]  # decoded once, then the same dict
    assert enc[-1] == {"c": [1, 2]} and enc[0:2] == objs[:2]
    assert enc.size(2) == len(b'{"c":[1,2]}') and enc.encoded_run(0, 2) == b'{"a":1},{"b":"\xc3\xa9"}'
    with pytest.raises(IndexError):
        enc[3]
    assert enc != [{"a": 1}]

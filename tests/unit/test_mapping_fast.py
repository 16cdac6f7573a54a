"""Differential test: the batch path of map_chunk (column pre-checks) equals the row-by-row reference path
(check_object on every object): same objects, indices, user keys and rejects (rule, reason, column)."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.config import Stream
from connector.mapping import map_chunk
from connector.records import Chunk, MappedChunk

EXAMPLES = 600 if os.environ.get("BRAZE_CONNECTOR_SOAK") == "1" else 40
LONG = "x" * 256
NOW = datetime(2024, 1, 1, tzinfo=UTC)


def _same(spec: dict[str, Any], table: pa.Table) -> MappedChunk:
    stream = Stream.model_validate({"name": "s", "source": {"path": "x.csv"}, **spec})
    rows = list(range(2, 2 + table.num_rows))
    fast = map_chunk(stream, Chunk("x.csv", table, rows), NOW)
    slow = map_chunk(stream, Chunk("x.csv", table, rows), NOW, fast=False)
    # dict equality ignores key order, which the request bodies keep: compare the key lists too
    assert [list(o) for o in fast.objects] == [list(o) for o in slow.objects]
    assert fast.objects == slow.objects
    assert list(fast.indices) == list(slow.indices)
    assert list(fast.user_keys) == list(slow.user_keys)
    assert [(r.ref, r.stage, r.rule, r.reason, r.column) for r in fast.rejects] == [
        (r.ref, r.stage, r.rule, r.reason, r.column) for r in slow.rejects
    ]
    chunk = Chunk("x.csv", table, rows)  # each reject carries its row's original values, on both paths
    for r in [*fast.rejects, *slow.rejects]:
        assert repr(r.values) == repr(chunk.values(r.ref.row - 2))  # repr: NaN equals NaN
    return fast


def _strings(**cols: list[Any]) -> pa.Table:
    return pa.table({k: pa.array(v, type=pa.string()) for k, v in cols.items()})


BAD_STRINGS = [
    "ok",
    None,
    "",
    "  ",
    LONG,
    "é" * 255,
    "$x",
    "a.b",
    "M",
    "Z",
    "2024-02-30",
    "2024-01-01",
    "FR",
    "F1",
    "subscribed",
    "nope",
    "u@x.io",
    "u@@x",
    "+33123456789",
    "0612",
    "USD",
    "usd",
    "7",
    "0",
    "101",
    "1.5",
    "-3",
    "inf",
    "nan",
    '{"a": 1}',
    '{"a b": 1}',
    '{"$x": "y"}',
    "[1]",
    "{",
    "2024-05-01T10:00:00Z",
    "yesterday",
    "y" * 990,
    "a,b," + LONG,
]


def _column(seed: int, n: int) -> list[Any]:
    return [BAD_STRINGS[(i * 7 + seed * 13) % len(BAD_STRINGS)] for i in range(n)]


ATTRIBUTE_SPECS: list[dict[str, Any]] = [
    {
        "identifier": {"external_id": "c0"},
        "attributes": [
            {"column": "c1", "to": "first_name"},
            {"column": "c2", "to": "gender"},
            {"column": "c3", "to": "dob"},
            {"column": "c4", "to": "country"},
            {"column": "c5", "to": "email_subscribe", "on_empty": "null"},
            {"column": "c6", "to": "email"},
            {"column": "c7", "to": "phone"},
        ],
    },
    {
        "identifier": {"external_id": "c0"},
        "update_existing_only": True,
        "attributes": [
            {"column": "c1", "to": "$bad"},
            {"column": "c2", "to": "n", "type": "integer", "on_empty": "null"},
            {"column": "c3", "to": "f", "type": "float"},
            {"column": "c4", "to": "obj", "op": "merge"},
            {"column": "c5", "to": "tags", "op": "add"},
            {"column": "c6", "to": "count", "op": "inc", "type": "integer"},
            {"column": "c7", "to": "current_location"},
        ],
    },
    {
        "identifier": {"email": "c0"},
        "attributes": [
            {"column": "c1", "to": "phone"},
            {"column": "c2", "to": "x"},
            {"column": "c3", "to": "y"},  # one entry per attribute: a second "x" is refused by the config
            {"column": "c4", "to": "when", "type": "time"},
            {"column": "c5", "to": "day", "type": "date"},
            {"column": "c6", "to": "b", "type": "boolean", "on_empty": "reject"},
            {"to": "const", "value": "k"},
        ],
    },
    {"identifier": {"phone": "c0"}, "attributes": [{"column": "c1", "to": "email"}, {"column": "c2"}]},
    {
        "identifier": {"braze_id": "c0"},
        "attributes": [{"column": "c1", "to": "external_id"}, {"column": "c2"}],
    },
    {
        "identifier": {"user_alias": {"name": "c0", "label": "c1"}},
        "attributes": [{"column": "c2", "to": "email"}, {"column": "c3", "to": "push_subscribe"}],
    },
    {
        "identifier": {"external_id": "c0"},
        "attributes": [{"column": "c1", "to": "activity_id"}, {"column": "c2", "to": "content_state"}],
    },
    {
        "identifier": {"email": "c0"},
        "attributes": [{"column": "c1", "to": "email"}, {"column": "c2", "to": "alt_email"}, {"column": "c3"}],
    },
]
EVENT_SPECS: list[dict[str, Any]] = [
    {
        "kind": "events",
        "identifier": {"external_id": "c0"},
        "event": {
            "name": "c1",
            "time": "c2",
            "app_id": "c3",
            "properties": {
                "columns": {"a": "c4", "time": "c5", "$p": "c6", "n": {"column": "c7", "type": "float"}}
            },
        },
    },
    {
        "kind": "events",
        "identifier": {"external_id": "c0"},
        "update_existing_only": False,
        "event": {
            "name": "c1",
            "time": {"column": "c2", "timezone": "Europe/Paris"},
            "properties": {"json_column": "c3", "columns": {"a": "c4"}},
        },
    },
    {
        "kind": "purchases",
        "identifier": {"external_id": "c0"},
        "purchase": {
            "product_id": "c1",
            "currency": "c2",
            "price": {"column": "c3", "type": "float"},
            "time": "c4",
            "quantity": {"column": "c5", "type": "integer", "on_empty": "null"},
            "properties": {"columns": {"quantity": "c6", "ok": "c7"}},
        },
    },
    {
        "kind": "purchases",
        "identifier": {"email": "c0"},
        "purchase": {
            "product_id": "c1",
            "currency": "c2",
            "price": "c3",
            "time": "c4",
            "quantity": {"column": "c5", "type": "integer"},
        },
    },
]


CLEAN = {  # a clean cell for each spec's columns: c0..c7
    "attributes": [
        ["u1", "Ann", "F", "2000-01-31", "FR", "subscribed", "a@b.io", "+33123456789"],
        ["u1", "Ann", "7", "1.5", '{"a": 1}', "a,b", "3", None],
        ["a@b.io", "+33123456789", "x", "y", "2024-05-01T10:00:00Z", "2024-05-01", "yes", "k"],
        ["+33123456789", "a@b.io", "v", None, None, None, None, None],
        ["b1", "e1", "v", None, None, None, None, None],
        ["n", "l", "a@b.io", "opted_in", None, None, None, None],
        ["u1", "a", "b", None, None, None, None, None],
        ["a@b.io", "c@d.io", "e@f.io", "v", None, None, None, None],
    ],
    "events": [
        ["u1", "viewed", "2024-05-01T10:00:00Z", "app", "v", None, None, "2.5"],
        ["u1", "viewed", "2024-05-01 10:00:00", '{"k": "v"}', "v", None, None, None],
        ["u1", "sku", "EUR", "9.99", "2024-05-01T10:00:00Z", "2", None, "v"],
        ["a@b.io", "sku", "USD", "3", "2024-05-01T10:00:00.000Z", "100", None, None],
    ],
}


def _single_faults(base: list[Any]) -> pa.Table:
    """The clean row, then one row per (column, bad value) with only that cell changed."""
    rows = [list(base)]
    for j in range(len(base)):
        for bad in BAD_STRINGS:
            row = list(base)
            row[j] = bad
            rows.append(row)
    return _strings(**{f"c{j}": [r[j] for r in rows] for j in range(len(base))})


@pytest.mark.parametrize("n", range(len(ATTRIBUTE_SPECS)))
def test_single_fault_attribute_tables(n: int) -> None:
    m = _same({"kind": "attributes", **ATTRIBUTE_SPECS[n]}, _single_faults(CLEAN["attributes"][n]))
    assert m.objects and m.rejects


@pytest.mark.parametrize("n", range(len(EVENT_SPECS)))
def test_single_fault_event_and_purchase_tables(n: int) -> None:
    m = _same(EVENT_SPECS[n], _single_faults(CLEAN["events"][n]))
    assert m.objects and m.rejects


@pytest.mark.parametrize("spec", ATTRIBUTE_SPECS)
@pytest.mark.parametrize("seed", range(5))
def test_hand_made_attribute_tables(spec: dict[str, Any], seed: int) -> None:
    table = _strings(**{f"c{j}": _column(seed + j, 120) for j in range(8)})
    _same({"kind": "attributes", **spec}, table)


@pytest.mark.parametrize("spec", EVENT_SPECS)
@pytest.mark.parametrize("seed", range(5))
def test_hand_made_event_and_purchase_tables(spec: dict[str, Any], seed: int) -> None:
    table = _strings(**{f"c{j}": _column(seed + j, 120) for j in range(8)})
    _same(spec, table)


def test_clean_tables_take_the_batch_path_and_match() -> None:
    n = 300
    table = _strings(
        c0=[f"u{i}" for i in range(n)],
        c1=["Ann"] * n,
        c2=["M", "F", None] * 100,
        c3=["2000-01-31"] * n,
        c4=["FR"] * n,
        c5=["subscribed"] * n,
        c6=[f"u{i}@x.io" for i in range(n)],
        c7=["+33123456789"] * n,
    )
    m = _same({"kind": "attributes", **ATTRIBUTE_SPECS[0]}, table)
    assert len(m.objects) == n and not m.rejects
    assert m.user_keys[0] == "external_id:u0"
    events = _strings(
        c0=[f"u{i}" for i in range(n)],
        c1=["viewed"] * n,
        c2=["2024-05-01T10:00:00Z"] * n,
        c3=["app"] * n,
        c4=["v"] * n,
        c5=[None] * n,
        c6=[None] * n,
        c7=["1.5"] * n,
    )
    assert len(_same(EVENT_SPECS[0], events).objects) == n


def test_native_parquet_types() -> None:
    table = pa.table(
        {
            "c0": pa.array([1, 2, None, 4, 5, 6], type=pa.int64()),
            "c1": pa.array([1.5, math.inf, None, math.nan, -0.0, 2.0]),
            "c2": pa.array([True, False, None, True, False, True]),
            "c3": pa.array([{"a": 1}, {"a b": 2}, None, {"$x": 1}, {"c": LONG}, {"b": None}]),
            "c4": pa.array([["a"], [LONG], None, [], ["b", None], ["c"]]),
            "c5": pa.array([0, 1, 100, 101, None, -1], type=pa.int64()),
        }
    )
    spec = {
        "kind": "attributes",
        "identifier": {"external_id": "c0"},
        "attributes": [
            {"column": "c1", "to": "f"},
            {"column": "c2", "to": "b"},
            {"column": "c3", "to": "o"},
            {"column": "c4", "to": "l"},
            {"column": "c5", "to": "gender"},
        ],
    }
    _same(spec, table)
    purchase = {
        "kind": "purchases",
        "identifier": {"external_id": "c0"},
        "purchase": {
            "product_id": {"value": "p"},
            "currency": {"value": "EUR"},
            "price": "c1",
            "time": {"value": "2024-01-01T00:00:00Z"},
            "quantity": "c5",
            "properties": {"columns": {"b": "c2", "o": "c3", "l": "c4"}},
        },
    }
    _same(purchase, table)


cell = st.one_of(
    st.none(),
    st.sampled_from(BAD_STRINGS),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    st.integers(min_value=-5, max_value=300).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(alphabet="xé😀 ", min_size=250, max_size=300),
    st.dictionaries(
        st.sampled_from(["a", "time", "$x", "a.b", "ok"]),
        st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text(max_size=3), st.none()),
    ).map(lambda d: orjson.dumps(d).decode()),
)
tables = st.integers(min_value=1, max_value=15).flatmap(
    lambda n: st.lists(st.lists(cell, min_size=n, max_size=n), min_size=8, max_size=8)
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables, st.sampled_from(ATTRIBUTE_SPECS))
def test_generated_attribute_tables(cols: list[list[Any]], spec: dict[str, Any]) -> None:
    _same({"kind": "attributes", **spec}, _strings(**{f"c{j}": c for j, c in enumerate(cols)}))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables, st.sampled_from(EVENT_SPECS))
def test_generated_event_and_purchase_tables(cols: list[list[Any]], spec: dict[str, Any]) -> None:
    _same(spec, _strings(**{f"c{j}": c for j, c in enumerate(cols)}))


def test_native_single_faults() -> None:
    n = 7
    ok = pa.array([1.5] * n)
    faults = pa.array([1.5, math.inf, -math.inf, math.nan, None, 0.0, 2**70 * 1.0])
    for col in ("c1", "c2"):
        table = pa.table({"c0": pa.array([f"u{i}" for i in range(n)]), "c1": ok, "c2": ok, col: faults})
        spec = {
            "kind": "attributes",
            "identifier": {"external_id": "c0"},
            "attributes": [{"column": "c1", "to": "f"}, {"column": "c2", "to": "gender"}],
        }
        _same(spec, table)
        purchase = {
            "kind": "purchases",
            "identifier": {"external_id": "c0"},
            "purchase": {
                "product_id": {"value": "p"},
                "currency": {"value": "EUR"},
                "price": "c1",
                "time": {"value": "2024-01-01T00:00:00Z"},
                "properties": {"columns": {"x": "c2"}},
            },
        }
        m = _same(purchase, table)
        assert m.objects and m.rejects


@settings(max_examples=EXAMPLES * 10, deadline=None)
@given(
    st.one_of(
        st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
        st.from_regex(r"[a-z.é \n]{1,5}@[a-z.\t]{1,5}\.[a-z.]{1,3}\s?", fullmatch=True),
        st.from_regex(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\s?", fullmatch=True),
    )
)
def test_vectorised_patterns_accept_only_what_the_python_patterns_accept(s: str) -> None:
    from connector.contract.base import _EMAIL_RE, _ISO_MS_RE
    from connector.contract.columns import _EMAIL_RE2, _ISO_MS_RE2, _all_match

    if _all_match([s], _EMAIL_RE2):
        assert _EMAIL_RE.match(s)
    if _all_match([s], _ISO_MS_RE2):
        assert _ISO_MS_RE.fullmatch(s)


def test_control_characters_in_identifiers_are_rejected_on_both_paths() -> None:
    spec = {"kind": "attributes", "identifier": {"external_id": "id"}, "attributes": [{"column": "a"}]}
    table = _strings(id=["u1", "u\x002", "u3\n", "u4"], a=["x", "y", "z", "w"])
    mapped = _same(spec, table)
    assert [(r.ref.row, r.rule) for r in mapped.rejects] == [
        (3, "identifier.control_character"),
        (4, "identifier.control_character"),
    ]
    ev = {"kind": "events", "identifier": {"external_id": "id"}, "event": {"name": "n", "time": "t"}}
    table = _strings(id=["u1", "\x00"], n=["e", "e"], t=["2024-01-01T00:00:00Z"] * 2)
    assert [r.rule for r in _same(ev, table).rejects] == ["identifier.control_character"]

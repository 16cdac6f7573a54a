"""Property test: every generated row maps to exactly one valid object or exactly one reject, never both."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.config import Stream
from connector.mapper import map_chunk
from connector.records import Chunk

EXAMPLES = 1000 if os.environ.get("BRAZE_CONNECTOR_SOAK") == "1" else 60
ISO_OUT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
IDS = ("external_id", "user_alias", "braze_id", "email", "phone")

odd = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
huge = st.text(alphabet="xé😀 ", min_size=250, max_size=400)
dates = st.one_of(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)).map(lambda d: d.isoformat()),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)).map(
        lambda d: d.strftime("%Y-%m-%d %H:%M:%S+02:00")
    ),
    st.sampled_from(
        ["2023-02-29", "2023-13-01", "24:00", "01/02/2023", "yesterday", "2023-01-01T25:00:00Z", "  "]
    ),
)
json_cells = st.one_of(
    st.dictionaries(
        st.one_of(odd, st.sampled_from(["time", "$x", "a.b", "ok"])),
        st.one_of(
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            odd,
            huge,
            st.none(),
            st.lists(odd, max_size=3),
        ),
    ).map(lambda d: orjson.dumps(d).decode()),
    st.sampled_from(["{", "[1, 2]", "null", '"str"', "{}"]),
)
cell = st.one_of(st.none(), odd, huge, st.integers().map(str), dates, json_cells)


def _independent_check(kind: str, obj: dict[str, Any]) -> None:
    """Checks written without the contract module: what Braze needs of every accepted object."""
    orjson.dumps(obj)
    present = [k for k in IDS if obj.get(k) is not None]
    assert len(present) == 1, obj
    ident = obj[present[0]]
    if isinstance(ident, str):
        assert ident and len(ident.encode()) <= 987
    else:
        assert set(ident) == {"alias_name", "alias_label"} and all(ident.values())

    def strings(x: Any, top: bool = False) -> None:
        if isinstance(x, str):
            assert len(x) <= 255, x[:20]
        elif isinstance(x, dict):
            for k, v in x.items():
                if not (top and k in IDS):
                    assert (
                        isinstance(k, str) and 0 < len(k) <= 255 and not (k.startswith("$") and k != "$time")
                    )
                    strings(v)
        elif isinstance(x, list):
            for v in x:
                strings(v)

    strings(obj, top=True)
    if kind == "events":
        assert isinstance(obj["name"], str) and obj["name"].strip()
        assert ISO_OUT.match(obj["time"]), obj["time"]
        assert not ({"time", "event_name"} & set(obj.get("properties", {})))
    for k, v in obj.items():
        if k.endswith("_at"):
            assert ISO_OUT.match(v), v


def _map(spec: dict[str, Any], table: pa.Table) -> None:
    n = table.num_rows
    rows = list(range(10, 10 + n))
    m = map_chunk(
        Stream.model_validate({"name": "p", "source": {"path": "x.csv"}, **spec}),
        Chunk("x.csv", table, rows),
        datetime.now(UTC),
    )
    seen = list(m.indices) + [r.ref.row - 10 for r in m.rejects]
    assert sorted(seen) == list(range(n)), "every row exactly once"
    assert len(m.objects) == len(m.user_keys) == len(m.indices)
    for obj, key in zip(m.objects, m.user_keys, strict=True):
        _independent_check(spec["kind"], obj)
        assert key
    for r in m.rejects:
        assert r.rule and r.reason and r.stage in ("mapping", "contract")


def _rows(n_cols: int) -> st.SearchStrategy[list[list[Any]]]:
    return st.lists(st.lists(cell, min_size=n_cols, max_size=n_cols), min_size=1, max_size=12)


ATTRS = {
    "kind": "attributes",
    "identifier": {"external_id": "c0"},
    "attributes": [
        {"column": "c1", "to": "name_s"},
        {"column": "c2", "to": "n", "type": "integer", "on_empty": "null"},
        {"column": "c3", "to": "seen_at", "type": "time", "timezone": "Europe/Paris"},
        {"column": "c4", "to": "obj", "op": "merge"},
        {"column": "c5", "to": "tags", "op": "add", "on_empty": "reject"},
        {"column": "c6", "to": "gender"},
        {"column": "c7", "to": "b", "type": "boolean"},
    ],
}
EVENTS = {
    "kind": "events",
    "identifier": {"user_alias": {"name": "c0", "label": "c1"}},
    "event": {
        "name": "c2",
        "time": "c3",
        "properties": {"json_column": "c4", "columns": {"amount": {"column": "c5", "type": "float"}}},
    },
}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_rows(8))
def test_csv_attribute_rows_accounted_exactly_once(rows: list[list[Any]]) -> None:
    _map(ATTRS, pa.table({f"c{j}": pa.array([r[j] for r in rows], type=pa.string()) for j in range(8)}))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_rows(6))
def test_csv_event_rows_accounted_exactly_once(rows: list[list[Any]]) -> None:
    _map(EVENTS, pa.table({f"c{j}": pa.array([r[j] for r in rows], type=pa.string()) for j in range(6)}))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
            st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
            st.one_of(
                st.none(),
                st.datetimes(
                    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
                ),
            ),
            st.one_of(st.none(), odd, huge),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_parquet_native_rows_accounted_exactly_once(rows: list[tuple[Any, ...]]) -> None:
    table = pa.table(
        {
            "c0": pa.array([r[0] for r in rows], type=pa.int64()),
            "c1": pa.array([r[1] for r in rows], type=pa.float64()),
            "c2": pa.array([r[2] for r in rows], type=pa.timestamp("us", tz="UTC")),
            "c3": pa.array([r[3] for r in rows], type=pa.string()),
        }
    )
    spec = {
        "kind": "attributes",
        "identifier": {"external_id": "c0"},
        "attributes": [
            {"column": "c1", "to": "score"},
            {"column": "c1", "to": "whole", "type": "integer"},
            {"column": "c2", "to": "seen_at"},
            {"column": "c3", "to": "label"},
        ],
    }
    _map(spec, table)

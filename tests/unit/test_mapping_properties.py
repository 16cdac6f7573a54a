"""Property test: every generated row maps to exactly one valid object or exactly one reject, never both."""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.config import Stream
from connector.contract import check_object
from connector.mapping import map_chunk
from connector.records import Chunk

EXAMPLES = 1000 if os.environ.get("BRAZE_CONNECTOR_SOAK") == "1" else 60
RESERVED_PURCHASE = {"time", "event_name", "product_id", "quantity", "price", "currency"}
ISO_OUT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
IDS = ("external_id", "user_alias", "braze_id", "email", "phone")
RECIPIENT_IDS = ("external_user_id", "user_alias", "braze_id", "email")
PRIORITIZATION = {"identified", "unidentified", "most_recently_updated", "least_recently_updated"}

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
# Cells aimed at purchase, Canvas and Live Activity fields: near-valid and invalid currencies, prices,
# quantities, booleans, emails and standard-field values (dob, gender, subscription states, locations).
special = st.sampled_from(
    [
        "USD", "EUR", "usd", "US", "XYZ", "1.5", "-3", "0", "1", "100", "101", "1e400", "nan", "inf", "true",
        "false", "yes", "maybe", "a@b.co", "a@b", "a b@c.de", "+14155550100", "2024-02-29", "2023-02-30",
        "0000-01-01", "F", "female", "opted_in", "subscribed", "nope", '{"longitude": 1.5, "latitude": 2}',
        '{"longitude": "x"}', '[{"app_id": "a", "token": "t"}]', "FR", "France",
    ]
)  # fmt: skip
rich = st.one_of(cell, special, special)


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A column's cells: usually a valid value for the field, otherwise anything (so both outcomes occur)."""
    return st.integers(0, 7).flatmap(lambda i: rich if i == 7 else valid)


word = st.text(alphabet="abcxyz019_-", min_size=1, max_size=12)
numbers = st.one_of(st.integers(-(10**6), 10**6).map(str), st.floats(-1e6, 1e6).map(repr))
good_dates = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)).map(
    lambda d: d.isoformat()
)
json_objects = st.dictionaries(
    st.sampled_from(["a", "b_c", "team", "n"]), st.one_of(word, st.integers(-9, 9))
).map(lambda d: orjson.dumps(d).decode())


def _strings(x: Any, skip: tuple[str, ...] = ()) -> None:
    """Every string and key at most 255 characters; keys non-empty, no leading `$` (except `$time`)."""
    if isinstance(x, str):
        assert len(x) <= 255, x[:20]
    elif isinstance(x, dict):
        for k, v in x.items():
            if k not in skip:
                assert isinstance(k, str) and 0 < len(k) <= 255 and not (k.startswith("$") and k != "$time")
                _strings(v)
    elif isinstance(x, list):
        for v in x:
            _strings(v)


def _identifier(obj: dict[str, Any], keys: tuple[str, ...]) -> None:
    present = [k for k in keys if obj.get(k) is not None]
    assert len(present) == 1, obj
    ident = obj[present[0]]
    if isinstance(ident, str):
        assert ident and len(ident.encode()) <= 987
    else:
        assert set(ident) == {"alias_name", "alias_label"} and all(ident.values())


def _independent_check(kind: str, obj: dict[str, Any]) -> None:
    """Checks written without the contract module: what Braze needs of every accepted object."""
    orjson.dumps(obj)
    if kind == "live_activity":
        assert isinstance(obj["app_id"], str) and obj["app_id"]
        assert isinstance(obj["activity_id"], str) and obj["activity_id"]
        assert isinstance(obj["content_state"], dict)
        assert obj.get("end_activity") in (None, True, False)
        for k in ("dismissal_date", "stale_date"):
            assert k not in obj or ISO_OUT.match(obj[k]), obj[k]
        return  # content_state: the app's own ContentState shape, no Braze string or key rule
    if kind == "canvas_trigger":
        _identifier(obj, RECIPIENT_IDS)
        if "email" in obj:
            prio = obj["prioritization"]
            assert prio and set(prio) <= PRIORITIZATION and not {"identified", "unidentified"} <= set(prio)
        if obj.get("send_to_existing_only") is False:
            assert "user_alias" not in obj and isinstance(obj["attributes"], dict)
        assert not ("context" in obj and "canvas_entry_properties" in obj)
        for key in ("context", "canvas_entry_properties"):
            assert len(orjson.dumps(obj.get(key, {}))) <= 50 * 1024  # free-form, 50 KB
        _strings(obj.get("attributes", {}))
        return
    _identifier(obj, IDS)
    _strings(obj, skip=IDS)
    if kind == "events":
        assert isinstance(obj["name"], str) and obj["name"].strip()
    if kind == "purchases":
        assert isinstance(obj["product_id"], str) and obj["product_id"].strip()
        assert isinstance(obj["currency"], str) and len(obj["currency"]) == 3 and obj["currency"].isupper()
        assert type(obj["price"]) in (int, float) and obj["price"] - obj["price"] == 0
        assert "quantity" not in obj or (type(obj["quantity"]) is int and 1 <= obj["quantity"] <= 100)
        assert not (RESERVED_PURCHASE & set(obj.get("properties", {})))
    if kind in ("events", "purchases"):
        assert ISO_OUT.match(obj["time"]), obj["time"]
        assert not ({"time", "event_name"} & set(obj.get("properties", {})))
    for k, v in obj.items():
        if k.endswith("_at"):
            assert ISO_OUT.match(v), v
    if obj.get("dob") is not None:
        date.fromisoformat(obj["dob"])


def _map(spec: dict[str, Any], table: pa.Table) -> list[dict[str, Any]]:
    """Map a table; every row is exactly one of: an object passing the contract, or a reject with a reason."""
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
        assert check_object(spec["kind"], obj) == [], obj
        _independent_check(spec["kind"], obj)
        assert key
    for r in m.rejects:
        assert r.rule and r.reason and r.stage in ("mapping", "contract")
    return m.objects


def _rows(n_cols: int, cells: st.SearchStrategy[Any] = cell) -> st.SearchStrategy[list[list[Any]]]:
    return st.lists(st.lists(cells, min_size=n_cols, max_size=n_cols), min_size=1, max_size=12)


def _columns(*cols: st.SearchStrategy[Any]) -> st.SearchStrategy[list[list[Any]]]:
    """Rows of CSV cells, one strategy per column."""
    return st.lists(st.tuples(*cols).map(list), min_size=1, max_size=12)


def _csv(rows: list[list[Any]]) -> pa.Table:
    return pa.table({f"c{j}": pa.array([r[j] for r in rows], type=pa.string()) for j in range(len(rows[0]))})


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
@given(
    st.one_of(
        _rows(6),
        _columns(
            mostly(word),
            mostly(word),
            mostly(word),
            mostly(good_dates),
            st.one_of(st.none(), json_objects, json_cells),
            mostly(numbers),
        ),
    )
)
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


PURCHASES = {
    "kind": "purchases",
    "identifier": {"external_id": "c0"},
    "purchase": {
        "product_id": "c1",
        "currency": "c2",
        "price": {"column": "c3", "type": "float"},
        "quantity": {"column": "c4", "type": "integer"},
        "time": "c5",
        "properties": {
            "json_column": "c6",
            "columns": {"size": "c7", "n": {"column": "c3", "type": "integer"}},
        },
    },
}
CANVAS_SPECS = [
    {  # email recipients: prioritization from the config, attributes with standard fields
        "kind": "canvas_trigger",
        "identifier": {"email": "c0"},
        "canvas": {
            "canvas_id": "cv",
            "properties": {"json_column": "c1", "columns": {"coupon": "c2"}},
            "attributes": [
                {"column": "c3", "to": "dob"},
                {"column": "c4", "to": "gender"},
                {"column": "c5", "to": "email_subscribe"},
            ],
        },
    },
    {  # create missing users: send_to_existing_only false with an attributes object
        "kind": "canvas_trigger",
        "identifier": {"external_id": "c0"},
        "canvas": {
            "canvas_id": "cv",
            "send_to_existing_only": False,
            "prioritization": ["unidentified", "least_recently_updated"],
            "properties_key": "context",
            "properties": {"columns": {"coupon": "c1", "at": {"column": "c2", "type": "time"}}},
            "attributes": [
                {"column": "c3", "to": "email"},
                {"column": "c4", "to": "current_location", "type": "object"},
                {"column": "c5", "to": "country"},
            ],
        },
    },
    {  # user alias recipients (existing users only: Braze refuses send_to_existing_only with aliases,
        # and the pipeline file refuses `false` with a user_alias identifier, tests/unit/test_config.py)
        "kind": "canvas_trigger",
        "identifier": {"user_alias": {"name": "c0", "label": "c1"}},
        "canvas": {
            "canvas_id": "cv",
            "attributes": [
                {"column": "c2", "to": "first_name"},
                {"column": "c3", "to": "push_tokens", "type": "object"},
            ],
            "context": {"json_column": "c4", "columns": {"x": "c5"}},
        },
    },
]
emails = st.builds(lambda a, b: f"{a}@{b}.com", word, word)
CANVAS_COLUMNS = [
    (
        mostly(emails),
        st.one_of(st.none(), json_objects, json_cells),
        rich,
        mostly(st.dates().map(date.isoformat)),
        mostly(st.sampled_from(["M", "F", "O", "N", "P"])),
        mostly(st.sampled_from(["opted_in", "subscribed", "unsubscribed"])),
    ),
    (
        mostly(word),
        rich,
        mostly(good_dates),
        mostly(emails),
        mostly(
            st.builds(
                lambda x, y: orjson.dumps({"longitude": x, "latitude": y}).decode(),
                st.floats(-180, 180),
                st.floats(-90, 90),
            )
        ),
        mostly(st.sampled_from(["FR", "US", "de"])),
    ),
    (
        mostly(word),
        mostly(word),
        rich,
        st.one_of(st.none(), st.just('[{"app_id": "a", "token": "t"}]'), rich),
        st.one_of(st.none(), json_objects, json_cells),
        rich,
    ),
]
LIVE_ACTIVITY = {
    "kind": "live_activity",
    "live_activity": {
        "app_id": {"value": "app"},
        "activity_id": "c0",
        "content_state": {"json_column": "c1", "columns": {"score": {"column": "c2", "type": "integer"}}},
        "end_activity": {"column": "c3", "type": "boolean"},
        "dismissal_date": {"column": "c4", "type": "time"},
        "stale_date": "c5",
        "notification_json_column": "c1",
    },
}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    _columns(
        mostly(word),
        mostly(word),
        mostly(st.sampled_from(["USD", "EUR", "JPY", "GBP"])),
        mostly(numbers),
        mostly(st.integers(1, 100).map(str)),
        mostly(good_dates),
        st.one_of(st.none(), json_objects, json_cells),
        rich,
    )
)
def test_csv_purchase_rows_accounted_exactly_once(rows: list[list[Any]]) -> None:
    _map(PURCHASES, _csv(rows))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
            st.one_of(st.none(), st.sampled_from(["USD", "EUR", "usd", "XYZ", ""])),
            st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
            st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.integers(-1, 102)),
            st.one_of(
                st.none(),
                st.datetimes(
                    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
                ),
            ),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_parquet_native_purchase_rows_accounted_exactly_once(rows: list[tuple[Any, ...]]) -> None:
    table = pa.table(
        {
            "c0": pa.array([r[0] for r in rows], type=pa.int64()),
            "c1": pa.array([r[1] for r in rows], type=pa.string()),
            "c2": pa.array([r[2] for r in rows], type=pa.float64()),
            "c3": pa.array([r[3] for r in rows], type=pa.int64()),
            "c4": pa.array([r[4] for r in rows], type=pa.timestamp("us", tz="UTC")),
        }
    )
    spec = {
        "kind": "purchases",
        "identifier": {"external_id": "c0"},
        "purchase": {
            "product_id": {"value": "sku"},
            "currency": "c1",
            "price": "c2",
            "quantity": "c3",
            "time": "c4",
            "properties": {"columns": {"paid": "c2"}},
        },
    }
    _map(spec, table)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(range(len(CANVAS_SPECS))))
def test_csv_canvas_rows_accounted_exactly_once(data: st.DataObject, which: int) -> None:
    rows = data.draw(_columns(*CANVAS_COLUMNS[which]))
    objects = _map(CANVAS_SPECS[which], _csv(rows))
    if which == 2:
        assert all("send_to_existing_only" not in o for o in objects)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    _columns(
        mostly(word),
        st.one_of(st.none(), json_objects, json_cells),
        mostly(st.integers(-99, 99).map(str)),
        mostly(st.sampled_from(["true", "false", "1", "0"])),
        mostly(good_dates),
        mostly(good_dates),
    )
)
def test_csv_live_activity_rows_accounted_exactly_once(rows: list[list[Any]]) -> None:
    _map(LIVE_ACTIVITY, _csv(rows))

"""mapper.map_chunk: casts, on_empty, ops, identifiers, properties, Canvas and Live Activity objects."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from connector.config import Stream
from connector.errors import ConfigError
from connector.mapping import map_chunk, user_key
from connector.records import Chunk, MappedChunk

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def run(spec: dict[str, Any], cols: dict[str, list[Any]] | pa.Table) -> MappedChunk:
    spec = {"name": "s", "source": {"path": "in.csv"}, **spec}
    table = cols if isinstance(cols, pa.Table) else pa.table(cols)
    chunk = Chunk("in.csv", table, list(range(2, table.num_rows + 2)))
    return map_chunk(Stream.model_validate(spec), chunk, NOW)


def attrs(fields: list[dict[str, Any]], cols: dict[str, list[Any]], **extra: Any) -> MappedChunk:
    cols = {"id": [f"u{i}" for i in range(len(next(iter(cols.values()))))], **cols}
    return run(
        {"kind": "attributes", "identifier": {"external_id": "id"}, "attributes": fields, **extra}, cols
    )


def one_value(field: dict[str, Any], cells: list[Any]) -> tuple[list[Any], dict[int, str]]:
    """Per row: the mapped value of the attribute 'v' (or '<absent>'); rejects as row index -> rule."""
    m = attrs([{"column": "c", "to": "v", **field}], {"c": cells})
    by_row = {i: o.get("v", "<absent>") for i, o in zip(m.indices, m.objects, strict=True)}
    rejected = {r.ref.row - 2: r.rule for r in m.rejects}
    assert set(by_row) | set(rejected) == set(range(len(cells))) and not set(by_row) & set(rejected)
    return [by_row.get(i) for i in range(len(cells))], rejected


@pytest.mark.parametrize(
    ("field", "cells", "values", "rejected"),
    [
        (
            {"type": "integer"},
            ["1", " -2 ", "3.0", "x", "1.5"],
            [1, -2, 3, None, None],
            {3: "cast.integer", 4: "cast.integer"},
        ),
        (
            {"type": "float"},
            ["1.5", "-2", "1e3", "abc", "nan"],
            [1.5, -2.0, 1000.0, None, None],
            {3: "cast.float", 4: "cast.float"},
        ),
        (
            {"type": "boolean"},
            ["TRUE", "no", "Y", "0", "maybe"],
            [True, False, True, False, None],
            {4: "cast.boolean"},
        ),
        (
            {"type": "date"},
            ["2024-02-29", "2023-02-29", "1999-12-31"],
            ["2024-02-29", None, "1999-12-31"],
            {1: "cast.date"},
        ),
        (
            {"type": "date", "format": "%d/%m/%Y"},
            ["31/12/1999", "1999-12-31"],
            ["1999-12-31", None],
            {1: "cast.date"},
        ),
        ({"type": "array"}, ["a, b,,c ", "x"], [["a", "b", "c"], ["x"]], {}),
        ({"type": "array", "split": "|"}, ["a|b", " | "], [["a", "b"], "<absent>"], {}),
        (
            {"type": "object"},
            ['{"a": {"b": 1}}', "[1]", "{bad"],
            [{"a": {"b": 1}}, None, None],
            {1: "cast.json", 2: "cast.json"},
        ),
        ({"type": "string"}, [" keep spaces ", "x"], [" keep spaces ", "x"], {}),
        ({}, ["12", "x"], ["12", "x"], {}),
    ],
)
def test_casts_on_csv_strings(
    field: dict[str, Any], cells: list[Any], values: list[Any], rejected: dict[int, str]
) -> None:
    got, rej = one_value(field, cells)
    assert rej == rejected
    assert [v for i, v in enumerate(got) if i not in rejected] == [
        v for i, v in enumerate(values) if i not in rejected
    ]


@pytest.mark.parametrize(
    ("field", "cells", "expected"),
    [
        ({"type": "time"}, ["2023-01-02T03:04:05Z"], "2023-01-02T03:04:05.000Z"),
        ({"type": "time"}, ["2023-01-02T03:04:05.123+02:00"], "2023-01-02T01:04:05.123Z"),
        (
            {"type": "time", "timezone": "America/New_York"},
            ["2023-07-01 12:00:00"],
            "2023-07-01T16:00:00.000Z",
        ),
        ({"type": "time", "timezone": "Europe/Paris"}, ["2023-01-02"], "2023-01-01T23:00:00.000Z"),
        ({"type": "time"}, ["12/25/2023"], "2023-12-25T00:00:00.000Z"),
        (
            {"type": "time", "timezone": "Asia/Tokyo"},
            ["2023-01-02T03:04:05", "2023-01-02T00:00:00Z"],
            "2023-01-01T18:04:05.000Z",
        ),
        (
            {"type": "time", "format": "%d.%m.%Y %H:%M", "timezone": "Europe/Berlin"},
            ["02.01.2023 10:30"],
            "2023-01-02T09:30:00.000Z",
        ),
    ],
)
def test_time_formats_and_zones(field: dict[str, Any], cells: list[str], expected: str) -> None:
    got, rej = one_value(field, cells)
    assert rej == {} and got[0] == expected


def test_time_failures_reject_with_quoted_value() -> None:
    m = attrs(
        [{"column": "t", "type": "time"}],
        {"t": ["2023-01-02T03:04:05Z", "not a time " + "z" * 100, "2023-13-45"]},
    )
    assert [r.rule for r in m.rejects] == ["cast.time", "cast.time"]
    r = m.rejects[0]
    assert r.stage == "mapping" and r.column == "t" and "'not a time" in r.reason and "..." in r.reason
    assert r.ref.row == 3 and r.values["t"].startswith("not a time")


def test_parquet_native_types() -> None:
    ts = pa.array(
        [datetime(2023, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), None], type=pa.timestamp("us", tz="Europe/Paris")
    )
    naive = pa.array([datetime(2023, 7, 1, 12), datetime(2023, 7, 1, 13)], type=pa.timestamp("ms"))
    table = pa.table(
        {
            "id": pa.array([101, 102], type=pa.int64()),
            "ts": ts,
            "naive": naive,
            "n": pa.array([3, None], type=pa.int32()),
            "f": pa.array([2.0, float("nan")]),
            "b": pa.array([True, False]),
            "d": pa.array([datetime(2020, 5, 1).date(), None], type=pa.date32()),
            "tags": pa.array([["a", "", None, "b"], None], type=pa.list_(pa.string())),
        }
    )
    spec = {
        "kind": "attributes",
        "identifier": {"external_id": "id"},
        "attributes": [
            {"column": "ts"},
            {"column": "naive", "type": "time", "timezone": "America/New_York"},
            {"column": "n"},
            {"column": "f", "type": "integer"},
            {"column": "b"},
            {"column": "d", "to": "dob", "type": "date"},
            {"column": "tags", "op": "add"},
        ],
    }
    m = run(spec, table)
    assert m.rejects == []
    assert m.objects[0] == {
        "external_id": "101",
        "ts": "2023-01-02T03:04:05.678Z",
        "naive": "2023-07-01T16:00:00.000Z",
        "n": 3,
        "f": 2,
        "b": True,
        "dob": "2020-05-01",
        "tags": {"add": ["a", "b"]},
    }
    assert m.objects[1] == {"external_id": "102", "naive": "2023-07-01T17:00:00.000Z", "b": False}
    assert m.user_keys == ["external_id:101", "external_id:102"]


def test_on_empty_modes() -> None:
    m = attrs(
        [
            {"column": "a", "on_empty": "skip"},
            {"column": "b", "on_empty": "null"},
            {"column": "c", "on_empty": "reject"},
        ],
        {"a": ["", None, "x"], "b": [" ", None, "y"], "c": ["1", None, "3"]},
    )
    assert m.objects == [
        {"external_id": "u0", "b": None, "c": "1"},
        {"external_id": "u2", "a": "x", "b": "y", "c": "3"},
    ]
    assert [(r.ref.row, r.rule, r.column, r.stage) for r in m.rejects] == [
        (3, "value.required", "c", "mapping")
    ]


def test_every_op() -> None:
    m = attrs(
        [
            {"column": "n", "op": "inc"},
            {"column": "t", "op": "add"},
            {"column": "r", "op": "remove", "split": ";"},
            {"column": "o", "op": "merge"},
            {"column": "s", "to": "first_name"},
        ],
        {
            "n": ["-2.5", "x"],
            "t": ["a,b", "c"],
            "r": ["x; y", "z"],
            "o": ['{"k": 1}', "{}"],
            "s": ["Ann", "Bo"],
        },
    )
    assert m.objects == [
        {
            "external_id": "u0",
            "_merge_objects": True,
            "n": {"inc": -2.5},
            "t": {"add": ["a", "b"]},
            "r": {"remove": ["x", "y"]},
            "o": {"k": 1},
            "first_name": "Ann",
        }
    ]
    assert m.rejects[0].rule == "cast.float" and m.rejects[0].column == "n"


def test_inc_keeps_integers() -> None:
    m = attrs([{"column": "n", "op": "inc"}], {"n": ["5", "-1"]})
    assert [o["n"] for o in m.objects] == [{"inc": 5}, {"inc": -1}]
    assert all(type(o["n"]["inc"]) is int for o in m.objects)


def test_user_alias_identifier_and_update_existing_only() -> None:
    spec = {
        "kind": "attributes",
        "identifier": {"user_alias": {"name": "an", "label": {"value": "crm"}}},
        "update_existing_only": False,
        "attributes": [{"column": "x"}],
    }
    m = run(spec, {"an": ["a1", None], "x": ["1", "2"]})
    assert m.objects == [
        {"user_alias": {"alias_name": "a1", "alias_label": "crm"}, "_update_existing_only": False, "x": "1"}
    ]
    assert m.user_keys == ["user_alias:a1|crm"]
    assert [(r.rule, r.stage, r.column) for r in m.rejects] == [("identifier.missing", "contract", "an")]


@pytest.mark.parametrize(
    ("kind", "cells", "key"),
    [
        ("braze_id", ["b1"], "braze_id:b1"),
        ("email", [" a@b.co "], "email:a@b.co"),
        ("phone", ["+33612345678"], "phone:+33612345678"),
    ],
)
def test_other_identifiers(kind: str, cells: list[str], key: str) -> None:
    m = run(
        {
            "kind": "attributes",
            "identifier": {kind: "i"},
            "attributes": [{"column": "x"}],
            "update_existing_only": True,
        },
        {"i": cells, "x": ["1"]},
    )
    assert m.user_keys == [key] and m.objects[0]["_update_existing_only"] is True


def test_contract_rejects_carry_column() -> None:
    m = attrs(
        [{"column": "g", "to": "gender"}, {"column": "e", "to": "email"}],
        {"g": ["M", "male"], "e": ["a@b.co", "x"]},
    )
    assert len(m.objects) == 1
    r = m.rejects[0]
    assert (r.stage, r.rule, r.column) == (
        "contract",
        "email.invalid",
        "e",
    ) and "standard_field.gender" in r.reason


def test_missing_column_is_config_error() -> None:
    with pytest.raises(ConfigError) as e:
        attrs([{"column": "nope", "to": "x"}], {"a": ["1"]})
    msg = str(e.value)
    assert "stream 's'" in msg and "'nope'" in msg and "attributes[0] (x)" in msg and "id, a" in msg


def test_bad_timezone_is_config_error() -> None:
    with pytest.raises(ConfigError, match="Mars/Base"):
        attrs([{"column": "a", "type": "time", "timezone": "Mars/Base"}], {"a": ["2024-01-01"]})


def test_constant_values() -> None:
    m = attrs([{"value": 3, "to": "n", "op": "inc"}, {"value": "gold", "to": "tier"}], {"x": ["a", "b"]})
    assert [o["n"] for o in m.objects] == [{"inc": 3}, {"inc": 3}] and m.objects[1]["tier"] == "gold"


def test_events_with_properties() -> None:
    spec = {
        "kind": "events",
        "identifier": {"external_id": "id"},
        "event": {
            "name": "ev",
            "time": {"column": "ts", "timezone": "Europe/Paris"},
            "app_id": {"value": "app-1"},
            "properties": {
                "json_column": "props",
                "columns": {"plan": "plan", "amount": {"column": "amt", "type": "float"}},
            },
        },
    }
    cols = {
        "id": [1, 2, 3, 4],
        "ev": ["played", "played", None, "x"],
        "ts": ["2024-01-01 10:00:00", "2024-01-01T10:00:00Z", "2024-01-01", "2024-01-01"],
        "props": ['{"plan": "old", "n": [1, 2], "gone": null}', None, None, "not json"],
        "plan": ["pro", None, None, None],
        "amt": ["1.5", None, None, None],
    }
    m = run(spec, cols)
    assert m.objects[0] == {
        "external_id": "1",
        "name": "played",
        "time": "2024-01-01T09:00:00.000Z",
        "app_id": "app-1",
        "properties": {"plan": "pro", "n": [1, 2], "amount": 1.5},
    }
    assert m.objects[1] == {
        "external_id": "2",
        "name": "played",
        "time": "2024-01-01T10:00:00.000Z",
        "app_id": "app-1",
    }
    assert [(r.ref.row, r.rule, r.column) for r in m.rejects] == [
        (4, "event.name_missing", "ev"),
        (5, "cast.json", "props"),
    ]


def test_property_reject_names_its_column() -> None:
    spec = {
        "kind": "events",
        "identifier": {"external_id": "id"},
        "event": {
            "name": {"value": "e"},
            "time": {"value": "2024-01-01T00:00:00Z"},
            "properties": {"columns": {"note": "n"}},
        },
    }
    m = run(spec, {"id": ["u1", "u2"], "n": ["ok", "x" * 300]})
    assert len(m.objects) == 1 and [(r.rule, r.column) for r in m.rejects] == [("string.too_long", "n")]


def test_purchases() -> None:
    spec = {
        "kind": "purchases",
        "identifier": {"external_id": "id"},
        "purchase": {"product_id": "p", "currency": "c", "price": "pr", "quantity": "q", "time": "t"},
    }
    cols = {
        "id": ["u1", "u2", "u3", "u4"],
        "p": ["sku"] * 4,
        "c": ["USD", "EUR", "XYZ", "USD"],
        "pr": ["10", "-1.5", "1", "1"],
        "q": ["2", "1", "1", "500"],
        "t": ["2024-01-01T00:00:00Z"] * 4,
    }
    m = run(spec, cols)
    assert m.objects[0] == {
        "external_id": "u1",
        "product_id": "sku",
        "currency": "USD",
        "price": 10.0,
        "quantity": 2,
        "time": "2024-01-01T00:00:00.000Z",
    }
    assert type(m.objects[0]["price"]) is float and m.objects[1]["price"] == -1.5
    assert [(r.rule, r.column) for r in m.rejects] == [("purchase.currency", "c"), ("purchase.quantity", "q")]


def test_canvas_recipients() -> None:
    spec = {
        "kind": "canvas_trigger",
        "identifier": {"external_id": "id"},
        "canvas": {
            "canvas_id": "cv",
            "context": {"columns": {"coupon": "cp"}},
            "send_to_existing_only": False,
            "attributes": [{"column": "fn", "to": "first_name"}],
        },
    }
    m = run(spec, {"id": ["u1", "u2"], "cp": ["X1", None], "fn": ["Ann", None]})
    assert m.objects == [
        {
            "external_user_id": "u1",
            "canvas_entry_properties": {"coupon": "X1"},  # the default name (`context:` is the old spelling)
            "send_to_existing_only": False,
            "attributes": {"first_name": "Ann"},
        },
        {"external_user_id": "u2", "send_to_existing_only": False, "attributes": {}},
    ]
    assert m.user_keys == ["external_id:u1", "external_id:u2"]


@pytest.mark.parametrize("key", ["canvas_entry_properties", "context"])
def test_canvas_properties_go_under_the_chosen_key(key: str) -> None:
    spec = {"kind": "canvas_trigger", "identifier": {"external_id": "id"},
            "canvas": {"canvas_id": "cv", "properties_key": key, "properties": {"columns": {"coupon": "cp"}}}}  # fmt: skip
    m = run(spec, {"id": ["u1"], "cp": ["X1"]})
    assert m.objects == [{"external_user_id": "u1", key: {"coupon": "X1"}}]


def test_canvas_email_recipient_gets_prioritization() -> None:
    spec = {"kind": "canvas_trigger", "identifier": {"email": "e"}, "canvas": {"canvas_id": "cv"}}
    m = run(spec, {"e": ["a@b.co"]})
    assert m.objects == [{"email": "a@b.co", "prioritization": ["identified", "most_recently_updated"]}]


def test_live_activity() -> None:
    spec = {
        "kind": "live_activity",
        "live_activity": {
            "app_id": {"value": "app"},
            "activity_id": "act",
            "content_state": {"json_column": "cs", "columns": {"score": {"column": "s", "type": "integer"}}},
            "end_activity": "end",
            "stale_date": "stale",
            "notification_json_column": "note",
        },
    }
    cols = {
        "act": ["g1", None],
        "cs": ['{"team": "A"}', None],
        "s": ["3", "4"],
        "end": ["yes", "no"],
        "stale": ["2024-01-01T00:00:00Z", None],
        "note": ['{"alert": "Goal"}', None],
    }
    m = run(spec, cols)
    assert m.objects == [
        {
            "app_id": "app",
            "activity_id": "g1",
            "end_activity": True,
            "stale_date": "2024-01-01T00:00:00.000Z",
            "content_state": {"team": "A", "score": 3},
            "notification": {"alert": "Goal"},
        }
    ]
    assert m.user_keys == ["activity:g1"] and [r.rule for r in m.rejects] == ["live_activity.missing_field"]


def test_user_key_forms() -> None:
    assert user_key({"external_user_id": "x"}) == "external_id:x"
    assert user_key({"user_alias": {"alias_name": "n", "alias_label": "l"}}) == "user_alias:n|l"
    assert user_key({"app_id": "a", "activity_id": "z", "content_state": {}}) == "activity:z"


def test_many_rejects_keep_their_own_values() -> None:
    cells = [str(i) if i % 3 else f"bad{i}" for i in range(300)]
    m = attrs([{"column": "n", "type": "integer"}], {"n": cells})
    assert len(m.rejects) == 100 and len(m.objects) == 200
    assert all(
        r.values["n"] == f"bad{r.ref.row - 2}" and r.values["id"] == f"u{r.ref.row - 2}" for r in m.rejects
    )


def test_braze_colon_millis_format_and_out_of_range_years() -> None:
    got, rej = one_value(
        {"type": "time"}, ["2023-01-02T03:04:05:123+0000", "3500-01-01T00:00:00Z", "0999-01-01"]
    )
    assert got[0] == "2023-01-02T03:04:05.123Z" and rej == {1: "cast.time"}


def test_parquet_float_ids_and_native_purchase_numbers() -> None:
    table = pa.table(
        {
            "id": pa.array([7.0, 8.5]),
            "pr": pa.array([3, 4], type=pa.int64()),
            "q": pa.array([2.0, 1.0]),
            "t": pa.array([datetime(2024, 1, 1, tzinfo=UTC)] * 2, type=pa.timestamp("s", tz="UTC")),
        }
    )
    spec = {
        "kind": "purchases",
        "identifier": {"external_id": "id"},
        "purchase": {
            "product_id": {"value": "sku"},
            "currency": {"value": "USD"},
            "price": "pr",
            "quantity": "q",
            "time": "t",
        },
    }
    m = run(spec, table)
    assert m.objects[0]["external_id"] == "7" and m.objects[1]["external_id"] == "8.5"
    assert (
        m.objects[0]["price"] == 3.0
        and type(m.objects[0]["price"]) is float
        and m.objects[0]["quantity"] == 2
    )
    assert m.objects[0]["time"] == "2024-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("ident", "cols", "key", "value"),
    [
        (
            {"user_alias": {"name": "a", "label": {"value": "crm"}}},
            {"a": ["n1"]},
            "user_alias",
            {"alias_name": "n1", "alias_label": "crm"},
        ),
        ({"braze_id": "b"}, {"b": ["bz"]}, "braze_id", "bz"),
    ],
)
def test_canvas_other_identifiers(
    ident: dict[str, Any], cols: dict[str, list[Any]], key: str, value: Any
) -> None:
    m = run({"kind": "canvas_trigger", "identifier": ident, "canvas": {"canvas_id": "cv"}}, cols)
    assert m.objects == [{key: value}]


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize(
    ("ident", "mapped"),
    [("external_id", "email"), ("external_id", "phone"), ("email", "phone"), ("braze_id", "email")],
)
def test_an_empty_identifier_is_rejected_whatever_else_is_mapped(ident: str, mapped: str, fast: bool) -> None:
    """Issue 11 point 1: never let a mapped email or phone attribute stand in for the configured identifier."""
    spec = {"name": "s", "source": {"path": "in.csv"}, "kind": "attributes", "identifier": {ident: "i"},
            "attributes": [{"column": "m", "to": mapped}]}  # fmt: skip
    ok = "a@b.co" if ident == "email" else "u1"
    value = "+33612345678" if mapped == "phone" else "c@d.co"
    table = pa.table({"i": [ok, None], "m": [value, value]})
    m = map_chunk(Stream.model_validate(spec), Chunk("in.csv", table, [2, 3]), NOW, fast=fast)
    assert len(m.objects) == 1 and m.objects[0][ident] == ok
    assert [(r.ref.row, r.stage, r.rule, r.column) for r in m.rejects] == [(3, "contract", "identifier.missing", "i")]
    assert "identifier" in m.rejects[0].reason and "'i'" in m.rejects[0].reason

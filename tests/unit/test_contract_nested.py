"""Nested custom attributes (issue 11, point 4): the contract rejects exactly the nested updates for which
Braze (the emulator, our oracle) would drop every nested update of the request while still answering 201."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.contract import check_object
from connector.emulator.nested import check_nested as emulator_drops

EXAMPLES = 800 if os.environ.get("BRAZE_CONNECTOR_SOAK") == "1" else 150


def rules(value: Any, key: str = "profile") -> list[str]:
    return [v.rule for v in check_object("attributes", {"external_id": "u1", key: value})]


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ({"signup": {"$time": None}}, "nested.time"),
        ({"signup": {"$time": "2024-02-30"}}, "nested.time"),
        ({"signup": {"$time": "yesterday"}}, "nested.time"),
        ({"signup": {"$time": 1700000000}}, "nested.time"),
        ({"signup": {"$time": "3001-01-01T00:00:00Z"}}, "nested.time"),
        ([{"at": {"$time": None}}], "nested.time"),
        ({"a": None}, "nested.invalid"),
        ({"a": [1, None]}, "nested.invalid"),
        ({"a b": 1}, "nested.invalid"),
        ({"$x": 1}, "nested.invalid"),
        ({"a": "x" * 256}, "nested.invalid"),
        ({"$add": {"id": 1}}, "nested.invalid"),
        ({"$remove": [{"id": 1}]}, "nested.invalid"),
        ({"$update": [{"$identifier_key": "id", "$identifier_value": 1}]}, "nested.invalid"),
        ({"$add": [{"id": None}]}, "nested.invalid"),
    ],
)
def test_values_braze_drops_every_nested_update_for_are_rejected(value: Any, rule: str) -> None:
    assert emulator_drops("profile", value) is not None  # the oracle agrees Braze would drop them
    assert rules(value) == [rule]


@pytest.mark.parametrize(
    "value",
    [
        {"signup": {"$time": "2024-02-29"}},
        {"signup": {"$time": "2024-05-01T12:00:00.000Z"}},
        {"signup": {"$time": "3000-01-01T00:00:00Z"}},
        [{"id": 1, "at": {"$time": "2020-05-28"}}],
        {"a": {"b": [1, "x", True]}},
        {"$add": [{"id": 1}], "$remove": [{"$identifier_key": "id", "$identifier_value": 2}]},
        {"$update": [{"$identifier_key": "id", "$identifier_value": 1, "$new_object": {"n": 2}}]},
    ],
)
def test_valid_nested_updates_pass(value: Any) -> None:
    assert emulator_drops("profile", value) is None
    assert rules(value) == []


def test_a_top_level_null_still_removes_the_attribute_and_scalar_ops_are_not_nested() -> None:
    assert rules(None) == [] and rules({"inc": 2}) == [] and rules({"add": ["a"], "remove": ["b"]}) == []


def test_canvas_recipient_attributes_get_the_same_rule() -> None:
    rec = {"external_user_id": "u1", "attributes": {"profile": {"at": {"$time": None}}}}
    assert [v.rule for v in check_object("canvas_trigger", rec)] == ["nested.time"]


_times = st.one_of(
    st.none(),
    st.integers(),
    st.sampled_from(["2024-01-01", "2024-13-01", "2024-01-01T10:00:00Z", "2999-12-31T23:59:59Z",
                     "3000-12-31T23:00:00-02:00", "3000-01-01", "01/31/2024", "", "2024-01-01T25:00:00Z"]),
)  # fmt: skip
_keys = st.sampled_from(["a", "b", "id", "a b", "a.b", "$x", "", "k" * 256])
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(["x", "y" * 255, "z" * 256]),
    st.builds(lambda t: {"$time": t}, _times),
)
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=3)),
    max_leaves=8,
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.dictionaries(_keys, _values, min_size=1, max_size=3), st.lists(_values, min_size=1)))
def test_the_contract_rejects_exactly_what_the_emulator_drops(value: Any) -> None:
    if not isinstance(value, dict) and not any(isinstance(x, dict | list) for x in value):
        return  # a scalar array is not a nested update
    dropped = emulator_drops("profile", value) is not None
    nested_rules = [r for r in rules(value) if r.startswith("nested.")]
    assert bool(nested_rules) == dropped, (value, nested_rules)

"""Nested custom attributes (objects, arrays of objects, `$add`/`$remove`/`$update`, `{"$time"}`).

Braze does not reject an object for a bad nested value: "all nested custom attribute updates in the
request will be dropped from processing" (post_user_track.md, braze-api.md §1.6, §3.3). The same FAQ
then says this "applies to all nested structures within that specific attribute", so the scope is a
switch: `request` (default) drops every nested update of the request, `attribute` only the offending
attribute's. The object itself is still processed and counted, and the reply carries no error. A nested
date `{"$time": ...}` that is null or not a valid time is such an invalid value (the FAQ names both).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from connector.emulator.attribute_rules import is_nested
from connector.emulator.rules import MAX_STRING, NESTED_BYTES, json_size, parse_time

NestedScope = Literal["request", "attribute"]
NESTED_SCOPES: tuple[str, ...] = ("request", "attribute")
_OPS = frozenset({"$add", "$remove", "$update"})
MAX_NESTED_YEAR = 3000


def _bad_key(k: Any) -> bool:
    return not isinstance(k, str) or not k or " " in k or "." in k or k.startswith("$") or len(k) > MAX_STRING


def _check_time(value: Any, path: str) -> str | None:
    """A nested date `{"$time": ...}`: a parseable time string, never null (braze-api.md §3.3).

    A year outside 0..3000 parses, but Braze does not store such a nested date ("For nested dates, a year
    < 0 or > 3000 is not stored"); the docs give no finer rule, so it counts as the invalid value that drops
    the nested updates, the only behaviour documented for a nested value Braze does not take.
    """
    dt = parse_time(value)
    if dt is None:
        kind = "a null" if value is None else "an invalid"
        return f"'{path}' has {kind} '$time' value"
    if dt.year > MAX_NESTED_YEAR:
        return f"'{path}' has a '$time' year after {MAX_NESTED_YEAR}"
    return None


def _check_value(value: Any, path: str) -> str | None:
    if value is None:
        return f"Nested custom attribute '{path}' has a null value"
    if isinstance(value, dict):
        if set(value) == {"$time"}:
            return _check_time(value["$time"], path)
        for k, v in value.items():
            if _bad_key(k):
                return f"Nested custom attribute '{path}' has an invalid key '{str(k)[:64]}'"
            err = _check_value(v, f"{path}.{k}")
            if err:
                return err
    elif isinstance(value, list):
        for item in value:
            err = _check_value(item, path)
            if err:
                return err
    elif isinstance(value, str) and len(value) > MAX_STRING:
        return f"Nested custom attribute '{path}' has a string longer than {MAX_STRING} characters"
    return None


def _check_ops(key: str, value: dict[str, Any]) -> str | None:
    for op in value:
        if not isinstance(value[op], list):
            return f"'{key}' {op} must be an array"
    for item in value.get("$remove", []) + value.get("$update", []):
        if not isinstance(item, dict) or "$identifier_key" not in item or "$identifier_value" not in item:
            return f"'{key}' $remove/$update items need '$identifier_key' and '$identifier_value'"
    for item in value.get("$update", []):
        if not isinstance(item.get("$new_object"), dict):
            return f"'{key}' $update items need a '$new_object' object"
    news = [item["$new_object"] for item in value.get("$update", [])]
    return _check_value(value.get("$add", []), key) or _check_value(news, key)


def check_nested(key: str, value: Any) -> str | None:
    """Why a nested update is invalid (Braze then drops it, see the module doc), or None."""
    if isinstance(value, dict) and value and set(value) <= _OPS:
        return _check_ops(key, value)
    if json_size(value) > NESTED_BYTES:
        return f"Nested custom attribute '{key}' is larger than {NESTED_BYTES // 1024} KB"
    return _check_value(value, key)


def plan_drops(objects: Sequence[dict[str, Any]], scope: NestedScope) -> list[frozenset[str]]:
    """For each attributes object of one request, the keys whose nested updates are dropped."""
    invalid = [frozenset(k for k, v in o.items() if is_nested(k, v) and check_nested(k, v)) for o in objects]
    if scope == "attribute" or not any(invalid):
        return invalid
    return [frozenset(k for k, v in o.items() if is_nested(k, v)) for o in objects]

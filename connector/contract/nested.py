"""Nested custom attributes: the values that make Braze drop every nested update of the request.

Braze does not refuse an object with a bad nested value: it answers 201 and "all nested custom attribute
updates in the request will be dropped from processing" (post_user_track.md; braze-api.md §1.6, §3.3), the
other rows' included. So the contract rejects the row instead, and the report never says delivered for an
update Braze drops. Bad values: a null anywhere inside, a `{"$time": ...}` that is null, not a Braze time or
after year 3000 ("for nested dates, a year < 0 or > 3000 is not stored"), a key that is empty, over 255
characters, holds a space or '.', or starts with '$'; a string over 255 characters; over 100 KB; a
malformed `$add` / `$remove` / `$update`.
"""

from __future__ import annotations

from typing import Any

import orjson

from connector.contract.base import KB, MAX_STRING, Violation, _parse_time, _short

NESTED_BYTES = 100 * KB
MAX_NESTED_YEAR = 3000
_ARRAY_OPS = frozenset(("$add", "$remove", "$update"))


def is_nested_update(value: Any) -> bool:
    """Whether a custom attribute value is a nested update (an object that is not `inc`/`add`/`remove`, or
    an array holding objects or arrays). Standard fields and identifiers are never nested updates."""
    if type(value) is dict:
        keys = value.keys()
        return not (keys == {"inc"} or (keys and keys <= {"add", "remove"}))
    if type(value) is list:
        return any(type(x) is dict or type(x) is list for x in value)
    return False


def check_nested(key: str, value: Any, field: str, out: list[Violation]) -> None:
    """Append the violation that would make Braze drop this nested update (and the request's others)."""
    if type(value) is dict and value and value.keys() <= _ARRAY_OPS:
        problem = _ops(value)
    else:
        try:
            size = len(orjson.dumps(value))
        except (TypeError, orjson.JSONEncodeError):
            size = NESTED_BYTES + 1
        problem = (
            ("nested.invalid", f"is {size // KB} KB (max {NESTED_BYTES // KB} KB)")
            if size > NESTED_BYTES
            else _value(value)
        )
    if problem is not None:
        rule, why = problem
        out.append(
            Violation(rule, f"nested attribute {key!r} {why}; Braze would drop every nested update", field)
        )


def _time(t: Any) -> tuple[str, str] | None:
    if t is None:
        return "nested.time", "has a null '$time'"
    when = _parse_time(t) if type(t) is str else None
    if when is None:
        return "nested.time", f"has '$time' {_short(str(t))!r}, not a Braze time"
    if when.year > MAX_NESTED_YEAR:
        return "nested.time", f"has '$time' {_short(t)!r} after year {MAX_NESTED_YEAR}, which Braze does not store"
    return None


def _value(v: Any) -> tuple[str, str] | None:
    t = type(v)
    if v is None:
        return "nested.invalid", "has a null value inside"
    if t is str:
        return ("nested.invalid", f"has a string of {len(v)} characters (max 255)") if len(v) > MAX_STRING else None
    if t is dict:
        if len(v) == 1 and "$time" in v:
            return _time(v["$time"])
        for k, x in v.items():
            if not isinstance(k, str) or not k or len(k) > MAX_STRING or " " in k or "." in k or k[0] == "$":
                return "nested.invalid", f"has the key {_short(str(k))!r} (no space, '.', leading '$', 1-255 chars)"
            bad = _value(x)
            if bad is not None:
                return bad
    elif t is list:
        for x in v:
            bad = _value(x)
            if bad is not None:
                return bad
    elif t is float and v - v != 0:
        return "nested.invalid", "has a number that is not finite"
    return None


def _ops(v: dict[str, Any]) -> tuple[str, str] | None:
    for op, items in v.items():
        if type(items) is not list:
            return "nested.invalid", f"{op} must be an array"
    for item in v.get("$remove", []) + v.get("$update", []):
        if type(item) is not dict or "$identifier_key" not in item or "$identifier_value" not in item:
            return "nested.invalid", "has a $remove/$update item without '$identifier_key' and '$identifier_value'"
    news = []
    for item in v.get("$update", []):
        if type(item.get("$new_object")) is not dict:
            return "nested.invalid", "has a $update item without a '$new_object' object"
        news.append(item["$new_object"])
    return _value(v.get("$add", [])) or _value(news)

"""How Braze applies one attribute to a profile: null removal, inc, array add/remove, nested objects.

Pure functions over the profile's attribute dict; each returns the data points the write costs (Braze
bills every attribute written, changed or not).
"""

from __future__ import annotations

from typing import Any

from connector.emulator.attribute_rules import FREE_FIELDS
from connector.emulator.rules import format_time, parse_time

_COUNTRIES = {
    "australia": "AU",
    "united states": "US",
    "usa": "US",
    "united kingdom": "GB",
    "france": "FR",
    "germany": "DE",
}


def _count_keys(value: Any) -> int:
    if isinstance(value, dict):
        return sum(1 + (_count_keys(v) if isinstance(v, dict) else 0) for v in value.values()) or 1
    return 1


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge `update` into a copy of `base`, recursing into nested objects."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and set(v) != {"$time"}:
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _unique(values: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for v in values:
        if v in seen:
            seen.remove(v)  # a repeated value moves to the end, like `add`
        seen.append(v)
    return seen


def _array_ops(cur: Any, op: dict[str, list[Any]], max_len: int) -> list[Any]:
    arr = list(cur) if isinstance(cur, list) else []
    for v in op.get("add", []):
        if v in arr:
            arr.remove(v)
        arr.append(v)
    removing = op.get("remove", [])
    arr = [v for v in arr if v not in removing]
    if len(arr) > max_len:
        arr = arr[len(arr) - max_len :]
    return arr


def _object_array_ops(cur: Any, op: dict[str, list[Any]], merge: bool) -> tuple[list[Any], int]:
    arr = list(cur) if isinstance(cur, list) else []
    points = 0
    for item in op.get("$add", []):
        arr.append(item)
        points += _count_keys(item)
    for rm in op.get("$remove", []):
        key, val = rm["$identifier_key"], rm["$identifier_value"]
        arr = [o for o in arr if not (isinstance(o, dict) and o.get(key) == val)]
        points += 1
    for up in op.get("$update", []):
        key, val, new = up["$identifier_key"], up["$identifier_value"], up.get("$new_object", {})
        if not merge or not isinstance(new, dict):
            continue  # Braze: $update needs _merge_objects: true
        arr = [deep_merge(o, new) if isinstance(o, dict) and o.get(key) == val else o for o in arr]
        points += _count_keys(new)
    return arr, points


def _standard_value(key: str, value: Any) -> Any:
    if key == "gender" and isinstance(value, str):
        return value.upper()
    if key == "country" and isinstance(value, str):
        if len(value) == 2 and value.isalpha():
            return value.upper()
        return _COUNTRIES.get(value.strip().lower())  # unmappable countries are stored as null
    return value


def apply_attribute(
    attrs: dict[str, Any], key: str, value: Any, *, merge: bool, max_len: int, standard: bool
) -> int:
    """Apply one attribute write to `attrs` in place; return the data points it costs."""
    cost = 0 if key in FREE_FIELDS else 1
    if value is None:
        attrs.pop(key, None)
        return cost
    if standard:
        attrs[key] = _standard_value(key, value)
        return cost
    if isinstance(value, dict):
        keys = set(value)
        if keys == {"inc"}:
            cur = attrs.get(key)
            base = cur if isinstance(cur, int | float) and not isinstance(cur, bool) else 0
            attrs[key] = base + value["inc"]
            return cost
        if keys and keys <= {"add", "remove"}:
            attrs[key] = _array_ops(attrs.get(key), value, max_len)
            return len(value.get("add", [])) + len(value.get("remove", []))
        if keys and keys <= {"$add", "$remove", "$update"}:
            attrs[key], points = _object_array_ops(attrs.get(key), value, merge)
            return points
        if keys == {"$time"}:
            dt = parse_time(value["$time"])
            attrs[key] = format_time(dt) if dt else value["$time"]
            return cost
        cur = attrs.get(key)
        attrs[key] = deep_merge(cur, value) if merge and isinstance(cur, dict) else value
        return _count_keys(value)
    if isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            arr = _unique(value)
            attrs[key] = arr[len(arr) - max_len :] if len(arr) > max_len else arr
        else:
            attrs[key] = value
        return cost
    attrs[key] = value
    return cost

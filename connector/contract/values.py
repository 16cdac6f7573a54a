"""Checks of attribute values: standard fields, operators, arrays and nested objects."""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from connector.contract.base import (
    _CONTROL,
    _COUNTRY_RE,
    _GENDERS,
    _STANDARD_NAMES,
    _SUBSCRIBE,
    _SUBSCRIPTION_GROUP_STATES,
    KB,
    MAX_STRING,
    Violation,
    _key,
    _short,
    _valid_date,
    _valid_email,
)
from connector.contract.nested import check_nested, is_nested_update

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

_SKIP, _PLAIN, _STD = 0, 1, 2
_SIMPLE_OPS = frozenset(("inc", "add", "remove"))
# Braze's default array length (newest data_types.md; braze-api.md §3.3). /users/track trims a longer array
# to its newest values; /users/track/sync answers 201 and leaves the attribute unchanged: a reject either way.
MAX_ARRAY_VALUES = 500
# Cache of valid keys' classes (a pure function of the key), for top-level and recipient attributes.
_KEY_CLASS: dict[bool, dict[str, int]] = {True: {}, False: {}}


def _classify(k: Any, top: bool, field: str, out: list[Violation]) -> int | None:
    """How an attribute key is checked (skip, plain, standard field), or None after a key.invalid."""
    if k in _CONTROL or (top and k in ("email", "phone")):
        cls = _SKIP
    elif not _key(k, field, out):
        return None
    else:
        cls = _STD if k in _STANDARD else _PLAIN
    if len(_KEY_CLASS[top]) < 10_000:
        _KEY_CLASS[top][k] = cls
    return cls


def _attributes(obj: dict[str, Any], out: list[Violation], prefix: str) -> None:
    top = not prefix
    classes = _KEY_CLASS[top]
    for k, v in obj.items():
        cls = classes.get(k)
        if cls is None:
            cls = _classify(k, top, prefix + k, out)
            if cls is None:
                continue
        if cls == _SKIP or v is None:
            continue
        t = type(v)
        if cls == _STD:  # a standard field takes only its own format, whatever the value's type
            if t is str and len(v) > MAX_STRING:
                out.append(
                    Violation(
                        "string.too_long", f"attribute {k!r} is {len(v)} characters (max 255)", prefix + k
                    )
                )
            else:
                _STANDARD[k](k, v, prefix + k, out)
        elif t is str:
            if len(v) > MAX_STRING:
                out.append(
                    Violation(
                        "string.too_long", f"attribute {k!r} is {len(v)} characters (max 255)", prefix + k
                    )
                )
        elif t is bool or t is int:
            pass
        elif t is dict:
            if v.keys() and v.keys() <= _SIMPLE_OPS:
                _op(k, v, prefix + k, out)
            elif k in _STANDARD_NAMES:  # facebook, twitter: objects, not nested custom attributes
                _nested(v, prefix + k, out)
            else:
                check_nested(k, v, prefix + k, out)
        elif t is list:
            if k not in _STANDARD_NAMES and is_nested_update(v):
                check_nested(k, v, prefix + k, out)
            else:
                _list(v, prefix + k, out, whole=True)
        elif t is float:
            if not math.isfinite(v):
                out.append(
                    Violation("standard_field.number", f"attribute {k!r} is not a finite number", prefix + k)
                )
        elif not isinstance(v, int | float | str):
            _not_json(k, v, prefix + k, out)


def _not_json(k: str, v: Any, field: str, out: list[Violation]) -> None:
    out.append(Violation("nested.invalid", f"attribute {k!r} has a value of type {type(v).__name__}", field))


def _check_standard(rule: str, ok: Any, expected: str) -> Any:
    def check(k: str, v: Any, field: str, out: list[Violation]) -> None:
        if not (isinstance(v, str) and ok(v)):
            out.append(Violation(f"standard_field.{k}", f"{k} {_short(str(v))!r} is not {expected}", field))

    return check


def _current_location(k: str, v: Any, field: str, out: list[Violation]) -> None:
    if type(v) is dict:
        _location(v, field, out)
    else:
        out.append(
            Violation(
                "standard_field.current_location",
                f"current_location {_short(str(v))!r} is not an object with longitude and latitude",
                field,
            )
        )


def _email(k: str, v: Any, field: str, out: list[Violation]) -> None:
    """`email` among a Canvas recipient's attributes (top-level emails are checked as identifiers)."""
    if not _valid_email(v):
        out.append(Violation("email.invalid", f"email {_short(str(v))!r} is not a valid address", field))


def _push_tokens(k: str, v: Any, field: str, out: list[Violation]) -> None:
    """`[{"app_id", "token", "device_id"?}]`, device_id 8-255 bytes (BAD_PUSH_TOKEN_*, BAD_DEVICE_ID)."""
    why = None
    if type(v) is not list or not all(type(t) is dict for t in v):
        why = "is not an array of objects"
    else:
        for t in v:
            device = t.get("device_id")
            if not isinstance(t.get("app_id"), str) or not t["app_id"]:
                why = "has a token without an app_id"
            elif not isinstance(t.get("token"), str) or not t["token"]:
                why = "has a token whose token is not a non-empty string"
            elif device is not None and not (
                isinstance(device, str) and 8 <= len(device.encode("utf-8")) <= MAX_STRING
            ):
                why = "has a device_id that is not 8 to 255 bytes"
            if why:
                break
    if why:
        out.append(Violation("standard_field.push_tokens", f"push_tokens {why}", field))


def _subscription_groups(k: str, v: Any, field: str, out: list[Violation]) -> None:
    """`[{"subscription_group_id", "subscription_state": subscribed|unsubscribed}]` (BAD_SUBSCRIPTION_GROUP_*)."""
    ok = type(v) is list and all(
        type(g) is dict
        and g.get("subscription_state") in _SUBSCRIPTION_GROUP_STATES
        and "subscription_group_id" in g
        for g in v
    )
    if not ok:
        out.append(
            Violation(
                "standard_field.subscription_groups",
                "subscription_groups is not an array of objects with a subscription_group_id and a "
                "subscription_state of subscribed or unsubscribed",
                field,
            )
        )
        return
    bad = next((g["subscription_group_id"] for g in v if not _is_uuid(g["subscription_group_id"])), None)
    if bad is not None:
        out.append(
            Violation(
                "standard_field.subscription_groups",
                f"subscription_group_id {_short(str(bad))!r} is not a subscription group UUID such as "
                "'3d1e6b4c-0f2a-4c1e-9a7b-5e8d2f6c1a90' (Braze: BAD_SUBSCRIPTION_GROUP_ID)",
                field,
            )
        )


def _is_uuid(v: Any) -> bool:
    return isinstance(v, str) and bool(_UUID_RE.match(v))


# Standard profile fields with a format Braze enforces (braze-api.md §3.2, §1.5), by key. Any value of
# such a key (string, number, object, list) goes to its check; None removes the field and is not checked.
_STANDARD = {
    "gender": _check_standard("gender", lambda v: v in _GENDERS, "one of M, F, O, N, P"),
    "dob": _check_standard("dob", _valid_date, "a calendar date YYYY-MM-DD"),
    "email_subscribe": _check_standard(
        "email_subscribe", lambda v: v in _SUBSCRIBE, "opted_in, subscribed or unsubscribed"
    ),
    "push_subscribe": _check_standard(
        "push_subscribe", lambda v: v in _SUBSCRIBE, "opted_in, subscribed or unsubscribed"
    ),
    "country": _check_standard(
        "country", lambda v: bool(_COUNTRY_RE.match(v)), "an ISO-3166 alpha-2 code such as 'FR'"
    ),
    "current_location": _current_location,
    "push_tokens": _push_tokens,
    "subscription_groups": _subscription_groups,
    "email": _email,  # reached only for recipient attributes: top-level email is an identifier key
}


def _location(v: dict[str, Any], field: str, out: list[Violation]) -> None:
    for k in ("longitude", "latitude"):
        x = v.get(k)
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
            out.append(
                Violation("standard_field.current_location", f"current_location needs a numeric {k}", field)
            )
            return


def _op(k: str, v: dict[str, Any], field: str, out: list[Violation]) -> None:
    if "inc" in v:
        n = v["inc"]
        if isinstance(n, bool) or not isinstance(n, int | float) or not math.isfinite(n):
            out.append(
                Violation("standard_field.inc", f"inc of {k!r} needs a number, got {_short(repr(n))}", field)
            )
    for op in ("add", "remove"):
        if op in v:
            if not isinstance(v[op], list):
                out.append(Violation("nested.invalid", f"{op} of {k!r} needs a list", field))
            else:
                _list(v[op], field, out)


def _list(items: list[Any], field: str, out: list[Violation], *, whole: bool = False) -> None:
    """A scalar array: each string at most 255 characters; set as a whole (`whole`), at most 500 distinct
    values and 100 KB (an `add` to a full array is not over a limit: Braze drops the oldest value)."""
    for x in items:
        if isinstance(x, str):
            if len(x) > MAX_STRING:
                out.append(
                    Violation(
                        "string.too_long", f"an item of {field!r} is {len(x)} characters (max 255)", field
                    )
                )
                return
        elif isinstance(x, dict):
            _nested(x, field, out)
            return
    if not whole or len(items) <= 50:
        return
    try:
        distinct = len(set(items))
    except TypeError:  # an unhashable item (a list inside): only the size applies
        distinct = 0
    if distinct > MAX_ARRAY_VALUES:
        out.append(
            Violation(
                "array.too_long",
                f"{field!r} has {distinct} distinct values (Braze keeps at most {MAX_ARRAY_VALUES})",
                field,
            )
        )
    elif len(orjson.dumps(items)) > 100 * KB:
        out.append(Violation("array.too_long", f"{field!r} is over 100 KB", field))


def _nested(v: dict[str, Any], field: str, out: list[Violation], limit: int = 100 * KB) -> None:
    bad = _nested_keys(v)
    if bad is not None:
        out.append(
            Violation(
                "nested.invalid", f"nested key {_short(bad)!r} in {field!r} has a space, '.' or '$'", field
            )
        )
        return
    try:
        size = len(orjson.dumps(v))
    except (TypeError, orjson.JSONEncodeError):
        out.append(Violation("nested.invalid", f"{field!r} is not JSON-serialisable", field))
        return
    if size > limit:
        out.append(Violation("nested.invalid", f"{field!r} is {size // KB} KB (max {limit // KB} KB)", field))


def _nested_keys(v: Any) -> str | None:
    """The first invalid nested key, or a too-long nested string (returned as the key), else None."""
    if isinstance(v, dict):
        for k, x in v.items():
            if (
                not isinstance(k, str)
                or not k
                or len(k) > MAX_STRING
                or " " in k
                or "." in k
                or (k[0] == "$" and k != "$time")
            ):
                return str(k)
            if isinstance(x, str) and len(x) > MAX_STRING:
                return f"{k} (value over 255 characters)"
            if isinstance(x, dict | list):
                bad = _nested_keys(x)
                if bad is not None:
                    return bad
    elif isinstance(v, list):
        for x in v:
            if isinstance(x, str) and len(x) > MAX_STRING:
                return "(list item over 255 characters)"
            if isinstance(x, dict | list):
                bad = _nested_keys(x)
                if bad is not None:
                    return bad
    return None

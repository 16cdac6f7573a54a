"""Column-wise pre-checks of the contract rules: which rows might break a rule, found once per column.

Each function returns the row indices whose objects `check_object` could reject because of one column
(a "suspect" row); every other row is known to pass those rules. The checks are conservative: a row may be
suspect and still pass, never the other way round. The caller runs the reference `check_object` on
suspect rows only, so rule ids, reasons and their order stay exactly those of `check_object`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from connector.arrow_values import array
from connector.contract import arrays
from connector.contract.base import (
    _CONTROL,
    _COUNTRY_RE,
    _GENDERS,
    _ISO_MS_RE,
    _PHONE_RE,
    _RESERVED,
    _SUBSCRIBE,
    CURRENCIES,
    MAX_PROPERTIES,
    MAX_STRING,
    Violation,
    _key,
    _valid_date,
    _valid_email,
)
from connector.contract.characters import control_rows
from connector.contract.values import _STANDARD

Rows = set[int]
Values: TypeAlias = Sequence[Any] | pa.Array  # a column's cast values: a Python list, or the Arrow array they come from
_SETS = {"gender": _GENDERS, "email_subscribe": _SUBSCRIBE, "push_subscribe": _SUBSCRIBE}
_FORMATS: dict[str, Callable[[str], object]] = {"dob": _valid_date, "country": _COUNTRY_RE.match}
IDENTIFIER_KEYS = frozenset(("external_id", "user_alias", "braze_id", "email", "phone"))


def _present(values: Sequence[Any], keep_null: bool) -> Rows:
    """Rows where a key is in the object (its value is not None, or nulls are kept)."""
    if keep_null:
        return set(range(len(values)))
    return {i for i, v in enumerate(values) if v is not None}


def _valid_key(k: str) -> bool:
    scratch: list[Violation] = []
    return _key(k, k, scratch)


# RE2 (ASCII) patterns matching a subset of what the Python patterns of base.py match: a string they accept
# passes the Python check too; anything else is left to the per-value Python check.
_ISO_MS_RE2 = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"
_EMAIL_RE2 = r"^[!-?A-~]+@[!-?A-~]+\.[!-\-/-?A-~]+$"  # printable ASCII without '@' (and '.' at the end)
_NONE = type(None)


def _all_match(values: Sequence[Any], pattern: str) -> bool:
    """True when every value is a str matched by the RE2 pattern (one vectorised pass)."""
    if not values:
        return True
    try:
        arr = array(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return arr.null_count == 0 and bool(pc.all(pc.match_substring_regex(arr, pattern)).as_py())


_STRINGS = frozenset((str, _NONE))
_NUMBERS = frozenset((int, bool, float, _NONE))


def _all_strings_fit(values: Sequence[Any], types: set[type], low: int = 0, high: int = MAX_STRING) -> bool:
    """True when every value is None or a str with low <= len <= high (C-level loops only)."""
    if not types <= _STRINGS:
        return False
    lengths = list(map(len, filter(None, values)))  # drops None and "" (len 0)
    if low > 0 and (_NONE in types or "" in values):
        return False
    return not lengths or (min(lengths) >= low and max(lengths) <= high)


def _all_finite(values: Sequence[Any], types: set[type]) -> bool:
    """True when every value is None, int, bool or a finite float (C-level loops only)."""
    if not types <= _NUMBERS:
        return False
    if float not in types:
        return True
    try:
        return all(map(math.isfinite, filter(None, values)))  # filter drops None, 0, 0.0, False
    except OverflowError:  # an int beyond float range: let the per-value check decide
        return False


def _string_rows(values: Sequence[Any], ok: Callable[[str], Any]) -> Rows:
    """Rows whose value is neither None nor a str passing `ok`, testing each distinct string once."""
    if not set(map(type, values)) <= _STRINGS:
        return {i for i, v in enumerate(values) if v is not None and not (type(v) is str and ok(v))}
    distinct = set(values)
    distinct.discard(None)
    bad = {v for v in distinct if not ok(v)}
    return {i for i, v in enumerate(values) if v in bad} if bad else set()


def _not_scalar(values: Sequence[Any]) -> Rows:
    """Rows whose value is not None, int, bool, a string of at most 255 characters or a finite float."""
    types = set(map(type, values))
    if _all_strings_fit(values, types) or _all_finite(values, types):
        return set()
    return {
        i
        for i, v in enumerate(values)
        if not (
            v is None
            or ((t := type(v)) is str and len(v) <= MAX_STRING)
            or t is int
            or t is bool
            or (t is float and v - v == 0)
        )
    }


def _list(values: Values) -> Sequence[Any]:
    return values.to_pylist() if isinstance(values, pa.Array) else values


def attribute_rows(key: str, values: Values, keep_null: bool) -> Rows:
    """Suspect rows for one top-level attribute (the `_attributes` part of check_object)."""
    if key in _CONTROL or key in ("email", "phone"):
        return set()  # not checked as attributes (identifiers are checked by identifier_rows)
    if isinstance(values, pa.Array):
        if not _valid_key(key):
            return arrays.present(values, keep_null)
        if key in _SETS:
            found = arrays.outside(values, _SETS[key])
        elif key in _FORMATS:
            ok = _FORMATS[key]
            found = arrays.distinct_rows(values, lambda v: len(v) <= MAX_STRING and ok(v))
        elif key in _STANDARD:
            found = None
        else:
            found = arrays.not_scalar(values)
        if found is not None:
            return found
        values = values.to_pylist()
    if not _valid_key(key):
        return _present(values, keep_null)
    if key in _SETS:
        return _string_rows(values, _SETS[key].__contains__)
    if key in _FORMATS:
        ok = _FORMATS[key]
        return _string_rows(values, lambda v: len(v) <= MAX_STRING and ok(v))
    if key in _STANDARD:  # current_location, push_tokens, subscription_groups: objects, left to check_object
        return {i for i, v in enumerate(values) if v is not None}
    return _not_scalar(values)


def identifier_rows(sources: dict[str, list[Values]], n: int) -> Rows:
    """Suspect rows for `_identifiers` and control characters, from every value list feeding an identifier
    key of the objects."""
    lists: dict[str, list[Sequence[Any]]] = {}
    bad: Rows = set()
    for key, columns in sources.items():
        for values in columns:
            found = arrays.control_rows(values) if isinstance(values, pa.Array) else None
            if found is None:
                lists.setdefault(key, []).append(_list(values))
            else:
                bad |= found
    found = _external_id_arrow(sources)
    if found is not None:
        return bad | found | control_rows(lists)
    full = {key: [_list(v) for v in columns] for key, columns in sources.items()}
    return bad | _identifier_rows(full, n) | control_rows(lists)


def _external_id_arrow(sources: dict[str, list[Values]]) -> Rows | None:
    """_identifier_rows over Arrow arrays for the common case: an external_id, maybe an email attribute."""
    if not set(sources) <= {"external_id", "email"} or any(len(v) != 1 for v in sources.values()):
        return None
    ids, email = sources.get("external_id", [None])[0], sources.get("email", [None])[0]
    if not isinstance(ids, pa.Array) or not (email is None or isinstance(email, pa.Array)):
        return None
    found = arrays.sized(ids, 1, 246)
    emails: Rows | None = set() if email is None else arrays.emails(email, _EMAIL_RE2)
    return None if found is None or emails is None else found | emails


def _identifier_rows(sources: dict[str, list[Sequence[Any]]], n: int) -> Rows:
    everything = set(range(n))
    if any(len(v) > 1 for v in sources.values()):
        return everything  # a key fed twice: the object holds one of the values, leave it to check_object
    primaries = [k for k in ("external_id", "user_alias", "braze_id") if k in sources]
    if len(primaries) > 1:
        return everything
    email = sources["email"][0] if "email" in sources else None
    if not primaries:
        phone = sources["phone"][0] if "phone" in sources else [None] * n
        emails = email if email is not None else [None] * n
        phone_ok = _PHONE_RE.match
        return {
            i
            for i, (e, p) in enumerate(zip(emails, phone, strict=True))
            if not (
                (e is not None and type(e) is str and _valid_email(e))
                or (e is None and type(p) is str and phone_ok(p))
            )
        }
    values = sources[primaries[0]][0]
    if primaries[0] == "external_id":
        if _all_strings_fit(values, set(map(type, values)), 1, 246):
            bad = set()
        else:
            bad = {i for i, x in enumerate(values) if not (type(x) is str and 0 < len(x) <= 246)}
    elif primaries[0] == "user_alias":
        bad = {i for i, x in enumerate(values) if not _alias_ok(x)}
    else:
        bad = {i for i, x in enumerate(values) if x is None}
    if email is not None and not (
        (types := set(map(type, email))) == {str}
        and _all_strings_fit(email, types)
        and _all_match(email, _EMAIL_RE2)
    ):
        bad.update(
            i for i, e in enumerate(email) if e is not None and not (type(e) is str and _valid_email(e))
        )
    return bad


def _alias_ok(x: Any) -> bool:
    if type(x) is not dict:
        return False
    name, label = x.get("alias_name"), x.get("alias_label")
    return (
        type(name) is str
        and type(label) is str
        and 0 < len(name) <= MAX_STRING
        and 0 < len(label) <= MAX_STRING
    )


def event_field_rows(name: str, values: Values, keep_null: bool) -> Rows:
    """Suspect rows for one top-level field of an event or purchase object (name, time, price, ...)."""
    if isinstance(values, pa.Array):
        found = _event_field_arrow(name, values)
        if found is not None:
            return found
        values = values.to_pylist()
    types = set(map(type, values))
    if name in ("name", "product_id"):
        if _NONE not in types:
            return _string_rows(values, lambda v: len(v) <= MAX_STRING and v.strip())
        return {
            i for i, v in enumerate(values) if not (type(v) is str and len(v) <= MAX_STRING and v.strip())
        }
    if name == "time":
        full = _ISO_MS_RE.fullmatch
        if types == {str} and _all_match(values, _ISO_MS_RE2):
            return set()
        return {i for i, v in enumerate(values) if not (type(v) is str and full(v))}
    if name == "currency":
        if types == {str} and set(values) <= CURRENCIES:
            return set()
        return {i for i, v in enumerate(values) if not (type(v) is str and v in CURRENCIES)}
    if name == "price":
        if _NONE not in types and bool not in types and _all_finite(values, types):
            return set()
        return {i for i, v in enumerate(values) if not ((t := type(v)) is int or (t is float and v - v == 0))}
    if name == "quantity":
        return {
            i
            for i, v in enumerate(values)
            if not ((v is None and not keep_null) or (type(v) is int and 1 <= v <= 100))
        }
    if name == "app_id":
        return set()
    return set(range(len(values)))  # a field this pre-check does not know


def _event_field_arrow(name: str, arr: pa.Array) -> Rows | None:
    """event_field_rows over an Arrow array, or None to use the list check."""
    if name in ("name", "product_id"):
        return arrays.names(arr)
    if name == "time":
        return set() if arrays.iso_ms(arr) else None
    if name == "currency":
        found = arrays.outside(arr, CURRENCIES)
        return None if found is None or arr.null_count else found
    if name == "price" and not arr.null_count and (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        return arrays.not_scalar(arr)
    if name == "app_id":
        return set()
    return None


def property_rows(
    kind: str, js: Sequence[Any] | None, columns: Sequence[tuple[str, Values]], n: int
) -> Rows:
    """Suspect rows for the properties of events and purchases: JSON objects go to check_object."""
    if len(columns) > MAX_PROPERTIES:
        return set(range(n))
    bad: Rows = set() if js is None else {i for i, d in enumerate(js) if d}
    reserved = _RESERVED[kind]
    for name, values in columns:
        if not _valid_key(name) or name in reserved:
            bad |= arrays.present(values, False) if isinstance(values, pa.Array) else _present(values, False)
        else:
            found = arrays.not_scalar(values) if isinstance(values, pa.Array) else None
            bad |= found if found is not None else _not_scalar(_list(values))
    return bad

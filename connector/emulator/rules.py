"""Braze's object rules as the emulator enforces them: identifiers, formats, sizes and error texts.

Attributes objects (standard fields, custom attributes, subscription groups) are in attribute_rules.py.

The emulator is an independent oracle, so these rules are written from ../shared/braze-api.md and the
recorded responses, not imported from the connector. Error `type` strings are prose, like the real API.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

MAX_TRACK_OBJECTS = 75
MAX_TRACK_OBJECTS_MAU = 50  # MAU CY 24-25 contracts (post_user_track.md), the `combined50` batching
MAX_RECIPIENTS = 50
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_STRING = 255
MAX_EXTERNAL_ID_BYTES = 987
MAX_PROPERTIES = 256
EVENT_PROPERTIES_BYTES = 100 * 1024
PURCHASE_PROPERTIES_BYTES = 50 * 1024
NESTED_BYTES = 100 * 1024
CONTEXT_BYTES = 50 * 1024

MSG_NO_VALID = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."
MSG_MAX_INPUT = "Max Input Length Exceeded"
MSG_MAX_RECIPIENTS = "The max number of external_ids and aliases per request was exceeded"
MSG_NO_RECIPIENTS = "No Recipients"
MALFORMED_JSON_BODY: dict[str, str] = {
    "error": "\nProblem:\n  message body does not match declared format\nResolution:\n  when specifying "
    "application/json as content-type, you must pass valid application/json in the request's 'body' "
}

ERR_IDENTIFIER = "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required"
ERR_MULTIPLE = "Only one of 'external_id', 'braze_id', or 'user_alias' may be provided per object"
ERR_EMAIL = "The value provided for the 'email' field is not a valid email."
ERR_PHONE = "The value provided for the 'phone' field is not a valid phone number."

PRIMARY_KEYS = ("external_id", "user_alias", "braze_id")
CONTROL_KEYS = frozenset(
    {
        "external_id",
        "user_alias",
        "braze_id",
        "_update_existing_only",
        "push_token_import",
        "_merge_objects",
        "app_id",
    }
)
RESERVED_EVENT_KEYS = frozenset({"time", "event_name"})
RESERVED_PURCHASE_KEYS = frozenset({"time", "event_name", "product_id", "quantity", "price", "currency"})

CURRENCIES = frozenset(
    (
        "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD "
        "CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD "
        "GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT "
        "LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR "
        "NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD "
        "SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD "
        "XOF XPF YER ZAR ZMW ZWL BTC"
    ).split()
)

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE_RE = re.compile(r"^\+?[1-9]\d{6,14}$")
_COLON_MS_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d):(\d{3})(Z|[+-]\d\d:?\d\d)?$")
_STRPTIME_FORMATS = ("%Y-%m-%d %H:%M:%S %z", "%m/%d/%Y", "%a %b %d %H:%M:%S %Z %Y", "%Y-%m-%dT%H:%M:%S%z")


def parse_time(value: Any) -> datetime | None:
    """Parse a Braze time string (ISO 8601 and the documented variants) to an aware UTC datetime."""
    if not isinstance(value, str) or not value.strip():
        return None
    return _parse_time(value)


@lru_cache(maxsize=4096)
def _parse_time(value: str) -> datetime | None:
    text = value.strip()
    dt: datetime | None = None
    m = _COLON_MS_RE.match(text)
    if m:
        text = f"{m.group(1)}.{m.group(2)}{m.group(3) or ''}"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        for fmt in _STRPTIME_FORMATS:
            try:
                dt = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 is past year 9999 in UTC
        return None


@lru_cache(maxsize=4096)
def format_time(dt: datetime) -> str:
    """Format as Braze echoes times: `YYYY-MM-DDTHH:MM:SS.mmmZ` (sorts lexicographically).

    The year is zero-padded by hand: `strftime("%Y")` gives "999" for year 999 on glibc, which broke both
    the ISO shape and the string min/max that aggregates event and purchase first/last.
    """
    return f"{dt.year:04d}" + dt.strftime("-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def clamp_time(value: Any, now: datetime) -> str:
    """Parse a valid time and clamp future times to now (Braze's documented behaviour)."""
    dt = parse_time(value)
    assert dt is not None  # callers validate first
    return format_time(min(dt, now))


def json_size(value: Any) -> int:
    """Size in bytes of a value serialised as compact JSON."""
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return MAX_BODY_BYTES


def external_id_key(value: Any) -> str:
    """Braze accepts numeric external ids (recorded cassettes); store every id as its string form."""
    return str(value)


def primary_keys(obj: dict[str, Any]) -> list[str]:
    """The primary identifier keys present (non-null) on an object."""
    return [k for k in PRIMARY_KEYS if obj.get(k) is not None]


def _check_identifier(
    obj: dict[str, Any], *, lookup_keys: tuple[str, ...] = ("email", "phone")
) -> str | None:
    prim = primary_keys(obj)
    if len(prim) > 1:
        return ERR_MULTIPLE
    if not prim:
        present = [k for k in lookup_keys if obj.get(k) not in (None, "")]
        if not present:
            return ERR_IDENTIFIER
        if "email" in present:
            return None if valid_email(obj["email"]) else ERR_EMAIL
        return None if isinstance(obj["phone"], str) and _PHONE_RE.match(obj["phone"]) else ERR_PHONE
    key = prim[0]
    val = obj[key]
    if key == "external_id":
        if isinstance(val, bool) or not isinstance(val, str | int) or str(val) == "":
            return "'external_id' must be a non-empty string"
        if len(str(val).encode("utf-8")) > MAX_EXTERNAL_ID_BYTES:
            return f"'external_id' must be at most {MAX_EXTERNAL_ID_BYTES} bytes"
    elif key == "braze_id":
        if not isinstance(val, str) or not val:
            return "'braze_id' must be a non-empty string"
    else:
        if not (
            isinstance(val, dict)
            and isinstance(val.get("alias_name"), str)
            and isinstance(val.get("alias_label"), str)
            and val["alias_name"]
            and val["alias_label"]
        ):
            return "'user_alias' must contain 'alias_name' and 'alias_label' strings"
    return None


def valid_email(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_STRING and bool(_EMAIL_RE.match(value))


def check_object(obj: Any, what: str) -> str | None:
    """A JSON object with a valid identifier, or the error type."""
    if not isinstance(obj, dict):
        return f"{what} object must be a JSON object"
    return _check_identifier(obj)


def _check_time(obj: dict[str, Any]) -> str | None:
    if obj.get("time") is None:
        return "'time' is required"
    return None if parse_time(obj["time"]) is not None else "'time' is not valid"


def _check_properties(props: Any, reserved: frozenset[str], max_bytes: int) -> str | None:
    if props is None:
        return None
    if not isinstance(props, dict):
        return "'properties' must be an object"
    if len(props) > MAX_PROPERTIES:
        return f"'properties' has more than {MAX_PROPERTIES} keys"
    for k, v in props.items():
        if not k or len(k) > MAX_STRING or k.startswith("$"):
            return f"'{k[:64]}' is not a valid property name"
        if k in reserved:
            return f"'{k}' is a reserved property name"
        if isinstance(v, str) and len(v) > MAX_STRING:
            return f"property '{k}' is longer than {MAX_STRING} characters"
    if json_size(props) > max_bytes:
        return f"'properties' is larger than {max_bytes // 1024} KB"
    return None


def check_event(obj: Any) -> str | None:
    """Validate one event object; return the error type or None."""
    err = check_object(obj, "Event")
    if err:
        return err
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return "'name' is required"
    if len(name) > MAX_STRING:
        return f"'name' is longer than {MAX_STRING} characters"
    return _check_time(obj) or _check_properties(
        obj.get("properties"), RESERVED_EVENT_KEYS, EVENT_PROPERTIES_BYTES
    )


def check_purchase(obj: Any) -> str | None:
    """Validate one purchase object; return the error type or None."""
    err = check_object(obj, "Purchase")
    if err:
        return err
    pid = obj.get("product_id")
    if isinstance(pid, bool) or not isinstance(pid, str | int) or str(pid) == "":
        return "'product_id' is required"
    if len(str(pid)) > MAX_STRING:
        return f"'product_id' is longer than {MAX_STRING} characters"
    if obj.get("currency") not in CURRENCIES:
        return "'currency' is not valid"
    price = obj.get("price")
    if isinstance(price, bool) or not isinstance(price, int | float):
        return "'price' is not valid"
    qty = obj.get("quantity", 1)
    if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= 100:
        return "'quantity' is not valid"
    return _check_time(obj) or _check_properties(
        obj.get("properties"), RESERVED_PURCHASE_KEYS, PURCHASE_PROPERTIES_BYTES
    )

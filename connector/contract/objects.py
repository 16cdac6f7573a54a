"""check_object: identifiers, events, purchases, Canvas recipients and Live Activity updates."""

from __future__ import annotations

import math
from typing import Any

import orjson

from connector.contract.base import (
    _ISO_MS_RE,
    _PHONE_RE,
    _PRIMARY,
    _PRIORITIZATION,
    _PROPS_LIMIT,
    _RESERVED,
    CURRENCIES,
    KB,
    MAX_EXTERNAL_ID_BYTES,
    MAX_PROPERTIES,
    MAX_STRING,
    Violation,
    _key,
    _short,
    _valid_email,
    _valid_time,
)
from connector.contract.characters import check_identifier_characters
from connector.contract.values import _attributes, _nested_keys
from connector.records import ObjectKind


def check_object(kind: ObjectKind, obj: dict[str, Any]) -> list[Violation]:
    """Every Braze rule the object breaks, most important first (empty list = acceptable)."""
    out: list[Violation] = []
    if kind == "live_activity":
        _live_activity(obj, out)
        return out
    if kind == "canvas_trigger":
        _canvas(obj, out)
        check_identifier_characters(obj, out)
        return out
    _identifiers(obj, out)
    check_identifier_characters(obj, out)
    if kind == "attributes":
        _attributes(obj, out, "")
    else:
        _event(kind, obj, out)
    return out


def _identifiers(obj: dict[str, Any], out: list[Violation]) -> None:
    ext = obj.get("external_id")
    if ext is not None and "user_alias" not in obj and "braze_id" not in obj:
        primaries = ["external_id"]  # the common case, without building a list comprehension
    else:
        primaries = [k for k in _PRIMARY if obj.get(k) is not None]
    if len(primaries) > 1:
        out.append(
            Violation(
                "identifier.multiple", f"only one primary identifier allowed, got {', '.join(primaries)}"
            )
        )
        return
    if ext is not None and (type(ext) is not str or len(ext) > 246 or not ext):
        _external_id(ext, "external_id", out)
    alias = obj.get("user_alias")
    if alias is not None:
        _alias(alias, out)
    email, phone = obj.get("email"), obj.get("phone")
    if not primaries:
        if email is None and phone is None:
            out.append(
                Violation(
                    "identifier.missing", "the object has no identifier value (the identifier cell is empty)"
                )
            )
        elif email is None and (not isinstance(phone, str) or not _PHONE_RE.match(phone)):
            out.append(
                Violation(
                    "phone.invalid", f"phone {_short(str(phone))!r} is not E.164 (+ and 2-15 digits)", "phone"
                )
            )
    if email is not None and not _valid_email(email):
        out.append(
            Violation("email.invalid", f"email {_short(str(email))!r} is not a valid address", "email")
        )


def _external_id(ext: Any, field: str, out: list[Violation]) -> None:
    if not isinstance(ext, str) or not ext:
        out.append(Violation("identifier.missing", f"{field} must be a non-empty string", field))
    elif len(ext) > 246 and len(ext.encode("utf-8")) > MAX_EXTERNAL_ID_BYTES:
        out.append(
            Violation("external_id.too_long", f"{field} is {len(ext.encode())} bytes (max 987)", field)
        )


def _alias(alias: Any, out: list[Violation]) -> None:
    if not isinstance(alias, dict) or not all(
        isinstance(alias.get(k), str) and alias[k] for k in ("alias_name", "alias_label")
    ):
        out.append(
            Violation(
                "identifier.missing", "user_alias needs a non-empty alias_name and alias_label", "user_alias"
            )
        )
        return
    for k in ("alias_name", "alias_label"):
        if len(alias[k]) > MAX_STRING:
            out.append(
                Violation(
                    "string.too_long", f"user_alias.{k} is {len(alias[k])} characters (max 255)", "user_alias"
                )
            )


def _time(obj: dict[str, Any], key: str, out: list[Violation], required: bool = True) -> None:
    t = obj.get(key)
    if t is None:
        if required:
            out.append(Violation("time.missing", f"{key} is required", key))
    elif type(t) is not str or not (_ISO_MS_RE.fullmatch(t) or _valid_time(t)):
        out.append(
            Violation("time.invalid", f"{key} {_short(str(t))!r} is not ISO 8601 or a Braze time format", key)
        )


def _required_string(obj: dict[str, Any], key: str, missing_rule: str, out: list[Violation]) -> None:
    """A required non-blank string of at most 255 characters (event name, product_id)."""
    v = obj.get(key)
    if not isinstance(v, str) or not v.strip():
        out.append(Violation(missing_rule, f"{key} is missing or empty", key))
    elif len(v) > MAX_STRING:
        out.append(Violation("string.too_long", f"{key} is {len(v)} characters (max 255)", key))


def _event(kind: str, obj: dict[str, Any], out: list[Violation]) -> None:
    if kind == "events":
        _required_string(obj, "name", "event.name_missing", out)
    else:
        _purchase(obj, out)
    _time(obj, "time", out)
    props = obj.get("properties")
    if props is not None:
        _properties(kind, props, out)


def _purchase(obj: dict[str, Any], out: list[Violation]) -> None:
    _required_string(obj, "product_id", "purchase.product_id_missing", out)
    cur = obj.get("currency")
    if cur not in CURRENCIES:
        out.append(
            Violation(
                "purchase.currency",
                f"currency {_short(str(cur))!r} is not an ISO 4217 code such as 'USD'",
                "currency",
            )
        )
    price = obj.get("price")
    if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price):
        out.append(
            Violation("purchase.price", f"price {_short(str(price))!r} is not a finite number", "price")
        )
    if "quantity" in obj:
        q = obj["quantity"]
        if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= 100:
            out.append(
                Violation(
                    "purchase.quantity", f"quantity {_short(str(q))!r} is not an integer 1..100", "quantity"
                )
            )


# Property keys already seen valid and not reserved, per kind (validity is a pure function of the key).
_GOOD_PROPERTY_KEYS: dict[str, set[str]] = {"events": set(), "purchases": set()}


def _properties(kind: str, props: Any, out: list[Violation]) -> None:
    if not isinstance(props, dict):
        out.append(Violation("nested.invalid", "properties must be an object", "properties"))
        return
    if len(props) > MAX_PROPERTIES:
        out.append(Violation("properties.too_many", f"{len(props)} properties (max 256)", "properties"))
    reserved = _RESERVED[kind]
    good = _GOOD_PROPERTY_KEYS[kind]
    nested = False
    for k, v in props.items():
        if k not in good:
            if not _key(k, f"properties.{k}", out):
                continue
            if k in reserved:
                out.append(
                    Violation("key.reserved", f"property key {k!r} is reserved by Braze", f"properties.{k}")
                )
                continue
            if len(good) < 10_000:
                good.add(k)
        t = type(v)
        if t is str:
            if len(v) > MAX_STRING:
                field = f"properties.{k}"
                out.append(
                    Violation("string.too_long", f"property {k!r} is {len(v)} characters (max 255)", field)
                )
        elif t is dict or t is list:
            nested = True
            field = f"properties.{k}"
            bad = _nested_keys(v)
            if bad is not None:
                out.append(
                    Violation(
                        "nested.invalid",
                        f"nested key {_short(bad)!r} in property {k!r} is not allowed",
                        field,
                    )
                )
        elif t is float and not math.isfinite(v):
            out.append(
                Violation("nested.invalid", f"property {k!r} is not a finite number", f"properties.{k}")
            )
    if nested:
        size = len(orjson.dumps(props))
        limit = _PROPS_LIMIT[kind]
        if size > limit:
            out.append(
                Violation(
                    "properties.too_large",
                    f"properties are {size // KB} KB (max {limit // KB} KB)",
                    "properties",
                )
            )


def _canvas(obj: dict[str, Any], out: list[Violation]) -> None:
    ids = [k for k in ("external_user_id", "user_alias", "braze_id", "email") if obj.get(k) is not None]
    if not ids:
        out.append(Violation("identifier.missing", "the recipient has no identifier value"))
    elif len(ids) > 1:
        out.append(
            Violation(
                "identifier.multiple", f"a recipient takes exactly one identifier, got {', '.join(ids)}"
            )
        )
    if obj.get("external_user_id") is not None:
        _external_id(obj["external_user_id"], "external_user_id", out)
    if obj.get("user_alias") is not None:
        _alias(obj["user_alias"], out)
    if obj.get("user_alias") is not None and obj.get("send_to_existing_only") is not None:
        out.append(
            Violation(
                "canvas.alias_send_to_existing_only",
                "'send_to_existing_only' cannot be used with user aliases (Braze refuses the whole request)",
                "send_to_existing_only",
            )
        )
    prio = obj.get("prioritization")
    if obj.get("email") is not None:
        if not _valid_email(obj["email"]):
            out.append(
                Violation(
                    "email.invalid", f"email {_short(str(obj['email']))!r} is not a valid address", "email"
                )
            )
        if not prio:
            out.append(
                Violation(
                    "canvas.prioritization_missing",
                    "an email recipient needs prioritization",
                    "prioritization",
                )
            )
            prio = None
    if prio is not None:
        _prioritization(prio, out)
    attrs = obj.get("attributes")
    if obj.get("send_to_existing_only") is False and not isinstance(attrs, dict):
        out.append(
            Violation(
                "canvas.attributes_missing",
                "send_to_existing_only false needs an attributes object",
                "attributes",
            )
        )
    if isinstance(attrs, dict):
        if attrs.get("subscription_groups") is not None:
            out.append(
                Violation(
                    "canvas.subscription_groups",
                    "subscription_groups among a Canvas recipient's attributes are not applied by Braze (\"by "
                    "default, subscription groups cannot be updated this way\"); set them with an attributes stream",
                    "attributes.subscription_groups",
                )
            )
        _attributes(attrs, out, "attributes.")
    if obj.get("context") is not None and obj.get("canvas_entry_properties") is not None:
        out.append(
            Violation(
                "canvas.properties_conflict",
                "a recipient takes its Canvas entry properties as either context or canvas_entry_properties, "
                "not both",
                "canvas_entry_properties",
            )
        )
    for key in ("context", "canvas_entry_properties", "trigger_properties"):
        ctx = obj.get(key)
        if ctx is None:
            continue
        if not isinstance(ctx, dict):
            out.append(Violation("nested.invalid", f"{key} must be an object", key))
        else:
            size = len(orjson.dumps(ctx))
            if size > 50 * KB:
                out.append(
                    Violation("canvas.context_too_large", f"{key} is {size // KB} KB (max 50 KB)", key)
                )


def _prioritization(prio: Any, out: list[Violation]) -> None:
    """An ordered, non-empty list of Braze's values, `identified` and `unidentified` not both."""
    if not isinstance(prio, list) or not prio:
        why = "is not a non-empty list"
    elif not all(isinstance(p, str) and p in _PRIORITIZATION for p in prio):
        bad = next(p for p in prio if not (isinstance(p, str) and p in _PRIORITIZATION))
        why = (
            f"has {_short(str(bad))!r}, not one of identified, unidentified, most_recently_updated, "
            "least_recently_updated"
        )
    elif "identified" in prio and "unidentified" in prio:
        why = "has both identified and unidentified"
    else:
        return
    out.append(Violation("canvas.prioritization_invalid", f"prioritization {why}", "prioritization"))


def _live_activity(obj: dict[str, Any], out: list[Violation]) -> None:
    for k in ("app_id", "activity_id"):
        if not isinstance(obj.get(k), str) or not obj[k]:
            out.append(Violation("live_activity.missing_field", f"{k} is required", k))
    if not isinstance(obj.get("content_state"), dict):
        out.append(
            Violation("live_activity.missing_field", "content_state (an object) is required", "content_state")
        )
    for k in ("dismissal_date", "stale_date"):
        _time(obj, k, out, required=False)
    end = obj.get("end_activity")
    if end is not None and not isinstance(end, bool):
        out.append(
            Violation("live_activity.missing_field", "end_activity must be true or false", "end_activity")
        )
    if "notification" in obj:
        _notification(obj["notification"], out)


APPLE_PUSH_BYTES = 1912  # "400 Apple Push Length Exceeded: JSON payload is more than 1,912 bytes" (errors.md)


def _notification(push: Any, out: list[Violation]) -> None:
    """A Live Activity `notification` is an apple_push object of at most 1,912 bytes (compact UTF-8 JSON)
    whose `extra`, when given, is an object without Braze's own keys `ab` and `aps` (apple_object.md)."""
    if not isinstance(push, dict):
        why = "must be an apple_push object"
    elif "extra" in push and not isinstance(push["extra"], dict):
        why = "has an 'extra' that is not an object (Braze: Invalid Extra Push Payload)"
    elif "extra" in push and {"ab", "aps"} & push["extra"].keys():
        why = "has 'ab' or 'aps' in 'extra', keys Braze reserves (Invalid Extra Push Payload)"
    elif (size := len(orjson.dumps(push))) > APPLE_PUSH_BYTES:
        why = f"is {size:,} bytes (Braze: Apple Push Length Exceeded over {APPLE_PUSH_BYTES:,})"
    else:
        return
    out.append(Violation("live_activity.notification", f"notification {why}", "notification"))

"""Braze's rules for a user attributes object: standard fields, custom attributes, subscription groups.

Also what `/users/track/sync` does with an update over Braze's limits: it answers 201 and leaves the value
as it was ("your custom attribute update exceeds the maximum number of characters, exceeds array limits",
post_user_track_synchronous.md FAQ; braze-api.md §2), where `/users/track` reports the object as an error.
Nested custom attributes are checked (and dropped, never refused) by nested.py.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from connector.emulator.rules import (
    CONTROL_KEYS,
    ERR_EMAIL,
    MAX_STRING,
    NESTED_BYTES,
    check_object,
    json_size,
    valid_email,
)

# Standard fields that cost no data point (subscription state, push tokens).
FREE_FIELDS = frozenset({"email_subscribe", "push_subscribe", "subscription_groups", "push_tokens"})
SUBSCRIBE_STATES = frozenset({"opted_in", "subscribed", "unsubscribed"})
GENDERS = frozenset({"M", "F", "O", "N", "P"})
STANDARD_FIELDS = frozenset(
    {
        "first_name", "last_name", "home_city", "email", "phone", "country", "language", "dob", "gender",
        "time_zone", "email_subscribe", "push_subscribe", "email_open_tracking_disabled",
        "email_click_tracking_disabled", "date_of_first_session", "date_of_last_session",
        "marked_email_as_spam_at", "current_location", "push_tokens", "subscription_groups", "facebook", "twitter",
    }
)  # fmt: skip

# Subscription groups (post_user_track.md "Endpoint-specific errors", braze-api.md §1.5). The wire `type`
# is prose (§1.5), so each code gets a sentence; BAD_SUBSCRIPTION_GROUP_ID uses the words the live API
# answers for a bad group id on /subscription/status/set (recorded: 400 "Invalid subscription group ID").
ERR_GROUP_ARRAY = "'subscription_groups' must be an array"  # BAD_SUBSCRIPTION_GROUP_ARRAY
ERR_GROUP_HASH = (  # BAD_SUBSCRIPTION_GROUP_HASH
    "Each subscription group must be an object with 'subscription_group_id' and 'subscription_state'"
)
ERR_GROUP_ID = "Invalid subscription group ID"  # BAD_SUBSCRIPTION_GROUP_ID: not a UUID
ERR_GROUP_STATE = (
    "'subscription_state' must be 'subscribed' or 'unsubscribed'"  # BAD_SUBSCRIPTION_GROUP_STATE
)
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def valid_subscription_group_id(value: Any) -> bool:
    """A subscription group id is a UUID string (8-4-4-4-12 hex digits)."""
    return isinstance(value, str) and bool(_UUID_RE.match(value))


def _check_subscription_groups(value: Any) -> str | None:
    if not isinstance(value, list):
        return ERR_GROUP_ARRAY
    for group in value:
        if (
            not isinstance(group, dict)
            or "subscription_group_id" not in group
            or "subscription_state" not in group
        ):
            return ERR_GROUP_HASH
        if not valid_subscription_group_id(group["subscription_group_id"]):
            return ERR_GROUP_ID
        if group["subscription_state"] not in ("subscribed", "unsubscribed"):
            return ERR_GROUP_STATE
    return None


def _check_push_tokens(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        return "'push_tokens' must be an array of objects"
    for t in value:
        if not isinstance(t.get("app_id"), str) or not t["app_id"]:
            return "push token 'app_id' must be a valid app identifier"
        if not isinstance(t.get("token"), str) or not t["token"]:
            return "push token 'token' must be a string"
        device = t.get("device_id")
        if device is not None and not (isinstance(device, str) and 8 <= len(device.encode("utf-8")) <= 255):
            return "push token 'device_id' must be between 8 and 255 bytes"
    return None


def check_standard(key: str, value: Any) -> str | None:
    """Validate one standard profile field; return the error type or None."""
    if value is None:
        return None
    if key == "email":
        return None if valid_email(value) else ERR_EMAIL
    if key == "gender":
        return None if isinstance(value, str) and value.upper() in GENDERS else "'gender' is not valid"
    if key == "dob":
        try:
            date.fromisoformat(value)
            return None if re.match(r"^\d{4}-\d\d-\d\d$", value) else "'dob' must be YYYY-MM-DD"
        except (TypeError, ValueError):
            return "'dob' must be YYYY-MM-DD"
    if key in ("email_subscribe", "push_subscribe"):
        if not isinstance(value, str) or value not in SUBSCRIBE_STATES:
            return f"'{key}' must be one of 'subscribed', 'unsubscribed' or 'opted_in'"
    if key == "current_location":
        ok = isinstance(value, dict) and all(
            isinstance(value.get(c), int | float) and not isinstance(value.get(c), bool)
            for c in ("longitude", "latitude")
        )
        return None if ok else "'current_location' must be an object with 'longitude' and 'latitude'"
    if key == "push_tokens":
        return _check_push_tokens(value)
    if key == "subscription_groups":
        return _check_subscription_groups(value)
    return None


def is_nested(key: str, value: Any) -> bool:
    """Whether `key: value` in an attributes object is a nested custom attribute update (see nested.py)."""
    if key in CONTROL_KEYS or key in STANDARD_FIELDS:
        return False
    if isinstance(value, dict):
        keys = set(value)
        return not (keys == {"inc"} or (keys and keys <= {"add", "remove"}))
    if isinstance(value, list):
        return any(isinstance(v, dict | list) for v in value)
    return False


def _check_key(key: Any) -> str | None:
    if not isinstance(key, str) or not key or len(key) > MAX_STRING or key.startswith("$"):
        return f"'{str(key)[:64]}' is not a valid custom attribute name"
    return None


def _too_long(values: list[Any]) -> bool:
    return any(isinstance(v, str) and len(v) > MAX_STRING for v in values)


def _check_custom(key: str, value: Any, *, limits: bool) -> str | None:
    """Scalar and scalar-array custom attributes. `limits=False` (sync) leaves length and size to sync_skips."""
    if isinstance(value, str):
        return (
            f"'{key}' is longer than {MAX_STRING} characters" if limits and len(value) > MAX_STRING else None
        )
    if isinstance(value, dict):
        if set(value) == {"inc"}:
            inc = value["inc"]
            ok = isinstance(inc, int | float) and not isinstance(inc, bool)
            return None if ok else f"'{key}' increment must be a number"
        for op in value:  # {"add", "remove"}
            if not isinstance(value[op], list):
                return f"'{key}' {op} must be an array"
            if limits and _too_long(value[op]):
                return f"'{key}' has a value longer than {MAX_STRING} characters"
        return None
    if isinstance(value, list) and limits:
        if json_size(value) > NESTED_BYTES:
            return f"Array custom attribute '{key}' is larger than 100 KB"
        if _too_long(value):
            return f"'{key}' has a value longer than {MAX_STRING} characters"
    return None


def check_attribute_fields(obj: dict[str, Any], *, sync: bool = False) -> str | None:
    """Validate the fields of an attributes object (not its identifier); nested values are left to nested.py.

    With `sync=True` a custom attribute over a length or size limit is not an error: /users/track/sync
    leaves it unchanged instead (sync_skips).
    """
    for key, value in obj.items():
        if key in CONTROL_KEYS:
            continue
        if key in STANDARD_FIELDS:
            err = check_standard(key, value)
        else:
            err = _check_key(key) or (
                None if is_nested(key, value) else _check_custom(key, value, limits=not sync)
            )
        if err:
            return err
    return None


def check_attributes(obj: Any, *, sync: bool = False) -> str | None:
    """Validate one attributes object; return Braze's prose error type, or None when valid."""
    return check_object(obj, "Attributes") or check_attribute_fields(obj, sync=sync)


def sync_skips(obj: dict[str, Any], max_len: int) -> frozenset[str]:
    """The custom attributes /users/track/sync leaves unchanged because the update is over a limit.

    The rule (braze-api.md §2, §3.3): a string over 255 characters; a whole array set with a value over 255
    characters, more than `max_len` distinct values or over 100 KB; an `add`/`remove` with a value over 255
    characters. An `add` to a full array is not over a limit: Braze drops the oldest value (§3.3).
    """
    skipped = set()
    for key, value in obj.items():
        if key in CONTROL_KEYS or key in STANDARD_FIELDS or is_nested(key, value):
            continue
        if isinstance(value, str):
            over = len(value) > MAX_STRING
        elif isinstance(value, list):
            # Scalars only (is_nested took the rest); a set dedupes as the store does (equal values are one).
            over = _too_long(value) or len(set(value)) > max_len or json_size(value) > NESTED_BYTES
        elif isinstance(value, dict) and set(value) != {"inc"}:
            over = any(isinstance(value.get(op), list) and _too_long(value[op]) for op in ("add", "remove"))
        else:
            over = False
        if over:
            skipped.add(key)
    return frozenset(skipped)

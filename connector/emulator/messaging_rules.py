"""Braze's rules for the messaging endpoints: canvas trigger recipients and live activity updates."""

from __future__ import annotations

from typing import Any

from connector.emulator.attribute_rules import check_attribute_fields
from connector.emulator.rules import CONTEXT_BYTES, ERR_EMAIL, json_size, parse_time, valid_email

# "By default, subscription groups cannot be updated this way" (post_send_triggered_canvases.md, "Attributes
# object for Canvas"). No error is documented for it and the page lists none for the send, so Braze takes
# the request and leaves the groups alone: the emulator neither checks nor applies them (the ledger lists
# them under `ignored`), and still sends the Canvas and applies the other attributes.
IGNORED_RECIPIENT_ATTRIBUTES = frozenset({"subscription_groups"})
APPLE_PUSH_BYTES = 1912  # "JSON payload is more than 1,912 bytes" (errors.md), compact UTF-8 JSON here
RESERVED_EXTRA_KEYS = frozenset({"ab", "aps"})
PRIORITIZATION_VALUES = frozenset(("identified", "unidentified", "most_recently_updated", "least_recently_updated"))


def check_recipient(rec: Any) -> str | None:
    """Validate one canvas recipient; return a message for a 400, or None."""
    if not isinstance(rec, dict):
        return "Each recipient must be an object"
    ids = [k for k in ("user_alias", "external_user_id", "braze_id", "email") if rec.get(k) is not None]
    if len(ids) != 1:
        return "Each recipient must specify exactly one of 'external_user_id', 'user_alias', 'braze_id' or 'email'"
    if ids[0] == "email":
        if not valid_email(rec["email"]):
            return ERR_EMAIL
        if not isinstance(rec.get("prioritization"), list) or not rec["prioritization"]:
            return "'prioritization' is required when a recipient is identified by 'email'"
    if "prioritization" in rec:
        prio = rec["prioritization"]
        if (
            not isinstance(prio, list)
            or not prio
            or not all(isinstance(p, str) and p in PRIORITIZATION_VALUES for p in prio)
            or {"identified", "unidentified"} <= set(prio)
        ):
            return (
                "'prioritization' must be a non-empty array of 'identified' or 'unidentified' (not both), "
                "'most_recently_updated', 'least_recently_updated'"
            )
    if ids[0] == "user_alias":
        alias = rec["user_alias"]
        if not isinstance(alias, dict) or not alias.get("alias_name") or not alias.get("alias_label"):
            return "'user_alias' must contain 'alias_name' and 'alias_label'"
        if rec.get("send_to_existing_only") is False:
            return "'send_to_existing_only' cannot be used with user aliases"
    if rec.get("send_to_existing_only") is False and not isinstance(rec.get("attributes"), dict):
        return "'attributes' are required when 'send_to_existing_only' is false"
    if rec.get("attributes") is not None:
        if not isinstance(rec["attributes"], dict):
            return "'attributes' must be an object"
        attrs = {k: v for k, v in rec["attributes"].items() if k not in IGNORED_RECIPIENT_ATTRIBUTES}
        err = check_attribute_fields(attrs)
        if err:
            return f"Invalid recipient attributes: {err}"
    for key in ("context", "canvas_entry_properties", "trigger_properties"):
        if rec.get(key) is not None and (
            not isinstance(rec[key], dict) or json_size(rec[key]) > CONTEXT_BYTES
        ):
            return f"'{key}' must be an object of at most 50 KB"
    return None


def recipient_key(rec: dict[str, Any]) -> str:
    """A stable identity for recipient de-duplication within one call."""
    for k in ("external_user_id", "braze_id", "email"):
        if rec.get(k) is not None:
            return f"{k}:{rec[k]}"
    alias = rec["user_alias"]
    return f"user_alias:{alias['alias_name']}|{alias['alias_label']}"


def check_live_activity(body: dict[str, Any]) -> str | None:
    """Validate a live activity update body; return a 400 message or None."""
    for key in ("app_id", "activity_id"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f"'{key}' is required"
    if not isinstance(body.get("content_state"), dict):
        return "'content_state' is required and must be an object"
    if "end_activity" in body and not isinstance(body["end_activity"], bool):
        return "'end_activity' must be a boolean"
    for key in ("dismissal_date", "stale_date"):
        if body.get(key) is not None and parse_time(body[key]) is None:
            return f"'{key}' must be an ISO-8601 date"
    if body.get("notification") is not None:
        return check_apple_push(body["notification"])
    return None


def check_apple_push(push: Any) -> str | None:
    """Validate a live activity `notification` (an apple_push object); return a 400 message or None.

    The texts Braze names are used as they are (errors.md): `extra` that is not a dictionary is "Invalid
    Extra Push Payload", a payload over 1,912 bytes "Apple Push Length Exceeded". apple_object.md also
    rejects the keys `ab` and `aps` in `extra` (Braze's own); no text is given, so the same `extra` error.
    A `notification` that is not an object has no named error either: a 400 in the same envelope, saying so.
    """
    if not isinstance(push, dict):
        return "'notification' must be an apple_push object"
    extra = push.get("extra")
    if "extra" in push and (not isinstance(extra, dict) or RESERVED_EXTRA_KEYS & set(extra)):
        return "Invalid Extra Push Payload"
    if json_size(push) > APPLE_PUSH_BYTES:
        return "Apple Push Length Exceeded"
    return None

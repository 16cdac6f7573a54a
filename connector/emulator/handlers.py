"""Endpoint semantics: validate a parsed body, apply it to the store in one transaction, build Braze's reply.

Each handler returns `(status, body, entry)`; the ledger entry is written inside the same transaction as
the objects it applied. HTTP concerns (auth, limits, faults, parsing) live in app.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from connector.emulator import attribute_rules, messaging_rules, rules
from connector.emulator.faults import QUEUED_BODY
from connector.emulator.nested import NestedScope, plan_drops
from connector.emulator.semantics import apply_attribute
from connector.emulator.store import LedgerEntry, Session, Store
from connector.emulator.workspace import Workspace

Result = tuple[int, dict[str, Any], LedgerEntry]
ARRAYS = ("attributes", "events", "purchases")


Batching = Literal["combined", "per_array", "combined50"]
BATCHING_MODES: tuple[str, ...] = ("combined", "per_array", "combined50")


@dataclass
class Behaviour:
    """Configurable Braze behaviour (batching rule, array length, nested-drop scope)."""

    batching: Batching = "combined"
    array_max_length: int = 500
    nested_invalid: NestedScope = "request"


def _over_cap(arrays: dict[str, list[Any]], batching: Batching, sync: bool) -> bool:
    """Whether a request holds more objects than Braze takes (then 400 Max Input Length Exceeded).

    combined: 75 in all (the current default); per_array: 75 per array (legacy rate limits); combined50:
    50 in all, the cap post_user_track.md gives MAU CY 24-25 contracts ("Each request may batch up to 50
    updates combined across attribute, event, or purchase objects"); /users/track/sync: one object.
    """
    total = sum(len(v) for v in arrays.values())
    if sync:
        return total > 1
    if batching == "per_array":
        return any(len(v) > rules.MAX_TRACK_OBJECTS for v in arrays.values())
    return total > (rules.MAX_TRACK_OBJECTS_MAU if batching == "combined50" else rules.MAX_TRACK_OBJECTS)


def _identifier(
    obj: dict[str, Any], keys: tuple[str, ...] = ("external_id", "user_alias", "braze_id", "email", "phone")
) -> dict[str, Any]:
    for k in keys:
        if obj.get(k) is not None:
            return {k: obj[k]}
    return {}


def _fail(endpoint: str, status: int, body: dict[str, Any], store: Store, fault: str | None) -> Result:
    entry = LedgerEntry(endpoint, status, fault=fault)
    store.record(entry)
    return status, body, entry


def _accepted(fault: str | None) -> int:
    """201, or 202 when the "queued" fault was drawn (the request is still applied)."""
    return 202 if fault == "202" else 201


def _reply(reply: dict[str, Any], entry: LedgerEntry) -> Result:
    if entry.status == 202:
        return 202, dict(QUEUED_BODY), entry
    return 201, reply, entry


def _apply_attributes(
    s: Session,
    pid: int,
    obj: dict[str, Any],
    behaviour: Behaviour,
    skip: str | None,
    dropped: frozenset[str] = frozenset(),
) -> int:
    attrs = s.profile_attrs(pid)
    merge = obj.get("_merge_objects") is True
    points = 0
    for key, value in obj.items():
        if key in rules.CONTROL_KEYS or key == skip or key in dropped:
            continue
        points += apply_attribute(
            attrs,
            key,
            value,
            merge=merge,
            max_len=behaviour.array_max_length,
            standard=key in attribute_rules.STANDARD_FIELDS,
        )
    return points


def _check(array: str, obj: Any, sync: bool) -> str | None:
    if array == "attributes":
        return attribute_rules.check_attributes(obj, sync=sync)
    return rules.check_event(obj) if array == "events" else rules.check_purchase(obj)


def _create_allowed(array: str, obj: dict[str, Any]) -> bool:
    update_only = obj.get("_update_existing_only")
    if obj.get("user_alias") is not None and obj.get("external_id") is None:
        # Alias-only profiles are created only by attributes with an explicit `_update_existing_only: false`.
        return array == "attributes" and update_only is False
    return update_only is not True


def track(store: Store, body: Any, behaviour: Behaviour, *, endpoint: str, sync: bool, dropped: bool = False,
          fault: str | None = None, now: datetime | None = None) -> Result:  # fmt: skip
    """POST /users/track and /users/track/sync."""
    now = now or datetime.now(UTC)
    if not isinstance(body, dict):
        return _fail(endpoint, 400, rules.MALFORMED_JSON_BODY, store, fault)
    arrays: dict[str, list[Any]] = {}
    for name in ARRAYS:
        if body.get(name) is None:
            continue
        if not isinstance(body[name], list):
            return _fail(endpoint, 400, {"message": f"'{name}' must be an array"}, store, fault)
        arrays[name] = body[name]
    if _over_cap(arrays, behaviour.batching, sync):
        return _fail(endpoint, 400, {"message": rules.MSG_MAX_INPUT}, store, fault)
    errors: list[dict[str, Any]] = []
    valid: dict[str, list[tuple[int, dict[str, Any]]]] = {name: [] for name in arrays}
    for name, items in arrays.items():
        for i, obj in enumerate(items):
            err = _check(name, obj, sync)
            if err:
                errors.append({"type": err, "input_array": name, "index": i})
            else:
                valid[name].append((i, obj))
    if not any(valid.values()):
        return _fail(endpoint, 400, {"message": rules.MSG_NO_VALID, "errors": errors}, store, fault)
    attr_objs = valid.get("attributes", [])
    planned = plan_drops([obj for _, obj in attr_objs], behaviour.nested_invalid)
    drops = dict(zip((i for i, _ in attr_objs), planned, strict=True))
    # /users/track/sync leaves an update over a limit unchanged (and still answers 201): attribute_rules.
    skips = {
        i: attribute_rules.sync_skips(o, behaviour.array_max_length) if sync else frozenset()
        for i, o in attr_objs
    }

    entry = LedgerEntry(endpoint, _accepted(fault), dropped=dropped, fault=fault)
    counts = dict.fromkeys(ARRAYS, 0)
    users: list[dict[str, Any]] = []
    with store.transaction() as s:
        touched: list[tuple[str, int, dict[str, Any]]] = []
        for name in ARRAYS:
            for i, obj in valid.get(name, []):
                ident = _identifier(obj)
                pid = s.resolve(obj, create=_create_allowed(name, obj))
                if pid is None:
                    continue  # unknown user in update-only mode: queued by Braze, applied to nobody
                applied = {"array": name, "index": i, "identifier": ident, "object": obj}
                if name == "attributes":
                    skip = next(iter(ident)) if not rules.primary_keys(obj) else None
                    entry.data_points += _apply_attributes(s, pid, obj, behaviour, skip, drops[i] | skips[i])
                    if drops[i]:
                        applied["nested_dropped"] = sorted(drops[i])
                    if skips[i]:
                        applied["not_updated"] = sorted(skips[i])
                elif name == "events":
                    t = rules.clamp_time(obj["time"], now)
                    s.touch(pid)
                    s.events.append((pid, obj["name"], t, t, 1))
                    entry.data_points += 1
                else:
                    t = rules.clamp_time(obj["time"], now)
                    s.touch(pid)
                    s.purchases.append((pid, str(obj["product_id"]), t, t, int(obj.get("quantity", 1))))
                    entry.data_points += 1
                counts[name] += 1
                entry.applied.append(applied)
                touched.append((name, pid, obj))
        entry.counts = counts
        if sync:
            s.flush()
            users = [_sync_user(store, name, pid, obj) for name, pid, obj in touched]
        store.write_ledger(entry)
    if sync:
        return _reply({"users": users, "message": "success"}, entry)
    reply: dict[str, Any] = {f"{name}_processed": len(valid[name]) for name in ARRAYS if name in arrays}
    reply["message"] = "success"
    if errors:
        reply["errors"] = errors
    return _reply(reply, entry)


def _sync_user(store: Store, array: str, pid: int, obj: dict[str, Any]) -> dict[str, Any]:
    view = store.profile_by_pid(pid)
    user: dict[str, Any] = _identifier(obj)
    if array == "attributes":
        attrs = view["attributes"]
        user["custom_attributes"] = {
            k: attrs.get(k)
            for k in obj
            if k not in rules.CONTROL_KEYS and k not in attribute_rules.STANDARD_FIELDS
        }
    elif array == "events":
        agg = view["custom_events"][obj["name"]]
        user["custom_events"] = [{"name": obj["name"], **agg}]
    else:
        pid_s = str(obj["product_id"])
        user["purchase_events"] = [{"product_id": pid_s, **view["purchases"][pid_s]}]
    return user


# Braze's answer to a canvas_id it has no Canvas for, as recorded from the live API (braze_ruby VCR
# cassette canvas/details/returns_error_when_no_canvas: 400 with this message for `canvas_id=non-existing`).
# The docs publish no text for /canvas/trigger/send with an unknown or non-API-triggered Canvas; the errors
# page's nearest row is the campaign one ("400 Invalid Campaign ID: No messaging API campaign was found"),
# so a 400 in the fatal `message` envelope, with the text Braze was seen to use for an unknown Canvas id.
_CANVAS_ID_MSG = "canvas_id must be a string of the Canvas api identifier"
_NOTICES = {
    "paused": "The Canvas is paused. Resume the Canvas to ensure trigger requests will take effect.",
    "archived": "The Canvas is archived. Unarchive the Canvas to ensure trigger requests will take effect.",
}


def canvas_trigger(store: Store, body: Any, behaviour: Behaviour, workspace: Workspace, *, endpoint: str,
                   dropped: bool = False, fault: str | None = None) -> Result:  # fmt: skip
    """POST /canvas/trigger/send."""
    if not isinstance(body, dict):
        return _fail(endpoint, 400, rules.MALFORMED_JSON_BODY, store, fault)
    canvas_id = body.get("canvas_id")
    # Missing, not a string, or no Canvas of the workspace has that id.
    if (
        not isinstance(canvas_id, str)
        or not canvas_id
        or (state := workspace.canvas_state(canvas_id)) is None
    ):
        return _fail(endpoint, 400, {"message": _CANVAS_ID_MSG}, store, fault)
    recipients = body.get("recipients")
    if recipients is not None and not isinstance(recipients, list):
        return _fail(endpoint, 400, {"message": "'recipients' must be an array"}, store, fault)
    if recipients and len(recipients) > rules.MAX_RECIPIENTS:
        return _fail(endpoint, 400, {"message": rules.MSG_MAX_RECIPIENTS}, store, fault)
    broadcast = body.get("broadcast") is True
    if broadcast and recipients:
        return _fail(
            endpoint, 400, {"message": "'broadcast' cannot be true when 'recipients' are given"}, store, fault
        )
    if not broadcast and not recipients:
        return _fail(endpoint, 400, {"message": rules.MSG_NO_RECIPIENTS}, store, fault)
    for key in ("context", "canvas_entry_properties"):
        ctx = body.get(key)
        if ctx is not None and (not isinstance(ctx, dict) or rules.json_size(ctx) > rules.CONTEXT_BYTES):
            return _fail(
                endpoint, 400, {"message": f"'{key}' must be an object of at most 50 KB"}, store, fault
            )
    for rec in recipients or []:
        err = messaging_rules.check_recipient(rec)
        if err:
            return _fail(endpoint, 400, {"message": err}, store, fault)
    dispatch_id = uuid.uuid4().hex
    reply: dict[str, Any] = {}
    if state in _NOTICES:
        reply["notice"] = _NOTICES[state]
    reply.update({"dispatch_id": dispatch_id, "message": "success"})
    entry = LedgerEntry(endpoint, _accepted(fault), dropped=dropped, fault=fault)
    unique: dict[str, dict[str, Any]] = {}
    for rec in recipients or []:
        unique.setdefault(messaging_rules.recipient_key(rec), rec)  # Braze collapses repeated recipients
    targets = list(unique.values())
    drops = plan_drops([rec.get("attributes") or {} for rec in targets], behaviour.nested_invalid)
    with store.transaction() as s:
        sent: list[dict[str, Any]] = []
        if state not in _NOTICES:
            top = body.get("context") or body.get("canvas_entry_properties") or {}
            for rec, drop in zip(targets, drops, strict=True):
                create = rec.get("send_to_existing_only", True) is False
                pid = s.resolve(rec, create=create, id_keys={"external_id": "external_user_id"})
                if pid is None:
                    continue
                attrs = rec.get("attributes")
                ignored = messaging_rules.IGNORED_RECIPIENT_ATTRIBUTES & set(attrs or ())
                if isinstance(attrs, dict):
                    entry.data_points += _apply_attributes(s, pid, attrs, behaviour, None, drop | ignored)
                ctx = {**top, **(rec.get("context") or rec.get("canvas_entry_properties") or {})}
                ident = _identifier(rec, ("external_user_id", "user_alias", "braze_id", "email"))
                sent.append({"identifier": ident, "context": ctx})
                if drop:
                    sent[-1]["nested_dropped"] = sorted(drop)
                if ignored:
                    sent[-1]["ignored"] = sorted(ignored)
            store.counter += 1
            store.add_dispatch(dispatch_id, canvas_id, broadcast, sent, store.counter)
        entry.counts = {"recipients": len(sent)}
        entry.applied = [
            {"canvas_id": canvas_id, "dispatch_id": dispatch_id, "state": state, **r} for r in sent
        ]
        if broadcast and state not in _NOTICES:
            entry.applied.append({"canvas_id": canvas_id, "dispatch_id": dispatch_id, "broadcast": True})
        store.write_ledger(entry)
    return _reply(reply, entry)


def live_activity(
    store: Store, body: Any, *, endpoint: str, dropped: bool = False, fault: str | None = None
) -> Result:
    """POST /messages/live_activity/update."""
    if not isinstance(body, dict):
        return _fail(endpoint, 400, rules.MALFORMED_JSON_BODY, store, fault)
    err = messaging_rules.check_live_activity(body)
    if err:
        return _fail(endpoint, 400, {"message": err}, store, fault)
    entry = LedgerEntry(
        endpoint, _accepted(fault), counts={"live_activities": 1}, dropped=dropped, fault=fault
    )
    entry.applied = [
        {
            "app_id": body["app_id"],
            "activity_id": body["activity_id"],
            "end_activity": body.get("end_activity", False),
        }
    ]
    with store.transaction():
        store.counter += 1
        store.add_live_activity(body, store.counter)
        store.write_ledger(entry)
    return _reply({"message": "success"}, entry)

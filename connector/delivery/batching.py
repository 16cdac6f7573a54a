"""Pack Braze objects into request bodies (75 combined or 75 per array, byte caps) and keep per-user order.

Each request's objects are serialised with one orjson call per array (a window over the byte cap falls back
to measuring object by object); the packer streams (reads at most one object past the request it yields) so
memory stays bounded whatever the input size. No Python object is created per packed item. Objects that
come already encoded (records.EncodedObjects) are not serialised again: encoded.py slices their bodies. Every request records, for each object, the array
it sits in and its index within that array, which is how Braze reports per-object errors
(`input_array`, `index`).

The writer's /users/track requests (pack_track_array with `group_users`) are planned per chunk when a user
recurs in it (bins.py: each user's objects together, requests filled to the cap), which reads the chunk's
user keys first; the chunk is in memory already, so memory stays bounded by the chunk.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal

import orjson

from connector.delivery.bins import plan_bins
from connector.delivery.encoded import pack_encoded
from connector.delivery.request import PackedItem, Request, user_cut, windows
from connector.records import EncodedObjects

ENDPOINT_PATHS: dict[str, str] = {
    "users_track": "/users/track",
    "users_track_sync": "/users/track/sync",
    "canvas_trigger_send": "/canvas/trigger/send",
    "live_activity_update": "/messages/live_activity/update",
    "users_delete": "/users/delete",
}
TRACK_ARRAYS: tuple[str, ...] = ("attributes", "events", "purchases")
MAX_OBJECTS = 75
# MAU contracts ("Monthly Active Users CY 24-25", post_user_track.md): "up to 50 updates combined across
# attribute, event, or purchase objects" per request; write.batching: combined50.
MAX_OBJECTS_MAU = 50
MAX_BYTES = 3_900_000
MAX_RECIPIENTS = 50
__all__ = ["Item", "PackedItem", "Request", "pack_canvas", "pack_single", "pack_track", "pack_track_array", "split"]


@dataclass(frozen=True, slots=True)
class Item:
    """One Braze object to send: its array ("attributes", "events", "purchases", "recipients", ...), the
    object, the profile it touches and the writer's token for the source row."""

    array: str
    obj: Any
    user_key: str
    token: Any


def _track_body(arrays: str | list[str], objs: list[Any]) -> tuple[bytes, list[int] | None]:
    """A /users/track body for `objs` (source order) and each object's index in its array (None when every
    object sits in the one array `arrays`). orjson.dumps of a list is exactly "[" + ",".join(items) + "]"."""
    if isinstance(arrays, str):
        return b'{"' + arrays.encode() + b'":' + orjson.dumps(objs) + b"}", None
    groups: dict[str, list[Any]] = {}
    indices: list[int] = []
    for a, o in zip(arrays, objs, strict=True):
        g = groups.get(a)
        if g is None:
            g = groups[a] = []
        indices.append(len(g))
        g.append(o)
    order = [a for a in TRACK_ARRAYS if a in groups] + [a for a in groups if a not in TRACK_ARRAYS]
    return b"{" + b",".join(
        b'"' + a.encode() + b'":' + orjson.dumps(groups[a]) for a in order
    ) + b"}", indices


def _greedy(
    arrays: str | list[str], objs: list[Any], combined: bool, max_objects: int, max_bytes: int
) -> tuple[int, bool]:
    """How many leading objects fit one body under the caps (exact byte count), and whether the first
    object is over the byte cap on its own (then it is the request's only object)."""
    dumps = orjson.dumps
    single = arrays if isinstance(arrays, str) else None
    counts: dict[str, int] = {}
    size = 2  # "{}"
    for k, obj in enumerate(objs):
        a = single if single is not None else arrays[k]
        ln = len(dumps(obj))
        if k == 0 and ln + len(a) + 7 > max_bytes:  # '{"a":[obj]}'
            return 1, True
        c = counts.get(a, 0)
        add = ln + 1 if c else ln + len(a) + 5 + (1 if counts else 0)  # ',obj' or ',"a":[obj]'
        if k and ((k if combined else c) >= max_objects or size + add > max_bytes):
            return k, False
        size += add
        counts[a] = c + 1
    return len(objs), False


def _next_request(
    endpoint: str,
    arrays: str | list[str],
    objs: list[Any],
    keys: list[str],
    tokens: list[Any],
    next_key: str | None,
    caps: tuple[bool, int, int],
) -> Request:
    """The request that starts `objs` (a window already within the object cap); it holds the first
    `request.count` of them."""
    combined, max_objects, max_bytes = caps
    m = user_cut(keys, len(objs), next_key)
    sub = arrays if isinstance(arrays, str) or m == len(objs) else arrays[:m]
    body, indices = _track_body(sub, objs if m == len(objs) else objs[:m])
    oversize = False
    if len(body) > max_bytes:
        m, oversize = _greedy(arrays, objs, combined, max_objects, max_bytes)
        if not oversize:
            m = user_cut(keys, m, keys[m] if m < len(keys) else next_key)
        sub = arrays if isinstance(arrays, str) else arrays[:m]
        body, indices = _track_body(sub, objs[:m])
    return Request.packed(endpoint, body, sub, indices, tokens[:m], keys[:m], oversize)


def objects_cap(batching: str, max_objects: int) -> int:
    """Objects per /users/track request (per array with per_array): combined50 caps them at 50 in all."""
    return min(max_objects, MAX_OBJECTS_MAU) if batching == "combined50" else max_objects


def pack_track(
    items: Iterable[Item],
    *,
    batching: Literal["combined", "per_array", "combined50"] = "combined",
    max_objects: int = MAX_OBJECTS,
    max_bytes: int = MAX_BYTES,
    endpoint: str = "users_track",
) -> Iterator[Request]:
    """Pack objects into /users/track bodies, in source order, streaming.

    combined: at most `max_objects` objects in total per request; per_array: at most `max_objects` in
    each of attributes / events / purchases; combined50: at most 50 (and `max_objects`) in total. No body exceeds `max_bytes` except a single object that is
    larger on its own: it is yielded alone with `oversize=True`. A request that would end inside one
    user's run of objects ends before the run instead when that leaves the two requests no shared user
    (see _user_cut). Reads at most one object past the request it yields.
    """
    combined = batching != "per_array"
    max_objects = objects_cap(batching, max_objects)
    caps = (combined, max_objects, max_bytes)
    source = iter(items)
    pending: list[Item] = []
    while True:
        rest: list[Item] = []
        if combined:
            window = pending + list(islice(source, max_objects + 1 - len(pending)))
            nxt = window.pop() if len(window) > max_objects else None
        else:
            window, nxt, rest = _per_array_window(pending, source, max_objects)
        if not window:
            return
        arrays = [it.array for it in window]
        one: str | list[str] = arrays[0] if arrays.count(arrays[0]) == len(arrays) else arrays
        next_key = None if nxt is None else nxt.user_key
        objs, tokens = [it.obj for it in window], [it.token for it in window]
        req = _next_request(endpoint, one, objs, [it.user_key for it in window], tokens, next_key, caps)
        yield req
        pending = window[req.count :] + ([nxt] if nxt is not None else []) + rest


def _per_array_window(
    pending: list[Item], source: Iterator[Item], max_objects: int
) -> tuple[list[Item], Item | None, list[Item]]:
    """The leading objects with at most `max_objects` in each array, the object after them (None at the
    end), and the pending objects not read."""
    counts: dict[str, int] = {}
    window: list[Item] = []
    for k, it in enumerate(itertools.chain(pending, source)):
        c = counts.get(it.array, 0)
        if c >= max_objects:
            return window, it, pending[k + 1 :]
        counts[it.array] = c + 1
        window.append(it)
    return window, None, []


def pack_track_array(
    array: str,
    objects: Sequence[Any],
    user_keys: Sequence[str],
    positions: Sequence[int],
    *,
    max_objects: int = MAX_OBJECTS,
    max_bytes: int = MAX_BYTES,
    endpoint: str = "users_track",
    group_users: bool = True,
) -> Iterator[Request]:
    """pack_track for objects that all sit in `array` (both batching modes are the same then), taken from
    parallel columns at `positions`: each request's tokens are those positions. Serialises each window of
    up to `max_objects` objects with one orjson call, or, for EncodedObjects, slices the bodies out of their
    JSON (encoded.py).

    `group_users` (the writer's /users/track requests): when a user has several objects among `positions`,
    they are packed together and the requests filled to the cap (bins.plan_bins: a user's objects keep
    their order, within and across requests), so requests do not wait on one another for users that recur
    in the chunk; the requests follow that plan instead of source order. Positions whose users are all
    distinct are packed in source order either way; False packs in source order always (pack_track's way).
    """
    if group_users:
        plan = plan_bins(user_keys, positions, max_objects)
        if plan is not None:
            for part in plan:
                yield from pack_track_array(
                    array, objects, user_keys, _as_range(part), max_objects=max_objects, max_bytes=max_bytes,
                    endpoint=endpoint, group_users=False,
                )  # fmt: skip
            return
    if isinstance(objects, EncodedObjects):
        yield from pack_encoded(
            array, objects, user_keys, positions, max_objects=max_objects, max_bytes=max_bytes, endpoint=endpoint
        )
        return
    caps = (True, max_objects, max_bytes)

    def build(tokens: Sequence[int], keys: list[str], next_key: str | None) -> Request:
        if isinstance(tokens, range):
            objs, toks = list(objects[tokens.start : tokens.stop]), list(tokens)
        else:
            objs, toks = [objects[j] for j in tokens], list(tokens)
        return _next_request(endpoint, array, objs, keys, toks, next_key, caps)

    yield from windows(user_keys, positions, max_objects, build)


def _as_range(part: list[int]) -> Sequence[int]:
    """`part` as a range when it is consecutive ascending positions (the packers then slice their columns)."""
    lo = part[0]
    if part[-1] - lo == len(part) - 1 and part == list(range(lo, lo + len(part))):
        return range(lo, lo + len(part))
    return part


def pack_canvas(
    items: Iterable[Item],
    canvas_id: str,
    *,
    max_recipients: int = MAX_RECIPIENTS,
    max_bytes: int = MAX_BYTES,
    extra: Mapping[str, Any] | None = None,
) -> Iterator[Request]:
    """Pack recipient objects into /canvas/trigger/send bodies {"canvas_id", **extra, "recipients": [...]}."""
    head = orjson.dumps({"canvas_id": canvas_id, **dict(extra or {})})[:-1] + b',"recipients":['
    parts: list[bytes] = []
    packed: list[PackedItem] = []
    size = len(head) + 2

    def build(oversize: bool = False) -> Request:
        return Request("canvas_trigger_send", head + b",".join(parts) + b"]}", packed, oversize)

    for item in items:
        data = orjson.dumps(item.obj)
        if len(head) + 2 + len(data) > max_bytes:
            if packed:
                yield build()
            parts, packed = [data], [PackedItem("recipients", 0, item.token, item.user_key)]
            yield build(oversize=True)
            parts, packed, size = [], [], len(head) + 2
            continue
        if packed and (len(packed) >= max_recipients or size + len(data) + 1 > max_bytes):
            yield build()
            parts, packed, size = [], [], len(head) + 2
        size += len(data) + (1 if parts else 0)
        packed.append(PackedItem("recipients", len(parts), item.token, item.user_key))
        parts.append(data)
    if packed:
        yield build()


def pack_single(endpoint: str, items: Iterable[Item], *, max_bytes: int = MAX_BYTES) -> Iterator[Request]:
    """One object per request: users_track_sync wraps it ({"attributes": [obj]}), live_activity_update
    sends the object itself as the body."""
    if endpoint not in ("users_track_sync", "live_activity_update"):
        raise ValueError(f"pack_single serves users_track_sync and live_activity_update, not {endpoint!r}")
    for item in items:
        data = orjson.dumps(item.obj)
        if endpoint == "users_track_sync":
            body = b'{"' + item.array.encode() + b'":[' + data + b"]}"
        else:
            body = data
        yield Request(
            endpoint, body, [PackedItem(item.array, 0, item.token, item.user_key)], len(body) > max_bytes
        )


def split(request: Request) -> tuple[Request, Request]:
    """Halve a request (objects in source order) for poison-row isolation and 413 / Max Input Length.

    Raises:
        ValueError: the request carries fewer than two objects, or its body is not an object of arrays.
    """
    if len(request.items) < 2:
        raise ValueError("a request with a single object cannot be split")
    parsed = orjson.loads(request.body)
    arrays = list(dict.fromkeys(i.array for i in request.items))
    if not isinstance(parsed, dict) or any(not isinstance(parsed.get(a), list) for a in arrays):
        raise ValueError(f"cannot split a {request.endpoint} body without the arrays {arrays}")
    rest = {k: v for k, v in parsed.items() if k not in arrays}
    mid = len(request.items) // 2
    return _rebuild(request, parsed, rest, request.items[:mid]), _rebuild(
        request, parsed, rest, request.items[mid:]
    )


def _rebuild(
    request: Request, parsed: dict[str, Any], rest: dict[str, Any], items: list[PackedItem]
) -> Request:
    body: dict[str, Any] = dict(rest)
    packed: list[PackedItem] = []
    for item in items:
        target = body.setdefault(item.array, [])
        packed.append(PackedItem(item.array, len(target), item.token, item.user_key))
        target.append(parsed[item.array][item.index])
    return Request(request.endpoint, orjson.dumps(body), packed)

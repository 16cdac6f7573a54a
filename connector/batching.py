"""Pack Braze objects into request bodies (75 combined or 75 per array, byte caps) and keep per-user order.

Bodies are built from each object's orjson bytes exactly once; the packer streams (one open request at a
time) so memory stays bounded whatever the input size. Every request records, for each object, the array
it sits in and its index within that array, which is how Braze reports per-object errors
(`input_array`, `index`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

ENDPOINT_PATHS: dict[str, str] = {
    "users_track": "/users/track",
    "users_track_sync": "/users/track/sync",
    "canvas_trigger_send": "/canvas/trigger/send",
    "live_activity_update": "/messages/live_activity/update",
}
TRACK_ARRAYS: tuple[str, ...] = ("attributes", "events", "purchases")
MAX_OBJECTS = 75
MAX_BYTES = 3_900_000
MAX_RECIPIENTS = 50


@dataclass(frozen=True, slots=True)
class Item:
    """One Braze object to send: its array ("attributes", "events", "purchases", "recipients", ...), the
    object, the profile it touches and the writer's token for the source row."""

    array: str
    obj: Any
    user_key: str
    token: Any


@dataclass(frozen=True, slots=True)
class PackedItem:
    """Where an object sits in a request body: (array, index within that array) as Braze reports errors."""

    array: str
    index: int
    token: Any
    user_key: str


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request body ready to post, with the objects it carries in source order.

    `oversize` is set when a single object alone exceeds the byte cap: the writer rejects it instead of
    sending it.
    """

    endpoint: str
    body: bytes
    items: list[PackedItem]
    oversize: bool = False

    def user_keys(self) -> set[str]:
        """The profiles this request touches."""
        return {i.user_key for i in self.items}

    def find(self, array: str, index: int) -> PackedItem | None:
        """The object Braze names by (input_array, index), or None if the pair is not in this request."""
        for item in self.items:
            if item.array == array and item.index == index:
                return item
        return None


class _TrackBatch:
    """An open /users/track body: each array's serialised objects and the exact body size so far."""

    def __init__(self) -> None:
        self.parts: dict[str, list[bytes]] = {}
        self.items: list[PackedItem] = []
        self.size = 2  # "{}"

    def added_size(self, array: str, data: bytes) -> int:
        if array in self.parts:
            return len(data) + 1  # ",obj"
        # '"array":[obj]' plus a comma when another array is already present
        return len(data) + len(array) + 5 + (1 if self.parts else 0)

    def add(self, item: Item, data: bytes) -> None:
        self.size += self.added_size(item.array, data)
        parts = self.parts.setdefault(item.array, [])
        self.items.append(PackedItem(item.array, len(parts), item.token, item.user_key))
        parts.append(data)

    def count(self, array: str | None = None) -> int:
        return len(self.items) if array is None else len(self.parts.get(array, ()))

    def build(self, endpoint: str, oversize: bool = False) -> Request:
        order = [a for a in TRACK_ARRAYS if a in self.parts] + [
            a for a in self.parts if a not in TRACK_ARRAYS
        ]
        body = (
            b"{"
            + b",".join(b'"' + a.encode() + b'":[' + b",".join(self.parts[a]) + b"]" for a in order)
            + b"}"
        )
        return Request(endpoint, body, self.items, oversize)


def pack_track(
    items: Iterable[Item],
    *,
    batching: Literal["combined", "per_array"] = "combined",
    max_objects: int = MAX_OBJECTS,
    max_bytes: int = MAX_BYTES,
    endpoint: str = "users_track",
) -> Iterator[Request]:
    """Pack objects into /users/track bodies, in source order, streaming.

    combined: at most `max_objects` objects in total per request; per_array: at most `max_objects` in
    each of attributes / events / purchases. No body exceeds `max_bytes` except a single object that is
    larger on its own: it is yielded alone with `oversize=True`.
    """
    batch = _TrackBatch()
    for item in items:
        data = orjson.dumps(item.obj)
        alone = _TrackBatch()
        if 2 + alone.added_size(item.array, data) > max_bytes:
            if batch.items:
                yield batch.build(endpoint)
                batch = _TrackBatch()
            alone.add(item, data)
            yield alone.build(endpoint, oversize=True)
            continue
        full = (
            batch.count() >= max_objects if batching == "combined" else batch.count(item.array) >= max_objects
        )
        if batch.items and (full or batch.size + batch.added_size(item.array, data) > max_bytes):
            yield batch.build(endpoint)
            batch = _TrackBatch()
        batch.add(item, data)
    if batch.items:
        yield batch.build(endpoint)


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


@dataclass(eq=False, slots=True)
class Ticket:
    """Admission to the OrderGate: its FIFO sequence number and the user keys it holds."""

    seq: int
    keys: frozenset[str]
    done: bool = field(default=False)


class OrderGate:
    """Keeps each user's requests in source order across concurrent workers (strict FIFO admission).

    `enter(keys)` registers the request immediately (in call order) and blocks until no earlier, still
    unfinished request shares a user key with it; `leave(ticket)` once the request has its final outcome
    (retries and splits included). A later request never overtakes an earlier conflicting one; requests
    for different users run concurrently.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._queues: dict[str, deque[int]] = {}
        self._seq = 0

    def enter(self, user_keys: Iterable[str], timeout: float | None = None) -> Ticket:
        """Register and wait for the turn of a request touching `user_keys`.

        Raises:
            TimeoutError: `timeout` seconds passed first (the ticket is withdrawn).
        """
        with self._cv:
            ticket = Ticket(self._seq, frozenset(user_keys))
            self._seq += 1
            for k in ticket.keys:
                self._queues.setdefault(k, deque()).append(ticket.seq)
            if not self._cv.wait_for(lambda: self._is_first(ticket), timeout):
                self._remove(ticket)
                raise TimeoutError(
                    f"request {ticket.seq} waited over {timeout} s for an earlier request of its users"
                )
            return ticket

    def leave(self, ticket: Ticket) -> None:
        """The request is finished: let the next request of its users go."""
        with self._cv:
            if not ticket.done:
                self._remove(ticket)

    def pending(self) -> int:
        """User keys with a registered, unfinished request (for tests and progress)."""
        with self._cv:
            return len(self._queues)

    def _is_first(self, ticket: Ticket) -> bool:
        return all(self._queues[k][0] == ticket.seq for k in ticket.keys)

    def _remove(self, ticket: Ticket) -> None:
        ticket.done = True
        for k in ticket.keys:
            q = self._queues[k]
            q.remove(ticket.seq)
            if not q:
                del self._queues[k]
        self._cv.notify_all()

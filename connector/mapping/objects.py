"""Build Braze objects from a chunk: one object or one reject per row, checked against the contract."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from connector import contract
from connector.arrow_values import array, from_numpy
from connector.config import AttributeField, Identifier, Stream
from connector.mapping import encode
from connector.mapping.columns import Column, Resolver, build_properties
from connector.mapping.dates import DateReadings
from connector.mapping.fast import ArrowCells, Batch, Fields, Ident, attribute_batch, event_batch, missing
from connector.records import Chunk, MappedChunk, Rejected, alias_key

log = logging.getLogger(__name__)

# Identifier key in /users/track objects -> (key in Canvas recipients, user_key prefix)
_ID_KEYS = {
    "external_id": ("external_user_id", "external_id:"),
    "user_alias": ("user_alias", "user_alias:"),
    "braze_id": ("braze_id", "braze_id:"),
    "email": ("email", "email:"),
    "phone": ("phone", "phone:"),
}
_OP_TYPE = {"set": "auto", "inc": "number", "add": "array", "remove": "array", "merge": "object"}

# (row -> object, Braze key -> source column, every row at once (attributes, events, purchases),
#  the configured identifier's values per row (None for Live Activity, which has none))
Builder = tuple[
    Callable[[int], dict[str, Any]], dict[str, str], Callable[[], Batch | None] | None, Sequence[Any] | None
]


def user_key(obj: dict[str, Any]) -> str:
    """The profile (or activity) an object touches: "external_id:u1", "user_alias:name|label", ..."""
    if "activity_id" in obj and "content_state" in obj:
        return f"activity:{obj['activity_id']}"
    v = obj.get("external_id", obj.get("external_user_id"))
    if v is not None:
        return f"external_id:{v}"
    alias = obj.get("user_alias")
    if isinstance(alias, dict):
        return alias_key(alias.get("alias_name"), alias.get("alias_label"))
    for k in ("braze_id", "email", "phone"):
        if obj.get(k) is not None:
            return f"{k}:{obj[k]}"
    return ""


def identifier_keys(stream: Stream, chunk: Chunk) -> list[str | None]:
    """Every row's user as user_key() names it (None where the identifier is empty or does not convert).

    Read before any check, so a row that is rejected later still names its user (mirror mode: who is
    still in the source). Streams without an identifier (Live Activity) give None for every row.
    """
    if stream.identifier is None:
        return [None] * len(chunk)
    ident, _ = _identifier(Resolver(stream, chunk.table, chunk.file), stream.identifier)
    kind, values = ident.kind, ident.values
    prefix = _ID_KEYS[kind][1]
    if kind == "user_alias":
        return [None if v is None else alias_key(v["alias_name"], v["alias_label"]) for v in values]
    return [None if v is None else f"{prefix}{v}" for v in values]


def identifier_text(stream: Stream, chunk: Chunk) -> tuple[str, pa.Array | pa.ChunkedArray] | None:
    """(prefix, values) such that identifier_keys' key of each row is prefix + its value (None where the value
    is null), the values as one Arrow string array: where the identifier is read as an Arrow column (not a
    user alias, an email or a phone, whose keys are made in Python), so the keys can be built and hashed
    without a Python string per row (delta/users.py). None otherwise."""
    if stream.identifier is None or stream.identifier.kind not in ("external_id", "braze_id"):
        return None
    ident, _ = _identifier(Resolver(stream, chunk.table, chunk.file), stream.identifier)
    arr = ident.arrow
    if arr is None or not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return None
    return _ID_KEYS[ident.kind][1], arr


def _identifier(res: Resolver, ident: Identifier) -> tuple[Ident, str | None]:
    """The identifier (key, per-row values, None when empty) and its source column."""
    kind = ident.kind
    if kind == "user_alias":
        assert ident.user_alias is not None
        names = res.value(ident.user_alias.name, "identifier.user_alias.name", "string")
        labels = res.value(ident.user_alias.label, "identifier.user_alias.label", "string")
        vals = [
            {"alias_name": n, "alias_label": lb} if n is not None and lb is not None else None
            for n, lb in zip(names.values, labels.values, strict=True)
        ]
        return Ident(kind, vals), names.column
    col = res.value(getattr(ident, kind), f"identifier.{kind}", "string")
    if kind in ("email", "phone"):
        return Ident(kind, [None if x is None else str(x).strip() for x in col.values]), col.column
    if col.arrow is not None:
        return Ident(kind, ArrowCells(col.arrow), col.arrow), col.column
    return Ident(kind, col.values), col.column


def _attribute_fields(
    res: Resolver, attrs: list[AttributeField], key: str
) -> tuple[Fields, bool, dict[str, str]]:
    """Per-attribute values already wrapped for their op; whether any merges; target -> source column."""
    fields: Fields = []
    merge = False
    cols: dict[str, str] = {}
    for n, a in enumerate(attrs):
        col: Column = res.value(a, f"{key}[{n}] ({a.target})", _OP_TYPE[a.op])
        if a.op in ("inc", "add", "remove"):
            col = Column([None if x is None else {a.op: x} for x in col.values], col.keep_null, col.column)
        merge = merge or a.op == "merge"
        fields.append((a.target, col, col.keep_null))
        if col.column:
            cols[a.target] = col.column
    return fields, merge, cols


def _fill(obj: dict[str, Any], fields: Fields, i: int) -> None:
    for target, col, keep_null in fields:
        x = col.at(i)
        if x is not None or keep_null:
            obj[target] = x


def _build(stream: Stream, res: Resolver) -> Builder:
    """A function building row i's object, a Braze key -> source column map for reject messages, and
    (attributes, events, purchases) a function building every row's object at once with the rows to check."""
    kind = stream.kind
    if kind == "live_activity":
        return *_live_activity(stream, res), None, None
    assert stream.identifier is not None
    ident, id_col = _identifier(res, stream.identifier)
    id_kind, ids = ident.kind, ident.values
    cols: dict[str, str] = {id_kind: id_col, "_identifier": id_col} if id_col else {}
    ueo = stream.update_existing_only

    if kind == "attributes":
        fields, merge, fcols = _attribute_fields(res, stream.attributes, "attributes")
        cols.update(fcols)

        def attributes(i: int) -> dict[str, Any]:
            obj: dict[str, Any] = {}
            if ids[i] is not None:
                obj[id_kind] = ids[i]
            if ueo is not None:
                obj["_update_existing_only"] = ueo
            if merge:
                obj["_merge_objects"] = True
            _fill(obj, fields, i)
            return obj

        return attributes, cols, lambda: attribute_batch(ident, ueo, merge, fields, res.n), ids

    if kind == "canvas_trigger":
        return *_canvas(stream, res, id_kind, ids, cols), None, ids

    m = stream.event if kind == "events" else stream.purchase
    assert m is not None
    fields = []
    for name, v, t in _event_slots(kind, m):
        col = res.value(v, f"{kind[:-1]}.{name}", t)
        fields.append((name, col, col.keep_null and name not in ("time", "name", "product_id")))
        if col.column:
            cols[name] = col.column
    js, pcols = res.properties(m.properties, f"{kind[:-1]}.properties")
    jsv = js.values if js else None
    cols.update({f"properties.{name}": c.column for name, c in pcols if c.column})
    if js is not None and js.column:
        cols["properties"] = js.column

    def event(i: int) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        if ids[i] is not None:
            obj[id_kind] = ids[i]
        _fill(obj, fields, i)
        props = build_properties(jsv, pcols, i)
        if props:
            obj["properties"] = props
        if ueo is not None:
            obj["_update_existing_only"] = ueo
        return obj

    return event, cols, lambda: event_batch(kind, ident, fields, jsv, pcols, ueo, res.n), ids


def _event_slots(kind: str, m: Any) -> list[tuple[str, Any, str]]:
    if kind == "events":
        slots = [("name", m.name, "string"), ("time", m.time, "time")]
    else:
        slots = [
            ("product_id", m.product_id, "string"),
            ("currency", m.currency, "string"),
            ("price", m.price, "float"),
            ("time", m.time, "time"),
        ]
        if m.quantity is not None:
            slots.append(("quantity", m.quantity, "integer"))
    if m.app_id is not None:
        slots.append(("app_id", m.app_id, "string"))
    return slots


def _canvas(
    stream: Stream, res: Resolver, id_kind: str, ids: Sequence[Any], cols: dict[str, str]
) -> tuple[Callable[[int], dict[str, Any]], dict[str, str]]:
    c = stream.canvas
    assert c is not None
    rkey = _ID_KEYS[id_kind][0]
    if id_kind in cols:
        cols[rkey] = cols.pop(id_kind)
    fields, merge, _ = _attribute_fields(res, c.attributes, "canvas.attributes")
    js, pcols = res.properties(c.properties, "canvas.properties")
    pkey = c.properties_key
    jsv = js.values if js else None
    pv = [(name, col.values) for name, col in pcols]
    prio = list(c.prioritization)
    existing_only = c.send_to_existing_only

    def recipient(i: int) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        if ids[i] is not None:
            obj[rkey] = ids[i]
        if rkey == "email":
            obj["prioritization"] = list(prio)
        ctx = build_properties(jsv, pv, i)
        if ctx:
            obj[pkey] = ctx
        if not existing_only:
            obj["send_to_existing_only"] = False
        attrs: dict[str, Any] = {}
        _fill(attrs, fields, i)
        if attrs or not existing_only:
            if merge and attrs:
                attrs["_merge_objects"] = True
            obj["attributes"] = attrs
        return obj

    return recipient, cols


def _live_activity(stream: Stream, res: Resolver) -> tuple[Callable[[int], dict[str, Any]], dict[str, str]]:
    m = stream.live_activity
    assert m is not None
    slots: list[tuple[str, Any, str]] = [
        ("app_id", m.app_id, "string"),
        ("activity_id", m.activity_id, "string"),
    ]
    for name, t in (("end_activity", "boolean"), ("dismissal_date", "time"), ("stale_date", "time")):
        if getattr(m, name) is not None:
            slots.append((name, getattr(m, name), t))
    fields: Fields = []
    cols: dict[str, str] = {}
    for name, v, t in slots:
        col = res.value(v, f"live_activity.{name}", t)
        fields.append((name, col, False))
        if col.column:
            cols[name] = col.column
    js, pcols = res.properties(m.content_state, "live_activity.content_state")
    jsv = js.values if js else None
    pv = [(name, col.values) for name, col in pcols]
    notif = (
        res.json_column(m.notification_json_column, "live_activity.notification_json_column").values
        if m.notification_json_column
        else None
    )
    if m.notification_json_column:
        cols["notification"] = m.notification_json_column

    def activity(i: int) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        _fill(obj, fields, i)
        obj["content_state"] = build_properties(jsv, pv, i)
        if notif is not None and notif[i]:
            obj["notification"] = notif[i]
        return obj

    return activity, cols


def _no_identifier(stream: Stream, chunk: Chunk, i: int, cols: dict[str, str], values: dict[str, Any]) -> Rejected:
    """An empty configured identifier is always a reject, whatever else the object carries: with an `email`
    or `phone` attribute mapped, Braze would otherwise look the user up by it and write into whichever
    profile has that address (or create a stray email-only profile)."""
    assert stream.identifier is not None
    kind = stream.identifier.kind
    column = cols.get("_identifier")
    where = f"column '{column}'" if column else "its value"
    reason = f"the identifier {kind} is empty ({where}); the row cannot be matched to a user"
    return Rejected(chunk.ref(i), "contract", "identifier.missing", reason, column, values)


class _RowValues:
    """Original row values for rejects, converted together: each call returns an empty dict that `fill`
    completes with one `take` of every row asked for (not one conversion per row, nor of the whole table)."""

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        self._asked: list[tuple[int, dict[str, Any]]] = []

    def __call__(self, i: int) -> dict[str, Any]:
        values: dict[str, Any] = {}
        self._asked.append((i, values))
        return values

    def fill(self) -> None:
        if not self._asked:
            return
        rows = self.chunk.table.take(array([i for i, _ in self._asked], pa.int64())).to_pylist()
        for (_, values), row in zip(self._asked, rows, strict=True):
            values.update(row)
        self._asked = []


def map_chunk(
    stream: Stream, chunk: Chunk, now: datetime, *, fast: bool = True, dates: DateReadings | None = None
) -> MappedChunk:
    """Map every row of a chunk to one Braze object or one reject (stage mapping or contract).

    `now` is accepted for interface stability (future-time handling is Braze's: it clamps to now).
    `fast=False` builds row by row and runs contract.check_object on every object: the reference the
    batch path (connector/mapping/fast.py) is tested against; both give equal results. `dates` keeps how
    each time column's slash dates are read across a stream's chunks (dates.py), for the report's warnings.
    """
    del now
    res = Resolver(stream, chunk.table, chunk.file, dates)
    build, cols, batch_of, ids = _build(stream, res)
    errors = res.errors
    kind = stream.kind
    batch = batch_of() if fast and batch_of is not None else None
    if batch is not None:
        return _from_batch(stream, chunk, res, batch, build, cols, ids, errors)
    objects: list[dict[str, Any]] = []
    indices: list[int] = []
    keys = []
    rejects: list[Rejected] = []
    row_values = _RowValues(chunk)
    for i in range(res.n):
        reject, obj = _row(stream, chunk, i, build, cols, ids, errors, row_values, True)
        if reject is not None:
            rejects.append(reject)
            continue
        assert obj is not None
        objects.append(obj)
        indices.append(i)
        keys.append(user_key(obj))
    row_values.fill()
    if rejects:
        log.debug("stream %s, %s: %d of %d rows rejected", stream.name, chunk.file, len(rejects), res.n)
    return MappedChunk(kind, chunk, objects, indices, keys, rejects)


def _row(
    stream: Stream,
    chunk: Chunk,
    i: int,
    build: Callable[[int], dict[str, Any]],
    cols: dict[str, str],
    ids: Sequence[Any] | None,
    errors: dict[int, tuple[str, str, str | None]],
    row_values: _RowValues,
    suspect: bool,
) -> tuple[Rejected | None, dict[str, Any] | None]:
    """Row i's reject (stage mapping or contract), or its object when it is checked (suspect) and passes."""
    err = errors.get(i) if errors else None
    if err is not None:
        return Rejected(chunk.ref(i), "mapping", err[0], err[1], err[2], row_values(i)), None
    if ids is not None and ids[i] is None:
        return _no_identifier(stream, chunk, i, cols, row_values(i)), None
    if not suspect:
        return None, None
    obj = build(i)
    bad = contract.check_object(stream.kind, obj)
    if not bad:
        return None, obj
    first = bad[0]
    reason = first.reason
    if len(bad) > 1:
        reason += f" (and {len(bad) - 1} more: {', '.join(v.rule for v in bad[1:])})"
    field = first.field or "_identifier"
    column = cols.get(field) or cols.get(field.split(".")[0])
    return Rejected(chunk.ref(i), "contract", first.rule, reason, column, row_values(i)), None


def _from_batch(
    stream: Stream,
    chunk: Chunk,
    res: Resolver,
    batch: Batch,
    build: Callable[[int], dict[str, Any]],
    cols: dict[str, str],
    ids: Sequence[Any] | None,
    errors: dict[int, tuple[str, str, str | None]],
) -> MappedChunk:
    """The MappedChunk of a batch: rows with a cast error, no identifier or a suspect value are looked at
    one by one (check_object on the suspect ones); every other row's object is taken as encoded."""
    n = res.n
    special = sorted(set(errors).union(batch.suspect, missing(ids) if ids is not None else ()))
    if len(special) * 8 < n:  # a few rows: convert just their values (the others are never read)
        res.prefetch(special)
        if isinstance(ids, ArrowCells):
            ids.prefetch(special)
    rejects: list[Rejected] = []
    rejected: list[int] = []
    checked: dict[int, dict[str, Any]] = {}
    row_values = _RowValues(chunk)
    for i in special:
        reject, obj = _row(stream, chunk, i, build, cols, ids, errors, row_values, i in batch.suspect)
        if reject is not None:
            rejects.append(reject)
            rejected.append(i)
        elif obj is not None:
            checked[i] = obj
    row_values.fill()
    encoded = batch.encoded
    if rejected:
        keep = np.ones(n, dtype=bool)
        keep[rejected] = False
        kept = np.flatnonzero(keep)
        indices: Sequence[int] = kept.tolist()
        encoded = encoded.take(from_numpy(kept))
        at = {i: int(j) for i, j in zip(checked, np.searchsorted(kept, list(checked)), strict=True)}
        log.debug("stream %s, %s: %d of %d rows rejected", stream.name, chunk.file, len(rejects), n)
    else:
        indices, at = range(n), {i: i for i in checked}
    objects = encode.encoded(encoded, {at[i]: obj for i, obj in checked.items()})
    if batch.keys is None:
        keys = [user_key(o) for o in objects]
    else:
        fast_keys = batch.keys
        keys = [fast_keys[i] for i in indices] if rejected else list(fast_keys)
        for i, obj in checked.items():
            keys[at[i]] = user_key(obj)
    return MappedChunk(stream.kind, chunk, objects, indices, keys, rejects)

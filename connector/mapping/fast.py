"""Batch object building for attributes, events and purchases, with the contract pre-checked per column.

`objects.map_chunk` uses these instead of its per-row builders: the objects are equal (same keys, same
order, same values), and `suspect` names the rows on which the reference `contract.check_object` must
still run (see connector/contract/columns.py); every other row is known to pass it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import setitem
from typing import Any

from connector.contract import columns as precheck
from connector.mapping.columns import build_properties

Fields = list[tuple[str, list[Any], bool]]  # (Braze key, values, keep_null), as in objects.py
# Keys that change what user_key() returns for an object whose external_id is set.
_KEY_SENSITIVE = frozenset(("external_id", "external_user_id", "activity_id", "content_state"))


@dataclass(slots=True)
class Batch:
    """Every row's object, the rows check_object must still see, and user keys of the other rows."""

    objects: list[dict[str, Any]]
    suspect: set[int]
    keys: list[str] | None  # "external_id:<id>" per row when valid for every non-suspect row


def _nulls(values: list[Any]) -> list[int]:
    """Indices of None in a list (C-level scans; cheap when nulls are few)."""
    out: list[int] = []
    i = -1
    index = values.index
    try:
        while True:
            i = index(None, i + 1)
            out.append(i)
    except ValueError:
        return out


def _rows(keys: list[str], keeps: list[bool], cols: Sequence[Iterable[Any]], n: int) -> list[dict[str, Any]]:
    """One dict per row: key -> value, skipping None unless the key keeps nulls; later keys override."""
    if not cols:
        return [{} for _ in range(n)]
    if any(keeps) or len(set(keys)) != len(keys):
        return [
            {k: v for k, keep, v in zip(keys, keeps, row) if keep or v is not None}  # noqa: B905
            for row in zip(*cols)  # noqa: B905 - equal lengths; strict= is slow
        ]
    # Copies of a template dict, filled column by column in C: ~25% faster than dict(zip(keys, row)).
    copy = dict.fromkeys(keys).copy
    out = [copy() for _ in range(n)]
    for k, vals in zip(keys, cols, strict=True):
        deque(map(setitem, out, repeat(k), vals), maxlen=0)
    for k, vals in zip(keys, cols, strict=True):
        if isinstance(vals, list) and None in vals:
            for i in _nulls(vals):
                del out[i][k]
    return out


def _user_keys(id_kind: str, ids: list[Any], targets: Iterable[str]) -> list[str] | None:
    if id_kind != "external_id" or _KEY_SENSITIVE.intersection(targets):
        return None
    return ["external_id:" + x if type(x) is str else "" for x in ids]


def _identifier_sources(id_kind: str, ids: list[Any], fields: Fields) -> dict[str, list[Sequence[Any]]]:
    sources: dict[str, list[Sequence[Any]]] = {id_kind: [ids]}
    for target, vals, _ in fields:
        if target in precheck.IDENTIFIER_KEYS:
            sources.setdefault(target, []).append(vals)
    return sources


def attribute_batch(
    id_kind: str, ids: list[Any], ueo: bool | None, merge: bool, fields: Fields, n: int
) -> Batch:
    """Objects as objects._build's `attributes` makes them, and the rows to check."""
    keys, keeps = [id_kind], [False]
    cols: list[Iterable[Any]] = [ids]
    if ueo is not None:
        keys.append("_update_existing_only")
        keeps.append(False)
        cols.append(repeat(ueo, n))
    if merge:
        keys.append("_merge_objects")
        keeps.append(False)
        cols.append(repeat(True, n))
    for target, vals, keep in fields:
        keys.append(target)
        keeps.append(keep)
        cols.append(vals)
    objects = _rows(keys, keeps, cols, n)
    suspect = precheck.identifier_rows(_identifier_sources(id_kind, ids, fields), n)
    for target, vals, keep in fields:
        suspect |= precheck.attribute_rows(target, vals, keep)
    return Batch(objects, suspect, _user_keys(id_kind, ids, (t for t, _, _ in fields)))


def event_batch(
    kind: str,
    id_kind: str,
    ids: list[Any],
    fields: Fields,
    js: list[Any] | None,
    props: list[tuple[str, list[Any]]],
    ueo: bool | None,
    n: int,
) -> Batch:
    """Objects as objects._build's `event` makes them (events and purchases), and the rows to check."""
    keys = [id_kind] + [name for name, _, _ in fields]
    keeps = [False] + [keep for _, _, keep in fields]
    objects = _rows(keys, keeps, [ids] + [vals for _, vals, _ in fields], n)
    if js is not None:
        for i, obj in enumerate(objects):
            p = build_properties(js, props, i)
            if p:
                obj["properties"] = p
    elif props:
        names = [name for name, _ in props]
        for obj, p in zip(objects, _rows(names, [False] * len(names), [v for _, v in props], n), strict=True):
            if p:
                obj["properties"] = p
    if ueo is not None:
        for obj in objects:
            obj["_update_existing_only"] = ueo
    suspect = precheck.identifier_rows({id_kind: [ids]}, n)
    for name, vals, keep in fields:
        suspect |= precheck.event_field_rows(name, vals, keep)
    suspect |= precheck.property_rows(kind, js, props, n)
    return Batch(objects, suspect, _user_keys(id_kind, ids, ()))

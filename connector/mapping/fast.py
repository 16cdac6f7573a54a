"""Batch object building for attributes, events and purchases, with the contract pre-checked per column.

`objects.map_chunk` uses these instead of its per-row builders: every row's object is built as JSON, column
by column (encode.py), with no dict per row, and `suspect` names the rows on which the reference
`contract.check_object` must still run (see connector/contract/columns.py); every other row is known to pass
it. The JSON is what orjson.dumps gives for the object the per-row builder makes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import pyarrow as pa
import pyarrow.compute as pc

from connector.arrow_values import array
from connector.contract import columns as precheck
from connector.mapping import encode
from connector.mapping.columns import Column, build_properties

Fields = list[tuple[str, Column, bool]]  # (Braze key, values, keep_null), as in objects.py
# Keys that change what user_key() returns for an object whose external_id is set.
_KEY_SENSITIVE = frozenset(("external_id", "external_user_id", "activity_id", "content_state"))


class ArrowCells(Sequence[Any]):
    """The Python values of an Arrow array, converted on the first read of a cell: a chunk whose rows all
    pass never reads them."""

    __slots__ = ("arrow", "_values", "_some")

    def __init__(self, arrow: pa.Array) -> None:
        self.arrow = arrow
        self._values: list[Any] | None = None
        self._some: dict[int, Any] | None = None

    def prefetch(self, rows: list[int]) -> None:
        """Convert the values of these rows only, in one call (the rows checked one by one)."""
        if self._values is None and rows:
            self._some = dict(zip(rows, self.arrow.take(array(rows, pa.int64())).to_pylist(), strict=True))

    def _list(self) -> list[Any]:
        if self._values is None:
            self._values = self.arrow.to_pylist()
        return self._values

    def __len__(self) -> int:
        return len(self.arrow)

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...
    def __getitem__(self, i: int | slice) -> Any:
        some = self._some
        if some is not None and self._values is None and type(i) is int and i in some:
            return some[i]
        return self._list()[i]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._list())


def missing(values: Sequence[Any]) -> list[int]:
    """The indices of the None values (from the Arrow array's validity when it has one)."""
    if isinstance(values, ArrowCells):
        arr = values.arrow
        return pc.indices_nonzero(pc.is_null(arr)).to_pylist() if arr.null_count else []  # type: ignore[no-any-return]
    return [i for i, x in enumerate(values) if x is None] if None in values else []


@dataclass(slots=True)
class Ident:
    """The configured identifier: its key, per-row values (None when empty) and, when it has one, the
    Arrow array of the same values."""

    kind: str
    values: Sequence[Any]
    arrow: pa.Array | None = None

    @property
    def data(self) -> Sequence[Any] | pa.Array:
        return self.arrow if self.arrow is not None else self.values


@dataclass(slots=True)
class Batch:
    """Every row's object as JSON (`{...},` per row, encode.encode_objects), the rows check_object must
    still see, and user keys of the other rows."""

    encoded: pa.Array
    suspect: set[int]
    keys: list[str] | None  # "external_id:<id>" per row when valid for every non-suspect row


def _json(col: Column) -> tuple[pa.Array, bool]:
    if col.arrow is not None:
        out = encode.arrow_json(col.arrow)
        if out is not None:
            return out
    return encode.values_json(col.values)


def _ident_json(ident: Ident) -> tuple[pa.Array, bool]:
    if ident.arrow is not None:
        return _json(Column(None, False, None, ident.arrow))
    return encode.values_json(ident.values)


def _parts(pieces: list[encode.Piece]) -> list[encode.Piece] | None:
    """The pieces, or None when a key comes twice (the dict built row by row then orders keys by which
    one is present on each row: left to the per-row builder)."""
    return pieces if len({p.key for p in pieces}) == len(pieces) else None


def _user_keys(ident: Ident, targets: Iterable[str]) -> list[str] | None:
    if ident.kind != "external_id" or _KEY_SENSITIVE.intersection(targets):
        return None
    if ident.arrow is not None and encode.is_text(ident.arrow):
        keys = pc.binary_join_element_wise(encode.text("external_id:"), ident.arrow.cast(encode.STR), encode.text(""))
        return (pc.fill_null(keys, encode.text("")) if keys.null_count else keys).to_pylist()  # type: ignore[no-any-return]
    return ["external_id:" + x if type(x) is str else "" for x in ident.values]


def _identifier_sources(ident: Ident, fields: Fields) -> dict[str, list[Any]]:
    sources: dict[str, list[Any]] = {ident.kind: [ident.data]}
    for target, col, _ in fields:
        if target in precheck.IDENTIFIER_KEYS:
            sources.setdefault(target, []).append(col.data)
    return sources


def attribute_batch(ident: Ident, ueo: bool | None, merge: bool, fields: Fields, n: int) -> Batch | None:
    """Objects as objects._build's `attributes` makes them, and the rows to check (None: a key comes twice)."""
    named: list[encode.Piece] = [encode.piece(ident.kind, _ident_json(ident), False)]
    if ueo is not None:
        named.append(encode.constant("_update_existing_only", ueo))
    if merge:
        named.append(encode.constant("_merge_objects", True))
    for target, col, keep in fields:
        named.append(encode.piece(target, _json(col), keep))
    suspect = precheck.identifier_rows(_identifier_sources(ident, fields), n)
    for target, col, keep in fields:
        suspect |= precheck.attribute_rows(target, col.data, keep)
    parts = _parts(named)
    if parts is None:
        return None
    return Batch(encode.encode_objects(parts, n), suspect, _user_keys(ident, (t for t, _, _ in fields)))


def event_batch(
    kind: str,
    ident: Ident,
    fields: Fields,
    js: list[Any] | None,
    props: list[tuple[str, Column]],
    ueo: bool | None,
    n: int,
) -> Batch | None:
    """Objects as objects._build's `event` makes them (events and purchases), and the rows to check."""
    named: list[encode.Piece] = [encode.piece(ident.kind, _ident_json(ident), False)]
    for name, col, keep in fields:
        named.append(encode.piece(name, _json(col), keep))
    if js is not None:
        pv = [(name, c.values) for name, c in props]
        merged = [build_properties(js, pv, i) or None for i in range(n)]
        named.append(encode.piece("properties", encode.values_json(merged), False))
    elif props:
        named.append(encode.nested("properties", [encode.piece(k, _json(c), False) for k, c in props], n))
    if ueo is not None:
        named.append(encode.constant("_update_existing_only", ueo))
    suspect = precheck.identifier_rows({ident.kind: [ident.data]}, n)
    for name, col, keep in fields:
        suspect |= precheck.event_field_rows(name, col.data, keep)
    suspect |= precheck.property_rows(kind, js, [(name, c.data) for name, c in props], n)
    parts = _parts(named)
    if parts is None:
        return None
    return Batch(encode.encode_objects(parts, n), suspect, _user_keys(ident, ()))

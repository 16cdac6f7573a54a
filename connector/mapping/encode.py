"""JSON of Braze objects built column by column in Arrow: no Python dict (nor object) per row.

Each mapped column becomes a `Piece`: the JSON text of its value in every row (null where the key is left
out). An object is its pieces' key prefixes and texts concatenated by one Arrow kernel call per chunk
(`encode_objects`). The result is an `EncodedObjects` (records.py): the packer slices request bodies out of
it, and a dict is decoded only for the rows someone reads. The bytes are those orjson.dumps gives for the
dicts objects.py builds (same keys in the same order, same value text), which
tests/unit/test_mapping_encode.py checks over random chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from connector.arrow_values import array, null, scalar, to_numpy
from connector.records import EncodedObjects

STR = pa.large_string()


@dataclass(frozen=True, slots=True)
class Piece:
    """One key of every row's object: `text[i]` is the value's JSON (for `quoted` strings the escaped
    characters, without their quotes), null where the key is left out, or "null" kept with keep_null;
    `const`, when set, is the same JSON on every row."""

    key: str
    text: pa.Array | None
    quoted: bool = False
    const: str | None = None


def text(s: str) -> pa.Scalar:
    return scalar(s, STR)


def is_text(arr: pa.Array) -> bool:
    return bool(pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type))


def key_prefix(key: str) -> str:
    """`"key":` as orjson writes the key."""
    return orjson.dumps(key).decode() + ":"


def _needs_escape(arr: pa.Array) -> bool:
    """Whether any byte of the strings is one orjson escapes: a control character, '"' or '\\'."""
    data = arr.buffers()[2]
    if data is None or data.size == 0:
        return False
    raw = np.frombuffer(data, dtype=np.uint8)
    return bool(raw.min() < 0x20 or (raw == ord('"')).any() or (raw == ord("\\")).any())


def _strings(arr: pa.Array) -> pa.Array:
    """The characters of each string as orjson writes them between quotes."""
    arr = arr.cast(STR)
    if _needs_escape(arr):
        arr = pc.replace_substring(arr, "\\", "\\\\")
        arr = pc.replace_substring(arr, '"', '\\"')
        for c in range(32):
            if pc.any(pc.match_substring(arr, chr(c))).as_py():
                arr = pc.replace_substring(arr, chr(c), orjson.dumps(chr(c))[1:-1].decode())
    return arr


def _floats(arr: pa.Array) -> pa.Array:
    """orjson's float text (shortest round trip, as for Python floats), null where the cell is null."""
    arr = arr.cast(pa.float64())
    if len(arr) == 0:
        return array([], STR)
    dense = to_numpy(pc.fill_null(arr, scalar(0.0)))
    joined = orjson.dumps(dense, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].decode()
    out = pc.list_flatten(pc.split_pattern(array([joined], STR), ","))
    return pc.if_else(pc.is_valid(arr), out, null(STR)) if arr.null_count else out


def arrow_json(arr: pa.Array) -> tuple[pa.Array, bool] | None:
    """The JSON text of every cell of an Arrow column (null where null) and whether it goes between quotes
    (strings), or None for a type not handled here."""
    t = arr.type
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_null(t):
        return pa.nulls(len(arr), STR), False
    if is_text(arr):
        return _strings(arr), True
    if pa.types.is_boolean(t):
        return pc.if_else(arr, text("true"), text("false")), False
    if pa.types.is_integer(t):
        return arr.cast(STR), False
    if pa.types.is_floating(t):
        return _floats(arr), False
    return None


_SIMPLE = {str: pa.large_string(), bool: pa.bool_(), int: pa.int64(), float: pa.float64()}


def values_json(values: Sequence[Any]) -> tuple[pa.Array, bool]:
    """arrow_json of Python values (None = null): in Arrow when they are all of one plain type, else one
    orjson call per value."""
    types = set(map(type, values))
    types.discard(type(None))
    if len(types) == 1 and (t := types.pop()) in _SIMPLE:
        try:
            arr = array(values, _SIMPLE[t])
        except (pa.ArrowInvalid, OverflowError):  # an int beyond 64 bits
            pass
        else:
            out = arrow_json(arr)
            assert out is not None
            return out
    dumps = orjson.dumps
    return array([None if v is None else dumps(v).decode() for v in values], STR), False


def piece(key: str, json: tuple[pa.Array, bool], keep_null: bool) -> Piece:
    """A key's piece from arrow_json / values_json text; with keep_null, nulls are written as null."""
    arr, quoted = json
    if keep_null and arr.null_count:
        if quoted:  # "null" must not be quoted: quote the strings here
            arr, quoted = pc.binary_join_element_wise(text('"'), arr, text('"'), text("")), False
        arr = pc.fill_null(arr, text("null"))
    return Piece(key, arr, quoted)


def constant(key: str, value: Any) -> Piece:
    """The same value on every row."""
    return Piece(key, None, const=orjson.dumps(value).decode())


def nested(key: str, pieces: list[Piece], n: int) -> Piece:
    """`key: {pieces}`, left out where every piece is null."""
    if not pieces:
        return Piece(key, pa.nulls(n, STR))
    inner = _assemble(pieces, n, "{", "}")
    empty = pc.equal(pc.binary_length(inner), scalar(2))
    return Piece(key, pc.if_else(empty, null(STR), inner) if pc.any(empty).as_py() else inner)


def encode_objects(pieces: list[Piece], n: int) -> pa.Array:
    """Every row's object `{...},` from its pieces (null texts left out), as one Arrow column."""
    return _assemble(pieces, n, "{", "},")


def _assemble(pieces: list[Piece], n: int, open_: str, close: str) -> pa.Array:
    """open_ + the pieces of each row as `"key":value` joined by commas + close, in one kernel call.

    Pieces without nulls go in as (prefix scalar, text array); a piece with nulls becomes one array of
    whole fragments (null where left out), which the join replaces by "". The first piece leads without a
    comma when it has no nulls; otherwise every piece leads with one and the first is cut off after."""
    first_full = not pieces or pieces[0].text is None or pieces[0].text.null_count == 0
    args: list[str | pa.Array] = [open_] if first_full else []
    for k, p in enumerate(pieces):
        lead = "" if k == 0 and first_full else ","
        quote = '"' if p.quoted else ""
        prefix = lead + key_prefix(p.key) + quote
        if p.text is None:
            args.append(prefix + (p.const or "null"))
        elif p.text.null_count:
            args.append(pc.binary_join_element_wise(text(prefix), p.text, text(quote), text("")))
        else:
            args += [prefix, p.text, quote]
    if first_full:
        args.append(close)
    merged: list[pa.Array | pa.Scalar] = []
    pending = ""
    for a in args:
        if isinstance(a, str):
            pending += a
        else:
            if pending:
                merged.append(text(pending))
            merged.append(a)
            pending = ""
    if pending:
        merged.append(text(pending))
    if not any(isinstance(a, pa.Array) for a in merged):
        inner = array(["".join(a.as_py() for a in merged)] * n, STR)
    elif len(merged) == 1:
        inner = pc.fill_null(merged[0], text(""))
    else:
        inner = pc.binary_join_element_wise(*merged, text(""), null_handling="replace", null_replacement="")
    if first_full:
        return inner
    inner = pc.utf8_slice_codeunits(inner, 1)  # without the first fragment's comma
    return pc.binary_join_element_wise(text(open_), inner, text(close), text(""))


def encoded(objects: pa.Array, cached: dict[int, dict[str, Any]] | None = None) -> EncodedObjects:
    """An EncodedObjects over an encode_objects column (or a take/filter of one)."""
    if isinstance(objects, pa.ChunkedArray):
        objects = objects.combine_chunks()
    objects = objects.cast(STR)
    n = len(objects)
    _, obuf, dbuf = objects.buffers()
    offsets = np.frombuffer(obuf, dtype=np.int64)[objects.offset : objects.offset + n + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    data = b"" if dbuf is None else memoryview(dbuf)[start:end]  # a view: the JSON is not copied
    return EncodedObjects(data, cast(Sequence[int], offsets - start), cached)  # a numpy array indexes alike

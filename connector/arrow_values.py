"""Arrow arrays and scalars from Python values, and numpy views of Arrow arrays, without importing pandas.

pyarrow imports pandas (0.15-0.25 s of CPU) the first time it converts Python values: `pa.array` and
`pa.scalar` of anything (a list, a numpy array, one int), a Python value passed to a `pyarrow.compute`
function (converted with `pa.scalar`), and `Array.to_numpy()`. A run that never needs pandas should not pay
for it before its first request, so the stages build their arrays here: from numpy buffers
(`pa.Array.from_buffers`), which pyarrow takes as they are. Only lists of one plain type are built this way
(str, int, float, bool, with None for null); anything else, or a value the buffers would not hold as
`pa.array` does, goes to `pa.array` itself (and pandas is imported then), so the result is always the
array `pa.array(values, type)` gives. Once pandas is loaded anyway, `array` is `pa.array` (faster on large
lists: these builders loop in Python's C helpers, 2-5x slower than pyarrow's converter past ~5,000 values).
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa

_NONE = type(None)


def _validity(values: Sequence[Any], n: int) -> tuple[pa.Buffer, int]:
    """The validity bitmap of `values`, which hold a None, and the null count (C loops: map, fromiter)."""
    valid = np.fromiter(map(operator.is_not, values, repeat(None)), dtype=np.bool_, count=n)
    return pa.py_buffer(np.packbits(valid, bitorder="little")), n - int(np.count_nonzero(valid))


def _strings(values: Sequence[Any], t: pa.DataType) -> pa.Array:
    n = len(values)
    kinds = set(map(type, values))
    if not kinds <= {str, _NONE}:
        raise TypeError("not only str and None")
    validity, nulls = _validity(values, n) if _NONE in kinds else (None, 0)
    text = "".join(filter(None, values) if nulls else values)
    if text.isascii():  # one byte per character: the lengths are the byte lengths (length_hint(None) = 0)
        data = text.encode("ascii")
        lengths = np.fromiter(map(operator.length_hint if nulls else len, values), dtype=np.int64, count=n)
    else:
        encoded = [b"" if v is None else v.encode("utf-8") for v in values]  # a lone surrogate raises here
        data = b"".join(encoded)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if pa.types.is_string(t):
        if offsets[-1] >= 2**31:
            raise OverflowError("over 2 GiB of text: pa.array makes it a chunked array")
        offsets = offsets.astype(np.int32)
    buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(t, n, buffers, null_count=nulls)


def _fixed(
    allowed: frozenset[type], dtype: type[np.generic]
) -> Callable[[Sequence[Any], pa.DataType], pa.Array]:
    zero = dtype(0).item()

    def build(values: Sequence[Any], t: pa.DataType) -> pa.Array:
        n = len(values)
        kinds = set(map(type, values))
        if not kinds <= allowed:  # so numpy converts nothing pa.array would refuse
            raise TypeError("not only the array's own Python type and None")
        validity, nulls = _validity(values, n) if _NONE in kinds else (None, 0)
        dense = np.fromiter(
            (v if v is not None else zero for v in values) if nulls else values, dtype=dtype, count=n
        )
        data = np.packbits(dense, bitorder="little") if dtype is np.bool_ else dense
        return pa.Array.from_buffers(t, n, [validity, pa.py_buffer(data)], null_count=nulls)

    return build


_BUILDERS: dict[pa.DataType, Callable[[Sequence[Any], pa.DataType], pa.Array]] = {
    pa.string(): _strings,
    pa.large_string(): _strings,
    pa.int64(): _fixed(frozenset((int, _NONE)), np.int64),  # an int beyond 64 bits: OverflowError
    pa.float64(): _fixed(frozenset((float, _NONE)), np.float64),
    pa.bool_(): _fixed(frozenset((bool, _NONE)), np.bool_),
}


def _pandas_loaded() -> bool:
    return "pandas" in sys.modules


def array(values: Sequence[Any], type: pa.DataType) -> pa.Array:  # noqa: A002 - pa.array's own name
    """`pa.array(values, type)`, without pandas for lists of str, int, float or bool (None = null)."""
    build = _BUILDERS.get(type)
    if build is not None and not _pandas_loaded():
        try:
            return build(values, type)
        except (TypeError, ValueError, OverflowError, UnicodeError):
            pass  # pa.array decides (and raises as it does)
    return pa.array(values, type=type)


_INFERRED = {str: pa.string(), bool: pa.bool_(), int: pa.int64(), float: pa.float64()}


def scalar(value: Any, type: pa.DataType | None = None) -> pa.Scalar:  # noqa: A002 - pa.scalar's own name
    """`pa.scalar(value, type)`, without pandas for None, str, int, float and bool."""
    if type is None:
        type = _INFERRED.get(value.__class__) if value is not None else pa.null()
        if type is None:
            return pa.scalar(value)
        if value.__class__ is int and not -(2**63) <= value < 2**63:
            return pa.scalar(value)  # pa.scalar decides (pyarrow 26 refuses it)
    if value is None:
        return null(type)
    return array([value], type)[0]


@lru_cache(maxsize=64)
def null(type: pa.DataType) -> pa.Scalar:  # noqa: A002 - as pa.scalar names it
    """The null scalar of `type`."""
    return pa.nulls(1, type)[0]


_NUMPY = {
    pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
    pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32, pa.uint64(): np.uint64,
    pa.float32(): np.float32, pa.float64(): np.float64,
}  # fmt: skip


_ARROW = {np.dtype(d): t for t, d in _NUMPY.items()}


def from_numpy(values: np.ndarray) -> pa.Array:
    """`pa.array(values)` of a one-dimensional numpy array of numbers or booleans, without pandas."""
    if values.ndim != 1:
        return pa.array(values)
    if values.dtype == np.bool_:
        return pa.Array.from_buffers(
            pa.bool_(),
            len(values),
            [None, pa.py_buffer(np.packbits(values, bitorder="little"))],
            null_count=0,
        )
    t = _ARROW.get(values.dtype)
    if t is None:
        return pa.array(values)
    data = np.ascontiguousarray(values)
    return pa.Array.from_buffers(t, len(data), [None, pa.py_buffer(data)], null_count=0)


def to_numpy(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """`arr.to_numpy(zero_copy_only=False)`, read from the buffers (no pandas) for numbers and booleans
    without nulls. The result may be a read-only view of Arrow's memory."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    t, n, start = arr.type, len(arr), arr.offset
    if arr.null_count == 0:
        if pa.types.is_boolean(t):
            if n == 0:
                return np.zeros(0, dtype=np.bool_)
            bits = np.frombuffer(arr.buffers()[1], dtype=np.uint8)
            return np.unpackbits(bits, count=start + n, bitorder="little")[start:].view(np.bool_)
        dtype = _NUMPY.get(t)
        if dtype is not None:
            if n == 0:
                return np.zeros(0, dtype=dtype)
            return np.frombuffer(arr.buffers()[1], dtype=dtype)[start : start + n]
    return arr.to_numpy(zero_copy_only=False)


__all__ = ["array", "from_numpy", "null", "scalar", "to_numpy"]

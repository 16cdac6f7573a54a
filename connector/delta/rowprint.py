"""Delta sync's fast path: a print of each source row, compared before the row is validated or mapped.

An unchanged row used to cost read + validate + map + compare. The state keeps, with each user's confirmed
record, the *source print* of the row that record was sent for (prints.py, stores.py); a later row of that
user with the same print has the same values in every column the stream's mapping and its suite read, under
the same mapping, suite and connector version, so validating and mapping it again would give the same object
and the object comparison would find it unchanged (state.py). Such a row is skipped at once and counted as
unchanged (stages.py: skipped "unchanged since the last delivered run (delta)", delta `unchanged`, the
incremental watermark settles it as skipped, mirror mode has seen it already). Every other row goes through
validation, mapping and the object comparison as before, which still decides alone.

The print is computed for a whole chunk by Arrow kernels and numpy (no Python work per value; one XXH3 call
per row): the row's text cells (strings, binary, decimals as Arrow's text) joined into one byte string and
hashed with XXH3-64 (a fixed specification), then every number, boolean and time cell (as the 64 bits it is
stored as: a float's own bits, a timestamp's integer in its unit), every text cell's length (so where each
text ends is known) and which cells are null, folded in, column by column in name order, with MurmurHash3's
64-bit finaliser (a bijection, plain integer arithmetic). Equal prints therefore mean equal cells, up to a
chance of 2**-64 per row. It is seeded with a digest of the stream's whole configuration, the suites' expectations, the columns' Arrow
types, FORMAT, the connector's version and pyarrow's major version: changing any of them changes every print,
so the first run after it finds no print equal and the object comparison decides every row (and marks them
for the next run). 0 is never a print (it means "none" in the state).

Where it does not apply (`row_print` returns None, every row takes the object comparison):
- streams other than attributes (events and purchases have their own digest), and attributes streams with an
  operation (`op` other than set, or `type: object`, whose JSON may hold one): operations are always sent;
- suites with table-level checks (aggregates, a GX table expectation, or `mostly` below 1): they must see
  every row, and a skipped row would not be validated (the choice here: no fast path rather than validating
  rows that are then skipped, which would leave little to save);
- suites with a bound relative to the run's time (`now-24h`): a row valid when it was sent may not be now;
- time Values without `format` (slash dates are read as the column's other rows show, so a row's object may
  depend on other rows): only when such a column is text in the chunk; typed timestamps are not affected.
A chunk whose columns are missing or of a type without a text cast (lists, structs) gets no prints either.
Mapping takes `now` but does not use it (mapping/objects.py), so no print covers a time-dependent value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from connector.arrow_values import scalar, to_numpy
from connector.config import Stream
from connector.delta.keyindex import hashes
from connector.version import __version__

FORMAT = 1  # bump when the row string or what the seed covers changes


def why_not(stream: Stream) -> str | None:
    """Why the stream's rows never take the fast path (None: they may)."""
    if stream.kind != "attributes":
        return f"kind {stream.kind} (events and purchases are decided by their digest)"
    for a in stream.attributes:
        if a.op != "set":
            return f"attribute {a.target} has op {a.op} (operations are always sent)"
        if a.type == "object":
            return f"attribute {a.target} has type object (its JSON may hold an operation)"
    return None


def _slash_dates(stream: Stream) -> list[str]:
    """The columns read as times without a format (their slash dates are read as the column's rows show)."""
    values = [a for a in stream.attributes]
    return [v.column for v in values if v.type == "time" and v.format is None and v.column is not None]


_GOLDEN = 0x9E3779B97F4A7C15
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)


def _column_constant(i: int) -> np.uint64:
    """A constant of its own for the i-th column (never 0)."""
    return np.uint64(((i + 1) * _GOLDEN) & 0xFFFFFFFFFFFFFFFF or 1)


def _fmix_in_place(x: np.ndarray) -> None:
    """MurmurHash3's 64-bit finaliser over a uint64 array, in place (a bijection: distinct inputs stay
    distinct). In place: a chunk's print makes no array per step."""
    x ^= x >> _S33
    x *= _M1
    x ^= x >> _S33
    x *= _M2
    x ^= x >> _S33


class RowPrint:
    """The print of each row of a stream's chunks; built by `row_print`."""

    def __init__(self, columns: Iterable[str], seed: bytes, text_times: Sequence[str] = ()) -> None:
        self.columns = sorted(set(columns))
        self._constants = [_column_constant(i) for i in range(len(self.columns))]
        self._seed = seed
        self._text_times = list(text_times)

    @property
    def seed(self) -> bytes:
        """What every print is seeded with (the stream's configuration, the suite, FORMAT, the versions)."""
        return self._seed

    def prints(self, table: pa.Table) -> np.ndarray | None:
        """One int64 per row, never 0; None when a column is missing or of a type without a print, or a
        time column without a format is text (module doc)."""
        names = set(table.column_names)
        if any(c not in names for c in self.columns):
            return None
        if any(_text(table.schema.field(c).type) for c in self._text_times):
            return None
        n = table.num_rows
        texts: list[pa.ChunkedArray] = []
        numbers: list[np.ndarray] = []
        nulls = np.zeros(n, np.uint64)
        for i, c in enumerate(self.columns):
            col = table.column(c)
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)
            kind = _kind(col.type)
            if kind is None:
                return None
            if col.null_count:  # a null cell flips its column's own constant: other rows are not touched
                nulls ^= to_numpy(col.is_null()).astype(np.uint64) * self._constants[i]
            if kind == "text":
                data = (
                    col
                    if pa.types.is_binary(col.type) or pa.types.is_string(col.type)
                    else col.cast(pa.large_string())
                )
                texts.append(data)
                numbers.append(
                    _filled(pc.binary_length(data))
                )  # the lengths: where one text ends in the joined row
            else:
                numbers.append(_number(col))
        kinds = orjson.dumps([[c, str(table.schema.field(c).type)] for c in self.columns])
        out = np.full(
            n, xxhash.xxh3_64_intdigest(kinds, seed=xxhash.xxh3_64_intdigest(self._seed)), np.uint64
        )
        if texts:
            out ^= hashes(_joined(texts).to_pylist()).view(np.uint64)
        with np.errstate(over="ignore"):
            for i, v in enumerate(numbers):
                out += self._constants[i]
                out ^= v
                _fmix_in_place(out)
            out ^= nulls
            _fmix_in_place(out)
        out = out.view(np.int64)
        out[out == 0] = 1
        return out


def _joined(texts: list[pa.ChunkedArray]) -> pa.ChunkedArray:
    """Each row's text cells joined into one byte string (a null cell: no bytes). Without nulls, and within
    32-bit offsets, joined as they are (the same bytes, without a 64-bit copy of each column first)."""
    if not any(t.null_count for t in texts) and sum(t.nbytes for t in texts) < _SMALL:
        small = [t if pa.types.is_binary(t.type) else t.cast(pa.binary()) for t in texts]
        if all(pa.types.is_binary(t.type) for t in small):
            return pc.binary_join_element_wise(*small, _empty(pa.binary()))
    large = [t.cast(pa.large_binary()) for t in texts]
    return pc.binary_join_element_wise(*large, _empty(pa.large_binary()), null_handling="replace",
                                       null_replacement=b"")  # fmt: skip


_SMALL = 1 << 30  # bytes of text a chunk joins with 32-bit offsets


@lru_cache(maxsize=4)
def _empty(t: pa.DataType) -> pa.Scalar:
    """The empty byte string as a scalar of `t` (binary or large_binary), made from buffers: pa.scalar of a
    Python value imports pandas (arrow_values.py), which an unchanged re-run otherwise never needs."""
    offsets = np.zeros(2, np.int64 if pa.types.is_large_binary(t) else np.int32)
    return pa.Array.from_buffers(t, 1, [None, pa.py_buffer(offsets), pa.py_buffer(b"")])[0]


def _kind(t: pa.DataType) -> str | None:
    """How a column's cells enter the print: as text (their bytes) or as a 64-bit number; None: not at all."""
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    ):
        return "text"
    if pa.types.is_decimal(t) or pa.types.is_fixed_size_binary(t):
        return "text"
    if (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t)
            or pa.types.is_null(t)):  # fmt: skip
        return None if pa.types.is_interval(t) else "number"
    return None


def _filled(col: pa.ChunkedArray) -> np.ndarray:
    """An integer column as uint64 (nulls as 0: the null bits tell them apart)."""
    col = col.cast(pa.int64(), safe=False)
    if col.null_count:
        col = pc.fill_null(col, scalar(0))
    return to_numpy(col).view(np.uint64)


def _number(col: pa.ChunkedArray) -> np.ndarray:
    """The cells of a number, boolean or time column as 64 bits: a float's own bits, else the integer it is
    stored as (the unit is in the column's type, which seeds the print)."""
    t = col.type
    if pa.types.is_null(t):
        return np.zeros(len(col), np.uint64)
    if pa.types.is_floating(t):
        floats = col.cast(pa.float64())
        if floats.null_count:
            floats = pc.fill_null(floats, scalar(0.0))
        return to_numpy(floats).view(np.uint64)
    if pa.types.is_boolean(t):
        col = col.cast(pa.int8())
    elif pa.types.is_date32(t) or pa.types.is_time32(t):  # stored as 32 bits: Arrow casts them to int32 only
        col = col.cast(pa.int32())
    return _filled(col)


def _text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def row_print(stream: Stream, mapped_columns: Iterable[str], suite_columns: Iterable[str],
              suite: Sequence[object]) -> RowPrint | None:  # fmt: skip
    """The stream's row prints (None: no fast path, see why_not and the module doc). `suite`: its expectations
    as plain values (anything JSON-serialisable), part of the seed."""
    if why_not(stream) is not None:
        return None
    seed = hashlib.sha256(orjson.dumps({
        "format": FORMAT, "connector": __version__, "pyarrow": pa.__version__.split(".")[0],
        "stream": stream.model_dump(mode="json"), "suite": suite,
    }, option=orjson.OPT_SORT_KEYS, default=str)).digest()  # fmt: skip
    return RowPrint([*mapped_columns, *suite_columns], seed, _slash_dates(stream))

"""Row-level expectations evaluated over Arrow columns (pyarrow.compute), with GX's pandas verdict per row.

`compile_native` turns one expectation into a `NativeCheck` once per runner, or returns None when a kwarg
or a value this module does not cover is present (the expectation then runs through GX). `evaluate` returns
a `Verdict` for one chunk's column, or None when the column's type is not covered (GX evaluates that
expectation on that chunk). What GX's pandas engine does, and so what this module reproduces:

- The frame GX sees is ``table.to_pandas()``: an integer column with nulls becomes float64, NaN in a float
  column is a null, strings are pandas strings. Every map expectation but not_null/null skips nulls.
- ``in_set``/``not_in_set``: ``Series.isin``; a string column only ever equals the set's strings, a
  numeric column is compared as float64 (exact up to 2**53, beyond which GX decides).
- ``between``: the cast copy of the column (suites.SuiteExpectation.alias): numbers via ``pd.to_numeric``
  (strings of at most 15 characters in plain decimal form are cast by pyarrow, which gives the same
  float; the rest go through pandas), timestamps via ``values.as_utc``; cells that do not cast are missing.
- regexes: ``re.search`` on each string (patterns.py); value lengths: ``len`` of each string.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .coverage import (
    BETWEEN,
    IN_SET,
    LENGTHS_EQUAL,
    MATCH,
    MATCH_LIST,
    NOT_IN_SET,
    NOT_MATCH,
    NOT_NULL,
    NULL,
    exact_number,
    kwargs_covered,
)
from .suites import SuiteExpectation
from .values import resolve_bound

if TYPE_CHECKING:
    from .patterns import Pattern

_EXACT = 2**53  # float64 holds every integer up to here
_PLAIN_NUMBER = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)$"
_PLAIN_CHARS = 15  # at most 15 digits: pyarrow and pandas both round these to the nearest float


@dataclass(frozen=True, slots=True)
class Verdict:
    """One expectation on one chunk: the positions of unexpected rows, and how many rows were judged."""

    unexpected: Any  # numpy int64 array, ascending
    judged: int  # GX's element_count - missing_count (not_null/null: every row)


class NativeCheck:
    """One expectation compiled for Arrow columns; `evaluate` per chunk."""

    def __init__(self, e: SuiteExpectation, judge: Callable[[Any], Any], *, counts_all: bool = False) -> None:
        self.e = e
        self._judge = judge  # column -> boolean Arrow array: True = unexpected, null = skipped (missing)
        self._counts_all = counts_all

    def evaluate(self, column: Any) -> Verdict | None:
        """The verdict on one chunk's column (a pyarrow ChunkedArray), None when its type is not covered."""
        import numpy as np
        import pyarrow.compute as pc

        from connector.arrow_values import scalar, to_numpy

        column = _plain(column)
        bad = self._judge(column)
        if bad is None:
            return None
        judged = len(column) if self._counts_all else len(column) - int(pc.sum(pc.is_null(bad)).as_py() or 0)
        flags = to_numpy(pc.fill_null(bad, scalar(False)))
        return Verdict(np.flatnonzero(flags), judged)


def compile_native(e: SuiteExpectation, now: datetime) -> NativeCheck | None:
    """The NativeCheck for `e`, or None when GX must evaluate it."""
    kw, t = e.kwargs, e.type
    if not kwargs_covered(t, kw):
        return None
    if t in (NOT_NULL, NULL):
        return NativeCheck(e, _nulls(t == NOT_NULL), counts_all=True)
    if t in (IN_SET, NOT_IN_SET):
        return NativeCheck(e, _membership(list(kw["value_set"]), inside=t == IN_SET))
    if t == BETWEEN:
        return _between(e, now)
    if t in (MATCH, NOT_MATCH, MATCH_LIST):
        from .patterns import compile_pattern  # (Python's regex parser, RE2's dialect: only for regex suites)

        regexes = [kw["regex"]] if t != MATCH_LIST else list(kw["regex_list"])
        patterns = [compile_pattern(r) for r in regexes]
        if any(p is None for p in patterns):
            return None
        every = t == MATCH_LIST and kw.get("match_on", "any") == "all"
        return NativeCheck(e, _regex([p for p in patterns if p], found_is_bad=t == NOT_MATCH, every=every))
    if t == LENGTHS_EQUAL:
        return NativeCheck(e, _lengths(kw["value"], kw["value"], False, False))
    lo, hi = kw.get("min_value"), kw.get("max_value")
    if lo is not None and hi is not None and lo > hi:
        return None
    return NativeCheck(e, _lengths(lo, hi, bool(kw.get("strict_min")), bool(kw.get("strict_max"))))


def _plain(column: Any) -> Any:
    """Dictionary columns as their values, string views as large strings (what pandas would hold)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, column.type.value_type)
    if pa.types.is_string_view(column.type):
        column = pc.cast(column, pa.large_string())
    return column


def _is_string(t: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _missing(column: Any) -> Any:
    """Where pandas sees a null: Arrow nulls, and NaN in float columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.is_null(column, nan_is_null=pa.types.is_floating(column.type))


def _skip_missing(column: Any, bad: Any) -> Any:
    """`bad` with null wherever the cell is missing (GX filters those rows out first)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from connector.arrow_values import null

    return pc.if_else(_missing(column), null(pa.bool_()), bad)


def _nulls(null_is_bad: bool) -> Callable[[Any], Any]:
    def judge(column: Any) -> Any:
        import pyarrow.compute as pc

        missing = _missing(column)
        return missing if null_is_bad else pc.invert(missing)

    return judge


def _membership(value_set: list[Any], *, inside: bool) -> Callable[[Any], Any]:
    """in_set (inside=True) / not_in_set as ``Series.isin``."""
    strings = [v for v in value_set if isinstance(v, str)]
    numbers = [float(v) + 0.0 for v in value_set if exact_number(v)]
    only_numbers = len(numbers) == len(value_set)

    def judge(column: Any) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc

        from connector.arrow_values import array, scalar

        t = column.type
        if pa.types.is_null(t):
            return pa.nulls(len(column), pa.bool_())
        if _is_string(t):
            found = pc.is_in(column, value_set=array(strings, t))
        elif (pa.types.is_integer(t) or pa.types.is_float64(t)) and only_numbers and _exact(column):
            # + 0.0 turns -0.0 into 0.0: Arrow hashes the two apart, pandas holds them equal
            as_float = pc.add(pc.cast(column, pa.float64(), safe=False), scalar(0.0))
            found = pc.is_in(as_float, value_set=array(numbers, pa.float64()))
        else:
            return None
        return _skip_missing(column, pc.invert(found) if inside else found)

    return judge


def _exact(column: Any) -> bool:
    """Whether every value of a numeric column converts to float64 exactly (as pandas may convert it)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_integer(column.type):
        return True
    if pa.types.is_uint64(column.type):
        return False
    extremes = pc.min_max(column).as_py()
    return all(v is None or abs(v) <= _EXACT for v in (extremes["min"], extremes["max"]))


def _between(e: SuiteExpectation, now: datetime) -> NativeCheck | None:
    kw = e.kwargs
    strict_min, strict_max = bool(kw.get("strict_min")), bool(kw.get("strict_max"))
    if e.alias == "num":
        lo, hi = kw.get("min_value"), kw.get("max_value")
        if lo is not None and hi is not None and lo > hi:
            return None
        return NativeCheck(e, _numbers_between(lo, hi, strict_min, strict_max))
    if e.alias == "time":
        lo, hi = (resolve_bound(kw.get(k), now) for k in ("min_value", "max_value"))
        if lo is not None and hi is not None and lo > hi:
            return None
        return NativeCheck(e, _times_between(lo, hi, strict_min, strict_max))
    return None


def _outside(values: Any, lo: Any, hi: Any, strict_min: bool, strict_max: bool) -> Any:
    """True where a value falls outside the bounds (Arrow or pandas/numpy operands alike)."""
    import pyarrow.compute as pc

    out = None
    lo, hi = _operand(lo), _operand(hi)
    if lo is not None:
        out = pc.less_equal(values, lo) if strict_min else pc.less(values, lo)
    if hi is not None:
        high = pc.greater_equal(values, hi) if strict_max else pc.greater(values, hi)
        out = high if out is None else pc.or_(out, high)
    return out


def _operand(bound: Any) -> Any:
    """A Python number bound as the Arrow scalar `pa.scalar` would make it (built without pandas)."""
    from connector.arrow_values import scalar

    return scalar(bound) if isinstance(bound, int | float) else bound


def _numbers_between(lo: Any, hi: Any, strict_min: bool, strict_max: bool) -> Callable[[Any], Any]:
    def judge(column: Any) -> Any:
        import pyarrow as pa

        t = column.type
        if pa.types.is_null(t):
            return pa.nulls(len(column), pa.bool_())
        if _is_string(t):
            values = _parse_numbers(column)
        elif (pa.types.is_integer(t) and _exact(column)) or pa.types.is_float64(t):
            values = column
        else:
            return None
        return _skip_missing(values, _outside(_as_float(values), lo, hi, strict_min, strict_max))

    return judge


def _as_float(values: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(values, pa.float64(), safe=False)


def _parse_numbers(strings: Any) -> Any:
    """``pd.to_numeric(errors="coerce")`` of a string column as float64 (unparsed cells null or NaN)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from connector.arrow_values import null, scalar

    lengths = pc.utf8_length(strings)
    short = (pc.max(lengths).as_py() or 0) <= _PLAIN_CHARS
    if short and pc.all(pc.ascii_is_decimal(strings), min_count=0).as_py():  # digits only, as CSV integers
        return pc.cast(strings, pa.float64())
    plain = pc.and_(
        pc.match_substring_regex(strings, _PLAIN_NUMBER), pc.less_equal(lengths, scalar(_PLAIN_CHARS))
    )
    plain = pc.fill_null(plain, scalar(False))
    fast = pc.cast(pc.if_else(plain, strings, null(strings.type)), pa.float64())
    rest = pc.if_else(plain, null(strings.type), strings)
    if rest.null_count == len(rest):
        return fast
    import pandas as pd

    distinct = pc.unique(rest).drop_null()
    parsed = pd.to_numeric(pd.Series(distinct.to_pylist(), dtype=object), errors="coerce")
    lookup = pa.array(parsed.astype("float64").to_numpy(), pa.float64())
    slow = pc.take(lookup, pc.index_in(rest, value_set=distinct))
    return pc.coalesce(fast, slow)


def _times_between(lo: Any, hi: Any, strict_min: bool, strict_max: bool) -> Callable[[Any], Any]:
    def judge(column: Any) -> Any:
        import pyarrow as pa

        from .values import as_utc

        t = column.type
        if pa.types.is_null(t):
            return pa.nulls(len(column), pa.bool_())
        if not (_is_string(t) or pa.types.is_timestamp(t) or pa.types.is_date(t)):
            return None
        stamps = as_utc(column.to_pandas())
        outside = stamps.lt(lo) if lo is not None and not strict_min else None
        if lo is not None and strict_min:
            outside = stamps.le(lo)
        if hi is not None:
            high = stamps.ge(hi) if strict_max else stamps.gt(hi)
            outside = high if outside is None else outside | high
        assert outside is not None
        missing = stamps.isna().to_numpy()
        return pa.array(outside.to_numpy(dtype=bool), pa.bool_(), mask=missing)

    return judge


def _regex(patterns: list[Pattern], *, found_is_bad: bool, every: bool) -> Callable[[Any], Any]:
    def judge(column: Any) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc

        if pa.types.is_null(column.type):
            return pa.nulls(len(column), pa.bool_())
        if not _is_string(column.type):
            return None
        found = None
        for p in patterns:
            hit = p.search(column)
            found = hit if found is None else (pc.and_(found, hit) if every else pc.or_(found, hit))
        return found if found_is_bad else pc.invert(found)

    return judge


def _lengths(lo: Any, hi: Any, strict_min: bool, strict_max: bool) -> Callable[[Any], Any]:
    def judge(column: Any) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc

        if pa.types.is_null(column.type):
            return pa.nulls(len(column), pa.bool_())
        if not _is_string(column.type):
            return None
        return _outside(pc.utf8_length(column), lo, hi, strict_min, strict_max)

    return judge


def arrow_cells(column: Any, indices: list[int]) -> list[Any] | None:
    """The cells at `indices` as pandas' ``to_numpy()`` would give them, or None if the type needs pandas."""
    import pyarrow as pa

    from connector.arrow_values import array

    t = column.type
    simple = (
        _is_string(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_null(t)
        or (pa.types.is_timestamp(t) and t.unit in ("s", "ms", "us"))
    )
    if not simple or pa.types.is_uint64(t):
        return None
    values = column.take(array(indices, pa.int64())).to_pylist()
    if pa.types.is_integer(t) and column.null_count:  # pandas holds an int column with nulls as float64
        return [None if v is None else float(v) for v in values]
    return values

"""Vectorised casts of one Arrow column to Python values, with per-cell errors found by null comparison.

A cast returns a `Cast`: `values[i]` is the converted value or None (empty cell), and `errors` maps the
row index of each cell that did not convert to (rule, reason). The common path never runs a Python
try/except per cell: casts run in pyarrow/pandas and failures show up as cells that were non-null before
and null after.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from connector.arrow_values import array, null, scalar
from connector.errors import ConfigError
from connector.mapping.blanks import blank_to_null
from connector.mapping.dates import MONTH_FIRST, DayMonth
from connector.mapping.numbers import plain_numbers
from connector.mapping.timeparse import (
    BRAZE_TIME_FORMATS,
    arrow_iso,
    arrow_iso_cells,
    iso,
    local_to_utc,
    parse,
    parse_each,
)

_TRUE = ["true", "1", "yes", "y", "t"]
_FALSE = ["false", "0", "no", "n", "f"]
_INT_RE = r"^[+-]?\d+(\.0*)?$"
_FLOAT_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_EXPECTED = {
    "integer": "an integer such as 42",
    "float": "a number such as 3.5",
    "number": "a number such as 3 or 3.5",
    "boolean": "true/false, 1/0, yes/no, y/n or t/f",
    "time": "a date-time (ISO 8601 or one of Braze's documented formats)",
    "date": "a date YYYY-MM-DD",
    "object": 'a JSON object such as {"k": 1}',
    "array": "a list",
}
_RULE = {"number": "cast.float", "object": "cast.json", "array": "cast.json"}


class Cast:
    """One converted column: values (None = empty cell) and errors by row index. `arrow`, when set, is the
    column as an Arrow array whose to_pylist() is `values` (then built only when read)."""

    __slots__ = ("_values", "arrow", "errors")

    def __init__(
        self, values: list[Any] | None = None, errors: dict[int, tuple[str, str]] | None = None,
        *, arrow: pa.Array | None = None,
    ) -> None:  # fmt: skip
        self._values = values
        self.arrow = arrow
        self.errors: dict[int, tuple[str, str]] = errors if errors is not None else {}

    @property
    def values(self) -> list[Any]:
        if self._values is None:
            self._values = [] if self.arrow is None else self.arrow.to_pylist()
        return self._values


def quote(value: Any, limit: int = 60) -> str:
    """A cell value quoted for a reject reason, truncated."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text) if isinstance(value, str) else text


def zone(name: str | None, where: str) -> str:
    """Validate an IANA zone name once (ConfigError naming the pipeline key)."""
    if name is None:
        return "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{where}: unknown time zone {name!r}; use an IANA name such as 'Europe/Paris'"
        ) from None
    return name


def _fail(kind: str, raw: pa.Array, bad: list[int], errors: dict[int, tuple[str, str]],
          formats: tuple[str, ...] = ()) -> None:  # fmt: skip
    if not bad:
        return
    rule = _RULE.get(kind, f"cast.{kind}")
    expected = f"is not {_EXPECTED[kind]}"
    if len(formats) == 1:
        expected = f"does not match the format {formats[0]!r}"
    elif formats:
        expected = f"matches none of the formats {', '.join(map(repr, formats))} (tried in order)"
    for i, v in zip(bad, raw.take(array(bad, pa.int64())).to_pylist(), strict=True):
        errors.setdefault(i, (rule, f"{quote(v)} {expected}"))


def _lost(before: pa.Array, after: pa.Array) -> list[int]:
    """Indices that were non-null before a cast and null after it (the failed cells)."""
    mask = pc.and_(pc.is_valid(before), pc.is_null(after))
    if not pc.any(mask).as_py():
        return []
    return pc.indices_nonzero(mask).to_pylist()  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Fmt:
    """The strptime formats given for a time/date column (tried in order), and its slash-date reading."""

    given: tuple[str, ...] = ()
    reading: DayMonth | None = None


def cast_array(
    arr: pa.Array, kind: str, *, fmt: str | Sequence[str] | None = None, tz: str = "UTC",
    split: str | None = None, reading: DayMonth | None = None,
) -> Cast:  # fmt: skip
    """Cast a column to a Value type: auto, string, integer, float, number, boolean, time, date, array, object.

    `fmt`: one strptime format or several, tried in order on the cells still unparsed. `reading`: the
    column's day/month state for slash dates parsed without a format (dates.py)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    arr = blank_to_null(arr)
    fn = _CASTS.get(kind)
    if fn is None:
        raise ConfigError(f"unknown value type {kind!r}")
    return fn(arr, Fmt((fmt,) if isinstance(fmt, str) else tuple(fmt or ()), reading), tz, split)


def _is_str(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _auto(arr: pa.Array, fmt: Fmt, tz: str, split: str | None) -> Cast:
    t = arr.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return _time(arr, fmt, tz, split) if pa.types.is_timestamp(t) else _date(arr, fmt, tz, split)
    if pa.types.is_decimal(t):
        return _float(arr, fmt, tz, split)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return _string(arr, fmt, tz, split)
    if split is not None and _is_str(t):
        return _array(arr, fmt, tz, split)
    return Cast(arrow=arr)


def _string(arr: pa.Array, fmt: Fmt, tz: str, split: str | None) -> Cast:
    t = arr.type
    if _is_str(t):
        return Cast(arrow=arr)
    if pa.types.is_timestamp(t):
        return _time(arr, fmt, tz, split)
    if pa.types.is_date(t):
        return _date(arr, fmt, tz, split)
    if pa.types.is_boolean(t):
        return Cast([None if v is None else ("true" if v else "false") for v in arr.to_pylist()])
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        raw = arr.to_pylist()
        return Cast([None if v is None else v.decode("utf-8", "replace") for v in raw])
    if pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t):
        return Cast(arrow=pc.cast(arr, pa.string()))
    return Cast([None if v is None else orjson.dumps(v).decode() for v in arr.to_pylist()])


def _numeric_from_strings(arr: pa.Array, kind: str) -> Cast:
    direct = plain_numbers(arr, kind)
    if direct is not None:  # every cell parsed as the pattern below would have let it
        return Cast(arrow=direct) if kind == "integer" else _finite(Cast(arrow=direct), kind, arr)
    trimmed = pc.utf8_trim_whitespace(arr)
    pattern = _INT_RE if kind == "integer" else _FLOAT_RE
    ok = pc.match_substring_regex(trimmed, pattern)
    good = pc.if_else(ok, trimmed, null(arr.type))
    if kind == "integer":
        try:
            out = pc.cast(
                pc.cast(good, pa.float64()) if pc.any(pc.match_substring(good, ".")).as_py() else good,
                pa.int64(),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            out = array([_py_int(v) for v in good.to_pylist()], pa.int64())
    elif kind == "number":
        is_int = pc.match_substring_regex(trimmed, r"^[+-]?\d{1,18}$")
        floats = pc.cast(good, pa.float64()).to_pylist()
        ints = is_int.to_pylist()
        vals = [int(f) if (i and f is not None) else f for f, i in zip(floats, ints, strict=True)]
        res = Cast(vals)
        _fail(kind, arr, _lost(arr, good), res.errors)
        return _finite(res, kind, arr)
    else:
        out = pc.cast(good, pa.float64())
    res = Cast(arrow=out)
    _fail(kind, arr, _lost(arr, out), res.errors)
    return _finite(res, kind, arr) if kind != "integer" else res


def _py_int(v: str | None) -> int | None:
    if v is None:
        return None
    n = int(float(v)) if "." in v else int(v)
    return n if -(2**63) <= n < 2**63 else None


def _finite(res: Cast, kind: str, raw: pa.Array) -> Cast:
    if res.arrow is not None and pa.types.is_floating(res.arrow.type):
        f = res.arrow
        bad_mask = pc.and_(pc.is_valid(f), pc.invert(pc.is_finite(f)))
        if pc.any(bad_mask).as_py():
            _fail(kind, raw, pc.indices_nonzero(bad_mask).to_pylist(), res.errors)
            res.arrow = pc.if_else(bad_mask, null(f.type), f)
        return res
    vals = res.values
    try:
        if all(map(math.isfinite, filter(None, vals))):  # the common case, in C (filter drops None and 0)
            return res
    except (TypeError, OverflowError):
        pass
    bad = [i for i, v in enumerate(vals) if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        _fail(kind, raw, bad, res.errors)
        for i in bad:
            vals[i] = None
    return res


def _integer(arr: pa.Array, fmt: Fmt, tz: str, split: str | None) -> Cast:
    t = arr.type
    if pa.types.is_integer(t):
        return Cast(arrow=arr)
    if pa.types.is_boolean(t):
        return Cast(arrow=pc.cast(arr, pa.int64()))
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        f = pc.cast(arr, pa.float64())
        ok = pc.and_(pc.is_finite(f), pc.equal(pc.floor(f), f))
        ok = pc.and_(ok, pc.less(pc.abs(f), scalar(2.0**63)))
        good = pc.if_else(ok, f, null(pa.float64()))
        res = Cast(arrow=pc.cast(good, pa.int64()))
        _fail("integer", arr, _lost(arr, good), res.errors)
        return res
    return _numeric_from_strings(_as_string(arr), "integer")


def _float(arr: pa.Array, fmt: Fmt, tz: str, split: str | None, kind: str = "float") -> Cast:
    t = arr.type
    if pa.types.is_integer(t) and kind == "number":
        return Cast(arrow=arr)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t):
        return _finite(Cast(arrow=pc.cast(arr, pa.float64())), kind, arr)
    return _numeric_from_strings(_as_string(arr), kind)


def _number(arr: pa.Array, fmt: Fmt, tz: str, split: str | None) -> Cast:
    return _float(arr, fmt, tz, split, kind="number")


def _as_string(arr: pa.Array) -> pa.Array:
    return arr if _is_str(arr.type) else array(_string(arr, Fmt(), "UTC", None).values, pa.string())


def _boolean(arr: pa.Array, fmt: Fmt, tz: str, split: str | None) -> Cast:
    t = arr.type
    if pa.types.is_boolean(t):
        return Cast(arrow=arr)
    if _is_str(t):
        # The common column holds only "true"/"false" (or "True"/"False") as written: two comparisons
        # instead of trimming, lowering and looking up every cell (the same values either way).
        for yes, no in (("true", "false"), ("True", "False")):
            is_true = pc.equal(arr, scalar(yes))
            if pc.all(pc.or_(is_true, pc.equal(arr, scalar(no)))).as_py():  # nulls stay null
                return Cast(arrow=is_true)
    s = pc.utf8_lower(pc.utf8_trim_whitespace(_as_string(arr)))
    is_true = pc.is_in(s, value_set=array(_TRUE, pa.string()))
    is_false = pc.is_in(s, value_set=array(_FALSE, pa.string()))
    out = pc.if_else(is_true, scalar(True), pc.if_else(is_false, scalar(False), null(pa.bool_())))
    res = Cast(arrow=out)
    _fail("boolean", arr, _lost(arr, out), res.errors)
    return res


def _time(arr: pa.Array, fmt: Fmt, tz: str, split: str | None) -> Cast:
    t = arr.type
    if pa.types.is_timestamp(t):
        return Cast(arrow=iso(arr if t.tz is not None else local_to_utc(arr, tz)))
    if pa.types.is_date(t):
        return Cast(arrow=iso(local_to_utc(pc.cast(arr, pa.timestamp("s")), tz)))
    s = _as_string(arr)
    if not fmt.given:
        fast = arrow_iso(s, tz)
        if fast is not None:
            return Cast(arrow=iso(fast))
        cells = arrow_iso_cells(s, tz)  # a column with a bad cell or zoned and plain cells, without pandas
        out = cells if cells is not None else _parse_general(s, fmt, tz)
    else:
        out = _parse_general(s, fmt, tz)
    year = pc.year(out)
    # Braze treats years outside 0..3000 as strings, not times: refuse them as times.
    out = pc.if_else(
        pc.and_(pc.greater_equal(year, scalar(1)), pc.less_equal(year, scalar(3000))), out, null(out.type)
    )
    res = Cast(arrow=iso(out))
    _fail("time", s, _lost(s, out), res.errors, fmt.given)
    return res


def _parse_general(s: pa.Array, fmt: Fmt, tz: str) -> pa.Array:
    """The strings as UTC timestamps (null where none of the formats parses them), with pandas."""
    import pandas as pd  # here: pandas costs ~0.2 s to import, and most runs never parse with it

    ser = pd.Series(pc.utf8_trim_whitespace(s).to_pylist(), dtype=object)
    if fmt.given:
        parsed = parse_each(ser, fmt.given, tz)
    else:
        parsed = parse(ser, "ISO8601", tz)
        missed = parsed.isna() & ser.notna()
        for f in BRAZE_TIME_FORMATS:
            if not missed.any():
                break
            if f == MONTH_FIRST:  # 07/09/2023: day/month or month/day, decided per column (dates.py)
                f = (fmt.reading or DayMonth()).format_for(ser[missed])
            parsed[missed] = parse(ser[missed], f, tz)
            missed = parsed.isna() & ser.notna()
    return pa.array(parsed, type=pa.timestamp("us", tz="UTC"), from_pandas=True)


def _date(arr: pa.Array, fmt: Fmt, tz: str, split: str | None) -> Cast:
    t = arr.type
    if pa.types.is_date(t):
        return Cast(arrow=pc.strftime(arr, format="%Y-%m-%d"))
    if pa.types.is_timestamp(t):
        local = pc.local_timestamp(arr) if t.tz is not None else arr
        return Cast(arrow=pc.strftime(pc.cast(local, pa.timestamp("s"), safe=False), format="%Y-%m-%d"))
    s = _as_string(arr)
    trimmed = pc.utf8_trim_whitespace(s)
    try:
        if (
            fmt.given
            or not pc.all(
                pc.or_kleene(pc.match_substring_regex(trimmed, r"^\d{4}-\d{2}-\d{2}$"), pc.is_null(trimmed))
            ).as_py()
        ):
            raise pa.ArrowInvalid("needs the general parser")
        parsed = pc.cast(trimmed, pa.date32())
    except pa.ArrowInvalid:
        import pandas as pd  # here: pandas costs ~0.2 s to import, and most runs never parse with it

        ser = pd.Series(trimmed.to_pylist(), dtype=object)
        days = pd.Series(pd.NaT, index=ser.index, dtype="datetime64[ns]")
        for f in fmt.given or ("%Y-%m-%d",):
            missed = days.isna() & ser.notna()
            if not missed.any():
                break
            days[missed] = pd.to_datetime(ser[missed], format=f, errors="coerce")
        parsed = pa.array(days, from_pandas=True)
    res = Cast(arrow=pc.strftime(parsed, format="%Y-%m-%d"))
    _fail("date", s, _lost(s, parsed), res.errors, fmt.given)
    return res


def _array(arr: pa.Array, fmt: Fmt, tz: str, split: str | None) -> Cast:
    t = arr.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return Cast(
            [None if v is None else [x for x in v if x is not None and x != ""] for v in arr.to_pylist()]
        )
    parts = pc.split_pattern(_as_string(arr), split or ",").to_pylist()
    return Cast([None if p is None else ([x for x in (y.strip() for y in p) if x] or None) for p in parts])


def _object(arr: pa.Array, fmt: Fmt, tz: str, split: str | None) -> Cast:
    t = arr.type
    if pa.types.is_struct(t) or pa.types.is_map(t):
        vals = arr.to_pylist()
        return Cast([dict(v) if isinstance(v, list) else v for v in vals])
    raw = _as_string(arr).to_pylist()
    res = Cast([None] * len(raw))
    for i, text in enumerate(raw):
        if text is None:
            continue
        try:
            v = orjson.loads(text)
        except orjson.JSONDecodeError:
            v = None
        if isinstance(v, dict):
            res.values[i] = v
        else:
            res.errors[i] = ("cast.json", f"{quote(text)} is not {_EXPECTED['object']}")
    return res


_CASTS = {
    "auto": _auto,
    "string": _string,
    "integer": _integer,
    "float": _float,
    "number": _number,
    "boolean": _boolean,
    "time": _time,
    "date": _date,
    "array": _array,
    "object": _object,
}

__all__ = ["Cast", "cast_array", "quote", "zone"]

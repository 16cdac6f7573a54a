"""Parsing date-time strings to UTC, vectorised (pandas and Arrow); casts.py turns the results into cells.

`parse_each` tries strptime formats in order on the cells still unparsed; `parse` parses with one format
(strings without an offset take the zone); `arrow_iso` is Arrow's fast ISO 8601 path; `arrow_iso_cells`
is Arrow's ISO 8601 cast cell by cell, for the columns `arrow_iso` refuses whose cells pandas would read
alike; `iso` formats timestamps as Braze's ISO 8601 UTC text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connector.arrow_values import from_numpy, null, scalar

if TYPE_CHECKING:
    import pandas as pd

OFFSET_RE = r"\d{2}:\d{2}(?::\d{2}(?:[.:]\d+)?)?\s*(?:Z|z|[+-]\d{2}(?::?\d{2})?)$"
# Braze's documented non-ISO time formats (braze-api.md §3.3), tried only on cells ISO parsing missed.
BRAZE_TIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S:%f%z",
    "%Y-%m-%dT%H:%M:%S:%f",
    "%m/%d/%Y",
    "%a %m %d %H:%M:%S.%z %Y",
)


def iso(ts: pa.Array) -> pa.Array:
    """ISO 8601 UTC with milliseconds ("2023-01-02T03:04:05.000Z"); a plain cast is ~30x faster than strftime."""
    ms = pc.cast(pc.cast(ts, pa.timestamp("ms", tz="UTC"), safe=False), pa.timestamp("ms"))
    fixed = _iso_fixed(ms)
    if fixed is not None:
        return fixed
    text = pc.replace_substring(pc.cast(ms, pa.string()), " ", "T", max_replacements=1)
    return pc.binary_join_element_wise(text, scalar("Z"), scalar(""))


def _iso_fixed(ms: pa.Array) -> pa.Array | None:
    """iso() when every year has 4 digits: Arrow's "YYYY-MM-DD HH:MM:SS.mmm" cells are then 23 bytes each,
    and the "T" and "Z" are written into one (n, 24) byte matrix (no string kernel per cell); None otherwise."""
    n = len(ms)
    if n == 0:
        return None
    filled = pc.fill_null(ms, scalar(0).cast(ms.type)) if ms.null_count else ms
    text = pc.cast(filled, pa.large_string())
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset : text.offset + n + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    if end - start != 23 * n or (np.diff(offsets) != 23).any():
        return None
    out = np.empty((n, 24), dtype=np.uint8)
    out[:, :23] = np.frombuffer(text.buffers()[2], dtype=np.uint8)[start:end].reshape(n, 23)
    out[:, 10] = ord("T")
    out[:, 23] = ord("Z")
    bounds = np.arange(0, 24 * (n + 1), 24, dtype=np.int64)
    result = pa.LargeStringArray.from_buffers(n, pa.py_buffer(bounds), pa.py_buffer(out))
    return pc.if_else(pc.is_valid(ms), result, null(pa.large_string())) if ms.null_count else result


def local_to_utc(naive: pa.Array, tz: str) -> pa.Array:
    """Naive timestamps read in zone `tz`, as UTC (for UTC itself a cast that only relabels the type)."""
    if tz == "UTC":
        return naive.cast(pa.timestamp(naive.type.unit, tz="UTC"))
    return pc.assume_timezone(naive, tz, ambiguous="earliest", nonexistent="latest")


def arrow_iso(s: pa.Array, tz: str) -> pa.Array | None:
    """Arrow's C++ ISO 8601 cast for the common case; None when any cell needs the slower parser."""
    if _one_shape(s):  # every cell is shaped as the first: trimming and the offset regex decide alike
        trimmed = s
        aware_all = bool(pc.match_substring_regex(s.slice(0, 1), OFFSET_RE)[0].as_py())
        aware_none = not aware_all
    else:
        trimmed = pc.utf8_trim_whitespace(s)
        aware = pc.match_substring_regex(trimmed, OFFSET_RE)
        aware_all = bool(pc.all(pc.or_kleene(aware, pc.is_null(trimmed))).as_py())
        aware_none = not pc.any(aware).as_py()
    try:
        if aware_all:
            return pc.cast(trimmed, pa.timestamp("ns", tz="UTC"))
        if aware_none:
            return local_to_utc(pc.cast(trimmed, pa.timestamp("ns")), tz)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return None


# The ISO 8601 cells Arrow's cast and pandas' "ISO8601" both read, to the same instant when both accept
# them, and neither when one refuses them (a day, month, hour, ... out of range), which none of
# BRAZE_TIME_FORMATS can then parse either (no ':' before the fraction, no '/', no weekday name):
# date, or date, 'T' or ' ', hh:mm[:ss[.1-6 digits]] and an optional Z or +hh[[:]mm] that OFFSET_RE sees.
# tests/unit/test_mapping_timeparse.py compares the two parsers on such cells.
_ISO_SHAPE = r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?$"
_MAX_REFUSED = 64  # more cells Arrow refuses than this in one column: the general parser is cheaper


def arrow_iso_cells(s: pa.Array, tz: str) -> pa.Array | None:
    """UTC timestamps (microseconds) of a string column, null where a cell is not a valid date-time: what
    the general parser (`parse` with "ISO8601", then BRAZE_TIME_FORMATS) gives, without pandas. None when
    a cell has another shape than _ISO_SHAPE, when a cell without an offset would be read in a zone other
    than UTC (pandas refuses a local time that a DST change skips or repeats; Arrow's `local_to_utc` does
    not), or when over _MAX_REFUSED cells do not parse: the general parser decides then."""
    trimmed = pc.utf8_trim_whitespace(s)
    if not pc.all(pc.match_substring_regex(trimmed, _ISO_SHAPE), min_count=0).as_py():  # nulls skipped
        return None
    aware = pc.fill_null(pc.match_substring_regex(trimmed, OFFSET_RE), scalar(False))
    if tz != "UTC" and not pc.all(pc.or_(aware, pc.is_null(trimmed))).as_py():
        return None
    utc = pa.timestamp("us", tz="UTC")
    zoned = _cast_cells(pc.if_else(aware, trimmed, null(trimmed.type)), utc)
    plain = _cast_cells(pc.if_else(aware, null(trimmed.type), trimmed), pa.timestamp("us"))
    if zoned is None or plain is None:
        return None
    return pc.if_else(aware, zoned, plain.cast(utc))  # a plain cell is read in UTC (tz is UTC here)


def _cast_cells(strings: pa.Array, to: pa.DataType) -> pa.Array | None:
    """`strings` cast to `to`, null where Arrow refuses a cell (None past _MAX_REFUSED such cells)."""
    try:
        return pc.cast(strings, to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    refused: list[int] = []
    if not _refused(strings, to, 0, refused):
        return None
    keep = np.ones(len(strings), dtype=np.bool_)
    keep[refused] = False
    return pc.cast(pc.if_else(from_numpy(keep), strings, null(strings.type)), to)


def _refused(strings: pa.Array, to: pa.DataType, start: int, out: list[int]) -> bool:
    """Add to `out` the positions (from `start`) of the cells Arrow does not cast: a whole slice casts at
    once, a refused one is halved (~2 log2(n) casts per refused cell). False past _MAX_REFUSED cells."""
    try:
        pc.cast(strings, to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if len(strings) == 1:
            out.append(start)
            return len(out) <= _MAX_REFUSED
        half = len(strings) // 2
        return _refused(strings.slice(0, half), to, start, out) and _refused(
            strings.slice(half), to, start + half, out
        )
    return True


def _one_shape(s: pa.Array) -> bool:
    """True when no cell is null, every cell has as many bytes as the first, ASCII digits where the first
    has them and the first's bytes everywhere else, and the first begins and ends with a visible ASCII
    character. OFFSET_RE (digits, literal characters) then matches all cells or none, and no cell has
    whitespace to trim. A byte scan of the (n, width) matrix, instead of a trim and a regex per cell."""
    n = len(s)
    if n == 0 or s.null_count or not (pa.types.is_string(s.type) or pa.types.is_large_string(s.type)):
        return False
    width_t = np.int64 if pa.types.is_large_string(s.type) else np.int32
    offsets = np.frombuffer(s.buffers()[1], dtype=width_t)[s.offset : s.offset + n + 1]
    start = int(offsets[0])
    width = int(offsets[1]) - start
    if width == 0 or int(offsets[-1]) - start != width * n or (np.diff(offsets) != width).any():
        return False
    cells = np.frombuffer(s.buffers()[2], dtype=np.uint8)[start : start + width * n].reshape(n, width)
    first = cells[0]
    if not (0x21 <= first[0] <= 0x7E and 0x21 <= first[-1] <= 0x7E):
        return False
    digit = (first >= 0x30) & (first <= 0x39)
    at_digits = cells[:, digit]
    if not ((at_digits >= 0x30) & (at_digits <= 0x39)).all():
        return False
    return bool((cells[:, ~digit] == first[~digit]).all())


def parse_each(ser: pd.Series, formats: tuple[str, ...], tz: str) -> pd.Series:
    """Each format in turn on the cells the ones before it left unparsed."""
    parsed = parse(ser, formats[0], tz)
    for f in formats[1:]:
        missed = parsed.isna() & ser.notna()
        if not missed.any():
            break
        parsed[missed] = parse(ser[missed], f, tz)
    return parsed


def parse(ser: pd.Series, fmt: str, tz: str) -> pd.Series:
    """Parse strings with one format to UTC (NaT where they do not parse); strings without an offset take `tz`."""
    import pandas as pd  # here: pandas costs ~0.2 s to import, and most runs never parse with it

    try:
        return parse_vector(ser, fmt, tz)
    except (ValueError, OverflowError, TypeError):  # pandas refuses the vector (e.g. an out-of-range year)
        parts = [
            parse_vector(ser[i : i + 1], fmt, tz) if parses(ser[i : i + 1], fmt, tz) else None
            for i in range(len(ser))
        ]
        result = pd.Series(pd.NaT, index=ser.index, dtype="datetime64[us, UTC]")
        for part in parts:
            if part is not None:
                result[part.index] = part
        return result


def parses(one: pd.Series, fmt: str, tz: str) -> bool:
    try:
        parse_vector(one, fmt, tz)
    except (ValueError, OverflowError, TypeError):
        return False
    return True


def parse_vector(ser: pd.Series, fmt: str, tz: str) -> pd.Series:
    import pandas as pd  # here: pandas costs ~0.2 s to import, and most runs never parse with it

    result = pd.Series(pd.NaT, index=ser.index, dtype="datetime64[us, UTC]")
    if ser.empty:
        return result
    has_off = ser.str.contains(OFFSET_RE, regex=True, na=False) if "%z" in fmt or fmt == "ISO8601" else None
    aware = ser[has_off] if has_off is not None else ser.iloc[:0]
    naive = ser[~has_off] if has_off is not None else ser
    if not aware.empty:
        result[aware.index] = pd.to_datetime(aware, format=fmt, errors="coerce", utc=True).astype(
            result.dtype
        )
    if not naive.empty and naive.notna().any():
        local = pd.to_datetime(naive, format=fmt, errors="coerce")
        if getattr(local.dt, "tz", None) is None:
            local = local.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
        result[naive.index] = local.dt.tz_convert("UTC").astype(result.dtype)
    return result


__all__ = ["BRAZE_TIME_FORMATS", "arrow_iso", "arrow_iso_cells", "iso", "local_to_utc", "parse", "parse_each"]

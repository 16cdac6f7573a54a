"""Text to UTC times with pandas, one format at a time: the general path of casts.py's time cast (cells
Arrow's ISO 8601 cast does not take, and the formats Braze documents besides ISO 8601)."""

from __future__ import annotations

import pandas as pd

# A time of day followed by a UTC offset ("Z", "+02:00", "-0500"): the text names its own zone.
OFFSET_RE = r"\d{2}:\d{2}(?::\d{2}(?:[.:]\d+)?)?\s*(?:Z|z|[+-]\d{2}(?::?\d{2})?)$"


def parse(ser: pd.Series, fmt: str, tz: str) -> pd.Series:
    """Parse strings with one format to UTC (NaT where they do not parse); strings without an offset take `tz`."""
    try:
        return _parse_vector(ser, fmt, tz)
    except (ValueError, OverflowError, TypeError):  # pandas refuses the vector (e.g. an out-of-range year)
        parts = [
            _parse_vector(ser[i : i + 1], fmt, tz) if _parses(ser[i : i + 1], fmt, tz) else None
            for i in range(len(ser))
        ]
        result = pd.Series(pd.NaT, index=ser.index, dtype="datetime64[us, UTC]")
        for part in parts:
            if part is not None:
                result[part.index] = part
        return result


def _parses(one: pd.Series, fmt: str, tz: str) -> bool:
    try:
        _parse_vector(one, fmt, tz)
    except (ValueError, OverflowError, TypeError):
        return False
    return True


def _parse_vector(ser: pd.Series, fmt: str, tz: str) -> pd.Series:
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

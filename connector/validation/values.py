"""Casts shared by row-level and table-level checks: bounds ("now-24h", ISO strings) and column values."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

# "now", "now-24h", "now+1h", "now-7d", "now-30m", "now-90s": relative to the time the check is evaluated.
RELATIVE = re.compile(r"^now(?:\s*([+-])\s*(\d+(?:\.\d+)?)\s*([smhd]))?$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def resolve_bound(value: Any, now: datetime) -> Any:
    """A bound as compared: "now-24h" relative to `now`, other strings as UTC timestamps, numbers as is."""
    if not isinstance(value, str):
        return value  # a number: no pandas to import
    import pandas as pd

    m = RELATIVE.match(value.strip().lower())
    if m:
        seconds = float(m.group(2)) * _UNIT_SECONDS[m.group(3)] if m.group(1) else 0.0
        base = pd.Timestamp(now)
        base = base.tz_localize("UTC") if base.tzinfo is None else base.tz_convert("UTC")
        return base + pd.Timedelta(seconds=seconds if m.group(1) == "+" else -seconds)
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def as_utc(series: Any) -> Any:
    """Datetime series in UTC (naive values are taken as UTC; strings parsed as ISO-8601)."""
    import pandas as pd

    if not pd.api.types.is_datetime64_any_dtype(series):
        series = pd.to_datetime(series, errors="coerce", utc=True, format="ISO8601")
    elif series.dt.tz is None:
        series = series.dt.tz_localize("UTC")
    else:
        series = series.dt.tz_convert("UTC")
    return series


def as_number(series: Any) -> Any:
    import pandas as pd

    return series if pd.api.types.is_numeric_dtype(series) else pd.to_numeric(series, errors="coerce")


def is_time_bound(value: Any) -> bool:
    """True for "now..." forms and strings that parse as an ISO-8601 datetime."""
    import pandas as pd

    if not isinstance(value, str):
        return False
    if RELATIVE.match(value.strip().lower()):
        return True
    try:
        pd.Timestamp(value)
    except (ValueError, TypeError):
        return False
    return True

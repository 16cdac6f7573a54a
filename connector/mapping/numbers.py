"""Integer and float columns read from text by Arrow's own parser, when a byte scan proves it safe.

casts.py accepts a number only if its text matches a pattern (then Arrow converts it). When every byte of
a column is a digit or '-' (integers), or a digit or one of '+-.eE' (floats), Arrow's parser accepts
exactly the cells the pattern accepts, with the same values (tests/unit/test_casts_numbers.py compares them
over every such string up to 6 characters), so the pattern and the trim can be skipped. Any other byte, or
a cell Arrow refuses, leaves the column to the general path.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _only(raw: np.ndarray, extra: bytes) -> bool:
    ok = (raw >= ord("0")) & (raw <= ord("9"))
    for b in extra:
        ok |= raw == b
    return bool(ok.all())


def plain_numbers(arr: pa.Array, kind: str) -> pa.Array | None:
    """int64 (kind "integer") or float64 (kind "float") values of a string column, or None when the
    column needs the general path."""
    if kind not in ("integer", "float") or arr.null_count == len(arr):
        return None
    data = arr.buffers()[2]
    if data is None or data.size == 0:
        return None
    if not _only(np.frombuffer(data, dtype=np.uint8), b"-" if kind == "integer" else b"+-.eE"):
        return None
    try:
        return pc.cast(arr, pa.int64() if kind == "integer" else pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None

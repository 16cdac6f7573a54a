"""Empty and whitespace-only cells become null before any cast (an empty CSV field is an empty cell).

The common column has no blank cell at all: a byte scan proves it (no empty string, no string whose first
byte can start a whitespace character) without trimming every cell.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connector.arrow_values import null, scalar, to_numpy

# First bytes of the UTF-8 of every character pyarrow's utf8_trim_whitespace trims: U+0009..U+000D,
# U+001C..U+001F, U+0020, U+0085 and U+00A0 (C2), U+1680 (E1), U+2000..U+200A, U+2028, U+2029, U+202F,
# U+205F (E2), U+3000 (E3). tests/unit/test_casts_blanks.py checks every code point.
_LEAD = np.zeros(256, dtype=bool)
_LEAD[[9, 10, 11, 12, 13, 0x1C, 0x1D, 0x1E, 0x1F, 32, 0xC2, 0xE1, 0xE2, 0xE3]] = True


def _may_hold_blanks(arr: pa.Array) -> bool:
    """False when no cell of a string array can be empty or whitespace only once trimmed."""
    n = len(arr)
    if n == 0 or arr.null_count == n:
        return False
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset : arr.offset + n + 1]
    lengths = np.diff(offsets)
    empty = lengths == 0
    if arr.null_count:
        empty &= to_numpy(pc.is_valid(arr))
    if empty.any():
        return True
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    starts = offsets[:-1] if not arr.null_count else offsets[:-1][lengths > 0]  # null cells hold no bytes
    return bool(_LEAD[data[starts]].any())


def blank_to_null(arr: pa.Array) -> pa.Array:
    """Strings that are empty or only whitespace become null; other types unchanged (float NaN too)."""
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        if not _may_hold_blanks(arr):
            return arr
        blank = pc.equal(pc.utf8_trim_whitespace(arr), scalar(""))
        return pc.if_else(blank, null(t), arr)
    if pa.types.is_floating(t):
        return pc.if_else(pc.is_nan(arr), null(t), arr) if pc.any(pc.is_nan(arr)).as_py() else arr
    return arr

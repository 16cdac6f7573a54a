"""The column pre-checks of columns.py on Arrow arrays: one kernel pass per rule, no Python value per cell.

Each function answers for an array of cast values (what mapping's casts produce) with the suspect rows, as
columns.py does for Python lists, or None when the array's type is not one it knows (the caller then falls
back to the list check). Like columns.py they are conservative: a suspect row may still pass check_object.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connector.arrow_values import array, scalar
from connector.contract.base import MAX_STRING

Rows = set[int]
_CONTROL_RE2 = "[\\x00-\\x1f\\x7f-\\x{9f}]"
_ISO_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22]
_ISO_MARKS = {4: ord("-"), 7: ord("-"), 10: ord("T"), 13: ord(":"), 16: ord(":"), 19: ord("."), 23: ord("Z")}


def rows(mask: pa.Array) -> Rows:
    """Indices where a boolean array is true (null counts as false)."""
    if not pc.any(mask).as_py():
        return set()
    return set(pc.indices_nonzero(pc.fill_null(mask, scalar(False))).to_pylist())


def is_str(arr: pa.Array) -> bool:
    return bool(pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type))


def _data(arr: pa.Array) -> np.ndarray:
    """The bytes of a string array's cells (the whole buffer when sliced: more bytes, never fewer)."""
    buf = arr.buffers()[2]
    return np.zeros(0, np.uint8) if buf is None else np.frombuffer(buf, dtype=np.uint8)


def present(arr: pa.Array, keep_null: bool) -> Rows:
    return set(range(len(arr))) if keep_null else rows(pc.is_valid(arr))


def not_scalar(arr: pa.Array) -> Rows | None:
    """Rows whose value is not None, int, bool, a string of at most 255 characters or a finite float."""
    t = arr.type
    if is_str(arr):
        return long_strings(arr, MAX_STRING)
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_null(t):
        return set()
    if pa.types.is_floating(t):
        return rows(pc.invert(pc.is_finite(arr)))
    return None


def long_strings(arr: pa.Array, high: int) -> Rows:
    """Rows holding a string of more than `high` characters."""
    longest = pc.max(pc.binary_length(arr)).as_py() if len(arr) else None
    if longest is None or longest <= high:  # a string has at least as many bytes as characters
        return set()
    return rows(pc.greater(pc.utf8_length(arr), scalar(high)))


def outside(arr: pa.Array, allowed: frozenset[str]) -> Rows | None:
    """Rows holding a string not in `allowed` (nulls pass)."""
    if not is_str(arr):
        return None if not pa.types.is_null(arr.type) else set()
    ok = pc.is_in(arr, value_set=array(sorted(allowed), arr.type))
    return rows(pc.and_(pc.is_valid(arr), pc.invert(ok)))


def distinct_rows(arr: pa.Array, ok: Callable[[str], object]) -> Rows | None:
    """Rows holding a string for which `ok` is false (nulls pass), calling `ok` once per distinct string."""
    if not is_str(arr):
        return None if not pa.types.is_null(arr.type) else set()
    bad = [v for v in pc.unique(arr).to_pylist() if v is not None and not ok(v)]
    return rows(pc.is_in(arr, value_set=array(bad, arr.type))) if bad else set()


def sized(arr: pa.Array, low: int, high: int) -> Rows | None:
    """Rows that are not a string of low..high characters (nulls included)."""
    if not is_str(arr):
        return None
    if not arr.null_count and len(arr):
        size = np.diff(_offsets(arr))  # bytes: at least the characters, at most 4 per character
        if int(size.min()) >= low and int(size.max()) <= high:
            return set()
    lengths = pc.utf8_length(arr)
    ok = pc.and_(pc.greater_equal(lengths, scalar(low)), pc.less_equal(lengths, scalar(high)))
    return rows(pc.invert(pc.fill_null(ok, scalar(False))))


def names(arr: pa.Array) -> Rows | None:
    """Rows that are not a string of at most 255 characters starting with a visible ASCII character (so
    not blank once stripped; other rows go to check_object, which strips as Python does)."""
    if not is_str(arr):
        return None
    n = len(arr)
    if n and not arr.null_count and pc.min(pc.binary_length(arr)).as_py() > 0:
        first = _data(arr)[_offsets(arr)[:-1]]  # every cell holds a byte: its first one
        if ((first >= 0x21) & (first <= 0x7E)).all():
            return long_strings(arr, MAX_STRING)
    ok = pc.and_(pc.match_substring_regex(arr, "^[!-~]"), pc.less_equal(pc.utf8_length(arr), scalar(MAX_STRING)))
    return rows(pc.invert(pc.fill_null(ok, scalar(False))))


def _offsets(arr: pa.Array) -> np.ndarray:
    """The n + 1 offsets of a string array's cells into its data buffer."""
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    return np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset : arr.offset + len(arr) + 1]


def iso_ms(arr: pa.Array) -> bool:
    """True when every cell is a string like 2024-01-02T03:04:05.000Z (digits, marks at fixed places)."""
    if not is_str(arr) or arr.null_count:
        return False
    n = len(arr)
    if n == 0:
        return True
    lengths = pc.min_max(pc.binary_length(arr)).as_py()
    if lengths["min"] != 24 or lengths["max"] != 24:
        return False
    start = int(_offsets(arr)[0])
    cells = _data(arr)[start : start + 24 * n].reshape(n, 24)
    digits = cells[:, _ISO_DIGITS]
    if not ((digits >= ord("0")) & (digits <= ord("9"))).all():
        return False
    return all(bool((cells[:, k] == c).all()) for k, c in _ISO_MARKS.items())


def control_rows(arr: pa.Array) -> Rows | None:
    """Rows of a string array holding a C0 or C1 control character or DEL."""
    if not is_str(arr):
        return None if not pa.types.is_null(arr.type) else set()
    data = _data(arr)
    if data.size == 0:
        return set()
    c1 = np.flatnonzero(data[:-1] == 0xC2)  # U+0080..U+009F are C2 80..C2 9F in UTF-8
    if data.min() >= 0x20 and not (data == 0x7F).any() and not ((data[c1 + 1] & 0xE0) == 0x80).any():
        return set()
    return rows(pc.match_substring_regex(arr, _CONTROL_RE2))


def emails(arr: pa.Array, pattern: str) -> Rows | None:
    """Rows holding a string that is not an email matching the RE2 `pattern` (a subset of the Python check)
    or is over 255 characters; nulls pass."""
    if not is_str(arr):
        return None if not pa.types.is_null(arr.type) else set()
    if len(arr) and int(np.diff(_offsets(arr)).max()) <= MAX_STRING:  # no cell has more bytes than allowed
        return rows(pc.invert(pc.match_substring_regex(arr, pattern)))  # null stays null: nulls pass
    ok = pc.and_(pc.match_substring_regex(arr, pattern), pc.less_equal(pc.utf8_length(arr), scalar(MAX_STRING)))
    return rows(pc.and_(pc.is_valid(arr), pc.invert(ok)))


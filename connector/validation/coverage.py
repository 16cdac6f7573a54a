"""Which expectations (type and kwargs) this package evaluates without Great Expectations.

An expectation whose kwargs pass `kwargs_covered` is checked here, not by GX's own model, so a suite made
only of such expectations never imports GX (`native.py` evaluates the row-level ones, `aggregates.py` the
table-level ones). Anything else (another type, another kwarg such as ``row_condition`` or
``result_format``, a value of another type) is checked and evaluated by GX, as before.
"""

from __future__ import annotations

from typing import Any

NOT_NULL = "expect_column_values_to_not_be_null"
NULL = "expect_column_values_to_be_null"
IN_SET = "expect_column_values_to_be_in_set"
NOT_IN_SET = "expect_column_values_to_not_be_in_set"
BETWEEN = "expect_column_values_to_be_between"
MATCH = "expect_column_values_to_match_regex"
NOT_MATCH = "expect_column_values_to_not_match_regex"
MATCH_LIST = "expect_column_values_to_match_regex_list"
LENGTHS_BETWEEN = "expect_column_value_lengths_to_be_between"
LENGTHS_EQUAL = "expect_column_value_lengths_to_equal"
ROW_COUNT_BETWEEN = "expect_table_row_count_to_be_between"
ROW_COUNT_EQUAL = "expect_table_row_count_to_equal"
MAX_BETWEEN = "expect_column_max_to_be_between"
MIN_BETWEEN = "expect_column_min_to_be_between"
MEAN_BETWEEN = "expect_column_mean_to_be_between"
UNIQUE = "expect_column_values_to_be_unique"

_COLUMN = frozenset({"column"})
_MOSTLY = frozenset({"column", "mostly"})
_BOUNDS = frozenset({"min_value", "max_value", "strict_min", "strict_max"})
# The kwargs each type may carry here; any other kwarg leaves the expectation to GX.
KWARGS: dict[str, frozenset[str]] = {
    NOT_NULL: _MOSTLY,
    NULL: _MOSTLY,
    IN_SET: _MOSTLY | {"value_set"},
    NOT_IN_SET: _MOSTLY | {"value_set"},
    BETWEEN: _MOSTLY | _BOUNDS,
    MATCH: _MOSTLY | {"regex"},
    NOT_MATCH: _MOSTLY | {"regex"},
    MATCH_LIST: _MOSTLY | {"regex_list", "match_on"},
    LENGTHS_BETWEEN: _MOSTLY | _BOUNDS,
    LENGTHS_EQUAL: _MOSTLY | {"value"},
    ROW_COUNT_BETWEEN: _BOUNDS,
    ROW_COUNT_EQUAL: frozenset({"value"}),
    MAX_BETWEEN: _COLUMN | _BOUNDS,
    MIN_BETWEEN: _COLUMN | _BOUNDS,
    MEAN_BETWEEN: _COLUMN | _BOUNDS,
    UNIQUE: _MOSTLY,
}
MAP_TYPES = frozenset(KWARGS) - {
    ROW_COUNT_BETWEEN,
    ROW_COUNT_EQUAL,
    MAX_BETWEEN,
    MIN_BETWEEN,
    MEAN_BETWEEN,
    UNIQUE,
}
_EXACT = 2**53  # float64 holds every integer up to here


def exact_number(value: Any) -> bool:
    """An int or float (not a bool) that float64 holds exactly enough to compare as GX does."""
    return isinstance(value, int | float) and not isinstance(value, bool) and abs(value) <= _EXACT


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _bounds(kwargs: dict[str, Any], ok: Any, *, times: bool) -> bool:
    """At least one bound; every bound `ok`, or (times) every bound a time bound."""
    from .values import is_time_bound

    given = [b for b in (kwargs.get("min_value"), kwargs.get("max_value")) if b is not None]
    if not given:
        return False
    if times and all(isinstance(b, str) for b in given):
        return all(is_time_bound(b) for b in given)
    return all(ok(b) for b in given)


def kwargs_covered(etype: str, kwargs: dict[str, Any]) -> bool:
    """Whether this package evaluates `etype` with these kwargs (all checked valid, GX need not see them)."""
    allowed = KWARGS.get(etype)
    if allowed is None or not set(kwargs) <= allowed:
        return False
    if "column" in allowed and not isinstance(kwargs.get("column"), str):
        return False
    mostly = kwargs.get("mostly", 1.0)
    if not exact_number(mostly) or not 0 <= mostly <= 1:
        return False
    if any(k in kwargs and not isinstance(kwargs[k], bool) for k in ("strict_min", "strict_max")):
        return False
    if etype in (IN_SET, NOT_IN_SET):
        return isinstance(kwargs.get("value_set"), list)
    if etype in (BETWEEN, MAX_BETWEEN, MIN_BETWEEN):
        return _bounds(kwargs, exact_number, times=True)
    if etype == MEAN_BETWEEN:
        return _bounds(kwargs, exact_number, times=False)
    if etype in (MATCH, NOT_MATCH):
        return isinstance(kwargs.get("regex"), str)
    if etype == MATCH_LIST:
        regexes = kwargs.get("regex_list")
        return (
            isinstance(regexes, list)
            and bool(regexes)
            and all(isinstance(r, str) for r in regexes)
            and kwargs.get("match_on", "any") in ("any", "all")
        )
    if etype in (LENGTHS_BETWEEN, ROW_COUNT_BETWEEN):
        return _bounds(kwargs, _count, times=False)
    if etype in (LENGTHS_EQUAL, ROW_COUNT_EQUAL):
        return _count(kwargs.get("value"))
    return True

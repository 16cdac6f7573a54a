"""Load GX 1.x suite JSON files into checked expectations, and describe failures in words."""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ..errors import SuiteError
from .coverage import MAP_TYPES, kwargs_covered
from .values import RELATIVE, is_time_bound, resolve_bound

logger = logging.getLogger(__name__)

Kind = Literal["map", "aggregate", "gx_table"]

# Aggregates this package evaluates itself over the whole stream (GX would only see one chunk).
OWN_AGGREGATES = frozenset(
    {
        "expect_table_row_count_to_be_between",
        "expect_table_row_count_to_equal",
        "expect_column_max_to_be_between",
        "expect_column_min_to_be_between",
        "expect_column_mean_to_be_between",
        "expect_column_values_to_be_unique",
    }
)
_BETWEEN = "expect_column_values_to_be_between"
_TIME_AGGREGATES = ("expect_column_max_to_be_between", "expect_column_min_to_be_between")
_VALUE_CHARS = 60
_SET_ITEMS = 10
_GX_LOGGERS = ("great_expectations", "great_expectations.data_context.types.base")


class quiet:
    """Silence GX's warnings and log noise while it runs (nothing may reach stdout/stderr)."""

    def __enter__(self) -> None:
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        # GX's types.base module pins its own logger to INFO (a line per ephemeral context).
        self._loggers = [logging.getLogger(n) for n in _GX_LOGGERS]
        self._levels = [lg.level for lg in self._loggers]
        for lg in self._loggers:
            lg.setLevel(logging.CRITICAL)

    def __exit__(self, *exc: Any) -> None:
        for lg, level in zip(self._loggers, self._levels, strict=True):
            lg.setLevel(level)
        self._warnings.__exit__(*exc)


@dataclass(frozen=True, slots=True)
class SuiteExpectation:
    """One expectation from a suite file, checked, with where it came from."""

    suite: str
    file: Path
    index: int
    type: str
    kwargs: dict[str, Any]
    kind: Kind

    @property
    def column(self) -> str | None:
        col = self.kwargs.get("column", self.kwargs.get("column_A"))
        return str(col) if col is not None else None

    @property
    def columns(self) -> tuple[str, ...]:
        cols = [self.kwargs[k] for k in ("column", "column_A", "column_B") if k in self.kwargs]
        cols += list(self.kwargs.get("column_list") or [])
        return tuple(str(c) for c in cols)

    @property
    def mostly(self) -> float:
        return float(self.kwargs.get("mostly", 1.0))

    @property
    def alias(self) -> Literal["num", "time"] | None:
        """How a between check compares its column: as numbers or as UTC timestamps (cast copies).

        CSV columns are strings: numeric bounds compare the cells as numbers, string bounds (ISO-8601 or
        "now-24h") compare them as UTC timestamps. Cells that do not cast are left to the mapper.
        """
        if self.type != _BETWEEN:
            return None
        bounds = [self.kwargs.get("min_value"), self.kwargs.get("max_value")]
        if any(isinstance(b, str) for b in bounds):
            return "time" if all(b is None or is_time_bound(b) for b in bounds) else None
        numeric = all(b is None or (isinstance(b, int | float) and not isinstance(b, bool)) for b in bounds)
        return "num" if numeric else None

    def where(self) -> str:
        return f"suite '{self.suite}' ({self.file}), expectation #{self.index + 1} {self.type}"

    def build_gx(self, now: datetime) -> Any:
        """A GX expectation instance; between checks read the cast copy of their column (see `alias`)."""
        kwargs = dict(self.kwargs)
        if self.alias:
            kwargs["column"] = alias_column(self.alias, str(kwargs["column"]))
        if self.alias == "time":
            for key in ("min_value", "max_value"):
                if kwargs.get(key) is not None:
                    kwargs[key] = resolve_bound(str(kwargs[key]), now).isoformat()
        return gx_expectation_class(self.type, self.where())(**kwargs)


def alias_column(alias: str, column: str) -> str:
    """The name of the cast copy of `column` that a between check reads."""
    return f"__{alias}__{column}"


def load_suites(names: list[str], expectations_dir: Path) -> list[SuiteExpectation]:
    """Read and check every named suite; SuiteError names the file and the expectation at fault.

    Expectations this package evaluates itself (coverage.py) are checked here; any other is checked by GX's
    own model, which imports GX (only then).
    """
    if not names:
        return []
    out: list[SuiteExpectation] = []
    for name in names:
        path = expectations_dir / f"{name}.json"
        doc = _read_json(name, path)
        for index, raw in enumerate(doc["expectations"]):
            label = f"suite '{name}' ({path}), expectation #{index + 1}"
            if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
                raise SuiteError(f"{label}: each expectation must be an object with a 'type' string")
            etype = raw["type"]
            kwargs = raw.get("kwargs", {})
            if not isinstance(kwargs, dict):
                raise SuiteError(f"{label} {etype}: 'kwargs' must be an object")
            _check_bounds(label, etype, kwargs)
            kind: Kind
            if kwargs_covered(etype, kwargs):
                kind = "map" if etype in MAP_TYPES else "aggregate"
            else:
                cls = gx_expectation_class(etype, label)
                _check_kwargs(label, etype, cls, kwargs)
                kind = "aggregate" if etype in OWN_AGGREGATES else "map" if _is_map(cls) else "gx_table"
            out.append(SuiteExpectation(name, path, index, etype, dict(kwargs), kind))
    logger.debug("loaded %d expectations from %d suites", len(out), len(names))
    return out


def gx_expectation_class(etype: str, label: str = "") -> Any:
    """GX's class for an expectation type (imports GX); SuiteError for a type GX does not know."""
    with quiet():
        from great_expectations.exceptions import ExpectationNotFoundError
        from great_expectations.expectations.registry import get_expectation_impl

        try:
            return get_expectation_impl(etype)
        except ExpectationNotFoundError:
            raise SuiteError(
                f"{label}: unknown expectation type '{etype}' (see the GX 1.x expectation gallery)"
            ) from None


def _is_map(cls: Any) -> bool:
    with quiet():
        from great_expectations.expectations.expectation import (
            ColumnMapExpectation,
            ColumnPairMapExpectation,
            MulticolumnMapExpectation,
        )

    return issubclass(cls, ColumnMapExpectation | ColumnPairMapExpectation | MulticolumnMapExpectation)


def _read_json(name: str, path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SuiteError(f"expectation suite '{name}' not found: {path} does not exist")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"expectation suite '{name}': cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise SuiteError(
            f"expectation suite '{name}': {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("expectations"), list):
        raise SuiteError(
            f"expectation suite '{name}': {path} must be a GX 1.x suite object with an 'expectations' list"
        )
    return doc


def _check_bounds(label: str, etype: str, kwargs: dict[str, Any]) -> None:
    """Relative bounds ("now-24h") and the time bounds of max/min checks, which GX's models do not know."""
    for key in ("min_value", "max_value"):
        value = kwargs.get(key)
        if isinstance(value, str) and value.strip().lower().startswith("now"):
            if not RELATIVE.match(value.strip().lower()):
                raise SuiteError(
                    f"{label} {etype}: {key} '{value}' is not 'now', 'now-<N><s|m|h|d>' or 'now+...'"
                )
        elif isinstance(value, str) and etype in _TIME_AGGREGATES and not is_time_bound(value):
            raise SuiteError(
                f"{label} {etype}: {key} '{value}' is not a number, an ISO-8601 datetime or 'now-24h'"
            )


def _check_kwargs(label: str, etype: str, cls: Any, kwargs: dict[str, Any]) -> None:
    """Let GX's own model check the arguments (relative bounds, checked before, stand in as the time now)."""
    probe = dict(kwargs)
    for key in ("min_value", "max_value"):
        value = probe.get(key)
        if isinstance(value, str) and RELATIVE.match(value.strip().lower()):
            probe[key] = datetime.now(UTC).isoformat()
    try:
        with quiet():
            cls(**probe)
    except Exception as exc:  # GX raises pydantic v1 ValidationError or its own errors
        detail = " ".join(str(exc).split())
        raise SuiteError(f"{label} {etype}: invalid kwargs: {detail}") from None


def show(value: Any) -> str:
    """A value for a reason: repr, truncated."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()
    if hasattr(value, "isoformat"):
        value = value.isoformat()
    text = repr(value)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 3] + "..."


def _show_set(values: Any) -> str:
    items = list(values or [])
    shown = ",".join(show(v) for v in items[:_SET_ITEMS])
    return f"[{shown}{',...' if len(items) > _SET_ITEMS else ''}]"


def _range(kw: dict[str, Any], subject: str = "") -> str:
    lo, hi = kw.get("min_value"), kw.get("max_value")
    lo_op = ">" if kw.get("strict_min") else ">="
    hi_op = "<" if kw.get("strict_max") else "<="
    if lo is not None and hi is not None and not kw.get("strict_min") and not kw.get("strict_max"):
        return f"{subject}not between {show(lo)} and {show(hi)}"
    parts = [f"{lo_op} {show(lo)}" for _ in [0] if lo is not None] + [
        f"{hi_op} {show(hi)}" for _ in [0] if hi is not None
    ]
    return f"{subject}not {' and '.join(parts)}" if parts else f"{subject}out of range"


def words(e: SuiteExpectation, value: Any) -> str:
    """Why a row failed `e`, naming the column, the (truncated) value and the arguments."""
    head, tail = wording(e)
    return head if tail is None else head + show(value) + tail


def wording(e: SuiteExpectation) -> tuple[str, str | None]:
    """`words` around the value: (before, after) the shown value, or (the whole reason, None) when the
    reason does not show it. The same for every row of an expectation: computed once per chunk."""
    kw = e.kwargs
    col = f"column '{e.column}': " if e.column else ""
    v = f"{col}value "
    t = e.type
    if t == "expect_column_values_to_not_be_null":
        return f"{col}value is null; a value is required", None
    if t == "expect_column_values_to_be_null":
        return v, " must be null"
    if t == "expect_column_values_to_be_in_set":
        return v, f" not in set {_show_set(kw.get('value_set'))}"
    if t == "expect_column_values_to_not_be_in_set":
        return v, f" is in forbidden set {_show_set(kw.get('value_set'))}"
    if t == "expect_column_values_to_be_between":
        return v, f" {_range(kw)}"
    if t == "expect_column_value_lengths_to_be_between":
        return v, f" has length {_range(kw)}"
    if t == "expect_column_value_lengths_to_equal":
        return v, f" has length other than {show(kw.get('value'))}"
    if t == "expect_column_values_to_match_regex":
        return v, f" does not match regex {show(kw.get('regex'))}"
    if t == "expect_column_values_to_not_match_regex":
        return v, f" matches forbidden regex {show(kw.get('regex'))}"
    if t == "expect_column_values_to_match_regex_list":
        return v, f" does not match the regexes {_show_set(kw.get('regex_list'))}"
    if t == "expect_column_values_to_be_of_type":
        return v, f" is not of type {show(kw.get('type_'))}"
    args = ", ".join(
        f"{k}={show(x)}" for k, x in kw.items() if k not in ("column", "column_A", "column_B", "column_list")
    )
    rest = f"fails {t}" + (f" ({args})" if args else "")
    return (v, " " + rest) if e.column else (rest, None)

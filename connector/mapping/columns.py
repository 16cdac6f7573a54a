"""Resolve pipeline Values against a chunk's table: one cast column per Value, and the row errors they raise."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from connector.arrow_values import array
from connector.config import AttributeField, Properties, Stream, Value
from connector.errors import ConfigError
from connector.mapping.dates import DateReadings

# row index -> (rule, reason, source column)
RowErrors = dict[int, tuple[str, str, str | None]]


class Column:
    """Cast values of one Value for every row; `keep_null` means an empty cell is sent as null. `arrow`,
    when set, holds the same values as an Arrow array (then `values` is built only when read)."""

    __slots__ = ("_values", "arrow", "keep_null", "column", "_some")

    def __init__(
        self, values: list[Any] | None, keep_null: bool, column: str | None, arrow: pa.Array | None = None
    ) -> None:
        self._values = values
        self.arrow = arrow
        self.keep_null = keep_null
        self.column = column
        self._some: dict[int, Any] | None = None  # values of a few rows, converted by prefetch()

    def prefetch(self, rows: list[int]) -> None:
        """Convert the values of these rows only (the rows the per-row checks will read), in one call."""
        if self._values is None and self.arrow is not None and rows:
            self._some = dict(zip(rows, self.arrow.take(array(rows, pa.int64())).to_pylist(), strict=True))

    def at(self, i: int) -> Any:
        """The value of row i, without converting the whole column when prefetch() holds it."""
        some = self._some
        if some is not None and self._values is None and i in some:
            return some[i]
        return self.values[i]

    @property
    def values(self) -> list[Any]:
        if self._values is None:
            self._values = [] if self.arrow is None else self.arrow.to_pylist()
        return self._values

    @values.setter
    def values(self, values: list[Any]) -> None:
        self._values, self.arrow = values, None

    @property
    def data(self) -> list[Any] | pa.Array:
        """The Arrow array when there is one, else the values."""
        return self.arrow if self.arrow is not None else self.values


class Resolver:
    """Casts the Values of one stream against one table, collecting the first error of each row."""

    def __init__(self, stream: Stream, table: pa.Table, file: str, dates: DateReadings | None = None) -> None:
        self.stream = stream
        self.dates = dates
        self._timed: set[str] = set()  # columns already cast as times in this chunk
        self.table = table
        self.file = file
        self.n = int(table.num_rows)
        self.errors: RowErrors = {}
        self.made: list[Column] = []  # every Column value() returned, for prefetch()

    def value(self, v: Value, key: str, default_type: str = "auto") -> Column:
        """Cast one Value; empty cells with on_empty=reject become `value.required` row errors."""
        # casts.py (and what it imports) is loaded when the first row is mapped, not with columns_read: a delta
        # re-run whose rows are all unchanged maps none (mapping/__init__.py).
        from connector.mapping.casts import cast_array, zone

        kind = v.type if v.type != "auto" else default_type
        if kind == "array" and v.type == "auto" and default_type == "auto":
            kind = "auto"
        tz = zone(v.timezone, f"stream '{self.stream.name}', {key}.timezone")
        if v.column is None:
            return self._constant(v, key, kind, tz)
        if v.column not in self.table.column_names:
            available = ", ".join(self.table.column_names) or "(none)"
            raise ConfigError(
                f"stream '{self.stream.name}': {key} reads column '{v.column}', which is not in {self.file}; "
                f"available columns: {available}"
            )
        reading = None
        if self.dates is not None and kind == "time":
            reading = self.dates.column(v.column)
            if (
                v.column in self._timed
            ):  # a second Value on the column: the same reading, its cells counted once
                reading = replace(reading)
            self._timed.add(v.column)
        cast = cast_array(
            self.table.column(v.column), kind, fmt=v.format, tz=tz, split=v.split, reading=reading
        )
        errs = self.errors
        for i, (rule, reason) in cast.errors.items():
            if i not in errs:
                errs[i] = (rule, reason, v.column)
        if v.on_empty == "reject":
            empty = (
                enumerate(cast.values)
                if cast.arrow is None
                else ((i, None) for i in pc.indices_nonzero(pc.is_null(cast.arrow)).to_pylist())
            )
            for i, x in empty:
                if x is None and i not in errs:
                    errs[i] = (
                        "value.required",
                        f"the cell is empty and '{key}' has on_empty: reject",
                        v.column,
                    )
        col = Column(None if cast.arrow is not None else cast.values, v.on_empty == "null", v.column, cast.arrow)
        self.made.append(col)
        return col

    def prefetch(self, rows: list[int]) -> None:
        """Convert only these rows of every column cast so far (Column.prefetch)."""
        for col in self.made:
            col.prefetch(rows)

    def _constant(self, v: Value, key: str, kind: str, tz: str) -> Column:
        from connector.mapping.casts import cast_array

        cast = cast_array(pa.array([v.value]), kind, fmt=v.format, tz=tz, split=v.split)
        if cast.errors:
            reason = next(iter(cast.errors.values()))[1]
            raise ConfigError(
                f"stream '{self.stream.name}': the constant of {key} does not convert: {reason}"
            )
        return Column(cast.values * self.n, v.on_empty == "null", None)

    def json_column(self, name: str, key: str) -> Column:
        """A column of JSON objects (properties, notification); nulls inside the object are dropped."""
        col = self.value(Value(column=name, type="object"), key)
        col.values = [
            None if d is None else {k: x for k, x in d.items() if x is not None} for d in col.values
        ]
        return col

    def properties(self, props: Properties, key: str) -> tuple[Column | None, list[tuple[str, Column]]]:
        """The JSON column (if any) and the listed property columns, in override order."""
        js = self.json_column(props.json_column, f"{key}.json_column") if props.json_column else None
        cols = [(name, self.value(v, f"{key}.columns.{name}")) for name, v in props.columns.items()]
        return js, cols


def columns_read(stream: Stream) -> dict[str, str]:
    """Every source column the stream's mapping reads -> the first setting that reads it (pre-flight checks)."""
    out: dict[str, str] = {}

    def visit(node: Any, where: str) -> None:
        if isinstance(node, Value):
            if node.column is not None:
                out.setdefault(node.column, where)
        elif isinstance(node, BaseModel):
            for name in type(node).model_fields:
                value = getattr(node, name)
                if name in ("json_column", "notification_json_column"):
                    if isinstance(value, str):
                        out.setdefault(value, f"{where}.{name}")
                else:
                    visit(value, f"{where}.{name}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                visit(item, f"{where}.{item.target}" if isinstance(item, AttributeField) else f"{where}[{i}]")
        elif isinstance(node, dict):
            for key, item in node.items():
                visit(item, f"{where}.{key}")

    for name in ("identifier", "attributes", "event", "purchase", "canvas", "live_activity"):
        visit(getattr(stream, name), name)
    return out


def build_properties(
    js: list[Any] | None, cols: Sequence[tuple[str, list[Any] | Column]], i: int
) -> dict[str, Any]:
    """Properties of row i: JSON keys first, listed columns override; nulls dropped."""
    out: dict[str, Any] = dict(js[i]) if js is not None and js[i] else {}
    for name, vals in cols:
        x = vals.at(i) if isinstance(vals, Column) else vals[i]
        if x is not None:
            out[name] = x
    return out

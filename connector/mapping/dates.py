"""Slash dates without a format (`07/09/2023`): day/month or month/day, decided per column, never silently.

A time column parsed without `format` accepts Braze's documented `MM/DD/YYYY`. A value such as `07/09/2023`
reads either way, so each column keeps a `DayMonth` across the chunks of a stream: a value whose first
part is over 12 (`13/09/2023`) makes the column day/month, one whose second part is over 12 makes it
month/day, and the whole column is read that way. With no such value, the column is read month/day
(Braze's own format, as before) and `DateReadings.warnings()` says so, naming the stream, the column, an
example, how it was read and the `format:` that pins it. Once ambiguous rows were read one way, later rows
are read the same way (rows already sent cannot be re-read); a value that contradicts the reading is a
cast reject and a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pandas as pd


MONTH_FIRST = "%m/%d/%Y"
DAY_FIRST = "%d/%m/%Y"
_SLASH_RE = r"^(\d{1,2})/(\d{1,2})/(\d{4})$"
Order = Literal["month/day", "day/month"]
_FORMAT: dict[Order, str] = {"month/day": MONTH_FIRST, "day/month": DAY_FIRST}

# The summary and report.json show these warnings; the CLI repeats those starting with this prefix.
WARNING_PREFIX = "ambiguous dates:"


@dataclass(slots=True)
class DayMonth:
    """How one column's slash dates are read, and what the run should say about it."""

    order: Order | None = None  # the order rows were read with so far (None: no slash date yet)
    evidence: str | None = None  # the value that showed the order (None: nothing showed it yet)
    ambiguous: int = 0  # cells that read either way, read before any value showed the order
    example: str | None = None  # one of them
    contradicting: int = 0  # cells in the other order, rejected
    contradiction: str | None = None

    def format_for(self, cells: pd.Series) -> str:
        """The strptime format for this chunk's slash dates (`cells`: trimmed strings, no nulls)."""
        parts = cells.str.extract(_SLASH_RE)
        parts = parts[parts[0].notna()]
        if parts.empty:
            return _FORMAT[self.order or "month/day"]
        first = parts[0].astype(int)
        second = parts[1].astype(int)
        values = cells[parts.index]
        day_first = (first > 12) & (second <= 12)
        month_first = (second > 12) & (first <= 12)
        if self.evidence is None:
            shown: Order | None = None
            if day_first.any() and not month_first.any():
                shown = "day/month"
            elif month_first.any() and not day_first.any():
                shown = "month/day"
            if shown is not None and (self.order is None or self.order == shown):
                self.order = shown
                self.evidence = str(values[day_first if shown == "day/month" else month_first].iloc[0])
                self.ambiguous = 0  # the column's own values settle it: nothing to flag
                return _FORMAT[shown]
            if self.order is None:
                self.order = "month/day"  # Braze's documented MM/DD/YYYY, the reading before this check
            either = (first <= 12) & (second <= 12) & (first != second)
            if either.any():
                self.ambiguous += int(either.sum())
                if self.example is None:
                    self.example = str(values[either].iloc[0])
        order: Order = self.order or "month/day"
        other = day_first if order == "month/day" else month_first
        if other.any():
            self.contradicting += int(other.sum())
            if self.contradiction is None:
                self.contradiction = str(values[other].iloc[0])
        return _FORMAT[order]


@dataclass(slots=True)
class DateReadings:
    """The DayMonth of each column of one stream (kept across its chunks)."""

    stream: str
    columns: dict[str, DayMonth] = field(default_factory=dict)

    def column(self, name: str) -> DayMonth:
        return self.columns.setdefault(name, DayMonth())

    def warnings(self) -> list[str]:
        """One line per column read without certainty: the stream, column, example, reading and the fix."""
        out = []
        for name, c in self.columns.items():
            if c.order is None:
                continue
            pin = f'format: "{_FORMAT[c.order]}"'
            flip: Order = "day/month" if c.order == "month/day" else "month/day"
            if c.ambiguous and c.evidence is None:
                out.append(
                    f"{WARNING_PREFIX} stream {self.stream}, column '{name}': {c.ambiguous:,} value(s) such as "
                    f"'{c.example}' read as either day/month or month/day and no value in the column tells "
                    f"which; they were read as {c.order} ({_spell(c.example, c.order)}). Pin the reading on that "
                    f'value: {pin}, or format: "{_FORMAT[flip]}" for {flip}'
                )
            if c.contradicting:
                out.append(
                    f"{WARNING_PREFIX} stream {self.stream}, column '{name}': read as {c.order}, but "
                    f"{c.contradicting:,} value(s) such as '{c.contradiction}' are {flip}; they were rejected "
                    f'(cast.time). Fix the column, or pin one reading: {pin} or format: "{_FORMAT[flip]}"'
                )
        return out


def _spell(value: str | None, order: Order) -> str:
    """'07/09/2023' read as month/day -> '07/09/2023 = 2023-07-09'."""
    import pandas as pd  # here: pandas costs ~0.2 s to import, and most runs never parse with it

    if value is None:
        return ""
    try:
        day = pd.to_datetime(value, format=_FORMAT[order])
    except ValueError:
        return value
    return f"{value} = {day:%Y-%m-%d}"


__all__ = ["DAY_FIRST", "MONTH_FIRST", "WARNING_PREFIX", "DateReadings", "DayMonth"]

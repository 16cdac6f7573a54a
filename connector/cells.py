"""Cells of the CSV files people open in a spreadsheet (rejects.csv, failed.csv): the formula escape.

A spreadsheet runs a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return as a formula
(CSV injection: `=HYPERLINK(...)`, `=cmd|...`). OWASP's rule: such a cell gets a leading single quote,
which the spreadsheet shows as text. So that the files read back exactly (a retry run reads failed.csv), a
cell that already starts with single quotes followed by one of those characters gets one more, and
`restore` takes exactly one away. Shared by report/sinks.py (writing) and readers/failed.py (reading).
"""

from __future__ import annotations

TRIGGERS = frozenset("=+-@\t\r")
_FIRST = TRIGGERS | {"'"}


def neutralise(cell: str) -> str:
    """The cell as a spreadsheet shows it without running it: a leading `'` where one is needed."""
    if cell and cell[0] in _FIRST and cell.lstrip("'")[:1] in TRIGGERS:
        return "'" + cell
    return cell


def restore(cell: str) -> str:
    """The cell as it was before `neutralise`."""
    if cell[:1] == "'" and cell.lstrip("'")[:1] in TRIGGERS:
        return cell[1:]
    return cell

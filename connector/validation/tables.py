"""Whether a stream's suites hold table-level expectations (they decide if a first pass runs before delivery).

Reads the suite files only, so it needs no Great Expectations import.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Row-level (map) expectations report each failing row; every other expectation type is table-level, and so
# is a map expectation with `mostly` < 1 (whether the whole stream met it is only known at the end).
_ROW_LEVEL_PREFIX = "expect_column_values_to_"
_TABLE_LEVEL_EXCEPTIONS = ("expect_column_values_to_be_unique",)


def has_table_expectations(suite: Any, names: Sequence[str], expectations_dir: Path) -> bool:
    """Whether the stream's suites hold any table-level expectation (row count, uniqueness, freshness, ...).

    Asks the SuiteRunner when it says (`has_table_expectations`), else reads the suite files' types.
    """
    told = getattr(suite, "has_table_expectations", None)
    if told is not None:
        return bool(told() if callable(told) else told)
    for name in names:
        try:
            doc = json.loads((expectations_dir / f"{name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return True  # the SuiteRunner loaded it, so be safe: check the table first
        for exp in doc.get("expectations", []) if isinstance(doc, dict) else []:
            kind = str(exp.get("type") or exp.get("expectation_type") or "")
            mostly = (exp.get("kwargs") or {}).get("mostly", 1)
            if not kind.startswith(_ROW_LEVEL_PREFIX) or kind in _TABLE_LEVEL_EXCEPTIONS or mostly != 1:
                return True
    return False

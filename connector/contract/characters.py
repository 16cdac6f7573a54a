"""Control characters in identifiers (`identifier.control_character`).

Braze stores an identifier as it is sent, so a NUL, a line break or another control character in an
external_id, alias, braze_id, email or phone makes a profile that no later lookup, export or join will
match: almost always a damaged source file. C0 controls (U+0000-U+001F), DEL and C1 controls
(U+0080-U+009F) are refused; any other character is left to Braze.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from connector.arrow_values import array, scalar
from connector.contract.base import Violation

RULE = "identifier.control_character"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_RE2 = "[\\x00-\\x1f\\x7f-\\x{9f}]"
# Identifier fields of users track objects and Canvas recipients (their values are strings).
_FIELDS = ("external_id", "braze_id", "email", "phone", "external_user_id")
_ALIAS = ("alias_name", "alias_label")


def _texts(obj: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for k in _FIELDS:
        yield k, obj.get(k)
    alias = obj.get("user_alias")
    if isinstance(alias, dict):
        for k in _ALIAS:
            yield f"user_alias.{k}", alias.get(k)


def check_identifier_characters(obj: dict[str, Any], out: list[Violation]) -> None:
    """Add a violation for each identifier value holding a control character."""
    for field, value in _texts(obj):
        if isinstance(value, str) and (m := _CONTROL.search(value)):
            out.append(
                Violation(
                    RULE,
                    f"{field} holds the control character U+{ord(m.group()):04X} at position {m.start() + 1}; "
                    "Braze would store it as is (fix the source: a damaged file or a wrong delimiter?)",
                    field.partition(".")[0],
                )
            )


def control_rows(sources: dict[str, list[Sequence[Any]]]) -> set[int]:
    """Rows whose identifier values (as fed to the objects, by key) may hold a control character."""
    bad: set[int] = set()
    for values_lists in sources.values():
        for values in values_lists:
            bad |= _rows_with_control(values)
    return bad


def _rows_with_control(values: Sequence[Any]) -> set[int]:
    try:
        arr = array(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # aliases (dicts) or mixed types: one by one
        return {i for i, v in enumerate(values) if _has_control(v)}
    hits = pc.match_substring_regex(arr, _CONTROL_RE2)
    if not pc.any(hits).as_py():
        return set()
    return set(pc.indices_nonzero(pc.fill_null(hits, scalar(False))).to_pylist())


def _has_control(value: Any) -> bool:
    if isinstance(value, str):
        return _CONTROL.search(value) is not None
    if isinstance(value, dict):
        return any(isinstance(value.get(k), str) and _CONTROL.search(value[k]) for k in _ALIAS)
    return False

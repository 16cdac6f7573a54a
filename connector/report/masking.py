"""Masking of sample values in the report: identifiers, emails and phone numbers are not shown whole.

`report.mask_columns` in the pipeline file: null (the default) masks each stream's identifier columns,
the columns sent as `email` or `phone`, and any column whose name contains "email" or "phone"; a list
names the columns to mask instead (`[]` masks nothing). Only the report's samples (report.json,
report.html, the CLI summary) are masked; rejects.csv and failed.csv keep the rows whole, since they
are the data to fix and resend.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from connector.config import Stream, Value

PERSONAL_WORDS = ("email", "phone")
RAW = "_raw"  # a line that could not be parsed: its columns are unknown, so it is masked whole


def columns_to_mask(stream: Stream, setting: list[str] | None) -> frozenset[str]:
    """The source columns of `stream` whose values the report's samples mask."""
    if setting is not None:
        return frozenset(setting)
    cols: set[str] = set(_columns(stream.identifier))
    for attr in stream.attributes:
        if attr.column and ((attr.to or attr.column) in PERSONAL_WORDS):
            cols.add(attr.column)
    cols.update(c for c in _columns(stream) if any(w in c.lower() for w in PERSONAL_WORDS))
    return frozenset(cols)


def _columns(model: Any) -> list[str]:
    """Every source column a model (or list of models) reads."""
    if isinstance(model, Value):
        return [model.column] if model.column else []
    if isinstance(model, BaseModel):
        return [c for name in type(model).model_fields for c in _columns(getattr(model, name))]
    if isinstance(model, list | tuple):
        return [c for item in model for c in _columns(item)]
    if isinstance(model, dict):
        return [c for item in model.values() for c in _columns(item)]
    return []


def mask_value(text: str) -> str:
    """`alice@example.com` -> `a***************m`: the first and last character, the length kept."""
    if len(text) <= 4:
        return "*" * len(text)
    return text[0] + "*" * (len(text) - 2) + text[-1]


def mask_sample(entry: dict[str, Any], masked: frozenset[str]) -> dict[str, Any]:
    """A reject sample entry with its value (and that value inside the reason) masked when its column is."""
    column = entry.get("column") or RAW
    value = entry.get("value")
    if column not in masked and not (column == RAW and masked):
        return entry
    if not isinstance(value, str) or not value:
        return entry
    hidden = mask_value(value) if column != RAW else f"(line of {len(value)} characters, masked)"
    out = dict(entry, value=hidden)
    reason = entry.get("reason")
    if isinstance(reason, str):
        out["reason"] = _hide(reason, value, hidden)
    return out


def _hide(reason: str, value: str, hidden: str) -> str:
    """`reason` with `value` masked, also where the reason quotes only its start (long values are cut)."""
    if value in reason:
        return reason.replace(value, hidden)
    for k in range(min(len(value), 400) - 1, 3, -1):  # the longest start of the value the reason holds
        if value[:k] in reason:
            return reason.replace(value[:k], hidden)
    return reason

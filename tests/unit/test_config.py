"""Pipeline-file rules that Braze would otherwise reject on every row: refused when the file loads."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from connector.config import Stream


def canvas_stream(identifier: dict[str, Any], **canvas: Any) -> dict[str, Any]:
    return {
        "name": "c",
        "source": {"path": "x.csv"},
        "kind": "canvas_trigger",
        "identifier": identifier,
        "canvas": {"canvas_id": "cv1", **canvas},
    }


def test_alias_recipients_cannot_create_users() -> None:
    alias = {"user_alias": {"name": {"column": "n"}, "label": {"value": "crm"}}}
    with pytest.raises(ValidationError, match="send_to_existing_only: false cannot be used with user_alias"):
        Stream.model_validate(canvas_stream(alias, send_to_existing_only=False, attributes=[{"column": "a"}]))
    assert Stream.model_validate(canvas_stream(alias)).canvas is not None  # the default (true) is fine


@pytest.mark.parametrize("prio", [["identified", "unidentified"], []])
def test_prioritization_braze_refuses_is_refused(prio: list[str]) -> None:
    with pytest.raises(ValidationError, match="prioritization"):
        Stream.model_validate(canvas_stream({"email": {"column": "e"}}, prioritization=prio))


def test_prioritization_values_are_checked() -> None:
    with pytest.raises(ValidationError):
        Stream.model_validate(canvas_stream({"email": {"column": "e"}}, prioritization=["newest"]))
    ok = Stream.model_validate(canvas_stream({"email": {"column": "e"}}, prioritization=["unidentified"]))
    assert ok.canvas is not None and ok.canvas.prioritization == ["unidentified"]

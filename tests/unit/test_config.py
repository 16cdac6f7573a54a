"""Pipeline-file rules that Braze would otherwise reject on every row: refused when the file loads."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from connector.config import Stream, Write


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


def test_subscription_groups_cannot_go_through_canvas_recipient_attributes() -> None:
    ext = {"external_id": {"column": "id"}}
    with pytest.raises(ValidationError, match="subscription_groups cannot be set through Canvas"):
        Stream.model_validate(canvas_stream(ext, attributes=[{"column": "g", "to": "subscription_groups"}]))


def test_canvas_properties_default_key_old_spelling_and_shared_size() -> None:
    ext = {"external_id": {"column": "id"}}
    new = Stream.model_validate(canvas_stream(ext, properties={"columns": {"a": "a"}}))
    old = Stream.model_validate(canvas_stream(ext, context={"columns": {"a": "a"}}))  # the old spelling
    assert new.canvas == old.canvas and new.canvas is not None
    assert new.canvas.properties_key == "canvas_entry_properties" and new.canvas.properties.columns
    with pytest.raises(ValidationError):  # both spellings at once
        Stream.model_validate(canvas_stream(ext, properties={}, context={}))
    with pytest.raises(ValidationError, match="50 KB"):
        Stream.model_validate(canvas_stream(ext, shared_properties={"k": "x" * 52_000}))
    with pytest.raises(ValidationError):
        Stream.model_validate(canvas_stream(ext, properties_key="trigger_properties"))


@pytest.mark.parametrize("write", [{"mode": "sync"}, {"confirm_profiles": True}])
def test_sync_needs_the_sync_endpoint(write: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="sync_endpoint is disabled"):
        Write.model_validate({**write, "sync_endpoint": "disabled"})
    assert Write.model_validate({**write, "sync_endpoint": "enabled"}).sync_endpoint == "enabled"
    assert Write.model_validate({"batching": "combined50"}).batching == "combined50"

"""Live Activity `notification` over real HTTP: an apple_push object, `extra` an object, at most 1,912 bytes."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from connector.emulator import EmulatorServer

LIVE = {"app_id": "app", "activity_id": "act", "content_state": {"score": 1}}


def post(server: EmulatorServer, path: str, body: Any, key: str = "test-key") -> requests.Response:
    return requests.post(server.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)


# --------------------------------------------------------------------------- live activity notification


def _notification_of_size(size: int) -> dict[str, Any]:
    base = {"alert": {"body": ""}}
    pad = size - len(b'{"alert":{"body":""}}')
    return {"alert": {"body": "x" * pad}} if pad >= 0 else base


@pytest.mark.parametrize(
    ("notification", "message"),
    [
        ("It's halftime", "'notification' must be an apple_push object"),
        (["alert"], "'notification' must be an apple_push object"),
        ({"alert": "hi", "extra": "x"}, "Invalid Extra Push Payload"),
        ({"alert": "hi", "extra": ["a"]}, "Invalid Extra Push Payload"),
        ({"alert": "hi", "extra": None}, "Invalid Extra Push Payload"),
        ({"alert": "hi", "extra": {"aps": {"badge": 1}}}, "Invalid Extra Push Payload"),
        ({"alert": "hi", "extra": {"ab": 1}}, "Invalid Extra Push Payload"),
        (_notification_of_size(1913), "Apple Push Length Exceeded"),
        ({"alert": "é" * 956}, "Apple Push Length Exceeded"),  # 1,912 characters but more bytes
    ],
)
def test_live_activity_notification_is_refused(
    emulator: EmulatorServer, notification: Any, message: str
) -> None:
    r = post(emulator, "/messages/live_activity/update", {**LIVE, "notification": notification})
    assert (r.status_code, r.json()) == (400, {"message": message})
    assert emulator.stats()["objects_applied"]["live_activities"] == 0


@pytest.mark.parametrize(
    "notification",
    [
        {
            "alert": {"body": "It's halftime! Let's look at the scores", "title": "Halftime"}
        },  # the docs' example
        {"alert": "hi", "extra": {}},
        {"alert": "hi", "extra": {"deep_link": "app://score", "n": 1}},
        _notification_of_size(1912),
    ],
)
def test_live_activity_notification_is_accepted(emulator: EmulatorServer, notification: Any) -> None:
    r = post(emulator, "/messages/live_activity/update", {**LIVE, "notification": notification})
    assert (r.status_code, r.json()) == (201, {"message": "success"})


def test_notification_size_helper_is_exact() -> None:
    import orjson

    assert len(orjson.dumps(_notification_of_size(1912))) == 1912

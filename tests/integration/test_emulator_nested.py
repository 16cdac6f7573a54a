"""Invalid nested custom attributes are dropped, not rejected (braze-api.md §1.6, §3.3), over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from connector.emulator import EmulatorServer

T = "2024-05-01T10:00:00Z"

# Every documented way for a nested value to be invalid: null inside, bad or null $time, bad keys
# (space, dot, leading $), over-long strings, over 100 KB, malformed $add/$remove/$update.
INVALID_NESTED = [
    {"make": None},
    {"built": {"$time": "not a date"}},
    {"built": {"$time": None}},
    [{"id": 1, "name": None}],
    {"bad key": 1},
    {"a.b": 1},
    {"$x": 1},
    {"s": "x" * 256},
    {f"k{i}": "x" * 250 for i in range(420)},
    {"$add": [{"id": 3, "n": None}]},
    {"$remove": [{"$identifier_value": 1}]},
    {"$update": [{"$identifier_key": "id", "$identifier_value": 1, "$new_object": {"a b": 1}}]},
    {"$update": [{"$identifier_key": "id", "$identifier_value": 1}]},
    {"$add": {"id": 3}},
]


def post(server: EmulatorServer, path: str, body: Any) -> requests.Response:
    return requests.post(
        server.url + path, json=body, headers={"Authorization": "Bearer test-key"}, timeout=10
    )


def attrs_of(server: EmulatorServer, ext: str) -> dict[str, Any]:
    user = server.user("external_id", ext)
    assert user is not None
    return user["attributes"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("bad", INVALID_NESTED)
def test_invalid_nested_drops_every_nested_update_of_the_request(emulator: EmulatorServer, bad: Any) -> None:
    body = {
        "attributes": [
            {"external_id": "a", "bad": bad, "ok": {"x": 1}, "plan": "gold", "n": {"inc": 2}},
            {"external_id": "b", "pets": [{"id": 1}], "tags": ["t"], "seen": {"$time": T}},
        ],
        "events": [{"external_id": "a", "name": "e", "time": T}],
    }
    r = post(emulator, "/users/track", body)
    # Still a plain success: both objects are queued and counted, and Braze reports no error.
    assert (r.status_code, r.json()) == (
        201,
        {"attributes_processed": 2, "events_processed": 1, "message": "success"},
    )
    assert attrs_of(emulator, "a") == {"plan": "gold", "n": 2}
    assert attrs_of(emulator, "b") == {"tags": ["t"]}  # valid nested updates of another object dropped too
    assert emulator.user("external_id", "a")["custom_events"]["e"]["count"] == 1
    entry = emulator.ledger()[-1]
    assert [a.get("nested_dropped") for a in entry["applied"][:2]] == [["bad", "ok"], ["pets", "seen"]]
    assert entry["data_points"] == 2 + 1 + 1  # plan, n; tags; the event (dropped updates are free)


def test_dropped_update_keeps_the_stored_value(emulator: EmulatorServer) -> None:
    assert post(emulator, "/users/track", {"attributes": [{"external_id": "a", "car": {"make": "VW"}}]}).ok
    r = post(emulator, "/users/track/sync", {"attributes": [{"external_id": "a", "car": {"make": None}}]})
    assert r.status_code == 201
    assert r.json()["users"] == [{"external_id": "a", "custom_attributes": {"car": {"make": "VW"}}}]


def test_attribute_scope_drops_only_the_offending_attribute(emulator_factory: Any) -> None:
    s = emulator_factory(nested_invalid="attribute")
    body = {
        "attributes": [
            {"external_id": "a", "bad": {"make": None}, "ok": {"x": 1}},
            {"external_id": "b", "pets": [{"id": 1}]},
        ]
    }
    assert post(s, "/users/track", body).json() == {"attributes_processed": 2, "message": "success"}
    assert attrs_of(s, "a") == {"ok": {"x": 1}}
    assert attrs_of(s, "b") == {"pets": [{"id": 1}]}
    assert [a.get("nested_dropped") for a in s.ledger()[-1]["applied"]] == [["bad"], None]


def test_valid_nested_updates_are_untouched(emulator: EmulatorServer) -> None:
    body = {
        "attributes": [
            {"external_id": "a", "car": {"make": "VW", "built": {"$time": T}}, "pets": [{"id": 1}]}
        ]
    }
    assert post(emulator, "/users/track", body).status_code == 201
    assert set(attrs_of(emulator, "a")) == {"car", "pets"}
    assert "nested_dropped" not in emulator.ledger()[-1]["applied"][0]


def test_canvas_recipient_attributes_follow_the_same_rule(emulator_factory: Any) -> None:
    emulator = emulator_factory(canvases=("c",))
    recipients = [
        {
            "external_user_id": "a",
            "send_to_existing_only": False,
            "attributes": {"car": {"make": None}, "n": 1},
        },
        {
            "external_user_id": "b",
            "send_to_existing_only": False,
            "attributes": {"pets": [{"id": 1}], "n": 2},
        },
    ]
    r = post(emulator, "/canvas/trigger/send", {"canvas_id": "c", "recipients": recipients})
    assert r.status_code == 201 and set(r.json()) == {"dispatch_id", "message"}
    assert attrs_of(emulator, "a") == {"n": 1}
    assert attrs_of(emulator, "b") == {"n": 2}
    assert [a["nested_dropped"] for a in emulator.ledger()[-1]["applied"]] == [["car"], ["pets"]]


# A `{"$time": ...}` inside a nested attribute must be a valid, non-null time (braze-api.md §3.3); when it
# is not, the whole request's nested updates are dropped and Braze still answers 201.
BAD_TIMES = [None, "", "not a date", "2024-13-01", "2024-02-30T00:00:00Z", 1_700_000_000, {"d": T}, [T],
             "3001-01-01T00:00:00Z"]  # fmt: skip
BAD_TIME_PLACES = {
    "object": lambda bad: {"built": {"$time": bad}},
    "deep": lambda bad: {"a": {"b": {"when": {"$time": bad}}}},
    "array of objects": lambda bad: [{"id": 1, "when": {"$time": bad}}],
    "$add": lambda bad: {"$add": [{"id": 2, "when": {"$time": bad}}]},
    "$update": lambda bad: {
        "$update": [{"$identifier_key": "id", "$identifier_value": 1, "$new_object": {"when": {"$time": bad}}}]
    },
}


@pytest.mark.parametrize("place", sorted(BAD_TIME_PLACES))
@pytest.mark.parametrize("bad", BAD_TIMES, ids=repr)
def test_null_or_invalid_time_drops_every_nested_update(emulator_factory: Any, bad: Any, place: str) -> None:
    s = emulator_factory(canvases=("c",))
    value = BAD_TIME_PLACES[place](bad)
    good_time = {"seen": {"$time": T}}
    body = {"attributes": [{"external_id": "a", "bad": value, "ok": {"x": 1}, "plan": "gold"},
                           {"external_id": "b", "when": {"$time": T}, "pets": [{"id": 1}], "n": 1}]}  # fmt: skip
    r = post(s, "/users/track", body)
    assert (r.status_code, r.json()) == (201, {"attributes_processed": 2, "message": "success"})
    assert attrs_of(s, "a") == {"plan": "gold"} and attrs_of(s, "b") == {"n": 1}
    # /users/track/sync: the same drop, a 201, and the echo shows the values unchanged (never set here).
    r = post(s, "/users/track/sync", {"attributes": [{"external_id": "c", "bad": value, **good_time, "n": 2}]})
    assert (r.status_code, r.json()) == (
        201,
        {"users": [{"external_id": "c", "custom_attributes": {"bad": None, "seen": None, "n": 2}}],
         "message": "success"},
    )  # fmt: skip
    # Canvas recipient attributes follow the same rule (the request's other recipient loses its nested too).
    recipients = [
        {"external_user_id": "d", "send_to_existing_only": False, "attributes": {"bad": value, "n": 3}},
        {"external_user_id": "e", "send_to_existing_only": False, "attributes": {**good_time, "n": 4}},
    ]
    r = post(s, "/canvas/trigger/send", {"canvas_id": "c", "recipients": recipients})
    assert r.status_code == 201 and set(r.json()) == {"dispatch_id", "message"}
    assert attrs_of(s, "d") == {"n": 3} and attrs_of(s, "e") == {"n": 4}
    assert [len(d["recipients"]) for d in s.dispatches()] == [2]


@pytest.mark.parametrize("good", [T, "2013-07-16", "07/16/2013", "2020-05-28T00:00:00+01:00", "3000-06-01"])
def test_valid_nested_times_are_kept(emulator: EmulatorServer, good: str) -> None:
    r = post(emulator, "/users/track", {"attributes": [{"external_id": "a", "car": {"built": {"$time": good}}}]})
    assert r.status_code == 201
    assert attrs_of(emulator, "a") == {"car": {"built": {"$time": good}}}

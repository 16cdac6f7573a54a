"""Status codes and bodies of the emulator's Braze endpoints, over real HTTP on 127.0.0.1."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from connector.emulator import EmulatorServer

T = "2024-05-01T10:00:00Z"
NO_VALID = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."


def post(
    server: EmulatorServer, path: str, body: Any, key: str | None = "test-key", **kw: Any
) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if isinstance(body, bytes):
        return requests.post(
            server.url + path,
            data=body,
            headers={**headers, "Content-Type": "application/json"},
            timeout=10,
            **kw,
        )
    return requests.post(server.url + path, json=body, headers=headers, timeout=10, **kw)


def attrs(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"external_id": f"u{i}", "plan": "gold"} for i in range(start, start + n)]


def test_success_counts_and_rate_headers(emulator: EmulatorServer) -> None:
    body = {"attributes": attrs(2), "events": [{"external_id": "u0", "name": "login", "time": T}]}
    r = post(emulator, "/users/track", body)
    assert r.status_code == 201
    assert r.json() == {"attributes_processed": 2, "events_processed": 1, "message": "success"}
    assert r.headers["X-RateLimit-Limit"] == "3000"
    assert r.headers["X-RateLimit-Remaining"] == "2999"
    assert int(r.headers["X-RateLimit-Reset"]) > 1_700_000_000


def test_partial_errors_use_index_within_array(emulator: EmulatorServer) -> None:
    body = {
        "attributes": [{"external_id": "a", "email": "not-an-email"}, {"external_id": "b", "x": 1}],
        "events": [{"external_id": "a", "name": "e", "time": T}, {"name": "e", "time": T}],
        "purchases": [
            {"external_id": "a", "product_id": "p", "currency": "USD", "price": 1, "quantity": 101, "time": T}
        ],
    }
    r = post(emulator, "/users/track", body)
    assert r.status_code == 201
    data = r.json()
    assert (
        data["attributes_processed"] == 1
        and data["events_processed"] == 1
        and data["purchases_processed"] == 0
    )
    errors = {(e["input_array"], e["index"]): e["type"] for e in data["errors"]}
    assert errors == {
        ("attributes", 0): "The value provided for the 'email' field is not a valid email.",
        ("events", 1): "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required",
        ("purchases", 0): "'quantity' is not valid",
    }
    assert emulator.user("external_id", "b")["attributes"] == {"x": 1}
    assert emulator.user("external_id", "a") is not None  # created by its valid event


@pytest.mark.parametrize(
    ("obj", "array"),
    [
        ({"external_id": "a", "braze_id": "b", "x": 1}, "attributes"),
        ({"external_id": "a", "$bad": 1}, "attributes"),
        ({"external_id": "a", "s": "x" * 256}, "attributes"),
        ({"external_id": "x" * 988}, "attributes"),
        ({"external_id": "a", "gender": "Q"}, "attributes"),
        ({"external_id": "a", "dob": "01/02/1990"}, "attributes"),
        ({"external_id": "a", "email_subscribe": "yes"}, "attributes"),
        ({"external_id": "a", "push_tokens": [{"app_id": "app"}]}, "attributes"),
        ({"external_id": "a", "n": {"inc": "1"}}, "attributes"),
        ({"phone": "12"}, "attributes"),
        ({"external_id": "a", "time": T}, "events"),
        ({"external_id": "a", "name": "e", "time": "yesterday"}, "events"),
        ({"external_id": "a", "name": "e", "time": T, "properties": {"time": 1}}, "events"),
        ({"external_id": "a", "name": "e", "time": T, "properties": {"$x": 1}}, "events"),
        (
            {"external_id": "a", "name": "e", "time": T, "properties": {f"k{i}": i for i in range(257)}},
            "events",
        ),
        ({"external_id": "a", "name": "e", "time": T, "properties": {"big": ["x" * 200] * 600}}, "events"),
        ({"external_id": "a", "product_id": "p", "currency": "XYZ", "price": 1, "time": T}, "purchases"),
        ({"external_id": "a", "product_id": "p", "currency": "USD", "price": "1", "time": T}, "purchases"),
        ({"external_id": "a", "currency": "USD", "price": 1, "time": T}, "purchases"),
        (
            {"external_id": "a", "product_id": "p", "currency": "USD", "price": 1, "quantity": 0, "time": T},
            "purchases",
        ),
        ({"external_id": "a", "product_id": "p", "currency": "USD", "price": 1}, "purchases"),
        (
            {
                "external_id": "a",
                "product_id": "p",
                "currency": "USD",
                "price": 1,
                "time": T,
                "properties": {"price": 2},
            },
            "purchases",
        ),
    ],
)
def test_all_invalid_is_400_with_errors(emulator: EmulatorServer, obj: dict[str, Any], array: str) -> None:
    r = post(emulator, "/users/track", {array: [obj]})
    assert r.status_code == 400
    data = r.json()
    assert data["message"] == NO_VALID
    assert [(e["input_array"], e["index"]) for e in data["errors"]] == [(array, 0)]
    assert isinstance(data["errors"][0]["type"], str) and data["errors"][0]["type"]
    assert emulator.stats()["objects_applied"][array] == 0


def test_empty_body_is_400_no_valid(emulator: EmulatorServer) -> None:
    r = post(emulator, "/users/track", {})
    assert (r.status_code, r.json()["message"]) == (400, NO_VALID)


def test_object_cap_combined_and_per_array(emulator: EmulatorServer, emulator_factory: Any) -> None:
    events = [{"external_id": "u", "name": "e", "time": T}] * 40
    r = post(emulator, "/users/track", {"attributes": attrs(40), "events": events})
    assert (r.status_code, r.json()) == (400, {"message": "Max Input Length Exceeded"})
    assert post(emulator, "/users/track", {"attributes": attrs(75)}).status_code == 201
    legacy = emulator_factory(batching="per_array")
    assert post(legacy, "/users/track", {"attributes": attrs(75), "events": events}).status_code == 201
    r = post(legacy, "/users/track", {"attributes": attrs(76)})
    assert (r.status_code, r.json()["message"]) == (400, "Max Input Length Exceeded")


def test_malformed_json_gets_error_body(emulator: EmulatorServer) -> None:
    for path in (
        "/users/track",
        "/users/track/sync",
        "/canvas/trigger/send",
        "/messages/live_activity/update",
    ):
        r = post(emulator, path, b'{"attributes": [')
        assert r.status_code == 400
        assert set(r.json()) == {"error"}
        assert "message body does not match declared format" in r.json()["error"]


def test_body_over_4mb_is_413(emulator: EmulatorServer) -> None:
    blob = b'{"attributes": [{"external_id": "a", "x": "' + b"y" * (4 * 1024 * 1024) + b'"}]}'
    assert post(emulator, "/users/track", blob).status_code == 413
    assert emulator.stats()["requests"]["/users/track"] == {"413": 1}


def test_auth_401_403_and_404(emulator_factory: Any) -> None:
    server = emulator_factory(api_keys=("full", "trackonly:users.track"))
    r = post(server, "/users/track", {"attributes": attrs(1)}, key="wrong")
    assert (r.status_code, r.json()) == (401, {"message": "Invalid API key: wrong"})
    assert post(server, "/users/track", {"attributes": attrs(1)}, key=None).status_code == 401
    assert post(server, "/users/track", {"attributes": attrs(1)}, key="trackonly").status_code == 201
    r = post(server, "/canvas/trigger/send", {"canvas_id": "c", "broadcast": True}, key="trackonly")
    assert (r.status_code, r.json()) == (403, {"message": "Access Denied"})
    r = post(server, "/users/nothing", {}, key="full")
    assert r.status_code == 404
    r = requests.get(server.url + "/_emulator/stats", headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert r.status_code == 401


def test_sync_one_object_and_echo(emulator: EmulatorServer) -> None:
    r = post(
        emulator,
        "/users/track/sync",
        {"attributes": [{"external_id": "s1", "a": 1, "tags": ["x"], "first_name": "Jo"}]},
    )
    assert r.status_code == 201
    assert r.json() == {
        "users": [{"external_id": "s1", "custom_attributes": {"a": 1, "tags": ["x"]}}],
        "message": "success",
    }
    r = post(
        emulator,
        "/users/track/sync",
        {
            "purchases": [
                {
                    "email": "a@b.co",
                    "product_id": "p",
                    "currency": "EUR",
                    "price": 2,
                    "quantity": 3,
                    "time": T,
                }
            ]
        },
    )
    assert r.json()["users"] == [
        {
            "email": "a@b.co",
            "purchase_events": [
                {
                    "product_id": "p",
                    "first": "2024-05-01T10:00:00.000Z",
                    "last": "2024-05-01T10:00:00.000Z",
                    "count": 3,
                }
            ],
        }
    ]
    assert post(emulator, "/users/track/sync", {"attributes": attrs(2)}).json() == {
        "message": "Max Input Length Exceeded"
    }
    r = post(
        emulator,
        "/users/track/sync",
        {"events": [{"user_alias": {"alias_name": "n", "alias_label": "l"}, "name": "e", "time": T}]},
    )
    assert r.json() == {"users": [], "message": "success"}  # alias events never create users


def test_canvas_trigger_rules(emulator_factory: Any) -> None:
    s = emulator_factory(canvases={"c": "active", "c1": "active", "paused-c": "paused", "old-c": "archived"})
    assert post(s, "/users/track", {"attributes": attrs(2)}).status_code == 201
    r = post(
        s,
        "/canvas/trigger/send",
        {
            "canvas_id": "c1",
            "recipients": [
                {"external_user_id": "u0"},
                {"external_user_id": "u0"},
                {"external_user_id": "u1"},
            ],
        },
    )
    assert (
        r.status_code == 201
        and set(r.json()) == {"dispatch_id", "message"}
        and len(r.json()["dispatch_id"]) == 32
    )
    assert s.stats()["objects_applied"]["recipients"] == 2  # duplicates collapse
    r = post(s, "/canvas/trigger/send", {"canvas_id": "paused-c", "broadcast": True})
    assert r.json()["notice"].startswith("The Canvas is paused.")
    r = post(s, "/canvas/trigger/send", {"canvas_id": "old-c", "broadcast": True})
    assert r.json()["notice"].startswith("The Canvas is archived.")
    bad = [
        (
            {"recipients": [{"external_user_id": "u0"}]},
            "canvas_id must be a string of the Canvas api identifier",
        ),
        ({"canvas_id": "c"}, "No Recipients"),
        (
            {"canvas_id": "c", "recipients": [{"external_user_id": str(i)} for i in range(51)]},
            "The max number of external_ids and aliases per request was exceeded",
        ),
        ({"canvas_id": "c", "broadcast": True, "recipients": [{"external_user_id": "u0"}]}, None),
        ({"canvas_id": "c", "recipients": [{"external_user_id": "u0", "braze_id": "b"}]}, None),
        ({"canvas_id": "c", "recipients": [{"email": "a@b.co"}]}, None),
        ({"canvas_id": "c", "recipients": [{"external_user_id": "n", "send_to_existing_only": False}]}, None),
        ({"canvas_id": "c", "broadcast": True, "context": {"x": "y" * 52_000}}, None),
        # Recipient attributes are validated like an attributes object (they used to crash with a 500).
        (
            {"canvas_id": "c", "recipients": [{"external_user_id": "u0", "attributes": {"n": {"inc": "x"}}}]},
            "Invalid recipient attributes: 'n' increment must be a number",
        ),
        (
            {"canvas_id": "c", "recipients": [{"external_user_id": "u0", "attributes": {"t": {"add": "x"}}}]},
            None,
        ),
        ({"canvas_id": "c", "recipients": [{"external_user_id": "u0", "attributes": {"$k": 1}}]}, None),
        (
            {
                "canvas_id": "c",
                "recipients": [{"external_user_id": "u0", "canvas_entry_properties": {"x": "y" * 52_000}}],
            },
            None,
        ),
    ]
    for body, message in bad:
        r = post(s, "/canvas/trigger/send", body)
        assert r.status_code == 400, body
        assert message is None or r.json()["message"] == message
    r = post(
        s,
        "/canvas/trigger/send",
        {
            "canvas_id": "c",
            "recipients": [
                {"external_user_id": "new", "send_to_existing_only": False, "attributes": {"tier": 2}}
            ],
        },
    )
    assert r.status_code == 201
    assert s.user("external_id", "new")["attributes"] == {"tier": 2}  # attributes applied before the send
    sent = s.dispatches()
    assert [len(d["recipients"]) for d in sent] == [2, 1]


def test_live_activity(emulator: EmulatorServer) -> None:
    ok = {
        "app_id": "app",
        "activity_id": "act",
        "content_state": {"score": 1},
        "end_activity": True,
        "dismissal_date": "2024-01-01T00:00:00Z",
    }
    r = post(emulator, "/messages/live_activity/update", ok)
    assert (r.status_code, r.json()) == (201, {"message": "success"})
    for missing in ("app_id", "activity_id", "content_state"):
        r = post(emulator, "/messages/live_activity/update", {k: v for k, v in ok.items() if k != missing})
        assert r.status_code == 400 and missing in r.json()["message"]
    r = post(emulator, "/messages/live_activity/update", {**ok, "stale_date": "soon"})
    assert r.status_code == 400
    assert emulator.stats()["objects_applied"]["live_activities"] == 1


def _ms(dt: datetime) -> str:
    """`dt` the way the emulator echoes times (milliseconds, Z), truncated like its clock."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _sync_clamped(server: EmulatorServer, body: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    """POST a sync body whose time is in the future; return the reply and the [before, after] clock bounds."""
    before = datetime.now(UTC)
    r = post(server, "/users/track/sync", body)
    after = datetime.now(UTC)
    assert r.status_code == 201, r.text
    return r.json(), _ms(before), _ms(after)


def test_sync_echoes_custom_event_first_last_count(emulator: EmulatorServer) -> None:
    future = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ev = {"external_id": "u", "name": "rented_movie"}
    # Another event on the profile: the echo lists only the event named in the request (braze-api.md §2).
    assert post(emulator, "/users/track", {"events": [{**ev, "name": "other", "time": T}]}).status_code == 201

    r = post(emulator, "/users/track/sync", {"events": [{**ev, "time": "2024-02-01T00:00:00Z"}]})
    assert (r.status_code, r.json()) == (
        201,
        {
            "users": [
                {
                    "external_id": "u",
                    "custom_events": [
                        {
                            "name": "rented_movie",
                            "first": "2024-02-01T00:00:00.000Z",
                            "last": "2024-02-01T00:00:00.000Z",
                            "count": 1,
                        }
                    ],
                }
            ],
            "message": "success",
        },
    )
    # An earlier event (with an offset) moves `first` back and leaves `last`.
    r = post(emulator, "/users/track/sync", {"events": [{**ev, "time": "2024-01-01T01:00:00+01:00"}]})
    assert r.json()["users"] == [
        {
            "external_id": "u",
            "custom_events": [
                {
                    "name": "rented_movie",
                    "first": "2024-01-01T00:00:00.000Z",
                    "last": "2024-02-01T00:00:00.000Z",
                    "count": 2,
                }
            ],
        }
    ]
    # A future time is clamped to now (braze-api.md §4), so `last` is the request time, not the future one.
    data, lo, hi = _sync_clamped(emulator, {"events": [{**ev, "time": future}]})
    [user] = data["users"]
    [agg] = user["custom_events"]
    assert set(user) == {"external_id", "custom_events"} and set(agg) == {"name", "first", "last", "count"}
    assert (agg["name"], agg["first"], agg["count"]) == ("rented_movie", "2024-01-01T00:00:00.000Z", 3)
    assert lo <= agg["last"] <= hi
    # The echo is the profile's state.
    assert emulator.user("external_id", "u")["custom_events"]["rented_movie"] == {
        k: agg[k] for k in ("first", "last", "count")
    }


def test_sync_echoes_purchase_events_by_alias(emulator: EmulatorServer) -> None:
    alias = {"alias_name": "device123", "alias_label": "my_device_identifier"}
    create = {"attributes": [{"user_alias": alias, "_update_existing_only": False, "seen": True}]}
    assert post(emulator, "/users/track", create).status_code == 201
    buy = {"user_alias": alias, "product_id": "Completed Order", "currency": "USD", "price": 219.98}
    r = post(
        emulator,
        "/users/track/sync",
        {"purchases": [{**buy, "quantity": 2, "time": "2022-12-06T19:20:45+01:00"}]},
    )
    assert (r.status_code, r.json()) == (
        201,
        {
            "users": [
                {
                    "user_alias": alias,
                    "purchase_events": [
                        {
                            "product_id": "Completed Order",
                            "first": "2022-12-06T18:20:45.000Z",
                            "last": "2022-12-06T18:20:45.000Z",
                            "count": 2,  # quantity N counts as N purchases
                        }
                    ],
                }
            ],
            "message": "success",
        },
    )
    r = post(emulator, "/users/track/sync", {"purchases": [{**buy, "time": "2013-07-16T19:20:30+01:00"}]})
    assert r.json()["users"][0]["purchase_events"] == [
        {
            "product_id": "Completed Order",
            "first": "2013-07-16T18:20:30.000Z",
            "last": "2022-12-06T18:20:45.000Z",
            "count": 3,
        }
    ]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    data, lo, hi = _sync_clamped(emulator, {"purchases": [{**buy, "time": future}]})
    [user] = data["users"]
    [agg] = user["purchase_events"]
    assert set(user) == {"user_alias", "purchase_events"}
    assert set(agg) == {"product_id", "first", "last", "count"}
    assert (agg["product_id"], agg["first"], agg["count"]) == (
        "Completed Order",
        "2013-07-16T18:20:30.000Z",
        4,
    )
    assert lo <= agg["last"] <= hi


def test_sync_event_times_before_year_1000_keep_iso_and_order(emulator: EmulatorServer) -> None:
    # Regression: years < 1000 were echoed as "999-…" and then sorted after "2024-…", so `last` stuck there.
    ev = {"external_id": "u", "name": "e"}
    post(emulator, "/users/track/sync", {"events": [{**ev, "time": "0999-01-01T00:00:00Z"}]})
    r = post(emulator, "/users/track/sync", {"events": [{**ev, "time": "2024-01-01T00:00:00Z"}]})
    assert r.json()["users"][0]["custom_events"] == [
        {"name": "e", "first": "0999-01-01T00:00:00.000Z", "last": "2024-01-01T00:00:00.000Z", "count": 2}
    ]


LIVE = {"app_id": "app", "activity_id": "act", "content_state": {"score": 1}}
BAD_DATES = [
    "soon",
    "",
    "2024-02-30T00:00:00Z",
    "2024-01-01T25:00:00Z",
    1_700_000_000,
    True,
    {},
    ["2024-01-01"],
]


@pytest.mark.parametrize("field", ["dismissal_date", "stale_date"])
def test_live_activity_rejects_invalid_iso_dates(emulator: EmulatorServer, field: str) -> None:
    for bad in BAD_DATES:
        for extra in ({}, {"end_activity": True}):
            r = post(emulator, "/messages/live_activity/update", {**LIVE, **extra, field: bad})
            # A fatal 400 in Braze's `message` envelope (the `error` key is only for unparseable JSON).
            assert (r.status_code, r.json()) == (400, {"message": f"'{field}' must be an ISO-8601 date"}), bad
    # The other date valid does not rescue an invalid one.
    other = "stale_date" if field == "dismissal_date" else "dismissal_date"
    r = post(
        emulator, "/messages/live_activity/update", {**LIVE, other: "2024-01-01T00:00:00Z", field: "soon"}
    )
    assert (r.status_code, r.json()) == (400, {"message": f"'{field}' must be an ISO-8601 date"})
    stats = emulator.stats()
    assert stats["requests"]["/messages/live_activity/update"] == {"400": 2 * len(BAD_DATES) + 1}
    assert stats["objects_applied"]["live_activities"] == 0


@pytest.mark.parametrize(
    "value",
    [
        "2023-02-28T00:00:00+0000",  # the docs' own example (offset without a colon)
        "2023-02-27T16:55:49+0000",
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00.123+05:30",
        "2024-01-01",
        "2099-12-31T23:59:59Z",  # future: not clamped or refused
    ],
)
def test_live_activity_accepts_valid_iso_dates(emulator: EmulatorServer, value: str) -> None:
    bodies = [
        {**LIVE, "dismissal_date": value},
        {**LIVE, "end_activity": True, "dismissal_date": value},  # past + end_activity: removed at once
        {**LIVE, "stale_date": value},
        {**LIVE, "end_activity": False, "dismissal_date": value, "stale_date": value},
    ]
    for body in bodies:
        r = post(emulator, "/messages/live_activity/update", body)
        assert (r.status_code, r.json()) == (201, {"message": "success"}), body
    assert emulator.stats()["objects_applied"]["live_activities"] == len(bodies)
    applied = [e["applied"][0] for e in emulator.ledger()]
    assert [a["end_activity"] for a in applied] == [False, True, False, False]

"""Braze's attribute rules over real HTTP: subscription group ids, Canvas recipients' subscription groups,
and what /users/track/sync leaves unchanged when an update is over a limit."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from connector.emulator import EmulatorServer

T = "2024-05-01T10:00:00Z"
GROUP = "ed06e19a-69b1-4f9b-a452-2db2c4e303a8"  # a real subscription group id (recorded cassettes)
NO_VALID = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."


def post(server: EmulatorServer, path: str, body: Any, key: str = "test-key") -> requests.Response:
    return requests.post(server.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def attrs_of(server: EmulatorServer, ext: str) -> dict[str, Any] | None:
    user = server.user("external_id", ext)
    return None if user is None else user["attributes"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- subscription groups


def test_canvas_recipient_subscription_groups_are_not_applied(emulator_factory: Any) -> None:
    s = emulator_factory(canvases=("c",))
    groups = [{"subscription_group_id": GROUP, "subscription_state": "subscribed"}]
    recipients = [
        {"external_user_id": "a", "send_to_existing_only": False,
         "attributes": {"tier": 1, "subscription_groups": groups}},
        # Not checked either: Braze does not process them this way (an invalid id is no error here).
        {"external_user_id": "b", "send_to_existing_only": False,
         "attributes": {"tier": 2, "subscription_groups": [{"subscription_group_id": "nope"}]}},
    ]  # fmt: skip
    r = post(s, "/canvas/trigger/send", {"canvas_id": "c", "recipients": recipients})
    assert r.status_code == 201 and set(r.json()) == {"dispatch_id", "message"}
    assert attrs_of(s, "a") == {"tier": 1} and attrs_of(s, "b") == {"tier": 2}
    assert [len(d["recipients"]) for d in s.dispatches()] == [2]  # the Canvas is still sent to both
    assert [a["ignored"] for a in s.ledger()[-1]["applied"]] == [["subscription_groups"]] * 2
    # The same groups through /users/track are applied.
    assert post(s, "/users/track", {"attributes": [{"external_id": "a", "subscription_groups": groups}]}).ok
    assert attrs_of(s, "a") == {"tier": 1, "subscription_groups": groups}


BAD_GROUPS = [
    ({"subscription_group_id": "subscription_group_identifier_1", "subscription_state": "subscribed"},
     "Invalid subscription group ID"),
    ({"subscription_group_id": GROUP[:-1], "subscription_state": "subscribed"}, "Invalid subscription group ID"),
    ({"subscription_group_id": 12345, "subscription_state": "subscribed"}, "Invalid subscription group ID"),
    ({"subscription_group_id": GROUP, "subscription_state": "opted_in"},
     "'subscription_state' must be 'subscribed' or 'unsubscribed'"),
    ({"subscription_group_id": GROUP}, "Each subscription group must be an object with 'subscription_group_id' "
     "and 'subscription_state'"),
]  # fmt: skip


@pytest.mark.parametrize(("group", "message"), BAD_GROUPS)
def test_subscription_group_ids_must_be_uuids(emulator: EmulatorServer, group: Any, message: str) -> None:
    good = {"external_id": "ok", "subscription_groups": [{"subscription_group_id": GROUP.upper(),
                                                          "subscription_state": "unsubscribed"}]}  # fmt: skip
    bad = {"external_id": "bad", "subscription_groups": [group]}
    r = post(emulator, "/users/track", {"attributes": [good, bad]})
    assert (r.status_code, r.json()) == (
        201,
        {"attributes_processed": 1, "message": "success",
         "errors": [{"type": message, "input_array": "attributes", "index": 1}]},
    )  # fmt: skip
    assert attrs_of(emulator, "bad") is None and attrs_of(emulator, "ok") == {
        "subscription_groups": good["subscription_groups"]
    }
    for path in ("/users/track", "/users/track/sync"):
        r = post(emulator, path, {"attributes": [bad]})
        assert (r.status_code, r.json()) == (
            400,
            {"message": NO_VALID, "errors": [{"type": message, "input_array": "attributes", "index": 0}]},
        )


def test_subscription_groups_must_be_an_array(emulator: EmulatorServer) -> None:
    r = post(
        emulator, "/users/track", {"attributes": [{"external_id": "a", "subscription_groups": {"id": 1}}]}
    )
    assert r.status_code == 400 and r.json()["errors"][0]["type"] == "'subscription_groups' must be an array"


# --------------------------------------------------------------------------- sync leaves over-limit values


def _sync(server: EmulatorServer, **attrs: Any) -> requests.Response:
    return post(server, "/users/track/sync", {"attributes": [{"external_id": "u", **attrs}]})


def test_sync_leaves_an_over_long_string_unchanged(emulator: EmulatorServer) -> None:
    assert _sync(emulator, name="first").status_code == 201
    r = _sync(emulator, name="x" * 256, plan="gold")
    # 201, and the echo is the profile's value: the over-long update was not made (the rest was).
    assert (r.status_code, r.json()) == (
        201,
        {
            "users": [{"external_id": "u", "custom_attributes": {"name": "first", "plan": "gold"}}],
            "message": "success",
        },
    )
    assert attrs_of(emulator, "u") == {"name": "first", "plan": "gold"}
    entry = emulator.ledger()[-1]
    assert entry["applied"][0]["not_updated"] == ["name"] and entry["data_points"] == 1  # only `plan` billed
    r = _sync(emulator, fresh="y" * 300)  # never set before: the echo shows no value
    assert r.json()["users"][0]["custom_attributes"] == {"fresh": None}
    assert _sync(emulator, name="z" * 255).json()["users"][0]["custom_attributes"] == {"name": "z" * 255}
    # /users/track keeps reporting the object as an error.
    r = post(emulator, "/users/track", {"attributes": [{"external_id": "u", "name": "x" * 256}]})
    assert r.status_code == 400 and r.json()["errors"][0]["input_array"] == "attributes"


def test_sync_leaves_an_array_over_its_limit_unchanged(emulator_factory: Any) -> None:
    s = emulator_factory(array_max_length=3)
    assert _sync(s, tags=["a", "b"]).status_code == 201
    for over in (["a", "b", "c", "d"], ["ok", "x" * 256]):  # 4 distinct values over a max of 3; a long value
        r = _sync(s, tags=over)
        assert r.status_code == 201 and r.json()["users"][0]["custom_attributes"] == {"tags": ["a", "b"]}, (
            over
        )
    big = emulator_factory()  # default 500 values, 100 KB
    assert _sync(big, tags=[f"{i:0>250}" for i in range(450)]).json()["users"][0]["custom_attributes"] == {
        "tags": None
    }  # 450 values but over 100 KB
    r = _sync(s, tags={"add": ["c", "x" * 256]})
    assert r.json()["users"][0]["custom_attributes"] == {"tags": ["a", "b"]}
    # Within the limits: repeated values count once, and an `add` to a full array drops the oldest value.
    assert _sync(s, tags=["a", "b", "a", "c"]).json()["users"][0]["custom_attributes"] == {
        "tags": ["b", "a", "c"]
    }
    assert _sync(s, tags={"add": ["d"]}).json()["users"][0]["custom_attributes"] == {"tags": ["a", "c", "d"]}
    assert [e["applied"][0].get("not_updated") for e in s.ledger()] == [
        None, ["tags"], ["tags"], ["tags"], None, None,
    ]  # fmt: skip

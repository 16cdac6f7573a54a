"""Profile state semantics of the emulator (attributes, arrays, nested objects, events, purchases, identifiers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from connector.emulator import EmulatorServer

T1, T2, T3 = "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00+01:00"


def track(server: EmulatorServer, **body: Any) -> dict[str, Any]:
    r = requests.post(
        server.url + "/users/track",
        json=body,
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def attrs_of(server: EmulatorServer, ext: str) -> dict[str, Any]:
    user = server.user("external_id", ext)
    assert user is not None
    return user["attributes"]  # type: ignore[no-any-return]


def test_set_inc_and_null_removal(emulator: EmulatorServer) -> None:
    track(emulator, attributes=[{"external_id": "u", "n": {"inc": 5}, "s": "a", "gone": 1}])
    track(emulator, attributes=[{"external_id": "u", "n": {"inc": -2}, "s": None, "gone": None, "f": 1.5}])
    assert attrs_of(emulator, "u") == {"n": 3, "f": 1.5}


def test_array_add_remove_move_to_end_and_max_length(emulator_factory: Any) -> None:
    s = emulator_factory(array_max_length=4)
    track(s, attributes=[{"external_id": "u", "tags": ["a", "b", "a", "c"]}])
    assert attrs_of(s, "u")["tags"] == ["b", "a", "c"]
    track(s, attributes=[{"external_id": "u", "tags": {"add": ["b", "d"], "remove": ["c"]}}])
    assert attrs_of(s, "u")["tags"] == ["a", "b", "d"]  # b moved to the end
    track(s, attributes=[{"external_id": "u", "tags": {"add": ["e", "f"]}}])
    assert attrs_of(s, "u")["tags"] == ["b", "d", "e", "f"]  # oldest dropped at the max length


def test_nested_objects_overwrite_or_merge(emulator: EmulatorServer) -> None:
    track(emulator, attributes=[{"external_id": "u", "car": {"make": "VW", "spec": {"hp": 90, "doors": 3}}}])
    track(emulator, attributes=[{"external_id": "u", "_merge_objects": True, "car": {"spec": {"hp": 110}}}])
    assert attrs_of(emulator, "u")["car"] == {"make": "VW", "spec": {"hp": 110, "doors": 3}}
    track(emulator, attributes=[{"external_id": "u", "car": {"model": "Golf"}}])
    assert attrs_of(emulator, "u")["car"] == {"model": "Golf"}


def test_array_of_objects_add_remove_update(emulator: EmulatorServer) -> None:
    track(emulator, attributes=[{"external_id": "u", "pets": [{"id": 1, "n": "a"}, {"id": 2, "n": "b"}]}])
    op = {"$add": [{"id": 3, "n": "c"}], "$remove": [{"$identifier_key": "id", "$identifier_value": 1}],
          "$update": [{"$identifier_key": "id", "$identifier_value": 2, "$new_object": {"age": 4}}]}  # fmt: skip
    track(emulator, attributes=[{"external_id": "u", "_merge_objects": True, "pets": op}])
    assert attrs_of(emulator, "u")["pets"] == [{"id": 2, "n": "b", "age": 4}, {"id": 3, "n": "c"}]


def test_update_existing_only_and_alias_creation(emulator: EmulatorServer) -> None:
    track(emulator, attributes=[{"external_id": "ghost", "_update_existing_only": True, "x": 1}])
    assert emulator.user("external_id", "ghost") is None
    alias = {"alias_name": "dev1", "alias_label": "device"}
    out = track(emulator, attributes=[{"user_alias": alias, "x": 1}])
    assert (
        out["attributes_processed"] == 1 and emulator.user("user_alias", "dev1|device") is None
    )  # update-only default
    track(emulator, attributes=[{"user_alias": alias, "_update_existing_only": False, "x": 2}])
    user = emulator.user("user_alias", "dev1|device")
    assert user is not None and user["attributes"] == {"x": 2} and user["external_id"] is None
    track(emulator, events=[{"user_alias": alias, "name": "e", "time": T1}])
    assert emulator.user("user_alias", "dev1|device")["custom_events"]["e"]["count"] == 1
    track(
        emulator,
        events=[{"user_alias": {"alias_name": "z", "alias_label": "device"}, "name": "e", "time": T1}],
    )
    assert emulator.user("user_alias", "z|device") is None
    assert emulator.stats()["objects_applied"] == {
        "attributes": 1,
        "events": 1,
        "purchases": 0,
        "recipients": 0,
        "live_activities": 0,
    }


def test_email_and_phone_lookup(emulator: EmulatorServer) -> None:
    track(emulator, attributes=[{"email": "e@x.io", "a": 1}])
    assert emulator.user("email", "e@x.io")["external_id"] is None
    track(emulator, attributes=[{"external_id": "k", "email": "e@x.io", "b": 2}])
    assert emulator.user("email", "e@x.io")["external_id"] == "k"  # the profile with an external_id wins
    track(emulator, attributes=[{"email": "e@x.io", "c": 3}])
    assert attrs_of(emulator, "k") == {"email": "e@x.io", "b": 2, "c": 3}
    track(emulator, attributes=[{"phone": "+14155550100", "p": 1}])
    assert emulator.user("phone", "+14155550100")["attributes"]["p"] == 1
    braze_id = emulator.user("external_id", "k")["braze_id"]
    track(emulator, attributes=[{"braze_id": braze_id, "d": 4}])
    assert attrs_of(emulator, "k")["d"] == 4
    track(emulator, attributes=[{"braze_id": "unknown-braze-id", "d": 4}])  # braze_id never creates
    assert emulator.user("braze_id", "unknown-braze-id") is None


def test_event_and_purchase_aggregation_and_future_clamp(emulator: EmulatorServer) -> None:
    future = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    track(
        emulator,
        events=[{"external_id": "u", "name": "e", "time": T2}, {"external_id": "u", "name": "e", "time": T1}],
    )
    track(
        emulator,
        events=[
            {"external_id": "u", "name": "e", "time": T3},
            {"external_id": "u", "name": "f", "time": future},
        ],
    )
    ev = emulator.user("external_id", "u")["custom_events"]
    assert ev["e"] == {"first": "2024-01-01T00:00:00.000Z", "last": "2024-02-29T23:00:00.000Z", "count": 3}
    assert ev["f"]["first"] <= datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.999Z")  # clamped to now
    buy = {"external_id": "u", "product_id": "p", "currency": "USD", "price": 3.5}
    track(emulator, purchases=[{**buy, "time": T1, "quantity": 2}, {**buy, "time": T2}])
    assert emulator.user("external_id", "u")["purchases"]["p"] == {
        "first": "2024-01-01T00:00:00.000Z",
        "last": "2024-02-01T00:00:00.000Z",
        "count": 3,
    }


def test_data_points_count_unchanged_values(emulator: EmulatorServer) -> None:
    body = [{"external_id": "u", "a": 1, "b": "x", "email_subscribe": "opted_in"}]
    track(emulator, attributes=body)
    track(emulator, attributes=body)  # unchanged, still billed
    track(
        emulator,
        attributes=[{"external_id": "u", "tags": {"add": ["p", "q"]}, "obj": {"k1": 1, "k2": {"k3": 1}}}],
    )
    track(emulator, events=[{"external_id": "u", "name": "e", "time": T1}])
    assert emulator.stats()["data_points"] == 2 + 2 + 2 + 3 + 1


def test_time_formats_accepted(emulator: EmulatorServer) -> None:
    times = ["2013-07-16T19:20:30+01:00", "2013-07-16T19:20:30:000Z", "2013-07-16 19:20:30", "2013-07-16",
             "07/16/2013", "2019-02-15 00:00:00 -0500", "2013-07-16T19:20:30.123Z"]  # fmt: skip
    out = track(
        emulator, events=[{"external_id": "u", "name": f"e{i}", "time": t} for i, t in enumerate(times)]
    )
    assert out == {"events_processed": len(times), "message": "success"}
    ev = emulator.user("external_id", "u")["custom_events"]
    assert ev["e5"]["first"] == "2019-02-15T05:00:00.000Z"
    assert ev["e4"]["first"] == "2013-07-16T00:00:00.000Z"


def test_ledger_since_and_reset(emulator: EmulatorServer) -> None:
    track(emulator, attributes=[{"external_id": "a", "x": 1}])
    track(emulator, attributes=[{"external_id": "b", "x": 1}])
    entries = emulator.ledger()
    assert [e["seq"] for e in entries] == [1, 2]
    later = emulator.ledger(since=1)
    assert len(later) == 1 and later[0]["applied"][0]["identifier"] == {"external_id": "b"}
    emulator.reset()
    assert emulator.ledger() == [] and emulator.user("external_id", "a") is None


def test_file_db_persists_across_restarts(tmp_path: Any) -> None:
    db = str(tmp_path / "emu.sqlite")
    with EmulatorServer(db=db) as s:
        track(s, attributes=[{"external_id": "p", "x": {"inc": 1}}])
    with EmulatorServer(db=db) as s:
        track(s, attributes=[{"external_id": "p", "x": {"inc": 1}}])
        assert attrs_of(s, "p") == {"x": 2}
        assert s.stats()["requests"]["/users/track"] == {"201": 2}


def test_email_change_and_removal_update_lookup(emulator: EmulatorServer) -> None:
    track(emulator, attributes=[{"external_id": "m", "email": "old@x.io"}])
    track(emulator, attributes=[{"external_id": "m", "n": 1}])  # served from the cache, email unchanged
    assert emulator.user("email", "old@x.io")["external_id"] == "m"
    track(emulator, attributes=[{"external_id": "m", "email": "new@x.io"}])
    assert (
        emulator.user("email", "old@x.io") is None
        and emulator.user("email", "new@x.io")["external_id"] == "m"
    )
    track(emulator, attributes=[{"external_id": "m", "email": None}])
    assert emulator.user("email", "new@x.io") is None


def test_ledger_pages_and_can_omit_applied(emulator: EmulatorServer) -> None:
    for i in range(3):
        track(emulator, attributes=[{"external_id": f"p{i}", "x": 1}])
    r = requests.get(
        emulator.url + "/_emulator/ledger?since=1&limit=1&applied=0",
        headers={"Authorization": "Bearer test-key"},
        timeout=10,
    )
    assert r.json() == {"entries": [{"seq": 2, "endpoint": "/users/track", "status": 201, "data_points": 1, "dropped": False, "fault": None,
                                     "objects": {"attributes": 1, "events": 0, "purchases": 0, "recipients": 0, "live_activities": 0}}],
                        "more": True, "next_since": 2, "limit": 1}  # fmt: skip
    last = requests.get(emulator.url + "/_emulator/ledger?since=2", headers={"Authorization": "Bearer test-key"},
                        timeout=10).json()  # fmt: skip
    assert (last["more"], last["next_since"], [e["seq"] for e in last["entries"]]) == (False, 3, [3])
    assert [e["seq"] for e in emulator.ledger(applied=False)] == [1, 2, 3]


def test_ledger_detail_ids_and_none(emulator_factory: Any) -> None:
    body = {"attributes": [{"external_id": "q", "secret_plan": "gold"}]}
    ids = emulator_factory(ledger_detail="ids")
    track(ids, **body)
    assert ids.ledger()[0]["applied"] == [
        {"array": "attributes", "index": 0, "identifier": {"external_id": "q"}}
    ]
    none = emulator_factory(ledger_detail="none")
    track(none, **body)
    entry = none.ledger()[0]
    assert entry["applied"] == [] and entry["objects"]["attributes"] == 1


def test_reset_forgets_identifiers_so_a_returning_user_is_written_again(emulator_factory: Any) -> None:
    # Regression: the identifier -> profile cache outlived a reset, so a user seen before was written to
    # the deleted profile (and vanished) instead of a new one.
    s = emulator_factory(canvases=("c",))
    h = {"Authorization": f"Bearer {s.api_key}"}
    alias = {"alias_name": "dev", "alias_label": "device"}
    track(s, attributes=[{"external_id": "u", "plan": "gold"},
                         {"user_alias": alias, "_update_existing_only": False, "seen": True}])  # fmt: skip
    assert s.user("external_id", "u") is not None
    s.reset()
    assert s.user("external_id", "u") is None and s.ledger() == [] and s.stats()["data_points"] == 0
    track(s, attributes=[{"external_id": "u", "plan": "silver"}])
    assert attrs_of(s, "u") == {"plan": "silver"}
    track(s, attributes=[{"user_alias": alias, "_update_existing_only": False, "seen": False}])
    assert s.user("user_alias", "dev|device")["attributes"] == {"seen": False}
    r = requests.post(s.url + "/users/track/sync", json={"events": [{"external_id": "u", "name": "e", "time": T1}]},
                      headers=h, timeout=10)  # fmt: skip
    assert r.json()["users"][0]["custom_events"][0]["count"] == 1
    body = {"canvas_id": "c", "recipients": [{"external_user_id": "u"}]}
    assert requests.post(s.url + "/canvas/trigger/send", json=body, headers=h, timeout=10).status_code == 201
    assert len(s.dispatches()[0]["recipients"]) == 1  # the returning user exists again for the send
    assert [e["seq"] for e in s.ledger()] == [1, 2, 3, 4]  # numbering restarts like a fresh emulator

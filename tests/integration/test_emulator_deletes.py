"""POST /users/delete on the emulator, over real HTTP on 127.0.0.1 (the recorded calls: test_emulator_oracle)."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from connector.emulator import EmulatorServer


def post(server: EmulatorServer, path: str, body: Any, key: str = "test-key") -> requests.Response:
    return requests.post(server.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def create(server: EmulatorServer, objects: list[dict[str, Any]]) -> None:
    assert post(server, "/users/track", {"attributes": objects}).status_code == 201


def test_delete_by_each_identifier_kind_removes_only_those_profiles(emulator: EmulatorServer) -> None:
    alias = {"alias_name": "n1", "alias_label": "crm"}
    create(emulator, [{"external_id": f"u{i}", "plan": "gold"} for i in range(4)])
    create(emulator, [{"user_alias": alias, "_update_existing_only": False, "plan": "x"}])
    create(emulator, [{"external_id": "u9", "plan": "x"}])
    # a profile with an event: its events go with it, and a user recreated later starts empty
    evt = {"external_id": "u1", "name": "e", "time": "2024-05-01T10:00:00Z"}
    assert post(emulator, "/users/track", {"events": [evt]}).status_code == 201
    braze_id = emulator.user("external_id", "u9")["braze_id"]  # type: ignore[index]

    r = post(emulator, "/users/delete", {"external_ids": ["u0", "u1", "nobody"]})
    assert (r.status_code, r.json()) == (201, {"deleted": 3, "message": "success"})  # queued, known or not
    assert r.headers["Cache-Control"] == "max-age=0, private, must-revalidate"
    assert r.headers["X-RateLimit-Limit"] == "20000"
    assert emulator.user("external_id", "u0") is None and emulator.user("external_id", "u1") is None
    assert emulator.user("external_id", "u2") is not None

    assert post(emulator, "/users/delete", {"user_aliases": [alias]}).json()["deleted"] == 1
    assert emulator.user("user_alias", "n1|crm") is None
    assert post(emulator, "/users/delete", {"braze_ids": [braze_id]}).status_code == 201
    assert emulator.user("external_id", "u9") is None

    create(emulator, [{"external_id": "u1", "plan": "new"}])
    again = emulator.user("external_id", "u1")
    assert again is not None and again["custom_events"] == {} and again["attributes"] == {"plan": "new"}
    entries = [e for e in emulator.ledger() if e["endpoint"] == "/users/delete"]
    assert entries[0]["applied"] == [
        {"deleted": {"external_id": "u0"}, "found": True},
        {"deleted": {"external_id": "u1"}, "found": True},
        {"deleted": {"external_id": "nobody"}, "found": False},
    ]
    assert emulator.stats()["requests"]["/users/delete"] == {"201": 3}


def test_more_than_50_identifiers_are_refused_as_braze_does(emulator: EmulatorServer) -> None:
    create(emulator, [{"external_id": f"u{i}", "plan": "gold"} for i in range(51)])
    r = post(emulator, "/users/delete", {"external_ids": [f"u{i}" for i in range(51)]})
    assert (r.status_code, r.json()) == (400, {"message": "The max number of ids per request was exceeded"})
    assert emulator.user("external_id", "u0") is not None  # nothing deleted
    assert post(emulator, "/users/delete", {"external_ids": [f"u{i}" for i in range(50)]}).status_code == 201
    assert emulator.user("external_id", "u49") is None and emulator.user("external_id", "u50") is not None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Exactly one of 'external_ids', 'user_aliases' or 'braze_ids' must be provided"),
        ({"external_ids": ["a"], "braze_ids": ["b"]}, "Exactly one of"),
        ({"external_ids": []}, "'external_ids' must be a non-empty array"),
        ({"external_ids": "u1"}, "'external_ids' must be a non-empty array"),
        ({"external_ids": [None]}, "'external_ids' holds an invalid identifier"),
        ({"user_aliases": [{"alias_name": "n"}]}, "'user_aliases' holds an invalid identifier"),
        ({"email_addresses": ["a@b.co"]}, "'email_addresses' is not modelled"),
    ],
)
def test_malformed_delete_bodies_get_a_400(emulator: EmulatorServer, body: dict[str, Any], message: str) -> None:
    create(emulator, [{"external_id": "u1", "plan": "gold"}])
    r = post(emulator, "/users/delete", body)
    assert r.status_code == 400
    assert r.json()["message"].startswith(message)
    assert emulator.user("external_id", "u1") is not None


def test_permission_and_rate_limit(emulator_factory: Any) -> None:
    server = emulator_factory(api_keys=("full", "trackonly:users.track"), rate_limits={"users_delete": (2, 3600)})
    r = post(server, "/users/delete", {"external_ids": ["u1"]}, key="trackonly")
    assert (r.status_code, r.json()) == (403, {"message": "Access Denied"})
    r = post(server, "/users/delete", {"external_ids": ["u1"]}, key="wrong")
    assert (r.status_code, r.json()) == (401, {"message": "Invalid API key: wrong"})
    assert r.headers["X-RateLimit-Limit"] == ""
    assert post(server, "/users/delete", {"external_ids": ["u1"]}, key="full").status_code == 201
    r = post(server, "/users/delete", {"external_ids": ["u2"]}, key="full")
    assert (r.status_code, r.headers["X-RateLimit-Remaining"]) == (201, "0")
    r = post(server, "/users/delete", {"external_ids": ["u3"]}, key="full")
    assert (r.status_code, r.json()) == (429, {"message": "Rate Limited"})
    assert int(r.headers["X-Ratelimit-Retry-After"]) >= 1
    # /users/track keeps its own budget
    assert post(server, "/users/track", {"attributes": [{"external_id": "u1", "a": 1}]}, key="full").status_code == 201

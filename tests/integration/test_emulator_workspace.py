"""The emulated workspace over real HTTP: /users/track/sync is a beta, Canvas ids must be ones the workspace
has, and the MAU contracts' 50-object batch cap (`batching="combined50"`)."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from connector.emulator import EmulatorServer

T = "2024-05-01T10:00:00Z"
UNKNOWN_CANVAS = {"message": "canvas_id must be a string of the Canvas api identifier"}
LIVE = {"app_id": "app", "activity_id": "act", "content_state": {"score": 1}}


def post(server: EmulatorServer, path: str, body: Any, key: str = "test-key") -> requests.Response:
    return requests.post(server.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def attrs_of(server: EmulatorServer, ext: str) -> dict[str, Any] | None:
    user = server.user("external_id", ext)
    return None if user is None else user["attributes"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- /users/track/sync is a beta

SYNC_BODY = {"attributes": [{"external_id": "s", "plan": "gold"}]}


def test_sync_is_refused_without_the_beta(emulator_factory: Any) -> None:
    s = emulator_factory(sync_beta=False, api_keys=("test-key", "scoped:users.track,canvas.trigger.send"))
    for key in ("test-key", "scoped"):
        r = post(s, "/users/track/sync", SYNC_BODY, key=key)
        # errors.md: "403 Access Denied", the key lacks the endpoint's permission.
        assert (r.status_code, r.json()) == (403, {"message": "Access Denied"})
        assert r.headers["X-RateLimit-Limit"] == "500"  # the sync bucket, not counted
    assert attrs_of(s, "s") is None
    assert s.stats()["requests"]["/users/track/sync"] == {"403": 2}
    # A plain key keeps every other endpoint.
    assert post(s, "/users/track", SYNC_BODY).status_code == 201
    assert post(s, "/messages/live_activity/update", LIVE).status_code == 201


def test_sync_granted_to_a_key_or_to_every_key(emulator_factory: Any) -> None:
    s = emulator_factory(sync_beta=False, api_keys=("plain", "syncer:users.track.sync"))
    assert post(s, "/users/track/sync", SYNC_BODY, key="syncer").status_code == 201
    assert attrs_of(s, "s") == {"plan": "gold"}
    # A permission list is exactly those permissions.
    assert post(s, "/users/track", SYNC_BODY, key="syncer").status_code == 403
    assert post(s, "/users/track/sync", SYNC_BODY, key="plain").status_code == 403
    beta = emulator_factory(sync_beta=True, api_keys=("plain", "trackonly:users.track"))
    for key in ("plain", "trackonly"):
        r = post(beta, "/users/track/sync", SYNC_BODY, key=key)
        assert r.status_code == 201 and r.json()["users"] == [
            {"external_id": "s", "custom_attributes": {"plan": "gold"}}
        ]


def test_an_unknown_permission_name_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="unknown permission users.track.synx"):
        EmulatorServer(api_keys=("k:users.track.synx",))


# --------------------------------------------------------------------------- Canvas ids


def test_unknown_canvas_is_refused_unless_registered(emulator_factory: Any) -> None:
    rec = [{"external_user_id": "n", "send_to_existing_only": False, "attributes": {"tier": 1}}]
    strict = emulator_factory(canvases=("known", "held=paused"))
    for canvas_id in ("other", "KNOWN", " known"):
        r = post(strict, "/canvas/trigger/send", {"canvas_id": canvas_id, "recipients": rec})
        assert (r.status_code, r.json()) == (400, UNKNOWN_CANVAS)
    assert strict.dispatches() == [] and attrs_of(strict, "n") is None  # nothing applied before the send
    r = post(strict, "/canvas/trigger/send", {"canvas_id": "known", "recipients": rec})
    assert r.status_code == 201 and set(r.json()) == {"dispatch_id", "message"}
    r = post(strict, "/canvas/trigger/send", {"canvas_id": "held", "broadcast": True})
    assert r.status_code == 201 and r.json()["notice"].startswith("The Canvas is paused.")
    assert [d["canvas_id"] for d in strict.dispatches()] == ["known"]
    anyone = emulator_factory(canvases=(), accept_any_canvas=True)
    r = post(anyone, "/canvas/trigger/send", {"canvas_id": "whatever-id", "recipients": rec})
    assert r.status_code == 201 and "notice" not in r.json()
    assert attrs_of(anyone, "n") == {"tier": 1}
    r = post(anyone, "/canvas/trigger/send", {"canvas_id": "", "broadcast": True})
    assert (r.status_code, r.json()) == (400, UNKNOWN_CANVAS)  # an empty id is never a Canvas


def test_canvas_registration_forms(emulator_factory: Any) -> None:
    s = emulator_factory(canvases={"a": "archived", "b": "active"})
    assert (
        post(s, "/canvas/trigger/send", {"canvas_id": "a", "broadcast": True})
        .json()["notice"]
        .startswith("The Canvas is archived.")
    )
    assert "notice" not in post(s, "/canvas/trigger/send", {"canvas_id": "b", "broadcast": True}).json()
    with pytest.raises(ValueError, match="state must be active, paused or archived"):
        EmulatorServer(canvases=("c=stopped",))


# --------------------------------------------------------------------------- combined50 (MAU contracts)


def test_combined50_caps_each_request_at_50_objects(emulator_factory: Any) -> None:
    s = emulator_factory(batching="combined50")
    attrs = [{"external_id": f"u{i}", "n": i} for i in range(30)]
    events = [{"external_id": "u0", "name": "e", "time": T}] * 20
    r = post(s, "/users/track", {"attributes": attrs, "events": events})
    assert (r.status_code, r.json()) == (
        201,
        {"attributes_processed": 30, "events_processed": 20, "message": "success"},
    )
    r = post(s, "/users/track", {"attributes": attrs, "events": [*events, events[0]]})
    assert (r.status_code, r.json()) == (400, {"message": "Max Input Length Exceeded"})
    assert post(s, "/users/track", {"events": [events[0]] * 51}).status_code == 400
    assert s.stats()["objects_applied"]["events"] == 20  # the refused requests applied nothing
    with pytest.raises(ValueError, match="combined50"):
        EmulatorServer(batching="combined25")  # type: ignore[arg-type]

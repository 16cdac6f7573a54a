"""Replay every recorded real Braze interaction (braze_ruby VCR cassettes, 66 of them) against the emulator.

For the endpoints the emulator serves, its status, body and headers must be the recorded ones (values that
are random per call, such as a dispatch_id, are compared by shape). A bad key is refused before routing, as
Braze does, so the recorded 401s match on every path. Any other recorded call must get a clear 404 that
names the call and lists what the emulator serves. The state a recording needs (the Canvas it triggers)
is set up from the recording itself.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

# A copy of ../shared/oracle/braze_ruby_vcr/interactions_index.json (MIT, LICENSE.txt beside it), kept in the
# repository so that every checkout replays the recordings; the test fails, never skips, when it is missing.
INDEX = Path(__file__).resolve().parents[1] / "fixtures" / "oracle" / "interactions_index.json"
RECORDED_KEY = "<BRAZE_REST_API_KEY>"
SERVED = [
    "POST /users/track",
    "POST /users/track/sync",
    "POST /canvas/trigger/send",
    "POST /messages/live_activity/update",
    "POST /users/delete",
]
# Response fields whose value is drawn per call: compared by shape (Braze's dispatch ids are 32 hex digits).
RANDOM_FIELDS = {"dispatch_id": re.compile(r"^[0-9a-f]{32}$")}
LIMIT_HEADERS = ("X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset")


def _interactions() -> list[dict[str, Any]]:
    return json.loads(INDEX.read_text())["interactions"]  # type: ignore[no-any-return]


CASES = _interactions()


def _served(case: dict[str, Any]) -> bool:
    return f"{case['method']} {urlsplit(case['path']).path}" in SERVED


def _workspace(case: dict[str, Any]) -> dict[str, Any]:
    """Emulator options for the state the recording had: its key, and the Canvas it triggered."""
    options: dict[str, Any] = {"api_keys": (RECORDED_KEY,), "canvases": ()}
    body = case["request_body"]
    if case["path"] == "/canvas/trigger/send" and case["status"] < 300:
        options["canvases"] = (body["canvas_id"],)  # the recording shows Braze had this Canvas
    return options


def _replay(server: Any, case: dict[str, Any]) -> requests.Response:
    headers = {k: v[0] for k, v in case["request_headers"].items() if k in ("Authorization", "Content-Type")}
    body = case["request_body"]
    return requests.request(
        case["method"],
        server.url + case["path"],
        data=None if body is None else json.dumps(body),
        headers=headers,
        timeout=10,
    )


def test_the_index_holds_all_66_recordings() -> None:
    assert len(CASES) == 66
    # 3 x /users/track, 1 x /canvas/trigger/send, 3 x /users/delete
    assert sum(_served(c) for c in CASES) == 7


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=[f"{n:02d}-{c['method']}-{urlsplit(c['path']).path}-{c['status']}" for n, c in enumerate(CASES)],
)
def test_replay_matches_recorded_response(emulator_factory: Any, case: dict[str, Any]) -> None:
    server = emulator_factory(**_workspace(case))
    r = _replay(server, case)
    assert r.headers["Content-Type"].startswith("application/json")
    if not _served(case) and case["status"] != 401:
        method, path = case["method"], urlsplit(case["path"]).path
        assert r.status_code == 404, r.text
        body = r.json()
        assert body["served"] == SERVED
        assert body["message"].startswith("Not Found")
        assert f"{method} {path}" in body["message"] and all(s in body["message"] for s in SERVED)
        return
    assert r.status_code == case["status"], r.text
    got, want = r.json(), case["response_body"]
    assert set(got) == set(want)
    for key, value in want.items():
        if key in RANDOM_FIELDS:
            assert RANDOM_FIELDS[key].match(value), value  # the pattern holds for the recording itself
            assert isinstance(got[key], str) and RANDOM_FIELDS[key].match(got[key]), got[key]
        else:
            assert got[key] == value  # same message texts and counts
    recorded = case["response_headers_selected"]
    assert r.headers["Cache-Control"] == recorded["Cache-Control"][0]
    for name in LIMIT_HEADERS:
        assert name in r.headers
        if recorded[name] == [""]:
            assert r.headers[name] == ""
        else:
            assert r.headers[name].isdigit()
    if case["path"] == "/canvas/trigger/send":
        assert [d["canvas_id"] for d in server.dispatches()] == [case["request_body"]["canvas_id"]]


def test_a_recorded_canvas_trigger_is_refused_for_a_canvas_the_emulator_does_not_have(
    emulator_factory: Any,
) -> None:
    (case,) = [c for c in CASES if c["path"] == "/canvas/trigger/send"]
    server = emulator_factory(api_keys=(RECORDED_KEY,), canvases=())
    r = _replay(server, case)
    # Braze's recorded answer for a canvas_id it has no Canvas for (GET /canvas/details?canvas_id=non-existing).
    (unknown,) = [c for c in CASES if c["path"].startswith("/canvas/details")]
    assert (r.status_code, r.json()) == (unknown["status"], unknown["response_body"])
    assert r.headers["Cache-Control"] == unknown["response_headers_selected"]["Cache-Control"][0]
    assert server.dispatches() == []


def test_a_recorded_delete_removes_the_profiles_it_names(emulator_factory: Any) -> None:
    """The recorded /users/delete, replayed after its users were created: the profiles are gone after the 201,
    and a user the request did not name is kept."""
    (case, *_) = [c for c in CASES if c["path"] == "/users/delete" and c["status"] == 201]
    server = emulator_factory(api_keys=(RECORDED_KEY,))
    ids = case["request_body"]["external_ids"]
    attrs = [{"external_id": str(i), "plan": "gold"} for i in [*ids, 999]]
    headers = {"Authorization": f"Bearer {RECORDED_KEY}", "Content-Type": "application/json"}
    created = requests.post(server.url + "/users/track", json={"attributes": attrs}, headers=headers, timeout=10)
    assert created.status_code == 201
    assert all(server.user("external_id", str(i)) is not None for i in ids)
    r = _replay(server, case)
    assert (r.status_code, r.json()) == (case["status"], case["response_body"])
    assert all(server.user("external_id", str(i)) is None for i in ids)
    assert server.user("external_id", "999") is not None
    (entry,) = [e for e in server.ledger() if e["endpoint"] == "/users/delete"]
    assert entry["applied"] == [{"deleted": {"external_id": i}, "found": True} for i in ids]

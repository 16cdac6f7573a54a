"""Replay the recorded real Braze interactions (braze_ruby VCR cassettes) against the emulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

INDEX = Path("/work/shared/oracle/braze_ruby_vcr/interactions_index.json")
RECORDED_KEY = "<BRAZE_REST_API_KEY>"


def _interactions() -> list[dict[str, Any]]:
    if not INDEX.exists():
        return []
    items = json.loads(INDEX.read_text())["interactions"]
    return [i for i in items if i["path"] in ("/users/track", "/canvas/trigger/send") or i["status"] == 401]


CASES = _interactions()


@pytest.mark.skipif(not CASES, reason="oracle cassettes not available")
@pytest.mark.parametrize("case", CASES, ids=[f"{c['path']}-{c['status']}-{n}" for n, c in enumerate(CASES)])
def test_replay_matches_recorded_response(emulator_factory: Any, case: dict[str, Any]) -> None:
    server = emulator_factory(api_keys=(RECORDED_KEY,))
    headers = {k: v[0] for k, v in case["request_headers"].items() if k in ("Authorization", "Content-Type")}
    r = requests.request(
        case["method"],
        server.url + case["path"],
        data=json.dumps(case["request_body"]),
        headers=headers,
        timeout=10,
    )
    assert r.status_code == case["status"]
    got, want = r.json(), case["response_body"]
    assert set(got) == set(want)
    for key, value in want.items():
        if key == "dispatch_id":
            assert isinstance(got[key], str) and len(got[key]) == len(value)
        else:
            assert got[key] == value  # same message texts and counts
    recorded = case["response_headers_selected"]
    for name in ("X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset"):
        assert name in r.headers
        if recorded[name] == [""]:
            assert r.headers[name] == ""
        else:
            assert r.headers[name].isdigit()

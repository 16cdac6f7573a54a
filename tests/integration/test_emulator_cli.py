"""`braze-connector emulator` as a subprocess: announces its URL, serves Braze, stops cleanly on SIGTERM.

Options it refuses, and its --help, are checked in-process (tests/cli_invoke.py, the same typer app as the
command): a refusal is an exit code and a message, and a subprocess would only add a CLI start-up (~1 s of
CPU) to each.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from cli_invoke import invoke

from connector.emulator import start_subprocess


def emulator_cli(*args: str, env: dict[str, str] | None = None) -> Any:
    """`braze-connector emulator ARGS` in-process (for options it refuses before serving; stdout, stderr apart)."""
    return invoke("emulator", *args, cwd=Path.cwd(), env=env)


def test_subprocess_serves_and_stops() -> None:
    proc = start_subprocess(
        "--rate-limit", "users_track=2/60", "--canvas", "c9=paused", api_keys=("k1", "k2:users.track")
    )
    try:
        assert proc.url.startswith("http://127.0.0.1:")
        h = {"Authorization": "Bearer k1"}
        r = requests.post(
            proc.url + "/users/track",
            json={"attributes": [{"external_id": "x", "a": 1}]},
            headers=h,
            timeout=10,
        )
        assert r.status_code == 201 and r.headers["X-RateLimit-Limit"] == "2"
        r = requests.post(
            proc.url + "/canvas/trigger/send",
            json={"canvas_id": "c9", "broadcast": True},
            headers=h,
            timeout=10,
        )
        assert "paused" in r.json()["notice"]
        r = requests.post(proc.url + "/canvas/trigger/send", json={"canvas_id": "c9", "broadcast": True},
                          headers={"Authorization": "Bearer k2"}, timeout=10)  # fmt: skip
        assert r.status_code == 403
    finally:
        proc.stop()
    assert proc.proc.returncode == 0


def test_default_dev_key_and_bad_options() -> None:
    proc = start_subprocess(api_keys=())
    try:
        r = requests.get(
            proc.url + "/_emulator/stats", headers={"Authorization": "Bearer local-dev-key"}, timeout=10
        )
        assert r.status_code == 200 and r.json()["data_points"] == 0
    finally:
        proc.stop()
    bad = emulator_cli("--port", "0", "--fault", "boom=2")
    assert bad.exit_code == 2
    assert "--fault 'boom=2'" in bad.stderr and "Traceback" not in bad.stderr


def test_new_options_over_the_cli() -> None:
    args = (
        "--canvas",
        "c",
        "--rate-limit",
        "broadcast_audience=1/3600",
        "--fault",
        "users_track:202=1",
        "--nested-invalid",
        "attribute",
    )
    with start_subprocess(*args) as proc:
        h = {"Authorization": "Bearer test-key"}
        body = {"canvas_id": "c", "broadcast": True}
        codes = [
            requests.post(proc.url + "/canvas/trigger/send", json=body, headers=h, timeout=10).status_code
            for _ in range(2)
        ]
        assert codes == [201, 429]
        track = {"attributes": [{"external_id": "u", "bad": {"x": None}, "ok": {"x": 1}}]}
        r = requests.post(proc.url + "/users/track", json=track, headers=h, timeout=10)
        assert (r.status_code, r.json()) == (202, {"message": "queued"})
        user = requests.get(proc.url + "/_emulator/users/external_id/u", headers=h, timeout=10).json()
        assert user["attributes"] == {"ok": {"x": 1}}
    bad = emulator_cli("--port", "0", "--nested-invalid", "all")
    assert bad.exit_code == 2 and "--nested-invalid 'all'" in bad.stderr


def test_latency_ms_option_delays_every_request_without_serialising() -> None:
    with start_subprocess("--latency-ms", "500") as proc:
        h = {"Authorization": "Bearer test-key"}

        def one(i: int) -> tuple[int, float]:
            body = {"attributes": [{"external_id": f"u{i}", "a": i}]}
            t0 = time.monotonic()
            status = requests.post(proc.url + "/users/track", json=body, headers=h, timeout=10).status_code
            return status, time.monotonic() - t0

        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(one, range(20)))
        wall = time.monotonic() - start
        assert [status for status, _ in results] == [201] * 20
        assert min(elapsed for _, elapsed in results) >= 0.5
        # One at a time they could not take less than 20 x 0.5 s, however fast the machine; a busy machine only
        # adds to the 0.5 s they take together, so this bound fails on serialising, not on load.
        assert wall < 20 * 0.5
        stats = requests.get(proc.url + "/_emulator/stats", headers=h, timeout=10).json()
        assert stats["requests"]["/users/track"] == {"201": 20}


def test_sync_beta_canvas_and_batching_options_over_the_cli() -> None:
    sync = {"attributes": [{"external_id": "s", "a": 1}]}

    def call(url: str, path: str, body: object, key: str) -> requests.Response:
        return requests.post(url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)

    keys = ("plain", "syncer:users.track.sync")
    with start_subprocess("--canvas", "c1", "--canvas", "c2=paused", "--batching", "combined50", api_keys=keys) as p:
        assert call(p.url, "/users/track/sync", sync, "plain").json() == {"message": "Access Denied"}
        assert call(p.url, "/users/track/sync", sync, "syncer").status_code == 201
        assert call(p.url, "/canvas/trigger/send", {"canvas_id": "c1", "broadcast": True}, "plain").status_code == 201
        r = call(p.url, "/canvas/trigger/send", {"canvas_id": "c2", "broadcast": True}, "plain")
        assert "paused" in r.json()["notice"]
        r = call(p.url, "/canvas/trigger/send", {"canvas_id": "c3", "broadcast": True}, "plain")
        assert (r.status_code, r.json()) == (400, {"message": "canvas_id must be a string of the Canvas api identifier"})
        big = {"attributes": [{"external_id": f"u{i}", "a": i} for i in range(51)]}
        assert call(p.url, "/users/track", big, "plain").json() == {"message": "Max Input Length Exceeded"}
        r = requests.get(p.url + "/segments/list", headers={"Authorization": "Bearer plain"}, timeout=10)
        assert r.status_code == 404 and "POST /users/track/sync" in r.json()["served"]
    with start_subprocess("--sync-beta", "--accept-any-canvas", api_keys=("plain",)) as p:
        assert call(p.url, "/users/track/sync", sync, "plain").status_code == 201
        assert call(p.url, "/canvas/trigger/send", {"canvas_id": "any", "broadcast": True}, "plain").status_code == 201
    for bad, shown in (
        (["--canvas", "c=stopped"], "--canvas 'c=stopped'"),
        (["--batching", "combined25"], "--batching 'combined25'"),
        (["--api-key", "secret-k:users.track.synx"], "unknown permission users.track.synx"),
    ):
        res = emulator_cli("--port", "0", *bad)
        assert res.exit_code == 2 and shown in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert "secret" not in res.stderr  # a key is never echoed


def test_help_names_the_new_options() -> None:
    res = emulator_cli("--help", env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for text in ("--sync-beta", "--accept-any-canvas", "--canvas", "combined50", "users.track.sync"):
        assert text in res.stdout, text


def test_listening_beyond_loopback_with_the_public_key_is_refused() -> None:
    for args in (["--host", "0.0.0.0"], ["--host", "::", "--api-key", "local-dev-key"], ["--host", "192.0.2.7"]):
        res = emulator_cli("--port", "0", *args)
        assert res.exit_code == 2, res.stdout + res.stderr
        assert "opens the emulator" in res.stderr and "give a key of your own with --api-key" in res.stderr
        assert "listening" not in res.stdout


def test_which_binds_are_allowed() -> None:
    from connector.emulator.cli import public_bind_problem

    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        assert public_bind_problem(host, []) is None
    assert public_bind_problem("0.0.0.0", ["my-own-key"]) is None
    assert public_bind_problem("0.0.0.0", ["my-own-key:users.track"]) is None
    assert public_bind_problem("0.0.0.0", ["my-own-key", "local-dev-key"]) is not None
    assert public_bind_problem("emulator.example", []) is not None

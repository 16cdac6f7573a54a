"""Worker processes sharing one budget through a real redis-server, against the emulator in its own process.

Each worker (limiter_worker.py) runs a BrazeClient with the shared limiter. The emulator counts requests in
fixed one-second windows and says how many it has left in X-RateLimit-Remaining; the lowest value seen per
window gives the requests it admitted there, which must stay within the budget. How fully the budget is
used is judged on the slots the budget's script granted (Redis TIME, counted in the worker), never on a
rate over real time: a loaded machine that cannot keep the workers busy does not fail a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from cli_invoke import invoke
from windows import max_in_window

from connector.config import RateLimit, Write
from connector.delivery.shared_budget import US, shapes_of
from connector.delivery.shared_limits import HORIZON_S
from connector.emulator.server import EmulatorProcess, start_subprocess

WORKER = Path(__file__).with_name("limiter_worker.py")
LIMIT = 20  # requests per one-second window: the workers' shared budget (their pipeline settings)
# The emulator allows 10 % more: it counts arrivals in fixed windows, and on a loaded machine a worker
# descheduled between its grant and the socket carries a request into the next window, which no limiter can
# prevent (README, A shared rate limit: the margin). That the grants themselves keep to the budget in every
# window is shown deterministically by tests/integration/test_shared_limiter_start.py.
EMULATOR_LIMIT = 22


@pytest.fixture
def emulator_process() -> Iterator[EmulatorProcess]:
    with start_subprocess("--rate-limit", f"users_track={EMULATOR_LIMIT}/1") as emu:
        yield emu


def start_worker(emu: EmulatorProcess, redis_url: str | None, namespace: str, tag: str, requests: int,
                 *extra: str) -> subprocess.Popen[str]:  # fmt: skip
    cmd = [sys.executable, str(WORKER), emu.url, "--requests", str(requests), "--threads", "4",
           "--limit", str(LIMIT), "--namespace", namespace, "--tag", tag, *extra]  # fmt: skip
    if redis_url:
        cmd += ["--redis", redis_url]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return dict(json.loads(out.strip().splitlines()[-1]))


def wait_for_workers(redis_url: str, namespace: str, n: int, procs: list[subprocess.Popen[str]]) -> redis.Redis:
    """Wait until n workers of the namespace heartbeat (they are past their imports and sending)."""
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 90
    while client.zcard(f"braze-connector:{{{namespace}}}:workers") < n:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.2)
    return client


def track_statuses(emu: EmulatorProcess) -> dict[str, int]:
    """The emulator's /users/track answers so far, by status."""
    req = urllib.request.Request(emu.url + "/_emulator/stats", headers={"Authorization": "Bearer test-key"})
    stats = json.loads(urllib.request.urlopen(req, timeout=30).read())
    return {k: int(v) for k, v in stats["requests"].get("/users/track", {}).items()}


def emulator_429s(emu: EmulatorProcess) -> int:
    return track_statuses(emu).get("429", 0)


def wait_for_sends(emu: EmulatorProcess, more: int, procs: list[subprocess.Popen[str]]) -> None:
    """Wait until the emulator has answered `more` further /users/track requests (a condition, not a time)."""
    target = sum(track_statuses(emu).values()) + more
    deadline = time.monotonic() + 120
    while sum(track_statuses(emu).values()) < target:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.1)


def wait_for_user(emu: EmulatorProcess, external_id: str, procs: list[subprocess.Popen[str]]) -> None:
    """Wait until the emulator holds the profile `external_id` (a request carrying it was answered)."""
    req = urllib.request.Request(f"{emu.url}/_emulator/users/external_id/{external_id}",
                                 headers={"Authorization": "Bearer test-key"})  # fmt: skip
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(req, timeout=30).read()
            return
        except urllib.error.HTTPError as e:
            assert e.code == 404, e
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.1)


def admitted_per_window(outs: list[dict[str, Any]]) -> dict[int, int]:
    """Requests the emulator admitted per window (keyed by the window's start, epoch seconds)."""
    lowest: dict[int, int] = {}
    for o in outs:
        for reset, remaining in o["windows"].items():
            start = int(reset) - 1
            lowest[start] = min(lowest.get(start, EMULATOR_LIMIT), int(remaining))
    return {start: EMULATOR_LIMIT - low for start, low in lowest.items()}



def test_four_workers_share_one_budget(redis_server: Any, emulator_process: EmulatorProcess) -> None:
    """Four workers, one budget: the slots the budget's script granted them (Redis TIME, counted, not timed)
    keep every one-second window, of any alignment, within the limit, and every request is delivered.

    Whether the requests also *arrive* inside the emulator's fixed windows depends on the machine: a worker
    descheduled between its slot and the socket carries a request into the next window, which no limiter can
    prevent (README, A shared rate limit: the margin). A quiet machine sees no 429; a loaded one may see a few,
    each retried, which is not a test failure."""
    ns = f"t-{uuid.uuid4().hex[:8]}"
    procs = [start_worker(emulator_process, redis_server.url, ns, f"w{i}", 45) for i in range(4)]
    outs = [finish(p) for p in procs]
    assert all(o["statuses"] == {"201": 45} for o in outs), [o["statuses"] for o in outs]
    retried = [o["retries"].get("429", 0) for o in outs]
    assert sum(retried) == emulator_429s(emulator_process)  # each 429 the emulator sent was retried
    for o, again in zip(outs, retried, strict=True):
        assert o["summary"]["granted_shared"] == 45 + again and o["summary"]["workers_seen_max"] >= 2, o["summary"]
    slots = sorted(slot for o in outs for _at, slot, _queued in o["slots"])
    assert len(slots) >= 4 * 45
    assert max_in_window(slots, US) <= LIMIT  # GCRA: burst + rate x 1 s, for the four together
    assert max(admitted_per_window(outs).values()) <= EMULATOR_LIMIT


def test_without_the_shared_limiter_the_same_workers_draw_429s(emulator_process: EmulatorProcess) -> None:
    """The control: four local limiters at the full limit each overrun the emulator's budget."""
    procs = [start_worker(emulator_process, None, "none", f"w{i}", 30) for i in range(4)]
    outs = [finish(p) for p in procs]
    assert all(o["statuses"] == {"201": 30} for o in outs)  # delivered in the end, through retries
    assert emulator_429s(emulator_process) > 0


def test_redis_stopped_mid_run_no_429_burst_and_the_run_completes(redis_server: Any,
                                                                  emulator_process: EmulatorProcess) -> None:  # fmt: skip
    ns = f"t-{uuid.uuid4().hex[:8]}"
    procs = [start_worker(emulator_process, redis_server.url, ns, f"w{i}", 50) for i in range(4)]
    wait_for_workers(redis_server.url, ns, 4, procs)
    # Sending on the shared budget, each worker having counted the others.
    wait_for_sends(emulator_process, 20, procs)
    redis_server.stop()
    # More than can have been reserved ahead: sent on their local shares, however slow the machine.
    wait_for_sends(emulator_process, 30, procs)
    redis_server.start()  # empty, as after a crash: they find it again and rejoin together
    outs = [finish(p) for p in procs]
    assert all(o["statuses"] == {"201": 50} for o in outs), [o["statuses"] for o in outs]
    summaries = [o["summary"] for o in outs]
    assert any(s["fallbacks"] >= 1 and s["granted_local"] > 0 for s in summaries), summaries
    assert emulator_429s(emulator_process) == 0, summaries
    admitted = admitted_per_window(outs)
    assert max(admitted.values()) <= EMULATOR_LIMIT


def test_a_killed_worker_holds_no_tokens(redis_server: Any, emulator_process: EmulatorProcess) -> None:
    """A worker killed (-9) while queued on the budget leaves at most HORIZON_S of reserved slots behind; after
    them the survivor's queued slots follow one another at the whole budget's interval, and the dead worker
    drops out of the worker count. Counted on the budget's own slots (Redis TIME), not timed: a loaded
    machine that keeps the survivor from queueing makes fewer such slots, never wrong ones."""
    ns = f"t-{uuid.uuid4().hex[:8]}"
    survivor = start_worker(emulator_process, redis_server.url, ns, "a", 100, "--worker-ttl", "2")
    victim = start_worker(emulator_process, redis_server.url, ns, "b", 1000, "--worker-ttl", "2")
    client = wait_for_workers(redis_server.url, ns, 2, [survivor, victim])
    wait_for_user(emulator_process, "b-0", [survivor, victim])  # the victim's first request is answered
    wait_for_sends(emulator_process, 20, [survivor, victim])  # both sending on the shared budget
    victim.kill()
    victim.communicate()
    shape = shapes_of(Write(rate_limits={"users_track": RateLimit(requests=LIMIT, per_seconds=1)}))["users_track"]
    tat = int(client.get(f"braze-connector:{{{ns}}}:{shape.name}:tat") or 0)  # read before the time: no later slot
    secs, micros = client.time()
    killed_us = secs * US + micros
    # Every slot reserved when it died, its own included, lies within the horizon (GCRA: no other tokens).
    assert tat - shape.capacity * shape.interval_us <= killed_us + HORIZON_S * US
    members = client.zrange(f"braze-connector:{{{ns}}}:workers", 0, -1)
    assert [m for m in members if f":{victim.pid}:".encode() in m], members  # counted while it lived
    # Its heartbeat expires (the survivor's beats prune it; only the survivor's own close removes the survivor).
    deadline = time.monotonic() + 60
    while any(f":{victim.pid}:".encode() in m for m in client.zrange(f"braze-connector:{{{ns}}}:workers", 0, -1)):
        assert time.monotonic() < deadline and survivor.poll() is None, "the dead worker is still counted"
        time.sleep(0.1)
    assert client.zcard(f"braze-connector:{{{ns}}}:workers") == 1
    out = finish(survivor)
    assert out["statuses"] == {"201": 100}
    assert emulator_429s(emulator_process) == 0
    # After the victim's last slots (granted after its death, then: the script runs in order), two grants in a
    # row that both queued are one interval apart: the whole budget, none of it held for the dead worker. A
    # grant not queued (the survivor late, as on a loaded machine) is left out, with the pair it starts.
    after = sorted(tuple(g) for g in out["slots"] if g[1] > killed_us + HORIZON_S * US)
    gaps = [b[1] - a[1] for a, b in zip(after, after[1:], strict=False) if a[2] and b[2]]
    assert len(gaps) >= 10, out["slots"]
    assert all(abs(g - shape.interval_us) <= 2 for g in gaps), (shape.interval_us, gaps)


def test_partitioned_pipelines_share_the_budget_and_their_reports_merge(
    redis_server: Any, emulator_process: EmulatorProcess, tmp_path: Path
) -> None:
    """Four `run --partition K/4` processes of one pipeline with write.shared_limits: no 429, every row once."""
    users = 1200
    (tmp_path / "users.csv").write_text("user_id,plan\n" + "".join(f"u{i:05d},p{i % 3}\n" for i in range(users)))
    ns = f"t-{uuid.uuid4().hex[:8]}"
    (tmp_path / "users.yaml").write_text(f"""
name: users_parts
destination: {{url: {emulator_process.url}, api_key_env: TEST_BRAZE_KEY}}
write:
  mode: bulk
  transport: requests
  concurrency: 8
  max_objects_per_request: 10
  rate_limits: {{users_track: {{requests: {LIMIT}, per_seconds: 1}}}}
  shared_limits: {{redis_url_env: TEST_REDIS_URL, namespace: {ns}}}
report: {{dir: "{tmp_path}/reports/{{partition}}"}}
streams:
  - name: users
    source: {{path: users.csv}}
    kind: attributes
    identifier: {{external_id: user_id}}
    attributes: [{{column: plan}}]
""")
    env = {**os.environ, "TEST_BRAZE_KEY": "test-key", "TEST_REDIS_URL": redis_server.url}
    procs = [subprocess.Popen([sys.executable, "-m", "connector", "run", str(tmp_path / "users.yaml"), "--partition",
                               f"{k}/4", "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in (1, 2, 3, 4)]  # fmt: skip
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, out + err[-3000:]
    assert emulator_429s(emulator_process) == 0
    dirs = [tmp_path / "reports" / f"p{k}of4" for k in (1, 2, 3, 4)]
    docs = [json.loads((d / "report.json").read_text()) for d in dirs]
    for d in docs:
        assert d["requests"]["rate_limited"] == 0
        assert d["shared_limits"]["granted_shared"] == d["requests"]["total"] and d["shared_limits"]["fallbacks"] == 0
    res = invoke("report", "merge", *map(str, dirs), cwd=tmp_path)  # the CLI in-process: no interpreter start
    assert res.exit_code == 0, res.stdout + res.stderr
    merged = json.loads((tmp_path / "reports" / "merged" / "report.json").read_text())
    assert merged["rows"]["read"] == merged["rows"]["delivered"] == users and merged["invariant_ok"]
    req = urllib.request.Request(emulator_process.url + "/_emulator/stats", headers={"Authorization": "Bearer test-key"})
    assert json.loads(urllib.request.urlopen(req, timeout=30).read())["objects_applied"]["attributes"] == users

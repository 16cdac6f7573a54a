"""Bounded loopback load: 32 concurrent clients, every write applied exactly once."""

from __future__ import annotations

import os
import threading
from collections import Counter

import requests

from connector.emulator import EmulatorServer

CLIENTS = 32
PER_CLIENT = 200 if os.environ.get("BRAZE_CONNECTOR_SOAK") == "1" else 25
USERS = 10


def _client(server: EmulatorServer, cid: int, statuses: Counter[int], lock: threading.Lock) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {server.api_key}"
    for n in range(PER_CLIENT):
        body = {
            "attributes": [
                {"external_id": f"u{(cid + k) % USERS}", "hits": {"inc": 1}, f"c{cid}": n} for k in range(3)
            ],
            "events": [{"external_id": f"u{cid % USERS}", "name": "ping", "time": "2024-01-01T00:00:00Z"}],
        }
        r = session.post(server.url + "/users/track", json=body, timeout=30)
        with lock:
            statuses[r.status_code] += 1


def test_32_concurrent_clients_lose_and_double_nothing(emulator: EmulatorServer) -> None:
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    threads = [threading.Thread(target=_client, args=(emulator, c, statuses, lock)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    total = CLIENTS * PER_CLIENT
    assert statuses == {201: total}
    stats = emulator.stats()
    assert stats["requests"]["/users/track"] == {"201": total}
    assert stats["objects_applied"]["attributes"] == 3 * total and stats["objects_applied"]["events"] == total
    ledger = emulator.ledger()
    assert len(ledger) == total and [e["seq"] for e in ledger] == list(range(1, total + 1))
    assert sum(e["objects"]["attributes"] for e in ledger) == 3 * total
    hits = sum(emulator.user("external_id", f"u{u}")["attributes"]["hits"] for u in range(USERS))
    assert hits == 3 * total
    pings = sum(emulator.user("external_id", f"u{u}")["custom_events"]["ping"]["count"] for u in range(USERS))
    assert pings == total
    last = emulator.user("external_id", "u0")["attributes"]
    assert last["c0"] == PER_CLIENT - 1  # each client's own key ends at its last write

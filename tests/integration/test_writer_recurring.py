"""Users recurring within a chunk, against the emulator: requests grouped by user (delivery/bins.py) keep each
user's order, and every row's outcome (delivered, rejected by Braze, failed) lands on its own source row."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from test_writer import (
    ERR_EMAIL,
    FAST_RETRY,
    JITTER,
    accounted,
    failed_file,
    make_pipeline,
    make_writer,
    mapped_chunk,
    rejects_file,
    rows,
    stream_of,
)

from connector import load_pipeline, run_pipeline
from connector.delivery.journal_rows import DELIVERED, REJECTED, load_journal
from connector.emulator import EmulatorServer

pytestmark = pytest.mark.timeout(60)


def applied_in_order(server: EmulatorServer, field: str) -> dict[str, list[object]]:
    """Each user's applied objects' `field` (an attribute, or an event property), in the order applied."""
    out: dict[str, list[object]] = {}
    for entry in server.ledger():
        for a in entry["applied"]:
            obj = a["object"]
            value = obj.get("properties", {}).get(field) if "properties" in obj else obj.get(field)
            out.setdefault(a["identifier"]["external_id"], []).append(value)
    return out


def test_braze_errors_on_reordered_objects_land_on_their_own_rows(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    """40 users, each on every 40th row: the requests regroup them, so an object's index in its request is
    nothing like its row; Braze's (input_array, index) errors still reject exactly the bad rows."""
    server = emulator_factory(**JITTER)
    n = 600
    objects = [{"external_id": f"u{i % 40}", "plan": f"v{i}"} for i in range(n)]
    bad = {5, 77, 78, 301, 455, 599}
    for i in bad:
        objects[i]["email"] = f"not-an-email-{i}"
    pipeline = make_pipeline(concurrency=8)
    writer, report = make_writer(pipeline, server.url, tmp_path)
    writer.submit(stream_of(pipeline), mapped_chunk("attributes", objects))
    writer.close()
    assert rows(report) == {"delivered": n - len(bad), "rejected": len(bad), "failed": 0, "skipped": 0}
    assert server.stats()["requests"]["/users/track"] == {"201": math.ceil(n / 75)}
    got = rejects_file(report)
    assert sorted(int(r["_row_number"]) - 2 for r in got) == sorted(bad)
    for r in got:
        assert r["_rule"] == "braze.attributes" and r["_reason"] == ERR_EMAIL
        assert r["id"] == f"row{int(r['_row_number']) - 2}"
    # 15 objects a user fit one request: each user's plans were applied in one request, in source order
    in_requests = [{a["identifier"]["external_id"] for a in e["applied"]} for e in server.ledger()]
    assert sorted(u for users in in_requests for u in users) == sorted(f"u{u}" for u in range(40))
    plans = applied_in_order(server, "plan")
    for u in range(40):
        assert plans[f"u{u}"] == [f"v{i}" for i in range(u, n, 40) if i not in bad]
        assert server.user("external_id", f"u{u}")["attributes"]["plan"] == plans[f"u{u}"][-1]


def test_failed_requests_of_recurring_users_list_exactly_their_rows(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    """5xx and drops with few retries: rows listed failed were never applied, "unknown" rows were applied
    once, every other row was delivered once, each row identified by its own event property."""
    n = 3000
    server = emulator_factory(faults={"500": 0.2, "503": 0.2, "drop": 0.1, "slow": 0.05}, seed=9, slow_ms=20)
    pipeline = make_pipeline(
        "events", concurrency=16, on_ambiguous="fail", retry={**FAST_RETRY, "max_attempts": 2},
        max_objects_per_request=25,
    )  # fmt: skip
    events = [
        {"external_id": f"u{(i * 7) % 400}", "name": "e", "time": "2024-01-01T00:00:00Z", "properties": {"row": i}}
        for i in range(n)
    ]
    writer, report = make_writer(pipeline, server.url, tmp_path)
    for start in range(0, n, 1000):
        writer.submit(stream_of(pipeline), mapped_chunk("events", events[start : start + 1000], offset=start))
    writer.close()
    assert accounted(report) == n and report.rows["skipped"] == report.rows["rejected"] == 0
    by_outcome: dict[str, set[int]] = {"failed": set(), "unknown": set()}
    for r in failed_file(report):
        by_outcome[r["_outcome"]].add(int(r["_row_number"]) - 2)
    assert by_outcome["failed"] and by_outcome["unknown"], "the seed should produce both outcomes"
    applied = [row for values in applied_in_order(server, "row").values() for row in values]
    assert len(applied) == len(set(applied))  # nothing applied twice
    assert by_outcome["unknown"] <= set(applied) and not by_outcome["failed"] & set(applied)
    assert len(applied) == report.rows["delivered"] + len(by_outcome["unknown"])
    # each user's events in source order, across chunks too
    for values in applied_in_order(server, "row").values():
        assert values == sorted(values)


def test_a_recurring_user_events_file_ends_with_each_users_events_in_order(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    """A CSV of events over recurring users, two chunks, a few rows rejected by the contract (so the chunk's
    objects skip rows): the emulator applies each user's events in source order, each user's events of a
    chunk in one request, the minimum number of requests; the journal records every row's outcome on its
    own row number."""
    server = emulator_factory(**JITTER)
    n, users = 1200, 97
    lines = ["uid,event,time,row"]
    bad = {13, 400, 401, 1100}
    for i in range(n):
        name = "" if i in bad else "visit"  # an empty name is rejected (event.name_missing) before sending
        lines.append(f"u{(i * 31) % users},{name},2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z,{i}")
    (tmp_path / "events.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    doc = {
        "name": "recurring",
        "write": {"mode": "bulk", "concurrency": 8},
        "streams": [{
            "name": "events", "source": {"path": "events.csv", "chunk_rows": 600}, "kind": "events",
            "identifier": {"external_id": "uid"},
            "event": {"name": "event", "time": "time", "properties": {"columns": {"row": "row"}}},
        }],
    }  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    env = {"BRAZE_REST_ENDPOINT": server.url, "BRAZE_API_KEY": "test-key"}
    report = run_pipeline(load_pipeline(tmp_path / "p.yaml"), report_dir=tmp_path / "out", env=env)
    out = json.loads((report.report_dir / "report.json").read_text(encoding="utf-8"))
    assert out["rows"]["delivered"] == n - len(bad) and out["rows"]["rejected"] == len(bad)
    # two chunks of 600 rows (597 and 599 objects): at least 8 requests each, and at most one more (runs of
    # about 6 objects leave rooms of 3 that only a split fills, and splits chain at most 3 requests)
    sent = server.stats()["requests"]["/users/track"]["201"]
    assert 16 <= sent <= 18 and set(server.stats()["requests"]["/users/track"]) == {"201"}
    order = applied_in_order(server, "row")
    chunks_of: dict[str, set[int]] = {}
    for u in range(users):
        mine = [i for i in range(n) if (i * 31) % users == u and i not in bad]
        assert [int(str(v)) for v in order[f"u{u}"]] == mine
        chunks_of[f"u{u}"] = {i // 600 for i in mine}
    requests_of: dict[str, int] = {}
    for e in server.ledger():
        for user in {a["identifier"]["external_id"] for a in e["applied"]}:
            requests_of[user] = requests_of.get(user, 0) + 1
    # A user's events of one chunk sit in one request, but for the few runs split to fill a request (at most
    # two splits in a chain of three requests).
    extra = {u: requests_of[u] - len(c) for u, c in chunks_of.items()}
    assert set(extra.values()) <= {0, 1, 2} and sum(extra.values()) <= 2 * sent // 3 + 2
    assert sum(1 for d in extra.values() if d == 0) > users // 2
    journal = load_journal(report.report_dir)
    ((_, states),) = [(k, fr) for k, fr in journal.rows.items() if k[0] == "events"]
    for i in range(n):  # CSV line i + 2
        assert states.state(i + 2) == (REJECTED if i in bad else DELIVERED), i


def test_attributes_and_purchases_of_recurring_users_in_one_run_keep_each_users_order(
    emulator_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    """Two streams over one file of recurring users (an attributes stream, then a purchases stream): each
    user's plan ends at its last row's, each user's purchases are applied in source order, in the minimum
    number of requests per stream."""
    server = emulator_factory(**JITTER)
    n, users = 900, 60
    lines = ["uid,plan,sku,price,ts"]
    for i in range(n):
        lines.append(f"u{(i * 7) % users},v{i},sku-{i},{i % 50 + 0.5},2024-02-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z")
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    doc = {
        "name": "mixed",
        "write": {"mode": "bulk", "concurrency": 8},
        "streams": [
            {"name": "plans", "source": {"path": "rows.csv"}, "kind": "attributes",
             "identifier": {"external_id": "uid"}, "attributes": [{"column": "plan"}]},
            {"name": "buys", "source": {"path": "rows.csv"}, "kind": "purchases", "identifier": {"external_id": "uid"},
             "purchase": {"product_id": "sku", "currency": {"value": "USD"}, "price": "price", "time": "ts"}},
        ],
    }  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    env = {"BRAZE_REST_ENDPOINT": server.url, "BRAZE_API_KEY": "test-key"}
    report = run_pipeline(load_pipeline(tmp_path / "p.yaml"), report_dir=tmp_path / "out", env=env)
    out = json.loads((report.report_dir / "report.json").read_text(encoding="utf-8"))
    assert out["rows"]["delivered"] == 2 * n and out["exit_code"] == 0
    assert server.stats()["requests"]["/users/track"] == {"201": 2 * math.ceil(n / 75)}
    skus: dict[str, list[str]] = {}
    in_requests: dict[str, int] = {}
    for e in server.ledger():
        for u in {a["identifier"]["external_id"] for a in e["applied"] if a["array"] == "purchases"}:
            in_requests[u] = in_requests.get(u, 0) + 1
        for a in e["applied"]:
            if a["array"] == "purchases":
                skus.setdefault(a["identifier"]["external_id"], []).append(a["object"]["product_id"])
    for u in range(users):
        mine = [i for i in range(n) if (i * 7) % users == u]
        assert skus[f"u{u}"] == [f"sku-{i}" for i in mine]
        assert server.user("external_id", f"u{u}")["attributes"]["plan"] == f"v{mine[-1]}"
    assert set(in_requests.values()) == {1}  # 15 purchases a user, 5 users a request: each user in one

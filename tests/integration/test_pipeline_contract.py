"""Rows Braze would silently mishandle are contract rejects, never "delivered" (issue 11, points 4, 7, 8, 9).

Each test runs a pipeline against the emulator over HTTP and checks both sides: the report rejects the row
with the rule, and the emulator saw only the good rows (no nested update dropped, nothing left unchanged).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from connector import load_pipeline, run_pipeline
from connector.emulator import EmulatorServer
from connector.report import RunReport

pytestmark = pytest.mark.timeout(60)
SG = "3d1e6b4c-0f2a-4c1e-9a7b-5e8d2f6c1a90"


def _run(em: EmulatorServer, tmp_path: Path, rows: list[dict[str, Any]] | None, stream: dict[str, Any],
         source: str = "data/in.csv", **opts: Any) -> tuple[RunReport, dict[str, Any]]:  # fmt: skip
    (tmp_path / "data").mkdir(exist_ok=True)
    if rows is not None:
        with open(tmp_path / source, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    doc = {
        "name": "t",
        "report": {"max_reject_fraction": 1.0},
        "streams": [{"name": "s", "source": {"path": source}, **stream}],
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    env = {"BRAZE_REST_ENDPOINT": em.url, "BRAZE_API_KEY": "test-key"}
    report = run_pipeline(load_pipeline(tmp_path / "p.yaml"), report_dir=tmp_path / "out", env=env, **opts)
    return report, json.loads((report.report_dir / "report.json").read_text(encoding="utf-8"))


def _applied(em: EmulatorServer) -> list[dict[str, Any]]:
    return [a for e in em.ledger() for a in e["applied"]]


def test_a_bad_nested_time_or_null_is_rejected_so_braze_drops_no_nested_update(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    rows = [
        {"id": "u1", "prefs": json.dumps({"since": {"$time": "2024-01-01"}, "plan": "pro"})},
        {"id": "u2", "prefs": json.dumps({"since": {"$time": None}})},
        {"id": "u3", "prefs": json.dumps({"since": {"$time": "2024-02-30"}})},
        {"id": "u4", "prefs": json.dumps({"pets": [{"name": "Rex", "age": None}]})},
        {"id": "u5", "prefs": json.dumps({"pets": [{"name": "Tom"}]})},
    ]
    stream = {"kind": "attributes", "identifier": {"external_id": "id"},
              "attributes": [{"column": "prefs", "type": "object"}]}  # fmt: skip
    _, doc = _run(emulator, tmp_path, rows, stream, mode="bulk")
    assert doc["rejects"]["by_rule"] == {"nested.time": 2, "nested.invalid": 1}
    assert doc["rows"]["delivered"] == 2 and doc["requests"]["total"] == 1  # u1 and u5 in one request
    applied = _applied(emulator)
    assert [a["identifier"]["external_id"] for a in applied] == ["u1", "u5"]
    assert all("nested_dropped" not in a for a in applied)  # Braze applied every nested update it got
    profile = emulator.user("external_id", "u1")
    assert profile is not None and profile["attributes"]["prefs"]["plan"] == "pro"


def test_live_activity_notifications_braze_refuses_are_rejected(emulator: EmulatorServer, tmp_path: Path) -> None:
    rows = [
        {"activity_id": "a1", "score": "1", "notification": json.dumps({"alert": "Goal!", "extra": {"m": 1}})},
        {"activity_id": "a2", "score": "2", "notification": json.dumps({"alert": "Goal!", "extra": "m"})},
        {"activity_id": "a3", "score": "3", "notification": json.dumps({"alert": "x" * 2000})},
        {"activity_id": "a4", "score": "4", "notification": json.dumps({"alert": "Hi", "extra": {"aps": {}}})},
    ]
    stream = {
        "kind": "live_activity",
        "live_activity": {
            "app_id": {"value": "app-1"},
            "activity_id": "activity_id",
            "content_state": {"columns": {"score": {"column": "score", "type": "integer"}}},
            "notification_json_column": "notification",
        },
    }
    report, doc = _run(emulator, tmp_path, rows, stream)
    assert doc["rejects"]["by_rule"] == {"live_activity.notification": 3}
    assert doc["rows"]["delivered"] == 1
    assert emulator.stats()["requests"]["/messages/live_activity/update"] == {"201": 1}
    with open(report.rejects.path, encoding="utf-8", newline="") as f:
        assert {r["_column"] for r in csv.DictReader(f)} == {"notification"}


def test_subscription_group_ids_must_be_uuids(emulator: EmulatorServer, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    groups = [[{"subscription_group_id": g, "subscription_state": "subscribed"}] for g in (SG, "newsletter")]
    pq.write_table(pa.table({"id": ["u1", "u2"], "groups": groups}), tmp_path / "data" / "in.parquet")
    stream = {"kind": "attributes", "identifier": {"external_id": "id"},
              "attributes": [{"column": "groups", "to": "subscription_groups"}]}  # fmt: skip
    _, doc = _run(emulator, tmp_path, None, stream, mode="bulk", source="data/in.parquet")
    assert doc["rejects"]["by_rule"] == {"standard_field.subscription_groups": 1}
    assert [a["identifier"]["external_id"] for a in _applied(emulator)] == ["u1"]


@pytest.mark.parametrize("mode", ["sync", "bulk"])
def test_values_sync_would_leave_unchanged_are_rejected_in_every_mode(
    emulator: EmulatorServer, tmp_path: Path, mode: str
) -> None:
    rows = [
        {"id": "u1", "bio": "ok", "tags": "a|b"},
        {"id": "u2", "bio": "x" * 256, "tags": "a"},
        {"id": "u3", "bio": "ok", "tags": "|".join(f"t{i}" for i in range(501))},
        {"id": "u4", "bio": "ok", "tags": "|".join(f"t{i % 500}" for i in range(600))},
    ]
    stream = {"kind": "attributes", "identifier": {"external_id": "id"},
              "attributes": [{"column": "bio"}, {"column": "tags", "type": "array", "split": "|"}]}  # fmt: skip
    _, doc = _run(emulator, tmp_path, rows, stream, mode=mode)
    assert doc["mode"] == mode
    assert doc["rejects"]["by_rule"] == {"string.too_long": 1, "array.too_long": 1}
    assert doc["rows"]["delivered"] == 2
    applied = _applied(emulator)
    assert sorted(a["identifier"]["external_id"] for a in applied) == ["u1", "u4"]
    assert all("not_updated" not in a for a in applied)  # nothing Braze would answer 201 and leave as it was

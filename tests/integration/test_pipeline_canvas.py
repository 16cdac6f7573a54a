"""Canvas pipelines against the emulator (issue 11, points 3 and 5): a Canvas Braze refuses is a per-row reject
with Braze's message, never an opaque abort; entry properties go out as canvas_entry_properties (or context)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector import load_pipeline, run_pipeline
from connector.emulator import EmulatorServer
from connector.report import RunReport

pytestmark = pytest.mark.timeout(60)
KNOWN = "cv-1"  # registered in tests/conftest.py TEST_WORKSPACE
BRAZE_MSG = "canvas_id must be a string of the Canvas api identifier"


def _run(tmp_path: Path, em: EmulatorServer | None, n: int, canvas: dict[str, Any],
         **top: Any) -> tuple[RunReport, dict[str, Any]]:  # fmt: skip
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    with open(tmp_path / "data" / "r.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "coupon", "campaign"])
        w.writerows([f"u{i}", f"C{i}", "own" if i == 0 else ""] for i in range(n))
    doc = {
        "name": "t",
        "report": {"max_reject_fraction": 1.0},
        "streams": [{"name": "cart", "source": {"path": "data/r.csv"}, "kind": "canvas_trigger",
                     "identifier": {"external_id": "user_id"}, "canvas": canvas}],
        **top,
    }  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    env = {"BRAZE_REST_ENDPOINT": em.url, "BRAZE_API_KEY": "test-key"} if em is not None else {}
    report = run_pipeline(load_pipeline(tmp_path / "p.yaml"), report_dir=tmp_path / "out", env=env)
    return report, json.loads((report.report_dir / "report.json").read_text(encoding="utf-8"))


def _props(**extra: Any) -> dict[str, Any]:
    return {"columns": {"coupon": "coupon", "campaign": "campaign"}, **extra}


def test_an_unknown_canvas_id_rejects_each_recipient_with_brazes_message(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    report, doc = _run(tmp_path, emulator, 120, {"canvas_id": "cv-typo", "properties": _props()})
    assert doc["rows"] == {**doc["rows"], "read": 120, "rejected": 120, "delivered": 0, "failed": 0}
    assert doc["rejects"]["by_rule"] == {"braze.canvas": 120}
    assert doc["exit_code"] == 0  # rejects within max_reject_fraction 1.0: no abort (exit 3), no failed row
    # No request was split recipient by recipient: at most the three packed requests went out.
    assert emulator.stats()["requests"]["/canvas/trigger/send"] == {"400": doc["requests"]["total"]}
    assert doc["requests"]["total"] <= 3
    [warning] = doc["warnings"]
    assert "Braze refused Canvas 'cv-typo'" in warning and BRAZE_MSG in warning
    with open(report.rejects.path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 120 and all(r["_stage"] == "destination" and BRAZE_MSG in r["_reason"] for r in rows)
    assert sorted(r["user_id"] for r in rows) == sorted(f"u{i}" for i in range(120))
    assert emulator.dispatches() == []


@pytest.mark.parametrize("key", ["canvas_entry_properties", "context"])
def test_entry_properties_per_recipient_and_shared_under_the_chosen_key(
    emulator: EmulatorServer, tmp_path: Path, key: str
) -> None:
    canvas = {"canvas_id": KNOWN, "properties_key": key, "properties": _props(), "send_to_existing_only": False,
              "shared_properties": {"campaign": "spring", "season": 2026}}  # fmt: skip
    report, doc = _run(tmp_path, emulator, 3, canvas, report={"sample_bodies": 1, "max_reject_fraction": 1.0})
    assert doc["rows"]["delivered"] == 3 and doc["warnings"] == []
    [dispatch] = emulator.dispatches()
    contexts = {r["identifier"]["external_user_id"]: r["context"] for r in dispatch["recipients"]}
    assert contexts == {  # a recipient's own key wins over the shared one, as Braze documents
        "u0": {"campaign": "own", "season": 2026, "coupon": "C0"},
        "u1": {"campaign": "spring", "season": 2026, "coupon": "C1"},
        "u2": {"campaign": "spring", "season": 2026, "coupon": "C2"},
    }


def test_the_wire_body_uses_the_chosen_key(tmp_path: Path) -> None:
    for key in ("canvas_entry_properties", "context"):
        canvas = {"canvas_id": KNOWN, "properties_key": key, "properties": _props(), "shared_properties": {"s": 1}}
        out = tmp_path / key
        (out / "data").mkdir(parents=True)
        doc = {"name": "t", "streams": [{"name": "c", "source": {"path": "data/r.csv"}, "kind": "canvas_trigger",
               "identifier": {"external_id": "user_id"}, "canvas": canvas}]}  # fmt: skip
        (out / "data" / "r.csv").write_text("user_id,coupon,campaign\nu1,C1,\n", encoding="utf-8")
        (out / "p.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
        report = run_pipeline(load_pipeline(out / "p.yaml"), dry_run=True, report_dir=out / "r", env={})
        [body] = [json.loads(p.read_bytes()) for p in report.sample_files]
        assert body == {"canvas_id": KNOWN, key: {"s": 1}, "recipients": [{"external_user_id": "u1", key: {"coupon": "C1"}}]}


def test_the_embedded_emulator_registers_the_pipelines_canvas_and_says_it_is_unverified(tmp_path: Path) -> None:
    _, doc = _run(tmp_path / "own", None, 3, {"canvas_id": "cv-mine", "properties": _props()})
    assert doc["rows"]["delivered"] == 3
    [note] = doc["warnings"]
    assert "cv-mine" in note and "without checking them against Braze" in note
    listed = {"destination": {"url": "local", "emulator": {"canvases": ["cv-real"]}}}
    _, doc = _run(tmp_path / "listed", None, 3, {"canvas_id": "cv-mine", "properties": _props()}, **listed)
    assert doc["rejects"]["by_rule"] == {"braze.canvas": 3} and doc["rows"]["delivered"] == 0
    _, doc = _run(tmp_path / "ok", None, 3, {"canvas_id": "cv-real", "properties": _props()}, **listed)
    assert doc["rows"]["delivered"] == 3 and doc["warnings"] == []

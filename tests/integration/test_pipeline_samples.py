"""The sample pipelines: validate gives exactly the expected counts and rejects; run delivers what the ledger shows."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from connector import load_pipeline, run_pipeline
from connector.config import State
from connector.emulator import EmulatorServer
from connector.report import RunReport

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))
EXPECTED = json.loads((ROOT / "sample_data" / "expected_counts.json").read_text(encoding="utf-8"))


def expected_rejects() -> set[tuple[str, int, str, str]]:
    with open(ROOT / "sample_data" / "expected_rejects.csv", encoding="utf-8", newline="") as f:
        return {(r["file"], int(r["row"]), r["stage"], r["rule"]) for r in csv.DictReader(f)}


def rejects_of(report: RunReport) -> list[dict[str, Any]]:
    """The rows of the report's rejects file (Parquet when every source is Parquet, else CSV)."""
    if report.rejects.file is None:  # nothing rejected: no file
        return []
    path = Path(report.rejects.file)
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def relative(path: str) -> str:
    p = Path(path)
    return str(p.resolve().relative_to(ROOT)) if p.is_absolute() else str(p)


def test_every_sample_pipeline_has_expected_counts() -> None:
    assert PIPELINES, "pipelines/ holds no sample pipeline"
    assert {load_pipeline(p).name for p in PIPELINES} == set(EXPECTED)


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_validate_gives_the_expected_counts_and_rejects(path: Path, tmp_path: Path) -> None:
    pipeline = load_pipeline(path)
    # A watermark left by an earlier run of an incremental sample would read fewer rows: a state of its own.
    pipeline = pipeline.model_copy(update={"state": State(path=str(tmp_path / "state.sqlite"))})
    report = run_pipeline(pipeline, validate_only=True, report_dir=tmp_path, env={})
    doc = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    want = EXPECTED[pipeline.name]
    assert doc["requests"]["total"] == 0
    assert doc["rows"]["read"] == want["read"]
    assert doc["rows"]["rejected"] == want["rejected"]
    assert doc["rows"]["skipped"] == want["valid"]  # validate sends nothing: every valid row is skipped
    assert doc["rejects"]["by_stage"] == want["rejected_by_stage"]
    assert doc["rejects"]["by_rule"] == want["rejected_by_rule"]
    files = {relative(str(pipeline.resolve(s.source.path))) for s in pipeline.streams if s.source.path}
    wanted = {r for r in expected_rejects() if r[0] in files}
    got = {
        (relative(r["_source_file"]), int(r["_row_number"]), r["_stage"], r["_rule"])
        for r in rejects_of(report)
        if relative(r["_source_file"]) in files
    }
    assert got == wanted


def test_the_warehouse_sample_runs_against_the_embedded_emulator_then_reads_nothing_new(tmp_path: Path) -> None:
    pipeline = load_pipeline(ROOT / "pipelines" / "warehouse_users.yaml")
    pipeline = pipeline.model_copy(update={"state": State(path=str(tmp_path / "state.sqlite"))})
    assert pipeline.destination.url == "local"
    first = run_pipeline(pipeline, report_dir=tmp_path / "r1", env={})
    doc = json.loads((tmp_path / "r1" / "report.json").read_text(encoding="utf-8"))
    assert first.exit_code == 0 and doc["destination"]["kind"] == "local"
    assert doc["rows"] == {**doc["rows"], "read": 200, "delivered": 198, "rejected": 2}
    keys = {(r["_source_file"], r["_row_number"], r["_rule"]) for r in rejects_of(first)}
    label = "duckdb:sample_data/warehouse.duckdb:users"
    assert keys == {(label, "user_id=w0017", "email.invalid"), (label, "user_id=NULL (row 158)", "identifier.missing")}
    second = run_pipeline(pipeline, report_dir=tmp_path / "r2", env={})
    again = json.loads((tmp_path / "r2" / "report.json").read_text(encoding="utf-8"))
    assert second.exit_code == 0 and again["rows"]["read"] == 0  # nothing changed past the watermark


def _applied(em: EmulatorServer) -> dict[str, Counter[str]]:
    """array -> external_id -> times applied, from the emulator's ledger."""
    out: dict[str, Counter[str]] = {}
    for entry in em.ledger():
        for a in entry["applied"]:
            ident = a["identifier"]
            key = (
                ident.get("external_id") or ident.get("external_user_id") or json.dumps(ident, sort_keys=True)
            )
            out.setdefault(a.get("array", "recipients"), Counter())[key] += 1
    return out


def test_quickstart_then_canvas_run_and_the_ledger_equals_the_report(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    env = {"BRAZE_REST_ENDPOINT": emulator.url, "BRAZE_API_KEY": "test-key"}
    qs = run_pipeline(
        load_pipeline(ROOT / "pipelines" / "quickstart.yaml"), report_dir=tmp_path / "qs", env=env
    )
    doc = json.loads((tmp_path / "qs" / "report.json").read_text(encoding="utf-8"))
    want = EXPECTED["quickstart"]
    assert doc["exit_code"] == 0 and doc["invariant_ok"] is True
    assert doc["rows"] == {"read": want["read"], "delivered": want["valid"], "rejected": want["rejected"],
                           "failed": 0, "skipped": 0, "valid": want["valid"], "possibly_duplicated": 0}  # fmt: skip
    assert doc["mode"] == "bulk" and doc["requests"]["rate_limited"] == 0
    applied = _applied(emulator)
    per_stream = {s["name"]: s["delivered"] for s in doc["streams"]}
    assert sum(applied["attributes"].values()) == per_stream["users"]
    assert sum(applied["events"].values()) == per_stream["events"]
    assert sum(applied["purchases"].values()) == per_stream["purchases"]
    # Each valid user row applied exactly once; no rejected user row applied at all.
    assert set(applied["attributes"].values()) == {1}
    rejected_users = {
        r["user_id"] for r in rejects_of(qs) if r.get("user_id") and r["_source_file"].endswith("users.csv")
    }
    assert rejected_users and not rejected_users & set(applied["attributes"])
    # Events per user equal the source's rows for that user minus the expected rejects (an independent count).
    table = pq.read_table(ROOT / "sample_data" / "events.parquet", columns=["user_id"]).column(0).to_pylist()
    bad_rows = {row for f, row, _, _ in expected_rejects() if f.endswith("events.parquet")}
    expected_events = Counter(u for i, u in enumerate(table, start=1) if i not in bad_rows and u is not None)
    assert applied["events"] == expected_events

    cv = run_pipeline(
        load_pipeline(ROOT / "pipelines" / "canvas_trigger.yaml"), report_dir=tmp_path / "cv", env=env
    )
    assert cv.exit_code == 0 and cv.rows["delivered"] == EXPECTED["canvas_trigger"]["valid"]
    with open(ROOT / "sample_data" / "canvas_recipients.csv", encoding="utf-8", newline="") as f:
        recipients = Counter(r["user_id"] for r in csv.DictReader(f))
    assert _applied(emulator)["recipients"] == recipients


def test_live_activity_run(emulator: EmulatorServer, tmp_path: Path) -> None:
    env = {"BRAZE_REST_ENDPOINT": emulator.url, "BRAZE_API_KEY": "test-key"}
    report = run_pipeline(
        load_pipeline(ROOT / "pipelines" / "live_activity.yaml"), report_dir=tmp_path, env=env
    )
    want: dict[str, Any] = EXPECTED["live_activity"]
    assert report.exit_code == 0 and report.rows["delivered"] == want["valid"]
    assert emulator.stats()["objects_applied"]["live_activities"] == want["valid"]


def test_sample_dry_run_writes_bodies_and_sends_nothing(emulator: EmulatorServer, tmp_path: Path) -> None:
    env = {"BRAZE_REST_ENDPOINT": emulator.url, "BRAZE_API_KEY": "test-key"}
    pipeline = load_pipeline(ROOT / "pipelines" / "users.yaml")
    report = run_pipeline(pipeline, dry_run=True, report_dir=tmp_path, env=env)
    assert emulator.stats()["requests"] == {}
    assert report.rows["skipped"] == EXPECTED["users"]["valid"]
    bodies = [json.loads(p.read_bytes()) for p in report.sample_files]
    assert len(bodies) == pipeline.report.sample_bodies
    assert all(1 <= len(b["attributes"]) <= 75 for b in bodies)

"""report.metrics_file from real runs against the emulator: the values node_exporter would read are
report.json's, per stream, 429s included; a run that fails before its first row still updates it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from connector import load_pipeline, run_pipeline
from connector.errors import SourceError

pytestmark = pytest.mark.timeout(180)


def project(tmp_path: Path) -> Path:
    (tmp_path / "users.csv").write_text("user_id,age\n" + "".join(f"u{i},{'x' if i == 3 else i}\n" for i in range(20)))
    (tmp_path / "plans.csv").write_text("user_id,plan\n" + "".join(f"p{i},pro\n" for i in range(6)))
    streams = [{"name": n, "source": {"path": f"{n}.csv"}, "kind": "attributes", "identifier": {"external_id": "user_id"},
                "attributes": [{"column": c, "type": t}]} for n, c, t in (("users", "age", "integer"), ("plans", "plan", "string"))]  # fmt: skip
    doc = {"name": "metered", "streams": streams, "write": {"max_objects_per_request": 1},
           "report": {"metrics_file": "textfile/braze_{pipeline}.prom", "max_reject_fraction": 0.5}}  # fmt: skip
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def values(path: Path) -> dict[tuple[str, str | None], float]:
    out = {}
    for fam in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for s in fam.samples:
            assert s.labels["pipeline"] == "metered"
            out[(s.name.removeprefix("braze_connector_last_run_"), s.labels.get("stream"))] = s.value
    return out


def test_the_metrics_file_holds_report_json_s_counts(emulator_factory: Any, tmp_path: Path) -> None:
    # 429s drawn by the emulator (seeded): a rate limit alone draws none once the client has learnt it from
    # the first answer's X-RateLimit headers, which it now waits for before sending more (FirstAnswer)
    server = emulator_factory(faults={"429": 0.3}, seed=7)
    env = {"BRAZE_REST_ENDPOINT": server.url, "BRAZE_API_KEY": "test-key"}
    report = run_pipeline(load_pipeline(project(tmp_path)), mode="bulk", env=env)
    doc = json.loads((report.report_dir / "report.json").read_text(encoding="utf-8"))
    got = values(tmp_path / "textfile" / "braze_metered.prom")
    for stream in doc["streams"]:
        for key in ("read", "delivered", "rejected", "failed", "skipped"):
            assert got[(f"rows_{key}", stream["name"])] == stream[key], (key, stream["name"])
    assert got[("rows_read", "users")] == 20 and got[("rows_rejected", "users")] == 1
    assert got[("rows_delivered", "plans")] == 6
    assert got[("requests", None)] == doc["requests"]["total"] == 25
    assert got[("rate_limited", None)] == doc["requests"]["rate_limited"] > 0
    assert got[("retries", None)] == doc["requests"]["retries"]
    assert got[("duration_seconds", None)] == doc["duration_s"]
    assert got[("success", None)] == 1 and got[("exit_code", None)] == 0
    finished = doc["finished_at"].replace("Z", "+00:00")
    from datetime import datetime

    assert got[("timestamp_seconds", None)] == datetime.fromisoformat(finished).timestamp()


def test_a_run_that_fails_before_reading_marks_the_last_run_failed(tmp_path: Path) -> None:
    path = project(tmp_path)
    (tmp_path / "plans.csv").unlink()
    with pytest.raises(SourceError):
        run_pipeline(load_pipeline(path), env={"BRAZE_API_KEY": "test-key"})
    got = values(tmp_path / "textfile" / "braze_metered.prom")
    assert got[("success", None)] == 0 and got[("exit_code", None)] == 2
    assert not any(name.startswith("rows_") for name, _ in got)

"""Expectation suites inside run_pipeline: row rejects, table checks that fail (before delivery) or warn, validate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector import load_pipeline, run_pipeline
from connector.config import Pipeline
from connector.emulator import EmulatorServer
from connector.errors import SourceError

pytestmark = pytest.mark.timeout(120)

USERS_CSV = """user_id,email,plan
u1,a@example.com,gold
u2,b@example.com,platinum
u3,c@example.com,
u4,d@example.com,silver
u5,e@example.com,gold
"""
ROW_SUITE = {
    "name": "users_rows",
    "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "plan"}},
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "plan", "value_set": ["gold", "silver"]},
        },
    ],
}


def table_suite(min_rows: int) -> dict[str, Any]:
    return {
        "name": "users_table",
        "expectations": [{"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": min_rows}}],
    }


def project(tmp_path: Path, suites: list[dict[str, Any]], action: str = "fail") -> Pipeline:
    for d in ("data", "pipelines", "expectations"):
        (tmp_path / d).mkdir(exist_ok=True)
    (tmp_path / "data" / "users.csv").write_text(USERS_CSV, encoding="utf-8")
    for s in suites:
        (tmp_path / "expectations" / f"{s['name']}.json").write_text(json.dumps(s), encoding="utf-8")
    stream = {
        "name": "users",
        "source": {"path": "data/users.csv"},
        "kind": "attributes",
        "identifier": {"external_id": "user_id"},
        "attributes": [{"column": "email"}, {"column": "plan"}],
        "expectations": [s["name"] for s in suites],
        "on_table_expectation_failure": action,
    }
    doc = {"name": "checks", "streams": [stream], "report": {"max_reject_fraction": 0.5}}
    path = tmp_path / "pipelines" / "checks.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return load_pipeline(path)


def env_for(em: EmulatorServer) -> dict[str, str]:
    return {"BRAZE_REST_ENDPOINT": em.url, "BRAZE_API_KEY": "test-key"}


def doc_of(report: Any) -> dict[str, Any]:
    return json.loads((report.report_dir / "report.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_row_expectations_reject_rows_before_delivery(emulator: EmulatorServer, tmp_path: Path) -> None:
    p = project(tmp_path, [ROW_SUITE])
    report = run_pipeline(p, mode="bulk", report_dir=tmp_path / "out", env=env_for(emulator))
    doc = doc_of(report)
    assert doc["rows"] == {"read": 5, "delivered": 3, "rejected": 2, "failed": 0, "skipped": 0, "valid": 3,
                           "possibly_duplicated": 0}  # fmt: skip
    assert doc["rejects"]["by_stage"] == {"expectation": 2}
    assert emulator.user("external_id", "u2") is None and emulator.user("external_id", "u3") is None
    assert emulator.user("external_id", "u4")["attributes"]["plan"] == "silver"  # type: ignore[index]


def test_failing_table_check_with_fail_stops_delivery(emulator: EmulatorServer, tmp_path: Path) -> None:
    p = project(tmp_path, [ROW_SUITE, table_suite(100)], action="fail")
    report = run_pipeline(p, mode="bulk", report_dir=tmp_path / "out", env=env_for(emulator), raise_on_failure=False)
    doc = doc_of(report)
    assert doc["exit_code"] == 1 and doc["invariant_ok"] is True
    assert doc["rows"] == {"read": 5, "delivered": 0, "rejected": 2, "failed": 0, "skipped": 3, "valid": 3,
                           "possibly_duplicated": 0}  # fmt: skip
    assert list(doc["skipped"]["by_reason"]) == ["table check failed (stream not delivered)"]
    [check] = doc["table_checks"]
    assert check["expectation"] == "expect_table_row_count_to_be_between" and check["success"] is False
    assert check["action"] == "fail"
    assert emulator.stats()["requests"] == {}
    # exit code 1 names its cause: the table check, not rejects or undelivered rows
    assert f"table check failed ({check['stream']}: expect_table_row_count_to_be_between" in doc["exit_meaning"]


def test_failing_table_check_with_warn_delivers(emulator: EmulatorServer, tmp_path: Path) -> None:
    p = project(tmp_path, [ROW_SUITE, table_suite(100)], action="warn")
    report = run_pipeline(p, mode="bulk", report_dir=tmp_path / "out", env=env_for(emulator))
    doc = doc_of(report)
    assert doc["exit_code"] == 0
    assert doc["rows"]["delivered"] == 3
    assert any("expect_table_row_count_to_be_between" in w for w in doc["warnings"])
    assert emulator.stats()["objects_applied"]["attributes"] == 3


def test_passing_table_check_delivers_once(emulator: EmulatorServer, tmp_path: Path) -> None:
    p = project(tmp_path, [ROW_SUITE, table_suite(5)], action="fail")
    report = run_pipeline(p, mode="bulk", report_dir=tmp_path / "out", env=env_for(emulator))
    doc = doc_of(report)
    assert doc["exit_code"] == 0 and doc["rows"]["delivered"] == 3 and doc["rows"]["read"] == 5
    assert [c["success"] for c in doc["table_checks"]] == [True]
    assert emulator.stats()["objects_applied"]["attributes"] == 3


def test_validate_only_needs_no_network_and_fails_on_table_checks(tmp_path: Path) -> None:
    p = project(tmp_path, [ROW_SUITE, table_suite(100)], action="fail")
    report = run_pipeline(p, report_dir=tmp_path / "out", validate_only=True, env={}, raise_on_failure=False)
    doc = doc_of(report)
    assert doc["exit_code"] == 1
    assert doc["rows"] == {"read": 5, "delivered": 0, "rejected": 2, "failed": 0, "skipped": 3, "valid": 3,
                           "possibly_duplicated": 0}  # fmt: skip
    assert list(doc["skipped"]["by_reason"]) == ["validate only (nothing sent)"]
    assert doc["requests"]["total"] == 0 and doc["destination"]["kind"] == "none"
    assert doc["mode_reason"].startswith("validate only")


def test_a_suite_needing_a_column_the_file_lacks_fails_before_anything_is_read(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    suite = {
        "name": "needs_tier",
        "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "tier"}}],
    }
    p = project(tmp_path, [suite], action="warn")
    with pytest.raises(SourceError, match=r"users\.csv: stream 'users' reads column 'tier' \(suite 'needs_tier'") as info:
        run_pipeline(p, mode="bulk", report_dir=tmp_path / "out", env=env_for(emulator))
    assert info.value.exit_code == 2
    assert not (tmp_path / "out").exists()  # pre-flight: no report, nothing sent
    assert emulator.stats()["requests"] == {}

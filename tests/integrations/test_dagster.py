"""The Dagster resource and asset factory, materialized for real against the emulator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from scheduler_helpers import require

from connector.emulator import EmulatorServer

dagster = require("dagster")

from connector.integrations.dagster import BrazeResource, braze_pipeline_asset  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def test_the_asset_delivers_and_records_the_counts(tmp_path: Path, emulator: EmulatorServer,
                                                   users_project: Callable[..., Path]) -> None:  # fmt: skip
    users = braze_pipeline_asset(users_project(), report_dir=tmp_path / "out")
    assert users.key == dagster.AssetKey("braze_users")
    result = dagster.materialize(
        [users], resources={"braze": BrazeResource(api_key=emulator.api_key, endpoint=emulator.url)}
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node("braze_users")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["rows_read"] == 3 and meta["rows_delivered"] == 2 and meta["rows_rejected"] == 1
    assert meta["rows_failed"] == 0 and meta["rows_skipped"] == 0 and meta["exit_code"] == 0
    assert meta["report"] == str(tmp_path / "out" / "report.json") and Path(meta["report"]).is_file()
    assert emulator.user("external_id", "u1")["attributes"]["age"] == 31


def test_a_failed_run_fails_the_materialization(tmp_path: Path, emulator: EmulatorServer,
                                                users_project: Callable[..., Path]) -> None:  # fmt: skip
    path = users_project(max_reject_fraction=0.1)  # 1 of 3 rejected: over the threshold, exit 1
    asset = braze_pipeline_asset(path, name="strict_users", report_dir=tmp_path / "out")
    result = dagster.materialize(
        [asset],
        resources={"braze": BrazeResource(api_key=emulator.api_key, endpoint=emulator.url)},
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    info = failure.step_failure_data.user_failure_data
    assert "exit code 1" in info.description
    assert "33.3 % of rows rejected (1 of 3), above max_reject_fraction 10 %" in info.description  # the report's words
    assert info.metadata["exit_code"].value == 1 and info.metadata["rows_delivered"].value == 2
    # A refused key is exit 3: also a failure, and the key never shows in the message.
    asset = braze_pipeline_asset(path, name="bad_key", report_dir=tmp_path / "out3")
    result = dagster.materialize([asset], resources={"braze": BrazeResource(api_key="wrong-key-123",
                                 endpoint=emulator.url)}, raise_on_error=False)  # fmt: skip
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    text = failure.step_failure_data.user_failure_data.description
    assert "exit code 3" in text and "wrong-key-123" not in text

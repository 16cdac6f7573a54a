"""Delta sync end to end against the emulator: re-runs send only what changed, events are never doubled."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from cli_invoke import invoke
from test_pipeline_run import (
    USERS_CSV,
    env_for,
    events_stream,
    project,
    report_json,
    users_stream,
    write_events,
)

from connector.pipeline import run_pipeline

pytestmark = pytest.mark.timeout(120)


def requests_201(em: Any) -> int:
    return int(em.stats()["requests"].get("/users/track", {}).get("201", 0))


def test_a_rerun_sends_only_the_changed_attributes(emulator: Any, tmp_path: Path) -> None:
    stream = {**users_stream(), "delta": True}
    pipeline = project(tmp_path, [stream])
    first = report_json(run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r1", env=env_for(emulator)))
    assert first["rows"]["delivered"] == 3 and first["delta"]["state_file"].endswith("state/t.sqlite")
    assert first["streams"][0]["delta"] == {"added": 3, "changed": 0, "unchanged": 0}
    sent_before = requests_201(emulator)

    second = report_json(run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r2", env=env_for(emulator)))
    assert second["exit_code"] == 0 and second["rows"]["delivered"] == 0 and second["rows"]["skipped"] == 3
    assert second["skipped"]["by_reason"] == {"unchanged since the last delivered run (delta)": 3}
    assert second["streams"][0]["delta"] == {"added": 0, "changed": 0, "unchanged": 3}
    assert requests_201(emulator) == sent_before  # nothing was sent at all

    (tmp_path / "data" / "users.csv").write_text(USERS_CSV.replace("Ann,31", "Ann,32"), encoding="utf-8")
    third = report_json(run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r3", env=env_for(emulator)))
    assert third["rows"]["delivered"] == 1 and third["rows"]["skipped"] == 2
    assert third["streams"][0]["delta"] == {"added": 0, "changed": 1, "unchanged": 2}
    last = [e for e in emulator.ledger() if e["status"] == 201][-1]
    assert [a["identifier"].get("external_id") for a in last["applied"]] == ["u1"]
    assert emulator.user("external_id", "u1")["attributes"]["age"] == 32
    assert last["data_points"] == 1  # only `age` was written, not email and first_name again

    full_run = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r4", env=env_for(emulator), full=True)
    full = report_json(full_run)
    assert full["rows"]["delivered"] == 3 and full["delta"]["full"] is True
    assert full["streams"][0]["delta"] == {"added": 0, "changed": 3, "unchanged": 0}  # known users, sent again
    from connector.cli import _summary

    assert "  delta users: 0 added, 3 changed, 0 unchanged" in _summary(full_run, {})


def test_rerunning_an_events_file_never_counts_an_event_twice(emulator: Any, tmp_path: Path) -> None:
    good, _bad = write_events(tmp_path / "data" / "events.parquet", 100)
    pipeline = project(tmp_path, [{**events_stream(), "delta": True}])
    for i in range(2):
        run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / f"r{i}", env=env_for(emulator))
    for user, n in good.items():
        assert emulator.user("external_id", user)["custom_events"]["played"]["count"] == n


def test_dry_run_previews_the_delta_without_touching_the_state(emulator: Any, tmp_path: Path) -> None:
    pipeline = project(tmp_path, [{**users_stream(), "delta": True}])
    run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r1", env=env_for(emulator))
    state = tmp_path / "state" / "t.sqlite"
    before = state.read_bytes()
    (tmp_path / "data" / "users.csv").write_text(USERS_CSV.replace("Ann,31", "Ann,33"), encoding="utf-8")
    dry = report_json(run_pipeline(pipeline, dry_run=True, report_dir=tmp_path / "dry", env={}))
    assert dry["skipped"]["by_reason"]["unchanged since the last delivered run (delta)"] == 2
    assert dry["skipped"]["by_reason"]["dry run"] == 1
    assert state.read_bytes() == before


def test_a_damaged_state_file_stops_the_run_before_a_request_saying_what_to_do(emulator: Any, tmp_path: Path) -> None:
    """A state file damaged between two runs (4 KiB of noise in its middle), or not a database at all: the
    command ends with exit code 2 and one line naming the file and what to do, no traceback, nothing sent."""
    project(tmp_path, [{**users_stream(), "delta": True}])
    rows = "".join(f"w{i},w{i}@example.com,W{i},{i % 90}\n" for i in range(3000))
    (tmp_path / "data" / "users.csv").write_text(USERS_CSV + rows, encoding="utf-8")

    def cli_run(report_dir: str) -> Any:
        return invoke("run", "pipelines/t.yaml", "--mode", "bulk", "-q", "--report-dir", report_dir, cwd=tmp_path,
                      env=env_for(emulator))  # fmt: skip

    first = cli_run("r1")
    assert first.exit_code == 0, first.stdout + first.stderr
    state = tmp_path / "state" / "t.sqlite"
    size = state.stat().st_size
    assert size > 3 * 4096
    for noise in (4096, size):  # 4 KiB at offset 8192; then the whole file
        with state.open("r+b") as f:
            f.seek(8192 if noise == 4096 else 0)
            f.write(random.Random(noise).randbytes(noise))
        sent = requests_201(emulator)
        res = cli_run(f"r{noise}")
        err = res.stderr
        assert res.exit_code == 2 and "Traceback" not in err and "Traceback" not in res.stdout, res.stdout + err
        why = "database disk image is malformed" if noise == 4096 else "file is not a database"
        assert f"error: state file {state} is damaged: {why}; delete it to start over" in err
        assert requests_201(emulator) == sent  # stopped before anything was sent
    state.unlink()  # as the message says: the next run sends every row again, as added
    again = cli_run("r3")
    assert again.exit_code == 0 and report_json_at(tmp_path / "r3")["streams"][0]["delta"]["added"] == 3003


def report_json_at(report_dir: Path) -> dict[str, Any]:
    (found,) = report_dir.rglob("report.json")
    data: dict[str, Any] = json.loads(found.read_text(encoding="utf-8"))
    return data


def test_delta_is_refused_for_canvas_streams(tmp_path: Path) -> None:
    from connector.errors import ConfigError

    stream = {"name": "c", "source": {"path": "data/users.csv"}, "kind": "canvas_trigger", "delta": True,
              "identifier": {"external_id": "user_id"}, "canvas": {"canvas_id": "cv1"}}  # fmt: skip
    with pytest.raises(ConfigError, match="delta applies to kinds attributes, events and purchases"):
        project(tmp_path, [stream])

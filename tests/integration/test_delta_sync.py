"""Delta sync end to end against the emulator: re-runs send only what changed, events are never doubled;
a state whose disk fills mid-run changes no row's outcome."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from cli_invoke import invoke
from test_pipeline_run import (
    FAST_RETRY,
    USERS_CSV,
    env_for,
    events_stream,
    project,
    report_json,
    users_stream,
    write_events,
)

from connector.delta.stores import PAGE_SIZE
from connector.pipeline import run_pipeline
from connector.report import RunFailed

pytestmark = pytest.mark.timeout(120)


def requests_201(em: Any) -> int:
    return int(em.stats()["requests"].get("/users/track", {}).get("201", 0))


def test_a_rerun_sends_only_the_changed_attributes(emulator: Any, tmp_path: Path) -> None:
    stream = {**users_stream(), "delta": True}
    pipeline = project(tmp_path, [stream])
    first_run = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r1", env=env_for(emulator))
    first = report_json(first_run)
    assert first["rows"]["delivered"] == 3 and first["delta"]["state_file"].endswith("state/t.sqlite")
    assert first["streams"][0]["delta"] == {"added": 3, "changed": 0, "unchanged": 0}
    from connector.cli import _summary

    # An empty state skips nothing: no "skipped: 0 unchanged" line, no zero reason in report.json.
    assert first["skipped"]["by_reason"] == {} and not [s for s in _summary(first_run, {}) if "skipped:" in s]
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
    assert "  delta users: 0 added, 3 changed, 0 unchanged (--full: known users are sent whole and counted as " \
           "changed)" in _summary(full_run, {})  # fmt: skip


def test_an_unchanged_rerun_sends_nothing_so_it_does_not_check_the_key_or_the_endpoint(
    emulator: Any, tmp_path: Path
) -> None:
    """What an unchanged re-run says about its destination, pinned: it sends no request, so a key revoked or an
    endpoint gone since the last run is not noticed (exit 0, every row unchanged, the destination named as
    configured); the first run with a row to send reports it (exit 3, the row not sent). BENCHMARKS.md, "An
    unchanged re-run without pandas"."""
    pipeline = project(tmp_path, [{**users_stream(), "delta": True}], write={"retry": FAST_RETRY})
    assert report_json(run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r1", env=env_for(emulator)))["rows"]["delivered"] == 3
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{s.getsockname()[1]}"
    sent = len(emulator.ledger())
    for i, env in enumerate([env_for(emulator, "revoked-key"), {"BRAZE_REST_ENDPOINT": gone, "BRAZE_API_KEY": "k"}]):
        doc = report_json(run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / f"same{i}", env=env))
        assert doc["exit_code"] == 0 and doc["requests"]["total"] == 0 and doc["rows"]["skipped"] == 3
        assert doc["streams"][0]["delta"] == {"added": 0, "changed": 0, "unchanged": 3}
    assert len(emulator.ledger()) == sent  # not one request reached the emulator
    (tmp_path / "data" / "users.csv").write_text(USERS_CSV.replace("Ann,31", "Ann,32"), encoding="utf-8")
    with pytest.raises(RunFailed, match="exit code 3") as info:
        run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "changed", env=env_for(emulator, "revoked-key"))
    doc = report_json(info.value.report)
    assert doc["rows"]["delivered"] == 0 and any("401" in reason for reason in doc["skipped"]["by_reason"])


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
    """A state file damaged between two runs (a page of noise in its middle), or not a database at all: the
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
    assert size > 3 * PAGE_SIZE
    for noise in (PAGE_SIZE, size):  # the third page (the index's first); then the whole file
        with state.open("r+b") as f:
            f.seek(2 * PAGE_SIZE if noise == PAGE_SIZE else 0)
            f.write(random.Random(noise).randbytes(noise))
        sent = requests_201(emulator)
        res = cli_run(f"r{noise}")
        err = res.stderr
        assert res.exit_code == 2 and "Traceback" not in err and "Traceback" not in res.stdout, res.stdout + err
        why = "database disk image is malformed" if noise == PAGE_SIZE else "file is not a database"
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


# ---- a state whose disk fills mid-run ---------------------------------------------------------------------
@dataclass
class FullDisk:
    """Where the state file goes, and how the CLI is started, so that its disk fills mid-run."""

    folder: Path
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    mount: Path | None = None

    def make_room(self) -> None:
        """The next run has room again (the disk freed, or the store no longer failing)."""
        if self.mount is not None:
            subprocess.run(["mount", "-o", "remount,size=64m", str(self.mount)], check=True)
        self.command, self.env = [sys.executable, "-m", "connector"], {}


@pytest.fixture(params=["tmpfs", "failing_store"])
def full_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FullDisk]:
    """A real full filesystem (a 384 KB tmpfs: root, and mount permitted; else skipped), or the state's SQLite
    writes failing with SQLite's full-disk error after the first transaction (full_state_cli.py)."""
    if request.param == "failing_store":
        script = Path(__file__).with_name("full_state_cli.py")
        yield FullDisk(tmp_path / "state", [sys.executable, str(script)], {"FULL_AFTER_WRITES": "1"})
        return
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=384k", "tmpfs", str(mnt)],
                                                   capture_output=True).returncode == 0  # fmt: skip
    if not mounted:
        pytest.skip("mounting a small tmpfs is not permitted here (the failing_store case covers the same)")
    try:
        yield FullDisk(mnt, [sys.executable, "-m", "connector"], mount=mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_state_disk_changes_no_outcome_and_the_next_run_sends_what_was_lost(
        emulator: Any, tmp_path: Path, full_disk: FullDisk) -> None:  # fmt: skip
    n_users, n_events = 3000, 400
    users = [f"user-{i:05d}" for i in range(n_users)]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"user_id": users, "email": [f"{u}@example.com" for u in users],
                             "age": [i % 90 for i in range(n_users)]}), tmp_path / "data" / "users.parquet")  # fmt: skip
    pq.write_table(pa.table({"user_id": [users[i % 40] for i in range(n_events)], "event": ["played"] * n_events,
                             "ts": [f"2026-01-{1 + i % 28:02d}T10:00:00Z" for i in range(n_events)],
                             "score": list(range(n_events))}), tmp_path / "data" / "events.parquet")  # fmt: skip
    streams = [{"name": "users", "source": {"path": "data/users.parquet"}, "kind": "attributes", "delta": True,
                "identifier": {"external_id": "user_id"},
                "attributes": [{"column": "email"}, {"column": "age", "type": "integer"}]},
               {**events_stream("data/events.parquet"), "delta": True}]  # fmt: skip
    (tmp_path / "pipelines").mkdir()
    doc = {"name": "t", "streams": streams, "state": {"path": str(full_disk.folder / "t.sqlite")}}
    (tmp_path / "pipelines" / "t.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")

    def run(name: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRAZE_")} | env_for(emulator) | full_disk.env
        done = subprocess.run([*full_disk.command, "run", "pipelines/t.yaml", "--mode", "bulk", "--report-dir", name],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        return done, json.loads((tmp_path / name / "report.json").read_text(encoding="utf-8"))

    first, doc1 = run("r1")
    out = first.stdout + first.stderr
    assert first.returncode == 0, out
    assert "Traceback" not in out and "cannot rollback" not in out
    rows = doc1["rows"]
    assert doc1["invariant_ok"] and rows["delivered"] == rows["read"] == n_users + n_events and rows["failed"] == 0
    lost = doc1["delta"]["not_recorded"]
    assert lost["cause"] == "the disk is full" and lost["events"] > 0 and 0 < lost["users"] <= n_users
    [warning] = [w for w in doc1["warnings"] if w.startswith("delta state ")]
    assert f"{lost['events']:,} events may be sent again" in warning and "the next run sends those users again" in warning
    assert f"  warning: {warning}" in first.stdout  # the summary repeats it
    assert first.stderr.count("could not be written") == 1  # the log says it once

    full_disk.make_room()
    second, doc2 = run("r2")
    assert second.returncode == 0, second.stdout + second.stderr
    assert doc2["delta"]["not_recorded"] is None and doc2["invariant_ok"]
    by_name = {s["name"]: s["delta"] for s in doc2["streams"]}
    # Exactly what the first run could not record is sent again: the users, and the events (twice at Braze).
    assert by_name["users"] == {"added": lost["users"], "changed": 0, "unchanged": n_users - lost["users"]}
    assert by_name["events"] == {"added": lost["events"], "changed": 0, "unchanged": n_events - lost["events"]}
    played = sum(emulator.user("external_id", u)["custom_events"]["played"]["count"] for u in users[:40])
    assert played == n_events + lost["events"]


@pytest.mark.parametrize("chunk_rows", [2, 1000])  # the two rows in other chunks, and in one
def test_a_user_on_two_rows_ends_with_the_last_rows_values_on_every_run(chunk_rows: int, emulator: Any,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    """Two rows of one user with different values: Braze must hold the later row's, on the first run and on
    every re-run (each run sends both again, as README says: the earlier row differs from what the later one
    left), never the earlier row's."""
    stream = {**users_stream(), "delta": True, "source": {"path": "data/users.csv", "chunk_rows": chunk_rows}}
    pipeline = project(tmp_path, [stream])
    (tmp_path / "data" / "users.csv").write_text(
        "user_id,email,first_name,age\nu1,a@example.com,Ann,31\nu2,b@example.com,Bob,40\n"
        "u3,c@example.com,Cid,50\nu1,a@example.com,Ann,32\n", encoding="utf-8")  # fmt: skip
    for run in ("r1", "r2", "r3"):
        doc = report_json(run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / run, env=env_for(emulator)))
        assert doc["exit_code"] == 0 and emulator.user("external_id", "u1")["attributes"]["age"] == 32, run
        if run != "r1":  # both rows of u1 again (the first differs from the state the second left); u2, u3 not
            assert doc["rows"]["delivered"] == 2 and doc["rows"]["skipped"] == 2, (run, doc["rows"])
        # the repeat is counted when both rows are in one chunk (the summary then says what it costs)
        [st] = doc["streams"]
        assert st["delta"].get("repeated", 0) == (1 if chunk_rows == 1000 else 0), st["delta"]


def test_the_summary_counts_rows_that_repeat_a_user_in_a_delta_stream(emulator: Any, tmp_path: Path) -> None:
    """Users on several rows make a delta stream send them again on every run: the summary says how many
    rows repeat a user, and nothing when none does."""
    stream = {**users_stream(), "delta": True}
    project(tmp_path, [stream])
    (tmp_path / "data" / "users.csv").write_text(
        "user_id,email,first_name,age\nu1,a@example.com,Ann,31\nu2,b@example.com,Bob,40\n"
        "u1,a@example.com,Ann,32\nu1,a@example.com,Ann,33\n", encoding="utf-8")  # fmt: skip
    env = {"BRAZE_REST_ENDPOINT": emulator.url, "BRAZE_API_KEY": emulator.api_key}
    res = invoke("run", "pipelines/t.yaml", "--mode", "bulk", "--report-dir", "r1", cwd=tmp_path, env=env)
    assert res.exit_code == 0, res.output
    assert ("    2 row(s) repeat the user of an earlier row in their chunk: a user whose rows differ is sent again "
            "on every run") in res.output, res.output
    (tmp_path / "data" / "users.csv").write_text(
        "user_id,email,first_name,age\nu1,a@example.com,Ann,31\nu2,b@example.com,Bob,40\n", encoding="utf-8")
    res = invoke("run", "pipelines/t.yaml", "--mode", "bulk", "--report-dir", "r2", cwd=tmp_path, env=env)
    assert res.exit_code == 0 and "repeat the user" not in res.output, res.output

"""The PostgreSQL state database going away in the middle of a delta run (issue 13, item 5): the run ends
with every row accounted for, a clear message and no traceback; the rows Braze took stay delivered, and the
next run, with the database back, sends what the state did not confirm. Real PostgreSQL on loopback (the
`postgres_url` fixture): the state lives in a database of its own, whose connections the test cuts and
refuses mid-run, so other tests sharing the server are not touched."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sql_helpers import pg_exec
from test_pipeline_run import project

from connector.pipeline import run_pipeline

pytestmark = pytest.mark.timeout(180)
ROWS = 3000


def users_csv(path: Path) -> None:
    path.write_text("user_id,plan\n" + "".join(f"u{i},p{i % 7}\n" for i in range(ROWS)), encoding="utf-8")


def test_the_state_database_going_away_mid_run(postgres_url: str, emulator_factory: Any, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    base = postgres_url.rsplit("/", 1)[0]
    pg_exec(postgres_url, "DROP DATABASE IF EXISTS gone_state WITH (FORCE)", "CREATE DATABASE gone_state")
    state_url = f"{base}/gone_state"
    pipeline = project(
        tmp_path,
        [{"name": "users", "source": {"path": "data/big.csv", "chunk_rows": 100}, "kind": "attributes",
          "identifier": {"external_id": "user_id"}, "attributes": [{"column": "plan"}], "delta": True}],
        state={"url_env": "STATE_PG_URL"},
        write={"max_objects_per_request": 20, "concurrency": 2},
    )  # fmt: skip
    users_csv(tmp_path / "data" / "big.csv")
    em = emulator_factory(latency_ms=50)
    env = {"STATE_PG_URL": state_url, "BRAZE_REST_ENDPOINT": em.url, "BRAZE_API_KEY": "test-key"}

    def cut() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(em.ledger()) < 10:
            time.sleep(0.01)
        pg_exec(postgres_url, "ALTER DATABASE gone_state ALLOW_CONNECTIONS false",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'gone_state'")  # fmt: skip

    cutter = threading.Thread(target=cut)
    cutter.start()
    try:
        run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r1", env=env, raise_on_failure=False)
    finally:
        cutter.join()
        pg_exec(postgres_url, "ALTER DATABASE gone_state ALLOW_CONNECTIONS true")
    doc = json.loads((tmp_path / "r1" / "report.json").read_text(encoding="utf-8"))
    rows = doc["rows"]
    assert doc["invariant_ok"] is True and doc["exit_code"] == 0, doc["warnings"]
    assert rows["read"] == ROWS and rows["delivered"] == ROWS and rows["failed"] == 0  # Braze took them all
    assert "Traceback" not in caplog.text
    lost = doc["delta"]["not_recorded"]
    assert lost is not None and 0 < lost["users"] <= ROWS and lost["events"] == 0
    [w] = [w for w in doc["warnings"] if w.startswith("delta state")]
    assert "could not be written" in w and "$STATE_PG_URL" in w and state_url not in json.dumps(doc)
    assert doc["removed"]["users"]["decided"] is False  # what the state knows is not what Braze holds

    before = len(em.ledger())
    second = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r2", env=env, raise_on_failure=False)
    doc2 = json.loads((second.report_dir / "report.json").read_text(encoding="utf-8"))
    assert doc2["exit_code"] == 0 and doc2["invariant_ok"] is True
    resent = {a["identifier"]["external_id"] for e in em.ledger()[before:] for a in e["applied"]}
    assert len(resent) == lost["users"]  # exactly the users whose confirmations were lost
    assert doc2["streams"][0]["delta"] == {"added": lost["users"], "changed": 0, "unchanged": ROWS - lost["users"]}


def test_the_state_database_gone_before_a_lookup_stops_the_run_cleanly(
    postgres_url: str, emulator_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every user changed, so each chunk looks its users up: the first lookup after the cut stops the run
    (exit 2, the URL never shown), the rows answered stay delivered, and the next run sends every change."""
    base = postgres_url.rsplit("/", 1)[0]
    pg_exec(postgres_url, "DROP DATABASE IF EXISTS gone_state2 WITH (FORCE)", "CREATE DATABASE gone_state2")
    pipeline = project(
        tmp_path,
        [{"name": "users", "source": {"path": "data/big.csv", "chunk_rows": 100}, "kind": "attributes",
          "identifier": {"external_id": "user_id"}, "attributes": [{"column": "plan"}], "delta": True}],
        state={"url_env": "STATE_PG_URL"},
        write={"max_objects_per_request": 20, "concurrency": 2},
    )  # fmt: skip
    users_csv(tmp_path / "data" / "big.csv")
    em = emulator_factory(latency_ms=50)
    env = {"STATE_PG_URL": f"{base}/gone_state2", "BRAZE_REST_ENDPOINT": em.url, "BRAZE_API_KEY": "test-key"}
    run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r1", env=env, raise_on_failure=False)
    (tmp_path / "data" / "big.csv").write_text(
        "user_id,plan\n" + "".join(f"u{i},q{i % 7}\n" for i in range(ROWS)), encoding="utf-8")  # every user changed
    before = len(em.ledger())

    def cut() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(em.ledger()) < before + 10:
            time.sleep(0.01)
        pg_exec(postgres_url, "ALTER DATABASE gone_state2 ALLOW_CONNECTIONS false",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'gone_state2'")  # fmt: skip

    cutter = threading.Thread(target=cut)
    cutter.start()
    try:
        run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r2", env=env, raise_on_failure=False)
    finally:
        cutter.join()
        pg_exec(postgres_url, "ALTER DATABASE gone_state2 ALLOW_CONNECTIONS true")
    doc = json.loads((tmp_path / "r2" / "report.json").read_text(encoding="utf-8"))
    assert doc["invariant_ok"] is True and "Traceback" not in caplog.text
    assert doc["exit_code"] == 2 and 0 < doc["rows"]["delivered"] < ROWS  # stopped at the first lookup it could not do
    [stop] = [w for w in doc["warnings"] if w.startswith("run stopped (exit code 2)")]
    assert "state database $STATE_PG_URL" in stop and base not in json.dumps(doc)
    third = run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r3", env=env, raise_on_failure=False)
    doc3 = json.loads((third.report_dir / "report.json").read_text(encoding="utf-8"))
    assert doc3["exit_code"] == 0 and doc3["rows"]["failed"] == 0
    latest: dict[str, str] = {}
    for e in em.ledger():
        for a in e["applied"]:
            uid = a["identifier"]["external_id"]
            latest[uid] = a["object"].get("plan", latest.get(uid))
    assert latest == {f"u{i}": f"q{i % 7}" for i in range(ROWS)}  # every change reached Braze in the end

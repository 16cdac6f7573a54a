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
ROWS = 1500  # 75 requests of 20 at concurrency 2 and 50 ms: the cut after 10 lands mid-run


def users_csv(path: Path, plan: str = "p") -> None:
    path.write_text("user_id,plan\n" + "".join(f"u{i},{plan}{i % 7}\n" for i in range(ROWS)), encoding="utf-8")


def setup(postgres_url: str, emulator_factory: Any, tmp_path: Path, db: str) -> tuple[Any, Any, dict[str, str]]:
    """A delta users stream of ROWS rows whose state is the database `db` (created afresh); (pipeline,
    emulator, env)."""
    pg_exec(postgres_url, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", f"CREATE DATABASE {db}")
    pipeline = project(
        tmp_path,
        [{"name": "users", "source": {"path": "data/big.csv", "chunk_rows": 100}, "kind": "attributes",
          "identifier": {"external_id": "user_id"}, "attributes": [{"column": "plan"}], "delta": True}],
        state={"url_env": "STATE_PG_URL"},
        write={"max_objects_per_request": 20, "concurrency": 2},
    )  # fmt: skip
    users_csv(tmp_path / "data" / "big.csv")
    em = emulator_factory(latency_ms=50)
    state_url = f"{postgres_url.rsplit('/', 1)[0]}/{db}"
    return pipeline, em, {"STATE_PG_URL": state_url, "BRAZE_REST_ENDPOINT": em.url, "BRAZE_API_KEY": "test-key"}


def run_cut_off(postgres_url: str, db: str, em: Any, after: int, pipeline: Any, out: Path,
                env: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """Run the pipeline; once the emulator has `after` requests, cut the state database off (its connections
    ended, new ones refused) until the run ends. The run's report.json."""

    def cut() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(em.ledger()) < after:
            time.sleep(0.01)
        pg_exec(postgres_url, f"ALTER DATABASE {db} ALLOW_CONNECTIONS false",
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'")  # fmt: skip

    cutter = threading.Thread(target=cut)
    cutter.start()
    try:
        run_pipeline(pipeline, mode="bulk", report_dir=out, env=env, raise_on_failure=False)
    finally:
        cutter.join()
        pg_exec(postgres_url, f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")
    return dict(json.loads((out / "report.json").read_text(encoding="utf-8")))


def test_the_state_database_going_away_mid_run(postgres_url: str, emulator_factory: Any, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    pipeline, em, env = setup(postgres_url, emulator_factory, tmp_path, "gone_state")
    state_url = env["STATE_PG_URL"]
    doc = run_cut_off(postgres_url, "gone_state", em, 10, pipeline, tmp_path / "r1", env)
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
    pipeline, em, env = setup(postgres_url, emulator_factory, tmp_path, "gone_state2")
    base = postgres_url.rsplit("/", 1)[0]
    run_pipeline(pipeline, mode="bulk", report_dir=tmp_path / "r1", env=env, raise_on_failure=False)
    users_csv(tmp_path / "data" / "big.csv", plan="q")  # every user changed
    doc = run_cut_off(postgres_url, "gone_state2", em, len(em.ledger()) + 10, pipeline, tmp_path / "r2", env)
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

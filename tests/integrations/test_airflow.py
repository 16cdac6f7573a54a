"""The Airflow operator and hook, in real DAG runs (`dag.test()`) against the emulator.

Airflow 3 runs `dag.test()` only for a DAG that its DAG processor has stored, so each test writes a DAG
file into its own dags folder and runs it as a script (`python dag.py`, Airflow's documented way to
test a DAG), in an Airflow home whose metadata database is migrated once per session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from scheduler_helpers import require

from connector.emulator import EmulatorServer

require("airflow")

# One xdist worker: the session fixture migrates an Airflow database once, not once per worker.
pytestmark = [pytest.mark.timeout(600), pytest.mark.xdist_group("airflow")]

DAG_FILE = '''
import json
from datetime import datetime

from airflow.sdk import DAG, task

from connector.integrations.airflow import BrazeConnectorOperator

with DAG("{dag_id}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:
    braze = BrazeConnectorOperator(task_id="braze", pipeline={pipeline!r}, braze_conn_id="braze_test",
                                   report_dir={report_dir!r})

    @task(trigger_rule="all_done")
    def record(ti=None):
        seen = {{"return_value": ti.xcom_pull(task_ids="braze"),
                "braze_report": ti.xcom_pull(task_ids="braze", key="braze_report")}}
        with open({result!r}, "w") as f:
            json.dump(seen, f)

    braze >> record()

if __name__ == "__main__":
    run = dag.test()
    print("DAG_RUN_STATE", run.state)
    for ti in run.get_task_instances():
        print("TASK_STATE", ti.task_id, ti.state)
'''


def airflow_env(home: Path, dags: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRAZE_", "AIRFLOW"))}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(dags or home / "dags"), **extra)  # fmt: skip
    return env


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow_home")
    (home / "dags").mkdir()
    res = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=airflow_env(home),
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return home


def run_dag(home: Path, tmp_path: Path, dag_id: str, pipeline: Path, conn: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Write and run a DAG (operator, then a task reading its XComs); the run's output and what was read."""
    dags = tmp_path / "dags"
    dags.mkdir()
    result = tmp_path / "xcom.json"
    text = DAG_FILE.format(dag_id=dag_id, pipeline=str(pipeline), report_dir=str(tmp_path / "out"),
                           result=str(result))  # fmt: skip
    (dags / f"{dag_id}.py").write_text(text, encoding="utf-8")
    env = airflow_env(home, dags, AIRFLOW_CONN_BRAZE_TEST=json.dumps(conn))
    res = subprocess.run([sys.executable, str(dags / f"{dag_id}.py")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "DAG_RUN_STATE" in out, out[-5000:]
    return out, json.loads(result.read_text(encoding="utf-8"))


def test_the_operator_delivers_and_pushes_the_report(airflow_home: Path, tmp_path: Path, emulator: EmulatorServer,
                                                     users_project: Callable[..., Path]) -> None:  # fmt: skip
    pipeline = users_project(tmp_path / "project")
    host, port = emulator.url.removeprefix("http://").split(":")
    conn = {"conn_type": "generic", "host": host, "port": int(port), "schema": "http", "password": emulator.api_key}
    out, xcom = run_dag(airflow_home, tmp_path, "braze_ok", pipeline, conn)
    assert "DAG_RUN_STATE success" in out and "TASK_STATE braze success" in out, out[-5000:]
    summary = xcom["return_value"]
    assert summary == xcom["braze_report"]
    assert summary["exit_code"] == 0 and summary["pipeline"] == "users"
    assert summary["rows"] == {"read": 3, "delivered": 2, "rejected": 1, "failed": 0, "skipped": 0}
    assert summary["report_json"] == str(tmp_path / "out" / "report.json")
    assert json.loads(Path(summary["report_json"]).read_text())["run_id"] == summary["run_id"]
    assert emulator.user("external_id", "u3")["attributes"]["age"] == 40  # delivered for real


def test_a_failed_run_fails_the_task(airflow_home: Path, tmp_path: Path, emulator: EmulatorServer,
                                     users_project: Callable[..., Path]) -> None:  # fmt: skip
    pipeline = users_project(tmp_path / "project")
    conn = {"conn_type": "generic", "password": "wrong-key-4d2", "extra": {"endpoint": emulator.url}}
    out, xcom = run_dag(airflow_home, tmp_path, "braze_refused", pipeline, conn)
    # The operator's task fails; the run's state follows its leaf (the all_done reader, which succeeds).
    assert "TASK_STATE braze failed" in out and "TASK_STATE record success" in out, out[-5000:]
    assert xcom["return_value"] is None  # the task failed: no return value
    report = xcom["braze_report"]  # but the summary was pushed before it failed
    assert report["exit_code"] == 3 and report["rows"]["delivered"] == 0
    assert "exit code 3" in out and "wrong-key-4d2" not in out
    assert emulator.stats()["objects_applied"]["attributes"] == 0
